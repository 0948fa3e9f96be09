//! `[[features]]` as written in `runnel.toml`, and events as they arrive: every refusal names
//! the field at fault.

use runnel_envelope::{Event, EventType, Source};
use runnel_stages::{
    ExtractError, FeatureSpec, FeatureStage, FieldValue, InputError, KeySource, Outcome, Record,
    TimeSource, WindowSpec, validate_features,
};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize)]
struct Config {
    features: Vec<FeatureSpec>,
}

fn parse(text: &str) -> Vec<FeatureSpec> {
    toml::from_str::<Config>(text).unwrap().features
}

const CARD_SPEND: &str = r#"
[[features]]
name = "card_spend"
input = "payment.charged"
key = "/card_id"
window = { kind = "sliding", size = "10m", slide = "1m" }
max_out_of_orderness = "5s"
allowed_lateness = "1m"
output = "feature.computed"
aggregates = [
  { name = "payments", kind = "count" },
  { name = "spent", kind = "sum", field = "/amount" },
  { name = "merchants", kind = "distinct", field = "/merchant" },
]
"#;

#[test]
fn a_feature_declared_in_runnel_toml_is_typed_with_defaults() {
    let features = parse(CARD_SPEND);
    validate_features(&features).unwrap();
    let spec = &features[0];
    assert_eq!(spec.key.to_string(), "/card_id");
    assert_eq!(
        spec.time,
        TimeSource::Attribute,
        "the CloudEvents time by default"
    );
    assert!(matches!(spec.window, WindowSpec::Sliding { .. }));
    assert_eq!(spec.idle_timeout.to_string(), "1m");
    assert_eq!(spec.late_stream().as_deref(), Some("payment_late"));
    assert_eq!(
        spec.fields().iter().map(|f| f.as_str()).collect::<Vec<_>>(),
        ["/amount", "/merchant"]
    );
}

