//! The feature pipelines this server runs, as the routes see them.
//!
//! The binary (the composition root) starts one `FeaturePipeline` per `[[features]]` table over
//! the server's runtime and hands each handle here with [`Features::add`]; the server serves
//! their specs, status and online store under `/v1/features`, and stops them first when it
//! stops (before its consumers and the backend), so every cycle under way is checkpointed and
//! settled. The server depends on `runnel-stages` (server → stages → runtime), never on a
//! storage crate: the store is read through the backend trait the server was given.

use runnel_stages::{
    FeaturePipelineHandle, FeatureSpec, FeatureStore, PipelineError, PipelineStatus,
};

use crate::stages::{StageHandle, Stages};

impl StageHandle for FeaturePipelineHandle {
    type Error = PipelineError;
    fn stop(self) -> impl std::future::Future<Output = Result<(), PipelineError>> + Send {
        FeaturePipelineHandle::stop(self)
    }
}

/// The pipelines of this server, in the order of `runnel.toml`. Cheap to clone.
#[derive(Clone)]
pub struct Features {
    running: Stages<FeatureSpec, FeaturePipelineHandle>,
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

fn view(spec: &FeatureSpec, handle: Option<&FeaturePipelineHandle>) -> FeatureSet {
    FeatureSet {
        spec: spec.clone(),
        status: handle.map(FeaturePipelineHandle::status),
    }
}

impl Features {
    /// No pipelines; values are read from `store`.
    pub fn new(store: FeatureStore) -> Self {
        Self {
            running: Stages::new("feature pipeline"),
            store,
        }
    }

    /// Hands a started pipeline to the server: it is shown, served and stopped with it.
    pub fn add(&self, spec: FeatureSpec, handle: FeaturePipelineHandle) {
        self.running.add(spec.name.clone(), spec, handle);
    }

    /// The online store values are read from.
    pub fn store(&self) -> &FeatureStore {
        &self.store
    }

    /// The names of the sets, in configuration order.
    pub fn names(&self) -> Vec<String> {
        self.running.names()
    }

    /// Every set with its status.
    pub fn sets(&self) -> Vec<FeatureSet> {
        self.running.map(view)
    }

    /// One set by name.
    pub fn set(&self, name: &str) -> Option<FeatureSet> {
        self.running.find(name, view)
    }

    /// Stops every pipeline cleanly (each finishes its cycle, commits and releases its
    /// leases); errors are logged.
    pub async fn stop_all(&self) {
        self.running.stop_all().await
    }
}
