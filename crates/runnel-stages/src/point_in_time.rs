//! Point-in-time lookups over a feature's result stream, for training sets without leakage.
//!
//! A training row is (key, time t): the label was known at t, so the features must be what a
//! model serving at t could have read. The online store only holds the latest value; the
//! result stream holds every emission, each with the time the log appended it. A result `r`
//! of the key is **known at t** when both hold:
//! - `r.window_end ≤ t`: its window closed by t in event time (the window is `[start, end)`,
//!   so every event counted in it has an event time `< t`; an event at or after t never leaks
//!   in);
//! - `r.appended_at ≤ t`: it had been published by t (a revision emitted after t, because of a
//!   late event that arrived after t, does not leak in either).
//!
//! The value at t is the known result that the online store would hold: the greatest by
//! (window end, window start, revision), the order [`crate::FeatureValue::supersedes`] uses. No
//! known result → no value (the row is exported with empty values, never dropped).
//!
//! Results are read from the stream with [`read_results`], which keeps only events of the
//! feature's output type whose data names the feature, so several features may share one
//! output stream.

use std::collections::HashMap;

use chrono::DateTime;
use runnel_backend::{Backend, BackendError, ReadFrom, StreamName};
use runnel_clock::Micros;
use runnel_envelope::Event;
use serde_json::{Map, Value};

use crate::extract::EventTime;
use crate::spec::FeatureSpec;

/// One result as published: when the log appended it and what it said.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedResult {
    /// When the log appended the result event, µs since the epoch.
    pub appended_at: Micros,
    /// The window key.
    pub key: String,
    /// Start of the window (inclusive), µs since the epoch.
    pub window_start: EventTime,
    /// End of the window (exclusive), µs since the epoch.
    pub window_end: EventTime,
    /// The result's revision.
    pub revision: u32,
    /// One member per aggregate.
    pub values: Map<String, Value>,
}

impl PublishedResult {
    /// Reads a result event of feature `feature` (its data as [`crate::WindowResult::data`]
    /// writes it); `None` for an event of another feature or of another shape.
    pub fn from_event(event: &Event, feature: &str, appended_at: Micros) -> Option<Self> {
        let data = event.data().as_json()?.as_object()?;
        if data.get("feature")?.as_str()? != feature {
            return None;
        }
        let time = |name: &str| {
            DateTime::parse_from_rfc3339(data.get(name)?.as_str()?)
                .ok()
                .map(|t| t.timestamp_micros())
        };
        Some(Self {
            appended_at,
            key: data.get("key")?.as_str()?.to_string(),
            window_start: time("window_start")?,
            window_end: time("window_end")?,
            revision: u32::try_from(data.get("revision")?.as_u64()?).ok()?,
            values: data.get("values")?.as_object()?.clone(),
        })
    }

    fn rank(&self) -> (EventTime, EventTime, u32) {
        (self.window_end, self.window_start, self.revision)
    }

    /// Whether this result is known at `time` (see the module docs).
    pub fn known_at(&self, time: EventTime) -> bool {
        self.window_end <= time && i128::from(self.appended_at) <= i128::from(time)
    }
}

/// Every published result of one feature, by key, answering "what was known at t".
#[derive(Debug, Clone, Default)]
pub struct PointInTime {
    by_key: HashMap<String, Vec<PublishedResult>>,
}

impl PointInTime {
    /// No results.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one published result (a copy published twice changes nothing).
    pub fn add(&mut self, result: PublishedResult) {
        self.by_key
            .entry(result.key.clone())
            .or_default()
            .push(result);
    }

    /// Results held.
    pub fn len(&self) -> usize {
        self.by_key.values().map(Vec::len).sum()
    }

    /// Whether no result is held.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The value of `key` as known at `time`: the greatest result known then, if any.
    pub fn at(&self, key: &str, time: EventTime) -> Option<&PublishedResult> {
        self.by_key
            .get(key)?
            .iter()
            .filter(|r| r.known_at(time))
            .max_by_key(|r| r.rank())
    }
}

/// Why the result stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PointInTimeError {
    /// The output type names no stream.
    #[error("feature `{feature}`: its output type names no stream: {reason}")]
    Stream {
        /// The feature.
        feature: String,
        /// Why.
        reason: String,
    },
    /// The backend failed.
    #[error("reading the results of feature `{feature}`: {source}")]
    Backend {
        /// The feature.
        feature: String,
        /// What the backend said.
        source: Box<BackendError>,
    },
}

