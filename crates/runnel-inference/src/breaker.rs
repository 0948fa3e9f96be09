//! A circuit breaker per model, as resilience4j defines one, so its settings mean what users
//! of resilience4j expect.
//!
//! - **Closed**: calls go through; the outcomes of the last `sliding_window` calls are kept.
//!   Once at least `minimum_calls` are in the window, the breaker opens when the share of
//!   failures reaches `failure_rate_threshold` or the share of slow calls (taking at least
//!   `slow_call_duration`, failed or not) reaches `slow_call_rate_threshold`. A call that
//!   times out is a failure.
//! - **Open**: no call is permitted (the ladder answers) until `open_duration` has passed;
//!   then half-open.
//! - **Half-open**: `permitted_calls_in_half_open` calls are let through; when all have
//!   completed the rates over them decide: closed (window emptied) or open again. Half-open
//!   is bounded in time: after `max_wait_in_half_open` without a decision (sparse traffic, a
//!   probe that never comes back) it opens again, so it cannot stay stuck.
//!
//! The breaker is pure: it reads no clock and is told `now` (the injected clock's
//! microseconds) by its caller, so tests move time instead of sleeping. Every transition is
//! returned to the caller, which counts it and publishes it as an event. An outcome of a call
//! permitted in an earlier state (a slow call that returns after the breaker opened) is
//! ignored: each state judges only the calls it let through.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use runnel_clock::Micros;
use serde::{Deserialize, Serialize};

/// A breaker's settings (resilience4j's names, count-based window).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Percentage of failed calls in the window at which the breaker opens (1–100).
    pub failure_rate_threshold: f64,
    /// Percentage of slow calls in the window at which the breaker opens (1–100).
    pub slow_call_rate_threshold: f64,
    /// A call taking at least this long is slow.
    #[serde(with = "crate::spec::duration")]
    pub slow_call_duration: Duration,
    /// How many of the last calls the closed breaker judges.
    pub sliding_window: usize,
    /// Calls needed in the window before rates are judged.
    pub minimum_calls: usize,
    /// How long the breaker stays open before letting probes through.
    #[serde(with = "crate::spec::duration")]
    pub open_duration: Duration,
    /// Calls let through while half-open; their outcomes decide.
    pub permitted_calls_in_half_open: usize,
    /// Longest stay in half-open without a decision; then open again.
    #[serde(with = "crate::spec::duration")]
    pub max_wait_in_half_open: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 80.0,
            slow_call_duration: Duration::from_millis(50),
            sliding_window: 20,
            minimum_calls: 10,
            open_duration: Duration::from_secs(5),
            permitted_calls_in_half_open: 3,
            max_wait_in_half_open: Duration::from_secs(10),
        }
    }
}

impl BreakerConfig {
    /// The problems of these settings, each naming its field.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        for (field, value) in [
            ("failure_rate_threshold", self.failure_rate_threshold),
            ("slow_call_rate_threshold", self.slow_call_rate_threshold),
        ] {
            if !(value > 0.0 && value <= 100.0) {
                problems.push((
                    field,
                    format!("must be a percentage above 0 and at most 100, not {value}"),
                ));
            }
        }
        if self.sliding_window == 0 {
            problems.push(("sliding_window", "must be at least 1".to_string()));
        }
        if self.minimum_calls == 0 || self.minimum_calls > self.sliding_window {
            problems.push((
                "minimum_calls",
                format!(
                    "must be between 1 and sliding_window ({})",
                    self.sliding_window
                ),
            ));
        }
        if self.permitted_calls_in_half_open == 0 {
            problems.push((
                "permitted_calls_in_half_open",
                "must be at least 1".to_string(),
            ));
        }
        if self.open_duration.is_zero() {
            problems.push(("open_duration", "must be longer than 0".to_string()));
        }
        if self.max_wait_in_half_open.is_zero() {
            problems.push(("max_wait_in_half_open", "must be longer than 0".to_string()));
        }
        problems
    }
}

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// No calls go through.
    Open,
    /// A few probe calls go through.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// The gauge value of `runnel_model_circuit_state`: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::Open => 1.0,
            Self::HalfOpen => 2.0,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of state, with why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// The state left.
    pub from: BreakerState,
    /// The state entered.
    pub to: BreakerState,
    /// When (µs since the epoch, the injected clock).
    pub at: Micros,
    /// Why, for people: the rates that decided, or the time that passed.
    pub reason: String,
}

