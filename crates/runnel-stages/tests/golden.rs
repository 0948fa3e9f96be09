//! Golden tests: on random inputs, for every window kind and every aggregate, the stage's
//! final results equal a naive recomputation of every window from all of its events (exact
//! aggregates exactly, sketches within their stated bounds); and the arrival order within the
//! out-of-orderness bound does not change them.

mod support;

use proptest::prelude::*;
use runnel_stages::{Outcome, WindowSpec};
use support::*;

fn no_event_was_too_late(outcomes: &[Outcome]) -> bool {
    outcomes.iter().all(|o| !matches!(o, Outcome::TooLate(_)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_window_kind_agrees_with_the_reference_when_events_stay_within_the_bound(
        window in any_window(),
        inputs in inputs(),
        delays in prop::collection::vec(0..=5 * SEC, 1..50),
        advance_every in 1usize..40,
    ) {
        let spec = spec(window, 5 * SEC, 0);
        let events = arrival_order(&inputs, &delays);
        let run = run(&spec, &events, |i| i % advance_every == 0);
        prop_assert!(no_event_was_too_late(&run.outcomes));
        if !matches!(window, WindowSpec::Session { .. }) {
            prop_assert!(run.outcomes.iter().all(|o| *o == Outcome::Accepted));
            prop_assert!(run.results.iter().all(|r| r.revision == 1), "each window fires once");
        }
        assert_agrees_with_reference(&spec, &with_offsets(&events), &run.results);
    }

    #[test]
    fn late_events_within_allowed_lateness_revise_every_window_to_the_reference(
        window in any_window(),
        inputs in inputs(),
        delays in prop::collection::vec(0..=120 * SEC, 1..50),
        advance_every in 1usize..20,
    ) {
        let spec = spec(window, 5 * SEC, 86_400 * SEC);
        let events = arrival_order(&inputs, &delays);
        let run = run(&spec, &events, |i| i % advance_every == 0);
        prop_assert!(no_event_was_too_late(&run.outcomes));
        assert_agrees_with_reference(&spec, &with_offsets(&events), &run.results);
    }

    #[test]
    fn any_arrival_order_within_the_bound_gives_the_same_final_results(
        window in any_window(),
        inputs in integer_inputs(),
        delays_a in prop::collection::vec(0..=5 * SEC, 1..50),
        delays_b in prop::collection::vec(0..=5 * SEC, 1..50),
        advance_a in 1usize..40,
        advance_b in 1usize..40,
    ) {
        let spec = spec(window, 5 * SEC, 0);
        let a = run(&spec, &arrival_order(&inputs, &delays_a), |i| i % advance_a == 0);
        let b = run(&spec, &arrival_order(&inputs, &delays_b), |i| i % advance_b == 0);
        let values = |run: &Run| -> Vec<_> {
            final_results(&run.results)
                .into_iter()
                .map(|(at, result)| (at, result.values))
                .collect()
        };
        prop_assert_eq!(values(&a), values(&b));
    }
}
