//! The metadata store: one redb file (`meta.redb`) holding stream definitions, committed group
//! offsets and the key-value store.
//!
//! Offset commits and key-value writes and deletes are [`Write`]s, applied in batches by
//! [`Meta::write_batch`]: one redb write transaction per batch, each write seeing the ones
//! before it, committed with immediate durability (fsynced before the commit returns). The
//! group-commit writer (`group_commit`) decides what goes into a batch. Stream definitions and
//! expired-entry removal are transactions of their own, also committed durably.
//!
//! Tables (keys sort as tuples, element by element, strings bytewise):
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `meta` | `&str` name | `u64` (`format_version` = [`FORMAT_VERSION`]) |
//! | `streams` | `&str` stream name | `&[u8]` JSON of [`StoredStream`] |
//! | `group_offsets` | `(group, stream, partition)`: `(&str, &str, u32)` | `(offset, revision)`: `(u64, u64)` |
//! | `kv` | `(bucket, key)`: `(&str, &str)` | `(revision, expires_at, value)`: `(u64, Option<u64>, &[u8])` |
//! | `kv_revisions` | `&str` bucket | `u64` last revision given in the bucket |
//! | `kv_expiry` | `(expires_at, bucket, key)`: `(u64, &str, &str)` | `()` |
//!
//! Invariants kept by every transaction here:
//! - A committed offset's revision starts at 1 and grows by one with each commit of that key.
//! - A bucket's revisions come from `kv_revisions`, which only grows, so a key that is deleted
//!   and written again never gets back a revision a stale compare-and-set could match.
//! - `kv_expiry` holds exactly one row for each `kv` entry with an expiry, so removing expired
//!   entries reads only what has expired.
//! - An entry whose `expires_at` is at or before "now" is treated as absent by every read and
//!   every condition, whether or not it has been removed yet.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};
use runnel_backend::{
    BackendError, CommittedOffset, Expect, KvEntry, Partition, Result, Revision, StreamConfig,
    StreamName,
};
use runnel_clock::Micros;
use serde::{Deserialize, Serialize};

use crate::error::from_meta;

/// Version of the table layout above; a store written by another layout is refused.
pub(crate) const FORMAT_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const STREAMS: TableDefinition<&str, &[u8]> = TableDefinition::new("streams");
/// `group_offsets` key: (group, stream, partition).
type OffsetKey = (&'static str, &'static str, u32);
const GROUP_OFFSETS: TableDefinition<OffsetKey, (u64, u64)> = TableDefinition::new("group_offsets");
/// `kv` key: (bucket, key).
type KvKey = (&'static str, &'static str);
/// `kv` value: (revision, expires_at, value).
type KvValue = (u64, Option<u64>, &'static [u8]);
const KV: TableDefinition<KvKey, KvValue> = TableDefinition::new("kv");
const KV_REVISIONS: TableDefinition<&str, u64> = TableDefinition::new("kv_revisions");
/// `kv_expiry` key: (expires_at, bucket, key).
type ExpiryKey = (u64, &'static str, &'static str);
const KV_EXPIRY: TableDefinition<ExpiryKey, ()> = TableDefinition::new("kv_expiry");

/// A stream's definition as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredStream {
    pub config: StreamConfig,
    pub created_at: Micros,
}

/// The open metadata store.
pub(crate) struct Meta {
    /// `None` only between dropping a broken handle and opening the next.
    db: RwLock<Option<Database>>,
    /// An I/O error (a full disk) left the handle refusing every write until the database
    /// is closed and opened again; the next use does that.
    broken: Arc<AtomicBool>,
    path: PathBuf,
    /// Write transactions committed since opening.
    commits: AtomicU64,
}

/// A write of the metadata store, applied inside a batch's transaction by
/// [`Meta::write_batch`].
pub(crate) trait Write: Send + 'static {
    type Output: Send + 'static;

    /// Applies this write to the state left by the writes before it in the batch, judging
    /// expiry and computing TTLs at `now`. A condition that does not hold is a
    /// [`BackendError::CasConflict`] returned before anything changes, so the batch can go on
    /// without this write; any other error leaves the transaction unusable.
    fn apply(&self, writes: &mut Writes<'_>, now: Micros) -> Result<Self::Output>;
}

/// Commits `offset` for `group` on a partition if `expect` holds; answers the new revision.
#[derive(Debug, Clone)]
pub(crate) struct CommitOffset {
    pub group: String,
    pub stream: StreamName,
    pub partition: Partition,
    pub offset: u64,
    pub expect: Expect,
}

/// Writes a key if `expect` holds, expiring `ttl` after the batch's "now"; answers the new
/// revision.
#[derive(Debug, Clone)]
pub(crate) struct KvPut {
    pub bucket: String,
    pub key: String,
    pub value: Bytes,
    pub expect: Expect,
    pub ttl: Option<Duration>,
}

