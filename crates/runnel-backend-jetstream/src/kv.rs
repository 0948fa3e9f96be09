//! Key-value buckets on JetStream: the trait's key-value store, committed offsets and stream
//! definitions.
//!
//! Each bucket is a JetStream KV bucket (stream `KV_<bucket>`, subjects `$KV.<bucket>.>`, one
//! message kept per key), written and read through the stream directly rather than through a
//! KV client, because the backend needs what a KV client does not expose: its own headers on
//! writes, and reads that go to the stream leader.
//!
//! - **Revisions** are the bucket stream's sequence numbers: they only grow, survive restarts
//!   and are never given twice, even after a delete.
//! - **Compare-and-set** is JetStream's `Nats-Expected-Last-Subject-Sequence`: `0` means "the
//!   key has no message", `r` means "the key's last message is revision `r`", checked by the
//!   stream leader atomically with the write.
//! - **Expiry is judged by the injected clock.** An entry's `expires_at` is in its payload
//!   (see `frame`) and in a `Runnel-Expires-At` header (so listings can skip expired entries
//!   without reading values). An expired entry reads as absent. Because JetStream cannot see
//!   that an entry expired, a write expecting a revision first reads the key, so an expired
//!   entry's old revision never matches; a write expecting absence treats an expired entry
//!   as absent and replaces it by its revision.
//! - **Deletes** write a delete marker (`KV-Operation: DEL`), conditional when asked. The
//!   maintenance pass later purges markers and expired entries with a purge bounded by their
//!   revision, so a newer write of the same key is never removed.
//! - **Reads go to the leader** (`STREAM.MSG.GET`, not direct get), so a read follows every
//!   acknowledged write even when followers lag on a replicated bucket.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::{
    Config, DiscardPolicy, RawMessageErrorKind, StorageType, Stream,
};
use async_nats::jetstream::{self, Message};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::join_all;
use runnel_backend::{BackendError, Expect, KvEntry, Revision};
use runnel_clock::Micros;

use crate::error::{engine, is_not_found};
use crate::frame::{decode_entry, encode_entry};
use crate::names::{decode_key, kv_stream, kv_subject, prefix_filter};
use crate::shared::Shared;

/// Header holding an entry's expiry (µs since the epoch) for listings.
const EXPIRES_HEADER: &str = "Runnel-Expires-At";
const OPERATION_HEADER: &str = "KV-Operation";
const EXPECTED_SUBJECT_SEQ: &str = "Nats-Expected-Last-Subject-Sequence";
/// How many times a write expecting absence re-reads and retries when the key changes under
/// it before giving up with a conflict.
const MAX_ABSENT_ATTEMPTS: usize = 8;
/// Values fetched at once while filling a scan page.
const SCAN_CONCURRENCY: usize = 64;
/// Messages asked for per fetch while listing keys.
const LIST_BATCH: usize = 10_000;

/// What a key holds at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Slot {
    /// The key has no message.
    Missing,
    /// The key's last message is a delete marker or an expired entry, at this revision.
    Gone {
        revision: Revision,
        marker: bool,
    },
    Live(KvEntry),
}

impl Slot {
    fn current(&self) -> Option<Revision> {
        match self {
            Slot::Live(entry) => Some(entry.revision),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Slot::Missing => "absent".into(),
            Slot::Gone { marker: true, .. } => "absent (deleted)".into(),
            Slot::Gone { marker: false, .. } => "absent (expired)".into(),
            Slot::Live(entry) => format!("revision {}", entry.revision),
        }
    }
}

fn describe_expect(expect: Expect) -> String {
    match expect {
        Expect::Any => "anything".into(),
        Expect::Absent => "absent".into(),
        Expect::Revision(r) => format!("revision {r}"),
    }
}

/// One key of a listing: enough to skip dead keys and to purge them by revision.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub key: String,
    /// The key as it is in the subject.
    pub encoded: String,
    pub subject: String,
    pub revision: Revision,
    pub marker: bool,
    pub expires_at: Option<Micros>,
}

impl Listed {
    pub fn is_live(&self, now: Micros) -> bool {
        !self.marker && self.expires_at.is_none_or(|at| now < at)
    }
}

/// A JetStream KV bucket.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    /// The KV bucket's name (its stream is `KV_<name>`).
    name: String,
    /// What the bucket is for, in error messages (`bucket `runnel_leases``).
    label: String,
    js: jetstream::Context,
    stream: Stream<()>,
    /// Bound of each fetch of a listing (see `list`).
    request_timeout: Duration,
}

/// Whether a publish lost its compare-and-set or failed otherwise.
enum WriteError {
    WrongRevision,
    Failed(BackendError),
}

