//! Consumer groups: configuration, partition leases, partition workers, deliveries.

mod config;
mod delivery;
pub(crate) mod keys;
mod lag;
mod member;
mod stats;
mod worker;

pub use config::{GroupConfig, Ordering, StartFrom, validate_group_name};
pub use delivery::{Delivery, FailureClass, HandlerError};
pub use lag::{GroupLag, PartitionLag};
pub use member::{Consumer, ConsumerHandle, GroupBuilder, Message};
pub use stats::GroupCounts;