/// Deletes a key if `expect` holds (an absent key with a condition that holds is no change).
#[derive(Debug, Clone)]
pub(crate) struct KvDelete {
    pub bucket: String,
    pub key: String,
    pub expect: Expect,
}

/// Deletes committed offsets: every one of `group` (when given), or every group's on
/// `stream` (when given); answers how many were removed.
#[derive(Debug, Clone)]
pub(crate) enum DeleteOffsets {
    OfGroup(String),
    OnStream(StreamName),
}

/// Deletes every key of a bucket that starts with `prefix`; answers how many live ones
/// there were.
#[derive(Debug, Clone)]
pub(crate) struct KvDeletePrefix {
    pub bucket: String,
    pub prefix: String,
}

/// The tables of one write transaction, open for a batch of [`Write`]s.
pub(crate) struct Writes<'t> {
    path: &'t Path,
    offsets: Table<'t, OffsetKey, (u64, u64)>,
    kv: Table<'t, KvKey, KvValue>,
    expiry: Table<'t, ExpiryKey, ()>,
    revisions: Table<'t, &'static str, u64>,
    /// Whether a write changed anything; a batch of refused writes and no-op deletes commits
    /// nothing.
    changed: bool,
}

/// The state a compare-and-set is judged against: a live entry's revision, or an expired
/// entry still stored.
#[derive(Debug, Clone, Copy)]
enum Current {
    Absent,
    Live(Revision),
    Expired(Revision),
}

impl Current {
    fn of(stored: Option<(Revision, Option<Micros>)>, now: Micros) -> Self {
        match stored {
            None => Current::Absent,
            Some((revision, Some(expires_at))) if expires_at <= now => Current::Expired(revision),
            Some((revision, _)) => Current::Live(revision),
        }
    }

    fn live(self) -> Option<Revision> {
        match self {
            Current::Live(revision) => Some(revision),
            _ => None,
        }
    }

    /// Whether `expect` holds; otherwise the conflict, naming `key`.
    fn check(self, key: impl FnOnce() -> String, expect: Expect) -> Result<()> {
        let holds = match expect {
            Expect::Any => true,
            Expect::Absent => self.live().is_none(),
            Expect::Revision(wanted) => self.live() == Some(wanted),
        };
        if holds {
            return Ok(());
        }
        let expected = match expect {
            Expect::Any => "anything".to_string(),
            Expect::Absent => "absent".to_string(),
            Expect::Revision(wanted) => format!("revision {wanted}"),
        };
        let found = match self {
            Current::Absent => "absent".to_string(),
            Current::Live(revision) => format!("revision {revision}"),
            Current::Expired(revision) => format!("absent (revision {revision} expired)"),
        };
        Err(BackendError::CasConflict {
            key: key(),
            expected,
            found,
            current: self.live(),
        })
    }
}

fn kv_name(bucket: &str, key: &str) -> String {
    format!("{bucket}/{key}")
}

