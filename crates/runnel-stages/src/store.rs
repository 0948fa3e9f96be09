//! The online feature store: the latest result per (feature set, key), for serving.
//!
//! A pipeline writes each result it publishes here; a model server reads with
//! [`FeatureStore::get`]. Entries live in the backend's key-value store (bucket
//! [`STORE_BUCKET`], key `<set>/<encoded key>`), as JSON.
//!
//! Invariant: an entry is only replaced by a result of a later window (a greater
//! `window_end`), or of the same window with a higher revision. The write reads the entry and
//! writes with a compare-and-set on its revision, retrying on a conflict, so concurrent
//! writers (two pipelines during a hand-over, a republished outbox after a crash) can never
//! put an older window's value back.
//!
//! Reads may go through an in-process cache (see [`FeatureStore::with_cache`]): entries this
//! process wrote or read, kept for a bounded age on the injected clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runnel_backend::{Backend, BackendError, Expect};
use runnel_clock::{Micros, SharedClock};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::extract::EventTime;
use crate::result::WindowResult;

/// The key-value bucket of the online feature store.
pub const STORE_BUCKET: &str = "runnel_feature_store";

/// How many times a write retries after losing a compare-and-set to a concurrent writer.
const MAX_CAS_RETRIES: usize = 16;

/// The latest value of one key's feature set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureValue {
    /// One member per aggregate, as in the result event.
    pub values: Map<String, Value>,
    /// Start of the window (inclusive), µs since the epoch.
    pub window_start: EventTime,
    /// End of the window (exclusive), µs since the epoch.
    pub window_end: EventTime,
    /// The result's revision (1, then +1 per re-emission after late events).
    pub revision: u32,
    /// The stage's watermark when the result was emitted.
    pub watermark: Option<EventTime>,
    /// When it was written, µs since the epoch (the injected clock).
    pub updated_at: Micros,
}

impl FeatureValue {
    /// The value a result sets.
    pub fn of(result: &WindowResult, watermark: Option<EventTime>, updated_at: Micros) -> Self {
        Self {
            values: result.values.clone(),
            window_start: result.window_start,
            window_end: result.window_end,
            revision: result.revision,
            watermark,
            updated_at,
        }
    }

    /// Whether this value may replace `current`: a later window, or a newer revision of the
    /// same one.
    pub fn supersedes(&self, current: &FeatureValue) -> bool {
        (self.window_end, self.window_start, self.revision)
            > (current.window_end, current.window_start, current.revision)
    }
}

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed.
    #[error("feature store `{set}/{key}`: {source}")]
    Backend {
        /// The feature set.
        set: String,
        /// The entity key.
        key: String,
        /// What the backend said.
        source: Box<BackendError>,
    },
    /// The stored value is not a feature value.
    #[error("feature store `{set}/{key}` holds an unreadable value: {reason}")]
    Damaged {
        /// The feature set.
        set: String,
        /// The entity key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Concurrent writers kept winning.
    #[error("feature store `{set}/{key}`: gave up after {MAX_CAS_RETRIES} conflicting writes")]
    Contended {
        /// The feature set.
        set: String,
        /// The entity key.
        key: String,
    },
}

type CacheMap = HashMap<(String, String), (FeatureValue, Micros)>;

#[derive(Debug)]
struct Cache {
    clock: SharedClock,
    max_age: u64,
    entries: Mutex<CacheMap>,
}

/// Reads and writes the online feature store. Cheap to clone; clones share the cache.
#[derive(Debug, Clone)]
pub struct FeatureStore {
    backend: Arc<dyn Backend>,
    cache: Option<Arc<Cache>>,
}

