//! The registry: subjects (event types) with immutable, numbered schema versions, global
//! schema ids, per-subject compatibility, validation and adaptation between versions.
//!
//! All state is in the backend's key-value store (layout in [`crate::store`]), so it survives
//! restarts and is shared by every node on a shared backend. In memory the registry keeps
//! only what can never change: schemas by id (compiled once) and which id a subject's version
//! holds. Resolving "latest" reads the store each time (one prefix scan), so a version
//! registered on another node is seen at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use runnel_backend::{Backend, Expect};
use runnel_envelope::{EventType, JsonData};
use serde_json::Value;

use crate::document::SchemaDoc;
use crate::error::{InvalidSchema, RegistryError, ValidationError};
use crate::mode::{self, CompatibilityMode, Verdict};
use crate::store::{
    self, CONFIG, ConfigRecord, CounterRecord, FingerprintRecord, GLOBAL_CONFIG_KEY, IDS, IdRecord,
    MAX_ATTEMPTS, NEXT_ID_KEY, SCHEMAS, Store, StoredVersion, VersionRecord,
};
use crate::{SchemaId, VersionRef};

type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Settings of a registry. The per-subject and global compatibility live in the store; these
/// are the process's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// The compatibility mode when neither the subject nor the global config sets one.
    /// Default `BACKWARD`.
    pub default_compatibility: CompatibilityMode,
    /// Whether [`SchemaRegistry::validate`] rejects data of a subject with no schema
    /// ([`ValidationError::NoSchema`]) instead of letting it through. Default `false`.
    pub require_schema: bool,
    /// The largest schema text accepted, in bytes. Default 1 MiB.
    pub max_schema_bytes: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            default_compatibility: CompatibilityMode::Backward,
            require_schema: false,
            max_schema_bytes: 1 << 20,
        }
    }
}

/// The id and version a registration landed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Registered {
    pub id: SchemaId,
    pub version: u32,
}

/// One version of a subject.
#[derive(Debug, Clone)]
pub struct SubjectVersion {
    pub subject: EventType,
    pub version: u32,
    pub id: SchemaId,
    /// Soft deleted: hidden from listings, still usable for events written with it.
    pub deleted: bool,
    pub schema: Arc<SchemaDoc>,
}

/// The schema registry. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct SchemaRegistry {
    store: Store,
    config: RegistryConfig,
    /// Schemas by id: immutable once written.
    by_id: RwLock<HashMap<SchemaId, Arc<SchemaDoc>>>,
    /// Which id a subject's version holds: immutable once written.
    version_ids: RwLock<HashMap<(EventType, u32), SchemaId>>,
    /// Bumped by every registration or deletion through this registry, so callers caching
    /// "the latest version" know when to look again.
    changes: std::sync::atomic::AtomicU64,
}