impl Bucket {
    /// Opens the bucket, creating it (with `replicas`) if it does not exist.
    pub async fn open_or_create(
        shared: &Shared,
        name: String,
        label: String,
        replicas: usize,
    ) -> Result<Self, BackendError> {
        let js = &shared.js;
        let stream_name = kv_stream(&name);
        match js.get_stream(&stream_name).await {
            Ok(_) => {}
            Err(error) if is_not_found(&error) => {
                let config = Config {
                    name: stream_name.clone(),
                    description: Some(format!("Runnel {label}")),
                    subjects: vec![format!("$KV.{name}.>")],
                    max_messages_per_subject: 1,
                    storage: StorageType::File,
                    num_replicas: replicas.max(1),
                    allow_rollup: true,
                    deny_delete: true,
                    discard: DiscardPolicy::New,
                    ..Default::default()
                };
                if let Err(error) = js.create_stream(config).await {
                    // Created by another process in between: fine if it is there now.
                    if js.get_stream(&stream_name).await.is_err() {
                        return Err(engine(format!("creating {label}"), error));
                    }
                }
            }
            Err(error) => return Err(engine(format!("opening {label}"), error)),
        }
        let stream = js
            .get_stream_no_info(&stream_name)
            .await
            .map_err(|e| engine(format!("opening {label}"), e))?;
        Ok(Self {
            name,
            label,
            js: js.clone(),
            stream,
            request_timeout: shared.request_timeout,
        })
    }

    fn subject(&self, encoded_key: &str) -> String {
        kv_subject(&self.name, encoded_key)
    }

