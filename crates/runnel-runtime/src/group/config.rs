//! A consumer group's settings, named as NATS JetStream users know them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use crate::pattern::TypePattern;

/// Whether events of one partition key are processed strictly one after another.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    /// Same key: one at a time, in offset order. Different keys: concurrently. (Default.)
    #[default]
    Key,
    /// No ordering: any event may run alongside any other.
    None,
}

/// Where a group that never committed starts reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The oldest event still held. (Default.)
    #[default]
    Earliest,
    /// Only events published after the group was first configured with `start: latest`
    /// (events in between, before any consumer ran, are not skipped).
    Latest,
}

/// Settings of a consumer group. Every group gets every matching event (fan-out); the
/// instances of one group share the partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// The group's name: 1–56 characters of `a-z`, `0-9`, `_`, `-`.
    pub name: String,
    /// Which event types the group receives (`order.*`, `*.*`, `billing.>`).
    pub filter: TypePattern,
    /// An event not acknowledged this long after delivery is delivered again. Default 30 s.
    #[serde(with = "millis", default = "defaults::ack_wait")]
    pub ack_wait: Duration,
    /// Deliveries of one event before it is given up on. Default 5.
    #[serde(default = "defaults::max_deliver")]
    pub max_deliver: u32,
    /// Events read but not yet done, per partition; reading pauses at this many. Default 1000.
    #[serde(default = "defaults::max_ack_pending")]
    pub max_ack_pending: usize,
    /// Handlers running at once in one consumer instance. Default 64.
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: usize,
    #[serde(default)]
    pub ordering: Ordering,
    #[serde(default)]
    pub start: StartFrom,
    /// Record processed event ids so a redelivery after a crash is skipped. Default on.
    #[serde(default = "defaults::yes")]
    pub processed_ids: bool,
    /// How long a processed id is remembered. Default 24 h.
    #[serde(with = "millis", default = "defaults::processed_id_ttl")]
    pub processed_id_ttl: Duration,
    /// A partition lease lapses this long after its owner's last heartbeat. Default 15 s.
    #[serde(with = "millis", default = "defaults::lease_ttl")]
    pub lease_ttl: Duration,
    /// `transient` failures retried at once before they are treated as `service`. Default 3.
    #[serde(default = "defaults::transient_retries")]
    pub transient_retries: u32,
    /// Delays before the 1st, 2nd, … retry of a `service` failure, each with full jitter
    /// (a uniformly random wait between 0 and the delay); the last repeats. Default 1, 2, 4,
    /// 8, 16 s.
    #[serde(with = "millis_list", default = "defaults::backoff")]
    pub backoff: Vec<Duration>,
    /// A delivery that crashed the consumer process this many times is quarantined to the
    /// dead-letter queue with reason `crash_loop`. Default 3.
    #[serde(default = "defaults::max_crashes")]
    pub max_crashes: u32,
    /// Dead-letter queue depth at which a warning is logged and the alert flag raised.
    /// Default: none.
    #[serde(default)]
    pub dlq_alert_threshold: Option<u64>,
    /// Receive every event's data adapted to this schema version of its type: older events
    /// upcast (missing fields filled from defaults), newer ones with unknown fields removed.
    /// Default: as written.
    #[serde(default)]
    pub schema_version: Option<u32>,
}

mod defaults {
    use std::time::Duration;

    pub fn ack_wait() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_deliver() -> u32 {
        5
    }
    pub fn max_ack_pending() -> usize {
        1000
    }
    pub fn max_in_flight() -> usize {
        64
    }
    pub fn yes() -> bool {
        true
    }
    pub fn processed_id_ttl() -> Duration {
        Duration::from_secs(24 * 3600)
    }
    pub fn lease_ttl() -> Duration {
        Duration::from_secs(15)
    }
    pub fn transient_retries() -> u32 {
        3
    }
    pub fn backoff() -> Vec<Duration> {
        [1, 2, 4, 8, 16].map(Duration::from_secs).to_vec()
    }
    pub fn max_crashes() -> u32 {
        3
    }
}

