//! The runtime's behaviour as conformance tests over any backend: publishing, deduplication,
//! fan-out, key order, lag and leases. Expanded per backend by [`crate::runtime_conformance_tests!`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use runnel_backend::{StreamConfig, StreamName};
use runnel_clock::{Clock, ManualClock};
use runnel_envelope::{Event, EventType, Source};
use runnel_runtime::{
    Delivery, GroupConfig, HandlerError, Runnel, RuntimeConfig, RuntimeError, TypePattern,
};

use crate::BackendHarness;

/// A runtime over the backend the harness opens (a restart when called again), on the
/// harness's clock.
pub async fn runtime_with(h: &impl BackendHarness, require_schema: bool) -> Runnel {
    Runnel::open(
        RuntimeConfig {
            clock: h.clock().shared(),
            require_schema,
            ..RuntimeConfig::default()
        },
        h.open().await,
    )
}

async fn runtime(h: &impl BackendHarness) -> Runnel {
    runtime_with(h, false).await
}

/// Records in a stream, over all its partitions.
pub async fn stream_total(runnel: &Runnel, stream: &runnel_backend::StreamName) -> u64 {
    runnel
        .backend()
        .describe_stream(stream)
        .await
        .expect("describe stream")
        .partitions
        .iter()
        .map(|p| p.high_watermark)
        .sum()
}

/// An event with a partition key and `{"n": n}` as data, stamped with the clock's time.
pub fn numbered_event(clock: &ManualClock, event_type: &str, key: &str, n: u64) -> Event {
    let time = chrono::DateTime::from_timestamp_micros(clock.now_micros() as i64)
        .expect("the manual clock reads a representable time");
    Event::builder(
        EventType::new(event_type).expect("valid event type"),
        Source::new("test://conformance").expect("valid source"),
    )
    .partition_key(key)
    .time(time)
    .data_json(serde_json::json!({ "n": n }))
    .build()
    .expect("valid event")
}

/// The `n` of a [`numbered_event`].
pub fn number(event: &Event) -> u64 {
    event
        .data()
        .as_json()
        .and_then(|d| d["n"].as_u64())
        .expect("a numbered event")
}

/// Creates stream `order` with `partitions` partitions.
pub async fn order_stream(runnel: &Runnel, partitions: u32) -> StreamName {
    let stream = StreamName::new("order").expect("name");
    runnel
        .create_stream(
            &stream,
            StreamConfig {
                partitions,
                ..StreamConfig::default()
            },
        )
        .await
        .expect("create stream");
    stream
}

/// The consumer's next delivery, waiting at most 20 s; `what` says what was expected.
pub async fn next_delivery(consumer: &mut runnel_runtime::Consumer, what: &str) -> Delivery {
    tokio::time::timeout(Duration::from_secs(20), consumer.next())
        .await
        .unwrap_or_else(|_| panic!("no delivery within 20 s: {what}"))
        .unwrap_or_else(|| panic!("the consumer stopped: {what}"))
}

/// Waits (at most 20 s) for a condition that other tasks make true, checking every 10 ms.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn pattern(p: &str) -> TypePattern {
    TypePattern::new(p).expect("valid pattern")
}

pub async fn four_groups_with_different_patterns_each_see_exactly_the_matching_events(
    h: &impl BackendHarness,
) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    let types = [
        "order.placed",
        "order.cancelled",
        "payment.charged",
        "email.sent",
    ];
    let mut published: Vec<(String, String)> = Vec::new();
    for n in 0..200u64 {
        let event_type = types[(n % 4) as usize];
        let event = numbered_event(&clock, event_type, &format!("k{}", n % 7), n);
        let ack = runnel.publish(event).await.expect("publish");
        published.push((event_type.to_string(), ack.id));
    }
    let groups = [
        ("orders", "order.*"),
        ("payments", "payment.*"),
        ("everything", "*.*"),
        ("cancellations", "order.cancelled"),
    ];
    let mut seen: HashMap<&str, Arc<Mutex<Vec<String>>>> = HashMap::new();
    let mut handles = Vec::new();
    for (group, filter) in groups {
        let sink = Arc::new(Mutex::new(Vec::new()));
        seen.insert(group, sink.clone());
        let handle = runnel
            .group(group)
            .subscribe(filter)
            .run(move |message| {
                let sink = sink.clone();
                async move {
                    sink.lock()
                        .expect("sink")
                        .push(message.event.id().as_str().to_string());
                    Ok(vec![])
                }
            })
            .await
            .expect("run group");
        handles.push(handle);
    }
    let mut wanted = HashMap::new();
    for (group, filter) in groups {
        let filter = pattern(filter);
        let mut want: Vec<String> = published
            .iter()
            .filter(|(t, _)| filter.matches(t))
            .map(|(_, id)| id.clone())
            .collect();
        want.sort();
        let sink = seen[group].clone();
        eventually(group, || sink.lock().expect("sink").len() >= want.len()).await;
        wanted.insert(group, want);
    }
    for handle in handles {
        handle.stop().await.expect("stop");
    }
    // Stopped with nothing left to read: every event a group was ever going to be handed has
    // been handled, so what each saw is all it gets.
    for (group, _) in groups {
        let lag = runnel.lag(group).await.expect("lag");
        assert_eq!(lag.total_events, 0, "{group}: {lag:?}");
        let mut got = seen[group].lock().expect("sink").clone();
        got.sort();
        assert_eq!(got, wanted[group], "group {group}");
    }
}

