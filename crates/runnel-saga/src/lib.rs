//! Runnel's saga stage: workflows that span services, as local steps with compensations.
//!
//! A saga type (a `[[sagas]]` table of `runnel.toml`, see [`SagaSpec`]) is data: an event
//! that starts it, ordered steps each published as a command event and answered by a success
//! or failure reply correlated by the instance's id (`correlationid`), timeouts, retries by
//! failure class, conditional steps and parallel groups, and for each step the command that
//! undoes it.
//!
//! Modules, one concern each:
//! - `spec`, `condition`: the typed definition and its validation, errors naming the field.
//! - `machine`: the orchestrator's pure core: an instance's states and transitions.
#![warn(missing_docs)]

mod condition;
mod driver;
mod machine;
mod spec;
mod store;
mod visibility;

pub use condition::{Condition, InvalidCondition};
pub use driver::{SagaDriver, SagaError, SagaHandle, SagaOptions, reply_group, trigger_group};
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
