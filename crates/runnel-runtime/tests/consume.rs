//! Consumer groups over the embedded backend: fan-out, key order, lag, dedup, leases.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use runnel_runtime::{GroupConfig, HandlerError, TypePattern};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_groups_with_different_patterns_each_see_exactly_the_matching_events() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock_now();
    let runnel = open_runtime(dir.path(), &clock).await;
    let types = [
        "order.placed",
        "order.cancelled",
        "payment.charged",
        "email.sent",
    ];
    let mut published: Vec<(String, String)> = Vec::new();
    for n in 0..200u64 {
        let event_type = types[(n % 4) as usize];
        let ack = runnel
            .publish(event(event_type, &format!("k{}", n % 7), n))
            .await
            .unwrap();
        published.push((event_type.to_string(), ack.id));
    }
    let patterns = [
        ("orders", "order.*"),
        ("payments", "payment.*"),
        ("everything", "*.*"),
        ("cancellations", "order.cancelled"),
    ];
    let mut seen: HashMap<&str, Arc<Mutex<Vec<String>>>> = HashMap::new();
    let mut handles = Vec::new();
    for (group, pattern) in patterns {
        let sink = Arc::new(Mutex::new(Vec::new()));
        seen.insert(group, sink.clone());
        let handle = runnel
            .group(group)
            .subscribe(pattern)
            .run(move |message| {
                let sink = sink.clone();
                async move {
                    sink.lock()
                        .unwrap()
                        .push(message.event.id().as_str().to_string());
                    Ok(vec![])
                }
            })
            .await
            .unwrap();
        handles.push(handle);
    }
    for (group, pattern) in patterns {
        let pattern = TypePattern::new(pattern).unwrap();
        let mut want: Vec<String> = published
            .iter()
            .filter(|(t, _)| pattern.matches(t))
            .map(|(_, id)| id.clone())
            .collect();
        want.sort();
        let sink = seen[group].clone();
        eventually(group, || sink.lock().unwrap().len() >= want.len()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut got = sink.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, want, "group {group}");
    }
    for handle in handles {
        handle.stop().await.unwrap();
    }
    for (group, _) in patterns {
        let lag = runnel.lag(group).await.unwrap();
        assert_eq!(lag.total_events, 0, "{group}: {lag:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_counts_events_and_age_after_partial_consumption() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock_now();
    let runnel = open_runtime(dir.path(), &clock).await;
    // One key: one partition, strictly ordered.
    for n in 0..10u64 {
        runnel
            .publish(event("order.placed", "only", n))
            .await
            .unwrap();
    }
    let handle = runnel
        .group("half")
        .subscribe("order.*")
        .run(|message| async move {
            if common::number(&message.event) >= 6 {
                // Stuck: the event stays in flight, so the committed offset stops before it.
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Ok::<_, HandlerError>(vec![])
        })
        .await
        .unwrap();
    let runnel2 = runnel.clone();
    let mut lag = runnel2.lag("half").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while lag.total_events != 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "lag stuck at {lag:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        lag = runnel2.lag("half").await.unwrap();
    }
    clock.advance(Duration::from_secs(90));
    let lag = runnel.lag("half").await.unwrap();
    assert_eq!(lag.total_events, 4);
    assert!(
        lag.max_seconds >= 89.0 && lag.max_seconds < 200.0,
        "{lag:?}"
    );
    let busy: Vec<_> = lag.partitions.iter().filter(|p| p.events > 0).collect();
    assert_eq!(busy.len(), 1);
    assert_eq!(busy[0].high_watermark - busy[0].committed, 4);
    // Not `stop`: that would wait up to ack_wait for the stuck handlers.
    drop(handle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_publish_returns_the_first_position_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock_now();
    let original = event("order.placed", "k", 1);
    let first = {
        let runnel = open_runtime(dir.path(), &clock).await;
        let first = runnel.publish(original.clone()).await.unwrap();
        assert!(!first.duplicate);
        let again = runnel.publish(original.clone()).await.unwrap();
        assert!(again.duplicate);
        assert_eq!(
            (again.partition, again.offset),
            (first.partition, first.offset)
        );
        runnel.backend().close().await.unwrap();
        first
    };
    clock.advance(Duration::from_secs(60));
    let runnel = open_runtime(dir.path(), &clock).await;
    let after_restart = runnel.publish(original.clone()).await.unwrap();
    assert!(after_restart.duplicate, "{after_restart:?}");
    assert_eq!(
        (after_restart.partition, after_restart.offset),
        (first.partition, first.offset)
    );
    let info = runnel
        .backend()
        .partition_info(&first.stream, first.partition)
        .await
        .unwrap();
    assert_eq!(info.high_watermark, 1, "nothing appended twice");
    // Past the window it is a new publish.
    clock.advance(Duration::from_secs(121));
    runnel.backend().close().await.unwrap();
    let runnel = open_runtime(dir.path(), &clock).await;
    let later = runnel.publish(original).await.unwrap();
    assert!(!later.duplicate);
    assert_eq!(later.offset, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_validated_whole_and_dedups_within_itself() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock_now();
    let runnel = open_runtime(dir.path(), &clock).await;
    let e = event("order.placed", "k", 1);
    let acks = runnel
        .publish_batch(vec![e.clone(), e.clone(), event("order.placed", "k", 2)])
        .await
        .unwrap();
    assert_eq!(acks.len(), 3);
    assert!(!acks[0].duplicate && acks[1].duplicate && !acks[2].duplicate);
    assert_eq!(acks[0].offset, acks[1].offset);
    let huge = runnel_envelope::Event::builder(
        runnel_envelope::EventType::new("order.placed").unwrap(),
        runnel_envelope::Source::new("t").unwrap(),
    )
    .data_binary(vec![0u8; 2 << 20], "application/octet-stream")
    .build()
    .unwrap();
    let err = runnel
        .publish_batch(vec![event("order.placed", "k", 3), huge])
        .await
        .unwrap_err();
    assert!(
        matches!(err, runnel_runtime::RuntimeError::InBatch { index: 1, .. }),
        "{err}"
    );
    let total: u64 = runnel
        .backend()
        .describe_stream(&acks[0].stream)
        .await
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.high_watermark)
        .sum();
    assert_eq!(total, 2, "the rejected batch appended nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_events_are_handled_in_order_and_different_keys_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock_now();
    let runnel = open_runtime(dir.path(), &clock).await;
    let keys = 16u64;
    let per_key = 20u64;
    let mut batch = Vec::new();
    for n in 0..keys * per_key {
        batch.push(event("order.placed", &format!("key-{}", n % keys), n));
    }
    runnel.publish_batch(batch).await.unwrap();
    let log: Arc<Mutex<Vec<(String, u64, bool)>>> = Arc::new(Mutex::new(Vec::new()));
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let max_running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (sink, run_count, max_count) = (log.clone(), running.clone(), max_running.clone());
    let handle = runnel
        .group("ordered")
        .config(GroupConfig {
            max_in_flight: 64,
            ..GroupConfig::new("ordered", TypePattern::new("order.*").unwrap())
        })
        .run(move |message| {
            let (sink, run_count, max_count) = (sink.clone(), run_count.clone(), max_count.clone());
            async move {
                let key = message.event.partition_key().unwrap().to_string();
                let n = common::number(&message.event);
                sink.lock().unwrap().push((key.clone(), n, true));
                let now = run_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                max_count.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                let delay = (n * 7919) % 5;
                tokio::time::sleep(Duration::from_millis(delay)).await;
                run_count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                sink.lock().unwrap().push((key, n, false));
                Ok(vec![])
            }
        })
        .await
        .unwrap();
    let total = (keys * per_key) as usize;
    eventually("all handled", || log.lock().unwrap().len() >= 2 * total).await;
    handle.stop().await.unwrap();
    let log = log.lock().unwrap().clone();
    let mut open: HashMap<String, u64> = HashMap::new();
    let mut last_done: BTreeMap<String, u64> = BTreeMap::new();
    for (key, n, start) in log {
        if start {
            assert!(!open.contains_key(&key), "two events of {key} ran at once");
            if let Some(prev) = last_done.get(&key) {
                assert!(n > *prev, "{key}: {n} after {prev}");
            }
            open.insert(key, n);
        } else {
            open.remove(&key);
            last_done.insert(key, n);
        }
    }
    assert_eq!(last_done.len(), keys as usize);
    assert!(
        max_running.load(std::sync::atomic::Ordering::SeqCst) > 1,
        "different keys overlapped"
    );
}
