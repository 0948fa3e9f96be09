//! What the JetStream backend does beyond the shared suites: several processes on one
//! namespace (contiguous batches, wake-ups, readers at the tail, id-based dedup), removal of expired key-value
//! entries, names that need escaping, and refusing bad configuration. Each test opens its
//! backends directly, as separate connections stand for separate Runnel processes. Needs
//! `RUNNEL_TEST_NATS_URL` (see `common`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use runnel_backend::{Backend, BackendError, Expect, ReadFrom, Record, StreamConfig};
use runnel_backend_jetstream::{JetStreamBackend, JetStreamConfig};
use runnel_clock::ManualClock;
use runnel_test_util::{manual_clock, read_all, record, stream};

/// A namespace of its own, deleted at the end; `backend()` connects another "process".
struct Namespace {
    url: String,
    namespace: String,
    clock: ManualClock,
}

impl Namespace {
    fn new() -> Option<Self> {
        Some(Self {
            url: common::nats_url()?,
            namespace: common::unique_namespace(),
            clock: manual_clock(),
        })
    }

    fn config(&self) -> JetStreamConfig {
        common::config(&self.url, &self.namespace, &self.clock)
    }

    async fn backend_with(&self, config: JetStreamConfig) -> Arc<JetStreamBackend> {
        Arc::new(
            JetStreamBackend::connect(config)
                .await
                .expect("connect the JetStream backend"),
        )
    }

    async fn backend(&self) -> Arc<JetStreamBackend> {
        self.backend_with(self.config()).await
    }

    async fn delete(self) {
        JetStreamBackend::delete_namespace(self.config())
            .await
            .expect("delete the test namespace");
    }
}

macro_rules! namespace_or_skip {
    () => {
        match Namespace::new() {
            Some(namespace) => namespace,
            None => return,
        }
    };
}

/// Creates stream `s` with `partitions` partitions.
async fn create(backend: &JetStreamBackend, s: &runnel_backend::StreamName, partitions: u32) {
    backend
        .create_stream(
            s,
            StreamConfig {
                partitions,
                ..StreamConfig::default()
            },
        )
        .await
        .expect("create the stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_two_processes_appending_batches_to_one_partition_each_batch_stays_contiguous() {
    const BATCHES: u32 = 25;
    const SIZE: u32 = 4;
    let ns = namespace_or_skip!();
    let s = stream("orders");
    let a = ns.backend().await;
    create(&a, &s, 1).await;
    let b = ns.backend().await;
    let mut writers = Vec::new();
    for (name, backend) in [("a", a.clone()), ("b", b.clone())] {
        let s = s.clone();
        writers.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for batch in 0..BATCHES {
                let records = (0..SIZE)
                    .map(|i| record("k", &format!("{name}-{batch}-{i}")))
                    .collect();
                acks.push((batch, backend.append(&s, 0, records).await.expect("append")));
            }
            (name, acks)
        }));
    }
    let all = read_all(&*a, &s, 0).await;
    let mut total = 0;
    for writer in writers {
        let (name, acks) = writer.await.unwrap();
        for (batch, ack) in acks {
            total += ack.count;
            let records = read_all(&*a, &s, 0).await;
            let landed: Vec<String> = records
                [ack.base_offset as usize..(ack.base_offset + u64::from(SIZE)) as usize]
                .iter()
                .map(|r| String::from_utf8_lossy(&r.value).into_owned())
                .collect();
            let sent: Vec<String> = (0..SIZE).map(|i| format!("{name}-{batch}-{i}")).collect();
            assert_eq!(
                landed, sent,
                "batch {batch} of {name} at {}",
                ack.base_offset
            );
        }
    }
    let after = read_all(&*a, &s, 0).await;
    assert!(all.len() <= after.len());
    assert_eq!(after.len() as u32, total, "nothing lost, nothing doubled");
    assert!(
        after.windows(2).all(|w| w[0].timestamp <= w[1].timestamp),
        "append timestamps never decrease along the partition"
    );
    ns.delete().await;
}

