//! Lateness, told as stories: on time, late but within `allowed_lateness` (the window is
//! re-emitted as revision 2), and too late (sent to the late stream with a reason, counted).

use runnel_stages::{
    AggregateKind, AggregateSpec, FeatureSpec, FeatureStage, FieldValue, HumanDuration, Outcome,
    Record, WindowResult, WindowSpec,
};
use serde_json::json;

const SEC: i64 = 1_000_000;

fn spec(window: WindowSpec, out_of_orderness_secs: u64, lateness_secs: u64) -> FeatureSpec {
    FeatureSpec {
        name: "spend".into(),
        input: "payment.charged".into(),
        key: Default::default(),
        time: Default::default(),
        window,
        max_out_of_orderness: HumanDuration::from_secs(out_of_orderness_secs),
        allowed_lateness: HumanDuration::from_secs(lateness_secs),
        idle_timeout: HumanDuration::ZERO,
        aggregates: vec![
            AggregateSpec::new("payments", AggregateKind::Count, None),
            AggregateSpec::new("spent", AggregateKind::Sum, Some("/amount")),
        ],
        output: "feature.computed".parse().unwrap(),
        late_stream: None,
    }
}

fn minute_windows(lateness_secs: u64) -> FeatureStage {
    let window = WindowSpec::Tumbling {
        size: HumanDuration::from_mins(1),
    };
    FeatureStage::new(spec(window, 0, lateness_secs), [0], 0).unwrap()
}

/// Feeds one event of card `c1` at `secs` with `amount` to partition 0.
struct Feeder {
    stage: FeatureStage,
    offset: u64,
}

impl Feeder {
    fn new(stage: FeatureStage) -> Self {
        Self { stage, offset: 0 }
    }

    fn event(&mut self, secs: i64, amount: i64) -> Outcome {
        let record = Record {
            key: "c1".into(),
            event_time: secs * SEC,
            values: vec![FieldValue::Int(amount)],
            correlation: Some(format!("order-{}", self.offset)),
        };
        self.offset += 1;
        self.stage.process(0, self.offset - 1, &record).unwrap()
    }

    fn advance(&mut self) -> Vec<WindowResult> {
        self.stage.advance(self.offset)
    }
}

#[test]
fn a_window_fires_when_the_watermark_passes_its_end_and_not_before() {
    let window = WindowSpec::Tumbling {
        size: HumanDuration::from_mins(1),
    };
    let mut feed = Feeder::new(FeatureStage::new(spec(window, 5, 0), [0], 0).unwrap());
    assert_eq!(feed.event(10, 5), Outcome::Accepted);
    assert_eq!(feed.event(64, 1), Outcome::Accepted);
    assert!(
        feed.advance().is_empty(),
        "watermark 59 s: the window [0, 60 s) is open"
    );
    assert_eq!(feed.event(65, 1), Outcome::Accepted);
    let results = feed.advance();
    assert_eq!(results.len(), 1, "watermark 60 s: it fires");
    assert_eq!(feed.stage.watermark(), Some(60 * SEC));
}

#[test]
fn an_on_time_event_is_counted_in_revision_1_with_an_id_from_its_window() {
    let mut feed = Feeder::new(minute_windows(60));
    assert_eq!(feed.event(10, 5), Outcome::Accepted);
    assert!(feed.advance().is_empty());
    assert_eq!(feed.event(61, 7), Outcome::Accepted);
    let results = feed.advance();
    assert_eq!(results.len(), 1);
    let result = &results[0];
    assert_eq!(
        (
            result.key.as_str(),
            result.window_start,
            result.window_end,
            result.revision
        ),
        ("c1", 0, 60 * SEC, 1)
    );
    assert_eq!(result.values["payments"], json!(1));
    assert_eq!(result.values["spent"], json!(5));
    assert_eq!(result.correlation_id.as_deref(), Some("order-0"));
    assert_eq!(
        result.id,
        WindowResult::derive_id("spend", "c1", 0, 60 * SEC, 1)
    );
}