/// Leave to make one call; give it back with [`CircuitBreaker::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a permitted call must be recorded"]
pub struct Permit {
    generation: u64,
}

/// How a permitted call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The model answered.
    Success {
        /// How long the call took.
        elapsed: Duration,
    },
    /// The model failed or timed out.
    Failure {
        /// How long the call took (the timeout, for a timeout).
        elapsed: Duration,
    },
}

#[derive(Debug, Clone, Copy)]
struct Call {
    failed: bool,
    slow: bool,
}

#[derive(Debug)]
enum State {
    Closed,
    Open,
    HalfOpen { permits_left: usize },
}

/// One model's breaker. Not synchronised: the scorer keeps it behind a mutex.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: State,
    /// Bumped at every transition; permits of an earlier generation are ignored.
    generation: u64,
    /// When the current state was entered.
    since: Micros,
    /// Outcomes judged by the current state (the sliding window, or the half-open probes).
    calls: VecDeque<Call>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig, now: Micros) -> Self {
        Self {
            config,
            state: State::Closed,
            generation: 0,
            since: now,
            calls: VecDeque::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The state at `now`, after any transition that time alone causes (open → half-open
    /// when `open_duration` has passed, half-open → open after `max_wait_in_half_open`).
    pub fn state(&mut self, now: Micros) -> (BreakerState, Vec<Transition>) {
        let mut transitions = Vec::new();
        if matches!(self.state, State::Open)
            && now >= self.since.saturating_add(micros(self.config.open_duration))
        {
            let permits = self.config.permitted_calls_in_half_open;
            transitions.push(self.enter(
                State::HalfOpen {
                    permits_left: permits,
                },
                now,
                format!(
                    "open for {:?}: letting {permits} probe call{} through",
                    self.config.open_duration,
                    if permits == 1 { "" } else { "s" },
                ),
            ));
        }
        if matches!(self.state, State::HalfOpen { .. })
            && now
                >= self
                    .since
                    .saturating_add(micros(self.config.max_wait_in_half_open))
        {
            transitions.push(self.enter(
                State::Open,
                now,
                format!(
                    "half-open for {:?} without a decision ({} of {} probes answered)",
                    self.config.max_wait_in_half_open,
                    self.calls.len(),
                    self.config.permitted_calls_in_half_open
                ),
            ));
        }
        (self.current(), transitions)
    }

    /// Leave for one call, or `None` while open (or half-open with every probe out).
    pub fn try_acquire(&mut self, now: Micros) -> (Option<Permit>, Vec<Transition>) {
        let (_, transitions) = self.state(now);
        let permit = match &mut self.state {
            State::Closed => Some(self.permit()),
            State::Open => None,
            State::HalfOpen { permits_left } if *permits_left > 0 => {
                *permits_left -= 1;
                Some(self.permit())
            }
            State::HalfOpen { .. } => None,
        };
        (permit, transitions)
    }

    /// Records how a permitted call ended; returns the transition it caused, if any.
    pub fn record(&mut self, permit: Permit, outcome: CallOutcome, now: Micros) -> Vec<Transition> {
        let (_, mut transitions) = self.state(now);
        if permit.generation != self.generation {
            return transitions;
        }
        let (failed, elapsed) = match outcome {
            CallOutcome::Success { elapsed } => (false, elapsed),
            CallOutcome::Failure { elapsed } => (true, elapsed),
        };
        let call = Call {
            failed,
            slow: elapsed >= self.config.slow_call_duration,
        };
        match self.state {
            State::Closed => {
                self.calls.push_back(call);
                while self.calls.len() > self.config.sliding_window {
                    self.calls.pop_front();
                }
                if self.calls.len() >= self.config.minimum_calls
                    && let Some(why) = self.exceeded()
                {
                    transitions.push(self.enter(State::Open, now, why));
                }
            }
            State::HalfOpen { .. } => {
                self.calls.push_back(call);
                if self.calls.len() >= self.config.permitted_calls_in_half_open {
                    let (next, why) = match self.exceeded() {
                        Some(why) => (State::Open, format!("probes: {why}")),
                        None => (State::Closed, format!("probes: {}", self.rates_text())),
                    };
                    transitions.push(self.enter(next, now, why));
                }
            }
            State::Open => {}
        }
        transitions
    }

    fn current(&self) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn permit(&self) -> Permit {
        Permit {
            generation: self.generation,
        }
    }

    fn enter(&mut self, state: State, now: Micros, reason: String) -> Transition {
        let from = self.current();
        self.state = state;
        self.generation += 1;
        self.since = now;
        self.calls.clear();
        Transition {
            from,
            to: self.current(),
            at: now,
            reason,
        }
    }

    fn rates(&self) -> (f64, f64) {
        let n = self.calls.len().max(1) as f64;
        let failed = self.calls.iter().filter(|c| c.failed).count() as f64;
        let slow = self.calls.iter().filter(|c| c.slow).count() as f64;
        (100.0 * failed / n, 100.0 * slow / n)
    }

    fn rates_text(&self) -> String {
        let (failure, slow) = self.rates();
        format!(
            "{failure:.0}% failed, {slow:.0}% slow of {} call{}",
            self.calls.len(),
            if self.calls.len() == 1 { "" } else { "s" }
        )
    }

    /// Why the rates over the judged calls open the breaker, if they do.
    fn exceeded(&self) -> Option<String> {
        let (failure, slow) = self.rates();
        if failure >= self.config.failure_rate_threshold {
            Some(format!(
                "{} (failure rate threshold {}%)",
                self.rates_text(),
                self.config.failure_rate_threshold
            ))
        } else if slow >= self.config.slow_call_rate_threshold {
            Some(format!(
                "{} (slow call rate threshold {}% at {:?})",
                self.rates_text(),
                self.config.slow_call_rate_threshold,
                self.config.slow_call_duration
            ))
        } else {
            None
        }
    }
}

fn micros(duration: Duration) -> Micros {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Micros = 1_000;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration: Duration::from_millis(100),
            sliding_window: 4,
            minimum_calls: 4,
            open_duration: Duration::from_secs(1),
            permitted_calls_in_half_open: 2,
            max_wait_in_half_open: Duration::from_secs(3),
        }
    }

    fn ok(ms: u64) -> CallOutcome {
        CallOutcome::Success {
            elapsed: Duration::from_millis(ms),
        }
    }

    fn fail() -> CallOutcome {
        CallOutcome::Failure {
            elapsed: Duration::from_millis(1),
        }
    }

    fn call(b: &mut CircuitBreaker, outcome: CallOutcome, now: Micros) -> Vec<Transition> {
        let (permit, _) = b.try_acquire(now);
        b.record(permit.expect("a permit"), outcome, now)
    }

    #[test]
    fn stays_closed_below_minimum_calls_and_opens_at_the_failure_rate() {
        let mut b = CircuitBreaker::new(config(), 0);
        assert!(call(&mut b, fail(), 0).is_empty());
        assert!(call(&mut b, fail(), 0).is_empty());
        assert!(call(&mut b, ok(1), 0).is_empty(), "3 calls < minimum 4");
        let t = call(&mut b, ok(1), 0);
        assert_eq!(t.len(), 1, "2 of 4 failed = 50%");
        assert_eq!(
            (t[0].from, t[0].to),
            (BreakerState::Closed, BreakerState::Open)
        );
        assert!(t[0].reason.contains("50% failed"), "{}", t[0].reason);
        assert_eq!(b.try_acquire(10 * MS).0, None, "open: no calls");
    }

    #[test]
    fn the_window_slides_so_old_failures_age_out() {
        let mut b = CircuitBreaker::new(config(), 0);
        call(&mut b, fail(), 0);
        for _ in 0..10 {
            assert!(call(&mut b, ok(1), 0).is_empty());
        }
        assert_eq!(b.state(0).0, BreakerState::Closed);
        // 1 failure in the last 4 calls: 25%.
        call(&mut b, fail(), 0);
        assert_eq!(b.state(0).0, BreakerState::Closed);
    }

    #[test]
    fn slow_successes_open_at_the_slow_call_rate() {
        let mut b = CircuitBreaker::new(config(), 0);
        for _ in 0..3 {
            assert!(call(&mut b, ok(100), 0).is_empty());
        }
        let t = call(&mut b, ok(150), 0);
        assert_eq!(t[0].to, BreakerState::Open);
        assert!(t[0].reason.contains("slow"), "{}", t[0].reason);
    }

    #[test]
    fn half_opens_after_the_open_duration_and_closes_on_good_probes() {
        let mut b = CircuitBreaker::new(config(), 0);
        for _ in 0..4 {
            call(&mut b, fail(), 0);
        }
        assert_eq!(b.state(999 * MS).0, BreakerState::Open);
        let (p1, t) = b.try_acquire(1000 * MS);
        assert_eq!(t[0].to, BreakerState::HalfOpen);
        let (p2, _) = b.try_acquire(1000 * MS);
        assert_eq!(b.try_acquire(1000 * MS).0, None, "only 2 probes");
        assert!(b.record(p1.unwrap(), ok(1), 1001 * MS).is_empty());
        let t = b.record(p2.unwrap(), ok(1), 1002 * MS);
        assert_eq!(
            (t[0].from, t[0].to),
            (BreakerState::HalfOpen, BreakerState::Closed)
        );
        // Closed with an empty window: one failure does not reopen it.
        assert!(call(&mut b, fail(), 1003 * MS).is_empty());
    }

    #[test]
    fn a_failed_probe_reopens() {
        let mut b = CircuitBreaker::new(config(), 0);
        for _ in 0..4 {
            call(&mut b, fail(), 0);
        }
        call(&mut b, ok(1), 1000 * MS);
        let t = call(&mut b, fail(), 1000 * MS);
        assert_eq!(t[0].to, BreakerState::Open);
        assert_eq!(
            b.state(1999 * MS).0,
            BreakerState::Open,
            "a fresh open duration"
        );
        assert_eq!(b.state(2000 * MS).0, BreakerState::HalfOpen);
    }

    #[test]
    fn half_open_without_a_decision_opens_again_and_a_late_probe_is_ignored() {
        let mut b = CircuitBreaker::new(config(), 0);
        for _ in 0..4 {
            call(&mut b, fail(), 0);
        }
        let (hung, _) = b.try_acquire(1000 * MS);
        let (t_state, t) = b.state(3999 * MS);
        assert_eq!((t_state, t.len()), (BreakerState::HalfOpen, 0));
        let (state, t) = b.state(4000 * MS);
        assert_eq!(state, BreakerState::Open);
        assert!(
            t[0].reason.contains("without a decision"),
            "{}",
            t[0].reason
        );
        // The hung probe comes back after all: it was permitted by an earlier state.
        assert!(b.record(hung.unwrap(), ok(1), 4001 * MS).is_empty());
        assert_eq!(b.state(4001 * MS).0, BreakerState::Open);
    }

    #[test]
    fn settings_are_checked_by_field() {
        let bad = BreakerConfig {
            failure_rate_threshold: 0.0,
            minimum_calls: 30,
            ..BreakerConfig::default()
        };
        let fields: Vec<_> = bad.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["failure_rate_threshold", "minimum_calls"]);
        assert!(BreakerConfig::default().problems().is_empty());
    }
}