#[tokio::test]
async fn given_a_waiter_in_one_process_an_append_from_another_wakes_it() {
    let ns = namespace_or_skip!();
    let s = stream("orders");
    let waiter = ns.backend().await;
    create(&waiter, &s, 2).await;
    let writer = ns.backend().await;
    let started = tokio::time::Instant::now();
    let wait = waiter.wait_for_data(&s, 1, 0, Duration::from_secs(30));
    let append = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        writer.append(&s, 1, vec![record("k", "v")]).await
    };
    let (woken, appended) = tokio::join!(wait, append);
    appended.unwrap();
    assert_eq!(woken.unwrap(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woken by the append, not the timeout"
    );
    ns.delete().await;
}

/// A reader at the tail keeps its cursor (whose pull stays open) between reads; what another
/// process appends reaches that cursor, wakes the reader's wait and is read in order.
#[tokio::test]
async fn given_a_reader_at_the_tail_records_appended_by_another_process_reach_it_in_order() {
    let ns = namespace_or_skip!();
    let s = stream("orders");
    let reader = ns.backend().await;
    create(&reader, &s, 1).await;
    let writer = ns.backend().await;
    let empty = reader
        .read(&s, 0, ReadFrom::Offset(0), 100, usize::MAX)
        .await
        .unwrap();
    assert!(empty.is_empty(), "nothing appended yet");
    let mut next = 0u64;
    for round in 0..3u64 {
        let started = tokio::time::Instant::now();
        let wait = reader.wait_for_data(&s, 0, next, Duration::from_secs(30));
        let append = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let records = (0..4)
                .map(|i| record("k", &format!("v{}", round * 4 + i)))
                .collect();
            writer.append(&s, 0, records).await
        };
        let (woken, appended) = tokio::join!(wait, append);
        assert_eq!(appended.unwrap().base_offset, round * 4);
        assert!(woken.unwrap() > next, "the wait saw the new records");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "woken by the records, not the timeout"
        );
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while next < (round + 1) * 4 {
            assert!(tokio::time::Instant::now() < until, "records arrive");
            let batch = reader
                .read(&s, 0, ReadFrom::Offset(next), 100, usize::MAX)
                .await
                .unwrap();
            for r in &batch {
                assert_eq!(r.offset, next);
                assert_eq!(r.value, Bytes::from(format!("v{next}")));
                next += 1;
            }
        }
    }
    let at_tail = reader
        .read(&s, 0, ReadFrom::Offset(12), 100, usize::MAX)
        .await
        .unwrap();
    assert!(at_tail.is_empty());
    ns.delete().await;
}

