//! Runnel's runtime: what users program against.
//!
//! Producers publish typed events; independent consumer groups process them at least once, in
//! order per entity, concurrently across entities. The runtime knows no storage engine: it
//! talks to an `Arc<dyn Backend>` only, so the embedded log and NATS JetStream behave the same.
//!
//! Invariants:
//! - An event goes to the stream named by its type's domain, to the partition given by a
//!   stable hash of its partition key (same key, same partition, total order per entity).
//! - A publish repeating an event id within the dedup window appends nothing and answers with
//!   the first publish's position; the window is rebuilt from the log after a restart.
//! - A batch is validated whole before anything is appended.

mod config;
mod dedup;
mod error;
mod group;
mod pattern;
mod producer;
mod runtime;
mod schemas;
pub mod trace;

pub use config::RuntimeConfig;
pub use error::{Result, RuntimeError};
pub use group::{
    Consumer, ConsumerHandle, Delivery, DlqDepth, DlqEntry, DlqFilter, DlqPage, DlqSelector,
    FailureClass, GroupBuilder, GroupConfig, GroupCounts, GroupLag, GroupName, HandlerError,
    Message, Ordering, PartitionLag, ReplayReport, STAGE_GROUP_PREFIXES, ScheduledRetry, StartFrom,
    internal_group, internal_stream, replay_stream, validate_group_name,
};
pub use pattern::{InvalidPattern, TypePattern};
pub use producer::{PublishAck, TypedEvent, partition_for_key};
pub use runtime::Runnel;

pub use runnel_backend::{Backend, StreamConfig, StreamName};
pub use runnel_envelope::{Event, EventType};