/// Lag counts only the events a group's filter matches: a fully acknowledged group whose
/// consumer is not running does not show other types' events, published since, as lag (it
/// would commit past them only when it next runs).
pub async fn lag_counts_only_the_events_the_filter_matches(h: &impl BackendHarness) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    order_stream(&runnel, 1).await;
    for n in 0..5 {
        runnel
            .publish(numbered_event(&clock, "order.checked", "k", n))
            .await
            .expect("publish");
    }
    let mut consumer = runnel
        .group("checks")
        .subscribe("order.checked")
        .start()
        .await
        .expect("start");
    for n in 0..5 {
        next_delivery(&mut consumer, &format!("checked {n}"))
            .await
            .ack();
    }
    let handle = consumer.handle();
    eventually("all five committed", || handle.stats().acked == 5).await;
    handle.stop().await.expect("stop");
    for n in 0..20 {
        runnel
            .publish(numbered_event(&clock, "order.placed", "k", n))
            .await
            .expect("publish");
    }
    clock.advance(Duration::from_secs(60));
    let lag = runnel.lag("checks").await.expect("lag");
    assert_eq!(lag.total_events, 0, "{lag:?}");
    assert_eq!(lag.max_seconds, 0.0, "{lag:?}");
    assert!(lag.exact);
    runnel
        .publish(numbered_event(&clock, "order.checked", "k", 5))
        .await
        .expect("publish");
    let lag = runnel.lag("checks").await.expect("lag");
    assert_eq!(lag.total_events, 1, "{lag:?}");
}

pub async fn lag_counts_events_and_age_after_partial_consumption(h: &impl BackendHarness) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    // One key: one partition, strictly ordered.
    for n in 0..10u64 {
        let event = numbered_event(&clock, "order.placed", "only", n);
        runnel.publish(event).await.expect("publish");
    }
    let handle = runnel
        .group("half")
        .subscribe("order.*")
        .run(|message| async move {
            if number(&message.event) >= 6 {
                // Stuck: the event stays in flight, so the committed offset stops before it.
                std::future::pending::<()>().await;
            }
            Ok::<_, HandlerError>(vec![])
        })
        .await
        .expect("run group");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let lag = runnel.lag("half").await.expect("lag");
        if lag.total_events == 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lag stuck at {lag:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    clock.advance(Duration::from_secs(90));
    let lag = runnel.lag("half").await.expect("lag");
    assert_eq!(lag.total_events, 4);
    assert_eq!(lag.max_seconds, 90.0, "{lag:?}");
    let busy: Vec<_> = lag.partitions.iter().filter(|p| p.events > 0).collect();
    assert_eq!(busy.len(), 1);
    assert_eq!(busy[0].high_watermark - busy[0].committed, 4);
    // Not `stop`: that would wait up to ack_wait for the stuck handlers.
    drop(handle);
}

pub async fn a_duplicate_publish_returns_the_first_position_even_after_a_restart(
    h: &impl BackendHarness,
) {
    let clock = h.clock();
    let original = numbered_event(&clock, "order.placed", "k", 1);
    let runnel = runtime(h).await;
    let first = runnel.publish(original.clone()).await.expect("publish");
    assert!(!first.duplicate);
    let again = runnel.publish(original.clone()).await.expect("publish");
    assert!(again.duplicate);
    assert_eq!(
        (again.partition, again.offset),
        (first.partition, first.offset)
    );

    clock.advance(Duration::from_secs(60));
    let runnel = runtime(h).await; // a restart
    let after_restart = runnel.publish(original.clone()).await.expect("publish");
    assert!(after_restart.duplicate, "{after_restart:?}");
    assert_eq!(
        (after_restart.partition, after_restart.offset),
        (first.partition, first.offset)
    );
    let info = runnel
        .backend()
        .partition_info(&first.stream, first.partition)
        .await
        .expect("partition info");
    assert_eq!(info.high_watermark, 1, "nothing appended twice");

    // Past the window it is a new publish.
    clock.advance(Duration::from_secs(121));
    let runnel = runtime(h).await;
    let later = runnel.publish(original).await.expect("publish");
    assert!(!later.duplicate);
    assert_eq!(later.offset, 1);
}

