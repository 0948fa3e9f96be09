//! The JSON shapes of the HTTP API: request bodies, query strings and responses.
//!
//! They exist apart from the runtime's types so the wire format is decided here, once, and
//! described by the OpenAPI document (`ToSchema`): durations in milliseconds, times in RFC
//! 3339, events in the CloudEvents JSON format. Conversions to and from the runtime's types
//! live next to each shape.

use std::time::Duration;

use chrono::{DateTime, Utc};
use runnel_backend::{RetentionConfig, StreamInfo};
use runnel_envelope::Event;
use runnel_runtime::{
    DlqDepth, DlqEntry, DlqFilter, FailureClass, GroupConfig, GroupCounts, GroupLag, Ordering,
    PublishAck, ReplayReport, StartFrom, TypePattern,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::problem::ApiError;

/// Where a published event is.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PublishResult {
    pub stream: String,
    pub partition: u32,
    pub offset: u64,
    pub id: String,
    /// The id was already published within the dedup window: nothing was appended and the
    /// position is the first publish's.
    pub duplicate: bool,
}

impl From<PublishAck> for PublishResult {
    fn from(ack: PublishAck) -> Self {
        Self {
            stream: ack.stream.to_string(),
            partition: ack.partition,
            offset: ack.offset,
            id: ack.id,
            duplicate: ack.duplicate,
        }
    }
}

/// A CloudEvent in the JSON format (`specversion`, `id`, `source`, `type`, optional
/// attributes, `data` or `data_base64`, extensions).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"specversion": "1.0", "id": "a1", "source": "/shop", "type": "order.placed", "data": {"n": 1}}))]
pub struct CloudEventJson {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub rest: serde_json::Map<String, Value>,
}

/// Per-event ordering of a group.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OrderingView {
    Key,
    None,
}

/// Where a new group starts.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StartView {
    Earliest,
    Latest,
}

/// A consumer group's settings (`PUT /v1/groups/{group}`). Only `filter` is required; the
/// others have the runtime's defaults. Durations are milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Event types the group receives: `order.*`, `*.*`, `billing.>`.
    pub filter: String,
    /// Unacknowledged this long after delivery: delivered again. Default 30000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 10, maximum = 86400000)]
    pub ack_wait: Option<u64>,
    /// Deliveries before an event is dead-lettered. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_deliver: Option<u32>,
    /// Delays before the n-th `service` retry (full jitter; the last repeats). Default
    /// [1000, 2000, 4000, 8000, 16000].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Vec<u64>>,
    /// Messages handed out and unsettled at once by one consumer. Default 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10000)]
    pub max_in_flight: Option<usize>,
    /// Events read but not done per partition; reading pauses at this many. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_ack_pending: Option<usize>,
    /// `key` (default): one event per partition key at a time; `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<OrderingView>,
    /// `earliest` (default): every event still held; `latest`: only events published after
    /// the group was first configured with `latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<StartView>,
    /// Immediate retries of `transient` failures before backoff. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 1000)]
    pub transient_retries: Option<u32>,
    /// Receive every event's data adapted to this schema version of its type (older ones
    /// upcast with defaults, newer ones with unknown fields removed). Default: as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub schema_version: Option<u32>,
    /// Dead-letter queue depth that raises the alert. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlq_alert_threshold: Option<u64>,
    /// Record the ids of acknowledged events so one delivered again after a crash is skipped
    /// instead of handed out twice. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_ids: Option<bool>,
    /// How long a server's claim on a partition lasts without a heartbeat; a stopped server's
    /// partitions move to the others after it. Default 15000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 100, maximum = 86400000)]
    pub lease_ttl: Option<u64>,
}

