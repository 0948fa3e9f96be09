//! Idle partitions: a partition that never delivers an event, or whose events are all filtered
//! out, stops holding the stage's watermark back once `idle_timeout` of wall-clock time has
//! passed — time given to `advance`, never slept.

use runnel_stages::{
    AggregateKind, AggregateSpec, FeatureSpec, FeatureStage, HumanDuration, Outcome, Record,
    WindowSpec,
};

const SEC: i64 = 1_000_000;
const NOW_SEC: u64 = 1_000_000;

fn stage(partitions: &[u32]) -> FeatureStage {
    let spec = FeatureSpec {
        name: "spend".into(),
        input: "payment.charged".into(),
        key: Default::default(),
        time: Default::default(),
        window: WindowSpec::Tumbling {
            size: HumanDuration::from_mins(1),
        },
        max_out_of_orderness: HumanDuration::ZERO,
        allowed_lateness: HumanDuration::ZERO,
        idle_timeout: HumanDuration::from_secs(30),
        aggregates: vec![AggregateSpec::new("payments", AggregateKind::Count, None)],
        output: "feature.computed".parse().unwrap(),
        late_stream: None,
    };
    FeatureStage::new(spec, partitions.iter().copied(), 0).unwrap()
}

fn event(secs: i64) -> Record {
    Record {
        key: "c1".into(),
        event_time: secs * SEC,
        values: vec![],
        correlation: None,
    }
}

#[test]
fn a_partition_that_never_received_an_event_stops_holding_the_watermark_after_idle_timeout() {
    let mut stage = stage(&[0, 1]);
    stage.process(0, 0, &event(10)).unwrap();
    stage.process(0, 1, &event(100)).unwrap();
    assert!(stage.advance(10 * NOW_SEC).is_empty());
    assert_eq!(stage.watermark(), None, "partition 1 holds it back");
    assert!(!stage.watermarks()[1].idle);

    let results = stage.advance(30 * NOW_SEC);
    assert_eq!(
        stage.watermark(),
        Some(100 * SEC),
        "30 s after the start, 1 is idle"
    );
    assert_eq!(results.len(), 1, "[0, 60 s) fires");
    let shown = stage.watermarks();
    assert_eq!(shown[0].watermark, Some(100 * SEC));
    assert!(!shown[0].idle && shown[1].idle);
    assert_eq!(shown[1].max_event_time, None);
}

#[test]
fn a_partition_whose_events_are_all_filtered_out_stops_holding_the_watermark_after_idle_timeout() {
    let mut stage = stage(&[0, 1]);
    stage.process(0, 0, &event(10)).unwrap();
    stage.process(0, 1, &event(100)).unwrap();
    for offset in 0..5 {
        // Events of other types on partition 1, reported without a time.
        stage.skip(1, offset, None);
        assert!(stage.advance((offset + 1) * 5 * NOW_SEC).is_empty());
    }
    assert_eq!(
        stage.watermark(),
        None,
        "25 s: partition 1 still holds it back"
    );
    assert_eq!(stage.advance(30 * NOW_SEC).len(), 1);
    assert_eq!(stage.watermark(), Some(100 * SEC));
    assert_eq!(
        stage.offsets()[&1],
        5,
        "the filtered events' offsets are consumed"
    );
    assert_eq!(stage.counters().skipped, 5);
}

#[test]
fn a_filtered_event_with_a_time_moves_its_partition_watermark() {
    let mut stage = stage(&[0, 1]);
    stage.process(0, 0, &event(10)).unwrap();
    stage.process(0, 1, &event(100)).unwrap();
    stage.skip(1, 0, Some(70 * SEC));
    assert_eq!(stage.advance(NOW_SEC).len(), 1);
    assert_eq!(
        stage.watermark(),
        Some(70 * SEC),
        "the slower partition's time"
    );
}

#[test]
fn an_idle_partition_that_wakes_up_behind_the_watermark_delivers_late_events() {
    let mut stage = stage(&[0, 1]);
    stage.process(0, 0, &event(10)).unwrap();
    stage.process(0, 1, &event(100)).unwrap();
    stage.advance(30 * NOW_SEC);
    assert_eq!(stage.watermark(), Some(100 * SEC));

    let outcome = stage.process(1, 0, &event(20)).unwrap();
    assert!(matches!(outcome, Outcome::TooLate(_)), "{outcome:?}");
    stage.process(0, 2, &event(200)).unwrap();
    stage.advance(31 * NOW_SEC);
    assert_eq!(
        stage.watermark(),
        Some(100 * SEC),
        "awake again, partition 1 (at 20 s) holds the watermark, which never goes back"
    );
}

#[test]
fn when_every_partition_is_idle_the_watermark_stays_where_it_is() {
    let mut stage = stage(&[0]);
    stage.process(0, 0, &event(10)).unwrap();
    stage.advance(NOW_SEC);
    assert_eq!(stage.watermark(), Some(10 * SEC));
    assert!(stage.advance(3_600 * NOW_SEC).is_empty());
    assert_eq!(
        stage.watermark(),
        Some(10 * SEC),
        "event time moves with events only"
    );
    assert_eq!(
        stage.finish().len(),
        1,
        "the end of a bounded input fires what is left"
    );
}