/// Two groups that handle the same input and publish to the same stream (a model and its
/// shadow) both get their outputs stored and delivered: output ids are derived from the group
/// as well as the input. A group that runs its handler again for the same input (a re-run
/// after a crash) republishes its own output's id, which deduplication absorbs.
pub async fn two_groups_transforming_one_input_into_one_stream_both_publish(
    h: &impl BackendHarness,
) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    let input = numbered_event(&clock, "order.placed", "customer-1", 7);
    runnel.publish(input.clone()).await.expect("publish");
    let mut handles = Vec::new();
    for group in ["scorer", "shadow"] {
        let handle = runnel
            .group(group)
            .subscribe("order.placed")
            .run(|message| async move {
                let by = message.group.to_string();
                Ok(vec![
                    message.reply("fraud.scored", serde_json::json!({ "by": by }))?,
                ])
            })
            .await
            .expect("run group");
        handles.push(handle);
    }
    let mut reader = runnel
        .group("reader")
        .subscribe("fraud.scored")
        .start()
        .await
        .expect("start");
    let mut outputs = Vec::new();
    for n in 0..2 {
        let delivery = next_delivery(&mut reader, &format!("output {n} of two groups")).await;
        outputs.push(delivery.event.clone());
        delivery.ack();
    }
    let mut by: Vec<String> = outputs
        .iter()
        .map(|e| {
            e.data().as_json().expect("json")["by"]
                .as_str()
                .expect("by")
                .to_string()
        })
        .collect();
    by.sort();
    assert_eq!(
        by,
        ["scorer", "shadow"],
        "both groups' outputs are delivered"
    );
    assert_ne!(outputs[0].id(), outputs[1].id());
    for output in &outputs {
        assert_eq!(output.causation_id(), Some(input.id()));
        assert_eq!(output.partition_key(), Some("customer-1"));
    }
    let fraud = StreamName::new("fraud").expect("name");
    assert_eq!(stream_total(&runnel, &fraud).await, 2, "both stored");

    // The scorer's re-run publishes its output under the same id: absorbed, nothing appended.
    let rerun = Event::builder(
        EventType::new("fraud.scored").expect("type"),
        Source::new("runnel://groups/scorer").expect("source"),
    )
    .id(input.derived_id("scorer", 0))
    .caused_by(&input)
    .data_json(serde_json::json!({ "by": "scorer" }))
    .build()
    .expect("event");
    let ack = runnel.publish(rerun).await.expect("publish");
    assert!(
        ack.duplicate,
        "a group's re-run deduplicates against itself"
    );
    assert_eq!(stream_total(&runnel, &fraud).await, 2);
    for handle in handles {
        handle.stop().await.expect("stop");
    }
    reader.handle().stop().await.expect("stop");
}

/// CloudEvents makes `source` + `id` unique, not `id` alone: two producers that each number
/// their events from 1 are not deduplicated against each other, on publish or by a group's
/// processed-id records; the same source repeating an id still is.
pub async fn two_sources_sharing_an_id_are_two_events(h: &impl BackendHarness) {
    let runnel = runtime(h).await;
    let event = |source: &str, item: &str| {
        Event::builder(
            EventType::new("order.placed").expect("type"),
            Source::new(source).expect("source"),
        )
        .id(runnel_envelope::EventId::new("1").expect("id"))
        .partition_key("k")
        .data_json(serde_json::json!({ "item": item }))
        .build()
        .expect("event")
    };
    let billing = runnel
        .publish(event("/billing", "a"))
        .await
        .expect("publish");
    let shipping = runnel
        .publish(event("/shipping", "b"))
        .await
        .expect("publish");
    assert!(!billing.duplicate && !shipping.duplicate, "{shipping:?}");
    assert_ne!(billing.offset, shipping.offset);
    let again = runnel
        .publish(event("/billing", "a"))
        .await
        .expect("publish");
    assert!(again.duplicate, "the same source and id is a duplicate");
    assert_eq!(again.offset, billing.offset);

    let order = StreamName::new("order").expect("name");
    assert_eq!(stream_total(&runnel, &order).await, 2);
    let mut consumer = runnel
        .group("audit")
        .subscribe("order.placed")
        .start()
        .await
        .expect("start");
    let mut items = Vec::new();
    for n in 0..2 {
        let delivery = next_delivery(&mut consumer, &format!("event {n} of two sources")).await;
        items.push(delivery.event.data().as_json().expect("json")["item"].clone());
        delivery.ack();
    }
    assert_eq!(items, [serde_json::json!("a"), serde_json::json!("b")]);
    consumer.handle().stop().await.expect("stop");
}

/// A publish whose caller goes away while its append is in flight (an HTTP client that
/// disconnected, a timeout around the call) still settles: the append finishes, the id's
/// place in the dedup window is filled, and publishing the event again answers with its
/// position instead of waiting on, or failing with, the abandoned publish. Returns whether
/// the append was in flight when the publish was dropped (a backend whose appends finish
/// without waiting, like the embedded one with `fsync = "os"`, never has one in flight;
/// then only the retry is checked).
pub async fn a_publish_dropped_while_appending_settles_and_a_retry_gets_its_position(
    h: &impl BackendHarness,
) -> bool {
    let clock = h.clock();
    let runnel = runtime(h).await;
    // A first publish, so that the runtime knows the stream (its dedup window is built) and
    // the next publish goes straight to its append.
    runnel
        .publish(numbered_event(&clock, "order.placed", "k", 0))
        .await
        .expect("publish");
    let event = numbered_event(&clock, "order.placed", "k", 1);
    let mut publish = Box::pin(runnel.publish(event.clone()));
    let first_poll = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::future::Future::poll(publish.as_mut(), cx))
    })
    .await;
    let in_flight = first_poll.is_pending();
    drop(publish);
    let retried = tokio::time::timeout(Duration::from_secs(10), runnel.publish(event.clone()))
        .await
        .expect("the retry was not held up by the dropped publish")
        .expect("the retry is answered");
    assert_eq!(retried.id, event.id().as_str());
    assert!(
        retried.duplicate,
        "the dropped publish's append landed: {retried:?}"
    );
    assert_eq!(retried.offset, 1);
    assert_eq!(
        stream_total(&runnel, &retried.stream).await,
        2,
        "appended once"
    );
    in_flight
}

