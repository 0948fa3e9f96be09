//! What the stage's tests share: a feature with every aggregate, random inputs, a driver that
//! feeds a stage, and the naive reference — every window recomputed from all of its events —
//! that the stage must agree with.

#![allow(dead_code)] // Each test file uses its own part of this module.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use runnel_stages::{
    AggregateKind, AggregateSpec, FeatureSpec, FeatureStage, FieldValue, HumanDuration, Outcome,
    Record, WindowResult, WindowSpec,
};
use serde_json::{Map, Value};

pub const SEC: i64 = 1_000_000;

/// One input event before it is delivered.
#[derive(Debug, Clone)]
pub struct Input {
    pub partition: u32,
    pub key: String,
    pub time: i64,
    pub amount: FieldValue,
    pub merchant: FieldValue,
}

impl Input {
    pub fn record(&self, correlation: String) -> Record {
        Record {
            key: self.key.clone(),
            event_time: self.time,
            values: vec![self.amount.clone(), self.merchant.clone()],
            correlation: Some(correlation),
        }
    }
}

/// A feature computing every aggregate kind over `/amount` and `/merchant`.
pub fn spec(window: WindowSpec, out_of_orderness: i64, lateness: i64) -> FeatureSpec {
    use AggregateKind::*;
    let aggregates = [
        ("events", Count, None),
        ("amounts", Count, Some("/amount")),
        ("sum", Sum, Some("/amount")),
        ("mean", Mean, Some("/amount")),
        ("min", Min, Some("/amount")),
        ("max", Max, Some("/amount")),
        ("last", Last, Some("/merchant")),
        ("merchants", Distinct, Some("/merchant")),
        ("quantiles", Quantiles, Some("/amount")),
    ]
    .into_iter()
    .map(|(name, kind, field)| AggregateSpec::new(name, kind, field))
    .collect();
    FeatureSpec {
        name: "spend".into(),
        input: "payment.charged".into(),
        key: Default::default(),
        time: Default::default(),
        window,
        max_out_of_orderness: HumanDuration::from_micros(out_of_orderness as u64),
        allowed_lateness: HumanDuration::from_micros(lateness as u64),
        idle_timeout: HumanDuration::ZERO,
        aggregates,
        output: "feature.computed".parse().unwrap(),
        late_stream: None,
    }
}

pub fn tumbling(size_secs: u64) -> WindowSpec {
    WindowSpec::Tumbling {
        size: HumanDuration::from_secs(size_secs),
    }
}

pub fn sliding(size_secs: u64, slide_secs: u64) -> WindowSpec {
    WindowSpec::Sliding {
        size: HumanDuration::from_secs(size_secs),
        slide: HumanDuration::from_secs(slide_secs),
    }
}

pub fn session(gap_secs: u64) -> WindowSpec {
    WindowSpec::Session {
        gap: HumanDuration::from_secs(gap_secs),
    }
}

/// Every window kind, with sizes that exercise panes (a slide that does not divide the size).
pub fn any_window() -> impl Strategy<Value = WindowSpec> {
    prop_oneof![
        prop::sample::select(vec![10u64, 60]).prop_map(tumbling),
        prop::sample::select(vec![(60u64, 20u64), (50, 20), (30, 30), (40, 15)])
            .prop_map(|(size, slide)| sliding(size, slide)),
        prop::sample::select(vec![5u64, 20]).prop_map(session),
    ]
}

fn amount() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        8 => (-1_000i64..1_000).prop_map(FieldValue::Int),
        1 => (-1_000i64..1_000).prop_map(|i| FieldValue::Float(i as f64 + 0.5)),
        1 => Just(FieldValue::Missing),
        1 => Just(FieldValue::Null),
    ]
}

fn integer_amount() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        9 => (-1_000i64..1_000).prop_map(FieldValue::Int),
        1 => Just(FieldValue::Missing),
    ]
}

fn merchant() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        6 => (0u32..40).prop_map(|m| FieldValue::Str(format!("m{m}"))),
        2 => (0i64..40).prop_map(FieldValue::Int),
        1 => Just(FieldValue::Missing),
    ]
}

