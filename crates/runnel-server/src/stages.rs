//! The stages a server runs beside its routes (feature pipelines, models), kept in one shape.
//!
//! The binary starts each stage over the server's runtime and hands its spec and handle to the
//! server; the routes look at them by name, in configuration order, and the server stops them
//! before its consumers and the backend. [`Stages`] holds them: a handle is taken out once,
//! when it stops, so a view of a stopped stage says so (`None`) instead of failing.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

/// A running stage's handle: stopped once, cleanly.
pub trait StageHandle: Send + 'static {
    /// Why a stop was not clean.
    type Error: std::fmt::Display;
    /// Stops the stage: work under way finishes and is settled.
    fn stop(self) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// One running stage: its spec and its handle (taken when it stops).
struct Entry<S, H> {
    name: String,
    spec: S,
    handle: Mutex<Option<H>>,
}

/// The entries, shared by the clones of one [`Stages`].
type Entries<S, H> = Arc<Mutex<Vec<Arc<Entry<S, H>>>>>;

/// The stages of one kind, in the order they were added. Cheap to clone.
pub struct Stages<S, H> {
    /// What the stages are, for log lines (`feature pipeline`, `inference stage`).
    kind: &'static str,
    running: Entries<S, H>,
}

impl<S, H> Clone for Stages<S, H> {
    fn clone(&self) -> Self {
        Self {
            kind: self.kind,
            running: self.running.clone(),
        }
    }
}

impl<S: Clone, H: StageHandle> Stages<S, H> {
    /// None yet.
    pub fn new(kind: &'static str) -> Self {
        Self {
            kind,
            running: Arc::default(),
        }
    }

    /// Adds a started stage.
    pub fn add(&self, name: String, spec: S, handle: H) {
        self.lock().push(Arc::new(Entry {
            name,
            spec,
            handle: Mutex::new(Some(handle)),
        }));
    }

    /// The names, in configuration order.
    pub fn names(&self) -> Vec<String> {
        self.lock().iter().map(|e| e.name.clone()).collect()
    }

    /// The specs, in configuration order.
    pub fn specs(&self) -> Vec<S> {
        self.lock().iter().map(|e| e.spec.clone()).collect()
    }

    /// `view` of every stage: its spec and its handle (`None` once stopped).
    pub fn map<V>(&self, view: impl Fn(&S, Option<&H>) -> V) -> Vec<V> {
        self.lock().iter().map(|e| e.view(&view)).collect()
    }

    /// `view` of the stage called `name`.
    pub fn find<V>(&self, name: &str, view: impl Fn(&S, Option<&H>) -> V) -> Option<V> {
        self.entry(name).map(|e| e.view(&view))
    }

    /// Stops every stage cleanly, in order; a stop that is not clean is logged.
    pub async fn stop_all(&self) {
        let running: Vec<Arc<Entry<S, H>>> = self.lock().clone();
        for entry in running {
            let handle = entry
                .handle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(handle) = handle
                && let Err(error) = handle.stop().await
            {
                tracing::warn!(stage = entry.name.as_str(), %error, "{} did not stop cleanly", self.kind);
            }
        }
    }

    fn entry(&self, name: &str) -> Option<Arc<Entry<S, H>>> {
        self.lock().iter().find(|e| e.name == name).cloned()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Entry<S, H>>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<S, H> Entry<S, H> {
    fn view<V>(&self, view: impl Fn(&S, Option<&H>) -> V) -> V {
        let handle = self.handle.lock().unwrap_or_else(|p| p.into_inner());
        view(&self.spec, handle.as_ref())
    }
}