pub async fn a_batch_is_validated_whole_and_dedups_within_itself(h: &impl BackendHarness) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    let e = numbered_event(&clock, "order.placed", "k", 1);
    let acks = runnel
        .publish_batch(vec![
            e.clone(),
            e.clone(),
            numbered_event(&clock, "order.placed", "k", 2),
        ])
        .await
        .expect("publish");
    assert_eq!(acks.len(), 3);
    assert!(!acks[0].duplicate && acks[1].duplicate && !acks[2].duplicate);
    assert_eq!(acks[0].offset, acks[1].offset);
    let huge = Event::builder(
        EventType::new("order.placed").expect("type"),
        Source::new("t").expect("source"),
    )
    .data_binary(vec![0u8; 2 << 20], "application/octet-stream")
    .build()
    .expect("event");
    let err = runnel
        .publish_batch(vec![numbered_event(&clock, "order.placed", "k", 3), huge])
        .await
        .expect_err("an oversize event fails the batch");
    assert!(
        matches!(err, RuntimeError::InBatch { index: 1, .. }),
        "{err}"
    );
    let total = stream_total(&runnel, &acks[0].stream).await;
    assert_eq!(total, 2, "the rejected batch appended nothing");
}

/// A batch whose events name two streams: each event lands in its own stream, in batch order
/// within the stream, and the acknowledgements come back in the order the events were given.
pub async fn a_batch_over_two_streams_is_acknowledged_in_its_own_order(h: &impl BackendHarness) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    let batch = vec![
        numbered_event(&clock, "order.placed", "k", 1),
        numbered_event(&clock, "payment.taken", "k", 2),
        numbered_event(&clock, "order.shipped", "k", 3),
        numbered_event(&clock, "payment.refunded", "k", 4),
    ];
    let ids: Vec<String> = batch.iter().map(|e| e.id().as_str().to_string()).collect();
    let acks = runnel.publish_batch(batch).await.expect("publish");
    let answered: Vec<&str> = acks.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(answered, ids, "one ack per event, in the batch's order");
    let streams: Vec<&str> = acks.iter().map(|a| a.stream.as_str()).collect();
    assert_eq!(streams, ["order", "payment", "order", "payment"]);
    assert!(acks.iter().all(|a| !a.duplicate));
    // Same key, so one partition per stream: the second event of each stream follows the first.
    assert_eq!(acks[0].partition, acks[2].partition);
    assert_eq!(acks[2].offset, acks[0].offset + 1);
    assert_eq!(acks[1].partition, acks[3].partition);
    assert_eq!(acks[3].offset, acks[1].offset + 1);
    assert_eq!(stream_total(&runnel, &acks[0].stream).await, 2);
    assert_eq!(stream_total(&runnel, &acks[1].stream).await, 2);
}

