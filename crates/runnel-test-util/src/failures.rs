//! Failure handling as conformance tests over any backend: classified retries with backoff
//! (on the manual clock), key holding, restarts mid-backoff, panics, undecodable records,
//! dead-letter queues (list, replay to one group only, purge, depth alert) and a failure storm.
//! Expanded per backend by [`crate::failure_conformance_tests!`].

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use runnel_backend::{Header, ReadFrom, Record};
use runnel_clock::Clock;
use runnel_envelope::Event;
use runnel_runtime::{
    ConsumerHandle, DlqFilter, DlqSelector, FailureClass, GroupConfig, HandlerError, Message,
    Ordering, Runnel, ScheduledRetry, TypePattern,
};

use crate::BackendHarness;
use crate::runtime::{eventually, number, numbered_event, order_stream, runtime_with};

async fn runtime(h: &impl BackendHarness) -> Runnel {
    runtime_with(h, false).await
}

/// What a handler saw: (event number, attempt, replayed from the DLQ).
type Seen = Arc<Mutex<Vec<(u64, u32, bool)>>>;

/// Runs `group` with `behaviour` deciding each delivery's outcome; records every delivery.
async fn run_group(
    runnel: &Runnel,
    config: GroupConfig,
    behaviour: impl Fn(&Message) -> Result<(), HandlerError> + Send + Sync + 'static,
) -> (ConsumerHandle, Seen) {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let behaviour = Arc::new(behaviour);
    let name = config.name.clone();
    let handle = runnel
        .group(&name)
        .config(config)
        .run(move |message| {
            let (sink, behaviour) = (sink.clone(), behaviour.clone());
            async move {
                sink.lock().expect("seen").push((
                    number(&message.event),
                    message.attempt,
                    message.from_dlq,
                ));
                behaviour(&message).map(|()| Vec::new())
            }
        })
        .await
        .expect("run group");
    (handle, seen)
}

fn config(name: &str) -> GroupConfig {
    GroupConfig::new(name, TypePattern::new("order.*").expect("pattern"))
}

fn deliveries_of(seen: &Seen, n: u64) -> Vec<u32> {
    seen.lock()
        .expect("seen")
        .iter()
        .filter(|(m, _, _)| *m == n)
        .map(|(_, a, _)| *a)
        .collect()
}

