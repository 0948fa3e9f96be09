//! Runnel's single-node default backend: the [`runnel_backend::Backend`] trait over Runnel's
//! own partition log (`runnel-log`) for records and an embedded transactional store (redb)
//! for stream definitions, committed group offsets and the key-value store.
//!
//! It exists so Runnel runs as one binary with nothing else to install; the JetStream backend
//! is the scale-out path, and both pass the same conformance suite (`runnel-test-util`).
//!
//! Layout under [`EmbeddedConfig::data_dir`]:
//! ```text
//! meta.redb                          streams, group offsets, key-value store (see below)
//! streams/<stream>/<partition>/      one PartitionLog per partition (segments + indexes)
//! ```
//! Stream names are validated [`runnel_backend::StreamName`]s, safe as directory names. Every
//! stream's partitions are opened (and recovered) when the backend opens and stay open.
//!
//! The tables of `meta.redb` are described in the `meta` module: `streams` (name → JSON
//! config and creation time), `group_offsets` ((group, stream, partition) → (offset,
//! revision)), `kv` ((bucket, key) → (revision, expires_at, value)), `kv_revisions` (bucket →
//! last revision) and `kv_expiry` ((expires_at, bucket, key), an index for removal).
//!
//! Metadata writes are group-committed. Offset commits and key-value writes and deletes are
//! queued; one writer thread takes everything queued, applies it in queue order inside one
//! redb write transaction (each write sees the ones before it and gets its own answer: a
//! condition that does not hold refuses only that write), commits once, and then answers
//! every caller. Writers arriving during a commit wait for the next one, so concurrent
//! writers share fsyncs while a lone writer still waits for exactly one. A storage error fails
//! every write of its transaction and commits none of them. [`EmbeddedBackend::stats`] counts
//! writes and commits.
//!
//! Reads keep their reader: after a `read`, the partition's log reader is kept open at the
//! offset where it stopped (up to 8 per partition and 256 per backend, least recently used
//! evicted), and a `read` at exactly that offset continues with it instead of opening a new
//! one and searching the segment's index. A failed read drops its reader; retention that
//! removes segments, a failed append, a maintenance pass finding a reader idle since the last
//! pass, and closing drop cached readers, so none holds a removed file or a closed log open.
//!
//! Invariants:
//! - An append is acknowledged once durable by [`EmbeddedConfig::fsync`]; a committed offset,
//!   a key-value write or a stream definition once the redb transaction holding it has
//!   committed with immediate durability (so it survives `kill -9` and power loss alike). A
//!   refused condition is answered only once the state it was judged against is durable too.
//! - A stream's partition directories exist before its definition is committed: a crash in
//!   between leaves empty directories no stream names, never a stream without its logs.
//! - Revisions: a committed offset's revision counts its commits (1, 2, …); key-value
//!   revisions come from one counter per bucket that never goes back, even across deletes.
//! - Expiry is judged by the injected clock: by a read at the moment of the call, by a write
//!   when its batch is applied (its TTL counts from that instant too). An expired entry reads
//!   as absent, satisfies [`runnel_backend::Expect::Absent`] and is skipped by scans, whether or
//!   not the maintenance task has removed it yet.
//! - Blocking work (redb reads, stream definitions, opening logs, reading segment files,
//!   dropping logs) runs on Tokio's blocking pool and metadata writes on their writer thread;
//!   appends use the log's asynchronous path; waiting for data watches the log's high
//!   watermark instead of polling.
//! - Retention removes whole sealed segments of a partition (the active one never), judged
//!   by the injected clock: a stream's `max_age` applies to a segment's newest record and
//!   `max_bytes_per_partition` to the partition's total size. It runs every
//!   [`EmbeddedConfig::maintenance_interval`] and on [`EmbeddedBackend::enforce_retention_now`].
//!
//! Limits of this backend: one process owns a data directory at a time (redb and every
//! partition directory hold a lock); a stream has at most [`MAX_PARTITIONS`] partitions;
//! metadata writes are applied by one thread, so their throughput is one transaction's worth
//! of redb work per fsync.

mod backend;
mod config;
mod error;
mod group_commit;
mod meta;
mod readers;
mod sync;

pub use backend::{EmbeddedBackend, EmbeddedStats, MAX_PARTITIONS, MaintenanceReport};
pub use config::EmbeddedConfig;
pub use runnel_log::FsyncPolicy;
