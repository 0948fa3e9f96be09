//! Checkpoints: a stage snapshotted at any point and restored continues exactly as the
//! original would have — same results, same ids, same order, same offsets and watermarks —
//! and a snapshot that does not fit the specification is refused.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use runnel_stages::{FeatureSpec, FeatureStage, HumanDuration, RestoreError, WindowResult};
use support::*;

const NOW_SEC: u64 = 1_000_000;

/// Runs `events`, advancing the clock a second per event and the stage after every
/// `advance_every`; at event `cut` the stage is replaced by one restored from its snapshot.
fn run_with_restart(
    spec: &FeatureSpec,
    events: &[Input],
    advance_every: usize,
    cut: Option<usize>,
) -> (Vec<Vec<WindowResult>>, FeatureStage) {
    let partitions: BTreeSet<u32> = events.iter().map(|e| e.partition).collect();
    let mut stage = FeatureStage::new(spec.clone(), partitions.iter().copied(), 0).unwrap();
    let mut offsets: BTreeMap<u32, u64> = BTreeMap::new();
    let mut batches = Vec::new();
    for (i, event) in events.iter().enumerate() {
        if Some(i) == cut {
            let bytes = stage.snapshot().unwrap();
            stage = FeatureStage::restore(
                spec.clone(),
                &bytes,
                partitions.iter().copied(),
                i as u64 * NOW_SEC,
            )
            .unwrap();
        }
        let offset = offsets.entry(event.partition).or_insert(0);
        stage
            .process(event.partition, *offset, &event.record(format!("corr-{i}")))
            .unwrap();
        *offset += 1;
        if i % advance_every == 0 {
            batches.push(stage.advance((i as u64 + 1) * NOW_SEC));
        }
    }
    batches.push(stage.finish());
    (batches, stage)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_stage_restored_from_a_snapshot_at_any_point_continues_exactly_as_the_original(
        window in any_window(),
        inputs in inputs(),
        delays in prop::collection::vec(0..=90 * SEC, 1..50),
        advance_every in 1usize..20,
        cut in any::<prop::sample::Index>(),
        idle_secs in 0u64..4,
    ) {
        let mut spec = spec(window, 5 * SEC, 30 * SEC);
        spec.idle_timeout = HumanDuration::from_secs(idle_secs);
        let events = arrival_order(&inputs, &delays);
        let cut = cut.index(events.len());
        let (original, a) = run_with_restart(&spec, &events, advance_every, None);
        let (restored, b) = run_with_restart(&spec, &events, advance_every, Some(cut));
        prop_assert_eq!(original, restored);
        prop_assert_eq!(a.offsets(), b.offsets());
        prop_assert_eq!(a.counters(), b.counters());
        prop_assert_eq!(a.watermarks(), b.watermarks());
    }
}

fn small_stage(spec: &FeatureSpec) -> FeatureStage {
    let mut stage = FeatureStage::new(spec.clone(), [0], 0).unwrap();
    let event = Input {
        partition: 0,
        key: "c1".into(),
        time: 10 * SEC,
        amount: runnel_stages::FieldValue::Int(5),
        merchant: runnel_stages::FieldValue::Str("m1".into()),
    };
    stage.process(0, 0, &event.record("corr".into())).unwrap();
    stage
}

#[test]
fn a_snapshot_taken_under_another_window_is_refused() {
    let bytes = small_stage(&spec(tumbling(60), 0, 0)).snapshot().unwrap();
    let err = FeatureStage::restore(spec(tumbling(10), 0, 0), &bytes, [0], 0).unwrap_err();
    assert!(matches!(err, RestoreError::SpecChanged), "{err}");
}

#[test]
fn a_damaged_or_truncated_snapshot_is_refused_without_panicking() {
    let spec = spec(sliding(60, 20), 0, 0);
    let bytes = small_stage(&spec).snapshot().unwrap();
    assert!(FeatureStage::restore(spec.clone(), &bytes, [0], 0).is_ok());
    assert!(matches!(
        FeatureStage::restore(spec.clone(), &[], [0], 0),
        Err(RestoreError::Format { found: 0 })
    ));
    assert!(matches!(
        FeatureStage::restore(spec.clone(), &[9, 1, 2], [0], 0),
        Err(RestoreError::Format { found: 9 })
    ));
    for len in 1..bytes.len() {
        assert!(FeatureStage::restore(spec.clone(), &bytes[..len], [0], 0).is_err());
    }
    for i in 1..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0x5a;
        // Refused, or read as some other consistent state: never a panic.
        let _ = FeatureStage::restore(spec.clone(), &flipped, [0], 0);
    }
}
