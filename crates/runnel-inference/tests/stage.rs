//! The inference stage over real consumer groups, on the embedded backend and on JetStream:
//! predictions carry the inputs (feature store and event), the input's correlation,
//! causation and trace, ids derived from the input; a missing required input is
//! dead-lettered naming it; a slow model degrades every event instead of failing any, the
//! breaker opens and closes again, its transitions are events, and every input has exactly
//! one prediction.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use runnel_backend::StreamName;
use runnel_envelope::{Event, EventType, Source};
use runnel_inference::{
    BreakerConfig, BreakerState, InferenceStage, InputSpec, ModelSpec, StageOptions, group_name,
};
use runnel_runtime::{DlqFilter, GroupConfig, Runnel, TypePattern};
use runnel_stages::{FeatureStore, FeatureValue, FieldPointer, KeySource};
use serde_json::{Value, json};
use support::backends::{TestBackend, embedded, jetstream};
use support::flaky::{FlakyModel, Mode};

const SET: &str = "customer_1h";

fn input(
    name: &str,
    pointer: Option<&str>,
    feature: Option<&str>,
    default: Option<f64>,
) -> InputSpec {
    InputSpec {
        name: name.into(),
        pointer: pointer.map(|p| FieldPointer::new(p).unwrap()),
        feature: feature.map(str::to_string),
        default,
    }
}

fn spec() -> ModelSpec {
    let spec: ModelSpec = serde_json::from_value(json!({
        "name": "fraud",
        "input": "order.placed",
        "output": "fraud.scored",
        "outputs": ["legit", "fraud"],
        "inputs": [],
        "fallback": { "legit": "0.98", "fraud": "if(amount > 1000.0, 0.5, 0.02)" },
        "timeout": "200ms",
        "deadline": "600ms",
        "max_wait": "1ms",
    }))
    .unwrap();
    ModelSpec {
        inputs: vec![
            input("amount", Some("/amount"), None, None),
            input("orders_1h", None, Some("customer_1h.orders"), Some(0.0)),
            input("spent_1h", None, Some("customer_1h.spent"), None),
            input("mean_1h", None, Some("customer_1h.mean"), Some(0.0)),
            input(
                "merchants_1h",
                None,
                Some("customer_1h.merchants"),
                Some(0.0),
            ),
        ],
        key: KeySource::PartitionKey,
        ..spec
    }
}

fn options(max_in_flight: usize) -> StageOptions {
    let mut group = GroupConfig::new(
        group_name("fraud"),
        TypePattern::new("order.placed").unwrap(),
    );
    group.max_in_flight = max_in_flight;
    // Retries of infrastructure failures (a feature store read or an output publish that
    // failed under load) are scheduled on the injected clock, which these tests move only
    // for the breaker: retry at once.
    group.backoff = vec![Duration::ZERO; 5];
    StageOptions {
        group: Some(group),
        ..StageOptions::default()
    }
}

fn order(customer: &str, data: Value, n: usize) -> Event {
    Event::builder(
        EventType::new("order.placed").unwrap(),
        Source::new("test://shop").unwrap(),
    )
    .partition_key(customer)
    .correlation_id(format!("checkout-{n}"))
    .traceparent(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    )
    .data_json(data)
    .build()
    .unwrap()
}

async fn put_features(runnel: &Runnel, customer: &str, orders: i64, spent: f64) {
    let mut values = serde_json::Map::new();
    values.insert("orders".into(), json!(orders));
    values.insert("spent".into(), json!(spent));
    values.insert("mean".into(), json!(spent / orders as f64));
    values.insert("merchants".into(), json!(1));
    let value = FeatureValue {
        values,
        window_start: 0,
        window_end: 3_600_000_000,
        revision: 1,
        watermark: None,
        updated_at: 0,
    };
    FeatureStore::new(runnel.backend().clone())
        .put(SET, customer, &value)
        .await
        .unwrap();
}