/// Records read per call while scanning the result stream.
const READ_BATCH: usize = 1024;

/// Reads every result of `spec` in its output stream (all partitions, from their start). A
/// stream that does not exist yet holds no results.
pub async fn read_results(
    backend: &dyn Backend,
    spec: &FeatureSpec,
) -> Result<PointInTime, PointInTimeError> {
    let fail = |source: BackendError| PointInTimeError::Backend {
        feature: spec.name.clone(),
        source: Box::new(source),
    };
    let output = spec.output.as_str();
    let domain = output.split_once('.').map_or(output, |(d, _)| d);
    let stream = StreamName::new(domain).map_err(|e| PointInTimeError::Stream {
        feature: spec.name.clone(),
        reason: e.to_string(),
    })?;
    let info = match backend.describe_stream(&stream).await {
        Ok(info) => info,
        Err(BackendError::UnknownStream(_)) => return Ok(PointInTime::new()),
        Err(e) => return Err(fail(e)),
    };
    let mut found = PointInTime::new();
    for partition in info.partitions {
        let mut next = partition.start_offset;
        while next < partition.high_watermark {
            let records = backend
                .read(
                    &stream,
                    partition.partition,
                    ReadFrom::Offset(next),
                    READ_BATCH,
                    usize::MAX,
                )
                .await
                .map_err(fail)?;
            let Some(last) = records.last() else { break };
            next = last.offset + 1;
            for record in &records {
                // Other records of the stream (another type, an undecodable one) are not
                // results of this feature.
                let Ok(event) = Event::decode_binary(&record.value) else {
                    continue;
                };
                if event.event_type() != &spec.output {
                    continue;
                }
                if let Some(result) =
                    PublishedResult::from_event(&event, &spec.name, record.timestamp)
                {
                    found.add(result);
                }
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000;

    fn result(
        key: &str,
        window: (i64, i64),
        revision: u32,
        appended_at: i64,
        count: u64,
    ) -> PublishedResult {
        let mut values = Map::new();
        values.insert("count".into(), Value::from(count));
        PublishedResult {
            appended_at: appended_at as Micros,
            key: key.into(),
            window_start: window.0,
            window_end: window.1,
            revision,
            values,
        }
    }

    fn count(found: Option<&PublishedResult>) -> Option<u64> {
        found.map(|r| r.values["count"].as_u64().unwrap_or(0))
    }

    #[test]
    fn a_window_that_ends_after_the_row_time_does_not_leak_in() {
        let mut pit = PointInTime::new();
        // [0, 10m) emitted at 10m+1s; [10m, 20m) emitted at 20m+1s.
        pit.add(result("c1", (0, 10 * MIN), 1, 10 * MIN + 1_000_000, 3));
        pit.add(result(
            "c1",
            (10 * MIN, 20 * MIN),
            1,
            20 * MIN + 1_000_000,
            5,
        ));
        assert_eq!(
            count(pit.at("c1", 10 * MIN)),
            None,
            "not emitted yet at its end"
        );
        assert_eq!(count(pit.at("c1", 10 * MIN + 1_000_000)), Some(3));
        assert_eq!(
            count(pit.at("c1", 19 * MIN)),
            Some(3),
            "the open window [10m, 20m) holds events after the row time"
        );
        assert_eq!(count(pit.at("c1", 30 * MIN)), Some(5));
        assert_eq!(count(pit.at("c2", 30 * MIN)), None, "another key");
    }

    #[test]
    fn a_revision_emitted_after_the_row_time_does_not_leak_in() {
        let mut pit = PointInTime::new();
        pit.add(result("c1", (0, 10 * MIN), 1, 10 * MIN, 3));
        // A late event arrived at 15m and revised the window.
        pit.add(result("c1", (0, 10 * MIN), 2, 15 * MIN, 4));
        assert_eq!(count(pit.at("c1", 12 * MIN)), Some(3));
        assert_eq!(count(pit.at("c1", 15 * MIN)), Some(4));
    }

    #[test]
    fn a_result_published_late_is_known_only_from_its_publication() {
        // The pipeline was behind: the window [0, 10m) was published at 40m.
        let mut pit = PointInTime::new();
        pit.add(result("c1", (0, 10 * MIN), 1, 40 * MIN, 3));
        assert_eq!(count(pit.at("c1", 20 * MIN)), None);
        assert_eq!(count(pit.at("c1", 40 * MIN)), Some(3));
    }
}