impl GroupSpec {
    /// The runtime configuration these settings ask for, checked by the runtime
    /// ([`GroupConfig::validate`] holds the only bounds; an error names the field).
    pub fn to_config(&self, name: &str) -> Result<GroupConfig, ApiError> {
        let filter = TypePattern::new(self.filter.clone()).map_err(|e| {
            ApiError::bad_request("group.invalid_pattern", e.to_string())
                .with_field("/filter", e.to_string())
        })?;
        let mut config = GroupConfig::new(name, filter);
        if let Some(ms) = self.ack_wait {
            config.ack_wait = Duration::from_millis(ms);
        }
        if let Some(n) = self.max_deliver {
            config.max_deliver = n;
        }
        if let Some(list) = &self.backoff {
            config.backoff = list.iter().map(|ms| Duration::from_millis(*ms)).collect();
        }
        if let Some(n) = self.max_in_flight {
            config.max_in_flight = n;
        }
        if let Some(n) = self.max_ack_pending {
            config.max_ack_pending = n;
        }
        if let Some(ordering) = self.ordering {
            config.ordering = match ordering {
                OrderingView::Key => Ordering::Key,
                OrderingView::None => Ordering::None,
            };
        }
        if let Some(start) = self.start {
            config.start = match start {
                StartView::Earliest => StartFrom::Earliest,
                StartView::Latest => StartFrom::Latest,
            };
        }
        if let Some(n) = self.transient_retries {
            config.transient_retries = n;
        }
        config.schema_version = self.schema_version;
        config.dlq_alert_threshold = self.dlq_alert_threshold;
        if let Some(on) = self.processed_ids {
            config.processed_ids = on;
        }
        if let Some(ms) = self.lease_ttl {
            config.lease_ttl = Duration::from_millis(ms);
        }
        config.validate()?;
        Ok(config)
    }

    /// The settings of a stored configuration, every field filled in.
    pub fn from_config(config: &GroupConfig) -> Self {
        Self {
            filter: config.filter.to_string(),
            ack_wait: Some(config.ack_wait.as_millis() as u64),
            max_deliver: Some(config.max_deliver),
            backoff: Some(
                config
                    .backoff
                    .iter()
                    .map(|d| d.as_millis() as u64)
                    .collect(),
            ),
            max_in_flight: Some(config.max_in_flight),
            max_ack_pending: Some(config.max_ack_pending),
            ordering: Some(match config.ordering {
                Ordering::Key => OrderingView::Key,
                Ordering::None => OrderingView::None,
            }),
            start: Some(match config.start {
                StartFrom::Earliest => StartView::Earliest,
                StartFrom::Latest => StartView::Latest,
            }),
            transient_retries: Some(config.transient_retries),
            schema_version: config.schema_version,
            dlq_alert_threshold: config.dlq_alert_threshold,
            processed_ids: Some(config.processed_ids),
            lease_ttl: Some(config.lease_ttl.as_millis() as u64),
        }
    }
}

/// Lag of one partition.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PartitionLagView {
    pub stream: String,
    pub partition: u32,
    /// The next offset the group will process.
    pub committed: u64,
    pub high_watermark: u64,
    /// Events not yet done that the group's filter matches (other types' events are not lag).
    pub events: u64,
    /// Age of the oldest such event, in seconds (0 when caught up).
    pub seconds: f64,
    /// False when counting would read more than 10,000 records past `committed`: `events` is
    /// then an upper bound (it counts the unread records).
    pub exact: bool,
}

/// Lag of a group.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LagView {
    pub total_events: u64,
    pub max_seconds: f64,
    /// Whether every partition's count is exact.
    pub exact: bool,
    pub partitions: Vec<PartitionLagView>,
}

impl From<GroupLag> for LagView {
    fn from(lag: GroupLag) -> Self {
        Self {
            total_events: lag.total_events,
            max_seconds: lag.max_seconds,
            exact: lag.exact,
            partitions: lag
                .partitions
                .into_iter()
                .map(|p| PartitionLagView {
                    stream: p.stream.to_string(),
                    partition: p.partition,
                    committed: p.committed,
                    high_watermark: p.high_watermark,
                    events: p.events,
                    seconds: p.seconds,
                    exact: p.exact,
                })
                .collect(),
        }
    }
}

/// Counters of this server's consumers of a group since the server started: they are kept
/// in memory and start again from 0 when the server restarts (`since` says when).
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct CountersView {
    /// When this server started, so when these counters started from 0 (RFC 3339).
    pub since: String,
    pub delivered: u64,
    pub redelivered: u64,
    pub acked: u64,
    pub skipped_duplicates: u64,
    pub failed_transient: u64,
    pub failed_service: u64,
    pub failed_permanent: u64,
    pub ack_timeouts: u64,
    pub exhausted: u64,
    pub undecodable: u64,
    pub retries_scheduled: u64,
    pub dead_lettered: u64,
    pub quarantined: u64,
}

