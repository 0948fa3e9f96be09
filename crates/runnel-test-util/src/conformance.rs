//! The conformance tests: one public async function per behaviour of
//! [`runnel_backend::Backend`], each taking a [`BackendHarness`]. Run them all with
//! [`crate::conformance_tests!`]; the list there names every function here.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use runnel_backend::{
    Backend, BackendError, Expect, Header, ReadFrom, Record, Result, RetentionConfig, StreamConfig,
    StreamName,
};
use runnel_clock::Clock;

use crate::{BackendHarness, assert_cas_conflict, numbered_records, read_all, record, stream};

const GROUP: &str = "billing";
const BUCKET: &str = "leases";
/// Long enough that a waiter woken by data never reaches it; the tests end in milliseconds.
const LONG_WAIT: Duration = Duration::from_secs(30);
const SHORT_WAIT: Duration = Duration::from_millis(50);

async fn create(backend: &dyn Backend, name: &str, partitions: u32) -> StreamName {
    let name = stream(name);
    backend
        .create_stream(
            &name,
            StreamConfig {
                partitions,
                retention: RetentionConfig::default(),
            },
        )
        .await
        .expect("create stream");
    name
}

fn values(records: &[runnel_backend::StoredRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect()
}

fn offsets(records: &[runnel_backend::StoredRecord]) -> Vec<u64> {
    records.iter().map(|r| r.offset).collect()
}

#[track_caller]
fn assert_unknown_stream<T: Debug>(result: Result<T>, name: &StreamName) {
    match result {
        Err(BackendError::UnknownStream(found)) => assert_eq!(&found, name),
        other => panic!("expected UnknownStream({name}), got {other:?}"),
    }
}

#[track_caller]
fn assert_unknown_partition<T: Debug>(result: Result<T>, asked: u32, partitions: u32) {
    match result {
        Err(BackendError::UnknownPartition {
            partition,
            partitions: held,
            ..
        }) => assert_eq!((partition, held), (asked, partitions)),
        other => panic!("expected UnknownPartition({asked} of {partitions}), got {other:?}"),
    }
}

#[track_caller]
fn assert_invalid<T: Debug>(result: Result<T>, what: &str) {
    match result {
        Err(BackendError::Invalid(_)) => {}
        other => panic!("{what}: expected Invalid, got {other:?}"),
    }
}

#[track_caller]
fn assert_closed<T: Debug>(result: Result<T>) {
    match result {
        Err(BackendError::Closed) => {}
        other => panic!("expected Closed, got {other:?}"),
    }
}

/// Appends get dense offsets from 0 per partition, batch after batch, and read back in order
/// with their keys and values.
pub async fn append_returns_dense_offsets_and_reads_them_back(h: &impl BackendHarness) {
    let b = h.open().await;
    let s = create(&*b, "orders", 2).await;
    let first = b.append(&s, 0, numbered_records("a", 0..3)).await.unwrap();
    assert_eq!((first.partition, first.base_offset, first.count), (0, 0, 3));
    let second = b.append(&s, 0, numbered_records("b", 0..2)).await.unwrap();
    assert_eq!(
        (second.partition, second.base_offset, second.count),
        (0, 3, 2)
    );
    let other = b.append(&s, 1, numbered_records("c", 0..1)).await.unwrap();
    assert_eq!(
        (other.partition, other.base_offset),
        (1, 0),
        "each partition counts from 0"
    );

    let records = b
        .read(&s, 0, ReadFrom::Offset(0), 100, usize::MAX)
        .await
        .unwrap();
    assert_eq!(offsets(&records), vec![0, 1, 2, 3, 4]);
    assert_eq!(values(&records), ["a-0", "a-1", "a-2", "b-0", "b-1"]);
    assert_eq!(records[4].key, Bytes::from("key-1"));
    assert!(
        records.windows(2).all(|w| w[0].timestamp <= w[1].timestamp),
        "append timestamps never decrease"
    );

    let middle = b
        .read(&s, 0, ReadFrom::Offset(2), 100, usize::MAX)
        .await
        .unwrap();
    assert_eq!(offsets(&middle), vec![2, 3, 4]);
    let p1 = b
        .read(&s, 1, ReadFrom::Offset(0), 100, usize::MAX)
        .await
        .unwrap();
    assert_eq!(values(&p1), ["c-0"]);
}

/// A read returns at most `max_records`, and stops once `max_bytes` are read, but always
/// returns at least one record when one is there, so a reader never stalls on a big one.
pub async fn reads_stop_at_max_records_and_max_bytes(h: &impl BackendHarness) {
    let b = h.open().await;
    let s = create(&*b, "orders", 1).await;
    b.append(&s, 0, numbered_records("value", 0..5))
        .await
        .unwrap();
    let two = b
        .read(&s, 0, ReadFrom::Offset(1), 2, usize::MAX)
        .await
        .unwrap();
    assert_eq!(offsets(&two), vec![1, 2]);
    let one = b.read(&s, 0, ReadFrom::Offset(1), 100, 1).await.unwrap();
    assert_eq!(
        offsets(&one),
        vec![1],
        "a record larger than max_bytes comes alone"
    );
}

/// An empty batch is refused as invalid and appends nothing.
pub async fn appending_an_empty_batch_is_invalid(h: &impl BackendHarness) {
    let b = h.open().await;
    let s = create(&*b, "orders", 1).await;
    assert_invalid(b.append(&s, 0, Vec::new()).await, "empty batch");
    assert_eq!(b.partition_info(&s, 0).await.unwrap().high_watermark, 0);
}

/// Concurrent appenders to one partition get disjoint offsets that together are dense, and
/// each appender's records keep its order.
pub async fn concurrent_appends_get_dense_disjoint_offsets(h: &impl BackendHarness) {
    const WRITERS: u32 = 8;
    const BATCHES: u32 = 10;
    let b = h.open().await;
    let s = create(&*b, "orders", 1).await;
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let (b, s) = (Arc::clone(&b), s.clone());
        tasks.push(tokio::spawn(async move {
            let mut bases = Vec::new();
            for batch in 0..BATCHES {
                let records = numbered_records(&format!("w{writer}-b{batch}"), 0..2);
                let ack = b.append(&s, 0, records).await.expect("append");
                assert_eq!(ack.count, 2);
                bases.push(ack.base_offset);
            }
            bases
        }));
    }
    let mut all_offsets = Vec::new();
    for task in tasks {
        let bases = task.await.expect("writer task");
        assert!(
            bases.windows(2).all(|w| w[0] < w[1]),
            "a writer's batches land in its order: {bases:?}"
        );
        all_offsets.extend(bases.iter().flat_map(|base| [*base, base + 1]));
    }
    all_offsets.sort_unstable();
    let total = (WRITERS * BATCHES * 2) as u64;
    assert_eq!(all_offsets, (0..total).collect::<Vec<_>>());
    let records = read_all(&*b, &s, 0).await;
    assert_eq!(offsets(&records), (0..total).collect::<Vec<_>>());
    for writer in 0..WRITERS {
        let prefix = format!("w{writer}-");
        let mine: Vec<String> = values(&records)
            .into_iter()
            .filter(|v| v.starts_with(&prefix))
            .collect();
        let expected: Vec<String> = (0..BATCHES)
            .flat_map(|batch| (0..2).map(move |i| format!("w{writer}-b{batch}-{i}")))
            .collect();
        assert_eq!(mine, expected);
    }
}