fn input(
    amount: impl Strategy<Value = FieldValue>,
    span_secs: i64,
    partitions: u32,
) -> impl Strategy<Value = Input> {
    (
        0..partitions,
        0u32..5,
        0..span_secs * 1_000,
        amount,
        merchant(),
    )
        .prop_map(|(partition, key, millis, amount, merchant)| Input {
            partition,
            key: format!("card-{key}"),
            time: millis * 1_000,
            amount,
            merchant,
        })
}

/// Random events over ten minutes on up to three partitions, with floats and missing values.
pub fn inputs() -> impl Strategy<Value = Vec<Input>> {
    prop::collection::vec(input(amount(), 600, 3), 1..250)
}

/// Like [`inputs`], with integer amounts only (float sums may differ in the last bits between
/// orders).
pub fn integer_inputs() -> impl Strategy<Value = Vec<Input>> {
    prop::collection::vec(input(integer_amount(), 600, 3), 1..250)
}

/// The order events arrive in when each is delayed by up to `delays[i]`: event `i` arrives at
/// `time + delay`. With delays at most the out-of-orderness bound no event is ever late.
pub fn arrival_order(inputs: &[Input], delays: &[i64]) -> Vec<Input> {
    let mut order: Vec<(i64, usize)> = inputs
        .iter()
        .enumerate()
        .map(|(i, e)| (e.time + delays[i % delays.len().max(1)], i))
        .collect();
    order.sort();
    order.into_iter().map(|(_, i)| inputs[i].clone()).collect()
}

/// What a run produced.
pub struct Run {
    pub results: Vec<WindowResult>,
    pub outcomes: Vec<Outcome>,
}

/// Feeds `events` in order (offsets per partition from 0), advancing the clock by a second
/// and calling `advance` after every event for which `advance_after` holds, then `finish`.
pub fn run(spec: &FeatureSpec, events: &[Input], advance_after: impl Fn(usize) -> bool) -> Run {
    let partitions: BTreeSet<u32> = events.iter().map(|e| e.partition).collect();
    let mut stage = FeatureStage::new(spec.clone(), partitions, 0).unwrap();
    let mut offsets: BTreeMap<u32, u64> = BTreeMap::new();
    let mut results = Vec::new();
    let mut outcomes = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let offset = offsets.entry(event.partition).or_insert(0);
        let record = event.record(format!("corr-{i}"));
        outcomes.push(stage.process(event.partition, *offset, &record).unwrap());
        *offset += 1;
        if advance_after(i) {
            results.extend(stage.advance((i as u64 + 1) * 1_000_000));
        }
    }
    results.extend(stage.finish());
    Run { results, outcomes }
}

/// The final result of every window: for tumbling and sliding windows the highest revision of
/// each (key, window); for sessions, every result not superseded by a later one of the same
/// key whose window contains it.
pub fn final_results(results: &[WindowResult]) -> BTreeMap<Window, WindowResult> {
    let mut last: BTreeMap<Window, WindowResult> = BTreeMap::new();
    for result in results {
        last.retain(|(key, start, end), _| {
            !(key == &result.key
                && result.window_start <= *start
                && *end <= result.window_end
                && (*start, *end) != (result.window_start, result.window_end))
        });
        let at = (result.key.clone(), result.window_start, result.window_end);
        match last.get(&at) {
            Some(kept) if kept.revision >= result.revision => {}
            _ => {
                last.insert(at, result.clone());
            }
        }
    }
    last
}

/// The windows of `time` for a tumbling or sliding window (sessions are computed per key).
fn aligned_windows(window: &WindowSpec, time: i64) -> Vec<(i64, i64)> {
    let (size, slide) = match *window {
        WindowSpec::Tumbling { size } => (size.as_micros() as i64, size.as_micros() as i64),
        WindowSpec::Sliding { size, slide } => (size.as_micros() as i64, slide.as_micros() as i64),
        WindowSpec::Session { .. } => unreachable!("sessions are grouped per key"),
    };
    let mut windows = Vec::new();
    let mut start = time - time.rem_euclid(slide);
    while start + size > time {
        windows.push((start, start + size));
        start -= slide;
    }
    windows
}