impl CountersView {
    /// `c`, counted since `since` (µs since the epoch).
    pub fn new(c: GroupCounts, since: u64) -> Self {
        Self {
            since: rfc3339(since).unwrap_or_default(),
            delivered: c.delivered,
            redelivered: c.redelivered,
            acked: c.acked,
            skipped_duplicates: c.skipped_duplicates,
            failed_transient: c.failed_transient,
            failed_service: c.failed_service,
            failed_permanent: c.failed_permanent,
            ack_timeouts: c.ack_timeouts,
            exhausted: c.exhausted,
            undecodable: c.undecodable,
            retries_scheduled: c.retries_scheduled,
            dead_lettered: c.dead_lettered,
            quarantined: c.quarantined,
        }
    }
}

/// Depth of a dead-letter queue.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DlqDepthView {
    pub depth: u64,
    pub alert_threshold: Option<u64>,
    /// The depth reached the alert threshold.
    pub alert: bool,
}

impl From<DlqDepth> for DlqDepthView {
    fn from(d: DlqDepth) -> Self {
        Self {
            depth: d.depth,
            alert_threshold: d.alert_threshold,
            alert: d.alert,
        }
    }
}

/// This server's consumer of the group.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConsumerView {
    /// Started (by a pull or an event stream) and not stopped.
    pub running: bool,
    /// Messages handed out and not yet acknowledged, nacked or expired.
    pub outstanding: usize,
    /// The instance id this server's consumers join their groups as (kept in
    /// `<data_dir>/server-id`); absent when the server has none and uses random ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The deliveries handed out and not settled, oldest first (at most 1,000 of
    /// `outstanding`).
    pub in_flight: Vec<InFlightView>,
}

/// A delivery a client of this server holds.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InFlightView {
    pub event_id: String,
    pub event_type: String,
    pub stream: String,
    pub partition: u32,
    pub offset: u64,
    /// 1 on the first delivery.
    pub attempt: u32,
    /// When the pull that took it answered (RFC 3339).
    pub held_since: String,
    /// When its receipt lapses and the event is delivered again (RFC 3339).
    pub lapses_at: String,
    /// The name of the API key that pulled it; absent when the server has no keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
}

/// A consumer group.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupView {
    pub name: String,
    pub config: GroupSpec,
    pub lag: LagView,
    pub counters: CountersView,
    pub dlq: DlqDepthView,
    pub consumer: ConsumerView,
}

/// `POST /v1/groups/{group}/pull`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// Most messages to return. Default 1; at most the server's `max_pull_messages`.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max: Option<u64>,
    /// How long to wait for a first message, in ms. Default 0 (answer at once); at most the
    /// server's `max_pull_wait_ms`.
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// An event in the CloudEvents JSON format, JSON data as the text it was published with.
pub fn event_json(event: &Event) -> Box<RawValue> {
    let text = event.to_json();
    // `to_json` writes valid JSON; were it ever not, the value form still says everything.
    RawValue::from_string(text).unwrap_or_else(|_| {
        RawValue::from_string(event.to_json_value().to_string()).unwrap_or_default()
    })
}

/// One delivery handed to an HTTP consumer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageView {
    /// Settles this delivery through `ack` or `nack`; valid for the group's `ack_wait`.
    pub receipt: String,
    /// 1 on the first delivery.
    pub attempt: u32,
    /// Replayed from the group's dead-letter queue.
    pub from_dlq: bool,
    pub stream: String,
    pub partition: u32,
    pub offset: u64,
    /// The event in the CloudEvents JSON format, its data as it was published.
    #[schema(value_type = CloudEventJson)]
    pub event: Box<RawValue>,
}

/// Messages of a pull.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PullResponse {
    pub messages: Vec<MessageView>,
}

/// `POST /v1/groups/{group}/ack`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    pub receipts: Vec<String>,
}

/// What an ack did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AckResponse {
    pub acked: usize,
}

/// Failure classes, as handlers report them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClassView {
    /// Retry at once (a few times).
    Transient,
    /// Retry after a jittered backoff.
    Service,
    /// Dead-letter at once.
    Permanent,
}

impl From<ClassView> for FailureClass {
    fn from(c: ClassView) -> Self {
        match c {
            ClassView::Transient => FailureClass::Transient,
            ClassView::Service => FailureClass::Service,
            ClassView::Permanent => FailureClass::Permanent,
        }
    }
}

impl From<FailureClass> for ClassView {
    fn from(c: FailureClass) -> Self {
        match c {
            FailureClass::Transient => ClassView::Transient,
            FailureClass::Service => ClassView::Service,
            FailureClass::Permanent => ClassView::Permanent,
        }
    }
}