/// Reading from a time starts at the first record appended at or after it; `offset_for_time`
/// names the same offset, and a time after every record gives the high watermark.
pub async fn read_from_time_starts_at_first_record_at_or_after(h: &impl BackendHarness) {
    let b = h.open().await;
    let clock = h.clock();
    let s = create(&*b, "orders", 1).await;
    b.append(&s, 0, numbered_records("a", 0..2)).await.unwrap();
    clock.advance(Duration::from_secs(1));
    b.append(&s, 0, numbered_records("b", 0..2)).await.unwrap();
    clock.advance(Duration::from_secs(1));
    b.append(&s, 0, numbered_records("c", 0..1)).await.unwrap();
    let all = read_all(&*b, &s, 0).await;
    assert_eq!(all.len(), 5);
    assert!(
        all[0].timestamp < all[4].timestamp,
        "batches seconds apart have different timestamps"
    );

    let mut probes: Vec<u64> = all.iter().map(|r| r.timestamp).collect();
    probes.extend(all.iter().map(|r| r.timestamp - 1));
    for at in probes {
        let expected = all
            .iter()
            .find(|r| r.timestamp >= at)
            .map(|r| r.offset)
            .expect("some record is at or after a probe");
        assert_eq!(
            b.offset_for_time(&s, 0, at).await.unwrap(),
            expected,
            "offset_for_time({at})"
        );
        let from_time = b
            .read(&s, 0, ReadFrom::Time(at), 100, usize::MAX)
            .await
            .unwrap();
        assert_eq!(
            offsets(&from_time),
            (expected..5).collect::<Vec<_>>(),
            "read from time {at}"
        );
    }
    assert_eq!(b.offset_for_time(&s, 0, 0).await.unwrap(), 0);
    let after = all[4].timestamp + 1;
    assert_eq!(
        b.offset_for_time(&s, 0, after).await.unwrap(),
        5,
        "after every record: the high watermark"
    );
    let nothing = b
        .read(&s, 0, ReadFrom::Time(after), 100, usize::MAX)
        .await
        .unwrap();
    assert!(nothing.is_empty());
}

/// Reading at the high watermark returns nothing (there is nothing yet); reading above it is
/// out of range.
pub async fn reading_at_high_watermark_returns_nothing(h: &impl BackendHarness) {
    let b = h.open().await;
    let s = create(&*b, "orders", 1).await;
    let empty = b
        .read(&s, 0, ReadFrom::Offset(0), 100, usize::MAX)
        .await
        .unwrap();
    assert!(empty.is_empty(), "an empty partition reads as nothing");
    b.append(&s, 0, numbered_records("a", 0..3)).await.unwrap();
    let at_end = b
        .read(&s, 0, ReadFrom::Offset(3), 100, usize::MAX)
        .await
        .unwrap();
    assert!(at_end.is_empty());
    match b.read(&s, 0, ReadFrom::Offset(4), 100, usize::MAX).await {
        Err(BackendError::OffsetOutOfRange {
            requested,
            start,
            end,
            ..
        }) => assert_eq!((requested, start, end), (4, 0, 3)),
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
}

/// Waiting for data returns as soon as the high watermark passes the offset (woken by the
/// append, not by the timeout), returns at once if it already has, and otherwise returns the
/// unchanged high watermark when the timeout passes.
pub async fn wait_for_data_wakes_on_append_and_times_out_otherwise(h: &impl BackendHarness) {
    let b = h.open().await;
    let s = create(&*b, "orders", 2).await;
    assert_eq!(b.wait_for_data(&s, 0, 0, SHORT_WAIT).await.unwrap(), 0);

    b.append(&s, 0, numbered_records("a", 0..1)).await.unwrap();
    assert_eq!(
        b.wait_for_data(&s, 0, 0, LONG_WAIT).await.unwrap(),
        1,
        "data already beyond the offset"
    );

    let waiter = b.wait_for_data(&s, 0, 1, LONG_WAIT);
    let other_partition = b.wait_for_data(&s, 1, 0, SHORT_WAIT);
    let appender = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        b.append(&s, 0, numbered_records("b", 0..2)).await
    };
    let (woken, other, appended) = tokio::join!(waiter, other_partition, appender);
    appended.unwrap();
    // A backend may show a batch's records one by one (JetStream stores them as separate
    // messages): the wait ends at the first record past the offset, or at the whole batch.
    let high = woken.unwrap();
    assert!((2..=3).contains(&high), "woken by the append, at {high}");
    assert_eq!(other.unwrap(), 0, "an append elsewhere does not count");
}

