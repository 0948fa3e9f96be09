//! A saga type as data: what starts it, its steps, how each is retried and undone. This is a
//! `[[sagas]]` table of `runnel.toml` (or built in Rust); [`SagaSpec::validate`] checks every
//! rule at once and names the field of each problem (`steps[1].parallel[0].success`), and
//! gives the compiled [`Saga`] the orchestrator runs.
//!
//! ```toml
//! [[sagas]]
//! name = "order"
//! trigger = { type = "fraud.scored", condition = "score < 0.8" }
//!
//! [[sagas.steps]]
//! name = "reserve"
//! command = "inventory.reserve_requested"
//! success = "inventory.reserved"
//! failure = "inventory.reservation_failed"
//! timeout = "30s"
//! compensation = { command = "inventory.release_requested", success = "inventory.released" }
//! ```
//!
//! A step is either one command (`command`, `success`, optional `failure`, `timeout`,
//! `max_attempts`, `backoff`, optional `compensation`) or a parallel group (`parallel = [...]`
//! of such steps, all of which must succeed, with an optional `compensation_order`). Any step
//! or group may have `when`: a [`Condition`] on the trigger's data (`trigger.amount > 100`) or
//! an earlier step's result (`reserve.warehouse == "eu"`); a step whose condition is false is
//! skipped, so two steps with opposite conditions are a branch.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use runnel_envelope::EventType;
use runnel_runtime::TypePattern;
use runnel_stages::HumanDuration;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;

/// Most characters in a saga's name: its groups are `saga-<name>-<domain>`, at most 56.
pub const MAX_SAGA_NAME_LEN: usize = 24;

/// The root name of the trigger's data in a step's `when`.
pub const TRIGGER_ROOT: &str = "trigger";

/// A `[[sagas]]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SagaSpec {
    /// The saga type's name: 1–24 of `a-z`, `0-9`, `_`, starting with a letter.
    pub name: String,
    /// What starts an instance.
    pub trigger: TriggerSpec,
    /// The steps, run in order.
    pub steps: Vec<StepSpec>,
}

/// What starts an instance: an event whose type matches `type` and, if given, whose data
/// satisfies `condition`. Each such event starts exactly one instance (its id is derived from
/// the event's source and id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    /// A type pattern (`order.placed`, `order.*`).
    #[serde(rename = "type")]
    pub event_type: String,
    /// A condition on the event's data, e.g. `score < 0.8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// A step: one command, or a parallel group (`parallel`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// The step's name, unique in the saga: 1–40 of `a-z`, `0-9`, `_`, starting with a letter.
    pub name: String,
    /// Run only if this condition holds on the trigger's data and earlier results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// The command event published to run the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The reply type that says it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<String>,
    /// The reply type that says it failed. Its data may say how with `class` (`transient`:
    /// retry now, `service`: retry after backoff, `permanent`: compensate now — the default)
    /// and `reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// How long to wait for a reply to one attempt; then the attempt counts as a `service`
    /// failure. Default 30 s.
    #[serde(default = "defaults::timeout")]
    pub timeout: HumanDuration,
    /// Attempts before the step has failed (1 = no retries). Default 3.
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Delays before the 1st, 2nd, … retry of a `service` failure (the last repeats), each
    /// jittered to between half and all of it. Default 1, 2, 4, 8, 16 s.
    #[serde(default = "defaults::backoff")]
    pub backoff: Vec<HumanDuration>,
    /// How to undo the step once it succeeded. Without one, the step is not undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation: Option<CompensationSpec>,
    /// A parallel group: these steps run at once and all must succeed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parallel: Vec<StepSpec>,
    /// For a parallel group: the order its succeeded steps are undone in (every member named
    /// once). Default: the reverse of their declaration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation_order: Option<Vec<String>>,
}