/// Random keys, random handler delays, 64 handlers at once: per key the handler sees offsets
/// strictly increasing and never two at a time; different keys overlap.
pub async fn same_key_events_run_in_order_and_different_keys_overlap(h: &impl BackendHarness) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    for case in 0..4u64 {
        let seed = rand::rng().random::<u64>();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let keys = rng.random_range(2..40u64);
        let events = rng.random_range(100..400u64);
        let domain = format!("keyorder{case}");
        let batch: Vec<Event> = (0..events)
            .map(|n| {
                let key = format!("key-{}", rng.random_range(0..keys));
                numbered_event(&clock, &format!("{domain}.happened"), &key, n)
            })
            .collect();
        runnel.publish_batch(batch).await.expect("publish");
        let delays: Arc<Vec<u64>> = Arc::new((0..events).map(|_| rng.random_range(0..4)).collect());
        let log: Arc<Mutex<Vec<Step>>> = Arc::default();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (sink, now_running, max_running) = (log.clone(), running.clone(), most.clone());
        let group = format!("order{case}");
        let handle = runnel
            .group(&group)
            .config(GroupConfig {
                max_in_flight: 64,
                ..GroupConfig::new(&group, pattern(&format!("{domain}.*")))
            })
            .run(move |message| {
                let (sink, now_running, max_running, delays) = (
                    sink.clone(),
                    now_running.clone(),
                    max_running.clone(),
                    delays.clone(),
                );
                async move {
                    let key = message
                        .event
                        .partition_key()
                        .unwrap_or_default()
                        .to_string();
                    let n = number(&message.event);
                    sink.lock()
                        .expect("log")
                        .push((key.clone(), message.offset, n, true));
                    let now = now_running.fetch_add(1, Ordering::SeqCst) + 1;
                    max_running.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(delays[n as usize])).await;
                    now_running.fetch_sub(1, Ordering::SeqCst);
                    sink.lock()
                        .expect("log")
                        .push((key, message.offset, n, false));
                    Ok(vec![])
                }
            })
            .await
            .expect("run group");
        eventually("every event handled", || {
            log.lock().expect("log").len() as u64 >= 2 * events
        })
        .await;
        handle.stop().await.expect("stop");
        let log = log.lock().expect("log").clone();
        let mut open: HashMap<String, u64> = HashMap::new();
        let mut last: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (key, offset, n, start) in log {
            if start {
                assert!(
                    !open.contains_key(&key),
                    "seed {seed}: two events of {key} at once"
                );
                if let Some((prev_offset, prev_n)) = last.get(&key) {
                    assert!(
                        offset > *prev_offset,
                        "seed {seed}: {key} offset {offset} after {prev_offset}"
                    );
                    assert!(n > *prev_n, "seed {seed}: {key} event {n} after {prev_n}");
                }
                open.insert(key, n);
            } else {
                open.remove(&key);
                last.insert(key, (offset, n));
            }
        }
        assert!(
            most.load(Ordering::SeqCst) > 1,
            "seed {seed}: different keys never overlapped"
        );
    }
}

/// A consumer with one handler slot over many partitions: every partition worker waits for
/// room in the one-place channel at once, and each delivers when it is given the room. (The
/// room used to be dropped and asked for again, which handed it to the next waiting worker,
/// which did the same: it went round the workers for ever and nothing more was delivered.)
pub async fn one_handler_slot_over_many_partitions_handles_every_event(h: &impl BackendHarness) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    let stream = StreamName::new("slots").expect("name");
    runnel
        .create_stream(
            &stream,
            StreamConfig {
                partitions: 8,
                ..StreamConfig::default()
            },
        )
        .await
        .expect("create stream");
    let events = 400u64;
    for round in 0..4 {
        let batch: Vec<Event> = (round * events / 4..(round + 1) * events / 4)
            .map(|n| numbered_event(&clock, "slots.filled", &format!("key-{}", n % 32), n))
            .collect();
        runnel.publish_batch(batch).await.expect("publish");
    }
    let handled = Arc::new(AtomicUsize::new(0));
    let count = handled.clone();
    let handle = runnel
        .group("one-slot")
        .config(GroupConfig {
            max_in_flight: 1,
            ..GroupConfig::new("one-slot", pattern("slots.*"))
        })
        .run(move |_message| {
            let count = count.clone();
            async move {
                tokio::task::yield_now().await;
                count.fetch_add(1, Ordering::SeqCst);
                Ok(vec![])
            }
        })
        .await
        .expect("run group");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while (handled.load(Ordering::SeqCst) as u64) < events {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {events} events handled after 60 s",
            handled.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.stop().await.expect("stop");
}

/// One step of a handler run: (partition key, offset, event number, started or finished).
type Step = (String, u64, u64, bool);

/// A group with `ack_wait` whose leases outlast any time the tests move the clock by, so that
/// moving it past `ack_wait` lapses nothing else.
fn ack_wait_config(name: &str, ack_wait: Duration) -> GroupConfig {
    GroupConfig {
        ack_wait,
        ..lease_config(name)
    }
}

fn lease_config(name: &str) -> GroupConfig {
    GroupConfig {
        // Long enough that no background heartbeat runs during the test: it drives
        // rebalancing with `rebalance_now` and moves time with the manual clock.
        lease_ttl: Duration::from_secs(600),
        ..GroupConfig::new(name, pattern("order.*"))
    }
}

pub async fn deliveries_queued_for_a_partition_that_moved_are_not_handed_out(
    h: &impl BackendHarness,
) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    order_stream(&runnel, 4).await;
    for n in 0..16 {
        runnel
            .publish(numbered_event(&clock, "order.placed", &format!("k{n}"), n))
            .await
            .expect("publish");
    }
    let config = lease_config("movers");
    // `a` alone: its workers queue every event for it, and nobody pulls yet.
    let mut a = runnel
        .group("movers")
        .config(config.clone())
        .instance_id("a")
        .start()
        .await
        .expect("a");
    let a_handle = a.handle();
    eventually("all 16 queued for a", || a_handle.stats().delivered == 16).await;
    // `b` joins and takes half the partitions, with the events a had queued for them.
    let mut b = runnel
        .group("movers")
        .config(config)
        .instance_id("b")
        .start()
        .await
        .expect("b");
    let b_handle = b.handle();
    a_handle.rebalance_now().await.expect("rebalance a");
    b_handle.rebalance_now().await.expect("rebalance b");
    let owned_a = a_handle.owned_partitions().await;
    assert_eq!(owned_a.len(), 2, "{owned_a:?}");
    let mut from_a = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(300), a.next()).await {
        from_a.push(d);
    }
    assert!(
        from_a
            .iter()
            .all(|d| owned_a.contains(&(d.stream.clone(), d.partition))),
        "a hands out only what it still owns: {:?} of {owned_a:?}",
        from_a.iter().map(|d| d.partition).collect::<Vec<_>>()
    );
    let mut numbers: Vec<u64> = from_a.iter().map(|d| number(&d.event)).collect();
    for d in from_a {
        d.ack();
    }
    // b delivers the rest, each once.
    while numbers.len() < 16 {
        let d = next_delivery(&mut b, "b delivers the moved partitions' events").await;
        assert_eq!(d.attempt, 1);
        numbers.push(number(&d.event));
        d.ack();
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (0..16).collect::<Vec<_>>(), "every event once");
    b_handle.stop().await.expect("stop b");
    a_handle.stop().await.expect("stop a");
}

