//! Saga instances in the backend's key-value store.
//!
//! # Layout
//!
//! ```text
//! bucket runnel_saga_instances   <saga>/<instance id>                      the instance, JSON
//! bucket runnel_saga_active      <saga>/<stream>/<partition>/<instance id>  empty: not yet an outcome
//! ```
//!
//! An instance is written with compare-and-set on the revision it was read at: of two
//! drivers applying events to one instance, one commits and the other reloads and applies
//! its event to what the first wrote. Every transition is written before the commands it
//! issued are published. The active index lists, by the partition its trigger was read
//! from (its *home*), the instances whose timers the owner of that partition runs; it is
//! written after the instance is created and removed after the instance reaches an outcome
//! (a crash in between leaves an entry that the next timer pass removes).
//!
//! The instance is stored whole, with its timeline (no history cap): an instance must stay
//! under the backend's value limit (JetStream's `max_payload`, 1 MiB by default), which is
//! thousands of retries.

use std::sync::Arc;

use bytes::Bytes;
use runnel_backend::{Backend, BackendError, Expect, Revision};

use crate::machine::{Instance, SagaState};

/// The key-value bucket of saga instances.
pub const INSTANCE_BUCKET: &str = "runnel_saga_instances";

/// The key-value bucket of instances not yet at an outcome, by home partition.
pub const ACTIVE_BUCKET: &str = "runnel_saga_active";

const PAGE: usize = 1000;

/// Why an instance could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed.
    #[error("saga instance `{key}`: {source}")]
    Backend {
        /// The instance's key.
        key: String,
        /// What the backend said.
        source: Box<BackendError>,
    },
    /// Another driver wrote the instance since it was read.
    #[error("saga instance `{key}` was changed by another driver")]
    Fenced {
        /// The instance's key.
        key: String,
    },
    /// The stored bytes are not an instance.
    #[error("saga instance `{key}` is damaged: {reason}")]
    Damaged {
        /// The instance's key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// An instance as read, with the revision a write must expect.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The instance.
    pub instance: Instance,
    /// Its revision.
    pub revision: Revision,
}

/// The instances of every saga, over a backend.
#[derive(Clone)]
pub struct InstanceStore {
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for InstanceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceStore").finish_non_exhaustive()
    }
}

fn key(saga: &str, id: &str) -> String {
    format!("{saga}/{id}")
}

fn active_key(instance: &Instance) -> String {
    format!(
        "{}/{}/{}/{}",
        instance.saga, instance.trigger.stream, instance.trigger.partition, instance.id
    )
}

impl InstanceStore {
    /// The store over `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }

    fn failed(key: &str) -> impl Fn(BackendError) -> StoreError + '_ {
        move |source| StoreError::Backend {
            key: key.to_string(),
            source: Box::new(source),
        }
    }

    fn decode(key: &str, value: &[u8]) -> Result<Instance, StoreError> {
        serde_json::from_slice(value).map_err(|e| StoreError::Damaged {
            key: key.to_string(),
            reason: e.to_string(),
        })
    }

    fn encode(instance: &Instance) -> Result<Bytes, StoreError> {
        serde_json::to_vec(instance)
            .map(Bytes::from)
            .map_err(|e| StoreError::Damaged {
                key: key(&instance.saga, &instance.id),
                reason: format!("cannot encode: {e}"),
            })
    }

    /// The instance `id` of saga `saga`, if it exists.
    pub async fn get(&self, saga: &str, id: &str) -> Result<Option<Stored>, StoreError> {
        let key = key(saga, id);
        let Some(entry) = self
            .backend
            .kv_get(INSTANCE_BUCKET, &key)
            .await
            .map_err(Self::failed(&key))?
        else {
            return Ok(None);
        };
        Ok(Some(Stored {
            instance: Self::decode(&key, &entry.value)?,
            revision: entry.revision,
        }))
    }

    /// Writes a new instance; `None` if one with its id exists already (the trigger was
    /// delivered again).
    pub async fn create(&self, instance: &Instance) -> Result<Option<Revision>, StoreError> {
        let key = key(&instance.saga, &instance.id);
        match self
            .backend
            .kv_put(
                INSTANCE_BUCKET,
                &key,
                Self::encode(instance)?,
                Expect::Absent,
                None,
            )
            .await
        {
            Ok(revision) => Ok(Some(revision)),
            Err(BackendError::CasConflict { .. }) => Ok(None),
            Err(e) => Err(Self::failed(&key)(e)),
        }
    }

    /// Writes `instance` over the revision it was read at.
    pub async fn update(
        &self,
        instance: &Instance,
        revision: Revision,
    ) -> Result<Revision, StoreError> {
        let key = key(&instance.saga, &instance.id);
        match self
            .backend
            .kv_put(
                INSTANCE_BUCKET,
                &key,
                Self::encode(instance)?,
                Expect::Revision(revision),
                None,
            )
            .await
        {
            Ok(revision) => Ok(revision),
            Err(BackendError::CasConflict { .. }) => Err(StoreError::Fenced { key }),
            Err(e) => Err(Self::failed(&key)(e)),
        }
    }

    /// Lists `instance` in its home partition's active index.
    pub async fn activate(&self, instance: &Instance) -> Result<(), StoreError> {
        let key = active_key(instance);
        self.backend
            .kv_put(ACTIVE_BUCKET, &key, Bytes::new(), Expect::Any, None)
            .await
            .map(|_| ())
            .map_err(Self::failed(&key))
    }

    /// Removes `instance` from the active index.
    pub async fn deactivate(&self, instance: &Instance) -> Result<(), StoreError> {
        let key = active_key(instance);
        self.backend
            .kv_delete(ACTIVE_BUCKET, &key, Expect::Any)
            .await
            .map_err(Self::failed(&key))
    }

    /// Ids of the active instances of `saga` whose trigger came from `stream`/`partition`.
    pub async fn active(
        &self,
        saga: &str,
        stream: &str,
        partition: u32,
    ) -> Result<Vec<String>, StoreError> {
        let prefix = format!("{saga}/{stream}/{partition}/");
        let mut ids = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .backend
                .kv_scan(ACTIVE_BUCKET, &prefix, after.as_deref(), PAGE)
                .await
                .map_err(Self::failed(&prefix))?;
            let full = page.len() == PAGE;
            after = page.last().map(|e| e.key.clone());
            ids.extend(
                page.into_iter()
                    .filter_map(|e| e.key.strip_prefix(&prefix).map(str::to_string)),
            );
            if !full {
                return Ok(ids);
            }
        }
    }

    /// Instances of `saga` in key order after `after`, at most `limit`, those in `state`
    /// only if given.
    pub async fn list(
        &self,
        saga: &str,
        state: Option<SagaState>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Instance>, StoreError> {
        let prefix = format!("{saga}/");
        let mut found = Vec::new();
        let mut cursor = after.map(|id| key(saga, id));
        while found.len() < limit {
            let page = self
                .backend
                .kv_scan(INSTANCE_BUCKET, &prefix, cursor.as_deref(), PAGE)
                .await
                .map_err(Self::failed(&prefix))?;
            let full = page.len() == PAGE;
            cursor = page.last().map(|e| e.key.clone());
            for entry in page {
                let instance = Self::decode(&entry.key, &entry.value)?;
                if state.is_none_or(|s| s == instance.state) {
                    found.push(instance);
                    if found.len() == limit {
                        break;
                    }
                }
            }
            if !full {
                break;
            }
        }
        Ok(found)
    }
}