/// `POST /v1/groups/{group}/nack`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NackRequest {
    pub receipt: String,
    pub class: ClassView,
    /// Why, for the dead-letter queue and logs.
    #[serde(default)]
    pub reason: String,
}

/// What a nack did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NackResponse {
    pub nacked: usize,
}

/// Retention of a stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetentionView {
    /// Remove records older than this many ms (whole segments). Default: keep.
    #[serde(default)]
    pub max_age_ms: Option<u64>,
    /// Keep at most this many bytes per partition. Default: no limit.
    #[serde(default)]
    pub max_bytes_per_partition: Option<u64>,
}

impl From<RetentionConfig> for RetentionView {
    fn from(r: RetentionConfig) -> Self {
        Self {
            max_age_ms: r.max_age.map(|d| d.as_millis() as u64),
            max_bytes_per_partition: r.max_bytes_per_partition,
        }
    }
}

impl From<&RetentionView> for RetentionConfig {
    fn from(r: &RetentionView) -> Self {
        Self {
            max_age: r.max_age_ms.map(Duration::from_millis),
            max_bytes_per_partition: r.max_bytes_per_partition,
        }
    }
}

/// One partition of a stream.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PartitionView {
    pub partition: u32,
    /// First offset still held.
    pub start_offset: u64,
    /// Offset after the last durable event.
    pub high_watermark: u64,
    pub bytes: Option<u64>,
}

/// A stream.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StreamView {
    pub name: String,
    pub partitions: u32,
    pub retention: RetentionView,
    pub created_at: Option<String>,
    #[schema(value_type = Vec<PartitionView>)]
    pub partition_info: Vec<PartitionView>,
}

impl From<StreamInfo> for StreamView {
    fn from(s: StreamInfo) -> Self {
        Self {
            name: s.name.to_string(),
            partitions: s.config.partitions,
            retention: s.config.retention.into(),
            created_at: rfc3339(s.created_at),
            partition_info: s
                .partitions
                .into_iter()
                .map(|p| PartitionView {
                    partition: p.partition,
                    start_offset: p.start_offset,
                    high_watermark: p.high_watermark,
                    bytes: p.bytes,
                })
                .collect(),
        }
    }
}

/// `POST /v1/streams`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStream {
    /// 1–64 characters: a lowercase letter, then lowercase letters, digits, `_`, `-`.
    pub name: String,
    /// Fixed once created. Default 4.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1024)]
    pub partitions: Option<u32>,
    #[serde(default)]
    pub retention: RetentionView,
}

/// Microseconds since the epoch as RFC 3339.
pub fn rfc3339(micros: u64) -> Option<String> {
    i64::try_from(micros)
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// A dead-lettered event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DlqEntryView {
    /// `stream-partition-offset` of the original event.
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub class: ClassView,
    pub reason: String,
    pub attempts: u32,
    pub first_failure_at: Option<String>,
    pub last_failure_at: Option<String>,
    pub dead_lettered_at: Option<String>,
    pub stream: String,
    pub partition: u32,
    pub offset: u64,
    pub replays: u32,
    pub replay_pending: bool,
    /// The original event in the CloudEvents JSON format; absent when it cannot be decoded
    /// (then `original_base64` holds the stored bytes).
    #[schema(value_type = Option<CloudEventJson>)]
    pub event: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_base64: Option<String>,
}

impl From<DlqEntry> for DlqEntryView {
    fn from(e: DlqEntry) -> Self {
        let decoded = Event::decode_binary(&e.original).ok();
        let original_base64 = match decoded {
            Some(_) => None,
            None => {
                use base64::Engine;
                Some(base64::engine::general_purpose::STANDARD.encode(&e.original))
            }
        };
        Self {
            event: decoded.as_ref().map(event_json),
            original_base64,
            id: e.id,
            event_id: e.event_id,
            event_type: e.event_type,
            class: e.class.into(),
            reason: e.reason,
            attempts: e.attempts,
            first_failure_at: rfc3339(e.first_failure_at),
            last_failure_at: rfc3339(e.last_failure_at),
            dead_lettered_at: rfc3339(e.dead_lettered_at),
            stream: e.stream.to_string(),
            partition: e.partition,
            offset: e.offset,
            replays: e.replays,
            replay_pending: e.replay_pending,
        }
    }
}