/// Creating a stream again with the same partition count returns it as it is; another
/// partition count is refused; zero partitions is invalid.
pub async fn create_stream_is_idempotent_and_refuses_a_different_partition_count(
    h: &impl BackendHarness,
) {
    let b = h.open().await;
    let s = stream("orders");
    let config = StreamConfig {
        partitions: 3,
        retention: RetentionConfig {
            max_age: Some(Duration::from_secs(7 * 24 * 3600)),
            max_bytes_per_partition: None,
        },
    };
    let created = b.create_stream(&s, config.clone()).await.unwrap();
    assert_eq!(created.name, s);
    assert_eq!(created.config, config);
    assert_eq!(created.partitions.len(), 3);
    for (i, p) in created.partitions.iter().enumerate() {
        assert_eq!(
            (p.partition, p.start_offset, p.high_watermark),
            (i as u32, 0, 0)
        );
    }
    b.append(&s, 1, numbered_records("a", 0..1)).await.unwrap();

    let again = b.create_stream(&s, config.clone()).await.unwrap();
    assert_eq!(again.created_at, created.created_at);
    assert_eq!(again.config, config);
    assert_eq!(
        again.partitions[1].high_watermark, 1,
        "returned as it is, data included"
    );

    match b
        .create_stream(
            &s,
            StreamConfig {
                partitions: 5,
                ..config.clone()
            },
        )
        .await
    {
        Err(BackendError::StreamExists {
            name,
            existing,
            requested,
        }) => assert_eq!((name, existing, requested), (s.clone(), 3, 5)),
        other => panic!("expected StreamExists, got {other:?}"),
    }
    assert_eq!(b.describe_stream(&s).await.unwrap().partitions.len(), 3);

    let empty = stream("empty");
    let no_partitions = StreamConfig {
        partitions: 0,
        retention: RetentionConfig::default(),
    };
    assert_invalid(
        b.create_stream(&empty, no_partitions).await,
        "zero partitions",
    );
    assert_unknown_stream(b.describe_stream(&empty).await, &empty);
}

/// Every call naming a stream that does not exist fails with `UnknownStream`, and one naming
/// a partition at or past the count with `UnknownPartition`.
pub async fn unknown_stream_and_partition_are_typed_errors(h: &impl BackendHarness) {
    let b = h.open().await;
    let ghost = stream("ghost");
    let from = ReadFrom::Offset(0);
    assert_unknown_stream(b.describe_stream(&ghost).await, &ghost);
    assert_unknown_stream(b.append(&ghost, 0, vec![record("k", "v")]).await, &ghost);
    assert_unknown_stream(b.read(&ghost, 0, from, 10, usize::MAX).await, &ghost);
    assert_unknown_stream(b.offset_for_time(&ghost, 0, 0).await, &ghost);
    assert_unknown_stream(b.partition_info(&ghost, 0).await, &ghost);
    assert_unknown_stream(b.wait_for_data(&ghost, 0, 0, SHORT_WAIT).await, &ghost);
    assert_unknown_stream(b.committed_offset(GROUP, &ghost, 0).await, &ghost);
    assert_unknown_stream(
        b.commit_offset(GROUP, &ghost, 0, 1, Expect::Any).await,
        &ghost,
    );

    let s = create(&*b, "orders", 2).await;
    assert_unknown_partition(b.append(&s, 2, vec![record("k", "v")]).await, 2, 2);
    assert_unknown_partition(b.read(&s, 2, from, 10, usize::MAX).await, 2, 2);
    assert_unknown_partition(b.offset_for_time(&s, 2, 0).await, 2, 2);
    assert_unknown_partition(b.partition_info(&s, 7).await, 7, 2);
    assert_unknown_partition(b.wait_for_data(&s, 2, 0, SHORT_WAIT).await, 2, 2);
    assert_unknown_partition(b.committed_offset(GROUP, &s, 2).await, 2, 2);
    assert_unknown_partition(b.commit_offset(GROUP, &s, 2, 1, Expect::Any).await, 2, 2);
}

/// Listing returns every stream by name; describing one and asking for one partition report
/// the same offsets, and both follow appends.
pub async fn list_and_describe_report_partitions_and_watermarks(h: &impl BackendHarness) {
    let b = h.open().await;
    assert!(b.list_streams().await.unwrap().is_empty());
    let beta = create(&*b, "beta", 2).await;
    let alpha = create(&*b, "alpha", 1).await;
    b.append(&beta, 1, numbered_records("a", 0..3))
        .await
        .unwrap();

    let listed = b.list_streams().await.unwrap();
    let names: Vec<&StreamName> = listed.iter().map(|s| &s.name).collect();
    assert_eq!(names, [&alpha, &beta], "by name");

    let described = b.describe_stream(&beta).await.unwrap();
    assert_eq!(described.config.partitions, 2);
    assert_eq!(described.partitions.len(), 2);
    let p0 = &described.partitions[0];
    let p1 = &described.partitions[1];
    assert_eq!(
        (p0.partition, p0.start_offset, p0.high_watermark),
        (0, 0, 0)
    );
    assert_eq!(
        (p1.partition, p1.start_offset, p1.high_watermark),
        (1, 0, 3)
    );
    if let (Some(empty), Some(full)) = (p0.bytes, p1.bytes) {
        assert!(full > empty, "bytes grow with data: {empty} then {full}");
    }
    assert_eq!(&b.partition_info(&beta, 1).await.unwrap(), p1);
    assert_eq!(listed[1], described);
}

