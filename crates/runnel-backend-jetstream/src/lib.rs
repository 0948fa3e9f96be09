//! Runnel's scale-out backend: the [`runnel_backend::Backend`] trait on NATS JetStream.
//!
//! It exists so that Runnel outgrows one machine without building replication or consensus
//! of its own: JetStream replicates streams and key-value buckets (Raft per stream), and
//! several Runnel servers share one JetStream cluster. The runtime and every API stay the
//! same; the same conformance suite (`runnel-test-util`) passes on it and on the embedded
//! backend. `docs/jetstream.md` says how to run it and what differs.
//!
//! What maps to what (namespace `runnel` by default; see `names`):
//! ```text
//! stream `order`, partition 2   JetStream stream runnel_order_2, subject runnel.order.2
//!                               record offset = stream sequence − 1 (dense, from 0)
//! stream definitions            KV bucket runnel_streams      (key: stream name, JSON)
//! committed group offsets       KV bucket runnel_offsets      (key: group.stream.partition)
//! key-value bucket `b`          KV bucket runnel_kv_b         (key a/b/c → subject a.b.c)
//! ```
//!
//! Modules, each for one reason:
//! - `config`: the one typed configuration, with defaults.
//! - `names`: JetStream names from Runnel names, by injective escapes.
//! - `frame`: the payload frames of records and key-value entries (NATS headers cannot carry
//!   arbitrary bytes; Runnel headers can).
//! - `acks`: publish acknowledgements gathered per batch under one inbox, not one request
//!   per record.
//! - `partition`: one partition's stream: conditional, pipelined appends; cursor reads;
//!   reads by time; waits that wake on new data.
//! - `cursor`: a reader positioned in a partition: a fetch per read through a backlog, a
//!   pull that stays open at the tail.
//! - `kv`: key-value buckets with compare-and-set by revision and expiry by the injected clock.
//! - `backend`: connecting (refusing servers older than 2.10), stream definitions, dispatch.
//! - `shared`: what the partitions and buckets of one backend hold in common.
//! - `error`: engine errors to [`runnel_backend::BackendError`]s.
//!
//! Invariants:
//! - An append is acknowledged once every record of it is acknowledged by JetStream, which
//!   (like any JetStream publish) means stored by the stream's replicas — on disk by
//!   JetStream's `sync_interval` (see `docs/jetstream.md`), not necessarily fsynced.
//! - A batch lands contiguously or not at all when the only obstacle is another writer; a
//!   batch that fails part way (the server refused a later record) is reported as an error,
//!   and its stored prefix stays (as on the embedded backend, a batch is not atomic).
//! - Append timestamps come from the injected clock and never decrease along a partition.
//! - Key-value and offset revisions are JetStream sequences: growing, never reused.
//! - An expired key-value entry is never returned, whether or not it has been removed yet.

mod acks;
mod backend;
mod config;
mod cursor;
mod error;
mod frame;
mod kv;
mod names;
mod partition;
mod shared;

pub use backend::{JetStreamBackend, MAX_PARTITIONS, MIN_SERVER_VERSION};
pub use config::{Credentials, JetStreamConfig};
pub use names::validate_namespace;