/// A page of dead-letter entries.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DlqPageView {
    pub entries: Vec<DlqEntryView>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Which dead-letter entries: every given field must match.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DlqFilterSpec {
    /// Event type pattern (`order.*`).
    #[serde(default, rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    #[serde(default)]
    pub class: Option<ClassView>,
    /// Dead-lettered at or after: RFC 3339, or microseconds since the epoch.
    #[serde(default)]
    pub since: Option<String>,
    /// Dead-lettered before: RFC 3339, or microseconds since the epoch.
    #[serde(default)]
    pub until: Option<String>,
    /// Case-insensitive text in the reason.
    #[serde(default)]
    pub reason: Option<String>,
}

impl DlqFilterSpec {
    pub fn is_empty(&self) -> bool {
        self.event_type.is_none()
            && self.class.is_none()
            && self.since.is_none()
            && self.until.is_none()
            && self.reason.is_none()
    }

    pub fn to_filter(&self) -> Result<DlqFilter, ApiError> {
        if self.reason.as_deref() == Some("") {
            // Every reason contains "": as a filter it would select the whole queue.
            return Err(ApiError::bad_request(
                "dlq.invalid_filter",
                "`reason` is empty; give the text to look for, or use `all` for every entry",
            )
            .with_field("reason", "empty"));
        }
        let event_type = self
            .event_type
            .as_ref()
            .map(|p| {
                TypePattern::new(p.clone()).map_err(|e| {
                    ApiError::bad_request("dlq.invalid_filter", e.to_string())
                        .with_field("type", e.to_string())
                })
            })
            .transpose()?;
        Ok(DlqFilter {
            event_type,
            class: self.class.map(Into::into),
            since: self
                .since
                .as_deref()
                .map(|t| micros("since", t))
                .transpose()?,
            until: self
                .until
                .as_deref()
                .map(|t| micros("until", t))
                .transpose()?,
            reason: self.reason.clone(),
        })
    }
}

fn micros(field: &str, text: &str) -> Result<u64, ApiError> {
    if let Ok(n) = text.parse::<u64>() {
        return Ok(n);
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| u64::try_from(t.timestamp_micros()).ok())
        .ok_or_else(|| {
            let message =
                format!("expected an RFC 3339 time or microseconds since the epoch, got `{text}`");
            ApiError::bad_request("dlq.invalid_filter", message.clone()).with_field(field, message)
        })
}

/// `GET /v1/groups/{group}/dlq` query.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DlqListQuery {
    /// Event type pattern (`order.*`).
    #[serde(default, rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    pub class: Option<ClassView>,
    /// Dead-lettered at or after: RFC 3339, or microseconds since the epoch.
    pub since: Option<String>,
    /// Dead-lettered before: RFC 3339, or microseconds since the epoch.
    pub until: Option<String>,
    /// Case-insensitive text in the reason.
    pub reason: Option<String>,
    /// The `next` of the previous page.
    pub after: Option<String>,
    /// Entries per page, 1–1000. Default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

impl DlqListQuery {
    pub fn filter(&self) -> DlqFilterSpec {
        DlqFilterSpec {
            event_type: self.event_type.clone(),
            class: self.class,
            since: self.since.clone(),
            until: self.until.clone(),
            reason: self.reason.clone(),
        }
    }
}

/// `DELETE /v1/groups/{group}/dlq` query: a filter, or `all=true`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DlqPurgeQuery {
    #[serde(default, rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    pub class: Option<ClassView>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub reason: Option<String>,
    /// Purge every entry (required when no filter is given).
    pub all: Option<bool>,
}

/// `DELETE /v1/streams/{stream}` and `DELETE /v1/groups/{group}` query.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Delete even while in use (its consumers stop) and even if it is Runnel's own.
    pub force: Option<bool>,
}

/// `POST /v1/groups/{group}/dlq/replay`: exactly one of `ids`, `filter`, `all`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    #[serde(default)]
    pub ids: Option<Vec<String>>,
    #[serde(default)]
    pub filter: Option<DlqFilterSpec>,
    #[serde(default)]
    pub all: Option<bool>,
}

/// What a replay did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplayReportView {
    pub replayed: usize,
    /// Skipped: a replay of them is still running.
    pub already_pending: usize,
    /// Requested ids not in the queue.
    pub missing: Vec<String>,
}

impl From<ReplayReport> for ReplayReportView {
    fn from(r: ReplayReport) -> Self {
        Self {
            replayed: r.replayed,
            already_pending: r.already_pending,
            missing: r.missing,
        }
    }
}

/// What a purge did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PurgeResponse {
    pub purged: usize,
}

/// Health and readiness.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatusView {
    pub status: String,
}