async fn retry_with_attempts(runnel: &Runnel, group: &str, attempts: u32) -> ScheduledRetry {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let retries = runnel.scheduled_retries(group).await.expect("retries");
        if let Some(r) = retries.into_iter().find(|r| r.attempts == attempts) {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no retry with {attempts} attempts scheduled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (at most 20 s) until no retry of `group` is scheduled.
async fn no_retries_left(runnel: &Runnel, group: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let retries = runnel.scheduled_retries(group).await.expect("retries");
        if retries.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{group}: retries still scheduled: {retries:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `group`'s dead-letter queue holds `depth` entries. The limit only guards
/// against a hang: the failure storm takes a minute or more on a busy machine.
async fn dlq_depth_reaches(runnel: &Runnel, group: &str, depth: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let now = runnel.dlq_depth(group).await.expect("depth").depth;
        if now >= depth {
            assert_eq!(now, depth, "more entries than expected");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{group}: DLQ depth stuck at {now}, expected {depth}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Lets a few worker timer ticks pass (it checks due retries every 20 ms).
async fn a_few_ticks() {
    tokio::time::sleep(Duration::from_millis(120)).await;
}

pub async fn service_failures_back_off_1_2_4_8_seconds_with_jitter_and_the_fifth_dead_letters(
    h: &impl BackendHarness,
) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    runnel
        .publish(numbered_event(&clock, "order.placed", "k", 0))
        .await
        .expect("publish");
    let (handle, seen) = run_group(&runnel, config("svc"), |_| {
        Err(HandlerError::service("payment provider unavailable"))
    })
    .await;
    for (attempt, ceiling_s) in [(1u32, 1u64), (2, 2), (3, 4), (4, 8)] {
        let retry = retry_with_attempts(&runnel, "svc", attempt).await;
        let delay = retry.due_at - retry.last_failure_at;
        assert!(
            delay <= ceiling_s * 1_000_000,
            "retry {attempt}: {delay} µs is past the {ceiling_s} s ceiling"
        );
        assert_eq!(retry.class, Some(FailureClass::Service));
        a_few_ticks().await;
        assert_eq!(
            deliveries_of(&seen, 0).len() as u32,
            attempt,
            "not delivered again before it is due"
        );
        clock.set(retry.due_at);
    }
    dlq_depth_reaches(&runnel, "svc", 1).await;
    let page = runnel
        .dlq_list("svc", &DlqFilter::default(), None, 10)
        .await
        .expect("list");
    let entry = &page.entries[0];
    assert_eq!(entry.attempts, 5);
    assert_eq!(entry.class, FailureClass::Service);
    assert!(
        entry.reason.contains("payment provider unavailable"),
        "{}",
        entry.reason
    );
    assert_eq!(deliveries_of(&seen, 0), vec![1, 2, 3, 4, 5]);
    // Its retry record goes right after its entry is in.
    no_retries_left(&runnel, "svc").await;
    handle.stop().await.expect("stop");
    let lag = runnel.lag("svc").await.expect("lag");
    assert_eq!(lag.total_events, 0, "the partition moved on: {lag:?}");
}

pub async fn an_event_of_800_kib_is_dead_lettered_whole(h: &impl BackendHarness) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    // Within every backend's record limit (JetStream's default max_payload is 1 MiB); its
    // DLQ entry must fit in the key-value store as well, not grow by base64's third.
    let big = runnel_envelope::Event::builder(
        runnel_envelope::EventType::new("order.placed").expect("type"),
        runnel_envelope::Source::new("/t").expect("source"),
    )
    .partition_key("k")
    .time(chrono::DateTime::from_timestamp_micros(clock.now_micros() as i64).expect("time"))
    .data_json(serde_json::json!({ "n": 0, "blob": "x".repeat(800 * 1024) }))
    .build()
    .expect("event");
    runnel.publish(big.clone()).await.expect("publish");
    let (handle, _seen) = run_group(&runnel, config("big"), |_| {
        Err(HandlerError::permanent("too big to process"))
    })
    .await;
    dlq_depth_reaches(&runnel, "big", 1).await;
    let page = runnel
        .dlq_list("big", &DlqFilter::default(), None, 10)
        .await
        .expect("list");
    let entry = &page.entries[0];
    assert_eq!(entry.event_id, big.id().as_str());
    assert_eq!(
        runnel_envelope::Event::decode_binary(&entry.original).expect("decodes"),
        big,
        "the original, whole"
    );
    handle.stop().await.expect("stop");
}

pub async fn permanent_dead_letters_at_once_and_transient_then_success_acks(
    h: &impl BackendHarness,
) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    for n in 0..2 {
        let event = numbered_event(&clock, "order.placed", &format!("k{n}"), n);
        runnel.publish(event).await.expect("publish");
    }
    let (handle, seen) = run_group(&runnel, config("classes"), |m| {
        match (number(&m.event), m.attempt) {
            (0, _) => Err(HandlerError::permanent("malformed order")),
            (1, 1) => Err(HandlerError::transient("connection reset")),
            _ => Ok(()),
        }
    })
    .await;
    dlq_depth_reaches(&runnel, "classes", 1).await;
    eventually("the transient one succeeded", || {
        deliveries_of(&seen, 1).len() == 2
    })
    .await;
    a_few_ticks().await;
    assert_eq!(deliveries_of(&seen, 0), vec![1], "permanent: no retry");
    assert_eq!(
        deliveries_of(&seen, 1),
        vec![1, 2],
        "transient: retried at once"
    );
    let entry = &runnel
        .dlq_list("classes", &DlqFilter::default(), None, 10)
        .await
        .expect("list")
        .entries[0];
    assert_eq!((entry.class, entry.attempts), (FailureClass::Permanent, 1));
    handle.stop().await.expect("stop");
    assert_eq!(runnel.lag("classes").await.expect("lag").total_events, 0);
}

async fn key_holding(h: &impl BackendHarness, ordering: Ordering) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    // Events 0 and 1 of key A, 2 and 3 of key B.
    for (n, key) in [(0, "A"), (1, "A"), (2, "B"), (3, "B")] {
        runnel
            .publish(numbered_event(&clock, "order.placed", key, n))
            .await
            .expect("publish");
    }
    let (handle, seen) = run_group(
        &runnel,
        GroupConfig {
            ordering,
            ..config("holding")
        },
        |m| match (number(&m.event), m.attempt) {
            (0, 1) => Err(HandlerError::service("inventory service busy")),
            _ => Ok(()),
        },
    )
    .await;
    eventually("key B flowed", || {
        deliveries_of(&seen, 2).len() == 1 && deliveries_of(&seen, 3).len() == 1
    })
    .await;
    let retry = retry_with_attempts(&runnel, "holding", 1).await;
    a_few_ticks().await;
    let a_later = deliveries_of(&seen, 1).len();
    let lag = runnel.lag("holding").await.expect("lag");
    let held = lag
        .partitions
        .iter()
        .find(|p| p.partition == retry.partition)
        .expect("the waiting event's partition");
    assert!(
        held.committed <= retry.offset,
        "the committed offset passed a waiting event: {held:?} vs {retry:?}"
    );
    match ordering {
        Ordering::Key => assert_eq!(a_later, 0, "A's later event waits behind the retry"),
        Ordering::None => assert_eq!(a_later, 1, "without ordering it passes"),
    }
    clock.set(retry.due_at);
    eventually("A's events done", || {
        deliveries_of(&seen, 0).len() == 2 && deliveries_of(&seen, 1).len() == 1
    })
    .await;
    if ordering == Ordering::Key {
        let log = seen.lock().expect("seen").clone();
        let retried = log.iter().position(|s| *s == (0, 2, false));
        let later = log.iter().position(|s| s.0 == 1);
        assert!(
            retried < later,
            "A's second event ran after the retry: {log:?}"
        );
    }
    handle.stop().await.expect("stop");
    assert_eq!(runnel.lag("holding").await.expect("lag").total_events, 0);
}

pub async fn a_key_waiting_for_a_retry_holds_its_later_events_and_other_keys_flow(
    h: &impl BackendHarness,
) {
    key_holding(h, Ordering::Key).await;
}

pub async fn without_ordering_later_events_of_a_waiting_key_pass(h: &impl BackendHarness) {
    key_holding(h, Ordering::None).await;
}

pub async fn a_restart_in_the_middle_of_a_backoff_keeps_the_schedule_and_the_count(
    h: &impl BackendHarness,
) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    runnel
        .publish(numbered_event(&clock, "order.placed", "k", 0))
        .await
        .expect("publish");
    let behaviour = |m: &Message| {
        if m.attempt <= 2 {
            Err(HandlerError::service("still down"))
        } else {
            Ok(())
        }
    };
    let (handle, _) = run_group(&runnel, config("restart"), behaviour).await;
    let first = retry_with_attempts(&runnel, "restart", 1).await;
    clock.set(first.due_at);
    let second = retry_with_attempts(&runnel, "restart", 2).await;
    handle.stop().await.expect("stop");

    let runnel = runtime(h).await; // a restart of the backend and the runtime
    let kept = runnel.scheduled_retries("restart").await.expect("retries");
    assert_eq!(kept.len(), 1);
    assert_eq!((kept[0].attempts, kept[0].due_at), (2, second.due_at));
    let (handle, seen) = run_group(&runnel, config("restart"), behaviour).await;
    a_few_ticks().await;
    assert!(deliveries_of(&seen, 0).is_empty(), "not before it is due");
    clock.set(second.due_at);
    eventually("the third attempt", || deliveries_of(&seen, 0) == vec![3]).await;
    handle.stop().await.expect("stop");
    assert!(
        runnel
            .scheduled_retries("restart")
            .await
            .expect("retries")
            .is_empty()
    );
    assert_eq!(runnel.lag("restart").await.expect("lag").total_events, 0);
}

pub async fn a_panicking_handler_is_a_service_failure_and_the_consumer_keeps_going(
    h: &impl BackendHarness,
) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    for n in 0..10 {
        let event = numbered_event(&clock, "order.placed", &format!("k{n}"), n);
        runnel.publish(event).await.expect("publish");
    }
    let (handle, seen) = run_group(&runnel, config("panics"), |m| {
        if number(&m.event) == 0 && m.attempt == 1 {
            panic!("bug in the handler");
        }
        Ok(())
    })
    .await;
    eventually("the others", || {
        (1..10).all(|n| deliveries_of(&seen, n).len() == 1)
    })
    .await;
    let retry = retry_with_attempts(&runnel, "panics", 1).await;
    assert_eq!(retry.class, Some(FailureClass::Service));
    assert!(
        retry.reason.contains("bug in the handler"),
        "{}",
        retry.reason
    );
    clock.set(retry.due_at);
    eventually("the panicked one, retried", || {
        deliveries_of(&seen, 0) == vec![1, 2]
    })
    .await;
    assert!(handle.stats().failed_service >= 1);
    handle.stop().await.expect("stop");
}