/// A key's window: (key, start, end).
pub type Window = (String, i64, i64);

/// The naive reference: every window of every key, recomputed from all of its events.
/// `events` are (input, partition offset) pairs.
pub fn reference(spec: &FeatureSpec, events: &[(Input, u64)]) -> BTreeMap<Window, Expected> {
    let mut members: BTreeMap<Window, Vec<&(Input, u64)>> = BTreeMap::new();
    match spec.window {
        WindowSpec::Session { gap } => {
            let gap = gap.as_micros() as i64;
            let mut by_key: BTreeMap<&str, Vec<&(Input, u64)>> = BTreeMap::new();
            for event in events {
                by_key.entry(&event.0.key).or_default().push(event);
            }
            for (key, mut list) in by_key {
                list.sort_by_key(|e| e.0.time);
                let mut current: Vec<&(Input, u64)> = Vec::new();
                let (mut start, mut end) = (0, 0);
                for event in list {
                    if !current.is_empty() && event.0.time > end {
                        members.insert((key.to_string(), start, end), std::mem::take(&mut current));
                    }
                    if current.is_empty() {
                        start = event.0.time;
                        end = event.0.time + gap;
                    }
                    end = end.max(event.0.time + gap);
                    current.push(event);
                }
                members.insert((key.to_string(), start, end), current);
            }
        }
        ref window => {
            for event in events {
                for (start, end) in aligned_windows(window, event.0.time) {
                    members
                        .entry((event.0.key.clone(), start, end))
                        .or_default()
                        .push(event);
                }
            }
        }
    }
    members
        .into_iter()
        .map(|(at, events)| (at, Expected::of(&events)))
        .collect()
}

/// A window's aggregates, computed the obvious way.
#[derive(Debug)]
pub struct Expected {
    pub events: u64,
    pub amounts: Vec<f64>,
    pub int_sum: Option<i128>,
    pub float_sum: f64,
    pub min: Option<FieldValue>,
    pub max: Option<FieldValue>,
    pub last: Value,
    pub merchants: usize,
}

fn number(value: &FieldValue) -> Option<f64> {
    match value {
        FieldValue::Int(i) => Some(*i as f64),
        FieldValue::Float(f) => Some(*f),
        _ => None,
    }
}

