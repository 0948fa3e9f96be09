//! The feature pipelines this server runs, as the routes see them.
//!
//! The binary (the composition root) starts one `FeaturePipeline` per `[[features]]` table over
//! the server's runtime and hands each handle here with [`Features::add`]; the server serves
//! their specs, status and online store under `/v1/features`, and stops them first when it
//! stops (before its consumers and the backend), so every cycle under way is checkpointed and
//! settled. The server depends on `runnel-stages` (server → stages → runtime), never on a
//! storage crate: the store is read through the backend trait the server was given.

use std::sync::{Arc, Mutex};

use runnel_stages::{FeaturePipelineHandle, FeatureSpec, FeatureStore, PipelineStatus};

/// One running pipeline: its spec and its handle (taken when it stops).
struct Running {
    spec: FeatureSpec,
    handle: Mutex<Option<FeaturePipelineHandle>>,
}

/// The pipelines of this server, in the order of `runnel.toml`. Cheap to clone.
#[derive(Clone)]
pub struct Features {
    running: Arc<Mutex<Vec<Arc<Running>>>>,
    store: FeatureStore,
}

impl std::fmt::Debug for Features {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Features")
            .field("sets", &self.names())
            .finish_non_exhaustive()
    }
}

/// A feature set as the routes show it.
#[derive(Debug, Clone)]
pub struct FeatureSet {
    pub spec: FeatureSpec,
    /// `None` once the pipeline stopped.
    pub status: Option<PipelineStatus>,
}

impl Features {
    /// No pipelines; values are read from `store`.
    pub fn new(store: FeatureStore) -> Self {
        Self {
            running: Arc::new(Mutex::new(Vec::new())),
            store,
        }
    }

    /// Hands a started pipeline to the server: it is shown, served and stopped with it.
    pub fn add(&self, spec: FeatureSpec, handle: FeaturePipelineHandle) {
        self.lock().push(Arc::new(Running {
            spec,
            handle: Mutex::new(Some(handle)),
        }));
    }

    /// The online store values are read from.
    pub fn store(&self) -> &FeatureStore {
        &self.store
    }

    /// The names of the sets, in configuration order.
    pub fn names(&self) -> Vec<String> {
        self.lock().iter().map(|r| r.spec.name.clone()).collect()
    }

    /// Every set with its status.
    pub fn sets(&self) -> Vec<FeatureSet> {
        self.lock().iter().map(|r| r.view()).collect()
    }

    /// One set by name.
    pub fn set(&self, name: &str) -> Option<FeatureSet> {
        self.lock()
            .iter()
            .find(|r| r.spec.name == name)
            .map(|r| r.view())
    }

    /// Stops every pipeline cleanly (each finishes its cycle, commits and releases its
    /// leases); errors are logged.
    pub async fn stop_all(&self) {
        let running: Vec<Arc<Running>> = self.lock().clone();
        for feature in running {
            let handle = feature
                .handle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(handle) = handle
                && let Err(error) = handle.stop().await
            {
                tracing::warn!(feature = feature.spec.name.as_str(), %error, "feature pipeline did not stop cleanly");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Running>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Running {
    fn view(&self) -> FeatureSet {
        let status = self
            .handle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(FeaturePipelineHandle::status);
        FeatureSet {
            spec: self.spec.clone(),
            status,
        }
    }
}