/// The consumers JetStream holds for one partition's stream (the backend's cursors).
async fn consumers_of(url: &str, stream: &str) -> usize {
    let client = async_nats::connect(url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut info = js.get_stream(stream).await.expect("the partition's stream");
    info.info().await.expect("stream info").state.consumer_count
}

/// When nothing answers for a partition's subject (here its stream was deleted behind the
/// backend; during an election, it has no leader) the server answers each publish "no
/// responders": the append takes that as a failure that may pass, looks at the partition
/// again, and reports what it finds — here that the stream is gone, as `UnknownStream`
/// naming it (as for a stream deleted through the backend) — rather than hanging.
#[tokio::test]
async fn an_append_nobody_answers_reports_the_stream_gone() {
    let ns = namespace_or_skip!();
    let s = stream("orders");
    let b = ns
        .backend_with(JetStreamConfig {
            request_timeout: Duration::from_millis(500),
            ..ns.config()
        })
        .await;
    create(&b, &s, 1).await;
    b.append(&s, 0, vec![record("k", "v0")]).await.unwrap();
    let client = async_nats::connect(&ns.url).await.expect("connect");
    async_nats::jetstream::new(client)
        .delete_stream(format!("{}_orders_0", ns.namespace))
        .await
        .expect("delete the partition's stream behind the backend");
    let started = std::time::Instant::now();
    let records = (0..3).map(|i| record("k", &format!("v{i}"))).collect();
    match b.append(&s, 0, records).await {
        Err(BackendError::UnknownStream(name)) => assert_eq!(name, s),
        other => panic!("expected UnknownStream naming the stream, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "gave up only after {:?}",
        started.elapsed()
    );
    ns.delete().await;
}

/// A cursor costs the server a consumer with a pull kept open, so reads open one only where
/// there are records to read: reads at the high watermark open none, and the records a
/// cursor reads keep coming through that one cursor.
#[tokio::test]
async fn reads_at_the_high_watermark_open_no_cursor_and_reads_in_order_share_one() {
    let ns = namespace_or_skip!();
    let s = stream("orders");
    let b = ns.backend().await;
    create(&b, &s, 1).await;
    let partition_stream = format!("{}_orders_0", ns.namespace);
    for _ in 0..3 {
        let nothing = b
            .read(&s, 0, ReadFrom::Offset(0), 100, usize::MAX)
            .await
            .unwrap();
        assert!(nothing.is_empty());
    }
    assert_eq!(consumers_of(&ns.url, &partition_stream).await, 0);
    let records: Vec<Record> = (0..30).map(|i| record("k", &format!("v{i}"))).collect();
    b.append(&s, 0, records).await.unwrap();
    let mut next = 0;
    while next < 30 {
        let batch = b
            .read(&s, 0, ReadFrom::Offset(next), 10, usize::MAX)
            .await
            .unwrap();
        assert_eq!(
            batch.len(),
            10,
            "every record up to the high watermark, to the limit"
        );
        next += batch.len() as u64;
    }
    let at_tail = b
        .read(&s, 0, ReadFrom::Offset(30), 100, usize::MAX)
        .await
        .unwrap();
    assert!(at_tail.is_empty());
    assert_eq!(consumers_of(&ns.url, &partition_stream).await, 1);
    b.close().await.unwrap();
    assert_eq!(consumers_of(&ns.url, &partition_stream).await, 0);
    ns.delete().await;
}

/// A reader whose cursor stands at the tail (its pull open) and then falls far behind a burst
/// reads on with fetches: every record once, in order, across the change.
#[tokio::test]
async fn a_reader_at_the_tail_that_falls_far_behind_reads_every_record_in_order() {
    let ns = namespace_or_skip!();
    let s = stream("orders");
    let reader = ns.backend().await;
    create(&reader, &s, 1).await;
    let writer = ns.backend().await;
    let value = |n: u64| format!("v{n}");
    writer
        .append(&s, 0, (0..3).map(|n| record("k", &value(n))).collect())
        .await
        .unwrap();
    let mut next = 0u64;
    let check = |batch: Vec<runnel_backend::StoredRecord>, next: &mut u64| {
        for r in batch {
            assert_eq!(r.offset, *next, "in order, once");
            assert_eq!(r.value, Bytes::from(value(*next)));
            *next += 1;
        }
    };
    while next < 3 {
        let batch = reader
            .read(&s, 0, ReadFrom::Offset(next), 100, usize::MAX)
            .await
            .unwrap();
        check(batch, &mut next);
    }
    // At the tail: the cursor stands.
    let nothing = reader
        .read(&s, 0, ReadFrom::Offset(3), 100, usize::MAX)
        .await
        .unwrap();
    assert!(nothing.is_empty());
    let total = 3 + 12_000;
    for start in (3..total).step_by(1_000) {
        let records = (start..start + 1_000)
            .map(|n| record("k", &value(n)))
            .collect();
        writer.append(&s, 0, records).await.unwrap();
    }
    assert!(
        reader
            .wait_for_data(&s, 0, 3, Duration::from_secs(10))
            .await
            .unwrap()
            > 3
    );
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    while next < total {
        assert!(tokio::time::Instant::now() < until, "the reader catches up");
        let batch = reader
            .read(&s, 0, ReadFrom::Offset(next), 500, usize::MAX)
            .await
            .unwrap();
        if batch.is_empty() {
            reader
                .wait_for_data(&s, 0, next, Duration::from_secs(1))
                .await
                .unwrap();
        }
        check(batch, &mut next);
    }
    ns.delete().await;
}

#[tokio::test]
async fn a_record_appended_again_with_the_same_id_is_answered_with_its_first_position() {
    let ns = namespace_or_skip!();
    let s = stream("orders");
    let with_ids = || JetStreamConfig {
        dedup_header: Some("id".into()),
        ..ns.config()
    };
    let first = ns.backend_with(with_ids()).await;
    create(&first, &s, 1).await;
    let event =
        |id: &str| Record::new("k", format!("event {id}")).with_header("id", id.to_string());
    first.append(&s, 0, vec![event("x0")]).await.unwrap();
    let original = first
        .append(&s, 0, vec![event("e1"), event("e2")])
        .await
        .unwrap();
    assert_eq!((original.base_offset, original.count), (1, 2));
    assert!(!original.duplicate, "a first append is not a duplicate");

    // Another process publishes the same ids (e.g. a client retried through another node).
    let second = ns.backend_with(with_ids()).await;
    let again = second
        .append(&s, 0, vec![event("e1"), event("e2")])
        .await
        .unwrap();
    assert_eq!(
        (again.base_offset, again.count),
        (1, 2),
        "the first position"
    );
    assert!(again.duplicate, "answered as a duplicate");
    let single = second.append(&s, 0, vec![event("e2")]).await.unwrap();
    assert_eq!(single.base_offset, 2);
    assert!(single.duplicate);
    assert_eq!(
        second.partition_info(&s, 0).await.unwrap().high_watermark,
        3,
        "nothing appended twice"
    );
    // An append cut off after its first records (here: only e3 and e4 of e3..e6 reached
    // the stream) and sent again, by a client retrying through the other process: the old
    // records are in place right before the new ones, so the batch is acknowledged whole.
    first
        .append(&s, 0, vec![event("e3"), event("e4")])
        .await
        .unwrap();
    let completed = second
        .append(&s, 0, ["e3", "e4", "e5", "e6"].map(event).to_vec())
        .await
        .unwrap();
    assert_eq!((completed.base_offset, completed.count), (3, 4));
    assert!(!completed.duplicate, "e5 and e6 were appended");
    // Records already in the stream but not right before the new ones: one base offset and
    // count cannot describe the batch, so it is refused and nothing of it is appended.
    match second.append(&s, 0, vec![event("e1"), event("e7")]).await {
        Err(BackendError::Engine(message)) => assert!(message.contains("duplicate"), "{message}"),
        other => panic!("expected a refusal of a scattered half-duplicate batch, got {other:?}"),
    }
    // Appends go on normally afterwards, from either process.
    let next = first.append(&s, 0, vec![event("e7")]).await.unwrap();
    assert!(!next.duplicate);
    let records = read_all(&*second, &s, 0).await;
    let values: Vec<&[u8]> = records.iter().map(|r| r.value.as_ref()).collect();
    let expected: Vec<String> = ["x0", "e1", "e2", "e3", "e4", "e5", "e6", "e7"]
        .iter()
        .map(|id| format!("event {id}"))
        .collect();
    assert_eq!(
        values,
        expected.iter().map(|v| v.as_bytes()).collect::<Vec<_>>(),
        "every record once, in order"
    );
    assert_eq!(next.base_offset, 7);
    ns.delete().await;
}

#[tokio::test]
async fn expired_entries_and_delete_markers_are_removed_and_revisions_keep_growing() {
    let ns = namespace_or_skip!();
    let b = ns.backend().await;
    let bucket = "leases";
    let short = b
        .kv_put(
            bucket,
            "g/lease",
            Bytes::from("a"),
            Expect::Absent,
            Some(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    b.kv_put(bucket, "g/gone", Bytes::from("b"), Expect::Any, None)
        .await
        .unwrap();
    b.kv_delete(bucket, "g/gone", Expect::Any).await.unwrap();
    let kept = b
        .kv_put(
            bucket,
            "g/kept",
            Bytes::from("c"),
            Expect::Any,
            Some(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_eq!(
        b.remove_expired_now().await.unwrap(),
        1,
        "only the delete marker"
    );

    ns.clock.advance(Duration::from_secs(10));
    assert_eq!(
        b.remove_expired_now().await.unwrap(),
        1,
        "the expired lease"
    );
    assert_eq!(
        b.remove_expired_now().await.unwrap(),
        0,
        "nothing left to remove"
    );
    assert_eq!(b.kv_get(bucket, "g/lease").await.unwrap(), None);
    let kept_entry = b.kv_get(bucket, "g/kept").await.unwrap().unwrap();
    assert_eq!(kept_entry.revision, kept);

    let again = b
        .kv_put(bucket, "g/lease", Bytes::from("a2"), Expect::Absent, None)
        .await
        .unwrap();
    assert!(
        again > kept && kept > short,
        "revisions are never given twice"
    );
    let scanned: Vec<String> = b
        .kv_scan(bucket, "g/", None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(scanned, ["g/kept", "g/lease"]);
    ns.delete().await;
}

#[tokio::test]
async fn keys_and_buckets_that_need_escaping_round_trip_and_scan_by_prefix() {
    let ns = namespace_or_skip!();
    let b = ns.backend().await;
    let bucket = "Schemas.v1 (test)";
    let keys = [
        "order.placed-value/versions/1",
        "order.placed-value/head",
        "a//b",
        "trailing/",
        "spaces and = signs/x",
        "ünïcode/ключ",
    ];
    for key in keys {
        b.kv_put(
            bucket,
            key,
            Bytes::from(key.to_string()),
            Expect::Absent,
            None,
        )
        .await
        .unwrap();
        let entry = b.kv_get(bucket, key).await.unwrap().unwrap();
        assert_eq!(
            (entry.key.as_str(), entry.value),
            (key, Bytes::from(key.to_string()))
        );
    }
    let versions: Vec<String> = b
        .kv_scan(bucket, "order.placed-value/", None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(
        versions,
        ["order.placed-value/head", "order.placed-value/versions/1"]
    );
    let mut all: Vec<&str> = keys.to_vec();
    all.sort_unstable();
    let scanned: Vec<String> = b
        .kv_scan(bucket, "", None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(scanned, all);
    ns.delete().await;
}

#[tokio::test]
async fn reads_continue_where_the_last_one_stopped_and_single_reads_need_no_reader() {
    let ns = namespace_or_skip!();
    let b = ns.backend().await;
    let s = stream("orders");
    create(&b, &s, 1).await;
    let records: Vec<Record> = (0..50).map(|i| record("k", &format!("v{i}"))).collect();
    b.append(&s, 0, records).await.unwrap();
    let mut next = 0;
    let mut seen = 0;
    while next < 50 {
        let batch = b
            .read(&s, 0, ReadFrom::Offset(next), 7, usize::MAX)
            .await
            .unwrap();
        assert!(!batch.is_empty());
        for (i, r) in batch.iter().enumerate() {
            assert_eq!(r.offset, next + i as u64);
            assert_eq!(r.value, Bytes::from(format!("v{}", r.offset)));
        }
        seen += batch.len();
        next += batch.len() as u64;
    }
    assert_eq!(seen, 50);
    let one = b
        .read(&s, 0, ReadFrom::Offset(42), 1, usize::MAX)
        .await
        .unwrap();
    assert_eq!(one[0].value, Bytes::from("v42"));
    assert!(
        b.read(&s, 0, ReadFrom::Offset(50), 1, usize::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        b.read(&s, 0, ReadFrom::Offset(51), 1, usize::MAX).await,
        Err(BackendError::OffsetOutOfRange {
            requested: 51,
            start: 0,
            end: 50,
            ..
        })
    ));
    ns.delete().await;
}

#[tokio::test]
async fn bad_configuration_and_unreachable_servers_are_typed_errors() {
    let Some(url) = common::nats_url() else {
        return;
    };
    let bad_namespace = JetStreamConfig {
        namespace: "has_underscore".into(),
        ..JetStreamConfig::new(url.clone())
    };
    assert!(matches!(
        JetStreamBackend::connect(bad_namespace).await,
        Err(BackendError::Invalid(_))
    ));
    let no_replicas = JetStreamConfig {
        replicas: 0,
        ..JetStreamConfig::new(url)
    };
    assert!(matches!(
        JetStreamBackend::connect(no_replicas).await,
        Err(BackendError::Invalid(_))
    ));
    // Port 1 on loopback: nothing listens there.
    let nowhere = JetStreamConfig {
        request_timeout: Duration::from_secs(2),
        ..JetStreamConfig::new("nats://127.0.0.1:1")
    };
    match JetStreamBackend::connect(nowhere).await {
        Err(BackendError::Unavailable(message)) => {
            assert!(message.contains("127.0.0.1:1"), "{message}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// Runs when `RUNNEL_TEST_OLD_NATS_URL` names a nats-server older than 2.10 (such as
/// Debian's 2.9 package); says it was skipped otherwise.
#[tokio::test]
async fn a_server_older_than_2_10_is_refused_naming_both_versions() {
    let Some(url) = std::env::var("RUNNEL_TEST_OLD_NATS_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        println!("skipped: set RUNNEL_TEST_OLD_NATS_URL to a nats-server older than 2.10");
        return;
    };
    match JetStreamBackend::connect(JetStreamConfig::new(url)).await {
        Err(BackendError::Unavailable(message)) => {
            assert!(
                message.contains("too old") && message.contains("2.10.0"),
                "{message}"
            );
            println!("refused as expected: {message}");
        }
        other => panic!("expected the old server to be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn two_runtimes_publishing_one_event_id_append_it_once_and_the_second_is_told_duplicate() {
    let ns = namespace_or_skip!();
    let with_ids = || JetStreamConfig {
        dedup_header: Some("id".into()),
        ..ns.config()
    };
    let runtime = |backend: Arc<JetStreamBackend>| {
        runnel_runtime::Runnel::open(
            runnel_runtime::RuntimeConfig {
                clock: ns.clock.shared(),
                default_partitions: 1,
                ..runnel_runtime::RuntimeConfig::default()
            },
            backend,
        )
    };
    // Two servers on one JetStream: neither's dedup window knows the other's publishes.
    let first = runtime(ns.backend_with(with_ids()).await);
    let second = runtime(ns.backend_with(with_ids()).await);
    let event = runnel_test_util::runtime::numbered_event(&ns.clock, "order.placed", "k1", 1);
    let original = first.publish(event.clone()).await.unwrap();
    assert!(!original.duplicate);
    let again = second.publish(event).await.unwrap();
    assert!(
        again.duplicate,
        "JetStream's duplicate window caught it: {again:?}"
    );
    assert_eq!(
        (again.partition, again.offset),
        (original.partition, original.offset),
        "answered with the first position"
    );
    let s = stream("order");
    assert_eq!(
        first
            .backend()
            .partition_info(&s, 0)
            .await
            .unwrap()
            .high_watermark,
        1,
        "appended once"
    );
    ns.delete().await;
}