/// How a step is undone. Compensations are retried (whatever the failure's class, except
/// `permanent`) until they succeed or `max_attempts` is spent; then the instance is stuck.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompensationSpec {
    /// The command event that undoes the step.
    pub command: String,
    /// The reply type that says it was undone.
    pub success: String,
    /// The reply type that says undoing failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// How long to wait for a reply. Default: the step's timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Attempts before the instance is stuck. Default 5.
    #[serde(default = "defaults::compensation_attempts")]
    pub max_attempts: u32,
    /// Delays between attempts (the last repeats), jittered like a step's. Default 1, 2, 4,
    /// 8, 16 s.
    #[serde(default = "defaults::backoff")]
    pub backoff: Vec<HumanDuration>,
}

mod defaults {
    use runnel_stages::HumanDuration;

    pub fn timeout() -> HumanDuration {
        HumanDuration::from_secs(30)
    }
    pub fn max_attempts() -> u32 {
        3
    }
    pub fn compensation_attempts() -> u32 {
        5
    }
    pub fn backoff() -> Vec<HumanDuration> {
        [1, 2, 4, 8, 16].map(HumanDuration::from_secs).to_vec()
    }
}

impl StepSpec {
    /// A command step with the default timeout and retries and no compensation.
    pub fn command(name: &str, command: &str, success: &str) -> Self {
        Self {
            name: name.into(),
            when: None,
            command: Some(command.into()),
            success: Some(success.into()),
            failure: None,
            timeout: defaults::timeout(),
            max_attempts: defaults::max_attempts(),
            backoff: defaults::backoff(),
            compensation: None,
            parallel: Vec::new(),
            compensation_order: None,
        }
    }

    /// A parallel group of `steps`.
    pub fn parallel(name: &str, steps: Vec<StepSpec>) -> Self {
        Self {
            command: None,
            success: None,
            parallel: steps,
            ..Self::command(name, "", "")
        }
    }

    /// With `failure` as the failure reply type.
    pub fn failure(mut self, failure: &str) -> Self {
        self.failure = Some(failure.into());
        self
    }

    /// With a compensation (default attempts and backoff).
    pub fn compensate(mut self, command: &str, success: &str) -> Self {
        self.compensation = Some(CompensationSpec {
            command: command.into(),
            success: success.into(),
            failure: None,
            timeout: None,
            max_attempts: defaults::compensation_attempts(),
            backoff: defaults::backoff(),
        });
        self
    }

    /// Run only when `condition` holds.
    pub fn when(mut self, condition: &str) -> Self {
        self.when = Some(condition.into());
        self
    }
}

/// One problem of a specification, at a field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SpecError {
    /// Where: `steps[1].parallel[0].success`.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

/// Every problem of a specification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecErrors {
    /// The saga's name as written.
    pub saga: String,
    /// The problems, in field order.
    pub errors: Vec<SpecError>,
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "saga `{}`: ", self.saga)?;
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// A validated saga type, compiled for the orchestrator.
#[derive(Debug, Clone)]
pub struct Saga {
    spec: SagaSpec,
    trigger: TypePattern,
    condition: Option<Condition>,
    /// Every command step, groups flattened, in declaration order.
    steps: Vec<Step>,
    /// The top-level steps in order: each runs its leaves at once.
    stages: Vec<Stage>,
}

/// A command step, compiled.
#[derive(Debug, Clone)]
pub struct Step {
    /// Its name.
    pub name: String,
    /// Its condition.
    pub when: Option<Condition>,
    /// The command type.
    pub command: EventType,
    /// The success reply type.
    pub success: EventType,
    /// The failure reply type.
    pub failure: Option<EventType>,
    /// Per attempt, µs.
    pub timeout: u64,
    /// Attempts before it has failed.
    pub max_attempts: u32,
    /// Retry delays, µs.
    pub backoff: Vec<u64>,
    /// How it is undone.
    pub compensation: Option<Compensation>,
}

