//! The orchestrator's core: an instance's state, and what each event does to it.
//!
//! Pure and synchronous: no I/O, no clock reads. The driver (`driver`) loads an instance,
//! calls [`Saga::start`], [`Saga::on_reply`], [`Saga::on_tick`] or [`Saga::resume`] with the
//! time from the injected clock, writes the changed instance, and only then publishes the
//! [`Command`]s the transition returned.
//!
//! # States
//!
//! ```text
//!  Running ──all steps succeeded or skipped──▶ Completed
//!     │
//!     └─a step failed (permanent, retries spent, timed out)─▶ Compensating ──all undone──▶ Compensated
//!                                                               │      ▲
//!                                 a compensation's retries spent│      │ resume (operator)
//!                                                               ▼      │
//!                                                              Stuck ──┘
//! ```
//!
//! # Invariants (checked by the property tests in `tests/machine.rs`)
//!
//! - An instance reaches exactly one of the outcomes `Completed`, `Compensated`, `Stuck`
//!   once nothing is in flight; `Completed` and `Compensated` are final; `Stuck` changes
//!   only by an operator's [`Saga::resume`].
//! - A command's id is a function of (saga, instance, step, do/undo, attempt): issuing it
//!   again after a crash gives the same id; a retry is a new attempt with a new id.
//! - Only steps that succeeded are undone, each once, in the reverse order of the top-level
//!   steps and, within a parallel group, in its `compensation_order`; a group that fails
//!   waits for its members still in flight before undoing anything.
//! - A reply is applied at most once (its id is in the timeline). A success answering an
//!   earlier attempt of a step still waiting is taken (the step was done, or undone); any
//!   other reply to an earlier attempt, or after the outcome, changes nothing.

use runnel_clock::Micros;
use runnel_envelope::{EventId, Source};
use runnel_runtime::FailureClass;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::spec::{Saga, Step};

/// Where an instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SagaState {
    /// Steps are running.
    Running,
    /// A step failed: the steps that succeeded are being undone.
    Compensating,
    /// Outcome: every step succeeded (or was skipped).
    Completed,
    /// Outcome: a step failed and every step that had succeeded was undone.
    Compensated,
    /// Outcome until an operator resumes it: a compensation failed for good.
    Stuck,
}

impl SagaState {
    /// Whether this is an outcome.
    pub fn is_outcome(self) -> bool {
        matches!(self, Self::Completed | Self::Compensated | Self::Stuck)
    }

    /// Its name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Compensating => "compensating",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Stuck => "stuck",
        }
    }
}

impl std::str::FromStr for SagaState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "running" => Self::Running,
            "compensating" => Self::Compensating,
            "completed" => Self::Completed,
            "compensated" => Self::Compensated,
            "stuck" => Self::Stuck,
            other => {
                return Err(format!(
                    "`{other}` is not a saga state (running, compensating, completed, \
                     compensated, stuck)"
                ));
            }
        })
    }
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// Its command is out (or a retry is scheduled).
    Running,
    /// It succeeded; its result is kept.
    Succeeded,
    /// It failed for good (or was cancelled when the saga began compensating).
    Failed,
    /// Its condition was false.
    Skipped,
    /// Its compensation is out (or a retry of it is scheduled).
    Compensating,
    /// It was undone.
    Compensated,
}

/// Whether a command runs a step or undoes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandKind {
    /// The step's command.
    Step,
    /// The step's compensation.
    Compensation,
}

impl CommandKind {
    fn scope(self) -> &'static str {
        match self {
            Self::Step => "do",
            Self::Compensation => "undo",
        }
    }
}

/// A command the driver publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Its event id: derived from (saga, instance's trigger, step, kind, attempt).
    pub id: String,
    /// The step it runs or undoes.
    pub step: String,
    /// Run or undo.
    pub kind: CommandKind,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The command's event type.
    pub event_type: String,
    /// When it was issued.
    pub sent_at: Micros,
    /// When the attempt times out.
    pub deadline: Micros,
    /// The id of the event that led to it (its `causationid`).
    pub caused_by: String,
}

