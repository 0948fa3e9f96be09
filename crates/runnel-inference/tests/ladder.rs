//! The scorer with a model a test makes slow or failing: timeouts and failures are answered
//! from the cache, then the fallback rule, within the deadline; the breaker opens, half-opens
//! and closes as configured; every request is answered and the counts add up.
//!
//! Tokio's time is paused (sleeps end when the runtime is idle, so a "slow" model costs no
//! wall time) and the breaker runs on a manual clock the test moves.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use runnel_clock::{Clock, ManualClock};
use runnel_inference::{
    BreakerConfig, BreakerState, DegradedReason, FallbackRule, ModelSlot, Scorer, ScorerOptions,
    Source,
};
use support::flaky::{FlakyModel, Mode};

const START: u64 = 1_767_225_600_000_000;

fn options() -> ScorerOptions {
    ScorerOptions {
        max_batch: 8,
        max_wait: Duration::from_millis(1),
        max_concurrent_calls: 2,
        timeout: Duration::from_millis(20),
        deadline: Duration::from_millis(50),
        cache_ttl: Duration::from_secs(60),
        cache_capacity: 1000,
        breaker: BreakerConfig {
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration: Duration::from_millis(15),
            sliding_window: 4,
            minimum_calls: 4,
            open_duration: Duration::from_secs(1),
            permitted_calls_in_half_open: 2,
            max_wait_in_half_open: Duration::from_secs(5),
        },
    }
}

fn fallback() -> FallbackRule {
    let inputs = vec!["amount".to_string(), "orders".to_string()];
    let outputs = vec!["legit".to_string(), "fraud".to_string()];
    let rules: BTreeMap<String, String> = [
        (
            "legit".to_string(),
            "1 - if(amount > 500.0, 0.5, 0.02)".to_string(),
        ),
        (
            "fraud".to_string(),
            "if(amount > 500.0, 0.5, 0.02)".to_string(),
        ),
    ]
    .into();
    FallbackRule::new(&inputs, &outputs, &rules).unwrap()
}

fn scorer(model: Arc<FlakyModel>, clock: &ManualClock, options: ScorerOptions) -> Scorer {
    Scorer::start(ModelSlot::new(model), fallback(), options, clock.shared())
}

