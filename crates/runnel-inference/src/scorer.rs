//! One model behind its batcher, breaker and degradation ladder: every request gets an answer
//! within its deadline.
//!
//! - **Dynamic batching** (Triton's rule): the batcher takes a free call slot (at most
//!   `max_concurrent_calls` batches in flight), then the first waiting row, then gathers rows
//!   until it has `max_batch` or `max_wait` has passed since the first, whichever comes
//!   first. While every slot is busy rows queue, so batches grow with load and latency stays
//!   bounded.
//! - **Deadline per request**: `deadline` from when [`Scorer::score`] is called covers the
//!   queueing and batching wait, the model call and the ladder below it. The model's answer
//!   is awaited until the deadline less a small reserve for the ladder; a later answer is not
//!   used for this request (the batch call still completes and is judged by the breaker).
//! - **Model call**: bounded by `timeout`; a call that exceeds it or fails is a failure for
//!   the breaker, a success taking `slow_call_duration` or more a slow call.
//! - **Ladder**: when the model does not answer (timeout, error, breaker open, deadline), the
//!   entity's last good prediction from the [`PredictionCache`] if younger than its TTL, else
//!   the [`FallbackRule`] over the inputs. The prediction says which step answered and why.
//!
//! Every prediction is counted in `runnel_predictions_total{model, outcome}` (outcome =
//! `model`, `cache` or `fallback`) and in [`Scorer::counts`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runnel_clock::SharedClock;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio::time::Instant;

use crate::breaker::{
    BreakerConfig, BreakerState, CallOutcome, CircuitBreaker, Permit, Transition,
};
use crate::cache::PredictionCache;
use crate::fallback::FallbackRule;
use crate::model::{ModelError, ModelSlot};

/// How a scorer batches, bounds and degrades.
#[derive(Debug, Clone, PartialEq)]
pub struct ScorerOptions {
    /// Most rows in one model call.
    pub max_batch: usize,
    /// Longest wait for more rows after the first of a batch.
    pub max_wait: Duration,
    /// Most model calls in flight at once.
    pub max_concurrent_calls: usize,
    /// Longest a model call may take; then it is a failure.
    pub timeout: Duration,
    /// Longest from asking to answering, whatever answers.
    pub deadline: Duration,
    /// How long a cached prediction may be served.
    pub cache_ttl: Duration,
    /// Most entities in the prediction cache (0: no cache).
    pub cache_capacity: usize,
    /// The circuit breaker.
    pub breaker: BreakerConfig,
}

impl Default for ScorerOptions {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_wait: Duration::from_millis(2),
            max_concurrent_calls: 4,
            timeout: Duration::from_millis(50),
            deadline: Duration::from_millis(100),
            cache_ttl: Duration::from_secs(600),
            cache_capacity: 100_000,
            breaker: BreakerConfig::default(),
        }
    }
}

/// Which step of the ladder answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The model.
    Model,
    /// The entity's last good prediction.
    Cache,
    /// The fallback rule.
    Fallback,
}

impl Source {
    /// The `outcome` label: `model`, `cache` or `fallback`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Cache => "cache",
            Self::Fallback => "fallback",
        }
    }
}

/// Why the model did not answer a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum DegradedReason {
    /// The model call exceeded `timeout`.
    Timeout,
    /// The model call failed.
    ModelError(String),
    /// The breaker was open: the model was not called.
    CircuitOpen,
    /// The request's deadline came before the model's answer.
    Deadline,
}

impl DegradedReason {
    /// `timeout`, `model_error`, `circuit_open` or `deadline`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::ModelError(_) => "model_error",
            Self::CircuitOpen => "circuit_open",
            Self::Deadline => "deadline",
        }
    }
}

impl fmt::Display for DegradedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("timeout: the model call took longer than its timeout"),
            Self::ModelError(e) => write!(f, "model_error: {e}"),
            Self::CircuitOpen => f.write_str("circuit_open: the model's circuit breaker is open"),
            Self::Deadline => {
                f.write_str("deadline: the event's deadline came before the model answered")
            }
        }
    }
}

/// An answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// One number per model output.
    pub outputs: Vec<f64>,
    /// Which step answered.
    pub source: Source,
    /// Why not the model, when not the model.
    pub degraded: Option<DegradedReason>,
    /// The model version that computed the outputs (`fallback` for the rule).
    pub version: String,
    /// From asking to answering.
    pub latency: Duration,
}