async fn stream_events(runnel: &Runnel, stream: &str) -> Vec<Event> {
    runnel
        .recent_events(&StreamName::new(stream).unwrap(), u64::MAX)
        .await
        .unwrap()
}

/// Waits (at most 90 s) for `want` events in `stream`; panics on an id seen twice.
async fn wait_for(runnel: &Runnel, stream: &str, want: usize) -> BTreeMap<String, Event> {
    let until = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let mut by_id = BTreeMap::new();
        for event in stream_events(runnel, stream).await {
            let id = event.id().as_str().to_string();
            assert!(
                by_id.insert(id.clone(), event).is_none(),
                "{id} published twice"
            );
        }
        if by_id.len() >= want {
            return by_id;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{stream}: {} of {want} events after 90 s",
            by_id.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn dead_letters(runnel: &Runnel) -> Vec<runnel_runtime::DlqEntry> {
    runnel
        .dlq_list(&group_name("fraud"), &DlqFilter::default(), None, 100)
        .await
        .unwrap()
        .entries
}

async fn predictions_carry_inputs_and_context_and_missing_inputs_are_dead_lettered(b: TestBackend) {
    let runnel = &b.runnel;
    put_features(runnel, "cust-1", 3, 120.0).await;
    let model = FlakyModel::new("fraud", "v7", 5);
    let stage = InferenceStage::start_with_model(runnel, spec(), model.clone(), options(16))
        .await
        .unwrap();
    let good = order("cust-1", json!({ "amount": 42.5 }), 1);
    let no_amount = order("cust-1", json!({ "total": 1 }), 2);
    let no_features = order("cust-2", json!({ "amount": 10 }), 3);
    let bad_amount = order("cust-1", json!({ "amount": "lots" }), 4);
    for event in [&good, &no_amount, &no_features, &bad_amount] {
        runnel.publish(event.clone()).await.unwrap();
    }
    let predictions = wait_for(runnel, "fraud", 1).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while dead_letters(runnel).await.len() < 3 {
        assert!(tokio::time::Instant::now() < until, "three dead letters");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let prediction = predictions.values().next().unwrap();
    assert_eq!(prediction.event_type().as_str(), "fraud.scored");
    assert_eq!(
        prediction.id(),
        &good.derived_id(&group_name("fraud"), 0),
        "id of (stage, input, revision 1)"
    );
    assert_eq!(prediction.correlation_id(), Some("checkout-1"));
    assert_eq!(prediction.causation_id(), Some(good.id()));
    assert_eq!(prediction.partition_key(), Some("cust-1"));
    let parent = good.traceparent().unwrap();
    let child = prediction.traceparent().unwrap();
    assert_eq!(child.trace_id(), parent.trace_id());
    assert_ne!(child.parent_id(), parent.parent_id(), "a child span");
    let data = prediction.data().as_json().unwrap();
    let row = [42.5, 3.0, 120.0, 40.0, 1.0];
    let expected = FlakyModel::expected(&row);
    assert_eq!(data["model"], "fraud");
    assert_eq!(data["version"], "v7");
    assert_eq!(
        data["outputs"],
        json!({ "legit": expected[0], "fraud": expected[1] })
    );
    assert_eq!(data["degraded"], false);
    assert_eq!(data["served_by"], "model");
    assert_eq!(data["reason"], Value::Null);
    assert_eq!(data["revision"], 1);
    assert_eq!(data["entity"], "cust-1");
    assert_eq!(data["inputs"]["orders_1h"], 3.0);
    assert_eq!(data["input"]["id"], good.id().as_str());
    assert!(data["latency_ms"].as_f64().unwrap() >= 0.0);

    let mut reasons: Vec<(String, String)> = dead_letters(runnel)
        .await
        .into_iter()
        .map(|e| (e.event_id, e.reason))
        .collect();
    reasons.sort();
    let mut want = vec![
        (
            no_amount.id().as_str().to_string(),
            "input `amount` (data/amount) is missing and has no default",
        ),
        (
            no_features.id().as_str().to_string(),
            "input `spent_1h` (feature customer_1h.spent) is missing and has no default",
        ),
        (
            bad_amount.id().as_str().to_string(),
            "input `amount` (data/amount) is a string, not a number",
        ),
    ];
    want.sort();
    for ((id, reason), (want_id, want_reason)) in reasons.iter().zip(&want) {
        assert_eq!(id, want_id);
        assert!(reason.contains(want_reason), "{reason}");
    }
    assert_eq!(stream_events(runnel, "fraud").await.len(), 1);
    stage.stop().await.unwrap();
}

async fn a_slow_model_degrades_every_event_and_the_breaker_opens_and_closes(b: TestBackend) {
    let runnel = &b.runnel;
    for n in [0, 1, 2, 3, 9] {
        put_features(runnel, &format!("cust-{n}"), 2, 50.0).await;
    }
    let model = FlakyModel::new("fraud", "v1", 5);
    let mut spec = spec();
    spec.breaker = BreakerConfig {
        sliding_window: 4,
        minimum_calls: 4,
        failure_rate_threshold: 50.0,
        open_duration: Duration::from_secs(30),
        permitted_calls_in_half_open: 2,
        // Only timeouts should count: a loaded machine must not make healthy calls "slow".
        slow_call_rate_threshold: 100.0,
        slow_call_duration: Duration::from_millis(190),
        ..BreakerConfig::default()
    };
    // One event at a time: one model call each, so the breaker's arithmetic is the test's.
    let stage = InferenceStage::start_with_model(runnel, spec, model.clone(), options(1))
        .await
        .unwrap();
    let mut published = 0;
    let mut publish = |customer: usize, amount: f64| {
        published += 1;
        order(
            &format!("cust-{customer}"),
            json!({ "amount": amount }),
            published,
        )
    };
    // Healthy: 4 predictions by the model, cached per customer.
    for n in 0..4 {
        runnel.publish(publish(n, 10.0)).await.unwrap();
    }
    wait_for(runnel, "fraud", 4).await;
    // Slow: the next 4 time out (cache answers); then the breaker is open (no calls).
    model.set(Mode::Slow(Duration::from_secs(2)));
    for n in 0..8 {
        runnel.publish(publish(n % 4, 2000.0)).await.unwrap();
    }
    runnel.publish(publish(9, 2000.0)).await.unwrap(); // no cached prediction: fallback
    let predictions = wait_for(runnel, "fraud", 13).await;
    assert_eq!(stage.scorer().breaker_state(), BreakerState::Open);
    // Recovery: the open duration passes on the injected clock, probes succeed.
    model.set(Mode::Healthy);
    b.clock.advance(Duration::from_secs(30));
    for n in 0..3 {
        runnel.publish(publish(n, 10.0)).await.unwrap();
    }
    let predictions_after = wait_for(runnel, "fraud", 16).await;
    assert_eq!(stage.scorer().breaker_state(), BreakerState::Closed);

    let mut served = BTreeMap::<String, usize>::new();
    let mut reasons = BTreeMap::<String, usize>::new();
    for event in predictions_after.values() {
        let data = event.data().as_json().unwrap();
        *served
            .entry(data["served_by"].as_str().unwrap().to_string())
            .or_default() += 1;
        if data["degraded"] == true {
            *reasons
                .entry(data["reason"].as_str().unwrap().to_string())
                .or_default() += 1;
        } else {
            assert_eq!(data["reason"], Value::Null);
        }
    }
    assert_eq!(predictions.len(), 13);
    assert_eq!(
        served,
        BTreeMap::from([
            ("model".into(), 7),
            ("cache".into(), 8),
            ("fallback".into(), 1)
        ])
    );
    assert_eq!(
        reasons,
        BTreeMap::from([("timeout".into(), 2), ("circuit_open".into(), 7)])
    );
    let counts = stage.scorer().counts();
    assert_eq!(
        (counts.model, counts.cache, counts.fallback),
        (7, 8, 1),
        "counters add up"
    );
    assert!(
        dead_letters(runnel).await.is_empty(),
        "nothing dead-lettered for a slow model"
    );
    let group = stage.consumer().stats();
    assert_eq!(group.dead_lettered, 0);

    wait_for(runnel, "model", 3).await;
    // One partition (keyed by the model's name): in the order they happened.
    let kinds: Vec<String> = stream_events(runnel, "model")
        .await
        .iter()
        .map(|e| {
            let data = e.data().as_json().unwrap();
            assert_eq!(data["model"], "fraud");
            e.event_type().as_str().to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "model.circuit_opened",
            "model.circuit_half_opened",
            "model.circuit_closed"
        ]
    );
    stage.stop().await.unwrap();
    drop(Arc::clone(&model));
}

/// A breaker that never opens on these few calls: the model's failures are all the ladder's.
fn patient_breaker() -> BreakerConfig {
    BreakerConfig {
        minimum_calls: 1000,
        sliding_window: 1000,
        ..BreakerConfig::default()
    }
}

async fn a_recovered_model_rescores_what_the_ladder_answered(b: TestBackend) {
    let runnel = &b.runnel;
    for n in 0..4 {
        put_features(runnel, &format!("cust-{n}"), 2, 50.0).await;
    }
    let model = FlakyModel::new("fraud", "v1", 5);
    let mut spec = spec();
    spec.rescore_degraded = true;
    spec.breaker = patient_breaker();
    let stage = InferenceStage::start_with_model(runnel, spec, model.clone(), options(4))
        .await
        .unwrap();
    // Healthy: cust-0 and cust-1 get a prediction by the model (and a cache entry).
    let healthy: Vec<Event> = (0..2)
        .map(|n| order(&format!("cust-{n}"), json!({ "amount": 10.0 }), n))
        .collect();
    for event in &healthy {
        runnel.publish(event.clone()).await.unwrap();
    }
    wait_for(runnel, "fraud", 2).await;
    // Failing: the cache answers cust-0 and cust-1, the fallback cust-2 and cust-3.
    model.set(Mode::Failing);
    let degraded: Vec<Event> = (0..4)
        .map(|n| {
            order(
                &format!("cust-{n}"),
                json!({ "amount": 20.0 + n as f64 }),
                10 + n,
            )
        })
        .collect();
    for event in &degraded {
        runnel.publish(event.clone()).await.unwrap();
    }
    let first = wait_for(runnel, "fraud", 6).await;
    let waiting = runnel_inference::waiting_count(&**runnel.backend(), "fraud", 100)
        .await
        .unwrap();
    assert_eq!(
        waiting, 4,
        "the four degraded inputs wait to be scored again"
    );
    // Rounds while it still fails leave them waiting (at least one runs in this second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(stream_events(runnel, "fraud").await.len(), 6);
    // Recovered: each degraded input gets revision 2 from the model, and only those.
    model.set(Mode::Healthy);
    let all = wait_for(runnel, "fraud", 10).await;
    let group = group_name("fraud");
    for (n, input) in degraded.iter().enumerate() {
        let first_id = input.derived_id(&group, 0);
        let revision_one = first[first_id.as_str()].data().as_json().unwrap().clone();
        let second_id = input.derived_id(&format!("{group}/revision"), 2);
        let second = all
            .get(second_id.as_str())
            .unwrap_or_else(|| panic!("revision 2 of input {n}"));
        let data = second.data().as_json().unwrap();
        assert_eq!(data["revision"], 2);
        assert_eq!(data["served_by"], "model");
        assert_eq!(data["degraded"], false);
        assert_eq!(data["reason"], Value::Null);
        assert_eq!(data["version"], "v1");
        let row: Vec<f64> = ["amount", "orders_1h", "spent_1h", "mean_1h", "merchants_1h"]
            .iter()
            .map(|name| revision_one["inputs"][name].as_f64().unwrap())
            .collect();
        let expected = FlakyModel::expected(&row);
        assert_eq!(
            data["outputs"],
            json!({ "legit": expected[0], "fraud": expected[1] })
        );
        let served_first = if n < 2 { "cache" } else { "fallback" };
        assert_eq!(revision_one["served_by"], served_first);
        assert_eq!(
            data["rescores"],
            json!({ "served_by": served_first, "reason": "model_error" })
        );
        assert_eq!(data["input"]["id"], input.id().as_str());
        assert_eq!(second.causation_id(), Some(input.id()));
        assert_eq!(second.correlation_id(), input.correlation_id());
        assert_eq!(second.partition_key(), input.partition_key());
    }
    for input in &healthy {
        let second_id = input.derived_id(&format!("{group}/revision"), 2);
        assert!(
            !all.contains_key(second_id.as_str()),
            "a model's answer is not rescored"
        );
    }
    // Each entry goes once its revision 2 is published.
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while runnel_inference::waiting_count(&**runnel.backend(), "fraud", 100)
        .await
        .unwrap()
        > 0
    {
        assert!(tokio::time::Instant::now() < until, "entries left waiting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        stream_events(runnel, "fraud").await.len(),
        10,
        "no revision twice"
    );
    assert!(dead_letters(runnel).await.is_empty());
    stage.stop().await.unwrap();
}

/// The breaker opens on a failing model; the model recovers while no new event arrives: the
/// re-scoring calls are the half-open breaker's probes, so it closes and every degraded
/// answer gets revision 2 all the same.
async fn rescoring_alone_probes_a_half_open_breaker_closed(b: TestBackend) {
    let runnel = &b.runnel;
    for n in 0..4 {
        put_features(runnel, &format!("cust-{n}"), 2, 50.0).await;
    }
    let model = FlakyModel::new("fraud", "v1", 5);
    model.set(Mode::Failing);
    let mut spec = spec();
    spec.rescore_degraded = true;
    spec.breaker = BreakerConfig {
        sliding_window: 4,
        minimum_calls: 4,
        failure_rate_threshold: 50.0,
        open_duration: Duration::from_secs(30),
        permitted_calls_in_half_open: 2,
        max_wait_in_half_open: Duration::from_secs(3600),
        ..BreakerConfig::default()
    };
    // One event at a time: one model call each, four failures open the breaker.
    let stage = InferenceStage::start_with_model(runnel, spec, model.clone(), options(1))
        .await
        .unwrap();
    let inputs: Vec<Event> = (0..6)
        .map(|n| {
            order(
                &format!("cust-{}", n % 4),
                json!({ "amount": 5.0 * n as f64 }),
                n,
            )
        })
        .collect();
    for event in &inputs {
        runnel.publish(event.clone()).await.unwrap();
    }
    wait_for(runnel, "fraud", 6).await;
    assert_eq!(stage.scorer().breaker_state(), BreakerState::Open);
    // Recovered, and the open duration passes; nothing new is published.
    model.set(Mode::Healthy);
    b.clock.advance(Duration::from_secs(31));
    let all = wait_for(runnel, "fraud", 12).await;
    let group = group_name("fraud");
    for input in &inputs {
        let id = input.derived_id(&format!("{group}/revision"), 2);
        let second = all.get(id.as_str()).expect("revision 2 of every input");
        assert_eq!(second.data().as_json().unwrap()["served_by"], "model");
    }
    // The probes succeeded: the breaker let them through and did not open again (it closes
    // after its permitted calls, which one batched call of the rows may not have used up).
    assert_ne!(stage.scorer().breaker_state(), BreakerState::Open);
    runnel
        .publish(order("cust-0", json!({ "amount": 1.0 }), 99))
        .await
        .unwrap();
    wait_for(runnel, "fraud", 13).await;
    assert_eq!(stage.scorer().breaker_state(), BreakerState::Closed);
    stage.stop().await.unwrap();
}

async fn a_shadow_scores_the_same_inputs_into_its_own_stream_and_compares(b: TestBackend) {
    let runnel = &b.runnel;
    let mut customers = Vec::new();
    for n in 0..5 {
        let customer = format!("cust-{n}");
        put_features(runnel, &customer, 1 + n as i64, 40.0 * (n + 1) as f64).await;
        customers.push(customer);
    }
    const SHIFT: f64 = -0.2;
    let live_spec = spec();
    let mut shadow_spec = spec();
    shadow_spec.name = "fraud_v2".into();
    shadow_spec.output = EventType::new("fraud_shadow.scored").unwrap();
    shadow_spec.shadow_of = Some("fraud".into());
    let live = InferenceStage::start_with_model(
        runnel,
        live_spec.clone(),
        FlakyModel::new("fraud", "v1", 5),
        options(8),
    )
    .await
    .unwrap();
    let mut shadow_options = options(8);
    if let Some(group) = &mut shadow_options.group {
        group.name = group_name("fraud_v2");
    }
    let shadow = InferenceStage::start_with_model(
        runnel,
        shadow_spec.clone(),
        FlakyModel::shifted("fraud_v2", "v2", 5, SHIFT),
        shadow_options,
    )
    .await
    .unwrap();
    // Amounts from low to high: the live model's fraud score crosses 0.5 where the
    // shadow's (0.2 lower) does not yet.
    let events: Vec<Event> = (0..40)
        .map(|n| order(&customers[n % 5], json!({ "amount": 10.0 * n as f64 }), n))
        .collect();
    for event in &events {
        runnel.publish(event.clone()).await.unwrap();
    }
    let live_predictions = wait_for(runnel, "fraud", 40).await;
    let shadow_predictions = wait_for(runnel, "fraud_shadow", 40).await;
    // The expected figures, from the rows the live predictions carry.
    let mut agreeing = 0;
    let mut largest: f64 = 0.0;
    for prediction in live_predictions.values() {
        let data = prediction.data().as_json().unwrap();
        let row: Vec<f64> = ["amount", "orders_1h", "spent_1h", "mean_1h", "merchants_1h"]
            .iter()
            .map(|name| data["inputs"][name].as_f64().unwrap())
            .collect();
        let a = FlakyModel::expected(&row);
        let b = FlakyModel::shifted_answer(&row, SHIFT);
        if (a[1] > a[0]) == (b[1] > b[0]) {
            agreeing += 1;
        }
        largest = largest.max((b[1] - a[1]).abs());
    }
    assert!(
        agreeing < 40 && agreeing > 0,
        "the events straddle the boundary: {agreeing}"
    );
    for prediction in shadow_predictions.values() {
        let data = prediction.data().as_json().unwrap();
        assert_eq!(data["model"], "fraud_v2");
        assert_eq!(data["shadow_of"], "fraud");
    }
    let report = runnel_inference::compare_models(runnel, &live_spec, &shadow_spec, 10_000)
        .await
        .unwrap();
    assert_eq!(report.compared, 40, "{report:?}");
    assert_eq!(
        (report.live_only, report.shadow_only, report.degraded),
        (0, 0, 0)
    );
    assert_eq!(report.agreement, Some(agreeing as f64 / 40.0));
    assert_eq!(report.live.versions, ["v1"]);
    assert_eq!(report.shadow.versions, ["v2"]);
    let fraud = &report.deltas[1];
    assert!(
        (fraud.max_abs - largest).abs() < 1e-9,
        "{fraud:?} vs {largest}"
    );
    assert!(fraud.mean < 0.0, "the shadow scores lower: {fraud:?}");
    // Not a shadow of it: refused.
    assert!(
        runnel_inference::compare_models(runnel, &shadow_spec, &live_spec, 10)
            .await
            .is_err()
    );
    live.stop().await.unwrap();
    shadow.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_recovered_model_rescores_what_the_ladder_answered() {
    a_recovered_model_rescores_what_the_ladder_answered(embedded().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_a_recovered_model_rescores_what_the_ladder_answered() {
    if let Some(b) = jetstream().await {
        a_recovered_model_rescores_what_the_ladder_answered(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_rescoring_alone_probes_a_half_open_breaker_closed() {
    rescoring_alone_probes_a_half_open_breaker_closed(embedded().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_shadow_scores_the_same_inputs_into_its_own_stream_and_compares() {
    a_shadow_scores_the_same_inputs_into_its_own_stream_and_compares(embedded().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_predictions_carry_inputs_and_context_and_missing_inputs_are_dead_lettered() {
    predictions_carry_inputs_and_context_and_missing_inputs_are_dead_lettered(embedded().await)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_predictions_carry_inputs_and_context_and_missing_inputs_are_dead_lettered() {
    if let Some(b) = jetstream().await {
        predictions_carry_inputs_and_context_and_missing_inputs_are_dead_lettered(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_slow_model_degrades_every_event_and_the_breaker_opens_and_closes() {
    a_slow_model_degrades_every_event_and_the_breaker_opens_and_closes(embedded().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_a_slow_model_degrades_every_event_and_the_breaker_opens_and_closes() {
    if let Some(b) = jetstream().await {
        a_slow_model_degrades_every_event_and_the_breaker_opens_and_closes(b).await;
    }
}

/// The shipped random forest, loaded from a `[[models]]` spec by the stage itself: its
/// predictions are scikit-learn's for the same inputs.
#[cfg(feature = "onnx")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_onnx_model_scores_events_as_scikit_learn_does() {
    let b = embedded().await;
    let runnel = &b.runnel;
    let rows = support::test_set();
    let mut spec = spec();
    spec.onnx = Some(runnel_inference::OnnxSpec {
        path: support::models_dir()
            .join("fraud_rf.onnx")
            .to_string_lossy()
            .into_owned(),
        output: "probabilities".into(),
    });
    spec.version = Some("rf-1".into());
    let stage = InferenceStage::start(runnel, spec, options(16))
        .await
        .unwrap();
    let mut want = BTreeMap::new();
    for (n, row) in rows.iter().take(10).enumerate() {
        let customer = format!("cust-{n}");
        let mut values = serde_json::Map::new();
        for (name, value) in ["orders", "spent", "mean", "merchants"]
            .iter()
            .zip(&row.inputs[1..])
        {
            values.insert((*name).into(), json!(value));
        }
        FeatureStore::new(runnel.backend().clone())
            .put(
                SET,
                &customer,
                &FeatureValue {
                    values,
                    window_start: 0,
                    window_end: 1,
                    revision: 1,
                    watermark: None,
                    updated_at: 0,
                },
            )
            .await
            .unwrap();
        runnel
            .publish(order(&customer, json!({ "amount": row.inputs[0] }), n))
            .await
            .unwrap();
        want.insert(customer, row.p_rf);
    }
    let predictions = wait_for(runnel, "fraud", 10).await;
    for event in predictions.values() {
        let data = event.data().as_json().unwrap();
        assert_eq!(
            (data["version"].as_str(), data["served_by"].as_str()),
            (Some("rf-1"), Some("model"))
        );
        let fraud = data["outputs"]["fraud"].as_f64().unwrap();
        let expected = want[data["entity"].as_str().unwrap()];
        assert!(
            (fraud - expected).abs() <= 1e-5,
            "{fraud} vs scikit-learn {expected}"
        );
    }
    stage.stop().await.unwrap();
}