impl Expected {
    fn of(events: &[&(Input, u64)]) -> Self {
        let amounts: Vec<f64> = events.iter().filter_map(|e| number(&e.0.amount)).collect();
        let all_ints = events
            .iter()
            .all(|e| !matches!(e.0.amount, FieldValue::Float(_)));
        let int_sum = all_ints.then(|| {
            events
                .iter()
                .map(|e| match e.0.amount {
                    FieldValue::Int(i) => i128::from(i),
                    _ => 0,
                })
                .sum()
        });
        // Numeric order, an integer before an equal float: `min` prefers the integer and
        // `max` the float on a tie, whatever the order the values came in.
        let order = |v: &FieldValue| number(v).map(|x| (x, matches!(v, FieldValue::Float(_))));
        let in_order = || {
            events
                .iter()
                .filter_map(|e| order(&e.0.amount).map(|k| (k, &e.0.amount)))
        };
        let by_key = |a: &((f64, bool), &FieldValue), b: &((f64, bool), &FieldValue)| {
            a.0.0.total_cmp(&b.0.0).then(a.0.1.cmp(&b.0.1))
        };
        let min = in_order().min_by(by_key).map(|(_, v)| v.clone());
        let max = in_order().max_by(by_key).map(|(_, v)| v.clone());
        let last = events
            .iter()
            .filter(|e| e.0.merchant.is_present())
            .max_by_key(|e| (e.0.time, e.0.partition, e.1))
            .map_or(Value::Null, |e| e.0.merchant.to_json());
        let merchants: BTreeSet<String> = events
            .iter()
            .filter(|e| e.0.merchant.is_present())
            .map(|e| match &e.0.merchant {
                FieldValue::Str(s) => format!("s:{s}"),
                other => format!("j:{}", other.to_json()),
            })
            .collect();
        Self {
            events: events.len() as u64,
            float_sum: amounts.iter().sum(),
            amounts,
            int_sum,
            min,
            max,
            last,
            merchants: merchants.len(),
        }
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Checks a stage's values for one window against the reference, exactly for exact
/// aggregates and within the stated bounds for the sketches.
pub fn check_values(at: &Window, values: &Map<String, Value>, expected: &Expected) {
    let n = expected.amounts.len();
    assert_eq!(
        values["events"],
        Value::from(expected.events),
        "{at:?} events"
    );
    assert_eq!(values["amounts"], Value::from(n as u64), "{at:?} amounts");
    match (n, expected.int_sum) {
        (0, _) => {
            assert_eq!(values["sum"], Value::Null, "{at:?} sum");
            assert_eq!(values["mean"], Value::Null, "{at:?} mean");
        }
        (_, Some(sum)) => {
            assert_eq!(values["sum"], Value::from(sum as i64), "{at:?} sum");
            assert_eq!(
                values["mean"].as_f64(),
                Some(sum as f64 / n as f64),
                "{at:?} mean"
            );
        }
        (_, None) => {
            let sum = values["sum"].as_f64().unwrap();
            assert!(
                close(sum, expected.float_sum),
                "{at:?} sum {sum} vs {}",
                expected.float_sum
            );
            let mean = values["mean"].as_f64().unwrap();
            assert!(close(mean, expected.float_sum / n as f64), "{at:?} mean");
        }
    }
    let json = |v: &Option<FieldValue>| v.as_ref().map_or(Value::Null, FieldValue::to_json);
    assert_eq!(values["min"], json(&expected.min), "{at:?} min");
    assert_eq!(values["max"], json(&expected.max), "{at:?} max");
    assert_eq!(values["last"], expected.last, "{at:?} last");
    let distinct = values["merchants"].as_u64().unwrap() as f64;
    let exact = expected.merchants as f64;
    let allowed = if expected.merchants <= 128 {
        1.0
    } else {
        0.05 * exact
    };
    assert!(
        (distinct - exact).abs() <= allowed,
        "{at:?} distinct {distinct} vs {exact}"
    );
    if n == 0 {
        assert_eq!(values["quantiles"], Value::Null, "{at:?} quantiles");
    } else {
        let mut sorted = expected.amounts.clone();
        sorted.sort_by(f64::total_cmp);
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
            let want = sorted[(q * (n as f64 - 1.0)) as usize];
            let got = values["quantiles"][name].as_f64().unwrap();
            if n <= runnel_stages::EXACT_QUANTILE_VALUES {
                assert_eq!(got, want, "{at:?} {name}");
            } else {
                let bound = runnel_stages::QUANTILE_RELATIVE_ACCURACY * want.abs() + 1e-9;
                assert!(
                    (got - want).abs() <= bound,
                    "{at:?} {name}: {got} vs {want}"
                );
            }
        }
    }
}

/// Checks that the final results are exactly the reference's windows, each with its values.
pub fn assert_agrees_with_reference(
    spec: &FeatureSpec,
    delivered: &[(Input, u64)],
    results: &[WindowResult],
) {
    let expected = reference(spec, delivered);
    let actual = final_results(results);
    let expected_windows: Vec<_> = expected.keys().collect();
    let actual_windows: Vec<_> = actual.keys().collect();
    assert_eq!(actual_windows, expected_windows, "the same windows");
    for (at, result) in &actual {
        check_values(at, &result.values, &expected[at]);
    }
}

/// The events with the offsets they were delivered at (per partition, from 0, in order).
pub fn with_offsets(events: &[Input]) -> Vec<(Input, u64)> {
    let mut offsets: BTreeMap<u32, u64> = BTreeMap::new();
    events
        .iter()
        .map(|e| {
            let offset = offsets.entry(e.partition).or_insert(0);
            *offset += 1;
            (e.clone(), *offset - 1)
        })
        .collect()
}
