//! Runnel's feature-pipeline stage: per-entity aggregates over event-time windows.
//!
//! An ML engineer declares a feature in `runnel.toml` (`[[features]]`, see [`FeatureSpec`]):
//! which events, keyed by which entity, in which windows, with which aggregates. The runtime
//! consumes the input stream as a consumer group and drives a [`FeatureStage`]; each window
//! that closes becomes a result event (`feature.computed`) in a stream, replayable and
//! diffable like any other. This crate is that stage: its core is pure and synchronous, with
//! no I/O and no clock reads, so it is tested as a function of its inputs; [`FeaturePipeline`]
//! runs it over the runtime's consumer groups, with checkpoints and the online
//! [`FeatureStore`] in the backend's key-value store.
//!
//! Modules, one concern each (one window operator per file, as Arroyo lays them out):
//! - `spec`, `duration`: the typed configuration and its validation, errors naming the field.
//! - `extract`: an event's key, event time and field values, errors naming the field.
//! - `aggregate`, `sketch`: mergeable accumulators; distinct counts and quantiles from
//!   maintained sketch crates, with stated error bounds.
//! - `watermark`: per-partition watermarks, their minimum, idleness.
//! - `panes`, `tumbling`, `sliding`, `session`: the window operators.
//! - `keys`: interned window keys.
//! - `result`: results and their deterministic ids.
//! - `stage`: the API the integration calls; `snapshot`: its checkpoint format.
//! - `pipeline`: the integration (a stage per leased input partition of a consumer group);
//!   `checkpoint`: the stage's durable checkpoints with their outbox; `store`: the online
//!   feature store; `point_in_time`: what the result stream said at a past moment (training
//!   sets without leakage).
//!
//! Semantics (Flink's where the issue is silent) are written down in `docs/features.md`.
//!
//! # Invariants
//!
//! - An event is never dropped silently: it is counted in a window, or reported too late with
//!   a reason (late stream), or refused with an error naming the field (dead-letter queue).
//! - A window fires when the stage's watermark reaches its end; the watermark never goes back.
//! - A result's id is a function of (feature, key, window start, window end, revision) only.
//! - Sums of integers are exact; every aggregate but a float sum gives the same result
//!   whatever the arrival order of events within the out-of-orderness bound.
//! - A stage restored from a snapshot continues exactly as the original would have.
//! - A pipeline writes a checkpoint (snapshot, offsets, and the outputs of the advance it
//!   reflects) before it publishes those outputs or acknowledges those inputs: a crash at any
//!   moment and a restart publish exactly the results of an uninterrupted run.

#![warn(missing_docs)]

mod aggregate;
mod checkpoint;
mod duration;
mod extract;
mod keys;
mod panes;
mod pipeline;
mod point_in_time;
mod result;
mod session;
mod sketch;
mod sliding;
mod snapshot;
mod spec;
mod stage;
mod store;
mod tumbling;
mod watermark;

pub use aggregate::InputError;
pub use checkpoint::{CHECKPOINT_BUCKET, CHUNK_BYTES, CheckpointError, INLINE_BYTES};
pub use duration::{HumanDuration, InvalidDuration};
pub use extract::{
    EventTime, ExtractError, Extractor, FieldValue, MAX_EVENT_TIME, MIN_EVENT_TIME, Record,
    format_time,
};
pub use pipeline::{
    FeaturePipeline, FeaturePipelineHandle, LATE_FEATURE_EXTENSION, LATE_REASON_EXTENSION,
    MAX_PIPELINE_NAME_LEN, PartitionStatus, PipelineError, PipelineOptions, PipelineStatus,
    group_name,
};
pub use point_in_time::{PointInTime, PointInTimeError, PublishedResult, read_results};
pub use result::{RESULT_ID_NAMESPACE, WindowResult};
pub use sketch::{
    DISTINCT_RELATIVE_STANDARD_ERROR, EXACT_QUANTILE_VALUES, QUANTILE_RELATIVE_ACCURACY,
};
pub use snapshot::{RestoreError, SNAPSHOT_FORMAT, SnapshotError};
pub use spec::{
    AggregateKind, AggregateSpec, FeatureSpec, FieldPointer, InvalidPointer, InvalidSource,
    KeySource, MAX_DURATION, MAX_NAME_LEN, MAX_PANES_PER_WINDOW, SpecError, SpecErrors,
    SpecProblem, TimeSource, WindowSpec, validate_features,
};
pub use stage::{FeatureStage, LateEvent, Outcome, StageCounters, StageStats};
pub use store::{FeatureStore, FeatureValue, STORE_BUCKET, StoreError, store_key};
pub use watermark::{PartitionWatermark, WatermarkTracker};
