//! The models this server runs, as the routes see them.
//!
//! The binary (the composition root) starts one `InferenceStage` per `[[models]]` table over
//! the server's runtime and hands each handle here with [`Models::add`]; the server serves
//! their spec, version, breaker state and counts under `/v1/models`, swaps in new versions
//! the binary loaded ([`Models::reload`]), and stops them first when it stops (before the
//! feature pipelines whose store they read, its consumers and the backend), so every event
//! being scored is settled. The server depends on `runnel-inference` without its `onnx`
//! feature: loading a model file is the binary's business.

use std::sync::Arc;

use runnel_inference::{
    BreakerState, InferenceHandle, Model, ModelSpec, ScorerCounts, SwapError, group_name,
};
use runnel_runtime::RuntimeError;

use crate::stages::{StageHandle, Stages};

impl StageHandle for InferenceHandle {
    type Error = RuntimeError;
    fn stop(self) -> impl std::future::Future<Output = Result<(), RuntimeError>> + Send {
        InferenceHandle::stop(self)
    }
}

/// The models of this server, in the order of `runnel.toml`. Cheap to clone.
#[derive(Clone)]
pub struct Models {
    running: Stages<ModelSpec, InferenceHandle>,
}

impl Default for Models {
    fn default() -> Self {
        Self {
            running: Stages::new("inference stage"),
        }
    }
}

impl std::fmt::Debug for Models {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Models")
            .field("models", &self.names())
            .finish_non_exhaustive()
    }
}

/// A model as the routes show it.
#[derive(Debug, Clone)]
pub struct ModelView {
    pub spec: ModelSpec,
    /// The consumer group the stage reads its input as.
    pub group: String,
    /// `None` once the stage stopped.
    pub status: Option<ModelStatus>,
}

/// What a running stage reports.
#[derive(Debug, Clone)]
pub struct ModelStatus {
    /// The version serving now.
    pub version: String,
    pub breaker: BreakerState,
    pub counts: ScorerCounts,
}

/// Why a reload did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no model `{0}` runs on this server")]
    Unknown(String),
    #[error("model `{0}` has stopped")]
    Stopped(String),
    #[error(transparent)]
    Swap(#[from] SwapError),
}

fn view(spec: &ModelSpec, handle: Option<&InferenceHandle>) -> ModelView {
    let status = handle.map(|h| {
        let scorer = h.scorer();
        ModelStatus {
            version: scorer.slot().current().info().version.clone(),
            breaker: scorer.breaker_state(),
            counts: scorer.counts(),
        }
    });
    ModelView {
        group: group_name(&spec.name),
        spec: spec.clone(),
        status,
    }
}

impl Models {
    /// Hands a started stage to the server: it is shown and stopped with it.
    pub fn add(&self, spec: ModelSpec, handle: InferenceHandle) {
        self.running.add(spec.name.clone(), spec, handle);
    }

    /// The names, in configuration order.
    pub fn names(&self) -> Vec<String> {
        self.running.names()
    }

    /// The specs, in configuration order.
    pub fn specs(&self) -> Vec<ModelSpec> {
        self.running.specs()
    }

    /// Every model with its status.
    pub fn list(&self) -> Vec<ModelView> {
        self.running.map(view)
    }

    /// One model by name.
    pub fn get(&self, name: &str) -> Option<ModelView> {
        self.running.find(name, view)
    }

    /// Swaps `model` (loaded and checked by the caller) in for model `name`'s current
    /// version; returns the version it replaced. Refused unless inputs and outputs match.
    pub fn reload(&self, name: &str, model: Arc<dyn Model>) -> Result<String, ReloadError> {
        self.running
            .find(name, |_, handle| match handle {
                Some(handle) => Ok(handle.reload(model.clone())?),
                None => Err(ReloadError::Stopped(name.to_string())),
            })
            .ok_or_else(|| ReloadError::Unknown(name.to_string()))?
    }

    /// Stops every stage cleanly (running handlers finish and settle, the group commits and
    /// leaves); errors are logged.
    pub async fn stop_all(&self) {
        self.running.stop_all().await
    }
}
