//! Feature pipelines (`runnel-stages`) as conformance tests over any backend: a
//! [`FeaturePipeline`] over real consumer groups gives what the pure operator gives on the
//! same input, survives a crash and a hand-over without changing a result, and sends what it
//! cannot window to the late stream or the dead-letter queue. Expanded per backend by
//! [`crate::features_conformance_tests!`].
//!
//! The reference is the pure [`FeatureStage`] fed every input in publish order and finished:
//! the ids (a function of feature, key, window and revision), values and correlation ids of
//! the pipeline's results must equal its. Windows are closed by one "clock" event per
//! partition, far ahead in event time, whose own windows never close.
//!
//! Time is the harness's manual clock; the tests wait for results by polling, never for a
//! deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use runnel_backend::{ReadFrom, StreamConfig, StreamName};
use runnel_envelope::{Event, EventType, Source};
use runnel_runtime::{DlqFilter, Runnel, partition_for_key};
use runnel_stages::{
    FeaturePipeline, FeaturePipelineHandle, FeatureSpec, FeatureStage, FeatureStore, FeatureValue,
    LATE_REASON_EXTENSION, PipelineOptions, WindowResult, group_name,
};

use crate::BackendHarness;
use crate::runtime::runtime_with;

const PARTITIONS: u32 = 4;
/// Event times are seconds after this instant (2026-01-01T00:00:00Z).
const T0: i64 = 1_767_225_600;
const FEATURE: &str = "spend";

/// Spend per card per minute: a count and a sum of `/amount`, keyed by the partition key.
fn spec(allowed_lateness: &str) -> FeatureSpec {
    let spec: FeatureSpec = serde_json::from_value(serde_json::json!({
        "name": FEATURE,
        "input": "payment.charged",
        "window": { "kind": "tumbling", "size": "1m" },
        "allowed_lateness": allowed_lateness,
        "output": "feature.computed",
        "aggregates": [
            { "name": "payments", "kind": "count" },
            { "name": "spent", "kind": "sum", "field": "/amount" },
        ],
    }))
    .expect("a feature specification");
    spec.validate().expect("a valid feature");
    spec
}

/// A charge of `amount` to `card` at `secs` seconds after [`T0`], correlated by its number.
fn charge(card: &str, secs: i64, amount: i64, n: usize) -> Event {
    let time = chrono::DateTime::from_timestamp(T0 + secs, 0).expect("a representable time");
    Event::builder(
        EventType::new("payment.charged").expect("valid type"),
        Source::new("test://features").expect("valid source"),
    )
    .partition_key(card)
    .time(time)
    .correlation_id(format!("order-{n}"))
    .data_json(serde_json::json!({ "amount": amount }))
    .build()
    .expect("valid event")
}

/// Charges of eight cards over five minutes, in time order.
fn charges() -> Vec<Event> {
    let mut events = Vec::new();
    for (n, secs) in (0..300).step_by(7).enumerate() {
        let card = format!("card-{}", n % 8);
        events.push(charge(&card, secs, (n as i64 * 37) % 100 + 1, n));
    }
    events
}

/// A key of each partition, far enough ahead in time to close every window before it.
fn clock_events() -> Vec<Event> {
    let mut events = Vec::new();
    for partition in 0..PARTITIONS {
        let key = (0..)
            .map(|i| format!("clock-{i}"))
            .find(|k| partition_for_key(k, PARTITIONS) == partition)
            .expect("some key lands in every partition");
        events.push(charge(&key, 3_600, 0, 10_000 + partition as usize));
    }
    events
}

/// The pure operator's results on `events` (in publish order), clock keys left out.
fn reference(spec: &FeatureSpec, events: &[Event]) -> BTreeMap<String, WindowResult> {
    let mut stage = FeatureStage::new(spec.clone(), 0..PARTITIONS, 0).expect("a stage");
    let mut offsets = BTreeMap::new();
    for event in events {
        let key = event.partition_key().expect("keyed");
        let partition = partition_for_key(key, PARTITIONS);
        let offset = offsets.entry(partition).or_insert(0u64);
        let record = stage.extract(event).expect("extractable");
        stage.process(partition, *offset, &record).expect("valid");
        *offset += 1;
    }
    stage
        .finish()
        .into_iter()
        .filter(|r| !r.key.starts_with("clock-"))
        .map(|r| (r.id.as_str().to_string(), r))
        .collect()
}

async fn payment_stream(runnel: &Runnel) {
    runnel
        .create_stream(
            &StreamName::new("payment").expect("name"),
            StreamConfig {
                partitions: PARTITIONS,
                ..StreamConfig::default()
            },
        )
        .await
        .expect("create the payment stream");
}

