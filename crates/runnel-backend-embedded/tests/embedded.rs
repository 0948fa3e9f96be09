//! Behaviour of the embedded backend beyond the conformance suite: its layout on disk,
//! retention by size and age, removal of expired keys, the single-owner lock, how corruption
//! and closing surface, group commit of metadata writes, and the readers kept between reads.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use runnel_backend::{
    Backend, BackendError, Expect, ReadFrom, Record, RetentionConfig, StreamConfig,
};
use runnel_backend_embedded::{
    EmbeddedBackend, EmbeddedConfig, EmbeddedStats, FsyncPolicy, MAX_PARTITIONS,
};
use runnel_clock::ManualClock;
use runnel_test_util::{
    START, assert_cas_conflict, manual_clock, numbered_records, record, stream, temp_dir,
};

/// Small segments so a few records roll several of them.
const SEGMENT_BYTES: u64 = 1024;

fn config(dir: &Path, clock: &ManualClock) -> EmbeddedConfig {
    EmbeddedConfig {
        fsync: FsyncPolicy::Os,
        segment_bytes: SEGMENT_BYTES,
        clock: clock.shared(),
        ..EmbeddedConfig::new(dir)
    }
}

async fn open(dir: &Path, clock: &ManualClock) -> EmbeddedBackend {
    EmbeddedBackend::open(config(dir, clock)).await.unwrap()
}

fn retention(max_age: Option<Duration>, max_bytes: Option<u64>) -> StreamConfig {
    StreamConfig {
        partitions: 1,
        retention: RetentionConfig {
            max_age,
            max_bytes_per_partition: max_bytes,
        },
    }
}

/// Records of about 150 bytes on disk.
fn padded(range: std::ops::Range<u32>) -> Vec<Record> {
    range
        .map(|i| record(&format!("key-{i}"), &format!("{i:0>100}")))
        .collect()
}

/// Appends records one at a time, so segments roll between them.
async fn append_each(b: &EmbeddedBackend, s: &runnel_backend::StreamName, records: Vec<Record>) {
    for r in records {
        b.append(s, 0, vec![r]).await.unwrap();
    }
}

#[tokio::test]
async fn layout_is_meta_redb_and_one_log_directory_per_partition() {
    let dir = temp_dir();
    let clock = manual_clock();
    let b = open(dir.path(), &clock).await;
    let s = stream("orders");
    b.create_stream(
        &s,
        StreamConfig {
            partitions: 3,
            ..StreamConfig::default()
        },
    )
    .await
    .unwrap();
    assert!(dir.path().join("meta.redb").is_file());
    for partition in 0..3 {
        let partition_dir = dir
            .path()
            .join("streams/orders")
            .join(partition.to_string());
        assert!(
            partition_dir.join("00000000000000000000.log").is_file(),
            "{}",
            partition_dir.display()
        );
    }
    assert!(!dir.path().join("streams/orders/3").exists());
}

#[tokio::test]
async fn append_timestamps_and_creation_time_come_from_the_injected_clock() {
    let dir = temp_dir();
    let clock = manual_clock();
    let b = open(dir.path(), &clock).await;
    let s = stream("orders");
    let info = b.create_stream(&s, retention(None, None)).await.unwrap();
    assert_eq!(info.created_at, START);
    clock.advance(Duration::from_secs(5));
    let ack = b.append(&s, 0, numbered_records("a", 0..2)).await.unwrap();
    assert_eq!(ack.timestamp, START + 5_000_000);
    let read = b
        .read(&s, 0, ReadFrom::Offset(0), 10, usize::MAX)
        .await
        .unwrap();
    assert!(read.iter().all(|r| r.timestamp == ack.timestamp));
}