pub async fn two_instances_split_partitions_and_a_silent_one_loses_them_after_the_ttl(
    h: &impl BackendHarness,
) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    order_stream(&runnel, 6).await;
    let handler = |_m| async { Ok::<_, HandlerError>(vec![]) };
    let config = lease_config("shared");
    let a = runnel
        .group("shared")
        .config(config.clone())
        .instance_id("a")
        .run(handler)
        .await
        .expect("a");
    assert_eq!(
        a.owned_partitions().await.len(),
        6,
        "alone, a owns everything"
    );

    let b = runnel
        .group("shared")
        .config(config)
        .instance_id("b")
        .run(handler)
        .await
        .expect("b");
    // a hands over b's share at its next heartbeat, then b takes it at its own.
    a.rebalance_now().await.expect("rebalance a");
    b.rebalance_now().await.expect("rebalance b");
    let (owned_a, owned_b) = (a.owned_partitions().await, b.owned_partitions().await);
    assert_eq!(
        (owned_a.len(), owned_b.len()),
        (3, 3),
        "{owned_a:?} / {owned_b:?}"
    );
    assert!(owned_a.iter().all(|p| !owned_b.contains(p)), "disjoint");

    // a goes silent. Before the TTL passes, b cannot take a's partitions...
    a.pause_heartbeat();
    clock.advance(Duration::from_secs(599));
    b.rebalance_now().await.expect("rebalance b");
    assert_eq!(b.owned_partitions().await.len(), 3);
    // ...after it, b owns them all.
    clock.advance(Duration::from_secs(2));
    b.rebalance_now().await.expect("rebalance b");
    assert_eq!(b.owned_partitions().await.len(), 6);
    b.stop().await.expect("stop b");
    drop(a);
}

pub async fn a_stopped_instance_hands_its_partitions_over_with_its_progress(
    h: &impl BackendHarness,
) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    for n in 0..100 {
        let event = numbered_event(&clock, "order.placed", &format!("k{n}"), n);
        runnel.publish(event).await.expect("publish");
    }
    let run = |instance: &'static str, sink: Arc<Mutex<Vec<u64>>>| {
        runnel
            .group("shared")
            .config(lease_config("shared"))
            .instance_id(instance)
            .run(move |m| {
                let sink = sink.clone();
                async move {
                    sink.lock().expect("sink").push(number(&m.event));
                    Ok::<_, HandlerError>(vec![])
                }
            })
    };
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let a = run("a", seen.clone()).await.expect("a");
    eventually("a handled everything", || {
        seen.lock().expect("sink").len() == 100
    })
    .await;
    a.stop().await.expect("stop a");
    let lag = runnel.lag("shared").await.expect("lag");
    assert_eq!(
        lag.total_events, 0,
        "stopping commits what is done: {lag:?}"
    );

    let again: Arc<Mutex<Vec<u64>>> = Arc::default();
    let b = run("b", again.clone()).await.expect("b");
    assert_eq!(b.owned_partitions().await.len(), 4);
    let late = numbered_event(&clock, "order.placed", "late", 100);
    runnel.publish(late).await.expect("publish");
    eventually("b handled the new event", || {
        again.lock().expect("sink").contains(&100)
    })
    .await;
    // Had b started before where a stopped, older events of the new one's partition would
    // have been handed out before it, and stopping waits for their handlers.
    b.stop().await.expect("stop b");
    assert_eq!(
        *again.lock().expect("sink"),
        vec![100],
        "b starts where a stopped"
    );
}

pub async fn an_event_not_acknowledged_within_ack_wait_is_delivered_again(h: &impl BackendHarness) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    runnel
        .publish(numbered_event(&clock, "order.placed", "k", 0))
        .await
        .expect("publish");
    let ack_wait = Duration::from_secs(30);
    let mut consumer = runnel
        .group("slow")
        .config(ack_wait_config("slow", ack_wait))
        .start()
        .await
        .expect("start");
    // Take the first delivery and never settle it, as a consumer that hung would.
    let first = consumer.next().await.expect("first delivery");
    clock.advance(ack_wait);
    let second = next_delivery(&mut consumer, "redelivered once ack_wait passed").await;
    assert_eq!((first.offset, first.attempt), (second.offset, 1));
    assert_eq!(second.attempt, 2);
    second.ack();
    drop(first);
    let handle = consumer.handle();
    eventually("acked", || handle.stats().acked == 1).await;
    assert_eq!(handle.stats().ack_timeouts, 1);
    handle.stop().await.expect("stop");
    assert_eq!(runnel.lag("slow").await.expect("lag").total_events, 0);
}