impl Meta {
    /// Opens (or creates) the store at `path`, creating missing tables and checking the
    /// format version.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path).map_err(|e| from_meta(path, "opening", e))?;
        let meta = Meta {
            db: RwLock::new(Some(db)),
            broken: Arc::new(AtomicBool::new(false)),
            path: path.to_path_buf(),
            commits: AtomicU64::new(0),
        };
        let txn = meta.write("initialising tables")?;
        {
            let mut table = txn.open_table(META).map_err(meta.err("opening `meta`"))?;
            let found = table
                .get("format_version")
                .map_err(meta.err("reading the format version"))?
                .map(|v| v.value());
            match found {
                None => {
                    table
                        .insert("format_version", FORMAT_VERSION)
                        .map_err(meta.err("writing the format version"))?;
                }
                Some(FORMAT_VERSION) => {}
                Some(other) => {
                    return Err(BackendError::Unavailable(format!(
                        "{} has metadata format version {other}; this build reads version \
                         {FORMAT_VERSION}",
                        path.display()
                    )));
                }
            }
            txn.open_table(STREAMS)
                .map_err(meta.err("opening `streams`"))?;
            txn.open_table(GROUP_OFFSETS)
                .map_err(meta.err("opening `group_offsets`"))?;
            txn.open_table(KV).map_err(meta.err("opening `kv`"))?;
            txn.open_table(KV_REVISIONS)
                .map_err(meta.err("opening `kv_revisions`"))?;
            txn.open_table(KV_EXPIRY)
                .map_err(meta.err("opening `kv_expiry`"))?;
        }
        txn.commit().map_err(meta.err("initialising tables"))?;
        Ok(meta)
    }

    fn err<E: Into<redb::Error>>(&self, what: &'static str) -> impl FnOnce(E) -> BackendError {
        let path = self.path.clone();
        let broken = self.broken.clone();
        move |e| {
            let error = e.into();
            if matches!(error, redb::Error::Io(_) | redb::Error::PreviousIo) {
                broken.store(true, Ordering::Release);
            }
            from_meta(&path, what, error)
        }
    }

    /// The open handle, opened again first if an I/O error broke it (redb refuses every write
    /// after one, even once the disk has room again).
    fn database(&self) -> Result<std::sync::RwLockReadGuard<'_, Option<Database>>> {
        if self.broken.load(Ordering::Acquire) {
            self.reopen()?;
        }
        Ok(self.db.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn reopen(&self) -> Result<()> {
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if !self.broken.load(Ordering::Acquire) {
            return Ok(()); // another caller did it
        }
        // The old handle must be gone first: it holds the file's lock.
        drop(slot.take());
        let db = Database::create(&self.path)
            .map_err(|e| from_meta(&self.path, "opening again after an I/O error", e))?;
        *slot = Some(db);
        self.broken.store(false, Ordering::Release);
        tracing::warn!(path = %self.path.display(), "metadata store opened again after an I/O error");
        Ok(())
    }

    fn write(&self, what: &'static str) -> Result<redb::WriteTransaction> {
        let db = self.database()?;
        let db = db.as_ref().ok_or(BackendError::Closed)?;
        db.begin_write().map_err(self.err(what))
    }

    fn read(&self, what: &'static str) -> Result<redb::ReadTransaction> {
        let db = self.database()?;
        let db = db.as_ref().ok_or(BackendError::Closed)?;
        db.begin_read().map_err(self.err(what))
    }

    /// Commits `txn` with redb's default durability, `Immediate`: on disk (fsynced) before
    /// this returns.
    fn commit(&self, txn: redb::WriteTransaction, what: &'static str) -> Result<()> {
        txn.commit().map_err(self.err(what))?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Write transactions committed since opening (every batch of writes, stream definition
    /// and removal of expired entries).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Runs `apply` on the tables of one write transaction, then commits it durably if it
    /// changed anything. When `apply` fails nothing of it is committed.
    pub fn write_batch<T>(&self, apply: impl FnOnce(&mut Writes<'_>) -> Result<T>) -> Result<T> {
        let txn = self.write("starting a batch of writes")?;
        let (out, changed) = {
            let mut writes = Writes {
                path: &self.path,
                offsets: txn
                    .open_table(GROUP_OFFSETS)
                    .map_err(self.err("opening `group_offsets`"))?,
                kv: txn.open_table(KV).map_err(self.err("opening `kv`"))?,
                expiry: txn
                    .open_table(KV_EXPIRY)
                    .map_err(self.err("opening `kv_expiry`"))?,
                revisions: txn
                    .open_table(KV_REVISIONS)
                    .map_err(self.err("opening `kv_revisions`"))?,
                changed: false,
            };
            let out = apply(&mut writes)?;
            (out, writes.changed)
        };
        if changed {
            self.commit(txn, "committing a batch of writes")?;
        } else {
            txn.abort()
                .map_err(self.err("ending a batch that changed nothing"))?;
        }
        Ok(out)
    }

    /// Holds redb's write lock until the transaction is dropped, so tests can make writes
    /// queue up behind a commit in progress.
    #[cfg(test)]
    pub fn hold_write_lock(&self) -> Result<redb::WriteTransaction> {
        self.write("holding the write lock")
    }

    /// Every stored stream, by name.
    pub fn streams(&self) -> Result<Vec<(StreamName, StoredStream)>> {
        let txn = self.read("listing streams")?;
        let table = txn
            .open_table(STREAMS)
            .map_err(self.err("opening `streams`"))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(self.err("listing streams"))? {
            let (name, json) = row.map_err(self.err("listing streams"))?;
            let name = name.value();
            let stream = StreamName::new(name).map_err(|e| {
                BackendError::Corrupt(format!(
                    "{} holds a stream with an invalid name: {e}",
                    self.path.display()
                ))
            })?;
            let stored: StoredStream = serde_json::from_slice(json.value()).map_err(|e| {
                BackendError::Corrupt(format!(
                    "{}: the definition of stream `{name}` is unreadable: {e}",
                    self.path.display()
                ))
            })?;
            out.push((stream, stored));
        }
        Ok(out)
    }

    /// Records a new stream.
    pub fn insert_stream(&self, name: &StreamName, stream: &StoredStream) -> Result<()> {
        let json = serde_json::to_vec(stream)
            .map_err(|e| BackendError::Engine(format!("encoding stream `{name}`: {e}")))?;
        let txn = self.write("creating a stream")?;
        {
            let mut table = txn
                .open_table(STREAMS)
                .map_err(self.err("opening `streams`"))?;
            table
                .insert(name.as_str(), json.as_slice())
                .map_err(self.err("creating a stream"))?;
        }
        self.commit(txn, "creating a stream")
    }

    /// Removes a stream's definition, and every group's committed offsets on it in the same
    /// transaction.
    pub fn delete_stream(&self, name: &StreamName) -> Result<()> {
        let txn = self.write("deleting a stream")?;
        {
            let mut table = txn
                .open_table(STREAMS)
                .map_err(self.err("opening `streams`"))?;
            table
                .remove(name.as_str())
                .map_err(self.err("deleting a stream"))?;
            let mut offsets = txn
                .open_table(GROUP_OFFSETS)
                .map_err(self.err("opening `group_offsets`"))?;
            remove_offsets_on(&mut offsets, &self.path, name)?;
        }
        self.commit(txn, "deleting a stream")
    }

    pub fn committed_offset(
        &self,
        group: &str,
        stream: &StreamName,
        partition: Partition,
    ) -> Result<Option<CommittedOffset>> {
        let txn = self.read("reading a committed offset")?;
        let table = txn
            .open_table(GROUP_OFFSETS)
            .map_err(self.err("opening `group_offsets`"))?;
        let found = table
            .get((group, stream.as_str(), partition))
            .map_err(self.err("reading a committed offset"))?;
        Ok(found.map(|guard| {
            let (offset, revision) = guard.value();
            CommittedOffset { offset, revision }
        }))
    }

    pub fn kv_get(&self, bucket: &str, key: &str, now: Micros) -> Result<Option<KvEntry>> {
        let txn = self.read("reading a key")?;
        let table = txn.open_table(KV).map_err(self.err("opening `kv`"))?;
        let found = table
            .get((bucket, key))
            .map_err(self.err("reading a key"))?;
        Ok(found.and_then(|guard| {
            let (revision, expires_at, value) = guard.value();
            live_entry(key, revision, expires_at, value, now)
        }))
    }

    pub fn kv_scan(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        now: Micros,
    ) -> Result<Vec<KvEntry>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let txn = self.read("scanning keys")?;
        let table = txn.open_table(KV).map_err(self.err("opening `kv`"))?;
        let start = match start_after {
            Some(after) if after >= prefix => std::ops::Bound::Excluded((bucket, after)),
            _ => std::ops::Bound::Included((bucket, prefix)),
        };
        let rows = table
            .range::<(&str, &str)>((start, std::ops::Bound::Unbounded))
            .map_err(self.err("scanning keys"))?;
        for row in rows {
            let (stored_key, stored) = row.map_err(self.err("scanning keys"))?;
            let (row_bucket, key) = stored_key.value();
            if row_bucket != bucket || !key.starts_with(prefix) {
                break;
            }
            let (revision, expires_at, value) = stored.value();
            if let Some(entry) = live_entry(key, revision, expires_at, value, now) {
                out.push(entry);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Removes up to `max` entries that expired at or before `now`; returns how many.
    pub fn remove_expired(&self, now: Micros, max: usize) -> Result<usize> {
        // Look first in a read transaction so a pass with nothing to do writes nothing.
        let expired: Vec<(Micros, String, String)> = {
            let txn = self.read("finding expired keys")?;
            let table = txn
                .open_table(KV_EXPIRY)
                .map_err(self.err("opening `kv_expiry`"))?;
            let end = (now.saturating_add(1), "", "");
            let mut found = Vec::new();
            for row in table
                .range::<(u64, &str, &str)>(..end)
                .map_err(self.err("finding expired keys"))?
                .take(max)
            {
                let (key, _) = row.map_err(self.err("finding expired keys"))?;
                let (expires_at, bucket, key) = key.value();
                found.push((expires_at, bucket.to_string(), key.to_string()));
            }
            found
        };
        if expired.is_empty() {
            return Ok(0);
        }
        let txn = self.write("removing expired keys")?;
        let mut removed = 0;
        {
            let mut kv = txn.open_table(KV).map_err(self.err("opening `kv`"))?;
            let mut expiry = txn
                .open_table(KV_EXPIRY)
                .map_err(self.err("opening `kv_expiry`"))?;
            for (expires_at, bucket, key) in &expired {
                let index_row = (*expires_at, bucket.as_str(), key.as_str());
                // A write since the look may have replaced the entry (and its index row).
                let still_indexed = expiry
                    .remove(index_row)
                    .map_err(self.err("updating `kv_expiry`"))?
                    .is_some();
                if !still_indexed {
                    continue;
                }
                let stored_expiry = kv
                    .get((bucket.as_str(), key.as_str()))
                    .map_err(self.err("reading a key"))?
                    .and_then(|guard| guard.value().1);
                if stored_expiry == Some(*expires_at) {
                    kv.remove((bucket.as_str(), key.as_str()))
                        .map_err(self.err("removing an expired key"))?;
                    removed += 1;
                }
            }
        }
        self.commit(txn, "removing expired keys")?;
        Ok(removed)
    }
}

/// The mapping of a redb error met while doing `what` on the store at `path`.
fn failed<E: Into<redb::Error>>(path: &Path, what: &'static str) -> impl FnOnce(E) -> BackendError {
    move |e| from_meta(path, what, e)
}

impl Write for CommitOffset {
    type Output = Revision;

    fn apply(&self, writes: &mut Writes<'_>, _now: Micros) -> Result<Revision> {
        let path = writes.path;
        let key = (self.group.as_str(), self.stream.as_str(), self.partition);
        let current = writes
            .offsets
            .get(key)
            .map_err(failed(path, "reading a committed offset"))?
            .map(|guard| guard.value().1);
        let state = current.map_or(Current::Absent, Current::Live);
        state.check(
            || {
                format!(
                    "offset of group `{}` on {}/{}",
                    self.group, self.stream, self.partition
                )
            },
            self.expect,
        )?;
        let revision = current.unwrap_or(0) + 1;
        writes
            .offsets
            .insert(key, (self.offset, revision))
            .map_err(failed(path, "committing an offset"))?;
        writes.changed = true;
        Ok(revision)
    }
}

impl Write for KvPut {
    type Output = Revision;

    fn apply(&self, writes: &mut Writes<'_>, now: Micros) -> Result<Revision> {
        let path = writes.path;
        let (bucket, key) = (self.bucket.as_str(), self.key.as_str());
        let expires_at = self
            .ttl
            .map(|ttl| now.saturating_add(ttl.as_micros().min(u64::MAX as u128) as u64));
        let stored = stored_entry(&writes.kv, path, bucket, key)?;
        Current::of(stored, now).check(|| kv_name(bucket, key), self.expect)?;
        if let Some((_, Some(old_expiry))) = stored {
            writes
                .expiry
                .remove((old_expiry, bucket, key))
                .map_err(failed(path, "updating `kv_expiry`"))?;
        }
        let last = writes
            .revisions
            .get(bucket)
            .map_err(failed(path, "reading a bucket's revision"))?
            .map_or(0, |guard| guard.value());
        let revision = last + 1;
        writes
            .revisions
            .insert(bucket, revision)
            .map_err(failed(path, "writing a bucket's revision"))?;
        writes
            .kv
            .insert((bucket, key), (revision, expires_at, self.value.as_ref()))
            .map_err(failed(path, "writing a key"))?;
        if let Some(expires_at) = expires_at {
            writes
                .expiry
                .insert((expires_at, bucket, key), ())
                .map_err(failed(path, "updating `kv_expiry`"))?;
        }
        writes.changed = true;
        Ok(revision)
    }
}

impl Write for KvDelete {
    type Output = ();

    fn apply(&self, writes: &mut Writes<'_>, now: Micros) -> Result<()> {
        let path = writes.path;
        let (bucket, key) = (self.bucket.as_str(), self.key.as_str());
        let stored = stored_entry(&writes.kv, path, bucket, key)?;
        Current::of(stored, now).check(|| kv_name(bucket, key), self.expect)?;
        let Some((_, old_expiry)) = stored else {
            // Nothing stored: nothing to change.
            return Ok(());
        };
        writes
            .kv
            .remove((bucket, key))
            .map_err(failed(path, "deleting a key"))?;
        if let Some(old_expiry) = old_expiry {
            writes
                .expiry
                .remove((old_expiry, bucket, key))
                .map_err(failed(path, "updating `kv_expiry`"))?;
        }
        writes.changed = true;
        Ok(())
    }
}

/// Removes every group's committed offsets on `stream` (a scan of the table: streams are
/// deleted rarely, offsets are few). Returns how many.
fn remove_offsets_on(
    offsets: &mut Table<'_, OffsetKey, (u64, u64)>,
    path: &Path,
    stream: &StreamName,
) -> Result<usize> {
    let mut doomed: Vec<(String, u32)> = Vec::new();
    for row in offsets
        .iter()
        .map_err(failed(path, "listing committed offsets"))?
    {
        let (key, _) = row.map_err(failed(path, "listing committed offsets"))?;
        let (group, on, partition) = key.value();
        if on == stream.as_str() {
            doomed.push((group.to_string(), partition));
        }
    }
    // (The iterator above has ended: its borrow of the table with it.)
    for (group, partition) in &doomed {
        offsets
            .remove((group.as_str(), stream.as_str(), *partition))
            .map_err(failed(path, "deleting a committed offset"))?;
    }
    Ok(doomed.len())
}

impl Write for DeleteOffsets {
    type Output = usize;

    fn apply(&self, writes: &mut Writes<'_>, _now: Micros) -> Result<usize> {
        let path = writes.path;
        let removed = match self {
            DeleteOffsets::OnStream(stream) => {
                remove_offsets_on(&mut writes.offsets, path, stream)?
            }
            DeleteOffsets::OfGroup(group) => {
                let mut doomed: Vec<(String, u32)> = Vec::new();
                {
                    let rows = writes
                        .offsets
                        .range::<(&str, &str, u32)>((group.as_str(), "", 0)..)
                        .map_err(failed(path, "listing committed offsets"))?;
                    for row in rows {
                        let (key, _) = row.map_err(failed(path, "listing committed offsets"))?;
                        let (of, stream, partition) = key.value();
                        if of != group.as_str() {
                            break;
                        }
                        doomed.push((stream.to_string(), partition));
                    }
                }
                for (stream, partition) in &doomed {
                    writes
                        .offsets
                        .remove((group.as_str(), stream.as_str(), *partition))
                        .map_err(failed(path, "deleting a committed offset"))?;
                }
                doomed.len()
            }
        };
        writes.changed |= removed > 0;
        Ok(removed)
    }
}

impl Write for KvDeletePrefix {
    type Output = usize;

    fn apply(&self, writes: &mut Writes<'_>, now: Micros) -> Result<usize> {
        let path = writes.path;
        let bucket = self.bucket.as_str();
        let mut doomed: Vec<(String, Option<Micros>)> = Vec::new();
        let mut live = 0;
        {
            let rows = writes
                .kv
                .range::<(&str, &str)>((bucket, self.prefix.as_str())..)
                .map_err(failed(path, "listing keys"))?;
            for row in rows {
                let (stored_key, stored) = row.map_err(failed(path, "listing keys"))?;
                let (row_bucket, key) = stored_key.value();
                if row_bucket != bucket || !key.starts_with(self.prefix.as_str()) {
                    break;
                }
                let (_, expires_at, _) = stored.value();
                if expires_at.is_none_or(|at| at > now) {
                    live += 1;
                }
                doomed.push((key.to_string(), expires_at));
            }
        }
        for (key, expires_at) in &doomed {
            writes
                .kv
                .remove((bucket, key.as_str()))
                .map_err(failed(path, "deleting a key"))?;
            if let Some(at) = expires_at {
                writes
                    .expiry
                    .remove((*at, bucket, key.as_str()))
                    .map_err(failed(path, "updating `kv_expiry`"))?;
            }
        }
        writes.changed |= !doomed.is_empty();
        Ok(live)
    }
}

/// The revision and expiry of a stored entry, expired or not.
fn stored_entry(
    kv: &Table<'_, KvKey, KvValue>,
    path: &Path,
    bucket: &str,
    key: &str,
) -> Result<Option<(Revision, Option<Micros>)>> {
    let found = kv
        .get((bucket, key))
        .map_err(failed(path, "reading a key"))?;
    Ok(found.map(|guard| {
        let (revision, expires_at, _) = guard.value();
        (revision, expires_at)
    }))
}

fn live_entry(
    key: &str,
    revision: Revision,
    expires_at: Option<Micros>,
    value: &[u8],
    now: Micros,
) -> Option<KvEntry> {
    if expires_at.is_some_and(|at| at <= now) {
        return None;
    }
    Some(KvEntry {
        key: key.to_string(),
        value: Bytes::copy_from_slice(value),
        revision,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    //! The key-value store and committed offsets against a model: `BTreeMap`s with the
    //! documented rules for conditions, revisions and expiry. Writes come in batches of one to
    //! four, as group commit makes them: within a batch each write must see the ones before
    //! it, and a refused write must leave the others alone.

    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    const BUCKETS: [&str; 2] = ["leases", "dedup"];
    const KEYS: [&str; 4] = ["a", "a1", "a2", "b1"];
    const PREFIXES: [&str; 4] = ["", "a", "a1", "b"];
    const GROUPS: [&str; 2] = ["g1", "g2"];

    #[derive(Debug, Clone)]
    enum Condition {
        Any,
        Absent,
        /// The key's current revision in the model (or 1 when it has none).
        Current,
        /// A revision that may or may not be current.
        Guess(u64),
    }

    #[derive(Debug, Clone)]
    enum WriteSpec {
        Put {
            bucket: usize,
            key: usize,
            value: u8,
            condition: Condition,
            ttl_secs: Option<u64>,
        },
        Delete {
            bucket: usize,
            key: usize,
            condition: Condition,
        },
        Commit {
            group: usize,
            offset: u64,
            condition: Condition,
        },
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Writes applied in one transaction, in order.
        Batch(Vec<WriteSpec>),
        Advance(u64),
        RemoveExpired,
        Scan {
            bucket: usize,
            prefix: usize,
            start_after: Option<usize>,
            limit: usize,
        },
    }

    fn condition() -> impl Strategy<Value = Condition> {
        prop_oneof![
            Just(Condition::Any),
            Just(Condition::Absent),
            Just(Condition::Current),
            (1u64..12).prop_map(Condition::Guess),
        ]
    }

    fn write_spec() -> impl Strategy<Value = WriteSpec> {
        prop_oneof![
            4 => (0..2usize, 0..4usize, any::<u8>(), condition(), prop::option::of(1u64..4))
                .prop_map(|(bucket, key, value, condition, ttl_secs)| WriteSpec::Put {
                    bucket, key, value, condition, ttl_secs
                }),
            2 => (0..2usize, 0..4usize, condition())
                .prop_map(|(bucket, key, condition)| WriteSpec::Delete { bucket, key, condition }),
            1 => (0..2usize, 0u64..100, condition())
                .prop_map(|(group, offset, condition)| WriteSpec::Commit { group, offset, condition }),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => prop::collection::vec(write_spec(), 1..5).prop_map(Op::Batch),
            1 => (0u64..3).prop_map(Op::Advance),
            1 => Just(Op::RemoveExpired),
            2 => (0..2usize, 0..4usize, prop::option::of(0..4usize), 1..4usize)
                .prop_map(|(bucket, prefix, start_after, limit)| Op::Scan {
                    bucket, prefix, start_after, limit
                }),
        ]
    }

    /// (revision, expires_at, value) of a modelled entry.
    type Stored = (u64, Option<u64>, Vec<u8>);

    #[derive(Default)]
    struct Model {
        /// (bucket, key) → entry
        entries: BTreeMap<(String, String), Stored>,
        last_revision: BTreeMap<String, u64>,
        /// group → (offset, revision)
        offsets: BTreeMap<String, (u64, u64)>,
    }

    fn expect(condition: &Condition, live: Option<u64>) -> Expect {
        match condition {
            Condition::Any => Expect::Any,
            Condition::Absent => Expect::Absent,
            Condition::Current => Expect::Revision(live.unwrap_or(1)),
            Condition::Guess(revision) => Expect::Revision(*revision),
        }
    }

    fn holds(expect: Expect, live: Option<u64>) -> bool {
        match expect {
            Expect::Any => true,
            Expect::Absent => live.is_none(),
            Expect::Revision(revision) => live == Some(revision),
        }
    }

    impl Model {
        fn live(&self, bucket: &str, key: &str, now: u64) -> Option<u64> {
            self.entries
                .get(&(bucket.to_string(), key.to_string()))
                .filter(|(_, expires_at, _)| expires_at.is_none_or(|at| at > now))
                .map(|(revision, _, _)| *revision)
        }

        /// Turns `spec` into a write and applies it to the model: its expected outcome is a
        /// revision (`None` for a delete), or a conflict reporting the current revision.
        fn apply(
            &mut self,
            spec: &WriteSpec,
            now: u64,
        ) -> (Planned, Result<Option<u64>, Option<u64>>) {
            match *spec {
                WriteSpec::Put {
                    bucket,
                    key,
                    value,
                    ref condition,
                    ttl_secs,
                } => {
                    let (bucket, key) = (BUCKETS[bucket], KEYS[key]);
                    let live = self.live(bucket, key, now);
                    let expect = expect(condition, live);
                    let write = Planned::Put(KvPut {
                        bucket: bucket.to_string(),
                        key: key.to_string(),
                        value: Bytes::from(vec![value]),
                        expect,
                        ttl: ttl_secs.map(Duration::from_secs),
                    });
                    if !holds(expect, live) {
                        return (write, Err(live));
                    }
                    let last = self.last_revision.entry(bucket.to_string()).or_default();
                    *last += 1;
                    let revision = *last;
                    let expires_at = ttl_secs.map(|s| now + s * 1_000_000);
                    self.entries.insert(
                        (bucket.to_string(), key.to_string()),
                        (revision, expires_at, vec![value]),
                    );
                    (write, Ok(Some(revision)))
                }
                WriteSpec::Delete {
                    bucket,
                    key,
                    ref condition,
                } => {
                    let (bucket, key) = (BUCKETS[bucket], KEYS[key]);
                    let live = self.live(bucket, key, now);
                    let expect = expect(condition, live);
                    let write = Planned::Delete(KvDelete {
                        bucket: bucket.to_string(),
                        key: key.to_string(),
                        expect,
                    });
                    if !holds(expect, live) {
                        return (write, Err(live));
                    }
                    self.entries.remove(&(bucket.to_string(), key.to_string()));
                    (write, Ok(None))
                }
                WriteSpec::Commit {
                    group,
                    offset,
                    ref condition,
                } => {
                    let group = GROUPS[group];
                    let live = self.offsets.get(group).map(|(_, revision)| *revision);
                    let expect = expect(condition, live);
                    let write = Planned::Commit(CommitOffset {
                        group: group.to_string(),
                        stream: StreamName::new("orders").expect("a valid name"),
                        partition: 0,
                        offset,
                        expect,
                    });
                    if !holds(expect, live) {
                        return (write, Err(live));
                    }
                    let revision = live.unwrap_or(0) + 1;
                    self.offsets.insert(group.to_string(), (offset, revision));
                    (write, Ok(Some(revision)))
                }
            }
        }
    }

    /// A write as the store takes it.
    enum Planned {
        Put(KvPut),
        Delete(KvDelete),
        Commit(CommitOffset),
    }

    impl Planned {
        fn apply(&self, writes: &mut Writes<'_>, now: Micros) -> Result<Option<u64>> {
            match self {
                Planned::Put(put) => put.apply(writes, now).map(Some),
                Planned::Delete(delete) => delete.apply(writes, now).map(|()| None),
                Planned::Commit(commit) => commit.apply(writes, now).map(Some),
            }
        }
    }

    fn fail(e: impl std::fmt::Display) -> TestCaseError {
        TestCaseError::fail(e.to_string())
    }

    fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let dir = tempfile::tempdir().map_err(fail)?;
        let meta = Meta::open(&dir.path().join("meta.redb")).map_err(fail)?;
        let orders = StreamName::new("orders").map_err(fail)?;
        let mut model = Model::default();
        let mut now: u64 = 1_000_000_000;
        for op in ops {
            match op {
                Op::Batch(specs) => {
                    let (planned, expected): (Vec<_>, Vec<_>) =
                        specs.iter().map(|spec| model.apply(spec, now)).unzip();
                    let commits_before = meta.commits();
                    let results = meta
                        .write_batch(|writes| {
                            Ok(planned
                                .iter()
                                .map(|write| write.apply(writes, now))
                                .collect::<Vec<_>>())
                        })
                        .map_err(fail)?;
                    for (i, (result, expected)) in results.into_iter().zip(&expected).enumerate() {
                        match (result, expected) {
                            (Ok(got), Ok(want)) => prop_assert_eq!(got, *want, "write {}", i),
                            (Err(BackendError::CasConflict { current, .. }), Err(live)) => {
                                prop_assert_eq!(current, *live, "write {}", i);
                            }
                            (got, want) => {
                                prop_assert!(false, "write {i}: got {got:?}, expected {want:?}")
                            }
                        }
                    }
                    prop_assert!(meta.commits() - commits_before <= 1, "one commit a batch");
                }
                Op::Advance(secs) => now += secs * 1_000_000,
                Op::RemoveExpired => {
                    let removed = meta.remove_expired(now, usize::MAX).map_err(fail)?;
                    let before = model.entries.len();
                    model
                        .entries
                        .retain(|_, (_, expires_at, _)| expires_at.is_none_or(|at| at > now));
                    prop_assert_eq!(removed, before - model.entries.len());
                }
                Op::Scan {
                    bucket,
                    prefix,
                    start_after,
                    limit,
                } => {
                    let (bucket, prefix) = (BUCKETS[bucket], PREFIXES[prefix]);
                    let start_after = start_after.map(|i| KEYS[i]);
                    let got: Vec<(String, u64, Vec<u8>)> = meta
                        .kv_scan(bucket, prefix, start_after, limit, now)
                        .map_err(fail)?
                        .into_iter()
                        .map(|e| (e.key, e.revision, e.value.to_vec()))
                        .collect();
                    let expected: Vec<(String, u64, Vec<u8>)> = model
                        .entries
                        .iter()
                        .filter(|((b, k), (_, expires_at, _))| {
                            b == bucket
                                && k.starts_with(prefix)
                                && start_after.is_none_or(|after| k.as_str() > after)
                                && expires_at.is_none_or(|at| at > now)
                        })
                        .take(limit)
                        .map(|((_, k), (revision, _, value))| (k.clone(), *revision, value.clone()))
                        .collect();
                    prop_assert_eq!(got, expected);
                }
            }
            // Every key and committed offset reads as the model says after every step.
            for bucket in BUCKETS {
                for key in KEYS {
                    let got = meta
                        .kv_get(bucket, key, now)
                        .map_err(fail)?
                        .map(|e| (e.revision, e.expires_at, e.value.to_vec()));
                    let expected = model
                        .entries
                        .get(&(bucket.to_string(), key.to_string()))
                        .filter(|(_, expires_at, _)| expires_at.is_none_or(|at| at > now))
                        .cloned();
                    prop_assert_eq!(got, expected, "{}/{}", bucket, key);
                }
            }
            for group in GROUPS {
                let got = meta
                    .committed_offset(group, &orders, 0)
                    .map_err(fail)?
                    .map(|c| (c.offset, c.revision));
                prop_assert_eq!(got, model.offsets.get(group).copied(), "{}", group);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn writes_in_batches_behave_like_the_model(ops in prop::collection::vec(op(), 1..40)) {
            run(ops)?;
        }
    }
}
