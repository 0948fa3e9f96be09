//! Consumer groups: configuration, partition leases, partition workers, deliveries.

mod config;
mod delete;
mod delivery;
mod dlq;
pub(crate) mod keys;
mod lag;
mod member;
mod retries;
mod stats;
mod worker;

pub use config::{GroupConfig, GroupName, Ordering, StartFrom, validate_group_name};
pub use delete::{STAGE_GROUP_PREFIXES, internal_group, internal_stream};
pub use delivery::{Delivery, FailureClass, HandlerError};
pub use dlq::{DlqDepth, DlqEntry, DlqFilter, DlqPage, DlqSelector, ReplayReport, replay_stream};
pub use lag::{GroupLag, PartitionLag};
pub(crate) use member::Member;
pub use member::{Consumer, ConsumerHandle, GroupBuilder, Message};
pub use retries::ScheduledRetry;
pub use stats::GroupCounts;