fn options(instance: &str) -> PipelineOptions {
    PipelineOptions {
        instance_id: Some(instance.to_string()),
        advance_every: Duration::from_millis(10),
        ..PipelineOptions::default()
    }
}

async fn publish(runnel: &Runnel, events: &[Event]) {
    runnel
        .publish_batch(events.to_vec())
        .await
        .expect("publish the input");
}

/// Every event of a stream, over all its partitions (none if it does not exist yet).
async fn stream_events(runnel: &Runnel, stream: &str) -> Vec<Event> {
    let backend = runnel.backend();
    let name = StreamName::new(stream).expect("name");
    let Ok(info) = backend.describe_stream(&name).await else {
        return Vec::new();
    };
    let mut events = Vec::new();
    for partition in info.partitions {
        let mut offset = partition.start_offset;
        while offset < partition.high_watermark {
            let records = backend
                .read(
                    &name,
                    partition.partition,
                    ReadFrom::Offset(offset),
                    1000,
                    usize::MAX,
                )
                .await
                .expect("read the stream");
            for record in &records {
                events.push(Event::decode_binary(&record.value).expect("an event"));
                offset = record.offset + 1;
            }
            if records.is_empty() {
                break;
            }
        }
    }
    events
}

/// The results published so far, by id; panics if one id was published twice.
async fn published(runnel: &Runnel) -> BTreeMap<String, Event> {
    let mut results = BTreeMap::new();
    for event in stream_events(runnel, "feature").await {
        let id = event.id().as_str().to_string();
        assert!(
            results.insert(id.clone(), event).is_none(),
            "result {id} was published twice"
        );
    }
    results
}

/// Waits (at most 30 s) until `want` results are published; returns them.
async fn wait_for_results(runnel: &Runnel, want: usize) -> BTreeMap<String, Event> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let results = published(runnel).await;
        if results.len() >= want {
            return results;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {want} results, have {}",
            results.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most 30 s) for a condition on the pipeline's status.