impl GroupConfig {
    /// A group with the default settings.
    pub fn new(name: impl Into<String>, filter: TypePattern) -> Self {
        Self {
            name: name.into(),
            filter,
            ack_wait: defaults::ack_wait(),
            max_deliver: defaults::max_deliver(),
            max_ack_pending: defaults::max_ack_pending(),
            max_in_flight: defaults::max_in_flight(),
            ordering: Ordering::default(),
            start: StartFrom::default(),
            processed_ids: true,
            processed_id_ttl: defaults::processed_id_ttl(),
            lease_ttl: defaults::lease_ttl(),
            transient_retries: defaults::transient_retries(),
            backoff: defaults::backoff(),
            max_crashes: defaults::max_crashes(),
            dlq_alert_threshold: None,
            schema_version: None,
        }
    }

    /// Checks every field, naming the first bad one. These are the only bounds on a group's
    /// settings: the HTTP API and the Rust API both end here.
    pub fn validate(&self) -> Result<()> {
        validate_group_name(&self.name)?;
        let out_of_range = |field: &'static str, range: &str, got: String| {
            Err(RuntimeError::GroupSetting {
                field,
                message: format!("{field} must be {range}, got {got}"),
            })
        };
        let millis = |d: Duration| format!("{} ms", d.as_millis());
        if !(limits::MIN_ACK_WAIT..=limits::MAX_DELAY).contains(&self.ack_wait) {
            return out_of_range("ack_wait", "10 ms ..= 1 day", millis(self.ack_wait));
        }
        if !(1..=limits::MAX_DELIVER).contains(&self.max_deliver) {
            return out_of_range("max_deliver", "1 ..= 1000", self.max_deliver.to_string());
        }
        if self.backoff.is_empty() || self.backoff.len() > limits::MAX_BACKOFF_STEPS {
            return out_of_range(
                "backoff",
                "1 to 100 delays",
                format!("{} delays", self.backoff.len()),
            );
        }
        if let Some(delay) = self.backoff.iter().find(|d| **d > limits::MAX_DELAY) {
            return out_of_range("backoff", "delays of at most 1 day", millis(*delay));
        }
        if !(1..=limits::MAX_IN_FLIGHT).contains(&self.max_in_flight) {
            return out_of_range(
                "max_in_flight",
                "1 ..= 10000",
                self.max_in_flight.to_string(),
            );
        }
        if !(1..=limits::MAX_ACK_PENDING).contains(&self.max_ack_pending) {
            return out_of_range(
                "max_ack_pending",
                "1 ..= 1000000",
                self.max_ack_pending.to_string(),
            );
        }
        if self.transient_retries > limits::MAX_TRANSIENT_RETRIES {
            return out_of_range(
                "transient_retries",
                "0 ..= 1000",
                self.transient_retries.to_string(),
            );
        }
        if let Some(version) = self.schema_version
            && !(1..=i32::MAX as u32).contains(&version)
        {
            return out_of_range("schema_version", "1 ..= 2147483647", version.to_string());
        }
        if !(limits::MIN_LEASE_TTL..=limits::MAX_DELAY).contains(&self.lease_ttl) {
            return out_of_range("lease_ttl", "100 ms ..= 1 day", millis(self.lease_ttl));
        }
        if self.processed_id_ttl > limits::MAX_PROCESSED_ID_TTL {
            return out_of_range(
                "processed_id_ttl",
                "at most 365 days",
                millis(self.processed_id_ttl),
            );
        }
        if self.max_crashes == 0 {
            return out_of_range("max_crashes", "at least 1", "0".into());
        }
        Ok(())
    }
}

/// The bounds [`GroupConfig::validate`] holds settings to; upper bounds keep timers and
/// channel sizes in range.
mod limits {
    use std::time::Duration;

    pub const MIN_ACK_WAIT: Duration = Duration::from_millis(10);
    /// Longest `ack_wait`, `lease_ttl` and backoff delay.
    pub const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);
    pub const MAX_DELIVER: u32 = 1_000;
    pub const MAX_BACKOFF_STEPS: usize = 100;
    pub const MAX_IN_FLIGHT: usize = 10_000;
    pub const MAX_ACK_PENDING: usize = 1_000_000;
    pub const MAX_TRANSIENT_RETRIES: u32 = 1_000;
    pub const MIN_LEASE_TTL: Duration = Duration::from_millis(100);
    pub const MAX_PROCESSED_ID_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
}

