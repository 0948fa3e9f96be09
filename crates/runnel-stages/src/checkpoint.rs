//! Durable checkpoints of one input partition's feature stage, in the backend's key-value
//! store, with the outputs of the advance they reflect (the outbox).
//!
//! A checkpoint is written *before* its outbox is published and before its inputs are
//! acknowledged: after a crash the partition's next owner restores the stage, publishes the
//! outbox again (the same result ids, so deduplication drops copies) and acknowledges the
//! redelivered inputs whose offsets the snapshot already reflects. A result id is therefore
//! only ever published with one content.
//!
//! # Layout (bucket [`CHECKPOINT_BUCKET`])
//!
//! ```text
//! <feature>/<stream>/<partition>            head: postcard Head (format byte first)
//! <feature>/<stream>/<partition>/<gen>/<i>  chunk i of generation <gen> (only when chunked)
//! ```
//!
//! A checkpoint up to [`INLINE_BYTES`] is stored inside its head: one write. A larger one is
//! cut into chunks of [`CHUNK_BYTES`] (JetStream's default `max_payload` is 1 MiB), written
//! under a fresh generation id, and only then is the head switched to that generation with a
//! compare-and-set; chunks of the previous generation are deleted after. A crash between
//! leaves unreferenced chunks, never a head pointing at missing ones; a fenced owner writes
//! chunks under its own generation and loses the compare-and-set. The head carries the
//! length and an xxh3 hash of the whole payload, checked on read.
//!
//! Invariants:
//! - The head's revision is the fence: a write expects the revision this owner last read or
//!   wrote, so two owners of one partition can never both commit a checkpoint.
//! - A checkpoint holds the snapshot and exactly the outputs not yet known to be published.

use bytes::Bytes;
use runnel_backend::{Backend, BackendError, Expect, Partition, Revision, StreamName};
use serde::{Deserialize, Serialize};

/// The key-value bucket of feature checkpoints.
pub const CHECKPOINT_BUCKET: &str = "runnel_feature_checkpoints";

/// Largest checkpoint stored inside its head (one write).
pub const INLINE_BYTES: usize = 512 * 1024;

/// Size of a chunk of a larger checkpoint: half of JetStream's default `max_payload`.
pub const CHUNK_BYTES: usize = 512 * 1024;

const HEAD_FORMAT: u8 = 1;

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The backend failed.
    #[error("checkpoint `{key}`: {source}")]
    Backend {
        /// The head's key.
        key: String,
        /// What the backend said.
        source: Box<BackendError>,
    },
    /// Another instance wrote the checkpoint since this one read it: the partition moved.
    #[error("checkpoint `{key}` was written by another instance: the partition moved")]
    Fenced {
        /// The head's key.
        key: String,
    },
    /// The stored bytes do not decode, a chunk is missing or the hash does not match.
    #[error("checkpoint `{key}` is damaged: {reason}")]
    Damaged {
        /// The head's key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
enum Head {
    Inline(Vec<u8>),
    Chunked {
        generation: String,
        chunks: u32,
        len: u64,
        hash: u64,
    },
}

/// What is stored: the stage's snapshot and the outbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Saved {
    /// [`crate::FeatureStage::snapshot`].
    pub snapshot: Vec<u8>,
    /// The results not yet published, as JSON (`Vec<PendingResult>`): their values are JSON,
    /// which postcard cannot read back.
    pub results_json: Vec<u8>,
    /// Events for the late stream not yet published, in the binary envelope.
    pub late: Vec<Vec<u8>>,
    /// Inputs to dead-letter (offset, reason) that the group has not committed past.
    pub dead: Vec<(u64, String)>,
}

/// A checkpoint as read, with what the next write must expect.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub saved: Saved,
    pub fence: Fence,
}

/// What the next write of a partition's checkpoint expects to replace.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fence {
    revision: Option<Revision>,
    generation: Option<String>,
}

/// The checkpoints of one feature.
#[derive(Debug, Clone)]
pub(crate) struct Checkpoints {
    feature: String,
}

impl Checkpoints {
    pub fn new(feature: &str) -> Self {
        Self {
            feature: feature.to_string(),
        }
    }

    pub fn key(&self, stream: &StreamName, partition: Partition) -> String {
        format!("{}/{stream}/{partition}", self.feature)
    }