/// One step of an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRun {
    /// The step's name.
    pub name: String,
    /// Where it is.
    pub status: StepStatus,
    /// Attempts of its command so far.
    pub attempts: u32,
    /// Attempts of its compensation so far.
    pub compensation_attempts: u32,
    /// Compensation attempts made before the last operator resume (not counted against
    /// `max_attempts` again).
    #[serde(default)]
    pub compensation_attempts_before_resume: u32,
    /// The command awaiting its reply.
    pub in_flight: Option<Command>,
    /// When the next attempt is due, if one is scheduled.
    pub retry_at: Option<Micros>,
    /// The success reply's data.
    pub result: Option<Value>,
    /// The last failure's reason.
    pub error: Option<String>,
    /// When its first command went out.
    pub started_at: Option<Micros>,
    /// When it succeeded, failed or was skipped.
    pub finished_at: Option<Micros>,
    /// When it was undone.
    pub compensated_at: Option<Micros>,
}

/// What happened, in an instance's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Happened {
    /// The trigger started the instance.
    Started,
    /// A step's condition was false.
    Skipped,
    /// A step's command went out.
    CommandSent,
    /// A step's success reply arrived.
    Succeeded,
    /// A step's failure reply arrived.
    Failed,
    /// An attempt got no reply in time.
    TimedOut,
    /// A retry was scheduled.
    RetryScheduled,
    /// The saga began undoing its steps.
    CompensationStarted,
    /// A compensation's command went out.
    CompensationSent,
    /// A compensation's success reply arrived.
    Compensated,
    /// A compensation's failure reply arrived.
    CompensationFailed,
    /// A reply to an earlier attempt arrived and was not used.
    Stale,
    /// Outcome: completed.
    Completed,
    /// Outcome: compensated.
    SagaCompensated,
    /// Outcome: stuck.
    Stuck,
    /// An operator resumed the stuck instance.
    Resumed,
}

/// One entry of an instance's timeline. The timeline has no cap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// When (µs since the epoch, the injected clock).
    pub at: Micros,
    /// What.
    pub what: Happened,
    /// The step, if about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The attempt, if about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The event's type (command or reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// The event's id (command or reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Why, or what was compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The event that started an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// Its id.
    pub id: EventId,
    /// Its source.
    pub source: Source,
    /// Its type.
    pub event_type: String,
    /// Its data (JSON; `null` for other data).
    pub data: Value,
    /// Its `correlationid`, if it had one (the instance's own events carry the instance id).
    pub correlation_id: Option<String>,
    /// The stream it was read from.
    pub stream: String,
    /// The partition it was read from: the owner of this partition runs the instance's
    /// timers.
    pub partition: u32,
}

/// One saga instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Its id (the `correlationid` of its commands and their replies).
    pub id: String,
    /// The saga type.
    pub saga: String,
    /// Where it is.
    pub state: SagaState,
    /// Why it is compensating or stuck.
    pub reason: Option<String>,
    /// What started it.
    pub trigger: Trigger,
    /// When it started.
    pub started_at: Micros,
    /// When it last changed.
    pub updated_at: Micros,
    /// When it reached its outcome.
    pub ended_at: Option<Micros>,
    /// The top-level step running (an index into the saga's stages).
    pub stage: usize,
    /// Every command step, groups flattened, in declaration order.
    pub steps: Vec<StepRun>,
    /// Steps still to undo, in order (indexes into `steps`), once planned.
    pub compensation_queue: Option<Vec<usize>>,
    /// Everything that happened.
    pub timeline: Vec<TimelineEntry>,
}

/// A reply to one of an instance's commands.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Its event id.
    pub id: String,
    /// Its type.
    pub event_type: String,
    /// Its `causationid`: the command it answers, if the service set it.
    pub causation_id: Option<String>,
    /// Its data (a failure's `class` and `reason` are read from it).
    pub data: Value,
}

/// What a transition did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transition {
    /// Commands to publish, after the instance is written.
    pub commands: Vec<Command>,
    /// Whether the instance changed (and must be written).
    pub changed: bool,
    /// The outcome the instance reached in this transition.
    pub outcome: Option<SagaState>,
    /// The reply was applied before: its commands may not have been published, so the
    /// driver publishes [`Instance::in_flight`] again.
    pub duplicate: bool,
}

/// Why [`Saga::resume`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("saga instance `{id}` is {state}, not stuck: only a stuck instance can be resumed")]
pub struct NotStuck {
    /// The instance.
    pub id: String,
    /// Its state.
    pub state: &'static str,
}

