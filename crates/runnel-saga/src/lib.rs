//! Runnel's saga stage: workflows that span services, as local steps with compensations.
//!
//! A saga type (a `[[sagas]]` table of `runnel.toml`, see [`SagaSpec`]) is data: an event
//! that starts it, ordered steps each published as a command event and answered by a success
//! or failure reply correlated by the instance's id (`correlationid`), timeouts, retries by
//! failure class, conditional steps and parallel groups, and for each step the command that
//! undoes it. [`SagaDriver`] runs it over the runtime's consumer groups with each instance in
//! the backend's key-value store; [`Sagas`] lists, shows and retries instances.
//!
//! Modules, one concern each:
//! - `spec`, `condition`: the typed definition and its validation, errors naming the field.
//! - `machine`: the orchestrator's pure core: an instance's states and transitions, on the
//!   injected clock, with no I/O.
//! - `store`: instances and the index of active ones in the key-value store.
//! - `driver`: the integration (groups, compare-and-set writes before publishing, timers).
//! - `visibility`: the operator's list, show and retry.
//!
//! Semantics (Temporal's and Restate's where the issue is silent) are in `docs/sagas.md`.
//!
//! # Invariants
//!
//! - An instance reaches exactly one outcome: completed, compensated or stuck (stuck until
//!   an operator retries it); never none, since every wait has a deadline.
//! - Only steps that succeeded are undone, each once, in reverse order (a parallel group in
//!   its explicit compensation order).
//! - A transition is written (compare-and-set on the instance's revision) before the
//!   commands it issued are published; a command's id is a function of (saga, trigger, step,
//!   run or undo, attempt), so a command published again after a crash is the same command.
#![warn(missing_docs)]

mod condition;
mod crash;
mod driver;
mod machine;
mod spec;
mod store;
mod visibility;

pub use condition::{Condition, InvalidCondition};
pub use driver::{
    SagaCounts, SagaDriver, SagaError, SagaHandle, SagaOptions, reply_group, trigger_group,
};
pub use machine::{
    Command, CommandKind, Happened, Instance, NotStuck, Reply, SagaState, StepRun, StepStatus,
    TimelineEntry, Transition, Trigger,
};
pub use spec::{
    Compensation, CompensationSpec, MAX_SAGA_NAME_LEN, Saga, SagaSpec, SpecError, SpecErrors,
    Stage, Step, StepSpec, TRIGGER_ROOT, TriggerSpec, validate_sagas,
};
pub use store::{ACTIVE_BUCKET, INSTANCE_BUCKET, InstanceStore, StoreError, Stored};
pub use visibility::{InstanceSummary, MAX_LIST, SagaQuery, Sagas};
