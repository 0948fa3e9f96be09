//! Deleting a consumer group or a stream, refused while something uses it unless forced.
//!
//! A group is in use while a consumer instance runs it (a live membership: in this process,
//! another, or a server's HTTP consumer). A stream is in use while a group reads it: its
//! filter matches the stream's events (a group's own replay stream counts for that group),
//! or a consumer holds a lease on one of its partitions — except the correlation index
//! (`trace-index`), which reads every stream by design and loses nothing but the entries of
//! events that are gone. Runnel's own groups and streams ([`internal_group`],
//! [`internal_stream`]) are refused unless forced too.
//!
//! What runs in this process stops first, as a clean stop does (workers commit what is
//! done), then the data goes, so nothing it writes while stopping is left behind. Consumers
//! in other processes notice at their next heartbeat (a third of `lease_ttl`): a deleted
//! group's members stop, a deleted stream's partitions are released; what they write while
//! stopping after the deletion (a last committed offset of a deleted group) may stay.

use runnel_backend::{BackendError, Expect, StreamName};

use super::config::validate_group_name;
use super::dlq::{group_reads_stream, replay_stream};
use super::keys;
use crate::error::{Result, RuntimeError};
use crate::runtime::Runnel;
use crate::trace::TRACE_GROUP;

/// Prefixes of the groups the server's own stages run: `saga-<name>` (and
/// `saga-<name>-<domain>`), `features-<set>`, `inference-<model>`.
pub const STAGE_GROUP_PREFIXES: [(&str, &str); 3] = [
    ("saga-", "a saga driver"),
    ("features-", "a feature pipeline"),
    ("inference-", "an inference stage"),
];

/// The per-group buckets whose keys start with `<group>/`.
const GROUP_BUCKETS: [&str; 6] = [
    keys::LEASES,
    keys::MEMBERS,
    keys::DLQ,
    keys::RETRIES,
    keys::INFLIGHT,
    keys::PROCESSED,
];

/// What owns a group of Runnel's own, if `group` is one.
pub fn internal_group(group: &str) -> Option<&'static str> {
    if group == TRACE_GROUP {
        return Some("the correlation index");
    }
    STAGE_GROUP_PREFIXES
        .iter()
        .find(|(prefix, _)| group.starts_with(prefix))
        .map(|(_, owner)| *owner)
}

/// The group whose replay stream `stream` is, if it is one (`replay-<group>`).
pub fn internal_stream(stream: &StreamName) -> Option<&str> {
    stream.as_str().strip_prefix("replay-")
}

impl Runnel {
    /// Deletes a consumer group: its configuration, committed offsets, leases and
    /// memberships, scheduled retries and crash counts, in-flight lists, processed ids, its
    /// dead-letter queue and its replay stream. Refused while a consumer runs it
    /// ([`RuntimeError::GroupInUse`]) and for Runnel's own groups
    /// ([`RuntimeError::InternalGroup`]) unless `force`; forced, the consumers running it in
    /// this process stop first (their [`crate::Consumer::next`] answers `None`). One of
    /// Runnel's own groups that a stage still consumes is refused even forced
    /// ([`RuntimeError::InternalGroupRunning`]): the stage would stop without a word.
    pub async fn delete_group(&self, group: &str, force: bool) -> Result<()> {
        validate_group_name(group)?;
        let backend = &self.shared.backend;
        if backend.kv_get(keys::GROUPS, group).await?.is_none() {
            return Err(RuntimeError::UnknownGroup(group.to_string()));
        }
        if let Some(owner) = internal_group(group) {
            // A stage running it would stop silently, forced or not; a stage that is gone
            // (its table removed) left a group only `force` deletes.
            let consumers = self.group_consumers(group).await?;
            if !consumers.is_empty() {
                return Err(RuntimeError::InternalGroupRunning {
                    group: group.to_string(),
                    owner,
                    consumers,
                });
            }
            if !force {
                return Err(RuntimeError::InternalGroup {
                    group: group.to_string(),
                    owner,
                });
            }
        }
        if !force {
            let consumers = self.group_consumers(group).await?;
            if !consumers.is_empty() {
                return Err(RuntimeError::GroupInUse {
                    group: group.to_string(),
                    consumers,
                });
            }
        }
        for member in self.shared.running_members() {
            if member.group_name() == group {
                member.end().await?;
            }
        }
        // The configuration first: members elsewhere stop when they find it gone.
        backend.kv_delete(keys::GROUPS, group, Expect::Any).await?;
        backend.delete_group_offsets(group).await?;
        let prefix = format!("{group}/");
        for bucket in GROUP_BUCKETS {
            backend.kv_delete_prefix(bucket, &prefix).await?;
        }
        backend
            .kv_delete(keys::LATEST_SINCE, group, Expect::Any)
            .await?;
        let replays = replay_stream(group)?;
        match backend.delete_stream(&replays).await {
            Ok(()) | Err(BackendError::UnknownStream(_)) => {}
            Err(error) => return Err(error.into()),
        }
        self.shared.forget_stream(&replays).await;
        tracing::info!(group, force, "group deleted");
        Ok(())
    }