impl Instance {
    /// The commands awaiting replies (published again when an instance is taken over).
    pub fn in_flight(&self) -> Vec<Command> {
        self.steps
            .iter()
            .filter_map(|s| s.in_flight.clone())
            .collect()
    }

    /// The earliest deadline or scheduled retry, if any: when [`Saga::on_tick`] has work.
    pub fn next_wake(&self) -> Option<Micros> {
        self.steps
            .iter()
            .flat_map(|s| [s.in_flight.as_ref().map(|c| c.deadline), s.retry_at])
            .flatten()
            .min()
    }

    /// The step named `name`.
    pub fn step(&self, name: &str) -> Option<&StepRun> {
        self.steps.iter().find(|s| s.name == name)
    }

    fn note(&mut self, at: Micros, what: Happened, step: Option<&str>) -> &mut TimelineEntry {
        self.timeline.push(TimelineEntry {
            at,
            what,
            step: step.map(str::to_string),
            attempt: None,
            event_type: None,
            event_id: None,
            detail: None,
        });
        let last = self.timeline.len() - 1;
        &mut self.timeline[last]
    }

    /// What a `when` reads: `trigger` and the result of every step that succeeded.
    fn context(&self) -> Value {
        let mut map = Map::new();
        map.insert(crate::spec::TRIGGER_ROOT.into(), self.trigger.data.clone());
        for step in &self.steps {
            if let Some(result) = &step.result {
                map.insert(step.name.clone(), result.clone());
            }
        }
        Value::Object(map)
    }
}

/// The failure class and reason a failure reply's data gives (`class` defaults to
/// `permanent`: a failure event is a business answer that retrying cannot change).
fn failure_of(reply: &Reply) -> (FailureClass, String) {
    let class = match reply.data.get("class").and_then(Value::as_str) {
        Some("transient") => FailureClass::Transient,
        Some("service") => FailureClass::Service,
        _ => FailureClass::Permanent,
    };
    let reason = reply
        .data
        .get("reason")
        .and_then(Value::as_str)
        .map_or_else(
            || reply.event_type.clone(),
            |r| format!("{}: {r}", reply.event_type),
        );
    (class, reason)
}

/// The delay before retry `attempt` (1-based) after a failure of `class`: none for
/// transient, else the backoff (the last repeats) jittered to between half and all of it,
/// deterministically from the instance, step and attempt.
fn retry_delay(
    backoff: &[u64],
    class: FailureClass,
    instance: &str,
    step: &str,
    attempt: u32,
) -> u64 {
    if class == FailureClass::Transient || backoff.is_empty() {
        return 0;
    }
    let base = backoff[(attempt as usize - 1).min(backoff.len() - 1)];
    let seed = format!("{instance}/{step}/{attempt}");
    let half = base / 2;
    half + xxhash_rust::xxh3::xxh3_64(seed.as_bytes()) % (base - half + 1)
}

impl Saga {
    /// The id of the instance `trigger` starts: the same for every delivery of the same event.
    pub fn instance_id(&self, source: &Source, id: &EventId) -> String {
        EventId::derived(&format!("saga-{}", self.name()), source, id, 0)
            .as_str()
            .to_string()
    }

    /// The id of a command: a function of (saga, trigger, step, kind, attempt) only.
    pub fn command_id(
        &self,
        trigger: &Trigger,
        step: &str,
        kind: CommandKind,
        attempt: u32,
    ) -> String {
        let scope = format!("saga-{}/{step}/{}", self.name(), kind.scope());
        EventId::derived(&scope, &trigger.source, &trigger.id, attempt as usize)
            .as_str()
            .to_string()
    }

    /// Whether an event of `event_type` with `data` starts an instance.
    pub fn triggered_by(&self, event_type: &str, data: &Value) -> bool {
        self.trigger().matches(event_type) && self.condition().is_none_or(|c| c.matches(data))
    }