pub async fn ack_wait_runs_from_the_pull_not_while_a_delivery_waits_to_be_pulled(
    h: &impl BackendHarness,
) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    let ack_wait = Duration::from_secs(30);
    // A witness: an event that fails and is retried within a second. Its redelivery shows
    // that the worker has checked its deadlines since the clock moved (both on one tick).
    runnel
        .publish(numbered_event(&clock, "order.placed", "witness", 99))
        .await
        .expect("publish");
    let mut consumer = runnel
        .group("puller")
        .config(ack_wait_config("puller", ack_wait))
        .start()
        .await
        .expect("start");
    let witness = next_delivery(&mut consumer, "the witness").await;
    witness.nack(HandlerError::service("retry it within a second"));
    for n in 0..3 {
        runnel
            .publish(numbered_event(&clock, "order.placed", &format!("k{n}"), n))
            .await
            .expect("publish");
    }
    let handle = consumer.handle();
    eventually("all three delivered to the consumer's channel", || {
        handle.stats().delivered == 1 + 3
    })
    .await;
    // A slow puller: the deliveries wait well past ack_wait before anyone takes them.
    clock.advance(ack_wait * 5);
    eventually("the witness delivered again", || {
        handle.stats().delivered == 1 + 3 + 1
    })
    .await;
    let mut offsets = Vec::new();
    for _ in 0..3 {
        let delivery = next_delivery(&mut consumer, "a delivery").await;
        assert_eq!(
            delivery.attempt, 1,
            "not redelivered while it waited unseen"
        );
        assert_eq!(
            delivery.ack_expires_at,
            clock.now_micros() + ack_wait.as_micros() as u64,
            "ack_wait runs from the pull"
        );
        offsets.push((delivery.partition, delivery.offset));
        assert!(delivery.ack_recorded().await, "acked within ack_wait");
    }
    offsets.sort();
    offsets.dedup();
    assert_eq!(offsets.len(), 3, "three different events");
    let retried = next_delivery(&mut consumer, "the witness again").await;
    assert_eq!((number(&retried.event), retried.attempt), (99, 2));
    retried.ack();
    eventually("acked", || handle.stats().acked == 4).await;
    let stats = handle.stats();
    assert_eq!((stats.ack_timeouts, stats.dead_lettered), (0, 0));
    handle.stop().await.expect("stop");
    assert_eq!(runnel.lag("puller").await.expect("lag").total_events, 0);
}

pub async fn a_group_starting_at_latest_gets_what_was_published_after_it_was_created(
    h: &impl BackendHarness,
) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    runnel
        .publish(numbered_event(&clock, "order.placed", "k", 0))
        .await
        .expect("publish before");
    clock.advance(Duration::from_secs(1));
    let config = GroupConfig {
        start: runnel_runtime::StartFrom::Latest,
        ..GroupConfig::new("newcomer", pattern("order.*"))
    };
    runnel.put_group(config.clone()).await.expect("create");
    clock.advance(Duration::from_secs(1));
    // Published after the group was created, before any consumer of it ran.
    for n in 1..=2 {
        runnel
            .publish(numbered_event(&clock, "order.placed", "k", n))
            .await
            .expect("publish after");
    }
    assert_eq!(
        runnel.lag("newcomer").await.expect("lag").total_events,
        2,
        "the two events after its creation are owed"
    );
    // Saying it again (an update) keeps the creation time.
    runnel.put_group(config).await.expect("update");
    let mut consumer = runnel.group("newcomer").start().await.expect("start");
    let mut got = Vec::new();
    for _ in 0..2 {
        let delivery = next_delivery(&mut consumer, "a delivery").await;
        got.push(number(&delivery.event));
        delivery.ack();
    }
    assert_eq!(got, [1, 2], "not the event published before the group");
    let handle = consumer.handle();
    eventually("caught up", || handle.stats().acked == 2).await;
    handle.stop().await.expect("stop");
    assert_eq!(runnel.lag("newcomer").await.expect("lag").total_events, 0);
}

pub async fn a_clean_stop_counts_no_crash_against_unsettled_deliveries(h: &impl BackendHarness) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    runnel
        .publish(numbered_event(&clock, "order.placed", "k", 0))
        .await
        .expect("publish");
    let mut consumer = runnel
        .group("clean")
        .subscribe("order.*")
        .start()
        .await
        .expect("start");
    let held = consumer.next().await.expect("delivery");
    // Stopped cleanly while the delivery is still unsettled.
    consumer.handle().stop().await.expect("stop");
    drop(consumer);

    let mut again = runnel.group("clean").start().await.expect("restart");
    let redelivered = next_delivery(&mut again, "delivered again").await;
    assert_eq!(redelivered.offset, held.offset);
    let retries = runnel.scheduled_retries("clean").await.expect("retries");
    assert!(
        retries.iter().all(|r| r.crashes == 0),
        "a clean stop is not a crash: {retries:?}"
    );
    redelivered.ack();
    drop(held);
    let handle = again.handle();
    eventually("acked", || handle.stats().acked == 1).await;
    handle.stop().await.expect("stop");
    assert_eq!(runnel.lag("clean").await.expect("lag").total_events, 0);
}

