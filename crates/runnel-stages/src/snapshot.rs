//! The checkpoint format of a stage's state.
//!
//! One byte of format version, then the state in postcard (serde, varint integers, no field
//! names): the input offsets it reflects, the watermark of every partition, the counters, the
//! interned keys with their free list, and the operator's panes or sessions with their
//! slots. Restoring checks everything an operator relies on (layout of slots, key ids, pane
//! alignment, sketch settings) and refuses a snapshot taken under a different key, time,
//! window or aggregates, which would be silently misread otherwise.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::keys::KeyId;
use crate::session::SavedSessions;
use crate::sliding::SavedSliding;
use crate::spec::{FeatureSpec, SpecErrors};
use crate::stage::StageCounters;
use crate::tumbling::SavedTumbling;
use crate::watermark::WatermarkTracker;

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_FORMAT: u8 = 1;

/// Why a snapshot could not be written.
#[derive(Debug, thiserror::Error)]
#[error("the stage state could not be encoded: {0}")]
pub struct SnapshotError(#[from] postcard::Error);

/// Why a snapshot could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Written by a build with another format.
    #[error("snapshot format {found} is not one this build reads ({SNAPSHOT_FORMAT})")]
    Format {
        /// The format byte found.
        found: u8,
    },
    /// Not a snapshot, or cut short.
    #[error("the snapshot cannot be decoded: {0}")]
    Decode(#[from] postcard::Error),
    /// Taken under another key, time, window, aggregates or name.
    #[error(
        "the snapshot was taken with a different name, key, time, window or aggregates; \
         its state cannot be read under the current specification"
    )]
    SpecChanged,
    /// Decodes, but does not hold together.
    #[error("the snapshot is inconsistent (damaged, or not written by this stage)")]
    Damaged,
    /// The specification itself is invalid.
    #[error(transparent)]
    Spec(#[from] SpecErrors),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Saved<'a> {
    pub(crate) fingerprint: u64,
    pub(crate) seq: u64,
    pub(crate) offsets: BTreeMap<u32, u64>,
    pub(crate) counters: StageCounters,
    pub(crate) watermarks: Cow<'a, WatermarkTracker>,
    pub(crate) keys: Vec<(KeyId, Cow<'a, str>)>,
    pub(crate) free_keys: Vec<KeyId>,
    pub(crate) operator: SavedOperator<'a>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum SavedOperator<'a> {
    Tumbling(SavedTumbling<'a>),
    Sliding(SavedSliding<'a>),
    Session(SavedSessions<'a>),
}

pub(crate) fn encode(saved: &Saved<'_>) -> Result<Vec<u8>, SnapshotError> {
    Ok(postcard::to_extend(saved, vec![SNAPSHOT_FORMAT])?)
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Saved<'static>, RestoreError> {
    match bytes.split_first() {
        Some((&SNAPSHOT_FORMAT, body)) => Ok(postcard::from_bytes(body)?),
        Some((&found, _)) => Err(RestoreError::Format { found }),
        None => Err(RestoreError::Format { found: 0 }),
    }
}

/// What a snapshot must agree with to be read: the parts of a spec that shape the state.
pub(crate) fn fingerprint(spec: &FeatureSpec) -> u64 {
    let shape = (
        &spec.name,
        &spec.key,
        &spec.time,
        &spec.window,
        &spec.aggregates,
    );
    let text = serde_json::to_vec(&shape).unwrap_or_default();
    xxhash_rust::xxh3::xxh3_64(&text)
}
