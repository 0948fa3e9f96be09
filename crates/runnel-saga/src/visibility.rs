//! What operators see and do: instances listed by saga type and state, one instance with
//! its timeline, and the retry of a stuck instance. The server's `GET /v1/sagas`,
//! `GET /v1/sagas/{id}` and `runnel saga list|show|retry` are thin calls of [`Sagas`].
//!
//! It needs no running driver: it reads and writes instances in the backend's key-value
//! store, and a retry publishes its command itself (the driver that owns the instance's
//! home runs its timers from then on).

use std::collections::BTreeMap;
use std::sync::Arc;

use runnel_clock::Micros;
use runnel_runtime::Runnel;
use serde::{Deserialize, Serialize};

use crate::driver::{Core, SagaError};
use crate::machine::{Instance, SagaState, StepStatus};
use crate::spec::Saga;

/// Most instances one list returns.
pub const MAX_LIST: usize = 1000;

/// Which instances to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaQuery {
    /// Of this saga type only.
    pub saga: Option<String>,
    /// In this state only.
    pub state: Option<SagaState>,
    /// After this instance id (the last of the previous page), within `saga` when given.
    pub after: Option<String>,
    /// At most this many (default and cap [`MAX_LIST`]).
    pub limit: Option<usize>,
}

/// One line of a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceSummary {
    /// The instance id (the `correlationid` of its commands).
    pub id: String,
    /// The saga type.
    pub saga: String,
    /// Where it is.
    pub state: SagaState,
    /// Why it is compensating or stuck.
    pub reason: Option<String>,
    /// The type of the event that started it.
    pub trigger_type: String,
    /// The step running now, or the last one that ran.
    pub step: Option<String>,
    /// When it started (µs since the epoch).
    pub started_at: Micros,
    /// When it last changed.
    pub updated_at: Micros,
    /// When it reached its outcome.
    pub ended_at: Option<Micros>,
}

impl InstanceSummary {
    /// The summary of `instance`.
    pub fn of(instance: &Instance) -> Self {
        let step = instance
            .steps
            .iter()
            .rev()
            .find(|s| matches!(s.status, StepStatus::Running | StepStatus::Compensating))
            .or_else(|| instance.steps.iter().rev().find(|s| s.started_at.is_some()))
            .map(|s| s.name.clone());
        Self {
            id: instance.id.clone(),
            saga: instance.saga.clone(),
            state: instance.state,
            reason: instance.reason.clone(),
            trigger_type: instance.trigger.event_type.clone(),
            step,
            started_at: instance.started_at,
            updated_at: instance.updated_at,
            ended_at: instance.ended_at,
        }
    }
}

/// The sagas of one runtime, for operators.
#[derive(Clone)]
pub struct Sagas {
    cores: BTreeMap<String, Arc<Core>>,
}

impl std::fmt::Debug for Sagas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sagas")
            .field("sagas", &self.cores.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Sagas {
    /// The operator's view of `sagas` over `runnel`'s backend.
    pub fn new(runnel: &Runnel, sagas: Vec<Saga>) -> Result<Self, SagaError> {
        let mut cores = BTreeMap::new();
        for saga in sagas {
            cores.insert(saga.name().to_string(), Arc::new(Core::new(runnel, saga)?));
        }
        Ok(Self { cores })
    }

    /// The saga types, by name.
    pub fn sagas(&self) -> impl Iterator<Item = &Saga> {
        self.cores.values().map(|c| &c.saga)
    }

    fn core(&self, saga: &str) -> Result<&Arc<Core>, SagaError> {
        self.cores
            .get(saga)
            .ok_or_else(|| SagaError::UnknownSaga(saga.to_string()))
    }

    /// Instances matching `query`, by saga type then id.
    pub async fn list(&self, query: &SagaQuery) -> Result<Vec<InstanceSummary>, SagaError> {
        let limit = query.limit.unwrap_or(MAX_LIST).clamp(1, MAX_LIST);
        let cores: Vec<&Arc<Core>> = match &query.saga {
            Some(name) => vec![self.core(name)?],
            None => self.cores.values().collect(),
        };
        let mut found = Vec::new();
        for core in cores {
            let after = query.saga.as_ref().and(query.after.as_deref());
            let instances = core
                .store
                .list(core.saga.name(), query.state, after, limit - found.len())
                .await?;
            found.extend(instances.iter().map(InstanceSummary::of));
            if found.len() >= limit {
                break;
            }
        }
        Ok(found)
    }

    /// Stuck instances of every saga: the operator's dead letters.
    pub async fn stuck(&self) -> Result<Vec<InstanceSummary>, SagaError> {
        self.list(&SagaQuery {
            state: Some(SagaState::Stuck),
            ..SagaQuery::default()
        })
        .await
    }

    /// Instance `id` with its steps and timeline.
    pub async fn get(&self, id: &str) -> Result<Instance, SagaError> {
        for core in self.cores.values() {
            if let Some(stored) = core.store.get(core.saga.name(), id).await? {
                return Ok(stored.instance);
            }
        }
        Err(SagaError::NotFound(id.to_string()))
    }

    /// Retries stuck instance `id`: its failed compensation gets a fresh set of attempts,
    /// the first sent now. Refused unless the instance is stuck.
    pub async fn retry(&self, id: &str) -> Result<Instance, SagaError> {
        let instance = self.get(id).await?;
        if instance.state != SagaState::Stuck {
            return Err(crate::machine::NotStuck {
                id: id.to_string(),
                state: instance.state.as_str(),
            }
            .into());
        }
        let core = self.core(&instance.saga)?;
        // Listed first, so its timers run from the moment it is written.
        core.store.activate(&instance).await?;
        core.transition(id, |saga, instance, now| Ok(saga.resume(instance, now)?))
            .await?
            .ok_or_else(|| SagaError::NotFound(id.to_string()))
    }
}
