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
//! Invariants:
//! - An append is acknowledged once durable by [`EmbeddedConfig::fsync`]; a committed offset,
//!   a key-value write or a stream definition once its redb transaction has committed with
//!   immediate durability (so it survives `kill -9` and power loss alike).
//! - A stream's partition directories exist before its definition is committed: a crash in
//!   between leaves empty directories no stream names, never a stream without its logs.
//! - Revisions: a committed offset's revision counts its commits (1, 2, …); key-value
//!   revisions come from one counter per bucket that never goes back, even across deletes.
//! - Expiry is judged by the injected clock at the moment of each call: an expired entry reads
//!   as absent, satisfies [`runnel_backend::Expect::Absent`] and is skipped by scans, whether or
//!   not the maintenance task has removed it yet.
//! - Blocking work (redb transactions, opening logs, reading segment files, dropping logs)
//!   runs on Tokio's blocking pool; appends use the log's asynchronous path; waiting for data
//!   watches the log's high watermark instead of polling.
//! - Retention removes whole sealed segments of a partition (the active one never), judged
//!   by the injected clock: a stream's `max_age` applies to a segment's newest record and
//!   `max_bytes_per_partition` to the partition's total size. It runs every
//!   [`EmbeddedConfig::maintenance_interval`] and on [`EmbeddedBackend::enforce_retention_now`].
//!
//! Limits of this backend: one process owns a data directory at a time (redb and every
//! partition directory hold a lock); a stream has at most [`MAX_PARTITIONS`] partitions;
//! key-value writes are one fsynced transaction each (no group commit across writers).

mod backend;
mod config;
mod error;
mod meta;

pub use backend::{EmbeddedBackend, MAX_PARTITIONS, MaintenanceReport};
pub use config::EmbeddedConfig;
pub use runnel_log::FsyncPolicy;
