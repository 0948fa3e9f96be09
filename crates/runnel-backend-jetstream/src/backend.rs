//! [`JetStreamBackend`]: connecting (and refusing servers that are too old), stream
//! definitions, and the dispatch of every trait call to a partition (`partition`) or a
//! bucket (`kv`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::{ConnectOptions, ServerAddr};
use async_trait::async_trait;
use bytes::Bytes;
use futures::future::{join_all, try_join_all};
use runnel_backend::{
    AppendAck, Backend, BackendError, CommittedOffset, Expect, KvEntry, Partition as PartitionId,
    PartitionInfo, ReadFrom, Record, Result, RetentionConfig, Revision, StoredRecord, StreamConfig,
    StreamInfo, StreamName,
};
use runnel_clock::Micros;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

use crate::acks::AckInbox;
use crate::config::{Credentials, JetStreamConfig};
use crate::error::{engine, is_not_found};
use crate::kv::{Bucket, Slot};
use crate::names::{Names, encode_key, offset_key, offsets_of_group, offsets_on_stream};
use crate::partition::Partition;
use crate::shared::Shared;

/// The oldest nats-server the backend runs on: 2.9 lacks what async-nats needs for
/// key-value buckets and multiple filter subjects.
pub const MIN_SERVER_VERSION: (u32, u32, u32) = (2, 10, 0);

pub use runnel_backend::MAX_PARTITIONS;

/// A stream's definition, as stored in the `<namespace>_streams` bucket (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StreamMeta {
    partitions: u32,
    #[serde(default)]
    retention: RetentionConfig,
    created_at: Micros,
}

/// Runnel's backend on NATS JetStream. See the crate documentation for the mapping.
#[derive(Debug, Clone)]
pub struct JetStreamBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    names: Names,
    config: JetStreamConfig,
    closed: AtomicBool,
    /// Stream definitions seen so far. A partition count is fixed, so a definition once read
    /// stays true until the stream is deleted: this process then forgets it at once; a
    /// deletion by another process is noticed when the partition's JetStream stream is found
    /// missing (waits end, the partition is forgotten) and at the next listing, which
    /// replaces what is kept here.
    streams: Mutex<HashMap<StreamName, Arc<StreamMeta>>>,
    partitions: Mutex<HashMap<(StreamName, PartitionId), Arc<Partition>>>,
    streams_bucket: OnceCell<Bucket>,
    offsets_bucket: OnceCell<Bucket>,
    buckets: Mutex<HashMap<String, Arc<OnceCell<Bucket>>>>,
    maintenance: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Parses `2.10.7` (or `2.11.0-beta.1`) into numbers.
