//! How the registry lays itself out in the backend's key-value store.
//!
//! Kept in one place so the layout can be read (and changed) at a glance. Three buckets; keys
//! use only characters every backend accepts (`a-z 0-9 . _ / -`; subjects are event types):
//!
//! | bucket | key | value (JSON) |
//! | --- | --- | --- |
//! | `runnel_schemas` | `<subject>/versions/<version, 10 digits>` | `{"id": 7, "deleted": false}` |
//! | `runnel_schemas` | `<subject>/head` | `{"last_version": 3}`: highest version ever given |
//! | `runnel_schema_ids` | `ids/<id, 10 digits>` | `{"schema": "<canonical text>", "schema_type": "JSON"}` |
//! | `runnel_schema_ids` | `fingerprints/<xxh3-128 of canonical text, hex>` | `{"ids": [7]}` |
//! | `runnel_schema_ids` | `next_id` | `{"next": 8}` |
//! | `runnel_schema_config` | `global`, `subjects/<subject>` | `{"compatibility": "BACKWARD"}` |
//!
//! Invariants, each kept by a compare-and-set:
//! - A version key is created with `Expect::Absent`, so two registrations never get the same
//!   version; the loser re-reads and retries (and finds its schema already there if it was
//!   the same one).
//! - `head` only grows and is raised before a version is permanently deleted, so a version
//!   number is never given to a second schema.
//! - Ids come from `next_id` by compare-and-set; a schema's id is found through its
//!   fingerprint, whose list is extended by compare-and-set, so one schema text gets one id
//!   across all subjects.

use std::sync::Arc;

use bytes::Bytes;
use runnel_backend::{Backend, BackendError, Expect, KvEntry, Revision};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::RegistryError;
use crate::mode::CompatibilityMode;

pub(crate) const SCHEMAS: &str = "runnel_schemas";
pub(crate) const IDS: &str = "runnel_schema_ids";
pub(crate) const CONFIG: &str = "runnel_schema_config";

pub(crate) const NEXT_ID_KEY: &str = "next_id";
pub(crate) const GLOBAL_CONFIG_KEY: &str = "global";

/// How many times a compare-and-set loop retries before giving up with `Contention`.
pub(crate) const MAX_ATTEMPTS: usize = 32;

pub(crate) fn versions_prefix(subject: &str) -> String {
    format!("{subject}/versions/")
}

pub(crate) fn version_key(subject: &str, version: u32) -> String {
    format!("{subject}/versions/{version:010}")
}

pub(crate) fn head_key(subject: &str) -> String {
    format!("{subject}/head")
}

pub(crate) fn id_key(id: u32) -> String {
    format!("ids/{id:010}")
}

pub(crate) fn fingerprint_key(canonical: &str) -> String {
    let hash = xxhash_rust::xxh3::xxh3_128(canonical.as_bytes());
    format!("fingerprints/{hash:032x}")
}

pub(crate) fn subject_config_key(subject: &str) -> String {
    format!("subjects/{subject}")
}

