//! Appending under each fsync policy, group commit sharing syncs, and tail-following readers.

use std::collections::BTreeSet;
use std::time::Duration;

use runnel_log::{FsyncPolicy, LogConfig, LogError, PartitionLog, Record};

fn open(dir: &std::path::Path, fsync: FsyncPolicy) -> PartitionLog {
    let cfg = LogConfig {
        fsync,
        segment_bytes: 64 << 10,
        ..LogConfig::default()
    };
    PartitionLog::open(dir, cfg).unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_group_commit_writers_get_dense_disjoint_offsets_and_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), FsyncPolicy::group());
    let mut tasks = Vec::new();
    for writer in 0..64u32 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut offsets = Vec::new();
            for i in 0..20u32 {
                let batch = vec![Record::new(writer.to_string(), format!("{writer}:{i}")); 3];
                let appended = log.append(batch).await.unwrap();
                offsets.extend(appended.offsets());
            }
            offsets
        }));
    }
    let mut all = BTreeSet::new();
    for task in tasks {
        for offset in task.await.unwrap() {
            assert!(all.insert(offset), "offset {offset} given twice");
        }
    }
    assert_eq!(all.len(), 64 * 20 * 3);
    assert_eq!(
        all.last().copied(),
        Some(all.len() as u64 - 1),
        "dense from 0"
    );
    let stats = log.stats();
    assert_eq!(stats.appends, 64 * 20);
    assert!(
        stats.syncs < stats.appends,
        "group commit should share syncs: {stats:?}"
    );
    assert_eq!(stats.syncs, stats.writes, "one write per sync");
}

#[tokio::test]
async fn always_syncs_every_append_and_os_never_syncs() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(&dir.path().join("always"), FsyncPolicy::Always);
        for _ in 0..5 {
            log.append(vec![Record::new("k", "v")]).await.unwrap();
        }
        assert_eq!(log.stats().syncs, 5);
    }
    let log = open(&dir.path().join("os"), FsyncPolicy::Os);
    for _ in 0..5 {
        log.append(vec![Record::new("k", "v")]).await.unwrap();
    }
    assert_eq!(log.stats().syncs, 0);
    assert_eq!(log.high_watermark(), 5);
}

#[tokio::test]
async fn a_tail_reader_wakes_for_new_records_and_stops_when_the_log_closes() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), FsyncPolicy::group());
    let mut reader = log.reader(0).unwrap();
    assert!(reader.read(10, usize::MAX).unwrap().is_empty());
    let waiter = tokio::spawn(async move {
        let high = reader.wait_for_more().await.unwrap();
        let records = reader.read(10, usize::MAX).unwrap();
        (high, records, reader)
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished(), "nothing to read yet");
    log.append(vec![Record::new("k", "first")]).await.unwrap();
    let (high, records, mut reader) = waiter.await.unwrap();
    assert_eq!(high, 1);
    assert_eq!(records[0].value, "first");
    drop(log);
    assert!(matches!(
        reader.wait_for_more().await,
        Err(LogError::Closed)
    ));
}

#[tokio::test]
async fn reading_below_the_start_after_retention_is_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        fsync: FsyncPolicy::Os,
        segment_bytes: 2_048,
        retention: runnel_log::Retention {
            max_bytes: Some(4_096),
            max_age: None,
        },
        ..LogConfig::default()
    };
    let (log, _) = PartitionLog::open(dir.path(), cfg).unwrap();
    for i in 0..200 {
        log.append(vec![Record::new("k", vec![i as u8; 100])])
            .await
            .unwrap();
    }
    let report = log.enforce_retention().unwrap();
    assert!(report.removed_segments > 0);
    assert!(log.size_bytes() <= 4_096);
    assert_eq!(log.start_offset(), report.start_offset);
    match log.reader(0) {
        Err(LogError::OffsetOutOfRange {
            requested,
            start,
            end,
        }) => {
            assert_eq!((requested, start, end), (0, report.start_offset, 200));
        }
        other => panic!("expected OffsetOutOfRange, got {:?}", other.map(|_| ())),
    }
    let mut reader = log.reader(report.start_offset).unwrap();
    let first = reader.read(1, usize::MAX).unwrap();
    assert_eq!(first[0].offset, report.start_offset);
}