#[tokio::test]
async fn retention_by_size_removes_old_segments_and_reads_below_start_are_out_of_range() {
    let dir = temp_dir();
    let clock = manual_clock();
    let b = open(dir.path(), &clock).await;
    let s = stream("orders");
    b.create_stream(&s, retention(None, Some(2 * SEGMENT_BYTES)))
        .await
        .unwrap();
    append_each(&b, &s, padded(0..40)).await;
    let before = b.partition_info(&s, 0).await.unwrap();
    assert!(before.bytes.unwrap() > 4 * SEGMENT_BYTES);

    let report = b.enforce_retention_now().await.unwrap();
    assert!(report.removed_segments > 0, "{report:?}");
    let after = b.partition_info(&s, 0).await.unwrap();
    assert!(after.start_offset > 0);
    assert_eq!(after.high_watermark, 40);
    assert!(after.bytes.unwrap() <= 2 * SEGMENT_BYTES, "{after:?}");

    match b.read(&s, 0, ReadFrom::Offset(0), 10, usize::MAX).await {
        Err(BackendError::OffsetOutOfRange {
            requested,
            start,
            end,
            ..
        }) => assert_eq!((requested, start, end), (0, after.start_offset, 40)),
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    let kept = b
        .read(&s, 0, ReadFrom::Offset(after.start_offset), 100, usize::MAX)
        .await
        .unwrap();
    assert_eq!(kept.len() as u64, 40 - after.start_offset);
    assert_eq!(
        b.offset_for_time(&s, 0, 0).await.unwrap(),
        after.start_offset,
        "the oldest held record answers for any earlier time"
    );
}

#[tokio::test]
async fn retention_by_age_follows_the_injected_clock() {
    let dir = temp_dir();
    let clock = manual_clock();
    let b = open(dir.path(), &clock).await;
    let s = stream("orders");
    let hour = Duration::from_secs(3600);
    b.create_stream(&s, retention(Some(hour), None))
        .await
        .unwrap();
    append_each(&b, &s, padded(0..20)).await;
    clock.advance(hour / 2);
    assert_eq!(
        b.enforce_retention_now().await.unwrap().removed_segments,
        0,
        "nothing is an hour old yet"
    );

    clock.advance(hour);
    append_each(&b, &s, padded(20..40)).await;
    let report = b.enforce_retention_now().await.unwrap();
    assert!(report.removed_segments > 0, "{report:?}");
    let info = b.partition_info(&s, 0).await.unwrap();
    assert!(
        info.start_offset > 0 && info.start_offset <= 20,
        "old segments go, the new records stay: {info:?}"
    );
}

#[tokio::test]
async fn the_background_task_applies_retention_on_its_own() {
    let dir = temp_dir();
    let clock = manual_clock();
    let b = EmbeddedBackend::open(EmbeddedConfig {
        maintenance_interval: Duration::from_millis(10),
        ..config(dir.path(), &clock)
    })
    .await
    .unwrap();
    let s = stream("orders");
    b.create_stream(&s, retention(None, Some(SEGMENT_BYTES)))
        .await
        .unwrap();
    append_each(&b, &s, padded(0..40)).await;
    let mut watermark = b.partition_info(&s, 0).await.unwrap();
    for _ in 0..500 {
        if watermark.start_offset > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        watermark = b.partition_info(&s, 0).await.unwrap();
    }
    assert!(watermark.start_offset > 0, "{watermark:?}");
}

#[tokio::test]
async fn expired_kv_entries_are_removed_by_maintenance_and_stay_absent_after_restart() {
    let dir = temp_dir();
    let clock = manual_clock();
    let b = open(dir.path(), &clock).await;
    let short = Some(Duration::from_secs(1));
    for key in ["a", "b", "c"] {
        b.kv_put("dedup", key, Bytes::from("x"), Expect::Any, short)
            .await
            .unwrap();
    }
    b.kv_put("dedup", "kept", Bytes::from("x"), Expect::Any, None)
        .await
        .unwrap();
    // Rewritten without a TTL: its old expiry must not remove it.
    b.kv_put("dedup", "c", Bytes::from("y"), Expect::Any, None)
        .await
        .unwrap();
    assert_eq!(
        b.enforce_retention_now().await.unwrap().expired_kv_entries,
        0
    );

    clock.advance(Duration::from_secs(2));
    let report = b.enforce_retention_now().await.unwrap();
    assert_eq!(report.expired_kv_entries, 2, "{report:?}");
    assert_eq!(
        b.enforce_retention_now().await.unwrap().expired_kv_entries,
        0
    );
    b.close().await.unwrap();

    let b = open(dir.path(), &clock).await;
    let keys: Vec<String> = b
        .kv_scan("dedup", "", None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, ["c", "kept"]);
    assert_eq!(b.kv_get("dedup", "a").await.unwrap(), None);
}

#[tokio::test]
async fn a_second_open_of_the_same_data_dir_is_refused_until_the_first_closes() {
    let dir = temp_dir();
    let clock = manual_clock();
    let first = open(dir.path(), &clock).await;
    match EmbeddedBackend::open(config(dir.path(), &clock)).await {
        Err(BackendError::Unavailable(message)) => {
            assert!(message.contains("meta.redb"), "{message}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    first.close().await.unwrap();
    open(dir.path(), &clock).await;
}

#[tokio::test]
async fn a_corrupt_record_reads_as_corrupt_naming_the_file_and_position() {
    let dir = temp_dir();
    let clock = manual_clock();
    let b = open(dir.path(), &clock).await;
    let s = stream("orders");
    b.create_stream(&s, retention(None, None)).await.unwrap();
    append_each(&b, &s, padded(0..20)).await;
    // Flip a byte inside the first record's value, in the first (sealed) segment.
    let segment = dir.path().join("streams/orders/0/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[60] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();

    match b.read(&s, 0, ReadFrom::Offset(0), 10, usize::MAX).await {
        Err(BackendError::Corrupt(message)) => {
            assert!(message.contains("00000000000000000000.log"), "{message}");
            assert!(message.contains("at byte 0"), "{message}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(stats(&b).cached_readers, 0, "a failed read keeps no reader");
}

#[tokio::test]
async fn a_waiter_is_released_with_closed_when_the_backend_closes() {
    let dir = temp_dir();
    let clock = manual_clock();
    let b = open(dir.path(), &clock).await;
    let s = stream("orders");
    b.create_stream(&s, retention(None, None)).await.unwrap();
    let waiter = b.wait_for_data(&s, 0, 0, Duration::from_secs(30));
    let closer = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        b.close().await
    };
    let (waited, closed) = tokio::join!(waiter, closer);
    closed.unwrap();
    match waited {
        Err(BackendError::Closed) => {}
        other => panic!("expected Closed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stream_has_at_most_max_partitions() {
    let dir = temp_dir();
    let clock = manual_clock();
    let b = open(dir.path(), &clock).await;
    let too_many = StreamConfig {
        partitions: MAX_PARTITIONS + 1,
        ..StreamConfig::default()
    };
    match b.create_stream(&stream("wide"), too_many).await {
        Err(BackendError::Invalid(message)) => assert!(message.contains("1024"), "{message}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn stats(b: &EmbeddedBackend) -> EmbeddedStats {
    b.stats().expect("stats of an open backend")
}

#[tokio::test]
async fn concurrent_kv_writers_share_commits_and_a_lost_claim_fails_only_its_caller() {
    const WRITERS: usize = 64;
    const PUTS: usize = 16;
    let dir = temp_dir();
    let clock = manual_clock();
    let b = Arc::new(open(dir.path(), &clock).await);
    let before = stats(&b);
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let b = b.clone();
            tokio::spawn(async move {
                // Every writer tries to take the same lease; one wins.
                let claim = b
                    .kv_put(
                        "leases",
                        "lease",
                        Bytes::from(format!("{writer}")),
                        Expect::Absent,
                        None,
                    )
                    .await;
                for i in 0..PUTS {
                    let key = format!("writer-{writer}");
                    b.kv_put(
                        "processed",
                        &key,
                        Bytes::from(format!("{i}")),
                        Expect::Any,
                        None,
                    )
                    .await
                    .expect("an unconditional write");
                }
                claim
            })
        })
        .collect();
    let mut winners = Vec::new();
    for (writer, task) in writers.into_iter().enumerate() {
        match task.await.expect("a writer") {
            Ok(revision) => winners.push((writer, revision)),
            lost => {
                assert_cas_conflict(lost);
            }
        }
    }
    let after = stats(&b);

    let [(winner, revision)] = winners[..] else {
        panic!("exactly one claim wins, got {winners:?}");
    };
    let lease = b
        .kv_get("leases", "lease")
        .await
        .unwrap()
        .expect("the lease");
    assert_eq!(
        (lease.revision, lease.value),
        (revision, Bytes::from(format!("{winner}")))
    );
    for writer in 0..WRITERS {
        let entry = b
            .kv_get("processed", &format!("writer-{writer}"))
            .await
            .unwrap()
            .expect("every writer's key");
        assert_eq!(entry.value, Bytes::from(format!("{}", PUTS - 1)));
    }
    let writes = after.meta_writes - before.meta_writes;
    let commits = after.meta_commits - before.meta_commits;
    assert_eq!(writes, (WRITERS * (PUTS + 1)) as u64);
    assert!(
        commits * 4 <= writes,
        "{writes} concurrent writes took {commits} commits"
    );
}

#[tokio::test]
async fn sequential_reads_continue_with_the_reader_the_last_read_left() {
    let dir = temp_dir();
    let clock = manual_clock();
    let b = open(dir.path(), &clock).await;
    let s = stream("orders");
    b.create_stream(&s, retention(None, None)).await.unwrap();
    // Many small segments, so reads cross segment boundaries.
    append_each(&b, &s, padded(0..30)).await;
    let mut next = 0;
    let mut values = Vec::new();
    while next < 60 {
        let batch = b
            .read(&s, 0, ReadFrom::Offset(next), 7, usize::MAX)
            .await
            .unwrap();
        if next == 28 {
            // Caught up at the high watermark; more arrives.
            assert_eq!(batch.len(), 2);
            append_each(&b, &s, padded(30..60)).await;
        }
        next += batch.len() as u64;
        values.extend(batch.into_iter().map(|r| (r.offset, r.value)));
    }
    let expected: Vec<_> = padded(0..60)
        .into_iter()
        .enumerate()
        .map(|(i, r)| (i as u64, r.value))
        .collect();
    assert_eq!(values, expected);
    let reads = stats(&b);
    assert_eq!(reads.readers_opened, 1, "{reads:?}");
    assert_eq!(reads.readers_reused, 9, "{reads:?}");
    assert_eq!(reads.cached_readers, 1);

    // Anywhere else, a new reader.
    let again = b
        .read(&s, 0, ReadFrom::Offset(3), 2, usize::MAX)
        .await
        .unwrap();
    assert_eq!(again.first().map(|r| r.offset), Some(3));
    assert_eq!(stats(&b).readers_opened, 2);
    assert_eq!(stats(&b).cached_readers, 2);
}

#[tokio::test]
async fn retention_drops_cached_readers_and_reads_below_the_start_stay_out_of_range() {
    let dir = temp_dir();
    let clock = manual_clock();
    let b = open(dir.path(), &clock).await;
    let s = stream("orders");
    b.create_stream(&s, retention(None, Some(2 * SEGMENT_BYTES)))
        .await
        .unwrap();
    append_each(&b, &s, padded(0..40)).await;
    b.read(&s, 0, ReadFrom::Offset(0), 2, usize::MAX)
        .await
        .unwrap();
    assert_eq!(stats(&b).cached_readers, 1);

    let report = b.enforce_retention_now().await.unwrap();
    assert!(report.removed_segments > 0, "{report:?}");
    assert_eq!(stats(&b).cached_readers, 0, "no removed file is held open");
    match b.read(&s, 0, ReadFrom::Offset(2), 2, usize::MAX).await {
        Err(BackendError::OffsetOutOfRange { requested: 2, .. }) => {}
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
}

#[tokio::test]
async fn readers_idle_for_a_maintenance_interval_are_dropped() {
    let dir = temp_dir();
    let clock = manual_clock();
    let b = open(dir.path(), &clock).await;
    let s = stream("orders");
    b.create_stream(&s, retention(None, None)).await.unwrap();
    append_each(&b, &s, padded(0..5)).await;
    b.read(&s, 0, ReadFrom::Offset(0), 2, usize::MAX)
        .await
        .unwrap();

    b.enforce_retention_now().await.unwrap();
    assert_eq!(stats(&b).cached_readers, 1, "used since the last pass");
    b.enforce_retention_now().await.unwrap();
    assert_eq!(stats(&b).cached_readers, 0, "idle for a whole pass");
}

#[tokio::test]
async fn closing_releases_cached_readers_so_the_same_process_can_reopen() {
    let dir = temp_dir();
    let clock = manual_clock();
    let b = open(dir.path(), &clock).await;
    let s = stream("orders");
    b.create_stream(&s, retention(None, None)).await.unwrap();
    append_each(&b, &s, padded(0..5)).await;
    b.read(&s, 0, ReadFrom::Offset(0), 2, usize::MAX)
        .await
        .unwrap();
    assert_eq!(stats(&b).cached_readers, 1);
    b.close().await.unwrap();

    let b = open(dir.path(), &clock).await;
    let read = b
        .read(&s, 0, ReadFrom::Offset(2), 10, usize::MAX)
        .await
        .unwrap();
    assert_eq!(read.len(), 3);
}