#[tokio::test(start_paused = true)]
async fn timeouts_go_to_cache_then_fallback_and_the_breaker_opens_half_opens_and_closes() {
    let clock = ManualClock::new(START);
    let model = FlakyModel::new("fraud", "v1", 2);
    let scorer = scorer(model.clone(), &clock, options());
    let mut transitions = scorer.transitions();
    let deadline = scorer.options().deadline;
    let mut answered = 0u64;

    // Healthy: the model answers and its predictions are cached.
    for (n, entity) in ["c0", "c1", "c2"].iter().enumerate() {
        let row = vec![100.0 * n as f64, 1.0];
        let p = scorer.score(Some(entity), row.clone()).await.unwrap();
        answered += 1;
        assert_eq!((p.source, &p.degraded), (Source::Model, &None));
        assert_eq!(p.outputs, FlakyModel::expected(&row));
        assert_eq!(p.version, "v1");
    }

    // Slow beyond the timeout: a known entity gets its last good prediction, a new one the
    // fallback; both within the deadline, saying why.
    model.set(Mode::Slow(Duration::from_millis(200)));
    let p = scorer.score(Some("c1"), vec![999.0, 9.0]).await.unwrap();
    answered += 1;
    assert_eq!(p.source, Source::Cache);
    assert_eq!(p.degraded, Some(DegradedReason::Timeout));
    assert_eq!(
        p.outputs,
        FlakyModel::expected(&[100.0, 1.0]),
        "c1's last good prediction"
    );
    assert!(p.latency <= deadline, "{:?}", p.latency);
    let p = scorer.score(Some("new"), vec![900.0, 1.0]).await.unwrap();
    answered += 1;
    assert_eq!(
        (p.source, p.version.as_str()),
        (Source::Fallback, "fallback")
    );
    assert_eq!(p.outputs, [0.5, 0.5]);
    assert_eq!(p.degraded, Some(DegradedReason::Timeout));
    assert!(p.latency <= deadline);
    // 3 good and 2 timed out: the last 4 calls are 50% failures, and 4 is the minimum.
    assert_eq!(scorer.breaker_state(), BreakerState::Open);
    let opened = transitions.recv().await.unwrap();
    assert_eq!(
        (opened.from, opened.to),
        (BreakerState::Closed, BreakerState::Open)
    );
    assert!(opened.reason.contains("50% failed"), "{}", opened.reason);

    // Open: no call reaches the model; answers come from the ladder at once.
    let calls = model.calls.load(Ordering::SeqCst);
    let p = scorer.score(Some("c0"), vec![0.0, 1.0]).await.unwrap();
    answered += 1;
    assert_eq!(
        (p.source, p.degraded),
        (Source::Cache, Some(DegradedReason::CircuitOpen))
    );
    assert_eq!(p.latency, Duration::ZERO, "not even the batching wait");
    let p = scorer.score(None, vec![10.0, 1.0]).await.unwrap();
    answered += 1;
    assert_eq!(
        (p.source, p.outputs.clone()),
        (Source::Fallback, vec![0.98, 0.02])
    );
    assert_eq!(model.calls.load(Ordering::SeqCst), calls);

    // The open duration passes on the injected clock; the model is well again: two probes
    // close the breaker.
    model.set(Mode::Healthy);
    clock.advance(Duration::from_secs(1));
    for entity in ["c0", "c1"] {
        let p = scorer.score(Some(entity), vec![50.0, 2.0]).await.unwrap();
        answered += 1;
        assert_eq!(p.source, Source::Model);
    }
    let half = transitions.recv().await.unwrap();
    assert_eq!(
        (half.from, half.to),
        (BreakerState::Open, BreakerState::HalfOpen)
    );
    let closed = transitions.recv().await.unwrap();
    assert_eq!(
        (closed.from, closed.to),
        (BreakerState::HalfOpen, BreakerState::Closed)
    );
    assert_eq!(scorer.breaker_state(), BreakerState::Closed);
    // The probes refreshed the cache.
    assert_eq!(
        scorer
            .cache()
            .get("c0", clock.now_micros())
            .unwrap()
            .outputs,
        FlakyModel::expected(&[50.0, 2.0])
    );

    let counts = scorer.counts();
    assert_eq!(
        counts.model + counts.cache + counts.fallback,
        answered,
        "{counts:?}"
    );
    assert_eq!((counts.model, counts.cache, counts.fallback), (5, 2, 2));
    assert_eq!(counts.failed_calls, 2);
}