    /// What `key` (encoded as `encoded`) holds at `now`.
    pub async fn slot(&self, key: &str, encoded: &str, now: Micros) -> Result<Slot, BackendError> {
        let subject = self.subject(encoded);
        let message = match self.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => message,
            Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => {
                return Ok(Slot::Missing);
            }
            Err(error) => {
                return Err(engine(
                    format!("reading key `{key}` of {}", self.label),
                    error,
                ));
            }
        };
        if is_marker(&message.headers) {
            return Ok(Slot::Gone {
                revision: message.sequence,
                marker: true,
            });
        }
        let (value, expires_at) = decode_entry(message.payload).map_err(|e| {
            BackendError::Corrupt(format!(
                "key `{key}` of {} at revision {}: {e}",
                self.label, message.sequence
            ))
        })?;
        if expires_at.is_some_and(|at| now >= at) {
            return Ok(Slot::Gone {
                revision: message.sequence,
                marker: false,
            });
        }
        Ok(Slot::Live(KvEntry {
            key: key.to_string(),
            value,
            revision: message.sequence,
            expires_at,
        }))
    }

    async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
        what: impl FnOnce() -> String,
    ) -> Result<Revision, WriteError> {
        let result = match self
            .js
            .publish_with_headers(subject, headers, payload)
            .await
        {
            Ok(ack) => ack.await,
            Err(error) => Err(error),
        };
        match result {
            Ok(ack) => Ok(ack.sequence),
            Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {
                Err(WriteError::WrongRevision)
            }
            Err(error) if error.kind() == PublishErrorKind::MaxPayloadExceeded => Err(
                WriteError::Failed(BackendError::Invalid(format!("{}: {error}", what()))),
            ),
            Err(error) => Err(WriteError::Failed(engine(what(), error))),
        }
    }

    fn conflict(&self, key: &str, expect: Expect, found: &Slot) -> BackendError {
        BackendError::CasConflict {
            key: key.to_string(),
            expected: describe_expect(expect),
            found: found.describe(),
            current: found.current(),
        }
    }

    /// Writes `key` if `expect` holds at `now`. `may_expire` says whether entries of this
    /// bucket can carry an expiry; when they cannot, a write expecting a revision goes
    /// straight to the server's compare-and-set without reading first.
    #[allow(clippy::too_many_arguments)]
    pub async fn put(
        &self,
        key: &str,
        encoded: &str,
        value: &[u8],
        expect: Expect,
        expires_at: Option<Micros>,
        now: Micros,
        may_expire: bool,
    ) -> Result<Revision, BackendError> {
        let subject = self.subject(encoded);
        let payload = encode_entry(value, expires_at);
        let headers = |expected: Option<Revision>| {
            let mut headers = HeaderMap::new();
            if let Some(expected) = expected {
                headers.insert(EXPECTED_SUBJECT_SEQ, expected.to_string());
            }
            if let Some(at) = expires_at {
                headers.insert(EXPIRES_HEADER, at.to_string());
            }
            headers
        };
        let what = || format!("writing key `{key}` of {}", self.label);
        match expect {
            Expect::Any => self
                .publish(subject, headers(None), payload, what)
                .await
                .map_err(|e| match e {
                    WriteError::Failed(e) => e,
                    WriteError::WrongRevision => {
                        BackendError::Engine(format!("{}: refused an unconditional write", what()))
                    }
                }),
            Expect::Absent => {
                // Most keys written expecting absence are new: try that first, read only on
                // a refusal.
                let mut expected = 0;
                let mut last = Slot::Missing;
                for _ in 0..MAX_ABSENT_ATTEMPTS {
                    match self
                        .publish(
                            subject.clone(),
                            headers(Some(expected)),
                            payload.clone(),
                            what,
                        )
                        .await
                    {
                        Ok(revision) => return Ok(revision),
                        Err(WriteError::Failed(e)) => return Err(e),
                        Err(WriteError::WrongRevision) => {}
                    }
                    last = self.slot(key, encoded, now).await?;
                    expected = match &last {
                        Slot::Live(_) => return Err(self.conflict(key, expect, &last)),
                        Slot::Gone { revision, .. } => *revision,
                        Slot::Missing => 0,
                    };
                }
                Err(self.conflict(key, expect, &last))
            }
            Expect::Revision(revision) => {
                if may_expire {
                    let slot = self.slot(key, encoded, now).await?;
                    if slot.current() != Some(revision) {
                        return Err(self.conflict(key, expect, &slot));
                    }
                }
                match self
                    .publish(subject, headers(Some(revision)), payload, what)
                    .await
                {
                    Ok(revision) => Ok(revision),
                    Err(WriteError::Failed(e)) => Err(e),
                    Err(WriteError::WrongRevision) => {
                        let slot = self.slot(key, encoded, now).await?;
                        Err(self.conflict(key, expect, &slot))
                    }
                }
            }
        }
    }

    /// Deletes `key` if `expect` holds at `now`. Deleting what is absent (or expired) with
    /// `Any` or `Absent` succeeds and changes nothing visible.
    pub async fn delete(
        &self,
        key: &str,
        encoded: &str,
        expect: Expect,
        now: Micros,
    ) -> Result<(), BackendError> {
        let slot = self.slot(key, encoded, now).await?;
        let what = || format!("deleting key `{key}` of {}", self.label);
        let marker = |expected: Option<Revision>| {
            let mut headers = HeaderMap::new();
            headers.insert(OPERATION_HEADER, "DEL");
            if let Some(expected) = expected {
                headers.insert(EXPECTED_SUBJECT_SEQ, expected.to_string());
            }
            headers
        };
        let subject = self.subject(encoded);
        match (expect, &slot) {
            (Expect::Revision(revision), Slot::Live(entry)) if entry.revision == revision => {
                match self
                    .publish(subject, marker(Some(revision)), Bytes::new(), what)
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(WriteError::Failed(e)) => Err(e),
                    Err(WriteError::WrongRevision) => {
                        let slot = self.slot(key, encoded, now).await?;
                        Err(self.conflict(key, expect, &slot))
                    }
                }
            }
            (Expect::Revision(_), _) | (Expect::Absent, Slot::Live(_)) => {
                Err(self.conflict(key, expect, &slot))
            }
            (Expect::Any, Slot::Live(_)) => self
                .publish(subject, marker(None), Bytes::new(), what)
                .await
                .map(|_| ())
                .map_err(|e| match e {
                    WriteError::Failed(e) => e,
                    WriteError::WrongRevision => {
                        BackendError::Engine(format!("{}: refused an unconditional delete", what()))
                    }
                }),
            (_, Slot::Gone { .. } | Slot::Missing) => Ok(()),
        }
    }

    /// Every key whose subject matches `filter`, with its last revision, marker flag and
    /// expiry, read from headers only (values are not transferred).
    pub async fn list(&self, filter: String) -> Result<Vec<Listed>, BackendError> {
        let what = || format!("listing keys of {}", self.label);
        let consumer = self
            .stream
            .create_consumer(pull::Config {
                filter_subject: filter,
                deliver_policy: DeliverPolicy::LastPerSubject,
                ack_policy: AckPolicy::None,
                headers_only: true,
                memory_storage: true,
                inactive_threshold: Duration::from_secs(10),
                ..Default::default()
            })
            .await
            .map_err(|e| engine(what(), e))?;
        let total = consumer.cached_info().num_pending as usize;
        let name = consumer.cached_info().name.clone();
        let prefix = format!("$KV.{}.", self.name);
        let mut listed = Vec::with_capacity(total);
        let mut received = 0;
        let mut result = Ok(());
        let unanswered = || {
            BackendError::Unavailable(format!(
                "{}: the listing's server did not answer within {:?}",
                what(),
                self.request_timeout
            ))
        };
        while received < total {
            // A fetch is answered by the server that holds the consumer; if it died, nothing
            // ends the batch: bound it.
            let deadline = tokio::time::Instant::now() + self.request_timeout;
            let fetch = consumer
                .fetch()
                .max_messages((total - received).min(LIST_BATCH))
                .messages();
            let mut batch = match tokio::time::timeout_at(deadline, fetch).await {
                Ok(Ok(batch)) => batch,
                Ok(Err(error)) => {
                    result = Err(engine(what(), error));
                    break;
                }
                Err(_) => {
                    result = Err(unanswered());
                    break;
                }
            };
            let before = received;
            loop {
                let message = match tokio::time::timeout_at(deadline, batch.next()).await {
                    Ok(Some(Ok(message))) => message,
                    Ok(Some(Err(error))) => {
                        result = Err(BackendError::Engine(format!("{}: {error}", what())));
                        break;
                    }
                    Ok(None) => break,
                    Err(_) => {
                        result = Err(unanswered());
                        break;
                    }
                };
                received += 1;
                if let Some(item) = self.listed(&prefix, &message) {
                    listed.push(item);
                }
            }
            if result.is_err() || received == before {
                break;
            }
        }
        // An ephemeral consumer goes away by itself after its inactive threshold; deleting
        // it now just frees it sooner.
        let stream = self.stream.clone();
        tokio::spawn(async move {
            let _ = stream.delete_consumer(&name).await;
        });
        result.map(|()| listed)
    }

    fn listed(&self, prefix: &str, message: &Message) -> Option<Listed> {
        let encoded = message.subject.as_str().strip_prefix(prefix)?;
        let key = decode_key(encoded)?;
        let revision = message.info().ok()?.stream_sequence;
        let headers = message.headers.as_ref();
        let marker = headers.is_some_and(is_marker);
        let expires_at = headers
            .and_then(|h| h.get(EXPIRES_HEADER))
            .and_then(|v| v.as_str().parse().ok());
        Some(Listed {
            key,
            encoded: encoded.to_string(),
            subject: message.subject.to_string(),
            revision,
            marker,
            expires_at,
        })
    }

    /// Live entries whose key starts with `prefix`, in key order, after `start_after`, at
    /// most `limit`.
    pub async fn scan(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        now: Micros,
    ) -> Result<Vec<KvEntry>, BackendError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut candidates: Vec<Listed> = self
            .list(prefix_filter(&self.name, prefix))
            .await?
            .into_iter()
            .filter(|l| l.is_live(now) && l.key.starts_with(prefix))
            .filter(|l| start_after.is_none_or(|after| l.key.as_str() > after))
            .collect();
        candidates.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let mut out = Vec::with_capacity(limit.min(candidates.len()));
        let mut pending = candidates.into_iter().peekable();
        // Values are read key by key (concurrently); an entry that changed since the listing
        // is taken as it is now, one that went away is skipped and the page filled from the
        // keys after it.
        while out.len() < limit && pending.peek().is_some() {
            let wanted = (limit - out.len()).min(SCAN_CONCURRENCY);
            let chunk: Vec<Listed> = pending.by_ref().take(wanted).collect();
            let slots = join_all(chunk.iter().map(|l| self.slot(&l.key, &l.encoded, now))).await;
            for slot in slots {
                if let Slot::Live(entry) = slot? {
                    out.push(entry);
                }
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Removes for good every key whose encoded form matches `key_filter` (a subject
    /// filter below the bucket: `a.b.>`), with one purge; returns how many of them were live
    /// at `now`.
    pub async fn purge_matching(
        &self,
        key_filter: &str,
        now: Micros,
    ) -> Result<usize, BackendError> {
        let subjects = format!("$KV.{}.{key_filter}", self.name);
        let live = self
            .list(subjects.clone())
            .await?
            .iter()
            .filter(|l| l.is_live(now))
            .count();
        self.stream
            .purge()
            .filter(subjects)
            .await
            .map_err(|e| engine(format!("removing keys `{key_filter}` of {}", self.label), e))?;
        Ok(live)
    }

    /// Removes delete markers and entries expired at `now` for good, each by a purge of its
    /// subject bounded by its revision (a newer write of the key stays). Returns how many.
    pub async fn remove_dead(&self, now: Micros) -> Result<usize, BackendError> {
        let dead: Vec<Listed> = self
            .list(format!("$KV.{}.>", self.name))
            .await?
            .into_iter()
            .filter(|l| !l.is_live(now))
            .collect();
        let mut removed = 0;
        for item in dead {
            self.stream
                .purge()
                .filter(item.subject.clone())
                .sequence(item.revision + 1)
                .await
                .map_err(|e| engine(format!("removing key `{}` of {}", item.key, self.label), e))?;
            removed += 1;
        }
        Ok(removed)
    }
}

fn is_marker(headers: &HeaderMap) -> bool {
    headers
        .get(OPERATION_HEADER)
        .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"))
}