    /// A new instance for `trigger` (which must satisfy [`Saga::triggered_by`]), with its
    /// first commands.
    pub fn start(&self, trigger: Trigger, now: Micros) -> (Instance, Transition) {
        let mut instance = Instance {
            id: self.instance_id(&trigger.source, &trigger.id),
            saga: self.name().to_string(),
            state: SagaState::Running,
            reason: None,
            started_at: now,
            updated_at: now,
            ended_at: None,
            stage: 0,
            steps: self
                .steps()
                .iter()
                .map(|s| StepRun {
                    name: s.name.clone(),
                    status: StepStatus::Pending,
                    attempts: 0,
                    compensation_attempts: 0,
                    compensation_attempts_before_resume: 0,
                    in_flight: None,
                    retry_at: None,
                    result: None,
                    error: None,
                    started_at: None,
                    finished_at: None,
                    compensated_at: None,
                })
                .collect(),
            compensation_queue: None,
            timeline: Vec::new(),
            trigger,
        };
        let (event_type, event_id) = (
            instance.trigger.event_type.clone(),
            instance.trigger.id.as_str().to_string(),
        );
        let entry = instance.note(now, Happened::Started, None);
        entry.event_type = Some(event_type);
        entry.event_id = Some(event_id);
        let mut out = Transition {
            changed: true,
            ..Transition::default()
        };
        let cause = instance.trigger.id.as_str().to_string();
        self.advance(&mut instance, now, &cause, &mut out);
        (instance, out)
    }

    /// Applies a reply correlated to `instance`.
    pub fn on_reply(&self, instance: &mut Instance, reply: &Reply, now: Micros) -> Transition {
        let mut out = Transition::default();
        if instance
            .timeline
            .iter()
            .any(|e| e.event_id.as_deref() == Some(reply.id.as_str()))
        {
            out.duplicate = true;
            return out;
        }
        if matches!(
            instance.state,
            SagaState::Completed | SagaState::Compensated
        ) {
            return out;
        }
        let steps = self.steps();
        let candidates: Vec<usize> = (0..steps.len())
            .filter(|&k| {
                let Some(command) = &instance.steps[k].in_flight else {
                    return false;
                };
                let step = &steps[k];
                match command.kind {
                    CommandKind::Step => {
                        step.success.as_str() == reply.event_type
                            || step
                                .failure
                                .as_ref()
                                .is_some_and(|f| f.as_str() == reply.event_type)
                    }
                    CommandKind::Compensation => step.compensation.as_ref().is_some_and(|c| {
                        c.success.as_str() == reply.event_type
                            || c.failure
                                .as_ref()
                                .is_some_and(|f| f.as_str() == reply.event_type)
                    }),
                }
            })
            .collect();
        let chosen = match &reply.causation_id {
            Some(cause) => candidates.iter().copied().find(|&k| {
                instance.steps[k]
                    .in_flight
                    .as_ref()
                    .is_some_and(|c| &c.id == cause)
            }),
            None if candidates.len() == 1 => Some(candidates[0]),
            None => None,
        };
        if chosen.is_none()
            && let Some(cause) = &reply.causation_id
            && let Some((k, kind, attempt)) = self.earlier_attempt(instance, cause, reply)
        {
            return self.late_success(instance, k, kind, attempt, reply, now);
        }
        let Some(k) = chosen else {
            // A reply to an earlier attempt, to a step no longer waiting, or ambiguous: kept
            // in the timeline (so a redelivery is recognised), nothing else changes.
            let entry = instance.note(now, Happened::Stale, None);
            entry.event_type = Some(reply.event_type.clone());
            entry.event_id = Some(reply.id.clone());
            entry.detail = Some(match candidates.len() {
                0 => "no step awaits this reply".to_string(),
                _ => "not the reply to a command in flight".to_string(),
            });
            instance.updated_at = now;
            out.changed = true;
            return out;
        };
        out.changed = true;
        instance.updated_at = now;
        let step = &steps[k];
        let Some(command) = instance.steps[k].in_flight.take() else {
            return out;
        };
        let cause = reply.id.clone();
        let record = |instance: &mut Instance, what: Happened, detail: Option<String>| {
            let entry = instance.note(now, what, Some(&step.name));
            entry.attempt = Some(command.attempt);
            entry.event_type = Some(reply.event_type.clone());
            entry.event_id = Some(reply.id.clone());
            entry.detail = detail;
        };
        match command.kind {
            CommandKind::Step if step.success.as_str() == reply.event_type => {
                record(instance, Happened::Succeeded, None);
                let run = &mut instance.steps[k];
                run.status = StepStatus::Succeeded;
                run.result = Some(reply.data.clone());
                run.finished_at = Some(now);
            }
            CommandKind::Step => {
                let (class, reason) = failure_of(reply);
                record(
                    instance,
                    Happened::Failed,
                    Some(format!("{class}: {reason}")),
                );
                self.step_failed(instance, k, class, reason, now, &cause, &mut out);
            }
            CommandKind::Compensation
                if step
                    .compensation
                    .as_ref()
                    .is_some_and(|c| c.success.as_str() == reply.event_type) =>
            {
                record(instance, Happened::Compensated, None);
                let run = &mut instance.steps[k];
                run.status = StepStatus::Compensated;
                run.compensated_at = Some(now);
            }
            CommandKind::Compensation => {
                let (class, reason) = failure_of(reply);
                record(
                    instance,
                    Happened::CompensationFailed,
                    Some(format!("{class}: {reason}")),
                );
                self.compensation_failed(instance, k, class, reason, now, &cause, &mut out);
            }
        }
        self.advance(instance, now, &cause, &mut out);
        out
    }

