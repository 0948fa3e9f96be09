//! Window results, and the ids that make re-emitting one harmless.
//!
//! A result's id is a UUIDv5 of (stage, key, window start, window end, revision) in a fixed
//! namespace: the same window revision always gets the same id, on every run and machine, so
//! when a restarted stage emits a result again the publish-side deduplication drops the copy,
//! and a revision (a late event changed the window) gets a new id of its own.

use std::fmt::Write as _;

use runnel_envelope::{EnvelopeError, Event, EventId, EventType, Source};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::aggregate::{Layout, Slot};
use crate::extract::{EventTime, format_time};

/// Namespace of result ids. Fixed forever: changing it would change every result id and break
/// deduplication across an upgrade.
pub const RESULT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5d1c_2a47_8e0b_4f6a_9c3d_71e2_b8a9_0f14);

/// One emission of one key's window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowResult {
    /// Deterministic: see [`WindowResult::derive_id`].
    pub id: EventId,
    /// The feature (stage) name.
    pub feature: String,
    /// The window key.
    pub key: String,
    /// Start of the window (inclusive), µs since the epoch.
    pub window_start: EventTime,
    /// End of the window (exclusive), µs since the epoch.
    pub window_end: EventTime,
    /// 1 for the first emission, +1 for each re-emission after late events.
    pub revision: u32,
    /// One member per aggregate, in the order configured.
    pub values: Map<String, Value>,
    /// The correlation id of the last input (in arrival order) that contributed.
    pub correlation_id: Option<String>,
}

impl WindowResult {
    /// The id of revision `revision` of `key`'s window `[start, end)` of stage `feature`.
    pub fn derive_id(
        feature: &str,
        key: &str,
        start: EventTime,
        end: EventTime,
        revision: u32,
    ) -> EventId {
        // Lengths first, so no choice of names can make two tuples spell the same text.
        let mut name = String::with_capacity(feature.len() + key.len() + 64);
        let _ = write!(
            name,
            "{}:{feature}:{}:{key}:{start}:{end}:{revision}",
            feature.len(),
            key.len()
        );
        let id = Uuid::new_v5(&RESULT_ID_NAMESPACE, name.as_bytes()).to_string();
        // A UUID's text is never empty, so this cannot fail; keep the type's check anyway.
        EventId::new(id).unwrap_or_else(|_| EventId::new_v7())
    }

    /// The result event's data:
    /// `{"feature", "key", "window_start", "window_end", "revision", "values"}`, times in
    /// RFC 3339.
    pub fn data(&self) -> Value {
        let mut data = Map::new();
        data.insert("feature".into(), Value::from(self.feature.clone()));
        data.insert("key".into(), Value::from(self.key.clone()));
        data.insert(
            "window_start".into(),
            Value::from(format_time(self.window_start)),
        );
        data.insert(
            "window_end".into(),
            Value::from(format_time(self.window_end)),
        );
        data.insert("revision".into(), Value::from(self.revision));
        data.insert("values".into(), Value::Object(self.values.clone()));
        Value::Object(data)
    }

    /// The result as an event of `event_type` from `source`: its id, `partitionkey` = key,
    /// `correlationid` of the last contributing input, and `time` = the window's last
    /// microsecond (Flink's window timestamp, so a downstream window puts it in the same
    /// period).
    pub fn to_event(
        &self,
        event_type: &EventType,
        source: &Source,
    ) -> Result<Event, EnvelopeError> {
        let mut builder = Event::builder(event_type.clone(), source.clone())
            .id(self.id.clone())
            .partition_key(self.key.clone())
            .data_json(self.data());
        if let Some(time) = chrono::DateTime::from_timestamp_micros(self.window_end - 1) {
            builder = builder.time(time);
        }
        if let Some(correlation) = &self.correlation_id {
            builder = builder.correlation_id(correlation.clone());
        }
        builder.build()
    }
}

/// Turns finished window state into results.
pub(crate) struct Emitter<'a> {
    pub(crate) layout: &'a Layout,
    pub(crate) feature: &'a str,
    pub(crate) out: &'a mut Vec<WindowResult>,
}

impl Emitter<'_> {
    pub(crate) fn emit(
        &mut self,
        key: &str,
        (start, end): (EventTime, EventTime),
        revision: u32,
        slots: &[Slot],
        correlation: Option<&[u8]>,
    ) {
        self.out.push(WindowResult {
            id: WindowResult::derive_id(self.feature, key, start, end, revision),
            feature: self.feature.to_string(),
            key: key.to_string(),
            window_start: start,
            window_end: end,
            revision,
            values: self.layout.finish(slots),
            correlation_id: correlation
                .and_then(|c| std::str::from_utf8(c).ok())
                .map(str::to_string),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_every_part_and_only_on_them() {
        let id = WindowResult::derive_id("spend", "card-1", 0, 60, 1);
        assert_eq!(id, WindowResult::derive_id("spend", "card-1", 0, 60, 1));
        for other in [
            WindowResult::derive_id("spend2", "card-1", 0, 60, 1),
            WindowResult::derive_id("spend", "card-2", 0, 60, 1),
            WindowResult::derive_id("spend", "card-1", 1, 60, 1),
            WindowResult::derive_id("spend", "card-1", 0, 61, 1),
            WindowResult::derive_id("spend", "card-1", 0, 60, 2),
            WindowResult::derive_id("spend:card", "1", 0, 60, 1),
        ] {
            assert_ne!(id, other);
        }
        let uuid = Uuid::parse_str(id.as_str()).unwrap();
        assert_eq!(uuid.get_version_num(), 5);
    }
}