    /// Deletes a stream: its events on every partition, its definition, every group's
    /// committed offsets, in-flight lists, leases and scheduled retries on it. Refused while
    /// a group reads it ([`RuntimeError::StreamInUse`]) and for a group's replay stream
    /// ([`RuntimeError::InternalStream`]) unless `force`; forced, the consumers of this
    /// process stop their workers on it first. Dead letters of its events stay in their
    /// groups' queues (a replay goes through the group's replay stream). A later publish
    /// creates the stream again, empty.
    pub async fn delete_stream(&self, stream: &StreamName, force: bool) -> Result<()> {
        let backend = &self.shared.backend;
        backend.describe_stream(stream).await?;
        if !force {
            if let Some(group) = internal_stream(stream) {
                return Err(RuntimeError::InternalStream {
                    stream: stream.to_string(),
                    group: group.to_string(),
                });
            }
            let groups = self.stream_readers(stream).await?;
            if !groups.is_empty() {
                return Err(RuntimeError::StreamInUse {
                    stream: stream.to_string(),
                    groups,
                });
            }
        }
        self.shared
            .deleting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(stream.clone());
        let result = self.delete_stream_now(stream).await;
        self.shared
            .deleting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(stream);
        result
    }

    async fn delete_stream_now(&self, stream: &StreamName) -> Result<()> {
        let backend = &self.shared.backend;
        for member in self.shared.running_members() {
            member.drop_stream(stream).await?;
        }
        backend.delete_stream(stream).await?;
        self.shared.forget_stream(stream).await;
        for group in self.list_groups().await? {
            let prefix = format!("{}/{stream}/", group.name);
            for bucket in [keys::INFLIGHT, keys::LEASES, keys::RETRIES] {
                backend.kv_delete_prefix(bucket, &prefix).await?;
            }
        }
        tracing::info!(stream = %stream, "stream deleted");
        Ok(())
    }

    /// The consumer instances running a group (live memberships), sorted.
    async fn group_consumers(&self, group: &str) -> Result<Vec<String>> {
        let prefix = format!("{group}/");
        let mut instances: Vec<String> = self
            .shared
            .backend
            .kv_scan(keys::MEMBERS, &prefix, None, 100_000)
            .await?
            .into_iter()
            .map(|entry| entry.key[prefix.len()..].to_string())
            .collect();
        instances.sort();
        Ok(instances)
    }

    /// The groups that read a stream: by their filter, or by a lease on one of its
    /// partitions; not the correlation index, which reads every stream. Sorted, each once.
    async fn stream_readers(&self, stream: &StreamName) -> Result<Vec<String>> {
        let mut groups: Vec<String> = self
            .list_groups()
            .await?
            .into_iter()
            .filter(|group| group_reads_stream(group, stream))
            .map(|group| group.name)
            .collect();
        for lease in self
            .shared
            .backend
            .kv_scan(keys::LEASES, "", None, 100_000)
            .await?
        {
            let mut parts = lease.key.split('/');
            if let (Some(group), Some(on)) = (parts.next(), parts.next())
                && on == stream.as_str()
            {
                groups.push(group.to_string());
            }
        }
        groups.retain(|group| group != TRACE_GROUP);
        groups.sort();
        groups.dedup();
        Ok(groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_stages_groups_and_replay_streams_are_runnels_own() {
        assert_eq!(internal_group("trace-index"), Some("the correlation index"));
        assert_eq!(internal_group("saga-checkout"), Some("a saga driver"));
        assert_eq!(internal_group("features-spend"), Some("a feature pipeline"));
        assert_eq!(
            internal_group("inference-fraud"),
            Some("an inference stage")
        );
        assert_eq!(internal_group("billing"), None);
        assert_eq!(internal_group("sagas"), None);
        let replay = StreamName::new("replay-billing").unwrap();
        assert_eq!(internal_stream(&replay), Some("billing"));
        assert_eq!(internal_stream(&StreamName::new("order").unwrap()), None);
    }
}