    /// The step, kind and attempt of an earlier attempt that `reply` is the success of,
    /// if that step is still waiting to succeed (or to be undone).
    fn earlier_attempt(
        &self,
        instance: &Instance,
        cause: &str,
        reply: &Reply,
    ) -> Option<(usize, CommandKind, u32)> {
        for (k, step) in self.steps().iter().enumerate() {
            let run = &instance.steps[k];
            let (kind, attempts) =
                if step.success.as_str() == reply.event_type && run.status == StepStatus::Running {
                    (CommandKind::Step, run.attempts)
                } else if step
                    .compensation
                    .as_ref()
                    .is_some_and(|c| c.success.as_str() == reply.event_type)
                    && run.status == StepStatus::Compensating
                {
                    (CommandKind::Compensation, run.compensation_attempts)
                } else {
                    continue;
                };
            for attempt in 1..=attempts {
                if self.command_id(&instance.trigger, &step.name, kind, attempt) == cause {
                    return Some((k, kind, attempt));
                }
            }
        }
        None
    }

    /// A success that answers an earlier attempt (one that timed out, or failed after it had
    /// in fact been done): the step did happen — or was undone — so it is taken, and the
    /// attempt in flight or scheduled is no longer waited for. A stuck instance whose
    /// compensation succeeds this way goes on compensating.
    fn late_success(
        &self,
        instance: &mut Instance,
        k: usize,
        kind: CommandKind,
        attempt: u32,
        reply: &Reply,
        now: Micros,
    ) -> Transition {
        let mut out = Transition {
            changed: true,
            ..Transition::default()
        };
        instance.updated_at = now;
        let name = self.steps()[k].name.clone();
        let what = match kind {
            CommandKind::Step => Happened::Succeeded,
            CommandKind::Compensation => Happened::Compensated,
        };
        let entry = instance.note(now, what, Some(&name));
        entry.attempt = Some(attempt);
        entry.event_type = Some(reply.event_type.clone());
        entry.event_id = Some(reply.id.clone());
        entry.detail = Some(format!("a late reply to attempt {attempt}"));
        let run = &mut instance.steps[k];
        run.in_flight = None;
        run.retry_at = None;
        match kind {
            CommandKind::Step => {
                run.status = StepStatus::Succeeded;
                run.result = Some(reply.data.clone());
                run.finished_at = Some(now);
            }
            CommandKind::Compensation => {
                run.status = StepStatus::Compensated;
                run.compensated_at = Some(now);
                if instance.state == SagaState::Stuck {
                    instance.state = SagaState::Compensating;
                    instance.ended_at = None;
                }
            }
        }
        self.advance(instance, now, &reply.id, &mut out);
        out
    }

