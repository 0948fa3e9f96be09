//! Key-value buckets and keys the consumer groups use. Keys use only `a-z0-9_-/.` so every
//! backend's key-value store accepts them.

use runnel_backend::{Partition, StreamName};

use crate::dedup::identity_hash;

/// Group configurations, by group name.
pub const GROUPS: &str = "runnel_groups";
/// Partition leases: `group/stream/partition` → owning instance.
pub const LEASES: &str = "runnel_leases";
/// Live consumer instances: `group/instance`, kept alive by heartbeats.
pub const MEMBERS: &str = "runnel_members";
/// Dead-letter entries: `group/stream-partition-offset`.
pub const DLQ: &str = "runnel_dlq";
/// Scheduled retries and crash counts: `group/stream/partition/offset`.
pub const RETRIES: &str = "runnel_retries";
/// Per-partition list of deliveries in flight (with their attempt numbers), written before
/// they are handed out: after a crash these are the suspects.
pub const INFLIGHT: &str = "runnel_inflight";
/// When a group was first configured with `start: latest` (microseconds, decimal), by group
/// name: where it starts on partitions it has not committed on.
pub const LATEST_SINCE: &str = "runnel_latest_since";
/// Processed events: `group/<identity hash of source and id>` (see `dedup::identity_hash`).
pub const PROCESSED: &str = "runnel_processed";

pub fn partition_key(group: &str, stream: &StreamName, partition: Partition) -> String {
    format!("{group}/{stream}/{partition}")
}

pub fn member_key(group: &str, instance: &str) -> String {
    format!("{group}/{instance}")
}

pub fn processed_key(group: &str, source: &str, event_id: &str) -> String {
    format!("{group}/{:032x}", identity_hash(source, event_id))
}

pub fn retry_key(group: &str, stream: &StreamName, partition: Partition, offset: u64) -> String {
    format!("{group}/{stream}/{partition}/{offset:020}")
}

pub fn retry_prefix(group: &str, stream: &StreamName, partition: Partition) -> String {
    format!("{group}/{stream}/{partition}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processed_keys_are_the_same_in_every_process() {
        // Records written by an earlier process must be found by the next one.
        let mut name = 5u64.to_le_bytes().to_vec();
        name.extend_from_slice(b"/shopevt-1");
        assert_eq!(
            processed_key("mailer", "/shop", "evt-1"),
            format!("mailer/{:032x}", xxhash_rust::xxh3::xxh3_128(&name))
        );
    }

    #[test]
    fn two_sources_sharing_an_id_are_two_processed_records() {
        assert_ne!(
            processed_key("mailer", "/billing", "1"),
            processed_key("mailer", "/shipping", "1")
        );
        assert_ne!(
            processed_key("mailer", "/a", "b1"),
            processed_key("mailer", "/ab", "1"),
            "the source's length keeps pairs apart"
        );
    }
}