fn errors(text: &str) -> Vec<String> {
    match validate_features(&parse(text)) {
        Ok(()) => vec![],
        Err(errors) => errors.errors().iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn rules_that_tie_fields_together_are_refused_with_the_field_path() {
    let text = CARD_SPEND
        .replace(r#"slide = "1m""#, r#"slide = "11m""#)
        .replace(
            r#"kind = "distinct", field = "/merchant""#,
            r#"kind = "sum""#,
        )
        .replace(r#"name = "merchants""#, r#"name = "spent""#);
    assert_eq!(
        errors(&text),
        [
            "features[0].window.slide: must not be longer than size (10m)",
            "features[0].aggregates[2].name: `spent` is already the name of features[0].aggregates[1]",
            "features[0].aggregates[2].field: `sum` needs a field (a JSON pointer into data such as `/amount`)",
        ]
    );
}

#[test]
fn a_slide_that_makes_too_many_panes_is_refused() {
    let text = CARD_SPEND.replace(
        r#"size = "10m", slide = "1m""#,
        r#"size = "1h", slide = "7s""#,
    );
    assert_eq!(
        errors(&text),
        [
            "features[0].window.slide: size / gcd(size, slide) = 3600 panes per window, more than \
          1440: choose a slide that divides size"
        ]
    );
}

#[test]
fn two_features_with_one_name_and_a_pattern_without_a_stream_are_refused() {
    let text = format!(
        "{CARD_SPEND}{}",
        CARD_SPEND
            .replace(r#"input = "payment.charged""#, r#"input = "*.charged""#)
            .replace(
                r#"size = "10m", slide = "1m""#,
                r#"size = "0s", slide = "0s""#
            )
    );
    assert_eq!(
        errors(&text),
        [
            "features[1].window.size: must be longer than zero",
            "features[1].window.slide: must be longer than zero",
            "features[1].late_stream: required when `input` (*.charged) does not start with a stream name",
            "features[1].name: `card_spend` is already the name of features[0]",
        ]
    );
}

#[test]
fn bad_durations_pointers_and_types_are_refused_while_parsing() {
    for (from, to, says) in [
        (r#""5s""#, r#""5 s""#, "invalid duration `5 s`"),
        (
            r#""/card_id""#,
            r#""card_id""#,
            "`card_id` is neither `partitionkey` nor",
        ),
        (
            r#""/amount""#,
            r#""/amount~2""#,
            "invalid JSON pointer `/amount~2`",
        ),
        (
            r#""feature.computed""#,
            r#""FeatureComputed""#,
            "FeatureComputed",
        ),
    ] {
        let err = toml::from_str::<Config>(&CARD_SPEND.replacen(from, to, 1)).unwrap_err();
        assert!(err.to_string().contains(says), "{err}");
    }
}

fn event(data: serde_json::Value) -> runnel_envelope::EventBuilder {
    Event::builder(
        EventType::new("payment.charged").unwrap(),
        Source::new("/shop").unwrap(),
    )
    .data_json(data)
}

fn stage() -> FeatureStage {
    FeatureStage::new(parse(CARD_SPEND).remove(0), [0], 0).unwrap()
}

#[test]
fn an_event_is_read_into_key_time_values_and_correlation() {
    let e = event(json!({"card_id": 42, "amount": 12.5, "merchant": "m1"}))
        .correlation_id("checkout-7")
        .build()
        .unwrap();
    let record = stage().extract(&e).unwrap();
    assert_eq!(record.key, "42", "a number key is its JSON text");
    assert_eq!(record.event_time, e.time().unwrap().timestamp_micros());
    assert_eq!(
        record.values,
        [FieldValue::Float(12.5), FieldValue::Str("m1".into())]
    );
    assert_eq!(record.correlation.as_deref(), Some("checkout-7"));
}

#[test]
fn an_event_without_a_usable_key_or_time_is_refused_naming_the_field() {
    let stage = stage();
    let cases = [
        (
            event(json!({"amount": 1})).build().unwrap(),
            "`data/card_id` is missing: the window key is read from it",
        ),
        (
            event(json!({"card_id": {"a": 1}})).build().unwrap(),
            "`data/card_id` is an object: the window key must be",
        ),
        (
            event(json!({"card_id": "c1"}))
                .without_time()
                .build()
                .unwrap(),
            "`time` is missing: the event time is read from it",
        ),
        (
            Event::builder(
                EventType::new("payment.charged").unwrap(),
                Source::new("/shop").unwrap(),
            )
            .data_text("c1", "text/plain")
            .build()
            .unwrap(),
            "`data` is not JSON, so `data/card_id` cannot be read",
        ),
    ];
    for (event, says) in cases {
        let err = stage.extract(&event).unwrap_err();
        assert!(err.to_string().starts_with(says), "{err}");
    }
}

#[test]
fn event_time_can_come_from_the_data_as_rfc3339_or_epoch_milliseconds() {
    let mut spec = parse(CARD_SPEND).remove(0);
    spec.time = "/at".parse().unwrap();
    spec.key = KeySource::PartitionKey;
    let stage = FeatureStage::new(spec, [0], 0).unwrap();
    let read = |at: serde_json::Value| {
        stage.extract(
            &event(json!({"at": at}))
                .partition_key("c1")
                .build()
                .unwrap(),
        )
    };
    assert_eq!(
        read(json!("1970-01-01T00:01:00Z")).unwrap().event_time,
        60_000_000
    );
    assert_eq!(read(json!(60_000)).unwrap().event_time, 60_000_000);
    for bad in [json!("yesterday"), json!(1.5), json!(true)] {
        assert!(
            matches!(read(bad), Err(ExtractError::BadTime { field, .. }) if field == "data/at")
        );
    }
}

#[test]
fn a_value_of_the_wrong_type_is_refused_naming_the_field_and_changes_nothing() {
    let mut stage = stage();
    let record = Record {
        key: "c1".into(),
        event_time: 0,
        values: vec![FieldValue::Str("12".into()), FieldValue::Missing],
        correlation: None,
    };
    let err = stage.process(0, 0, &record).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`data/amount` must be a number for aggregate `spent` (sum), but it is a string"
    );
    assert!(matches!(
        stage.process(
            0,
            0,
            &Record {
                values: vec![],
                ..record.clone()
            }
        ),
        Err(InputError::Arity {
            expected: 2,
            got: 0
        })
    ));
    assert_eq!(stage.counters().accepted, 0);
    assert!(
        stage.offsets().is_empty(),
        "the caller reports it with skip()"
    );
}

#[test]
fn a_result_becomes_a_feature_event_with_its_id_key_correlation_and_window_time() {
    let mut stage = stage();
    let e = event(json!({"card_id": "c1", "amount": 3, "merchant": "m1"}))
        .time("2024-05-01T12:00:30Z".parse().unwrap())
        .correlation_id("checkout-7")
        .build()
        .unwrap();
    let record = stage.extract(&e).unwrap();
    assert_eq!(stage.process(0, 0, &record).unwrap(), Outcome::Accepted);
    let results = stage.finish();
    assert_eq!(
        results.len(),
        10,
        "one per sliding window containing the event"
    );
    let result = &results[0];
    let out = result
        .to_event(
            &EventType::new("feature.computed").unwrap(),
            &Source::new("urn:runnel:feature:card_spend").unwrap(),
        )
        .unwrap();
    assert_eq!(out.id(), &result.id);
    assert_eq!(out.partition_key(), Some("c1"));
    assert_eq!(out.correlation_id(), Some("checkout-7"));
    assert_eq!(
        out.time().unwrap().timestamp_micros(),
        result.window_end - 1
    );
    let data = out.data().as_json().unwrap();
    assert_eq!(data["feature"], "card_spend");
    assert_eq!(data["window_start"], "2024-05-01T11:51:00Z");
    assert_eq!(
        data["values"],
        json!({"payments": 1, "spent": 3, "merchants": 1})
    );
}