    /// Times out attempts past their deadline and sends retries that are due.
    pub fn on_tick(&self, instance: &mut Instance, now: Micros) -> Transition {
        let mut out = Transition::default();
        if instance.state.is_outcome() {
            return out;
        }
        let cause = instance.trigger.id.as_str().to_string();
        for k in 0..instance.steps.len() {
            let timed_out = instance.steps[k]
                .in_flight
                .as_ref()
                .is_some_and(|c| c.deadline <= now);
            if timed_out && let Some(command) = instance.steps[k].in_flight.take() {
                out.changed = true;
                let waited = (command.deadline - command.sent_at) as f64 / 1e6;
                let reason = format!("no reply to `{}` within {waited} s", command.event_type);
                let entry = instance.note(now, Happened::TimedOut, Some(&command.step));
                entry.attempt = Some(command.attempt);
                entry.event_type = Some(command.event_type.clone());
                entry.event_id = Some(command.id.clone());
                entry.detail = Some(reason.clone());
                match command.kind {
                    CommandKind::Step => self.step_failed(
                        instance,
                        k,
                        FailureClass::Service,
                        reason,
                        now,
                        &cause,
                        &mut out,
                    ),
                    CommandKind::Compensation => self.compensation_failed(
                        instance,
                        k,
                        FailureClass::Service,
                        reason,
                        now,
                        &cause,
                        &mut out,
                    ),
                }
            }
            let run = &instance.steps[k];
            if run.in_flight.is_none() && run.retry_at.is_some_and(|at| at <= now) {
                out.changed = true;
                instance.steps[k].retry_at = None;
                match instance.steps[k].status {
                    StepStatus::Running if instance.state == SagaState::Running => {
                        self.issue(instance, k, CommandKind::Step, now, &cause, &mut out)
                    }
                    StepStatus::Compensating if instance.state == SagaState::Compensating => self
                        .issue(
                            instance,
                            k,
                            CommandKind::Compensation,
                            now,
                            &cause,
                            &mut out,
                        ),
                    _ => {}
                }
            }
        }
        if out.changed {
            instance.updated_at = now;
            self.advance(instance, now, &cause, &mut out);
        }
        out
    }