/// The correlation index answers every event of one workflow across streams, in causal order,
/// and nothing of another workflow.
pub async fn the_trace_index_answers_a_workflow_across_streams_in_causal_order(
    h: &impl BackendHarness,
) {
    use runnel_runtime::trace::{TraceIndexOptions, TraceIndexer, trace};
    let clock = h.clock();
    let runnel = runtime(h).await;
    let root = numbered_event(&clock, "order.placed", "customer-1", 1);
    let other = numbered_event(&clock, "order.placed", "customer-2", 2);
    runnel.publish(root.clone()).await.expect("publish");
    runnel.publish(other.clone()).await.expect("publish");
    let scorer =
        runnel
            .group("scorer")
            .subscribe("order.placed")
            .run(|message| async move {
                Ok(vec![message.reply("fraud.scored", serde_json::json!({}))?])
            })
            .await
            .expect("run scorer");
    let charger = runnel
        .group("charger")
        .subscribe("fraud.scored")
        .run(|message| async move {
            Ok(vec![
                message.reply("payment.requested", serde_json::json!({}))?,
            ])
        })
        .await
        .expect("run charger");
    let indexer = TraceIndexer::start(&runnel, TraceIndexOptions::default())
        .await
        .expect("start the indexer");
    let root_id = root.id().as_str().to_string();
    let mut steps = Vec::new();
    for _ in 0..400 {
        steps = trace(&runnel, &root_id).await.expect("trace").0;
        if steps.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen: Vec<(usize, String, String)> = steps
        .iter()
        .map(|s| (s.depth, s.entry.event_type.clone(), s.entry.stream.clone()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (0, "order.placed".to_string(), "order".to_string()),
            (1, "fraud.scored".to_string(), "fraud".to_string()),
            (2, "payment.requested".to_string(), "payment".to_string()),
        ],
        "the workflow of {root_id}, causes before effects"
    );
    assert_eq!(steps[0].entry.id, root_id);
    assert_eq!(
        steps[1].entry.causationid.as_deref(),
        Some(root_id.as_str())
    );
    assert!(
        steps.iter().all(|s| s.entry.id != other.id().as_str()),
        "another workflow's event is not in this trace"
    );
    let (unknown, _) = trace(&runnel, "no-such-correlation").await.expect("trace");
    assert!(unknown.is_empty());
    for handle in [scorer, charger, indexer] {
        handle.stop().await.expect("stop");
    }
}

/// A relay (the HTTP server's consumer) hands deliveries to clients elsewhere: what a client
/// took comes back as its next attempt after the relay stops, what stayed in the relay keeps
/// its attempt, and nothing is counted as a crash.
pub async fn a_relay_keeps_the_attempts_it_handed_out_and_no_others(h: &impl BackendHarness) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    for n in 0..3 {
        runnel
            .publish(numbered_event(&clock, "order.placed", &format!("k{n}"), n))
            .await
            .expect("publish");
    }
    let mut consumer = runnel
        .group("relay")
        .subscribe("order.*")
        .relay()
        .start()
        .await
        .expect("start");
    let mut held = next_delivery(&mut consumer, "a delivery").await;
    assert_eq!(held.attempt, 1);
    assert!(
        held.hand_out_recorded().await,
        "the hand-out is recorded before it is answered"
    );
    let held_number = number(&held.event);
    // The others wait in the consumer's channel, never taken.
    consumer.handle().stop().await.expect("stop");
    drop(consumer);

    let mut again = runnel
        .group("relay")
        .relay()
        .start()
        .await
        .expect("restart");
    let mut attempts = std::collections::BTreeMap::new();
    for _ in 0..3 {
        let delivery = next_delivery(&mut again, "delivered again").await;
        attempts.insert(number(&delivery.event), delivery.attempt);
        delivery.ack();
    }
    let expected: std::collections::BTreeMap<u64, u32> = (0..3)
        .map(|n| (n, if n == held_number { 2 } else { 1 }))
        .collect();
    assert_eq!(
        attempts, expected,
        "only the delivery a client took counts as an attempt"
    );
    let retries = runnel.scheduled_retries("relay").await.expect("retries");
    assert!(
        retries.iter().all(|r| r.crashes == 0),
        "a relay counts no crash: {retries:?}"
    );
    drop(held);
    let handle = again.handle();
    eventually("acked", || handle.stats().acked == 3).await;
    handle.stop().await.expect("stop");
    assert_eq!(runnel.lag("relay").await.expect("lag").total_events, 0);
}