pub async fn undecodable_records_are_quarantined_with_their_original_bytes(
    h: &impl BackendHarness,
) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    let stream = order_stream(&runnel, 1).await;
    let garbage = Bytes::from_static(b"\xffthis is not an envelope");
    runnel
        .backend()
        .append(
            &stream,
            0,
            vec![Record {
                key: Bytes::from_static(b"k"),
                value: garbage.clone(),
                headers: vec![
                    Header::new("id", "bad-1"),
                    Header::new("type", "order.placed"),
                ],
            }],
        )
        .await
        .expect("append");
    runnel
        .publish(numbered_event(&clock, "order.placed", "k", 1))
        .await
        .expect("publish");
    let (handle, seen) = run_group(&runnel, config("decoder"), |_| Ok(())).await;
    dlq_depth_reaches(&runnel, "decoder", 1).await;
    eventually("the good event after it", || {
        deliveries_of(&seen, 1).len() == 1
    })
    .await;
    let entry = &runnel
        .dlq_list("decoder", &DlqFilter::default(), None, 10)
        .await
        .expect("list")
        .entries[0];
    assert!(entry.reason.starts_with("undecodable"), "{}", entry.reason);
    assert_eq!(entry.class, FailureClass::Permanent);
    assert_eq!(entry.original, garbage);
    assert_eq!((entry.event_id.as_str(), entry.offset), ("bad-1", 0));
    handle.stop().await.expect("stop");
}