/// A compensation, compiled.
#[derive(Debug, Clone)]
pub struct Compensation {
    /// The command type.
    pub command: EventType,
    /// The success reply type.
    pub success: EventType,
    /// The failure reply type.
    pub failure: Option<EventType>,
    /// Per attempt, µs.
    pub timeout: u64,
    /// Attempts before the instance is stuck.
    pub max_attempts: u32,
    /// Retry delays, µs.
    pub backoff: Vec<u64>,
}

/// A top-level step: one command step or a parallel group.
#[derive(Debug, Clone)]
pub struct Stage {
    /// The top-level step's name.
    pub name: String,
    /// A group's own condition.
    pub when: Option<Condition>,
    /// Indexes into [`Saga::steps`] of its command steps.
    pub steps: Vec<usize>,
    /// The order its steps are undone in (indexes into [`Saga::steps`]).
    pub compensation_order: Vec<usize>,
}

impl Saga {
    /// The specification it was compiled from.
    pub fn spec(&self) -> &SagaSpec {
        &self.spec
    }

    /// The saga type's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The trigger's type pattern.
    pub fn trigger(&self) -> &TypePattern {
        &self.trigger
    }

    /// The trigger's condition.
    pub fn condition(&self) -> Option<&Condition> {
        self.condition.as_ref()
    }

    /// Every command step, groups flattened, in declaration order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The top-level steps.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Every reply type the saga awaits, sorted.
    pub fn reply_types(&self) -> BTreeSet<&str> {
        let mut types = BTreeSet::new();
        for step in &self.steps {
            types.insert(step.success.as_str());
            types.extend(step.failure.as_ref().map(EventType::as_str));
            if let Some(c) = &step.compensation {
                types.insert(c.success.as_str());
                types.extend(c.failure.as_ref().map(EventType::as_str));
            }
        }
        types
    }
}

fn valid_name(name: &str, max: usize) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a name: 1–{max} of a-z, 0-9 and _, starting with a letter"
        ))
    }
}

fn micros(d: HumanDuration) -> u64 {
    d.as_micros()
}

/// Collects problems while compiling.
struct Checker {
    errors: Vec<SpecError>,
}

impl Checker {
    fn fail(&mut self, field: &str, problem: impl Into<String>) {
        self.errors.push(SpecError {
            field: field.to_string(),
            problem: problem.into(),
        });
    }

    fn event_type(&mut self, field: &str, text: Option<&str>) -> Option<EventType> {
        match text {
            None => {
                self.fail(field, "is required");
                None
            }
            Some(text) => match EventType::new(text) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.fail(field, e.to_string());
                    None
                }
            },
        }
    }

    fn condition(&mut self, field: &str, text: Option<&str>) -> Option<Condition> {
        match Condition::parse(text?) {
            Ok(c) => Some(c),
            Err(e) => {
                self.fail(field, e.to_string());
                None
            }
        }
    }

    fn retries(&mut self, at: &str, max_attempts: u32, backoff: &[HumanDuration]) {
        if max_attempts == 0 {
            self.fail(&format!("{at}max_attempts"), "must be at least 1");
        }
        if backoff.is_empty() {
            self.fail(&format!("{at}backoff"), "needs at least one delay");
        }
    }

    /// A command step's fields; `None` if any is wrong.
    fn step(&mut self, at: &str, spec: &StepSpec) -> Option<Step> {
        let before = self.errors.len();
        let command = self.event_type(&format!("{at}command"), spec.command.as_deref());
        let success = self.event_type(&format!("{at}success"), spec.success.as_deref());
        let failure = spec
            .failure
            .as_deref()
            .and_then(|f| self.event_type(&format!("{at}failure"), Some(f)));
        if spec.timeout.is_zero() {
            self.fail(&format!("{at}timeout"), "must be more than 0");
        }
        self.retries(at, spec.max_attempts, &spec.backoff);
        if spec.compensation_order.is_some() {
            self.fail(
                &format!("{at}compensation_order"),
                "only a parallel group has one",
            );
        }
        if let (Some(c), Some(s)) = (&command, &success)
            && c == s
        {
            self.fail(&format!("{at}success"), "must differ from the command");
        }
        if let (Some(s), Some(f)) = (&success, &failure)
            && s == f
        {
            self.fail(&format!("{at}failure"), "must differ from `success`");
        }
        let compensation = spec.compensation.as_ref().and_then(|c| {
            let at = format!("{at}compensation.");
            let command = self.event_type(&format!("{at}command"), Some(&c.command));
            let success = self.event_type(&format!("{at}success"), Some(&c.success));
            let failure = c
                .failure
                .as_deref()
                .and_then(|f| self.event_type(&format!("{at}failure"), Some(f)));
            if c.timeout.is_some_and(HumanDuration::is_zero) {
                self.fail(&format!("{at}timeout"), "must be more than 0");
            }
            self.retries(&at, c.max_attempts, &c.backoff);
            Some(Compensation {
                command: command?,
                success: success?,
                failure,
                timeout: micros(c.timeout.unwrap_or(spec.timeout)),
                max_attempts: c.max_attempts,
                backoff: c.backoff.iter().copied().map(micros).collect(),
            })
        });
        if self.errors.len() != before {
            return None;
        }
        Some(Step {
            name: spec.name.clone(),
            when: None,
            command: command?,
            success: success?,
            failure,
            timeout: micros(spec.timeout),
            max_attempts: spec.max_attempts,
            backoff: spec.backoff.iter().copied().map(micros).collect(),
            compensation,
        })
    }
}