    /// The partition's checkpoint, if one was ever written.
    pub async fn load(
        &self,
        backend: &dyn Backend,
        stream: &StreamName,
        partition: Partition,
    ) -> Result<Option<Loaded>, CheckpointError> {
        let key = self.key(stream, partition);
        let failed = |source| CheckpointError::Backend {
            key: key.clone(),
            source: Box::new(source),
        };
        let damaged = |reason: String| CheckpointError::Damaged {
            key: key.clone(),
            reason,
        };
        let Some(entry) = backend
            .kv_get(CHECKPOINT_BUCKET, &key)
            .await
            .map_err(failed)?
        else {
            return Ok(None);
        };
        let (format, body) = entry
            .value
            .split_first()
            .ok_or_else(|| damaged("empty head".into()))?;
        if *format != HEAD_FORMAT {
            return Err(damaged(format!("unknown head format {format}")));
        }
        let head: Head = postcard::from_bytes(body).map_err(|e| damaged(e.to_string()))?;
        let (payload, generation) = match head {
            Head::Inline(payload) => (payload, None),
            Head::Chunked {
                generation,
                chunks,
                len,
                hash,
            } => {
                let mut payload = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
                for i in 0..chunks {
                    let chunk_key = format!("{key}/{generation}/{i}");
                    let chunk = backend
                        .kv_get(CHECKPOINT_BUCKET, &chunk_key)
                        .await
                        .map_err(failed)?
                        .ok_or_else(|| damaged(format!("chunk {i} of {chunks} is missing")))?;
                    payload.extend_from_slice(&chunk.value);
                }
                if payload.len() as u64 != len || xxhash_rust::xxh3::xxh3_64(&payload) != hash {
                    return Err(damaged("chunks do not add up to the recorded hash".into()));
                }
                (payload, Some(generation))
            }
        };
        let saved: Saved = postcard::from_bytes(&payload).map_err(|e| damaged(e.to_string()))?;
        Ok(Some(Loaded {
            saved,
            fence: Fence {
                revision: Some(entry.revision),
                generation,
            },
        }))
    }

    /// Writes the partition's checkpoint if nobody else wrote it since `fence`; `fence` then
    /// describes the new one.
    pub async fn store(
        &self,
        backend: &dyn Backend,
        stream: &StreamName,
        partition: Partition,
        saved: &Saved,
        fence: &mut Fence,
    ) -> Result<usize, CheckpointError> {
        let key = self.key(stream, partition);
        let failed = |source| CheckpointError::Backend {
            key: key.clone(),
            source: Box::new(source),
        };
        let payload = postcard::to_allocvec(saved).map_err(|e| CheckpointError::Damaged {
            key: key.clone(),
            reason: format!("cannot encode: {e}"),
        })?;
        let size = payload.len();
        let (head, generation) = if payload.len() <= INLINE_BYTES {
            (Head::Inline(payload), None)
        } else {
            let generation = runnel_envelope::EventId::new_v7().as_str().replace('-', "");
            let chunks = payload.chunks(CHUNK_BYTES);
            let count = chunks.len() as u32;
            for (i, chunk) in chunks.enumerate() {
                backend
                    .kv_put(
                        CHECKPOINT_BUCKET,
                        &format!("{key}/{generation}/{i}"),
                        Bytes::copy_from_slice(chunk),
                        Expect::Any,
                        None,
                    )
                    .await
                    .map_err(failed)?;
            }
            let head = Head::Chunked {
                generation: generation.clone(),
                chunks: count,
                len: payload.len() as u64,
                hash: xxhash_rust::xxh3::xxh3_64(&payload),
            };
            (head, Some(generation))
        };
        let mut value = vec![HEAD_FORMAT];
        value.extend(
            postcard::to_allocvec(&head).map_err(|e| CheckpointError::Damaged {
                key: key.clone(),
                reason: format!("cannot encode the head: {e}"),
            })?,
        );
        let expect = fence.revision.map_or(Expect::Absent, Expect::Revision);
        let revision = match backend
            .kv_put(CHECKPOINT_BUCKET, &key, value.into(), expect, None)
            .await
        {
            Ok(revision) => revision,
            Err(BackendError::CasConflict { .. }) => {
                if let Some(generation) = &generation {
                    self.delete_generation(backend, &key, generation).await;
                }
                return Err(CheckpointError::Fenced { key });
            }
            Err(source) => return Err(failed(source)),
        };
        let previous = std::mem::replace(
            fence,
            Fence {
                revision: Some(revision),
                generation,
            },
        );
        if let Some(old) = previous.generation {
            self.delete_generation(backend, &key, &old).await;
        }
        Ok(size)
    }

    /// Best effort: a chunk left behind is unreferenced and harmless.
    async fn delete_generation(&self, backend: &dyn Backend, key: &str, generation: &str) {
        let prefix = format!("{key}/{generation}/");
        if let Ok(chunks) = backend
            .kv_scan(CHECKPOINT_BUCKET, &prefix, None, 100_000)
            .await
        {
            for chunk in chunks {
                let _ = backend
                    .kv_delete(CHECKPOINT_BUCKET, &chunk.key, Expect::Any)
                    .await;
            }
        }
    }
}