impl SchemaRegistry {
    pub fn new(backend: Arc<dyn Backend>, config: RegistryConfig) -> Self {
        Self {
            store: Store::new(backend),
            config,
            by_id: RwLock::new(HashMap::new()),
            version_ids: RwLock::new(HashMap::new()),
            changes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A counter that changes whenever a version is registered or deleted through this
    /// registry (changes made by other processes are not counted).
    pub fn generation(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn changed(&self) {
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// The process settings this registry was built with.
    pub fn settings(&self) -> &RegistryConfig {
        &self.config
    }

    /// Parses and checks a schema text with this registry's size limit.
    pub fn parse_schema(&self, text: &str) -> Result<Arc<SchemaDoc>, InvalidSchema> {
        SchemaDoc::parse(text, self.config.max_schema_bytes)
    }

    // ---- registration -------------------------------------------------------------------

    /// Registers a schema (JSON text) under `subject`. Registering a schema identical (up to
    /// key order and whitespace) to a live version returns that version; otherwise the schema
    /// must be compatible with the earlier versions under the subject's mode, and becomes the
    /// next version. The same schema text has the same id under every subject. In every
    /// mode, a schema whose `default`s break their own schema is refused
    /// ([`SchemaDoc::check_defaults`]).
    pub async fn register(&self, subject: &EventType, schema: &str) -> Result<Registered> {
        let doc = self.parse_schema(schema)?;
        self.register_doc(subject, doc).await
    }

    /// [`Self::register`] for a schema already parsed.
    pub async fn register_doc(
        &self,
        subject: &EventType,
        doc: Arc<SchemaDoc>,
    ) -> Result<Registered> {
        doc.check_defaults()?;
        for _ in 0..MAX_ATTEMPTS {
            // `head` before the versions: a version key is written before `head` is raised,
            // so this snapshot's head never runs ahead of its versions, and a version number
            // computed from stale data collides (and retries) instead of skipping ahead.
            let head = self.store.head(subject.as_str()).await?;
            let versions = self.store.versions(subject.as_str()).await?;
            if let Some(existing) = self.find_live(subject, &versions, &doc).await? {
                return Ok(existing);
            }
            let mode = self.config(Some(subject)).await?;
            let verdict = self.verdict_against_history(&versions, mode, &doc).await?;
            if !verdict.compatible {
                return Err(RegistryError::Incompatible {
                    subject: subject.to_string(),
                    mode,
                    reasons: verdict.reasons,
                });
            }
            let id = self.ensure_id(&doc).await?;
            let newest = versions.last().map_or(0, |v| v.version);
            let version = head.max(newest) + 1;
            let record = VersionRecord {
                id: id.0,
                deleted: false,
            };
            let key = store::version_key(subject.as_str(), version);
            if self
                .store
                .put(SCHEMAS, &key, &record, Expect::Absent)
                .await?
                .is_none()
            {
                continue; // another registration took this version: look again
            }
            self.store.raise_head(subject.as_str(), version).await?;
            self.remember_version(subject, version, id);
            self.changed();
            tracing::info!(%subject, version, id = id.0, "schema registered");
            return Ok(Registered { id, version });
        }
        Err(RegistryError::Contention {
            key: store::versions_prefix(subject.as_str()),
        })
    }

    /// The live version of `subject` holding exactly `doc`, if any.
    async fn find_live(
        &self,
        subject: &EventType,
        versions: &[StoredVersion],
        doc: &SchemaDoc,
    ) -> Result<Option<Registered>> {
        let Some(id) = self.find_id(doc).await? else {
            return Ok(None);
        };
        Ok(versions
            .iter()
            .rev()
            .find(|v| !v.record.deleted && v.record.id == id.0)
            .map(|v| {
                self.remember_version(subject, v.version, id);
                Registered {
                    id,
                    version: v.version,
                }
            }))
    }

    async fn verdict_against_history(
        &self,
        versions: &[StoredVersion],
        mode: CompatibilityMode,
        doc: &SchemaDoc,
    ) -> Result<Verdict> {
        if mode == CompatibilityMode::None {
            return Ok(Verdict::compatible());
        }
        let live: Vec<&StoredVersion> = versions.iter().filter(|v| !v.record.deleted).collect();
        let needed: &[&StoredVersion] = if mode.is_transitive() {
            &live
        } else {
            live.last().map(std::slice::from_ref).unwrap_or_default()
        };
        let mut docs = Vec::with_capacity(needed.len());
        for v in needed {
            docs.push((v.version, self.by_id(SchemaId(v.record.id)).await?));
        }
        let history: Vec<(u32, &Value)> = docs.iter().map(|(v, d)| (*v, d.value())).collect();
        Ok(mode::check(mode, doc.value(), &history))
    }

    /// The id of `doc` if some subject registered it.
    async fn find_id(&self, doc: &SchemaDoc) -> Result<Option<SchemaId>> {
        let key = store::fingerprint_key(doc.canonical());
        let Some((record, _)) = self.store.get::<FingerprintRecord>(IDS, &key).await? else {
            return Ok(None);
        };
        for id in record.ids {
            let id = SchemaId(id);
            if self.by_id(id).await?.canonical() == doc.canonical() {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// The id of `doc`, giving it a new one if no subject registered it yet.
    async fn ensure_id(&self, doc: &Arc<SchemaDoc>) -> Result<SchemaId> {
        let key = store::fingerprint_key(doc.canonical());
        for _ in 0..MAX_ATTEMPTS {
            let current = self.store.get::<FingerprintRecord>(IDS, &key).await?;
            if let Some((record, _)) = &current {
                for id in &record.ids {
                    let id = SchemaId(*id);
                    if self.by_id(id).await?.canonical() == doc.canonical() {
                        return Ok(id);
                    }
                }
            }
            let id = self.allocate_id().await?;
            let id_record = IdRecord {
                schema: doc.canonical().to_owned(),
                schema_type: "JSON".into(),
            };
            let id_key = store::id_key(id.0);
            if self
                .store
                .put(IDS, &id_key, &id_record, Expect::Absent)
                .await?
                .is_none()
            {
                return Err(RegistryError::Corrupt {
                    bucket: IDS,
                    key: id_key,
                    message: "a freshly allocated id is already taken".into(),
                });
            }
            let (mut record, expect) = match current {
                Some((record, revision)) => (record, Expect::Revision(revision)),
                None => (FingerprintRecord::default(), Expect::Absent),
            };
            record.ids.push(id.0);
            if self.store.put(IDS, &key, &record, expect).await?.is_some() {
                self.by_id_cache_insert(id, doc.clone());
                return Ok(id);
            }
            // Someone registered a schema with this fingerprint meanwhile (most likely this
            // very schema): give the id back and look again.
            self.store.delete(IDS, &id_key, Expect::Any).await?;
        }
        Err(RegistryError::Contention { key })
    }

    async fn allocate_id(&self) -> Result<SchemaId> {
        for _ in 0..MAX_ATTEMPTS {
            let current = self.store.get::<CounterRecord>(IDS, NEXT_ID_KEY).await?;
            let (next, expect) = match current {
                Some((counter, revision)) => (counter.next, Expect::Revision(revision)),
                None => (1, Expect::Absent),
            };
            let bumped = CounterRecord { next: next + 1 };
            if self
                .store
                .put(IDS, NEXT_ID_KEY, &bumped, expect)
                .await?
                .is_some()
            {
                return Ok(SchemaId(next));
            }
        }
        Err(RegistryError::Contention {
            key: NEXT_ID_KEY.into(),
        })
    }

    // ---- reading ------------------------------------------------------------------------

    /// A live version of `subject` (`Latest` is the newest live one).
    pub async fn get(&self, subject: &EventType, version: VersionRef) -> Result<SubjectVersion> {
        self.get_with(subject, version, false).await
    }

    /// Like [`Self::get`], also finding soft-deleted versions (`Latest` is then the newest of
    /// all).
    pub async fn get_including_deleted(
        &self,
        subject: &EventType,
        version: VersionRef,
    ) -> Result<SubjectVersion> {
        self.get_with(subject, version, true).await
    }

    async fn get_with(
        &self,
        subject: &EventType,
        version: VersionRef,
        include_deleted: bool,
    ) -> Result<SubjectVersion> {
        let versions = self.store.versions(subject.as_str()).await?;
        let stored = resolve_version(subject, &versions, version, include_deleted)?;
        self.subject_version(subject, stored).await
    }

    async fn subject_version(
        &self,
        subject: &EventType,
        stored: StoredVersion,
    ) -> Result<SubjectVersion> {
        let id = SchemaId(stored.record.id);
        self.remember_version(subject, stored.version, id);
        Ok(SubjectVersion {
            subject: subject.clone(),
            version: stored.version,
            id,
            deleted: stored.record.deleted,
            schema: self.by_id(id).await?,
        })
    }

    /// The live version numbers of `subject`, ascending; [`RegistryError::SubjectNotFound`]
    /// when it has none.
    pub async fn versions(&self, subject: &EventType) -> Result<Vec<u32>> {
        self.versions_with(subject, false).await
    }

    /// Every version number of `subject`, soft-deleted ones included.
    pub async fn versions_including_deleted(&self, subject: &EventType) -> Result<Vec<u32>> {
        self.versions_with(subject, true).await
    }

    async fn versions_with(&self, subject: &EventType, include_deleted: bool) -> Result<Vec<u32>> {
        let versions: Vec<u32> = self
            .store
            .versions(subject.as_str())
            .await?
            .into_iter()
            .filter(|v| include_deleted || !v.record.deleted)
            .map(|v| v.version)
            .collect();
        if versions.is_empty() {
            return Err(subject_not_found(subject));
        }
        Ok(versions)
    }

    /// Subjects with at least one live version, sorted.
    pub async fn subjects(&self) -> Result<Vec<EventType>> {
        self.subjects_with(false).await
    }

    /// Subjects with any stored version, soft-deleted ones included.
    pub async fn subjects_including_deleted(&self) -> Result<Vec<EventType>> {
        self.subjects_with(true).await
    }

    async fn subjects_with(&self, include_deleted: bool) -> Result<Vec<EventType>> {
        let mut subjects = BTreeSet::new();
        for entry in self.store.scan(SCHEMAS, "").await? {
            let Some((subject, _)) = store::parse_version_key(&entry.key) else {
                continue;
            };
            if !include_deleted {
                let record: VersionRecord =
                    serde_json::from_slice(&entry.value).map_err(|e| RegistryError::Corrupt {
                        bucket: SCHEMAS,
                        key: entry.key.clone(),
                        message: e.to_string(),
                    })?;
                if record.deleted {
                    continue;
                }
            }
            if let Ok(subject) = EventType::new(subject) {
                subjects.insert(subject);
            }
        }
        Ok(subjects.into_iter().collect())
    }

    /// The schema with global id `id`. Ids stay valid after the versions holding them are
    /// deleted, since events written with them may still be in the log.
    pub async fn by_id(&self, id: SchemaId) -> Result<Arc<SchemaDoc>> {
        if let Some(doc) = self.read_cache(&self.by_id, &id) {
            return Ok(doc);
        }
        let key = store::id_key(id.0);
        let Some((record, _)) = self.store.get::<IdRecord>(IDS, &key).await? else {
            return Err(RegistryError::SchemaIdNotFound { id });
        };
        let doc = SchemaDoc::from_value(serde_json::from_str(&record.schema).map_err(|e| {
            RegistryError::Corrupt {
                bucket: IDS,
                key: key.clone(),
                message: e.to_string(),
            }
        })?)
        .map_err(|e| RegistryError::Corrupt {
            bucket: IDS,
            key,
            message: e.to_string(),
        })?;
        self.by_id_cache_insert(id, doc.clone());
        Ok(doc)
    }

    /// Every `(subject, version)` holding schema `id`, live ones only.
    pub async fn subjects_for_id(&self, id: SchemaId) -> Result<Vec<(EventType, u32)>> {
        self.subjects_for_id_with(id, false).await
    }

    /// Every `(subject, version)` holding schema `id`, soft-deleted ones included.
    pub async fn subjects_for_id_including_deleted(
        &self,
        id: SchemaId,
    ) -> Result<Vec<(EventType, u32)>> {
        self.subjects_for_id_with(id, true).await
    }

    async fn subjects_for_id_with(
        &self,
        id: SchemaId,
        include_deleted: bool,
    ) -> Result<Vec<(EventType, u32)>> {
        let mut found = Vec::new();
        for entry in self.store.scan(SCHEMAS, "").await? {
            let Some((subject, version)) = store::parse_version_key(&entry.key) else {
                continue;
            };
            let Ok(record) = serde_json::from_slice::<VersionRecord>(&entry.value) else {
                continue;
            };
            if record.id == id.0
                && (include_deleted || !record.deleted)
                && let Ok(subject) = EventType::new(subject)
            {
                found.push((subject, version));
            }
        }
        Ok(found)
    }

    /// The version of `subject` holding exactly `schema` (up to key order and whitespace).
    pub async fn lookup(&self, subject: &EventType, schema: &str) -> Result<SubjectVersion> {
        self.lookup_with(subject, schema, false).await
    }

    /// [`Self::lookup`], optionally among soft-deleted versions too.
    pub async fn lookup_with(
        &self,
        subject: &EventType,
        schema: &str,
        include_deleted: bool,
    ) -> Result<SubjectVersion> {
        let doc = self.parse_schema(schema)?;
        let versions = self.store.versions(subject.as_str()).await?;
        if !versions
            .iter()
            .any(|v| include_deleted || !v.record.deleted)
        {
            return Err(subject_not_found(subject));
        }
        let Some(id) = self.find_id(&doc).await? else {
            return Err(RegistryError::SchemaNotInSubject {
                subject: subject.to_string(),
            });
        };
        let found = versions
            .iter()
            .rev()
            .find(|v| v.record.id == id.0 && (include_deleted || !v.record.deleted))
            .copied()
            .ok_or_else(|| RegistryError::SchemaNotInSubject {
                subject: subject.to_string(),
            })?;
        self.subject_version(subject, found).await
    }

    // ---- deleting -----------------------------------------------------------------------

    /// Deletes one version: soft (hidden from listings and from compatibility checks, still
    /// usable by events written with it) or, once soft deleted, `permanent`. Returns the
    /// version number. A permanently deleted number is never given again.
    pub async fn delete_version(
        &self,
        subject: &EventType,
        version: VersionRef,
        permanent: bool,
    ) -> Result<u32> {
        self.changed();
        let versions = self.store.versions(subject.as_str()).await?;
        // A soft delete of `latest` means the newest live version; a number may name a
        // soft-deleted one, which is then reported as such.
        let include_deleted = permanent || matches!(version, VersionRef::Number(_));
        let stored = resolve_version(subject, &versions, version, include_deleted)?;
        let key = store::version_key(subject.as_str(), stored.version);
        if permanent {
            if !stored.record.deleted {
                return Err(RegistryError::VersionNotSoftDeleted {
                    subject: subject.to_string(),
                    version: stored.version,
                });
            }
            self.store
                .raise_head(subject.as_str(), stored.version)
                .await?;
            if !self
                .store
                .delete(SCHEMAS, &key, Expect::Revision(stored.revision))
                .await?
            {
                return Err(RegistryError::Contention { key });
            }
            self.forget_version(subject, stored.version);
        } else {
            if stored.record.deleted {
                return Err(RegistryError::VersionSoftDeleted {
                    subject: subject.to_string(),
                    version: stored.version,
                });
            }
            let record = VersionRecord {
                deleted: true,
                ..stored.record
            };
            if self
                .store
                .put(SCHEMAS, &key, &record, Expect::Revision(stored.revision))
                .await?
                .is_none()
            {
                return Err(RegistryError::Contention { key });
            }
        }
        tracing::info!(%subject, version = stored.version, permanent, "schema version deleted");
        Ok(stored.version)
    }

    /// Deletes every version of a subject, soft or (once all are soft deleted) permanent;
    /// returns the version numbers deleted. A permanent delete also removes the subject's
    /// compatibility setting.
    pub async fn delete_subject(&self, subject: &EventType, permanent: bool) -> Result<Vec<u32>> {
        self.changed();
        let versions = self.store.versions(subject.as_str()).await?;
        if versions.is_empty() {
            return Err(subject_not_found(subject));
        }
        let mut deleted = Vec::new();
        if permanent {
            if versions.iter().any(|v| !v.record.deleted) {
                return Err(RegistryError::SubjectNotSoftDeleted {
                    subject: subject.to_string(),
                });
            }
            let newest = versions.last().map_or(0, |v| v.version);
            self.store.raise_head(subject.as_str(), newest).await?;
            for v in &versions {
                let key = store::version_key(subject.as_str(), v.version);
                if !self
                    .store
                    .delete(SCHEMAS, &key, Expect::Revision(v.revision))
                    .await?
                {
                    return Err(RegistryError::Contention { key });
                }
                self.forget_version(subject, v.version);
                deleted.push(v.version);
            }
            self.store
                .delete(
                    CONFIG,
                    &store::subject_config_key(subject.as_str()),
                    Expect::Any,
                )
                .await?;
        } else {
            let live: Vec<&StoredVersion> = versions.iter().filter(|v| !v.record.deleted).collect();
            if live.is_empty() {
                return Err(RegistryError::SubjectSoftDeleted {
                    subject: subject.to_string(),
                });
            }
            for v in live {
                let key = store::version_key(subject.as_str(), v.version);
                let record = VersionRecord {
                    deleted: true,
                    ..v.record
                };
                if self
                    .store
                    .put(SCHEMAS, &key, &record, Expect::Revision(v.revision))
                    .await?
                    .is_none()
                {
                    return Err(RegistryError::Contention { key });
                }
                deleted.push(v.version);
            }
        }
        tracing::info!(%subject, ?deleted, permanent, "subject deleted");
        Ok(deleted)
    }

    // ---- compatibility ------------------------------------------------------------------

    /// Checks `schema` against one version of `subject` in the directions the subject's mode
    /// asks for (transitivity does not apply to a single version; `NONE` is always
    /// compatible).
    pub async fn check_compatibility(
        &self,
        subject: &EventType,
        version: VersionRef,
        schema: &str,
    ) -> Result<Verdict> {
        let doc = self.parse_schema(schema)?;
        doc.check_defaults()?;
        let old = self.get(subject, version).await?;
        let mode = self.config(Some(subject)).await?;
        Ok(mode::check_one(mode, doc.value(), old.schema.value()))
    }

    /// Checks `schema` as registration would: against the latest live version, or all of
    /// them in a transitive mode. A subject without versions is compatible.
    pub async fn check_compatibility_all(
        &self,
        subject: &EventType,
        schema: &str,
    ) -> Result<Verdict> {
        let doc = self.parse_schema(schema)?;
        doc.check_defaults()?;
        let versions = self.store.versions(subject.as_str()).await?;
        let mode = self.config(Some(subject)).await?;
        self.verdict_against_history(&versions, mode, &doc).await
    }

    // ---- configuration ------------------------------------------------------------------

    /// The mode in force for `subject` (its own, else the global one, else the default), or
    /// the global one for `None`.
    pub async fn config(&self, subject: Option<&EventType>) -> Result<CompatibilityMode> {
        if let Some(subject) = subject
            && let Some(mode) = self.subject_config(subject).await?
        {
            return Ok(mode);
        }
        Ok(self
            .store
            .get::<ConfigRecord>(CONFIG, GLOBAL_CONFIG_KEY)
            .await?
            .map_or(self.config.default_compatibility, |(r, _)| r.compatibility))
    }

    /// The mode set on `subject` itself, if any.
    pub async fn subject_config(&self, subject: &EventType) -> Result<Option<CompatibilityMode>> {
        Ok(self
            .store
            .get::<ConfigRecord>(CONFIG, &store::subject_config_key(subject.as_str()))
            .await?
            .map(|(r, _)| r.compatibility))
    }

    /// Sets the mode of `subject`, or the global one for `None`.
    pub async fn set_config(
        &self,
        subject: Option<&EventType>,
        mode: CompatibilityMode,
    ) -> Result<()> {
        let key = config_key(subject);
        let record = ConfigRecord {
            compatibility: mode,
        };
        self.store.put(CONFIG, &key, &record, Expect::Any).await?;
        Ok(())
    }

    /// Removes the mode of `subject` (which then follows the global one), or resets the
    /// global one to the default for `None`. Returns the mode that was set.
    pub async fn delete_config(
        &self,
        subject: Option<&EventType>,
    ) -> Result<Option<CompatibilityMode>> {
        let key = config_key(subject);
        let previous = self
            .store
            .get::<ConfigRecord>(CONFIG, &key)
            .await?
            .map(|(r, _)| r.compatibility);
        self.store.delete(CONFIG, &key, Expect::Any).await?;
        Ok(previous)
    }

    // ---- data -----------------------------------------------------------------------------

    /// Validates event data against `version` of `subject` (the latest live version when
    /// `None`, see [`Self::latest_for_validation`]), listing every failing path. Returns the
    /// version validated against, or `None` when the subject has no schema at all and
    /// `require_schema` is off. A soft-deleted version still validates the events written
    /// with it.
    pub async fn validate(
        &self,
        subject: &EventType,
        version: Option<u32>,
        data: &Value,
    ) -> Result<Option<u32>, ValidationError> {
        let found = match version {
            Some(version) => match self.schema_at(subject, version).await {
                Ok(doc) => Some((version, doc)),
                Err(RegistryError::SubjectNotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            },
            None => match self.latest_live(subject).await? {
                Some(v) => Some((v.version, self.by_id(SchemaId(v.record.id)).await?)),
                None => None,
            },
        };
        let Some((version, doc)) = found else {
            if self.config.require_schema {
                return Err(ValidationError::NoSchema {
                    subject: subject.to_string(),
                });
            }
            return Ok(None);
        };
        let errors = doc.errors(data);
        if errors.is_empty() {
            Ok(Some(version))
        } else {
            Err(ValidationError::Invalid {
                subject: subject.to_string(),
                version,
                errors,
            })
        }
    }

    /// The version data naming none is validated against: the newest live version of
    /// `subject`, or `None` when the subject has no versions at all (never registered, or
    /// deleted permanently). When every version is soft deleted there is none, and the
    /// subject has not gone either: [`ValidationError::SubjectDeleted`], so data stops being
    /// let through unchecked until a schema is registered again (as a Confluent serializer
    /// stops finding the subject's latest schema).
    pub async fn latest_for_validation(
        &self,
        subject: &EventType,
    ) -> Result<Option<u32>, ValidationError> {
        Ok(self.latest_live(subject).await?.map(|v| v.version))
    }

    async fn latest_live(
        &self,
        subject: &EventType,
    ) -> Result<Option<StoredVersion>, ValidationError> {
        let versions = self.store.versions(subject.as_str()).await?;
        match versions.iter().rev().find(|v| !v.record.deleted) {
            Some(live) => Ok(Some(*live)),
            None if versions.is_empty() => Ok(None),
            None => Err(ValidationError::SubjectDeleted {
                subject: subject.to_string(),
            }),
        }
    }

    /// Turns data written with version `from` into what a consumer pinned to version `to`
    /// reads: upcast (missing properties filled from `to`'s defaults) or downcast (properties
    /// `to` does not declare removed), recursively. Works on the data's text: every value it
    /// does not change keeps its text (see [`crate::adapt`]). Unknown versions are
    /// [`ValidationError::Registry`].
    pub async fn adapt(
        &self,
        subject: &EventType,
        from: u32,
        to: u32,
        data: &JsonData,
    ) -> Result<JsonData, ValidationError> {
        let target = self.schema_at(subject, to).await?;
        if from == to {
            return Ok(data.clone());
        }
        self.schema_at(subject, from).await?;
        // The text of `JsonData` is JSON by construction; should it not be, it is invalid
        // data, not a registry failure.
        let unreadable = |message: String| ValidationError::Invalid {
            subject: subject.to_string(),
            version: from,
            errors: vec![crate::FieldError {
                path: String::new(),
                message,
            }],
        };
        let text =
            std::str::from_utf8(data.text()).map_err(|e| unreadable(format!("not UTF-8: {e}")))?;
        match crate::adapt::resolve_text(target.value(), text)
            .map_err(|e| unreadable(format!("not JSON: {e}")))?
        {
            Some(adapted) => JsonData::from_text(adapted.into())
                .map_err(|e| unreadable(format!("not JSON once adapted: {e}"))),
            None => Ok(data.clone()),
        }
    }

    /// The schema of `version` of `subject`, soft-deleted or not; cached.
    async fn schema_at(&self, subject: &EventType, version: u32) -> Result<Arc<SchemaDoc>> {
        let cached = self.read_cache(&self.version_ids, &(subject.clone(), version));
        if let Some(id) = cached {
            return self.by_id(id).await;
        }
        let key = store::version_key(subject.as_str(), version);
        match self.store.get::<VersionRecord>(SCHEMAS, &key).await? {
            Some((record, _)) => {
                let id = SchemaId(record.id);
                self.remember_version(subject, version, id);
                self.by_id(id).await
            }
            None => {
                let any = !self.store.versions(subject.as_str()).await?.is_empty();
                Err(if any {
                    RegistryError::VersionNotFound {
                        subject: subject.to_string(),
                        version: VersionRef::Number(version),
                    }
                } else {
                    subject_not_found(subject)
                })
            }
        }
    }

    /// The next version number `subject` would get.
    pub(crate) async fn next_version(&self, subject: &EventType) -> Result<u32> {
        let head = self.store.head(subject.as_str()).await?;
        let newest = self
            .store
            .versions(subject.as_str())
            .await?
            .last()
            .map_or(0, |v| v.version);
        Ok(head.max(newest) + 1)
    }

    /// The live version of `subject` holding `doc`, if any.
    pub(crate) async fn find_version_of(
        &self,
        subject: &EventType,
        doc: &SchemaDoc,
    ) -> Result<Option<Registered>> {
        let versions = self.store.versions(subject.as_str()).await?;
        self.find_live(subject, &versions, doc).await
    }

    // ---- caches ---------------------------------------------------------------------------

    fn read_cache<K: std::hash::Hash + Eq, V: Clone>(
        &self,
        cache: &RwLock<HashMap<K, V>>,
        key: &K,
    ) -> Option<V> {
        cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    fn by_id_cache_insert(&self, id: SchemaId, doc: Arc<SchemaDoc>) {
        self.by_id
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, doc);
    }

    fn remember_version(&self, subject: &EventType, version: u32, id: SchemaId) {
        self.version_ids
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((subject.clone(), version), id);
    }

    fn forget_version(&self, subject: &EventType, version: u32) {
        self.version_ids
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&(subject.clone(), version));
    }
}

fn config_key(subject: Option<&EventType>) -> String {
    match subject {
        Some(subject) => store::subject_config_key(subject.as_str()),
        None => GLOBAL_CONFIG_KEY.to_owned(),
    }
}

fn subject_not_found(subject: &EventType) -> RegistryError {
    RegistryError::SubjectNotFound {
        subject: subject.to_string(),
    }
}

/// Picks a stored version by reference: `SubjectNotFound` when the subject has no
/// (visible) versions, `VersionNotFound` when it has but not this one.
fn resolve_version(
    subject: &EventType,
    versions: &[StoredVersion],
    version: VersionRef,
    include_deleted: bool,
) -> Result<StoredVersion> {
    let visible = |v: &&StoredVersion| include_deleted || !v.record.deleted;
    if !versions.iter().any(|v| visible(&v)) {
        return Err(subject_not_found(subject));
    }
    let found = match version {
        VersionRef::Latest => versions.iter().rev().find(visible),
        VersionRef::Number(n) => versions.iter().find(|v| v.version == n).filter(visible),
    };
    found
        .copied()
        .ok_or_else(|| RegistryError::VersionNotFound {
            subject: subject.to_string(),
            version,
        })
}