fn parse_version(version: &str) -> Option<(u32, u32, u32)> {
    let core = version.trim_start_matches('v').split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// Refuses a server older than [`MIN_SERVER_VERSION`], naming both versions.
pub(crate) fn check_server_version(version: &str, url: &str) -> Result<()> {
    let (major, minor, patch) = MIN_SERVER_VERSION;
    let needed = format!("{major}.{minor}.{patch}");
    match parse_version(version) {
        Some(found) if found >= MIN_SERVER_VERSION => Ok(()),
        Some(_) => Err(BackendError::Unavailable(format!(
            "nats-server {version} at {url} is too old: Runnel's JetStream backend needs \
             nats-server {needed} or newer (2.9 cannot create the key-value buckets it uses and \
             drops multiple filter subjects)"
        ))),
        None => Err(BackendError::Unavailable(format!(
            "nats-server at {url} reports version `{version}`, which is not a version number; \
             Runnel's JetStream backend needs nats-server {needed} or newer"
        ))),
    }
}

impl JetStreamBackend {
    /// Connects to NATS, checks that the server is new enough and has JetStream, and starts
    /// the maintenance task. Nothing is created on the server until it is used.
    pub async fn connect(config: JetStreamConfig) -> Result<Self> {
        let names = Names::new(&config.namespace)?;
        if config.replicas == 0 || config.replicas > 5 {
            return Err(BackendError::Invalid(format!(
                "replicas must be between 1 and 5 (JetStream's limit), got {}",
                config.replicas
            )));
        }
        let url = config.nats_url.clone();
        let addresses = url
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| {
                a.parse::<ServerAddr>().map_err(|e| {
                    BackendError::Invalid(format!("nats_url `{a}` is not a NATS URL: {e}"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if addresses.is_empty() {
            return Err(BackendError::Invalid("nats_url is empty".into()));
        }
        let mut options = ConnectOptions::new()
            .name("runnel")
            .request_timeout(Some(config.request_timeout))
            .connection_timeout(config.request_timeout);
        options = match &config.credentials {
            Credentials::None => options,
            Credentials::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
            Credentials::Token(token) => options.token(token.clone()),
            Credentials::CredsFile(path) => options.credentials_file(path).await.map_err(|e| {
                BackendError::Invalid(format!(
                    "cannot read NATS credentials file {}: {e}",
                    path.display()
                ))
            })?,
        };
        let client = options.connect(addresses).await.map_err(|e| {
            BackendError::Unavailable(format!("cannot connect to NATS at {url}: {e}"))
        })?;
        let info = client.server_info();
        check_server_version(&info.version, &url)?;
        if !info.jetstream {
            return Err(BackendError::Unavailable(format!(
                "nats-server {} at {url} does not have JetStream enabled (start it with `-js`)",
                info.version
            )));
        }
        let js = async_nats::jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .build(client.clone());
        js.query_account().await.map_err(|e| {
            BackendError::Unavailable(format!(
                "JetStream is not available to this account at {url}: {e}"
            ))
        })?;
        let acks = AckInbox::start(&client).await.map_err(|e| {
            BackendError::Unavailable(format!(
                "cannot subscribe to an inbox for publish acknowledgements at {url}: {e}"
            ))
        })?;
        let backend = Self {
            inner: Arc::new(Inner {
                shared: Arc::new(Shared {
                    js,
                    client,
                    acks,
                    clock: config.clock.clone(),
                    dedup_header: config.dedup_header.clone(),
                    max_payload: info.max_payload,
                    request_timeout: config.request_timeout,
                    retry_for: config.request_timeout * 2,
                }),
                names,
                config,
                closed: AtomicBool::new(false),
                streams: Mutex::new(HashMap::new()),
                partitions: Mutex::new(HashMap::new()),
                streams_bucket: OnceCell::new(),
                offsets_bucket: OnceCell::new(),
                buckets: Mutex::new(HashMap::new()),
                maintenance: Mutex::new(None),
            }),
        };
        backend.start_maintenance();
        Ok(backend)
    }

    fn start_maintenance(&self) {
        let weak = Arc::downgrade(&self.inner);
        let every = self
            .inner
            .config
            .maintenance_interval
            .max(Duration::from_secs(1));
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let backend = JetStreamBackend { inner };
                if let Err(error) = backend.remove_expired_now().await {
                    tracing::warn!(%error, "removing expired key-value entries failed");
                }
            }
        });
        *lock(&self.inner.maintenance) = Some(task);
    }

    /// Removes, for good, the entries that have expired by the injected clock and the delete
    /// markers, in every key-value bucket this instance has opened. Runs every
    /// [`JetStreamConfig::maintenance_interval`]; returns how many keys were removed.
    pub async fn remove_expired_now(&self) -> Result<usize> {
        self.check_open()?;
        let cells: Vec<Arc<OnceCell<Bucket>>> =
            lock(&self.inner.buckets).values().cloned().collect();
        let now = self.now();
        let mut removed = 0;
        for cell in cells {
            if let Some(bucket) = cell.get() {
                removed += bucket.remove_dead(now).await?;
            }
        }
        Ok(removed)
    }

    /// Deletes every JetStream stream and KV bucket of `config.namespace`: all streams,
    /// offsets and key-value entries of that Runnel deployment. For tests and teardown.
    pub async fn delete_namespace(config: JetStreamConfig) -> Result<usize> {
        let backend = Self::connect(config).await?;
        let prefix = backend.inner.names.stream_prefix();
        let kv_prefix = format!("KV_{prefix}");
        let js = backend.inner.shared.js.clone();
        let mut names = js.stream_names();
        let mut doomed = Vec::new();
        use futures::StreamExt;
        while let Some(name) = names.next().await {
            let name = name.map_err(|e| engine("listing JetStream streams", e))?;
            if name.starts_with(&prefix) || name.starts_with(&kv_prefix) {
                doomed.push(name);
            }
        }
        let deleted = doomed.len();
        try_join_all(doomed.into_iter().map(|name| {
            let js = js.clone();
            async move {
                js.delete_stream(&name)
                    .await
                    .map_err(|e| engine(format!("deleting JetStream stream `{name}`"), e))
            }
        }))
        .await?;
        backend.close().await?;
        Ok(deleted)
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(BackendError::Closed)
        } else {
            Ok(())
        }
    }

    /// An error met while the backend was closed by another task is `Closed`.
    fn settle<T>(&self, result: Result<T>) -> Result<T> {
        match result {
            Err(_) if self.inner.closed.load(Ordering::Acquire) => Err(BackendError::Closed),
            other => other,
        }
    }

    /// Runs a call that changes nothing (a read) again while the engine does not answer
    /// (a leader election, a reconnect), for up to twice the request timeout.
    async fn idempotent<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let give_up = tokio::time::Instant::now() + self.inner.config.request_timeout * 2;
        let mut pause = Duration::from_millis(50);
        loop {
            match call().await {
                Err(BackendError::Unavailable(message))
                    if tokio::time::Instant::now() < give_up
                        && !self.inner.closed.load(Ordering::Acquire) =>
                {
                    tracing::debug!(%message, "engine unavailable; retrying a read");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                other => return other,
            }
        }
    }

    fn now(&self) -> Micros {
        self.inner.config.clock.now_micros()
    }

    async fn streams_bucket(&self) -> Result<&Bucket> {
        self.inner
            .streams_bucket
            .get_or_try_init(|| {
                Bucket::open_or_create(
                    &self.inner.shared,
                    self.inner.names.streams_bucket(),
                    "the stream definitions".into(),
                    self.inner.config.replicas,
                )
            })
            .await
    }

    async fn offsets_bucket(&self) -> Result<&Bucket> {
        self.inner
            .offsets_bucket
            .get_or_try_init(|| {
                Bucket::open_or_create(
                    &self.inner.shared,
                    self.inner.names.offsets_bucket(),
                    "the committed offsets".into(),
                    self.inner.config.replicas,
                )
            })
            .await
    }

    async fn bucket(&self, bucket: &str) -> Result<Bucket> {
        let name = self.inner.names.kv_bucket(bucket)?;
        let cell = lock(&self.inner.buckets)
            .entry(bucket.to_string())
            .or_default()
            .clone();
        cell.get_or_try_init(|| {
            Bucket::open_or_create(
                &self.inner.shared,
                name,
                format!("bucket `{bucket}`"),
                self.inner.config.replicas,
            )
        })
        .await
        .cloned()
    }

    /// The definition of `name`, if the stream exists.
    async fn lookup(&self, name: &StreamName) -> Result<Option<Arc<StreamMeta>>> {
        if let Some(meta) = lock(&self.inner.streams).get(name) {
            return Ok(Some(meta.clone()));
        }
        let bucket = self.streams_bucket().await?;
        match bucket
            .slot(name.as_str(), name.as_str(), self.now())
            .await?
        {
            Slot::Live(entry) => {
                let meta: StreamMeta = serde_json::from_slice(&entry.value).map_err(|e| {
                    BackendError::Corrupt(format!("the definition of stream `{name}`: {e}"))
                })?;
                let meta = Arc::new(meta);
                lock(&self.inner.streams).insert(name.clone(), meta.clone());
                Ok(Some(meta))
            }
            _ => Ok(None),
        }
    }

    async fn meta(&self, name: &StreamName) -> Result<Arc<StreamMeta>> {
        self.lookup(name)
            .await?
            .ok_or_else(|| BackendError::UnknownStream(name.clone()))
    }

    async fn partition(&self, name: &StreamName, id: PartitionId) -> Result<Arc<Partition>> {
        let meta = self.meta(name).await?;
        if id >= meta.partitions {
            return Err(BackendError::UnknownPartition {
                stream: name.clone(),
                partition: id,
                partitions: meta.partitions,
            });
        }
        {
            let mut partitions = lock(&self.inner.partitions);
            match partitions.get(&(name.clone(), id)) {
                Some(partition) if !partition.is_deleted() => return Ok(partition.clone()),
                // Found deleted by another process, and the stream is defined again: a
                // fresh partition for the new stream.
                Some(_) => {
                    partitions.remove(&(name.clone(), id));
                }
                None => {}
            }
        }
        let handle = self
            .inner
            .shared
            .js
            .get_stream_no_info(self.inner.names.partition_stream(name, id))
            .await
            .map_err(|e| engine(format!("opening stream `{name}` partition {id}"), e))?;
        let partition = Arc::new(Partition::new(
            name.clone(),
            id,
            self.inner.names.partition_subject(name, id),
            handle,
            self.inner.shared.clone(),
        ));
        Ok(lock(&self.inner.partitions)
            .entry((name.clone(), id))
            .or_insert(partition)
            .clone())
    }

    fn partition_config(&self, name: &StreamName, id: PartitionId, meta: &StreamMeta) -> Config {
        let retention = meta.retention;
        Config {
            name: self.inner.names.partition_stream(name, id),
            description: Some(format!("Runnel stream `{name}` partition {id}")),
            subjects: vec![self.inner.names.partition_subject(name, id)],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            num_replicas: self.inner.config.replicas,
            max_age: retention.max_age.unwrap_or_default(),
            max_bytes: retention
                .max_bytes_per_partition
                .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            max_messages: -1,
            max_messages_per_subject: -1,
            discard: DiscardPolicy::Old,
            duplicate_window: self.inner.config.duplicate_window,
            // Offsets are sequences − 1: no message may disappear from the middle.
            deny_delete: true,
            ..Default::default()
        }
    }

    async fn ensure_partition_stream(
        &self,
        name: &StreamName,
        id: PartitionId,
        meta: &StreamMeta,
    ) -> Result<()> {
        let js = &self.inner.shared.js;
        let config = self.partition_config(name, id, meta);
        let stream_name = config.name.clone();
        if let Err(error) = js.create_stream(config).await {
            // Left by an earlier attempt that stopped before writing the definition.
            if js.get_stream(&stream_name).await.is_err() {
                return Err(engine(
                    format!("creating stream `{name}` partition {id} (`{stream_name}`)"),
                    error,
                ));
            }
        }
        Ok(())
    }

    async fn describe(&self, name: &StreamName, meta: &StreamMeta) -> Result<StreamInfo> {
        let partitions = try_join_all(
            (0..meta.partitions)
                .map(|id| async move { self.partition(name, id).await?.info().await }),
        )
        .await?;
        Ok(StreamInfo {
            name: name.clone(),
            config: StreamConfig {
                partitions: meta.partitions,
                retention: meta.retention,
            },
            created_at: meta.created_at,
            partitions,
        })
    }

    fn validate_group(group: &str) -> Result<()> {
        if group.is_empty() {
            Err(BackendError::Invalid("group name is empty".into()))
        } else {
            Ok(())
        }
    }

    async fn do_create_stream(
        &self,
        name: &StreamName,
        config: StreamConfig,
    ) -> Result<StreamInfo> {
        if config.partitions == 0 || config.partitions > MAX_PARTITIONS {
            return Err(BackendError::Invalid(format!(
                "stream `{name}`: partitions must be between 1 and {MAX_PARTITIONS}, got {}",
                config.partitions
            )));
        }
        let existing = |meta: &StreamMeta| -> Result<()> {
            if meta.partitions == config.partitions {
                Ok(())
            } else {
                Err(BackendError::StreamExists {
                    name: name.clone(),
                    existing: meta.partitions,
                    requested: config.partitions,
                })
            }
        };
        if let Some(meta) = self.lookup(name).await? {
            existing(&meta)?;
            return self.describe(name, &meta).await;
        }
        let meta = StreamMeta {
            partitions: config.partitions,
            retention: config.retention,
            created_at: self.now(),
        };
        // The partitions' streams exist before the definition that names them.
        try_join_all((0..meta.partitions).map(|id| self.ensure_partition_stream(name, id, &meta)))
            .await?;
        let value = serde_json::to_vec(&meta)
            .map_err(|e| BackendError::Engine(format!("encoding stream `{name}`: {e}")))?;
        let bucket = self.streams_bucket().await?;
        match bucket
            .put(
                name.as_str(),
                name.as_str(),
                &value,
                Expect::Absent,
                None,
                self.now(),
                false,
            )
            .await
        {
            Ok(_) => {
                let meta = Arc::new(meta);
                lock(&self.inner.streams).insert(name.clone(), meta.clone());
                self.describe(name, &meta).await
            }
            Err(BackendError::CasConflict { .. }) => {
                // Created by another process in between.
                let meta = self.meta(name).await?;
                existing(&meta)?;
                self.describe(name, &meta).await
            }
            Err(error) => Err(error),
        }
    }

    async fn do_list_streams(&self) -> Result<Vec<StreamInfo>> {
        let bucket = self.streams_bucket().await?;
        let entries = bucket.scan("", None, usize::MAX, self.now()).await?;
        let mut streams = Vec::with_capacity(entries.len());
        let mut fresh = HashMap::with_capacity(entries.len());
        for entry in entries {
            let name = StreamName::new(entry.key.clone()).map_err(|e| {
                BackendError::Corrupt(format!("the stream definitions hold `{}`: {e}", entry.key))
            })?;
            let meta: StreamMeta = serde_json::from_slice(&entry.value).map_err(|e| {
                BackendError::Corrupt(format!("the definition of stream `{name}`: {e}"))
            })?;
            let meta = Arc::new(meta);
            fresh.insert(name.clone(), meta.clone());
            streams.push((name, meta));
        }
        // Streams deleted by another process are forgotten here.
        *lock(&self.inner.streams) = fresh;
        lock(&self.inner.partitions).retain(|(name, _), partition| {
            let listed = streams.iter().any(|(n, _)| n == name);
            if !listed {
                partition.mark_deleted();
            }
            listed
        });
        let described =
            join_all(streams.iter().map(|(name, meta)| self.describe(name, meta))).await;
        let mut out = described.into_iter().collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Partition streams first (a crash part way leaves the definition, so deleting again
    /// finishes the job; a partition stream left without a definition would be taken up
    /// again, records and all, by a stream created with the name), then every group's
    /// offsets on it, then the definition, then offsets committed in between.
    async fn do_delete_stream(&self, name: &StreamName) -> Result<()> {
        let meta = self.meta(name).await?;
        let forget = || {
            lock(&self.inner.streams).remove(name);
            let mut partitions = lock(&self.inner.partitions);
            for id in 0..meta.partitions {
                if let Some(partition) = partitions.remove(&(name.clone(), id)) {
                    partition.mark_deleted();
                }
            }
        };
        forget();
        let js = &self.inner.shared.js;
        try_join_all((0..meta.partitions).map(|id| async move {
            let stream = self.inner.names.partition_stream(name, id);
            match js.delete_stream(&stream).await {
                Ok(_) => Ok(()),
                Err(error) if is_not_found(&error) => Ok(()),
                Err(error) => Err(engine(
                    format!("deleting stream `{name}` partition {id} (`{stream}`)"),
                    error,
                )),
            }
        }))
        .await?;
        let offsets = self.offsets_bucket().await?;
        offsets
            .purge_matching(&offsets_on_stream(name), self.now())
            .await?;
        self.streams_bucket()
            .await?
            .delete(name.as_str(), name.as_str(), Expect::Any, self.now())
            .await?;
        // A lookup in between may have cached the definition again.
        forget();
        offsets
            .purge_matching(&offsets_on_stream(name), self.now())
            .await?;
        Ok(())
    }

    async fn do_read(
        &self,
        stream: &StreamName,
        partition: PartitionId,
        from: ReadFrom,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>> {
        let partition = self.partition(stream, partition).await?;
        let offset = match from {
            ReadFrom::Offset(offset) => offset,
            ReadFrom::Time(at) => partition.offset_for_time(at).await?,
        };
        partition.read(offset, max_records, max_bytes).await
    }

    async fn do_committed_offset(
        &self,
        group: &str,
        stream: &StreamName,
        partition: PartitionId,
    ) -> Result<Option<CommittedOffset>> {
        Self::validate_group(group)?;
        self.partition(stream, partition).await?;
        let key = offset_key(group, stream, partition);
        match self
            .offsets_bucket()
            .await?
            .slot(&key, &key, self.now())
            .await?
        {
            Slot::Live(entry) => {
                let bytes: [u8; 8] = entry.value.as_ref().try_into().map_err(|_| {
                    BackendError::Corrupt(format!(
                        "the committed offset of group `{group}` on stream `{stream}` partition \
                         {partition} is {} bytes, not 8",
                        entry.value.len()
                    ))
                })?;
                Ok(Some(CommittedOffset {
                    offset: u64::from_le_bytes(bytes),
                    revision: entry.revision,
                }))
            }
            _ => Ok(None),
        }
    }

    async fn do_commit_offset(
        &self,
        group: &str,
        stream: &StreamName,
        partition: PartitionId,
        offset: u64,
        expect: Expect,
    ) -> Result<Revision> {
        Self::validate_group(group)?;
        self.partition(stream, partition).await?;
        let key = offset_key(group, stream, partition);
        self.offsets_bucket()
            .await?
            .put(
                &key,
                &key,
                &offset.to_le_bytes(),
                expect,
                None,
                self.now(),
                false,
            )
            .await
    }

    async fn do_kv_get(&self, bucket: &str, key: &str) -> Result<Option<KvEntry>> {
        let encoded = encode_key(key)?;
        let bucket = self.bucket(bucket).await?;
        match bucket.slot(key, &encoded, self.now()).await? {
            Slot::Live(entry) => Ok(Some(entry)),
            _ => Ok(None),
        }
    }

    async fn do_kv_put(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        expect: Expect,
        ttl: Option<Duration>,
    ) -> Result<Revision> {
        let encoded = encode_key(key)?;
        let bucket = self.bucket(bucket).await?;
        let now = self.now();
        let expires_at =
            ttl.map(|ttl| now.saturating_add(u64::try_from(ttl.as_micros()).unwrap_or(u64::MAX)));
        bucket
            .put(key, &encoded, &value, expect, expires_at, now, true)
            .await
    }

    async fn do_kv_delete(&self, bucket: &str, key: &str, expect: Expect) -> Result<()> {
        let encoded = encode_key(key)?;
        let bucket = self.bucket(bucket).await?;
        bucket.delete(key, &encoded, expect, self.now()).await
    }

    async fn do_kv_scan(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KvEntry>> {
        let bucket = self.bucket(bucket).await?;
        bucket.scan(prefix, start_after, limit, self.now()).await
    }
}

#[async_trait]
impl Backend for JetStreamBackend {
    fn kind(&self) -> &'static str {
        "jetstream"
    }

    async fn create_stream(&self, name: &StreamName, config: StreamConfig) -> Result<StreamInfo> {
        self.check_open()?;
        self.settle(self.do_create_stream(name, config).await)
    }

    async fn list_streams(&self) -> Result<Vec<StreamInfo>> {
        self.check_open()?;
        self.settle(self.idempotent(|| self.do_list_streams()).await)
    }

    async fn describe_stream(&self, name: &StreamName) -> Result<StreamInfo> {
        self.check_open()?;
        let result = self
            .idempotent(|| async {
                let meta = self.meta(name).await?;
                self.describe(name, &meta).await
            })
            .await;
        self.settle(result)
    }

    async fn append(
        &self,
        stream: &StreamName,
        partition: PartitionId,
        records: Vec<Record>,
    ) -> Result<AppendAck> {
        self.check_open()?;
        let result = async {
            let partition = self.partition(stream, partition).await?;
            // Framing and sending a batch is most of a publish's client CPU; in a task of its
            // own, the appends of one publish to several partitions run on every worker
            // thread at once. If the caller goes away, the append still completes (a retry
            // of it is deduplicated by `Nats-Msg-Id`).
            tokio::spawn(async move { partition.append(records).await })
                .await
                .unwrap_or_else(|e| {
                    Err(BackendError::Engine(format!(
                        "the append task ended without an answer: {e}"
                    )))
                })
        }
        .await;
        self.settle(result)
    }

    async fn read(
        &self,
        stream: &StreamName,
        partition: PartitionId,
        from: ReadFrom,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>> {
        self.check_open()?;
        self.settle(
            self.idempotent(|| self.do_read(stream, partition, from, max_records, max_bytes))
                .await,
        )
    }

    async fn offset_for_time(
        &self,
        stream: &StreamName,
        partition: PartitionId,
        timestamp: Micros,
    ) -> Result<u64> {
        self.check_open()?;
        let result = self
            .idempotent(|| async {
                self.partition(stream, partition)
                    .await?
                    .offset_for_time(timestamp)
                    .await
            })
            .await;
        self.settle(result)
    }

    async fn partition_info(
        &self,
        stream: &StreamName,
        partition: PartitionId,
    ) -> Result<PartitionInfo> {
        self.check_open()?;
        let result = self
            .idempotent(|| async { self.partition(stream, partition).await?.info().await })
            .await;
        self.settle(result)
    }

    async fn wait_for_data(
        &self,
        stream: &StreamName,
        partition: PartitionId,
        offset: u64,
        timeout: Duration,
    ) -> Result<u64> {
        self.check_open()?;
        let partition = self.settle(self.partition(stream, partition).await)?;
        let high = partition.wait_for_data(offset, timeout).await;
        self.check_open()?;
        high
    }

    async fn committed_offset(
        &self,
        group: &str,
        stream: &StreamName,
        partition: PartitionId,
    ) -> Result<Option<CommittedOffset>> {
        self.check_open()?;
        self.settle(
            self.idempotent(|| self.do_committed_offset(group, stream, partition))
                .await,
        )
    }

    async fn commit_offset(
        &self,
        group: &str,
        stream: &StreamName,
        partition: PartitionId,
        offset: u64,
        expect: Expect,
    ) -> Result<Revision> {
        self.check_open()?;
        self.settle(
            self.do_commit_offset(group, stream, partition, offset, expect)
                .await,
        )
    }

    async fn delete_stream(&self, name: &StreamName) -> Result<()> {
        self.check_open()?;
        self.settle(self.do_delete_stream(name).await)
    }

    async fn delete_group_offsets(&self, group: &str) -> Result<usize> {
        self.check_open()?;
        Self::validate_group(group)?;
        let result = async {
            self.offsets_bucket()
                .await?
                .purge_matching(&offsets_of_group(group), self.now())
                .await
        }
        .await;
        self.settle(result)
    }

    async fn kv_delete_prefix(&self, bucket: &str, prefix: &str) -> Result<usize> {
        self.check_open()?;
        let Some(segments) = prefix.strip_suffix('/').filter(|s| !s.is_empty()) else {
            return Err(BackendError::Invalid(format!(
                "a key prefix to delete must be whole segments ending with `/`, got `{prefix}`"
            )));
        };
        let filter = format!("{}.>", encode_key(segments)?);
        let result = async {
            self.bucket(bucket)
                .await?
                .purge_matching(&filter, self.now())
                .await
        }
        .await;
        self.settle(result)
    }

    async fn kv_get(&self, bucket: &str, key: &str) -> Result<Option<KvEntry>> {
        self.check_open()?;
        self.settle(self.idempotent(|| self.do_kv_get(bucket, key)).await)
    }

    async fn kv_put(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        expect: Expect,
        ttl: Option<Duration>,
    ) -> Result<Revision> {
        self.check_open()?;
        self.settle(self.do_kv_put(bucket, key, value, expect, ttl).await)
    }

    async fn kv_delete(&self, bucket: &str, key: &str, expect: Expect) -> Result<()> {
        self.check_open()?;
        self.settle(self.do_kv_delete(bucket, key, expect).await)
    }

    async fn kv_scan(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KvEntry>> {
        self.check_open()?;
        self.settle(
            self.idempotent(|| self.do_kv_scan(bucket, prefix, start_after, limit))
                .await,
        )
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Err(BackendError::Closed);
        }
        if let Some(task) = lock(&self.inner.maintenance).take() {
            task.abort();
        }
        let partitions: Vec<Arc<Partition>> =
            lock(&self.inner.partitions).values().cloned().collect();
        // Readers' consumers would go away by themselves after their inactive threshold;
        // deleting them now frees the server sooner. Bounded, so a dead server cannot hold
        // `close` up.
        let deletes = partitions.iter().flat_map(|partition| {
            partition.stop_watcher();
            let handle = partition.handle().clone();
            partition.drop_cursors().into_iter().map(move |name| {
                let handle = handle.clone();
                async move {
                    let _ = handle.delete_consumer(&name).await;
                }
            })
        });
        let _ = tokio::time::timeout(Duration::from_secs(2), join_all(deletes)).await;
        let client = &self.inner.shared.client;
        let _ = tokio::time::timeout(Duration::from_secs(2), client.drain()).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_older_than_2_10_are_refused_naming_both_versions() {
        let error = check_server_version("2.9.10", "nats://127.0.0.1:4222").unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, BackendError::Unavailable(_)), "{error:?}");
        assert!(
            message.contains("2.9.10") && message.contains("2.10.0"),
            "{message}"
        );
        for ok in [
            "2.10.0",
            "2.10.7",
            "2.11.0-beta.2",
            "2.15.1",
            "v2.12.3",
            "3.0",
        ] {
            assert!(check_server_version(ok, "u").is_ok(), "{ok}");
        }
        assert!(check_server_version("nonsense", "u").is_err());
        assert!(check_server_version("1.4.1", "u").is_err());
    }
}