/// A commit expecting an absent offset fails once one exists; a commit expecting a revision
/// fails once another commit has moved it on, and a losing commit changes nothing.
pub async fn commit_offset_cas_rejects_stale_revision(h: &impl BackendHarness) {
    let b = h.open().await;
    let s = create(&*b, "orders", 1).await;
    assert_eq!(b.committed_offset(GROUP, &s, 0).await.unwrap(), None);

    let r1 = b
        .commit_offset(GROUP, &s, 0, 5, Expect::Absent)
        .await
        .unwrap();
    let committed = b.committed_offset(GROUP, &s, 0).await.unwrap().unwrap();
    assert_eq!((committed.offset, committed.revision), (5, r1));

    let current = assert_cas_conflict(b.commit_offset(GROUP, &s, 0, 9, Expect::Absent).await);
    assert_eq!(current, Some(r1));

    let r2 = b
        .commit_offset(GROUP, &s, 0, 10, Expect::Revision(r1))
        .await
        .unwrap();
    assert!(r2 > r1, "revisions increase: {r1} then {r2}");
    let current = assert_cas_conflict(
        b.commit_offset(GROUP, &s, 0, 99, Expect::Revision(r1))
            .await,
    );
    assert_eq!(current, Some(r2));
    let committed = b.committed_offset(GROUP, &s, 0).await.unwrap().unwrap();
    assert_eq!(
        (committed.offset, committed.revision),
        (10, r2),
        "the loser changed nothing"
    );

    let r3 = b
        .commit_offset(GROUP, &s, 0, 12, Expect::Any)
        .await
        .unwrap();
    assert!(r3 > r2);
    let committed = b.committed_offset(GROUP, &s, 0).await.unwrap().unwrap();
    assert_eq!((committed.offset, committed.revision), (12, r3));
}

/// Offsets of different groups, streams and partitions are independent.
pub async fn committed_offsets_are_kept_per_group_stream_and_partition(h: &impl BackendHarness) {
    let b = h.open().await;
    let orders = create(&*b, "orders", 2).await;
    let payments = create(&*b, "payments", 1).await;
    let commits = [
        ("billing", &orders, 0, 5),
        ("billing", &orders, 1, 7),
        ("shipping", &orders, 0, 3),
        ("billing", &payments, 0, 9),
    ];
    for (group, s, partition, offset) in commits {
        b.commit_offset(group, s, partition, offset, Expect::Absent)
            .await
            .unwrap();
    }
    for (group, s, partition, offset) in commits {
        let found = b.committed_offset(group, s, partition).await.unwrap();
        assert_eq!(
            found.map(|c| c.offset),
            Some(offset),
            "{group} {s}/{partition}"
        );
    }
    assert_eq!(
        b.committed_offset("shipping", &orders, 1).await.unwrap(),
        None
    );
    b.commit_offset("shipping", &orders, 1, 1, Expect::Absent)
        .await
        .unwrap();
}

/// A committed offset and its revision are there after a restart, and compare-and-set goes
/// on from that revision.
pub async fn committed_offsets_survive_restart(h: &impl BackendHarness) {
    let b = h.open().await;
    let s = create(&*b, "orders", 2).await;
    let r1 = b
        .commit_offset(GROUP, &s, 1, 42, Expect::Absent)
        .await
        .unwrap();
    drop(b);

    let b = h.open().await;
    let committed = b.committed_offset(GROUP, &s, 1).await.unwrap().unwrap();
    assert_eq!((committed.offset, committed.revision), (42, r1));
    let r2 = b
        .commit_offset(GROUP, &s, 1, 50, Expect::Revision(r1))
        .await
        .unwrap();
    assert!(r2 > r1);
    let current = assert_cas_conflict(
        b.commit_offset(GROUP, &s, 1, 60, Expect::Revision(r1))
            .await,
    );
    assert_eq!(current, Some(r2));
}

/// Writing a key expecting it absent fails while it exists and leaves it unchanged; buckets
/// are independent.
pub async fn kv_put_absent_conflicts_when_present(h: &impl BackendHarness) {
    let b = h.open().await;
    let r1 = b
        .kv_put(
            BUCKET,
            "order-1",
            Bytes::from("alpha"),
            Expect::Absent,
            None,
        )
        .await
        .unwrap();
    let current = assert_cas_conflict(
        b.kv_put(BUCKET, "order-1", Bytes::from("beta"), Expect::Absent, None)
            .await,
    );
    assert_eq!(current, Some(r1));
    let entry = b.kv_get(BUCKET, "order-1").await.unwrap().unwrap();
    assert_eq!(entry.key, "order-1");
    assert_eq!(entry.value, Bytes::from("alpha"));
    assert_eq!(entry.revision, r1);
    assert_eq!(entry.expires_at, None);

    b.kv_put(
        "other",
        "order-1",
        Bytes::from("gamma"),
        Expect::Absent,
        None,
    )
    .await
    .unwrap();
    let entry = b.kv_get(BUCKET, "order-1").await.unwrap().unwrap();
    assert_eq!(entry.value, Bytes::from("alpha"));
}