#[test]
fn a_late_event_within_allowed_lateness_reemits_revision_2() {
    let mut feed = Feeder::new(minute_windows(60));
    feed.event(10, 5);
    feed.event(70, 1);
    let first = feed.advance();
    assert_eq!(first.len(), 1);

    assert_eq!(
        feed.event(20, 3),
        Outcome::Late,
        "70 s > 60 s but < 60 s + 1 min"
    );
    let revised = feed.advance();
    assert_eq!(revised.len(), 1);
    let revised = &revised[0];
    assert_eq!(revised.revision, 2);
    assert_eq!((revised.window_start, revised.window_end), (0, 60 * SEC));
    assert_eq!(revised.values["payments"], json!(2));
    assert_eq!(revised.values["spent"], json!(8));
    assert_eq!(
        revised.correlation_id.as_deref(),
        Some("order-2"),
        "the late event's"
    );
    assert_ne!(revised.id, first[0].id, "a revision is a new result");
    assert_eq!(feed.stage.counters().late, 1);
}

#[test]
fn an_event_beyond_allowed_lateness_goes_to_the_late_stream_with_its_reason_and_is_counted() {
    let mut feed = Feeder::new(minute_windows(60));
    feed.event(10, 5);
    feed.event(130, 1);
    assert_eq!(
        feed.advance().len(),
        1,
        "[0, 60 s) fired, and is purged at 120 s"
    );

    let Outcome::TooLate(late) = feed.event(20, 3) else {
        panic!("expected too late");
    };
    assert_eq!(late.window_end, 60 * SEC);
    assert_eq!(late.watermark, 130 * SEC);
    let reason = late.to_string();
    assert!(reason.contains("1970-01-01T00:00:20Z"), "{reason}");
    assert!(reason.contains("allowed_lateness is 1m"), "{reason}");
    assert!(feed.advance().is_empty(), "nothing is re-emitted");
    assert_eq!(feed.stage.counters().too_late, 1);
    assert_eq!(feed.stage.offsets()[&0], 3, "its offset is consumed");
    assert_eq!(
        feed.stage.spec().late_stream().as_deref(),
        Some("payment_late")
    );
}

#[test]
fn a_late_event_in_a_sliding_window_revises_only_the_windows_still_within_lateness() {
    let window = WindowSpec::Sliding {
        size: HumanDuration::from_mins(2),
        slide: HumanDuration::from_mins(1),
    };
    let mut feed = Feeder::new(FeatureStage::new(spec(window, 0, 30), [0], 0).unwrap());
    feed.event(70, 1);
    feed.event(200, 1);
    let fired: Vec<_> = feed
        .advance()
        .iter()
        .map(|r| (r.window_start / SEC, r.window_end / SEC))
        .collect();
    assert_eq!(fired, [(0, 120), (60, 180)]);

    // At 200 s, [0, 120 s) is past 120 s + 30 s; [60 s, 180 s) is within lateness.
    assert_eq!(feed.event(90, 2), Outcome::Late);
    let revised = feed.advance();
    assert_eq!(revised.len(), 1);
    assert_eq!(
        (
            revised[0].window_start,
            revised[0].window_end,
            revised[0].revision
        ),
        (60 * SEC, 180 * SEC, 2)
    );
    assert_eq!(revised[0].values["spent"], json!(3));
}

#[test]
fn a_late_event_that_bridges_two_sessions_reemits_them_merged_as_the_next_revision() {
    let window = WindowSpec::Session {
        gap: HumanDuration::from_secs(10),
    };
    let mut feed = Feeder::new(FeatureStage::new(spec(window, 0, 60), [0], 0).unwrap());
    feed.event(0, 1);
    feed.event(15, 2);
    feed.event(40, 4);
    let first: Vec<_> = feed
        .advance()
        .iter()
        .map(|r| (r.window_start / SEC, r.window_end / SEC, r.revision))
        .collect();
    assert_eq!(first, [(0, 10, 1), (15, 25, 1)]);

    assert_eq!(feed.event(8, 8), Outcome::Late);
    let merged = feed.advance();
    assert_eq!(merged.len(), 1);
    assert_eq!(
        (
            merged[0].window_start,
            merged[0].window_end,
            merged[0].revision
        ),
        (0, 25 * SEC, 2)
    );
    assert_eq!(merged[0].values["payments"], json!(3));
    assert_eq!(merged[0].values["spent"], json!(11));
}