#[tokio::test(start_paused = true)]
async fn failures_reopen_from_half_open_and_a_cached_prediction_expires() {
    let clock = ManualClock::new(START);
    let model = FlakyModel::new("fraud", "v1", 2);
    let scorer = scorer(model.clone(), &clock, options());
    scorer.score(Some("c0"), vec![1.0, 1.0]).await.unwrap();
    model.set(Mode::Failing);
    // 1 good and 3 failed calls: the window of 4 is full at 75% failures.
    for _ in 0..3 {
        let p = scorer.score(Some("c0"), vec![1.0, 1.0]).await.unwrap();
        assert_eq!(p.source, Source::Cache);
        assert!(
            matches!(&p.degraded, Some(DegradedReason::ModelError(e)) if e.contains("the test made it fail")),
            "{:?}",
            p.degraded
        );
    }
    assert_eq!(scorer.breaker_state(), BreakerState::Open);
    clock.advance(Duration::from_secs(1));
    assert_eq!(scorer.breaker_state(), BreakerState::HalfOpen);
    scorer.score(Some("c0"), vec![1.0, 1.0]).await.unwrap();
    assert_eq!(
        scorer.breaker_state(),
        BreakerState::HalfOpen,
        "one of two probes answered"
    );
    scorer.score(Some("c0"), vec![1.0, 1.0]).await.unwrap();
    assert_eq!(
        scorer.breaker_state(),
        BreakerState::Open,
        "failed probes reopen"
    );
    // Past the cache TTL, the fallback answers.
    clock.advance(Duration::from_secs(61));
    assert_eq!(scorer.breaker_state(), BreakerState::HalfOpen);
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        scorer.breaker_state(),
        BreakerState::Open,
        "half-open is bounded in time"
    );
    let p = scorer.score(Some("c0"), vec![1.0, 1.0]).await.unwrap();
    assert_eq!(
        (p.source, p.degraded),
        (Source::Fallback, Some(DegradedReason::CircuitOpen))
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_the_wait_even_when_the_timeout_is_longer() {
    let clock = ManualClock::new(START);
    let model = FlakyModel::new("fraud", "v1", 2);
    let options = ScorerOptions {
        timeout: Duration::from_millis(500),
        deadline: Duration::from_millis(30),
        ..options()
    };
    let scorer = scorer(model.clone(), &clock, options);
    model.set(Mode::Slow(Duration::from_millis(300)));
    let p = scorer.score(Some("x"), vec![1.0, 1.0]).await.unwrap();
    assert_eq!(
        (p.source, p.degraded),
        (Source::Fallback, Some(DegradedReason::Deadline))
    );
    assert!(p.latency <= Duration::from_millis(30), "{:?}", p.latency);
    // The call itself goes on and is judged: 300ms is slow.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(scorer.counts().calls, 1);
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_are_batched_up_to_max_batch() {
    let clock = ManualClock::new(START);
    let model = FlakyModel::new("fraud", "v1", 2);
    model.set(Mode::Slow(Duration::from_millis(5)));
    let scorer = scorer(model.clone(), &clock, options());
    let mut tasks = Vec::new();
    for n in 0..64 {
        let scorer = scorer.clone();
        tasks.push(tokio::spawn(async move {
            let row = vec![n as f64, 1.0];
            let p = scorer
                .score(Some(&format!("c{n}")), row.clone())
                .await
                .unwrap();
            assert_eq!(
                (p.source, p.outputs),
                (Source::Model, FlakyModel::expected(&row))
            );
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(model.rows.load(Ordering::SeqCst), 64);
    assert_eq!(model.largest_batch.load(Ordering::SeqCst), 8, "max_batch");
    assert_eq!(
        model.calls.load(Ordering::SeqCst),
        8,
        "64 rows in full batches of 8"
    );
    assert_eq!(scorer.counts().model, 64);
}

#[tokio::test(start_paused = true)]
async fn a_reload_swaps_versions_between_batches_and_refuses_another_shape() {
    let clock = ManualClock::new(START);
    let v1 = FlakyModel::new("fraud", "v1", 2);
    v1.set(Mode::Slow(Duration::from_millis(10)));
    let scorer = scorer(v1.clone(), &clock, options());
    let in_flight = {
        let scorer = scorer.clone();
        tokio::spawn(async move { scorer.score(Some("a"), vec![1.0, 2.0]).await.unwrap() })
    };
    // Let the batch reach v1 (after the 1 ms batching wait).
    tokio::time::sleep(Duration::from_millis(3)).await;
    assert_eq!(v1.calls.load(Ordering::SeqCst), 1);
    let v2 = FlakyModel::new("fraud", "v2", 2);
    let old = scorer.slot().swap(v2.clone()).unwrap();
    assert_eq!(old.info().version, "v1");
    let first = in_flight.await.unwrap();
    assert_eq!(
        (first.source, first.version.as_str()),
        (Source::Model, "v1"),
        "finished on v1"
    );
    let next = scorer.score(Some("b"), vec![1.0, 2.0]).await.unwrap();
    assert_eq!(next.version, "v2");
    assert_eq!(
        (
            v1.calls.load(Ordering::SeqCst),
            v2.calls.load(Ordering::SeqCst)
        ),
        (1, 1),
        "each scored once"
    );

    let wider = FlakyModel::new("fraud", "v3", 3);
    let err = scorer.slot().swap(wider).unwrap_err();
    assert_eq!(err.reason, "it takes 3 inputs, not 2");
    assert_eq!(
        scorer.slot().current().info().version,
        "v2",
        "still serving v2"
    );
}