pub async fn dlq_replay_reaches_this_group_only_and_the_entry_leaves_on_success(
    h: &impl BackendHarness,
) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    let ack = runnel
        .publish(numbered_event(&clock, "order.placed", "k", 7))
        .await
        .expect("publish");
    let (a, seen_a) = run_group(&runnel, config("emails"), |m| {
        if m.from_dlq {
            Ok(())
        } else {
            Err(HandlerError::permanent("template missing"))
        }
    })
    .await;
    let (b, seen_b) = run_group(&runnel, config("analytics"), |_| Ok(())).await;
    dlq_depth_reaches(&runnel, "emails", 1).await;
    eventually("analytics saw it", || deliveries_of(&seen_b, 7).len() == 1).await;

    let entry = runnel
        .dlq_list("emails", &DlqFilter::default(), None, 10)
        .await
        .expect("list")
        .entries
        .remove(0);
    // The entry holds the event exactly as the log stored it.
    let stored = runnel
        .backend()
        .read(
            &ack.stream,
            ack.partition,
            ReadFrom::Offset(ack.offset),
            1,
            usize::MAX,
        )
        .await
        .expect("read");
    assert_eq!(entry.original, stored[0].value);
    assert_eq!(
        Event::decode_binary(&entry.original)
            .expect("decode")
            .id()
            .as_str(),
        ack.id
    );
    assert_eq!(
        runnel.dlq_get("emails", &entry.id).await.expect("show"),
        entry
    );

    let report = runnel
        .dlq_replay(
            "emails",
            &DlqSelector::Ids(vec![entry.id.clone(), "nope".into()]),
        )
        .await
        .expect("replay");
    assert_eq!(report.replayed, 1);
    assert_eq!(report.missing, vec!["nope".to_string()]);
    eventually("emails got the replay", || {
        seen_a
            .lock()
            .expect("seen")
            .iter()
            .any(|(n, _, dlq)| *n == 7 && *dlq)
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while runnel.dlq_depth("emails").await.expect("depth").depth != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the entry stayed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a_few_ticks().await;
    assert_eq!(
        deliveries_of(&seen_b, 7).len(),
        1,
        "never re-fanned-out to other groups"
    );
    let replayed: Vec<_> = seen_a
        .lock()
        .expect("seen")
        .iter()
        .filter(|s| s.2)
        .cloned()
        .collect();
    assert_eq!(
        replayed,
        vec![(7, 1, true)],
        "a fresh attempt count, marked"
    );
    a.stop().await.expect("stop");
    b.stop().await.expect("stop");
}

pub async fn dlq_list_filters_paginates_and_purge_removes_only_what_matches(
    h: &impl BackendHarness,
) {
    let clock = h.clock();
    let runnel = runtime(h).await;
    for (n, event_type) in [
        (0, "order.placed"),
        (1, "order.placed"),
        (2, "order.placed"),
        (3, "order.cancelled"),
        (4, "order.cancelled"),
    ] {
        let event = numbered_event(&clock, event_type, &format!("k{n}"), n);
        runnel.publish(event).await.expect("publish");
    }
    let (handle, _) = run_group(
        &runnel,
        GroupConfig {
            dlq_alert_threshold: Some(5),
            ..config("purges")
        },
        |m| {
            Err(HandlerError::permanent(format!(
                "bad order {}",
                number(&m.event)
            )))
        },
    )
    .await;
    dlq_depth_reaches(&runnel, "purges", 5).await;
    let depth = runnel.dlq_depth("purges").await.expect("depth");
    assert!(depth.alert, "{depth:?}");
    eventually("the alert flag", || handle.stats().dlq_alert).await;

    let cancelled = DlqFilter {
        event_type: Some(TypePattern::new("order.cancelled").expect("pattern")),
        ..DlqFilter::default()
    };
    let listed = runnel
        .dlq_list("purges", &cancelled, None, 10)
        .await
        .expect("list");
    assert_eq!(listed.entries.len(), 2);
    let by_reason = DlqFilter {
        reason: Some("BAD ORDER 1".into()),
        ..DlqFilter::default()
    };
    let one = runnel
        .dlq_list("purges", &by_reason, None, 10)
        .await
        .expect("list");
    assert_eq!(one.entries.len(), 1);
    let first_page = runnel
        .dlq_list("purges", &DlqFilter::default(), None, 2)
        .await
        .expect("list");
    assert_eq!(first_page.entries.len(), 2);
    let second_page = runnel
        .dlq_list(
            "purges",
            &DlqFilter::default(),
            first_page.next.as_deref(),
            10,
        )
        .await
        .expect("list");
    assert_eq!(second_page.entries.len(), 3);
    let all_ids: BTreeSet<_> = first_page
        .entries
        .iter()
        .chain(&second_page.entries)
        .map(|e| e.id.clone())
        .collect();
    assert_eq!(all_ids.len(), 5, "pages do not overlap");

    assert_eq!(
        runnel
            .dlq_purge("purges", &DlqSelector::Filter(cancelled.clone()))
            .await
            .expect("purge"),
        2
    );
    let left = runnel
        .dlq_list("purges", &DlqFilter::default(), None, 10)
        .await
        .expect("list");
    assert_eq!(left.entries.len(), 3);
    assert!(left.entries.iter().all(|e| e.event_type == "order.placed"));
    let one_id = left.entries[0].id.clone();
    assert_eq!(
        runnel
            .dlq_purge("purges", &DlqSelector::Ids(vec![one_id]))
            .await
            .expect("purge"),
        1
    );
    assert_eq!(
        runnel
            .dlq_purge("purges", &DlqSelector::All)
            .await
            .expect("purge"),
        2
    );
    assert_eq!(runnel.dlq_depth("purges").await.expect("depth").depth, 0);
    handle.stop().await.expect("stop");
}

/// 10,000 events, 20 % failing with mixed classes, 4 groups: every event ends acked or in
/// its group's DLQ — counted, none missing, none in both.
pub async fn a_failure_storm_ends_with_every_event_acked_or_dead_lettered(h: &impl BackendHarness) {
    const EVENTS: u64 = 10_000;
    let clock = h.clock();
    let runnel = runtime(h).await;
    let mut batch = Vec::new();
    for n in 0..EVENTS {
        batch.push(numbered_event(
            &clock,
            "order.placed",
            &format!("c{}", n % 500),
            n,
        ));
        if batch.len() == 1_000 {
            runnel
                .publish_batch(std::mem::take(&mut batch))
                .await
                .expect("publish");
        }
    }
    // Time moves on its own here, so service backoffs elapse.
    let ticking = clock.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            ticking.advance(Duration::from_secs(2));
        }
    });
    let behaviour = |m: &Message| {
        let n = number(&m.event);
        if !n.is_multiple_of(5) {
            return Ok(());
        }
        match (n % 3, m.attempt) {
            (0, _) => Err(HandlerError::permanent("rejected")),
            (1, 1) => Err(HandlerError::transient("blip")),
            (1, _) => Ok(()),
            _ => Err(HandlerError::service("never recovers")),
        }
    };
    let groups = ["storm-a", "storm-b", "storm-c", "storm-d"];
    let mut running = Vec::new();
    for group in groups {
        let config = GroupConfig {
            processed_ids: false,
            max_in_flight: 128,
            // Far beyond the run, however fast the ticker moves time: this test is about
            // failures the handler reports, not deliveries it is too slow to settle.
            ack_wait: Duration::from_secs(24 * 3600),
            ..config(group)
        };
        running.push(run_group(&runnel, config, behaviour).await);
    }
    // Per group: permanents (667) and never-recovering services (667) end in the DLQ.
    let failing = (0..EVENTS)
        .filter(|n| n.is_multiple_of(5) && n % 3 != 1)
        .count() as u64;
    for group in groups {
        dlq_depth_reaches(&runnel, group, failing).await;
    }
    for (group, (handle, seen)) in groups.iter().zip(running) {
        // The last dead-letter of a key lets its held events go: they may still be running.
        eventually(&format!("{group}: the rest succeeded"), || {
            succeeded(&seen).len() as u64 == EVENTS - failing
        })
        .await;
        let acked = succeeded(&seen);
        let mut dead = BTreeSet::new();
        let mut after: Option<String> = None;
        loop {
            let page = runnel
                .dlq_list(group, &DlqFilter::default(), after.as_deref(), 500)
                .await
                .expect("list");
            for entry in &page.entries {
                let event = Event::decode_binary(&entry.original).expect("decode");
                assert!(dead.insert(number(&event)), "{group}: dead-lettered twice");
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let both: Vec<_> = acked.intersection(&dead).collect();
        assert!(
            both.is_empty(),
            "{group}: acked and dead-lettered: {both:?}"
        );
        assert_eq!(
            acked.len() + dead.len(),
            EVENTS as usize,
            "{group}: events missing"
        );
        handle.stop().await.expect("stop");
        let lag = runnel.lag(group).await.expect("lag");
        assert_eq!(lag.total_events, 0, "{group}: {lag:?}");
    }
    ticker.abort();
}

/// The events whose handler succeeded at least once.
fn succeeded(seen: &Seen) -> BTreeSet<u64> {
    seen.lock()
        .expect("seen")
        .iter()
        .filter(|(n, attempt, _)| behaviour_succeeds(*n, *attempt))
        .map(|(n, _, _)| *n)
        .collect()
}

fn behaviour_succeeds(n: u64, attempt: u32) -> bool {
    !n.is_multiple_of(5) || (n % 3 == 1 && attempt > 1)
}