/// Writing a key expecting a revision succeeds only on that revision; a stale writer gets a
/// conflict naming the current one.
pub async fn kv_cas_by_revision(h: &impl BackendHarness) {
    let b = h.open().await;
    let current = assert_cas_conflict(
        b.kv_put(
            BUCKET,
            "order-1",
            Bytes::from("x"),
            Expect::Revision(1),
            None,
        )
        .await,
    );
    assert_eq!(current, None, "the key does not exist");
    assert_eq!(b.kv_get(BUCKET, "order-1").await.unwrap(), None);

    let r1 = b
        .kv_put(BUCKET, "order-1", Bytes::from("v1"), Expect::Any, None)
        .await
        .unwrap();
    let r2 = b
        .kv_put(
            BUCKET,
            "order-1",
            Bytes::from("v2"),
            Expect::Revision(r1),
            None,
        )
        .await
        .unwrap();
    assert!(r2 > r1);
    let current = assert_cas_conflict(
        b.kv_put(
            BUCKET,
            "order-1",
            Bytes::from("stale"),
            Expect::Revision(r1),
            None,
        )
        .await,
    );
    assert_eq!(current, Some(r2));
    let entry = b.kv_get(BUCKET, "order-1").await.unwrap().unwrap();
    assert_eq!((entry.value, entry.revision), (Bytes::from("v2"), r2));
    let r3 = b
        .kv_put(BUCKET, "order-1", Bytes::from("v3"), Expect::Any, None)
        .await
        .unwrap();
    assert!(r3 > r2);
}

/// An entry with a TTL exists until the injected clock passes its expiry, then reads as
/// absent, may be created again expecting absence, and cannot be updated by its old revision.
/// Writing it again without a TTL removes the expiry.
pub async fn kv_ttl_expires_by_the_injected_clock(h: &impl BackendHarness) {
    let b = h.open().await;
    let clock = h.clock();
    let ttl = Duration::from_secs(10);
    let now = clock.now_micros();
    let r1 = b
        .kv_put(
            BUCKET,
            "lease-1",
            Bytes::from("owner-a"),
            Expect::Absent,
            Some(ttl),
        )
        .await
        .unwrap();
    let entry = b.kv_get(BUCKET, "lease-1").await.unwrap().unwrap();
    assert_eq!(entry.revision, r1);
    assert_eq!(entry.expires_at, Some(now + ttl.as_micros() as u64));

    clock.advance(Duration::from_secs(9));
    assert!(b.kv_get(BUCKET, "lease-1").await.unwrap().is_some());
    let current = assert_cas_conflict(
        b.kv_put(
            BUCKET,
            "lease-1",
            Bytes::from("owner-b"),
            Expect::Absent,
            None,
        )
        .await,
    );
    assert_eq!(current, Some(r1), "still held one second before expiry");

    clock.advance(Duration::from_secs(2));
    assert_eq!(b.kv_get(BUCKET, "lease-1").await.unwrap(), None);
    let current = assert_cas_conflict(
        b.kv_put(
            BUCKET,
            "lease-1",
            Bytes::from("owner-b"),
            Expect::Revision(r1),
            None,
        )
        .await,
    );
    assert_eq!(current, None, "an expired entry has no current revision");
    let r2 = b
        .kv_put(
            BUCKET,
            "lease-1",
            Bytes::from("owner-b"),
            Expect::Absent,
            Some(ttl),
        )
        .await
        .unwrap();
    assert!(r2 > r1);

    let r3 = b
        .kv_put(
            BUCKET,
            "lease-1",
            Bytes::from("owner-b"),
            Expect::Revision(r2),
            None,
        )
        .await
        .unwrap();
    clock.advance(Duration::from_secs(24 * 3600));
    let entry = b.kv_get(BUCKET, "lease-1").await.unwrap().unwrap();
    assert_eq!((entry.revision, entry.expires_at), (r3, None));
    assert_eq!(entry.value, Bytes::from("owner-b"));
}