/// A store key: `<set>/k.<key>` when the key is made of `a-z0-9_-` (up to 128 bytes),
/// otherwise `<set>/x.<hex of its UTF-8>`, so any key fits every backend's key alphabet and no
/// two keys share one.
pub fn store_key(set: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key.len() <= 128
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if plain {
        format!("{set}/k.{key}")
    } else {
        let mut out = String::with_capacity(set.len() + 3 + 2 * key.len());
        out.push_str(set);
        out.push_str("/x.");
        for byte in key.bytes() {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }
}

impl FeatureStore {
    /// The store in `backend`, without a cache.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            cache: None,
        }
    }

    /// Keeps values this process read or wrote for up to `max_age` of `clock`'s time: a read
    /// may then miss a write made by another process for that long.
    pub fn with_cache(mut self, clock: SharedClock, max_age: Duration) -> Self {
        self.cache = Some(Arc::new(Cache {
            clock,
            max_age: u64::try_from(max_age.as_micros()).unwrap_or(u64::MAX),
            entries: Mutex::new(HashMap::new()),
        }));
        self
    }

    /// The latest value of `key` in feature set `set`.
    pub async fn get(&self, set: &str, key: &str) -> Result<Option<FeatureValue>, StoreError> {
        if let Some(cache) = &self.cache {
            let now = cache.clock.now_micros();
            let entries = cache.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((value, at)) = entries.get(&(set.to_string(), key.to_string()))
                && now.saturating_sub(*at) <= cache.max_age
            {
                return Ok(Some(value.clone()));
            }
        }
        let value = self.read(set, key).await?.map(|(value, _)| value);
        if let (Some(cache), Some(value)) = (&self.cache, &value) {
            cache.remember(set, key, value);
        }
        Ok(value)
    }

    async fn read(
        &self,
        set: &str,
        key: &str,
    ) -> Result<Option<(FeatureValue, runnel_backend::Revision)>, StoreError> {
        let entry = self
            .backend
            .kv_get(STORE_BUCKET, &store_key(set, key))
            .await
            .map_err(|source| StoreError::Backend {
                set: set.to_string(),
                key: key.to_string(),
                source: Box::new(source),
            })?;
        entry
            .map(|entry| {
                serde_json::from_slice(&entry.value)
                    .map(|value| (value, entry.revision))
                    .map_err(|e| StoreError::Damaged {
                        set: set.to_string(),
                        key: key.to_string(),
                        reason: e.to_string(),
                    })
            })
            .transpose()
    }

    /// Sets `key`'s value in `set` unless the stored one is of a later window (or a newer
    /// revision of the same window). Returns whether it was written.
    pub async fn put(
        &self,
        set: &str,
        key: &str,
        value: &FeatureValue,
    ) -> Result<bool, StoreError> {
        let store_key = store_key(set, key);
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Damaged {
            set: set.to_string(),
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        for _ in 0..MAX_CAS_RETRIES {
            let expect = match self.read(set, key).await {
                Ok(Some((current, _))) if !value.supersedes(&current) => {
                    if let Some(cache) = &self.cache {
                        cache.remember(set, key, &current);
                    }
                    return Ok(false);
                }
                Ok(Some((_, revision))) => Expect::Revision(revision),
                Ok(None) => Expect::Absent,
                // An unreadable value is replaced rather than blocking the key forever.
                Err(StoreError::Damaged { .. }) => Expect::Any,
                Err(e) => return Err(e),
            };
            match self
                .backend
                .kv_put(STORE_BUCKET, &store_key, bytes.clone().into(), expect, None)
                .await
            {
                Ok(_) => {
                    if let Some(cache) = &self.cache {
                        cache.remember(set, key, value);
                    }
                    return Ok(true);
                }
                Err(BackendError::CasConflict { .. }) => continue,
                Err(source) => {
                    return Err(StoreError::Backend {
                        set: set.to_string(),
                        key: key.to_string(),
                        source: Box::new(source),
                    });
                }
            }
        }
        Err(StoreError::Contended {
            set: set.to_string(),
            key: key.to_string(),
        })
    }
}

impl Cache {
    fn remember(&self, set: &str, key: &str, value: &FeatureValue) {
        let now = self.clock.now_micros();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let slot = entries
            .entry((set.to_string(), key.to_string()))
            .or_insert_with(|| (value.clone(), now));
        if value.supersedes(&slot.0) || slot.0 == *value {
            *slot = (value.clone(), now);
        } else {
            slot.1 = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_outside_the_plain_alphabet_are_hex_encoded_and_never_collide() {
        assert_eq!(store_key("spend", "card-1"), "spend/k.card-1");
        assert_eq!(store_key("spend", "Card 1"), "spend/x.436172642031");
        assert_ne!(store_key("spend", "x.41"), store_key("spend", "A"));
    }
}