impl SagaSpec {
    /// Checks every rule and compiles the saga; the errors name every field that is wrong.
    pub fn validate(&self) -> Result<Saga, SpecErrors> {
        let mut check = Checker { errors: Vec::new() };
        if let Err(problem) = valid_name(&self.name, MAX_SAGA_NAME_LEN) {
            check.fail("name", problem);
        }
        let trigger = match TypePattern::new(self.trigger.event_type.clone()) {
            Ok(p) => Some(p),
            Err(e) => {
                check.fail("trigger.type", e.to_string());
                None
            }
        };
        let condition = check.condition("trigger.condition", self.trigger.condition.as_deref());
        if self.steps.is_empty() {
            check.fail("steps", "a saga needs at least one step");
        }
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        let mut steps = Vec::new();
        let mut stages = Vec::new();
        // Names of the top-level steps before the current one (and their members): what a
        // `when` may read.
        let mut earlier: BTreeSet<String> = BTreeSet::new();
        let mut name_check = |check: &mut Checker, at: &str, name: &str| {
            if let Err(problem) = valid_name(name, 40) {
                check.fail(&format!("{at}name"), problem);
            } else if name == TRIGGER_ROOT {
                check.fail(
                    &format!("{at}name"),
                    "`trigger` names the trigger's data in `when`",
                );
            } else if let Some(first) = names.insert(name.to_string(), at.to_string()) {
                check.fail(
                    &format!("{at}name"),
                    format!("`{name}` is already the name of {first}"),
                );
            }
        };
        for (i, spec) in self.steps.iter().enumerate() {
            let at = format!("steps[{i}].");
            name_check(&mut check, &at, &spec.name);
            let when_of = |check: &mut Checker, at: &str, text: Option<&str>| {
                let condition = check.condition(&format!("{at}when"), text)?;
                for root in condition.roots() {
                    if root != TRIGGER_ROOT && !earlier.contains(root) {
                        check.fail(
                            &format!("{at}when"),
                            format!(
                                "`{root}` is not `trigger` or the name of an earlier step (a \
                                 condition reads the trigger's data or results already known)"
                            ),
                        );
                        return None;
                    }
                }
                Some(condition)
            };
            let when = when_of(&mut check, &at, spec.when.as_deref());
            let mut stage = Stage {
                name: spec.name.clone(),
                when: None,
                steps: Vec::new(),
                compensation_order: Vec::new(),
            };
            if spec.parallel.is_empty() {
                if let Some(mut step) = check.step(&at, spec) {
                    step.when = when;
                    stage.steps.push(steps.len());
                    stage.compensation_order.push(steps.len());
                    steps.push(step);
                }
            } else {
                stage.when = when;
                for (field, set) in [
                    ("command", spec.command.is_some()),
                    ("success", spec.success.is_some()),
                    ("failure", spec.failure.is_some()),
                    ("compensation", spec.compensation.is_some()),
                ] {
                    if set {
                        check.fail(
                            &format!("{at}{field}"),
                            "a parallel group has none: its steps do",
                        );
                    }
                }
                for (j, member) in spec.parallel.iter().enumerate() {
                    let at = format!("{at}parallel[{j}].");
                    name_check(&mut check, &at, &member.name);
                    if !member.parallel.is_empty() {
                        check.fail(&format!("{at}parallel"), "parallel groups do not nest");
                        continue;
                    }
                    let when = when_of(&mut check, &at, member.when.as_deref());
                    if let Some(mut step) = check.step(&at, member) {
                        step.when = when;
                        stage.steps.push(steps.len());
                        steps.push(step);
                    }
                }
                let members: Vec<&str> = spec.parallel.iter().map(|s| s.name.as_str()).collect();
                match &spec.compensation_order {
                    None => stage.compensation_order = stage.steps.iter().rev().copied().collect(),
                    Some(order) => {
                        let listed: BTreeSet<&str> = order.iter().map(String::as_str).collect();
                        let all: BTreeSet<&str> = members.iter().copied().collect();
                        if listed != all || order.len() != members.len() {
                            check.fail(
                                &format!("{at}compensation_order"),
                                format!(
                                    "must name every step of the group once ({}), not {}",
                                    members.join(", "),
                                    order.join(", ")
                                ),
                            );
                        } else {
                            stage.compensation_order = order
                                .iter()
                                .filter_map(|n| {
                                    stage.steps.iter().copied().find(|&k| {
                                        steps.get(k).is_some_and(|s: &Step| &s.name == n)
                                    })
                                })
                                .collect();
                        }
                    }
                }
                for member in &spec.parallel {
                    earlier.insert(member.name.clone());
                }
            }
            earlier.insert(spec.name.clone());
            stages.push(stage);
        }
        if let Some(pattern) = &trigger {
            for step in &steps {
                let mut replies = vec![&step.success];
                replies.extend(step.failure.as_ref());
                if let Some(c) = &step.compensation {
                    replies.push(&c.success);
                    replies.extend(c.failure.as_ref());
                }
                for reply in replies {
                    if pattern.matches(reply.as_str()) {
                        check.fail(
                            "trigger.type",
                            format!(
                                "`{pattern}` matches the reply type `{reply}` of step `{}`: a \
                                 reply would start a new instance",
                                step.name
                            ),
                        );
                    }
                }
            }
        }
        match (check.errors.is_empty(), trigger) {
            (true, Some(trigger)) => Ok(Saga {
                spec: self.clone(),
                trigger,
                condition,
                steps,
                stages,
            }),
            _ => Err(SpecErrors {
                saga: self.name.clone(),
                errors: check.errors,
            }),
        }
    }
}

/// Validates every saga of a configuration: each on its own, and their names unique.
pub fn validate_sagas(specs: &[SagaSpec]) -> Result<Vec<Saga>, SpecErrors> {
    let mut seen = BTreeSet::new();
    let mut sagas = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        if !seen.insert(spec.name.as_str()) {
            return Err(SpecErrors {
                saga: spec.name.clone(),
                errors: vec![SpecError {
                    field: format!("sagas[{i}].name"),
                    problem: format!("`{}` is declared twice", spec.name),
                }],
            });
        }
        sagas.push(spec.validate()?);
    }
    Ok(sagas)
}