    /// An operator's retry of a stuck instance: its failed compensation gets a fresh set of
    /// attempts (with new command ids), the first at once.
    pub fn resume(&self, instance: &mut Instance, now: Micros) -> Result<Transition, NotStuck> {
        if instance.state != SagaState::Stuck {
            return Err(NotStuck {
                id: instance.id.clone(),
                state: instance.state.as_str(),
            });
        }
        let mut out = Transition {
            changed: true,
            ..Transition::default()
        };
        instance.state = SagaState::Compensating;
        instance.ended_at = None;
        instance.updated_at = now;
        // Compensating again: the reason is why it compensates, not why it was stuck.
        if let Some(why) = instance
            .timeline
            .iter()
            .rev()
            .find(|e| e.what == Happened::CompensationStarted)
            .and_then(|e| e.detail.clone())
        {
            instance.reason = Some(why);
        }
        instance.note(now, Happened::Resumed, None);
        for run in &mut instance.steps {
            if run.status == StepStatus::Compensating {
                run.compensation_attempts_before_resume = run.compensation_attempts;
                run.retry_at = Some(now);
            }
        }
        let cause = instance.trigger.id.as_str().to_string();
        let tick = self.on_tick(instance, now);
        out.commands = tick.commands;
        self.advance(instance, now, &cause, &mut out);
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn step_failed(
        &self,
        instance: &mut Instance,
        k: usize,
        class: FailureClass,
        reason: String,
        now: Micros,
        cause: &str,
        out: &mut Transition,
    ) {
        let step: &Step = &self.steps()[k];
        let attempts = instance.steps[k].attempts;
        instance.steps[k].error = Some(reason.clone());
        if instance.state == SagaState::Running
            && class != FailureClass::Permanent
            && attempts < step.max_attempts
        {
            let delay = retry_delay(&step.backoff, class, &instance.id, &step.name, attempts);
            instance.steps[k].retry_at = Some(now + delay);
            let entry = instance.note(now, Happened::RetryScheduled, Some(&step.name));
            entry.attempt = Some(attempts + 1);
            entry.detail = Some(format!("in {} s", delay as f64 / 1e6));
            if delay == 0 {
                instance.steps[k].retry_at = None;
                self.issue(instance, k, CommandKind::Step, now, cause, out);
            }
            return;
        }
        let run = &mut instance.steps[k];
        run.status = StepStatus::Failed;
        run.finished_at = Some(now);
        if instance.state == SagaState::Running {
            let why = if class == FailureClass::Permanent {
                format!("step `{}` failed: {reason}", step.name)
            } else {
                format!(
                    "step `{}` failed after {attempts} attempt{}: {reason}",
                    step.name,
                    if attempts == 1 { "" } else { "s" }
                )
            };
            self.begin_compensation(instance, why, now);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn compensation_failed(
        &self,
        instance: &mut Instance,
        k: usize,
        class: FailureClass,
        reason: String,
        now: Micros,
        cause: &str,
        out: &mut Transition,
    ) {
        let step = &self.steps()[k];
        let Some(compensation) = &step.compensation else {
            return;
        };
        let run = &mut instance.steps[k];
        run.error = Some(reason.clone());
        let spent = run.compensation_attempts - run.compensation_attempts_before_resume;
        if class == FailureClass::Permanent || spent >= compensation.max_attempts {
            instance.state = SagaState::Stuck;
            instance.ended_at = Some(now);
            let why = format!(
                "compensation of step `{}` failed after {spent} attempt{}: {reason}",
                step.name,
                if spent == 1 { "" } else { "s" }
            );
            instance.reason = Some(why.clone());
            instance.note(now, Happened::Stuck, Some(&step.name)).detail = Some(why);
            out.outcome = Some(SagaState::Stuck);
            return;
        }
        let attempts = run.compensation_attempts;
        let delay = retry_delay(
            &compensation.backoff,
            class,
            &instance.id,
            &step.name,
            spent,
        );
        let entry = instance.note(now, Happened::RetryScheduled, Some(&step.name));
        entry.attempt = Some(attempts + 1);
        entry.detail = Some(format!("compensation in {} s", delay as f64 / 1e6));
        if delay == 0 {
            self.issue(instance, k, CommandKind::Compensation, now, cause, out);
        } else {
            instance.steps[k].retry_at = Some(now + delay);
        }
    }

    fn begin_compensation(&self, instance: &mut Instance, reason: String, now: Micros) {
        instance.state = SagaState::Compensating;
        instance
            .note(now, Happened::CompensationStarted, None)
            .detail = Some(reason.clone());
        instance.reason = Some(reason);
        // Retries not yet sent are cancelled; commands in flight are waited for.
        for run in &mut instance.steps {
            if run.status == StepStatus::Running && run.in_flight.is_none() {
                run.status = StepStatus::Failed;
                run.retry_at = None;
                run.finished_at = Some(now);
                run.error = Some("cancelled: the saga is compensating".into());
            }
        }
    }

    fn issue(
        &self,
        instance: &mut Instance,
        k: usize,
        kind: CommandKind,
        now: Micros,
        cause: &str,
        out: &mut Transition,
    ) {
        let step = &self.steps()[k];
        let (event_type, timeout) = match (kind, &step.compensation) {
            (CommandKind::Step, _) => (step.command.as_str(), step.timeout),
            (CommandKind::Compensation, Some(c)) => (c.command.as_str(), c.timeout),
            (CommandKind::Compensation, None) => return,
        };
        let run = &mut instance.steps[k];
        let attempt = match kind {
            CommandKind::Step => {
                run.attempts += 1;
                run.status = StepStatus::Running;
                run.started_at.get_or_insert(now);
                run.attempts
            }
            CommandKind::Compensation => {
                run.compensation_attempts += 1;
                run.status = StepStatus::Compensating;
                run.compensation_attempts
            }
        };
        run.retry_at = None;
        let command = Command {
            id: self.command_id(&instance.trigger, &step.name, kind, attempt),
            step: step.name.clone(),
            kind,
            attempt,
            event_type: event_type.to_string(),
            sent_at: now,
            deadline: now.saturating_add(timeout),
            caused_by: cause.to_string(),
        };
        run.in_flight = Some(command.clone());
        let what = match kind {
            CommandKind::Step => Happened::CommandSent,
            CommandKind::Compensation => Happened::CompensationSent,
        };
        let entry = instance.note(now, what, Some(&step.name));
        entry.attempt = Some(attempt);
        entry.event_type = Some(command.event_type.clone());
        entry.event_id = Some(command.id.clone());
        out.changed = true;
        out.commands.push(command);
    }

    /// Moves the instance as far as it can go without new events.
    fn advance(&self, instance: &mut Instance, now: Micros, cause: &str, out: &mut Transition) {
        loop {
            match instance.state {
                SagaState::Running => {
                    let Some(stage) = self.stages().get(instance.stage) else {
                        instance.state = SagaState::Completed;
                        instance.ended_at = Some(now);
                        instance.note(now, Happened::Completed, None);
                        out.outcome = Some(SagaState::Completed);
                        out.changed = true;
                        return;
                    };
                    if stage
                        .steps
                        .iter()
                        .all(|&k| instance.steps[k].status == StepStatus::Pending)
                    {
                        out.changed = true;
                        let context = instance.context();
                        let group_off = stage.when.as_ref().is_some_and(|c| !c.matches(&context));
                        for &k in &stage.steps {
                            let step = &self.steps()[k];
                            let off = group_off
                                || step.when.as_ref().is_some_and(|c| !c.matches(&context));
                            if off {
                                let run = &mut instance.steps[k];
                                run.status = StepStatus::Skipped;
                                run.finished_at = Some(now);
                                let condition = stage
                                    .when
                                    .as_ref()
                                    .filter(|_| group_off)
                                    .or(step.when.as_ref())
                                    .map(|c| format!("`{c}` is false"));
                                instance
                                    .note(now, Happened::Skipped, Some(&step.name))
                                    .detail = condition;
                            } else {
                                self.issue(instance, k, CommandKind::Step, now, cause, out);
                            }
                        }
                    }
                    let done = stage.steps.iter().all(|&k| {
                        matches!(
                            instance.steps[k].status,
                            StepStatus::Succeeded | StepStatus::Skipped
                        )
                    });
                    if !done {
                        return;
                    }
                    instance.stage += 1;
                    out.changed = true;
                }
                SagaState::Compensating => {
                    let draining = instance.steps.iter().any(|s| {
                        s.in_flight
                            .as_ref()
                            .is_some_and(|c| c.kind == CommandKind::Step)
                    });
                    if draining {
                        return;
                    }
                    if instance.compensation_queue.is_none() {
                        let last = instance.stage.min(self.stages().len().saturating_sub(1));
                        let queue: Vec<usize> = self.stages()[..=last]
                            .iter()
                            .rev()
                            .flat_map(|stage| stage.compensation_order.iter().copied())
                            .filter(|&k| {
                                instance.steps[k].status == StepStatus::Succeeded
                                    && self.steps()[k].compensation.is_some()
                            })
                            .collect();
                        instance.compensation_queue = Some(queue);
                        out.changed = true;
                    }
                    let front = instance
                        .compensation_queue
                        .as_ref()
                        .and_then(|q| q.first().copied());
                    let Some(k) = front else {
                        instance.state = SagaState::Compensated;
                        instance.ended_at = Some(now);
                        instance.note(now, Happened::SagaCompensated, None);
                        out.outcome = Some(SagaState::Compensated);
                        out.changed = true;
                        return;
                    };
                    let run = &instance.steps[k];
                    match run.status {
                        StepStatus::Compensated => {
                            if let Some(queue) = &mut instance.compensation_queue {
                                queue.remove(0);
                            }
                            out.changed = true;
                        }
                        StepStatus::Succeeded => {
                            self.issue(instance, k, CommandKind::Compensation, now, cause, out);
                            return;
                        }
                        _ => return,
                    }
                }
                SagaState::Completed | SagaState::Compensated | SagaState::Stuck => return,
            }
        }
    }

    /// The data of `command`'s event: the saga, instance, step and attempt, the trigger's
    /// data as `input`, and for a step the results so far (`results`), for a compensation
    /// the step's own result (`result`).
    pub fn command_data(&self, instance: &Instance, command: &Command) -> Value {
        let mut data = Map::new();
        data.insert("saga".into(), Value::from(self.name()));
        data.insert("instance".into(), Value::from(instance.id.as_str()));
        data.insert("step".into(), Value::from(command.step.as_str()));
        data.insert("attempt".into(), Value::from(command.attempt));
        data.insert("input".into(), instance.trigger.data.clone());
        match command.kind {
            CommandKind::Step => {
                let results: Map<String, Value> = instance
                    .steps
                    .iter()
                    .filter_map(|s| s.result.clone().map(|r| (s.name.clone(), r)))
                    .collect();
                data.insert("results".into(), Value::Object(results));
            }
            CommandKind::Compensation => {
                let result = instance
                    .step(&command.step)
                    .and_then(|s| s.result.clone())
                    .unwrap_or(Value::Null);
                data.insert("result".into(), result);
            }
        }
        Value::Object(data)
    }
}