/// Why a request got no answer at all: only a fallback rule that fails on these inputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model `{model}`: the fallback for `{output}` failed: {reason}")]
pub struct ScoreError {
    /// The model.
    pub model: String,
    /// The output whose rule failed.
    pub output: String,
    /// Why.
    pub reason: String,
}

/// Running totals of a scorer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScorerCounts {
    /// Predictions answered by the model.
    pub model: u64,
    /// Predictions answered from the cache.
    pub cache: u64,
    /// Predictions answered by the fallback rule.
    pub fallback: u64,
    /// Model calls made (batches).
    pub calls: u64,
    /// Model calls that failed or timed out.
    pub failed_calls: u64,
    /// Rows sent to the model.
    pub rows: u64,
}

#[derive(Debug, Default)]
struct Counters {
    model: AtomicU64,
    cache: AtomicU64,
    fallback: AtomicU64,
    calls: AtomicU64,
    failed_calls: AtomicU64,
    rows: AtomicU64,
}

enum CallError {
    Timeout,
    Failed(ModelError),
    Open,
}

type Answer = Result<(Vec<f64>, String), CallError>;

struct Request {
    row: Vec<f64>,
    reply: oneshot::Sender<Answer>,
}

/// What the scorer and its batcher share.
struct Shared {
    name: String,
    slot: ModelSlot,
    options: ScorerOptions,
    breaker: Mutex<CircuitBreaker>,
    clock: SharedClock,
    transitions: broadcast::Sender<Transition>,
    counters: Counters,
}

impl Shared {
    fn publish(&self, transitions: Vec<Transition>) {
        for transition in transitions {
            tracing::info!(
                model = self.name.as_str(),
                from = transition.from.as_str(),
                to = transition.to.as_str(),
                reason = transition.reason.as_str(),
                "model circuit breaker changed state"
            );
            metrics::counter!(
                "runnel_model_circuit_transitions_total",
                "model" => self.name.clone(),
                "from" => transition.from.as_str(),
                "to" => transition.to.as_str()
            )
            .increment(1);
            metrics::gauge!("runnel_model_circuit_state", "model" => self.name.clone())
                .set(transition.to.gauge());
            // No receiver is fine: the transition is counted and logged.
            let _ = self.transitions.send(transition);
        }
    }

    fn breaker_state(&self) -> BreakerState {
        let now = self.clock.now_micros();
        let (state, transitions) = self
            .breaker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .state(now);
        self.publish(transitions);
        state
    }

    fn try_acquire(&self) -> Option<Permit> {
        let now = self.clock.now_micros();
        let (permit, transitions) = self
            .breaker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_acquire(now);
        self.publish(transitions);
        permit
    }

    fn record(&self, permit: Permit, outcome: CallOutcome) {
        let now = self.clock.now_micros();
        let transitions = self
            .breaker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(permit, outcome, now);
        self.publish(transitions);
    }
}

/// A model with its batcher, breaker, cache and fallback. Cheap to clone; the batcher stops
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Scorer {
    shared: Arc<Shared>,
    requests: mpsc::Sender<Request>,
    cache: Arc<PredictionCache>,
    fallback: Arc<FallbackRule>,
}