/// A consumer group's name, checked once when it is made: 1–56 characters of `a-z`, `0-9`,
/// `_` and `-`, starting with a letter or digit. It becomes key-value keys, metric labels and
/// the name of the group's replay stream, so nothing else may reach storage.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GroupName(String);

impl GroupName {
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        validate_group_name(&name)?;
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for GroupName {
    type Error = RuntimeError;

    fn try_from(name: String) -> Result<Self> {
        Self::new(name)
    }
}

impl From<GroupName> for String {
    fn from(name: GroupName) -> Self {
        name.0
    }
}

impl std::ops::Deref for GroupName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for GroupName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for GroupName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Group names become key-value keys, metric labels and the name of the group's replay
/// stream (`replay-<group>`), hence at most 56 characters.
pub fn validate_group_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 56
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Name(runnel_backend::InvalidName {
            what: "group name",
            name: name.to_string(),
            reason: "must be 1–56 characters of a-z, 0-9, `_` and `-`, starting with a letter or digit",
        }))
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(value.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

mod millis_list {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(value.iter().map(|d| d.as_millis() as u64))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Ok(Vec::<u64>::deserialize(d)?
            .into_iter()
            .map(Duration::from_millis)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GroupConfig {
        GroupConfig::new("g", TypePattern::new("order.*").unwrap())
    }

    #[test]
    fn the_rust_api_and_the_http_api_share_one_set_of_bounds() {
        // The HTTP API refused these; the Rust API took up to a week or 100,000 before.
        for (config, field) in [
            (
                GroupConfig {
                    ack_wait: Duration::from_secs(2 * 24 * 3600),
                    ..config()
                },
                "ack_wait",
            ),
            (
                GroupConfig {
                    max_in_flight: 50_000,
                    ..config()
                },
                "max_in_flight",
            ),
            (
                GroupConfig {
                    max_deliver: 5_000,
                    ..config()
                },
                "max_deliver",
            ),
            (
                GroupConfig {
                    transient_retries: 5_000,
                    ..config()
                },
                "transient_retries",
            ),
        ] {
            match config.validate() {
                Err(RuntimeError::GroupSetting { field: f, message }) => {
                    assert_eq!(f, field, "{message}");
                    assert!(message.starts_with(field), "{message}");
                }
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn group_names_are_checked_once_when_made() {
        assert_eq!(GroupName::new("audit-1").unwrap().as_str(), "audit-1");
        for bad in ["", "../x", "Audit", "-x", &"a".repeat(57)] {
            assert!(
                matches!(GroupName::new(bad), Err(RuntimeError::Name(_))),
                "{bad}"
            );
        }
        let parsed: std::result::Result<GroupName, _> = serde_json::from_str("\"a/b\"");
        assert!(parsed.is_err());
    }

    #[test]
    fn out_of_range_settings_are_refused_naming_the_field() {
        let cases: Vec<(GroupConfig, &str)> = vec![
            (
                GroupConfig {
                    max_in_flight: 0,
                    ..config()
                },
                "max_in_flight",
            ),
            (
                GroupConfig {
                    max_in_flight: 1_000_000,
                    ..config()
                },
                "max_in_flight",
            ),
            (
                GroupConfig {
                    max_ack_pending: 10_000_000,
                    ..config()
                },
                "max_ack_pending",
            ),
            (
                GroupConfig {
                    ack_wait: Duration::from_secs(30 * 24 * 3600),
                    ..config()
                },
                "ack_wait",
            ),
            (
                GroupConfig {
                    backoff: vec![],
                    ..config()
                },
                "backoff",
            ),
            (
                GroupConfig {
                    backoff: vec![Duration::MAX],
                    ..config()
                },
                "backoff",
            ),
            (
                GroupConfig {
                    max_crashes: 0,
                    ..config()
                },
                "max_crashes",
            ),
        ];
        for (config, field) in cases {
            let error = config.validate().expect_err(field).to_string();
            assert!(error.contains(field), "{error}");
        }
        assert!(config().validate().is_ok());
        let bad_name = GroupConfig {
            name: "../x".into(),
            ..config()
        };
        assert_eq!(bad_name.validate().unwrap_err().code(), "name.invalid");
    }
}