async fn wait_for(
    what: &str,
    pipeline: &FeaturePipelineHandle,
    done: impl Fn(&runnel_stages::PipelineStatus) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done(&pipeline.status()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            pipeline.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that the published results are the reference's: same ids, values, windows and
/// correlation ids, nothing more.
fn assert_same_results(published: &BTreeMap<String, Event>, want: &BTreeMap<String, WindowResult>) {
    let output = EventType::new("feature.computed").expect("type");
    let source = Source::new(format!("runnel://features/{FEATURE}")).expect("source");
    let published_ids: BTreeSet<&String> = published.keys().collect();
    let want_ids: BTreeSet<&String> = want.keys().collect();
    assert_eq!(published_ids, want_ids, "the same result ids");
    for (id, result) in want {
        let expected = result.to_event(&output, &source).expect("a result event");
        let got = &published[id];
        assert_eq!(
            got.data().as_json(),
            expected.data().as_json(),
            "result {id}"
        );
        assert_eq!(
            got.correlation_id(),
            expected.correlation_id(),
            "result {id}"
        );
        assert_eq!(got.partition_key(), expected.partition_key(), "result {id}");
    }
}

pub async fn a_pipeline_publishes_what_the_pure_operator_computes_and_serves_the_latest_window(
    h: &impl BackendHarness,
) {
    let runnel = runtime_with(h, false).await;
    payment_stream(&runnel).await;
    let spec = spec("0s");
    let input = charges();
    let want = reference(&spec, &[input.clone(), clock_events()].concat());

    let pipeline = FeaturePipeline::start(&runnel, spec, options("a"))
        .await
        .expect("start the pipeline");
    publish(&runnel, &input).await;
    publish(&runnel, &clock_events()).await;

    let results = wait_for_results(&runnel, want.len()).await;
    assert_same_results(&results, &want);

    // Results are written to the store right after they are published: wait for the last
    // window of each card to be served (a status read between the two can be stale).
    let store = FeatureStore::new(runnel.backend().clone());
    for card in (0..8).map(|i| format!("card-{i}")) {
        let latest = want
            .values()
            .filter(|r| r.key == card)
            .max_by_key(|r| r.window_end)
            .expect("every card has windows");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        let served = loop {
            let served = store.get(FEATURE, &card).await.expect("read the store");
            if let Some(served) = served.filter(|v| v.window_end >= latest.window_end) {
                break served;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{card}: its last window was not served within 20 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        assert_eq!(served.values, latest.values, "{card}");
        assert_eq!(served.window_end, latest.window_end, "{card}");
        assert_eq!(served.revision, 1);
    }
    assert_eq!(
        store.get(FEATURE, "card-unknown").await.expect("read"),
        None
    );
    pipeline.stop().await.expect("stop");
}

pub async fn a_late_event_revises_its_window_and_a_too_late_one_goes_to_the_late_stream(
    h: &impl BackendHarness,
) {
    let runnel = runtime_with(h, false).await;
    payment_stream(&runnel).await;
    let pipeline = FeaturePipeline::start(&runnel, spec("1m"), options("a"))
        .await
        .expect("start the pipeline");
    let window = |start: i64, revision| {
        WindowResult::derive_id(
            FEATURE,
            "card-1",
            (T0 + start) * 1_000_000,
            (T0 + start + 60) * 1_000_000,
            revision,
        )
        .as_str()
        .to_string()
    };
    let spent = |results: &BTreeMap<String, Event>, id: &str| {
        results[id].data().as_json().expect("json")["values"]["spent"].clone()
    };

    publish(
        &runnel,
        &[charge("card-1", 10, 5, 1), charge("card-1", 70, 7, 2)],
    )
    .await;
    let results = wait_for_results(&runnel, 1).await;
    assert_eq!(
        spent(&results, &window(0, 1)),
        5,
        "[0, 60) fired with one charge"
    );

    publish(&runnel, &[charge("card-1", 20, 11, 3)]).await;
    let results = wait_for_results(&runnel, 2).await;
    assert_eq!(
        spent(&results, &window(0, 2)),
        16,
        "the late charge makes revision 2"
    );
    assert_eq!(results[&window(0, 2)].correlation_id(), Some("order-3"));

    // The watermark passes 60 s + 1 m of lateness: [0, 60) is closed for good.
    publish(&runnel, &[charge("card-1", 130, 1, 4)]).await;
    wait_for_results(&runnel, 3).await;
    publish(&runnel, &[charge("card-1", 30, 13, 5)]).await;
    wait_for("the too-late charge", &pipeline, |s| {
        s.partitions
            .values()
            .map(|p| p.counters.too_late)
            .sum::<u64>()
            == 1
            && s.partitions.values().all(|p| p.unpublished == 0)
    })
    .await;
    let late = stream_events(&runnel, "payment_late").await;
    assert_eq!(late.len(), 1, "the too-late charge is in the late stream");
    assert_eq!(late[0].event_type().as_str(), "payment_late.charged");
    assert_eq!(late[0].correlation_id(), Some("order-5"));
    let reason = late[0]
        .extension(LATE_REASON_EXTENSION)
        .and_then(|v| v.as_str())
        .expect("a reason");
    assert!(reason.contains("too late"), "{reason}");
    assert!(
        !published(&runnel).await.contains_key(&window(0, 3)),
        "nothing re-emitted"
    );
    pipeline.stop().await.expect("stop");
}

pub async fn an_idle_partition_does_not_hold_back_the_watermark(h: &impl BackendHarness) {
    let runnel = runtime_with(h, false).await;
    payment_stream(&runnel).await;
    let pipeline = FeaturePipeline::start(&runnel, spec("0s"), options("a"))
        .await
        .expect("start the pipeline");
    // One card, so one partition has events and three never get any.
    publish(
        &runnel,
        &[charge("card-1", 10, 5, 1), charge("card-1", 65, 1, 2)],
    )
    .await;
    let results = wait_for_results(&runnel, 1).await;
    let result = results.values().next().expect("one result");
    assert_eq!(
        result.data().as_json().expect("json")["values"]["payments"],
        1
    );
    // The status is reported after a cycle publishes: wait for the report that follows.
    wait_for(
        "every partition reported, one with a watermark",
        &pipeline,
        |s| {
            s.partitions.len() == PARTITIONS as usize
                && s.partitions.values().any(|p| p.watermark.is_some())
        },
    )
    .await;
    let status = pipeline.status();
    assert_eq!(
        status
            .partitions
            .values()
            .filter(|p| p.watermark.is_some())
            .count(),
        1,
        "three partitions never saw an event"
    );
    pipeline.stop().await.expect("stop");
}

pub async fn an_event_without_a_key_is_dead_lettered_naming_the_field(h: &impl BackendHarness) {
    let runnel = runtime_with(h, false).await;
    payment_stream(&runnel).await;
    let pipeline = FeaturePipeline::start(&runnel, spec("0s"), options("a"))
        .await
        .expect("start the pipeline");
    let keyless = Event::builder(
        EventType::new("payment.charged").expect("valid type"),
        Source::new("test://features").expect("valid source"),
    )
    .data_json(serde_json::json!({ "amount": 3 }))
    .build()
    .expect("valid event");
    publish(&runnel, &[keyless]).await;
    let group = group_name(FEATURE);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let entry = loop {
        let page = runnel
            .dlq_list(&group, &DlqFilter::default(), None, 10)
            .await
            .expect("list the dead-letter queue");
        if let Some(entry) = page.entries.into_iter().next() {
            break entry;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(entry.class, runnel_runtime::FailureClass::Permanent);
    assert!(entry.reason.contains("partitionkey"), "{}", entry.reason);
    pipeline.stop().await.expect("stop");
}

pub async fn a_crash_in_the_middle_and_a_restart_give_the_results_of_an_uninterrupted_run(
    h: &impl BackendHarness,
) {
    let spec = spec("0s");
    let input = charges();
    let (first, second) = input.split_at(input.len() / 2);
    let want = reference(&spec, &[input.clone(), clock_events()].concat());

    let runnel = runtime_with(h, false).await;
    payment_stream(&runnel).await;
    let pipeline = FeaturePipeline::start(&runnel, spec.clone(), options("a"))
        .await
        .expect("start the pipeline");
    publish(&runnel, first).await;
    wait_for_results(&runnel, 1).await;
    // No clean shutdown: the task stops where it is, then the backend is reopened.
    pipeline.abort();

    let runnel = runtime_with(h, false).await;
    publish(&runnel, second).await;
    publish(&runnel, &clock_events()).await;
    let pipeline = FeaturePipeline::start(&runnel, spec, options("a"))
        .await
        .expect("restart the pipeline");
    let results = wait_for_results(&runnel, want.len()).await;
    assert_same_results(&results, &want);
    pipeline.stop().await.expect("stop");
}

pub async fn two_instances_share_the_partitions_and_one_stopping_hands_its_windows_over(
    h: &impl BackendHarness,
) {
    let spec = spec("0s");
    let input = charges();
    let want = reference(&spec, &[input.clone(), clock_events()].concat());
    let runnel = runtime_with(h, false).await;
    payment_stream(&runnel).await;
    let a = FeaturePipeline::start(&runnel, spec.clone(), options("a"))
        .await
        .expect("start a");
    let b = FeaturePipeline::start(&runnel, spec, options("b"))
        .await
        .expect("start b");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        a.rebalance_now().await.expect("rebalance a");
        b.rebalance_now().await.expect("rebalance b");
        let (mine, theirs) = (a.owned_partitions().await, b.owned_partitions().await);
        if mine.len() == 2 && theirs.len() == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the partitions were not shared"
        );
    }
    publish(&runnel, &input).await;
    let per_partition = |events: &[Event]| {
        let mut counts = BTreeMap::new();
        for event in events {
            let key = event.partition_key().expect("keyed");
            *counts
                .entry(partition_for_key(key, PARTITIONS))
                .or_insert(0u64) += 1;
        }
        counts
    };
    let counts = per_partition(&input);
    let processed = |a: &FeaturePipelineHandle, b: &FeaturePipelineHandle| {
        let mut all = a.status().partitions;
        all.extend(b.status().partitions);
        counts
            .iter()
            .all(|(p, n)| all.iter().any(|((_, q), s)| q == p && s.next_offset == *n))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !processed(&a, &b) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all input processed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // `a` leaves with its windows open; `b` takes them over from the checkpoints.
    a.stop().await.expect("stop a");
    b.rebalance_now().await.expect("rebalance b");
    assert_eq!(b.owned_partitions().await.len(), PARTITIONS as usize);
    publish(&runnel, &clock_events()).await;
    let results = wait_for_results(&runnel, want.len()).await;
    assert_same_results(&results, &want);
    b.stop().await.expect("stop b");
}

pub async fn the_store_never_replaces_a_newer_window_with_an_older_one(h: &impl BackendHarness) {
    let store = FeatureStore::new(h.open().await);
    let value = |end: i64, revision: u32, spent: i64| FeatureValue {
        values: serde_json::json!({ "spent": spent })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        window_start: end - 60,
        window_end: end,
        revision,
        watermark: Some(end),
        updated_at: 1,
    };
    assert!(
        store
            .put("spend", "card 1", &value(120, 1, 2))
            .await
            .expect("put")
    );
    assert!(
        !store
            .put("spend", "card 1", &value(60, 2, 1))
            .await
            .expect("put"),
        "an older window is refused"
    );
    assert!(
        store
            .put("spend", "card 1", &value(120, 2, 3))
            .await
            .expect("put")
    );
    assert!(
        !store
            .put("spend", "card 1", &value(120, 1, 2))
            .await
            .expect("put"),
        "an older revision is refused"
    );
    let served = store
        .get("spend", "card 1")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(served, value(120, 2, 3));
}