impl fmt::Debug for Scorer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scorer")
            .field("model", &self.shared.name)
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl Scorer {
    /// Starts the batcher of the model in `slot` (on the current tokio runtime).
    pub fn start(
        slot: ModelSlot,
        fallback: FallbackRule,
        options: ScorerOptions,
        clock: SharedClock,
    ) -> Self {
        let name = slot.current().info().name.clone();
        let breaker = CircuitBreaker::new(options.breaker.clone(), clock.now_micros());
        let (transitions, _) = broadcast::channel(64);
        let (requests, queue) =
            mpsc::channel(options.max_batch.max(1) * options.max_concurrent_calls.max(1) * 4);
        let cache = Arc::new(PredictionCache::new(
            options.cache_ttl,
            options.cache_capacity,
        ));
        let shared = Arc::new(Shared {
            name,
            slot,
            options,
            breaker: Mutex::new(breaker),
            clock,
            transitions,
            counters: Counters::default(),
        });
        metrics::gauge!("runnel_model_circuit_state", "model" => shared.name.clone())
            .set(BreakerState::Closed.gauge());
        tokio::spawn(batch_loop(shared.clone(), queue));
        Self {
            shared,
            requests,
            cache,
            fallback: Arc::new(fallback),
        }
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The model slot (for a hot reload).
    pub fn slot(&self) -> &ModelSlot {
        &self.shared.slot
    }

    /// The settings.
    pub fn options(&self) -> &ScorerOptions {
        &self.shared.options
    }

    /// The breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.shared.breaker_state()
    }

    /// Transitions of the breaker from now on.
    pub fn transitions(&self) -> broadcast::Receiver<Transition> {
        self.shared.transitions.subscribe()
    }

    /// The prediction cache.
    pub fn cache(&self) -> &PredictionCache {
        &self.cache
    }

    /// Running totals.
    pub fn counts(&self) -> ScorerCounts {
        let c = &self.shared.counters;
        ScorerCounts {
            model: c.model.load(Ordering::Relaxed),
            cache: c.cache.load(Ordering::Relaxed),
            fallback: c.fallback.load(Ordering::Relaxed),
            calls: c.calls.load(Ordering::Relaxed),
            failed_calls: c.failed_calls.load(Ordering::Relaxed),
            rows: c.rows.load(Ordering::Relaxed),
        }
    }

    /// Answers `row` (the model's inputs in order) for entity `key` (the cache's key; `None`:
    /// no cache step) within the deadline.
    pub async fn score(&self, key: Option<&str>, row: Vec<f64>) -> Result<Prediction, ScoreError> {
        let started = Instant::now();
        let deadline = started + self.shared.options.deadline;
        // The ladder below the model takes microseconds; keep a little of the deadline for it.
        let reserve = (self.shared.options.deadline / 20).min(Duration::from_millis(1));
        let model_until = deadline.checked_sub(reserve).unwrap_or(deadline);
        let reason = if self.shared.breaker_state() == BreakerState::Open {
            DegradedReason::CircuitOpen
        } else {
            match self.ask_model(row.clone(), model_until).await {
                Ok((outputs, version)) => {
                    if let Some(key) = key {
                        self.cache
                            .put(key, &outputs, &version, self.shared.clock.now_micros());
                    }
                    return Ok(self.answer(outputs, Source::Model, None, version, started));
                }
                Err(reason) => reason,
            }
        };
        if let Some(cached) = key.and_then(|k| self.cache.get(k, self.shared.clock.now_micros())) {
            return Ok(self.answer(
                cached.outputs,
                Source::Cache,
                Some(reason),
                cached.version,
                started,
            ));
        }
        let outputs = self
            .fallback
            .evaluate(&row)
            .map_err(|(output, reason)| ScoreError {
                model: self.shared.name.clone(),
                output,
                reason,
            })?;
        Ok(self.answer(
            outputs,
            Source::Fallback,
            Some(reason),
            "fallback".to_string(),
            started,
        ))
    }

    /// Asks the model alone, with no cache or fallback below it and without touching the
    /// cache, within the deadline: re-scoring what the ladder answered. `None` while the
    /// breaker is open or the model does not answer. Counted as a model call, not as a
    /// prediction.
    pub async fn model_only(&self, row: Vec<f64>) -> Option<(Vec<f64>, String)> {
        if self.shared.breaker_state() == BreakerState::Open {
            return None;
        }
        let until = Instant::now() + self.shared.options.deadline;
        self.ask_model(row, until).await.ok()
    }

    async fn ask_model(
        &self,
        row: Vec<f64>,
        until: Instant,
    ) -> Result<(Vec<f64>, String), DegradedReason> {
        let (reply, answer) = oneshot::channel();
        let request = Request { row, reply };
        match tokio::time::timeout_at(until, self.requests.send(request)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(DegradedReason::ModelError("the batcher stopped".into())),
            Err(_) => return Err(DegradedReason::Deadline),
        }
        match tokio::time::timeout_at(until, answer).await {
            Ok(Ok(Ok(answer))) => Ok(answer),
            Ok(Ok(Err(CallError::Timeout))) => Err(DegradedReason::Timeout),
            Ok(Ok(Err(CallError::Failed(e)))) => Err(DegradedReason::ModelError(e.to_string())),
            Ok(Ok(Err(CallError::Open))) => Err(DegradedReason::CircuitOpen),
            Ok(Err(_)) => Err(DegradedReason::ModelError("the batcher stopped".into())),
            Err(_) => Err(DegradedReason::Deadline),
        }
    }

    fn answer(
        &self,
        outputs: Vec<f64>,
        source: Source,
        degraded: Option<DegradedReason>,
        version: String,
        started: Instant,
    ) -> Prediction {
        let counter = match source {
            Source::Model => &self.shared.counters.model,
            Source::Cache => &self.shared.counters.cache,
            Source::Fallback => &self.shared.counters.fallback,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(
            "runnel_predictions_total",
            "model" => self.shared.name.clone(),
            "outcome" => source.as_str()
        )
        .increment(1);
        if let Some(reason) = &degraded {
            metrics::counter!(
                "runnel_predictions_degraded_total",
                "model" => self.shared.name.clone(),
                "reason" => reason.kind()
            )
            .increment(1);
        }
        let latency = started.elapsed();
        metrics::histogram!("runnel_prediction_latency_seconds", "model" => self.shared.name.clone())
            .record(latency.as_secs_f64());
        Prediction {
            outputs,
            source,
            degraded,
            version,
            latency,
        }
    }
}

/// Gathers requests into batches and calls the model, each call in a task of its own.
async fn batch_loop(shared: Arc<Shared>, mut queue: mpsc::Receiver<Request>) {
    let options = shared.options.clone();
    let slots = Arc::new(Semaphore::new(options.max_concurrent_calls.max(1)));
    loop {
        // A free call slot first: while every call is in flight, rows wait in the queue and
        // the next batch is fuller.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut batch = vec![first];
        let until = Instant::now() + options.max_wait;
        while batch.len() < options.max_batch.max(1) {
            match tokio::time::timeout_at(until, queue.recv()).await {
                Ok(Some(request)) => batch.push(request),
                Ok(None) | Err(_) => break,
            }
        }
        // Requests whose deadline passed while they waited are not sent.
        batch.retain(|r| !r.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let Some(permit) = shared.try_acquire() else {
            for request in batch {
                let _ = request.reply.send(Err(CallError::Open));
            }
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let model = shared.slot.current();
            let version = model.info().version.clone();
            let (rows, replies): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|r| (r.row, r.reply)).unzip();
            shared.counters.calls.fetch_add(1, Ordering::Relaxed);
            shared
                .counters
                .rows
                .fetch_add(rows.len() as u64, Ordering::Relaxed);
            metrics::histogram!("runnel_model_batch_size", "model" => shared.name.clone())
                .record(rows.len() as f64);
            let started = Instant::now();
            let result = tokio::time::timeout(shared.options.timeout, model.predict(rows)).await;
            let elapsed = started.elapsed();
            let (outcome, answers) = match result {
                Ok(Ok(outputs)) if outputs.len() == replies.len() => (
                    CallOutcome::Success { elapsed },
                    outputs.into_iter().map(Ok).collect::<Vec<_>>(),
                ),
                Ok(Ok(outputs)) => {
                    let error = ModelError::Protocol {
                        model: shared.name.clone(),
                        reason: format!("{} answers for {} rows", outputs.len(), replies.len()),
                    };
                    (
                        CallOutcome::Failure { elapsed },
                        replies
                            .iter()
                            .map(|_| Err(CallError::Failed(error.clone())))
                            .collect(),
                    )
                }
                Ok(Err(error)) => (
                    CallOutcome::Failure { elapsed },
                    replies
                        .iter()
                        .map(|_| Err(CallError::Failed(error.clone())))
                        .collect(),
                ),
                Err(_) => (
                    CallOutcome::Failure { elapsed },
                    replies.iter().map(|_| Err(CallError::Timeout)).collect(),
                ),
            };
            if matches!(outcome, CallOutcome::Failure { .. }) {
                shared.counters.failed_calls.fetch_add(1, Ordering::Relaxed);
            }
            let result_label = match &answers.first() {
                Some(Ok(_)) | None => "ok",
                Some(Err(CallError::Timeout)) => "timeout",
                Some(Err(_)) => "error",
            };
            metrics::counter!("runnel_model_calls_total", "model" => shared.name.clone(), "result" => result_label)
                .increment(1);
            shared.record(permit, outcome);
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer.map(|outputs| (outputs, version.clone())));
            }
            drop(slot);
        });
    }
}