/// Splits `<subject>/versions/<n>` into its parts.
pub(crate) fn parse_version_key(key: &str) -> Option<(&str, u32)> {
    let (subject, version) = key.rsplit_once("/versions/")?;
    Some((subject, version.parse().ok()?))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VersionRecord {
    pub id: u32,
    #[serde(default)]
    pub deleted: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct HeadRecord {
    pub last_version: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct IdRecord {
    pub schema: String,
    pub schema_type: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct FingerprintRecord {
    pub ids: Vec<u32>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct CounterRecord {
    pub next: u32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct ConfigRecord {
    pub compatibility: CompatibilityMode,
}

/// One stored version of a subject.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoredVersion {
    pub version: u32,
    pub record: VersionRecord,
    pub revision: Revision,
}

/// Typed JSON access to the key-value store.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    backend: Arc<dyn Backend>,
}

impl Store {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        bucket: &'static str,
        key: &str,
    ) -> Result<Option<(T, Revision)>, RegistryError> {
        match self.backend.kv_get(bucket, key).await? {
            None => Ok(None),
            Some(entry) => Ok(Some((decode(bucket, &entry)?, entry.revision))),
        }
    }

    /// Writes `value` if `expect` holds; `Ok(None)` when the compare-and-set lost.
    pub async fn put<T: Serialize>(
        &self,
        bucket: &'static str,
        key: &str,
        value: &T,
        expect: Expect,
    ) -> Result<Option<Revision>, RegistryError> {
        let bytes = serde_json::to_vec(value).map_err(|e| RegistryError::Corrupt {
            bucket,
            key: key.to_owned(),
            message: format!("cannot encode: {e}"),
        })?;
        match self
            .backend
            .kv_put(bucket, key, Bytes::from(bytes), expect, None)
            .await
        {
            Ok(revision) => Ok(Some(revision)),
            Err(BackendError::CasConflict { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes `key` if `expect` holds; `false` when the compare-and-set lost.
    pub async fn delete(
        &self,
        bucket: &'static str,
        key: &str,
        expect: Expect,
    ) -> Result<bool, RegistryError> {
        match self.backend.kv_delete(bucket, key, expect).await {
            Ok(()) => Ok(true),
            Err(BackendError::CasConflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every live entry under `prefix`, in key order.
    pub async fn scan(
        &self,
        bucket: &'static str,
        prefix: &str,
    ) -> Result<Vec<KvEntry>, RegistryError> {
        const PAGE: usize = 1000;
        let mut all = Vec::new();
        loop {
            let start_after = all.last().map(|e: &KvEntry| e.key.clone());
            let page = self
                .backend
                .kv_scan(bucket, prefix, start_after.as_deref(), PAGE)
                .await?;
            let done = page.len() < PAGE;
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }

    /// The versions stored for `subject`, oldest first.
    pub async fn versions(&self, subject: &str) -> Result<Vec<StoredVersion>, RegistryError> {
        let entries = self.scan(SCHEMAS, &versions_prefix(subject)).await?;
        let mut versions = Vec::with_capacity(entries.len());
        for entry in entries {
            let Some((_, version)) = parse_version_key(&entry.key) else {
                continue;
            };
            versions.push(StoredVersion {
                version,
                record: decode(SCHEMAS, &entry)?,
                revision: entry.revision,
            });
        }
        versions.sort_by_key(|v| v.version);
        Ok(versions)
    }

    /// Raises `<subject>/head` to at least `version`.
    pub async fn raise_head(&self, subject: &str, version: u32) -> Result<(), RegistryError> {
        let key = head_key(subject);
        for _ in 0..MAX_ATTEMPTS {
            let current = self.get::<HeadRecord>(SCHEMAS, &key).await?;
            let expect = match &current {
                Some((head, _)) if head.last_version >= version => return Ok(()),
                Some((_, revision)) => Expect::Revision(*revision),
                None => Expect::Absent,
            };
            let head = HeadRecord {
                last_version: version,
            };
            if self.put(SCHEMAS, &key, &head, expect).await?.is_some() {
                return Ok(());
            }
        }
        Err(RegistryError::Contention { key })
    }

    /// The highest version ever given to `subject` (0 if none).
    pub async fn head(&self, subject: &str) -> Result<u32, RegistryError> {
        Ok(self
            .get::<HeadRecord>(SCHEMAS, &head_key(subject))
            .await?
            .map_or(0, |(head, _)| head.last_version))
    }
}

fn decode<T: DeserializeOwned>(bucket: &'static str, entry: &KvEntry) -> Result<T, RegistryError> {
    serde_json::from_slice(&entry.value).map_err(|e| RegistryError::Corrupt {
        bucket,
        key: entry.key.clone(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_keys_sort_numerically_and_parse_back() {
        let mut keys = [
            version_key("order.placed", 10),
            version_key("order.placed", 9),
        ];
        keys.sort();
        assert_eq!(keys[0], "order.placed/versions/0000000009");
        assert_eq!(parse_version_key(&keys[1]), Some(("order.placed", 10)));
        assert_eq!(parse_version_key("order.placed/head"), None);
    }

    #[test]
    fn keys_use_only_portable_characters() {
        let keys = [
            version_key("billing.invoice_paid", 1),
            head_key("order.placed"),
            id_key(42),
            fingerprint_key("{}"),
            subject_config_key("order.placed"),
        ];
        for key in keys {
            assert!(
                key.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._/-".contains(&b)),
                "{key}"
            );
        }
    }
}
