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

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        validate_group_name(&self.name)?;
        let bad = |what: String| Err(RuntimeError::GroupConfig(what));
        if self.max_deliver == 0 {
            return bad("max_deliver must be at least 1".into());
        }
        if self.max_ack_pending == 0 {
            return bad("max_ack_pending must be at least 1".into());
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight must be at least 1".into());
        }
        if self.ack_wait < Duration::from_millis(10) {
            return bad(format!(
                "ack_wait must be at least 10 ms, got {:?}",
                self.ack_wait
            ));
        }
        if self.backoff.is_empty() {
            return bad("backoff needs at least one delay".into());
        }
        // Upper bounds keep timers and channel sizes in range.
        const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
        if self.max_in_flight > 100_000 {
            return bad(format!(
                "max_in_flight must be at most 100000, got {}",
                self.max_in_flight
            ));
        }
        if self.max_ack_pending > 1_000_000 {
            return bad(format!(
                "max_ack_pending must be at most 1000000, got {}",
                self.max_ack_pending
            ));
        }
        for (name, value, limit) in [
            ("ack_wait", self.ack_wait, WEEK),
            ("lease_ttl", self.lease_ttl, WEEK),
            ("processed_id_ttl", self.processed_id_ttl, WEEK * 52),
        ] {
            if value > limit {
                return bad(format!("{name} must be at most {limit:?}, got {value:?}"));
            }
        }
        if let Some(delay) = self.backoff.iter().find(|d| **d > WEEK) {
            return bad(format!(
                "each backoff delay must be at most 7 days, got {delay:?}"
            ));
        }
        if self.max_crashes == 0 {
            return bad("max_crashes must be at least 1".into());
        }
        if self.lease_ttl < Duration::from_millis(100) {
            return bad(format!(
                "lease_ttl must be at least 100 ms, got {:?}",
                self.lease_ttl
            ));
        }
        Ok(())
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