/// A scan returns the live entries of one bucket whose keys start with the prefix, in key
/// order, resuming after `start_after`, at most `limit` at a time; expired entries are skipped.
pub async fn kv_scan_by_prefix_in_key_order_with_pagination_skips_expired(h: &impl BackendHarness) {
    let b = h.open().await;
    let clock = h.clock();
    for key in [
        "order/3",
        "order/1",
        "payment/1",
        "order/2",
        "order",
        "orders/1",
        "order/5",
    ] {
        b.kv_put(
            BUCKET,
            key,
            Bytes::from(format!("v:{key}")),
            Expect::Any,
            None,
        )
        .await
        .unwrap();
    }
    b.kv_put(
        BUCKET,
        "order/4",
        Bytes::from("short-lived"),
        Expect::Any,
        Some(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    b.kv_put("other", "order/9", Bytes::from("x"), Expect::Any, None)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(2));

    let keys = |entries: Vec<runnel_backend::KvEntry>| -> Vec<String> {
        entries.into_iter().map(|e| e.key).collect()
    };
    let all = b.kv_scan(BUCKET, "order/", None, 100).await.unwrap();
    assert_eq!(all[0].value, Bytes::from("v:order/1"));
    assert_eq!(keys(all), ["order/1", "order/2", "order/3", "order/5"]);

    let page1 = b.kv_scan(BUCKET, "order/", None, 2).await.unwrap();
    assert_eq!(keys(page1), ["order/1", "order/2"]);
    let page2 = b
        .kv_scan(BUCKET, "order/", Some("order/2"), 2)
        .await
        .unwrap();
    assert_eq!(keys(page2), ["order/3", "order/5"], "order/4 expired");
    let page3 = b
        .kv_scan(BUCKET, "order/", Some("order/5"), 2)
        .await
        .unwrap();
    assert!(page3.is_empty());

    let everything = b.kv_scan(BUCKET, "", None, 100).await.unwrap();
    assert_eq!(
        keys(everything),
        [
            "order",
            "order/1",
            "order/2",
            "order/3",
            "order/5",
            "orders/1",
            "payment/1"
        ]
    );
    let before_prefix = b.kv_scan(BUCKET, "order/", Some("a"), 100).await.unwrap();
    assert_eq!(before_prefix.len(), 4, "start_after before the prefix");
    assert!(
        b.kv_scan(BUCKET, "missing/", None, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Deleting honours its expectation: an absent key deletes with `Any` or `Absent` but not
/// with a revision, a present one only with `Any` or its current revision; expired counts as
/// absent.
pub async fn kv_delete_with_expectations(h: &impl BackendHarness) {
    let b = h.open().await;
    let clock = h.clock();
    b.kv_delete(BUCKET, "k", Expect::Any).await.unwrap();
    b.kv_delete(BUCKET, "k", Expect::Absent).await.unwrap();
    assert_eq!(
        assert_cas_conflict(b.kv_delete(BUCKET, "k", Expect::Revision(1)).await),
        None
    );

    let r0 = b
        .kv_put(BUCKET, "k", Bytes::from("v0"), Expect::Any, None)
        .await
        .unwrap();
    let r1 = b
        .kv_put(BUCKET, "k", Bytes::from("v1"), Expect::Any, None)
        .await
        .unwrap();
    assert_eq!(
        assert_cas_conflict(b.kv_delete(BUCKET, "k", Expect::Revision(r0)).await),
        Some(r1)
    );
    assert_eq!(
        assert_cas_conflict(b.kv_delete(BUCKET, "k", Expect::Absent).await),
        Some(r1)
    );
    assert!(b.kv_get(BUCKET, "k").await.unwrap().is_some());
    b.kv_delete(BUCKET, "k", Expect::Revision(r1))
        .await
        .unwrap();
    assert_eq!(b.kv_get(BUCKET, "k").await.unwrap(), None);

    b.kv_put(BUCKET, "gone", Bytes::from("x"), Expect::Any, None)
        .await
        .unwrap();
    b.kv_delete(BUCKET, "gone", Expect::Any).await.unwrap();
    assert_eq!(b.kv_get(BUCKET, "gone").await.unwrap(), None);

    b.kv_put(
        BUCKET,
        "brief",
        Bytes::from("x"),
        Expect::Any,
        Some(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    clock.advance(Duration::from_secs(2));
    b.kv_delete(BUCKET, "brief", Expect::Absent).await.unwrap();
}

/// Revisions in a bucket keep growing across deletes and restarts, so a writer holding a
/// revision from before a delete can never match the key written again.
pub async fn kv_revisions_keep_growing_after_delete_and_restart(h: &impl BackendHarness) {
    let b = h.open().await;
    let r1 = b
        .kv_put(BUCKET, "k", Bytes::from("v1"), Expect::Absent, None)
        .await
        .unwrap();
    b.kv_delete(BUCKET, "k", Expect::Revision(r1))
        .await
        .unwrap();
    let r2 = b
        .kv_put(BUCKET, "k", Bytes::from("v2"), Expect::Absent, None)
        .await
        .unwrap();
    assert!(r2 > r1, "recreated after delete: {r1} then {r2}");
    let current = assert_cas_conflict(
        b.kv_put(BUCKET, "k", Bytes::from("x"), Expect::Revision(r1), None)
            .await,
    );
    assert_eq!(current, Some(r2));
    b.kv_delete(BUCKET, "k", Expect::Any).await.unwrap();
    drop(b);

    let b = h.open().await;
    let r3 = b
        .kv_put(BUCKET, "k", Bytes::from("v3"), Expect::Absent, None)
        .await
        .unwrap();
    assert!(r3 > r2, "after a restart: {r2} then {r3}");
}

/// After a restart, streams, their records (with offsets, timestamps and headers) and
/// key-value entries (with revisions and expiry) are exactly as before, and appends continue
/// at the high watermark.
pub async fn records_and_kv_survive_restart(h: &impl BackendHarness) {
    let b = h.open().await;
    let s = stream("orders");
    let config = StreamConfig {
        partitions: 2,
        retention: RetentionConfig {
            max_age: Some(Duration::from_secs(3600)),
            max_bytes_per_partition: Some(1 << 30),
        },
    };
    b.create_stream(&s, config.clone()).await.unwrap();
    let with_header = record("user-1", "placed").with_header("traceparent", "00-abc-01");
    b.append(&s, 0, vec![with_header, record("user-2", "paid")])
        .await
        .unwrap();
    b.append(&s, 1, numbered_records("p1", 0..3)).await.unwrap();
    b.kv_put(
        BUCKET,
        "lease",
        Bytes::from("owner"),
        Expect::Absent,
        Some(Duration::from_secs(600)),
    )
    .await
    .unwrap();
    b.kv_put(BUCKET, "cursor", Bytes::from("7"), Expect::Absent, None)
        .await
        .unwrap();
    let info = b.describe_stream(&s).await.unwrap();
    let p0 = read_all(&*b, &s, 0).await;
    let p1 = read_all(&*b, &s, 1).await;
    let lease = b.kv_get(BUCKET, "lease").await.unwrap();
    let cursor = b.kv_get(BUCKET, "cursor").await.unwrap();
    drop(b);

    let b = h.open().await;
    let after = b.describe_stream(&s).await.unwrap();
    assert_eq!(after.config, config);
    assert_eq!(after.created_at, info.created_at);
    let watermarks = |i: &runnel_backend::StreamInfo| -> Vec<(u32, u64, u64)> {
        i.partitions
            .iter()
            .map(|p| (p.partition, p.start_offset, p.high_watermark))
            .collect()
    };
    assert_eq!(watermarks(&after), watermarks(&info));
    assert_eq!(read_all(&*b, &s, 0).await, p0);
    assert_eq!(read_all(&*b, &s, 1).await, p1);
    assert_eq!(b.kv_get(BUCKET, "lease").await.unwrap(), lease);
    assert_eq!(b.kv_get(BUCKET, "cursor").await.unwrap(), cursor);
    assert_eq!(b.list_streams().await.unwrap().len(), 1);

    let ack = b
        .append(&s, 0, vec![record("user-3", "shipped")])
        .await
        .unwrap();
    assert_eq!(ack.base_offset, 2, "appends continue at the high watermark");
}

/// Keys, values and headers come back exactly as appended: empty ones, every byte value,
/// bytes that are not UTF-8, repeated header names in order, and a 64 KiB value. Key-value
/// values likewise.
pub async fn headers_keys_and_values_round_trip_byte_for_byte(h: &impl BackendHarness) {
    let b = h.open().await;
    let s = create(&*b, "orders", 1).await;
    let every_byte: Bytes = (0..=255u8).collect::<Vec<u8>>().into();
    let big: Bytes = every_byte.repeat(256).into();
    let records = vec![
        Record::default(),
        Record {
            key: every_byte.clone(),
            value: big.clone(),
            headers: vec![
                Header::new(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
                Header::new("dup", "1"),
                Header::new("dup", "2"),
                Header::new("empty", ""),
                Header::new(Bytes::from_static(&[0xff, 0xfe]), every_byte.clone()),
            ],
        },
        Record {
            key: Bytes::from_static(b"\0nul\0"),
            value: Bytes::from_static(b"\xc3\x28 not utf-8"),
            headers: vec![Header::new("content-type", "application/json")],
        },
    ];
    b.append(&s, 0, records.clone()).await.unwrap();
    let read = b
        .read(&s, 0, ReadFrom::Offset(0), 10, usize::MAX)
        .await
        .unwrap();
    assert_eq!(read.len(), records.len());
    for (got, sent) in read.iter().zip(&records) {
        assert_eq!(got.key, sent.key, "key at offset {}", got.offset);
        assert_eq!(got.value, sent.value, "value at offset {}", got.offset);
        assert_eq!(
            got.headers, sent.headers,
            "headers at offset {}",
            got.offset
        );
    }

    for (key, value) in [
        ("binary", every_byte.clone()),
        ("empty", Bytes::new()),
        ("big", big),
    ] {
        b.kv_put(BUCKET, key, value.clone(), Expect::Any, None)
            .await
            .unwrap();
        let entry = b.kv_get(BUCKET, key).await.unwrap().unwrap();
        assert_eq!(entry.value, value, "kv value of {key}");
    }
}

/// A group name, bucket or key that is empty is refused as invalid.
pub async fn empty_group_bucket_and_key_are_invalid(h: &impl BackendHarness) {
    let b = h.open().await;
    let s = create(&*b, "orders", 1).await;
    let v = || Bytes::from("v");
    assert_invalid(b.commit_offset("", &s, 0, 1, Expect::Any).await, "commit");
    assert_invalid(b.committed_offset("", &s, 0).await, "committed");
    assert_invalid(
        b.kv_put("", "k", v(), Expect::Any, None).await,
        "put, bucket",
    );
    assert_invalid(
        b.kv_put(BUCKET, "", v(), Expect::Any, None).await,
        "put, key",
    );
    assert_invalid(b.kv_get("", "k").await, "get, bucket");
    assert_invalid(b.kv_get(BUCKET, "").await, "get, key");
    assert_invalid(b.kv_delete(BUCKET, "", Expect::Any).await, "delete, key");
    assert_invalid(b.kv_scan("", "", None, 10).await, "scan, bucket");
}

/// After `close`, every call fails with `Closed` (a second close too); opening again finds
/// everything as it was.
pub async fn calls_after_close_fail_with_closed(h: &impl BackendHarness) {
    let b = h.open().await;
    let s = create(&*b, "orders", 1).await;
    b.append(&s, 0, vec![record("k", "v")]).await.unwrap();
    b.close().await.unwrap();

    assert_closed(b.append(&s, 0, vec![record("k", "v")]).await);
    assert_closed(b.read(&s, 0, ReadFrom::Offset(0), 10, usize::MAX).await);
    assert_closed(b.list_streams().await);
    assert_closed(b.wait_for_data(&s, 0, 0, SHORT_WAIT).await);
    assert_closed(b.commit_offset(GROUP, &s, 0, 1, Expect::Any).await);
    assert_closed(b.kv_get(BUCKET, "k").await);
    assert_closed(
        b.kv_put(BUCKET, "k", Bytes::from("v"), Expect::Any, None)
            .await,
    );
    assert_closed(b.close().await);

    let b = h.open().await;
    assert_eq!(b.partition_info(&s, 0).await.unwrap().high_watermark, 1);
}

/// Deleting a stream removes its records, its definition and every group's offsets on it
/// (others' stay), for good (a restart does not bring it back); deleting it again is
/// `UnknownStream`; creating it again (with another partition count, even) gives an empty
/// stream whose offsets start at 0 and that no group has committed on.
pub async fn a_deleted_stream_is_gone_and_created_again_starts_empty(h: &impl BackendHarness) {
    let b = h.open().await;
    let s = create(&*b, "orders", 2).await;
    let other = create(&*b, "payments", 1).await;
    b.append(&s, 0, numbered_records("a", 0..3)).await.unwrap();
    b.append(&s, 1, numbered_records("b", 0..2)).await.unwrap();
    b.append(&other, 0, numbered_records("p", 0..1))
        .await
        .unwrap();
    b.commit_offset(GROUP, &s, 0, 3, Expect::Absent)
        .await
        .unwrap();
    b.commit_offset("audit", &s, 1, 2, Expect::Absent)
        .await
        .unwrap();
    b.commit_offset(GROUP, &other, 0, 1, Expect::Absent)
        .await
        .unwrap();

    b.delete_stream(&s).await.expect("delete");
    assert_unknown_stream(b.describe_stream(&s).await, &s);
    assert_unknown_stream(b.read(&s, 0, ReadFrom::Offset(0), 10, 1 << 20).await, &s);
    assert_unknown_stream(b.append(&s, 0, numbered_records("c", 0..1)).await, &s);
    assert_unknown_stream(b.committed_offset(GROUP, &s, 0).await, &s);
    assert_unknown_stream(b.delete_stream(&s).await, &s);
    let names: Vec<_> = b
        .list_streams()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, vec![other.clone()], "only the other stream is left");
    assert_eq!(
        b.committed_offset(GROUP, &other, 0)
            .await
            .unwrap()
            .map(|c| c.offset),
        Some(1),
        "offsets on other streams stay"
    );

    let b = h.open().await;
    assert_unknown_stream(b.describe_stream(&s).await, &s);
    let again = create(&*b, "orders", 3).await;
    let info = b.describe_stream(&again).await.unwrap();
    assert_eq!(info.partitions.len(), 3);
    for p in &info.partitions {
        assert_eq!(
            (p.start_offset, p.high_watermark),
            (0, 0),
            "partition {} starts empty",
            p.partition
        );
    }
    for (group, partition) in [(GROUP, 0), ("audit", 1)] {
        assert_eq!(
            b.committed_offset(group, &again, partition).await.unwrap(),
            None,
            "{group} has no offset on the new stream"
        );
    }
    let ack = b
        .append(&again, 0, numbered_records("new", 0..1))
        .await
        .unwrap();
    assert_eq!(ack.base_offset, 0);
    let read = read_all(&*b, &again, 0).await;
    assert_eq!(values(&read), vec!["new-0"], "nothing of the old stream");
}

/// A wait on a stream that is deleted meanwhile ends with `UnknownStream` at once, not at
/// its timeout, whether it waits at the tail it has read to (where a reader stands) or
/// elsewhere.
pub async fn a_wait_on_a_deleted_stream_ends_with_unknown_stream(h: &impl BackendHarness) {
    let b = h.open().await;
    let s = create(&*b, "orders", 2).await;
    b.append(&s, 0, numbered_records("a", 0..2)).await.unwrap();
    // A reader at the tail of partition 0 (JetStream keeps a standing pull there).
    assert_eq!(read_all(&*b, &s, 0).await.len(), 2);
    let at_tail = {
        let (b, s) = (b.clone(), s.clone());
        tokio::spawn(async move { b.wait_for_data(&s, 0, 2, LONG_WAIT).await })
    };
    let elsewhere = {
        let (b, s) = (b.clone(), s.clone());
        tokio::spawn(async move { b.wait_for_data(&s, 1, 0, LONG_WAIT).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.delete_stream(&s).await.expect("delete");
    for (what, waiter) in [("at the tail", at_tail), ("elsewhere", elsewhere)] {
        let ended = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap_or_else(|_| panic!("the wait {what} still runs after the delete"))
            .expect("waiter task");
        assert_unknown_stream(ended, &s);
    }
    assert_unknown_stream(b.wait_for_data(&s, 0, 0, LONG_WAIT).await, &s);
}

/// Deleting a group's offsets removes them on every stream and no other group's; the group
/// can commit afresh (`Expect::Absent`) after.
pub async fn deleting_a_groups_offsets_leaves_other_groups_alone(h: &impl BackendHarness) {
    let b = h.open().await;
    let s = create(&*b, "orders", 2).await;
    let other = create(&*b, "payments", 1).await;
    for (group, stream, partition) in [
        (GROUP, &s, 0),
        (GROUP, &s, 1),
        (GROUP, &other, 0),
        ("billing-audit", &s, 0),
        ("audit", &s, 0),
    ] {
        b.commit_offset(group, stream, partition, 1, Expect::Absent)
            .await
            .unwrap();
    }
    assert_eq!(b.delete_group_offsets(GROUP).await.unwrap(), 3);
    for (stream, partition) in [(&s, 0), (&s, 1), (&other, 0)] {
        assert_eq!(
            b.committed_offset(GROUP, stream, partition).await.unwrap(),
            None
        );
    }
    for group in ["billing-audit", "audit"] {
        assert!(
            b.committed_offset(group, &s, 0).await.unwrap().is_some(),
            "{group} keeps its offset"
        );
    }
    b.commit_offset(GROUP, &s, 0, 7, Expect::Absent)
        .await
        .expect("commits afresh");
    assert_eq!(b.delete_group_offsets("nobody").await.unwrap(), 0);
    assert_invalid(b.delete_group_offsets("").await, "an empty group");
}

/// Deleting by prefix takes whole segments (`g/` takes `g/a` and `g/b/c`, never `gx/a` nor
/// `g` itself), counts the live keys, removes expired ones too, and refuses a prefix that
/// does not end with `/`.
pub async fn kv_delete_prefix_removes_whole_segments_only(h: &impl BackendHarness) {
    let b = h.open().await;
    let clock = h.clock();
    let put = |key: &'static str, ttl: Option<Duration>| {
        let b = b.clone();
        async move {
            b.kv_put(BUCKET, key, Bytes::from_static(b"v"), Expect::Any, ttl)
                .await
                .unwrap()
        }
    };
    put("g/a", None).await;
    put("g/b/c", None).await;
    put("g/old", Some(Duration::from_secs(1))).await;
    put("gx/a", None).await;
    put("g", None).await;
    b.kv_put("other", "g/a", Bytes::from_static(b"v"), Expect::Any, None)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(2));
    assert_eq!(b.kv_delete_prefix(BUCKET, "g/").await.unwrap(), 2);
    let left: Vec<String> = b
        .kv_scan(BUCKET, "", None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(left, vec!["g", "gx/a"]);
    assert!(
        b.kv_get("other", "g/a").await.unwrap().is_some(),
        "other buckets stay"
    );
    let revision = put("g/a", None).await;
    assert!(revision > 0, "a deleted key can be written again");
    assert_eq!(b.kv_delete_prefix(BUCKET, "g/").await.unwrap(), 1);
    assert_eq!(b.kv_delete_prefix(BUCKET, "nothing/").await.unwrap(), 0);
    assert_invalid(b.kv_delete_prefix(BUCKET, "g").await, "no trailing `/`");
    assert_invalid(b.kv_delete_prefix(BUCKET, "/").await, "no segment");
}
