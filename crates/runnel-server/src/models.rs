//! The models this server runs, as the routes see them.
//!
//! The binary (the composition root) starts one `InferenceStage` per `[[models]]` table over
//! the server's runtime and hands each handle here with [`Models::add`]; the server serves
//! their spec, version, breaker state and counts under `/v1/models`, swaps in new versions
//! the binary loaded ([`Models::reload`]), and stops them first when it stops (before the
//! feature pipelines whose store they read, its consumers and the backend), so every event
//! being scored is settled. The server depends on `runnel-inference` without its `onnx`
//! feature: loading a model file is the binary's business.

use std::sync::{Arc, Mutex};

use runnel_inference::{
    BreakerState, InferenceHandle, Model, ModelSpec, ScorerCounts, SwapError, group_name,
};

/// One running model: its spec and its handle (taken when it stops).
struct Running {
    spec: ModelSpec,
    handle: Mutex<Option<InferenceHandle>>,
}

/// The models of this server, in the order of `runnel.toml`. Cheap to clone.
#[derive(Clone, Default)]
pub struct Models {
    running: Arc<Mutex<Vec<Arc<Running>>>>,
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

impl Models {
    /// Hands a started stage to the server: it is shown and stopped with it.
    pub fn add(&self, spec: ModelSpec, handle: InferenceHandle) {
        self.lock().push(Arc::new(Running {
            spec,
            handle: Mutex::new(Some(handle)),
        }));
    }

    /// The names, in configuration order.
    pub fn names(&self) -> Vec<String> {
        self.lock().iter().map(|r| r.spec.name.clone()).collect()
    }

    /// The specs, in configuration order.
    pub fn specs(&self) -> Vec<ModelSpec> {
        self.lock().iter().map(|r| r.spec.clone()).collect()
    }

    /// Every model with its status.
    pub fn list(&self) -> Vec<ModelView> {
        self.lock().iter().map(|r| r.view()).collect()
    }

    /// One model by name.
    pub fn get(&self, name: &str) -> Option<ModelView> {
        self.lock()
            .iter()
            .find(|r| r.spec.name == name)
            .map(|r| r.view())
    }

    /// Swaps `model` (loaded and checked by the caller) in for model `name`'s current
    /// version; returns the version it replaced. Refused unless inputs and outputs match.
    pub fn reload(&self, name: &str, model: Arc<dyn Model>) -> Result<String, ReloadError> {
        let running = self
            .lock()
            .iter()
            .find(|r| r.spec.name == name)
            .cloned()
            .ok_or_else(|| ReloadError::Unknown(name.to_string()))?;
        let handle = running.handle.lock().unwrap_or_else(|p| p.into_inner());
        let handle = handle
            .as_ref()
            .ok_or_else(|| ReloadError::Stopped(name.to_string()))?;
        Ok(handle.reload(model)?)
    }

    /// Stops every stage cleanly (running handlers finish and settle, the group commits and
    /// leaves); errors are logged.
    pub async fn stop_all(&self) {
        let running: Vec<Arc<Running>> = self.lock().clone();
        for model in running {
            let handle = model
                .handle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(handle) = handle
                && let Err(error) = handle.stop().await
            {
                tracing::warn!(model = model.spec.name.as_str(), %error, "inference stage did not stop cleanly");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Running>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Running {
    fn view(&self) -> ModelView {
        let status = self
            .handle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|h| {
                let scorer = h.scorer();
                ModelStatus {
                    version: scorer.slot().current().info().version.clone(),
                    breaker: scorer.breaker_state(),
                    counts: scorer.counts(),
                }
            });
        ModelView {
            group: group_name(&self.spec.name),
            spec: self.spec.clone(),
            status,
        }
    }
}
