//! Re-scoring (`rescore_degraded = true`): an event the ladder answered (from the cache or the
//! fallback) is scored again by the model once it answers again, and a second revision of
//! its prediction is published.
//!
//! Durable by construction: the stage writes the input (its event, its assembled row and its
//! place in the log) under `runnel_rescore/<model>/<input hash>` before the degraded
//! prediction is published and the input acknowledged, so a crash cannot forget it. A task
//! per stage looks every [`RESCORE_EVERY`] (and at once when the breaker half-opens or
//! closes) unless the breaker is open: it asks the model alone for each waiting input ([`Scorer::model_only`],
//! no cache or fallback), publishes revision 2 with an id derived from (the stage's group +
//! `/revision`, the input, 2), then deletes the entry. A crash between the publish and the
//! delete publishes the same id again, which publish deduplication absorbs; an input whose
//! model call fails again (or is not let through by a half-open breaker) stays for the next
//! round. While half-open, these calls are the breaker's probes: a model that recovered with
//! no new traffic still closes the breaker and has its degraded answers scored again.
//!
//! Revision 2 is the same prediction event as revision 1 (type, source, causation,
//! correlation, trace parent, partition key) with the model's outputs, `revision: 2`,
//! `degraded: false` and `rescores: {served_by, reason}` saying what revision 1 was.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use runnel_backend::{Backend, Expect, KvEntry, Partition, StreamName};
use runnel_envelope::Event;
use runnel_runtime::{HandlerError, Message, Runnel};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use crate::breaker::{BreakerState, Transition};
use crate::scorer::{Prediction, Scorer};

/// The key-value bucket of inputs waiting to be scored again.
pub const RESCORE_BUCKET: &str = "runnel_rescore";

/// How often waiting inputs are tried while the breaker is closed.
pub const RESCORE_EVERY: Duration = Duration::from_secs(1);

/// Inputs taken per round (their model calls are made at once, so the batcher batches them).
const ROUND: usize = 256;

/// An input waiting to be scored again.
#[derive(Debug, Serialize, Deserialize)]
struct Waiting {
    /// The input event (CloudEvents JSON).
    event: Value,
    stream: String,
    partition: Partition,
    offset: u64,
    /// The model's inputs as revision 1 assembled them.
    row: Vec<f64>,
    /// The first revision's `served_by` and `reason`.
    served_by: String,
    reason: Option<String>,
    /// The first revision's data, which revision 2 amends.
    data: Value,
}

fn key(model: &str, event: &Event) -> String {
    let identity = format!("{}\u{0}{}", event.source().as_str(), event.id().as_str());
    format!(
        "{model}/{:032x}",
        xxhash_rust::xxh3::xxh3_128(identity.as_bytes())
    )
}

/// Records `message`'s input as answered degraded, before its prediction is published.
pub(crate) async fn remember(
    backend: &dyn Backend,
    model: &str,
    message: &Message,
    row: &[f64],
    prediction: &Prediction,
    data: &Value,
) -> Result<(), HandlerError> {
    let waiting = Waiting {
        event: message.event.to_json_value(),
        stream: message.stream.to_string(),
        partition: message.partition,
        offset: message.offset,
        row: row.to_vec(),
        served_by: prediction.source.as_str().to_string(),
        reason: prediction.degraded.as_ref().map(|r| r.kind().to_string()),
        data: data.clone(),
    };
    let value = serde_json::to_vec(&waiting)
        .map_err(|e| HandlerError::permanent(format!("model `{model}`: re-scoring entry: {e}")))?;
    backend
        .kv_put(
            RESCORE_BUCKET,
            &key(model, &message.event),
            Bytes::from(value),
            Expect::Any,
            None,
        )
        .await
        .map_err(|e| {
            HandlerError::service(format!(
                "model `{model}`: recording the input for re-scoring: {e}"
            ))
        })?;
    Ok(())
}

/// How many inputs of `model` wait to be scored again (at most `limit` counted).
pub async fn waiting_count(
    backend: &dyn Backend,
    model: &str,
    limit: usize,
) -> Result<usize, runnel_backend::BackendError> {
    Ok(backend
        .kv_scan(RESCORE_BUCKET, &format!("{model}/"), None, limit)
        .await?
        .len())
}

/// What the re-scoring task needs.
pub(crate) struct Rescorer {
    pub runnel: Runnel,
    pub scorer: Scorer,
    pub model: String,
    pub group: String,
    pub outputs: Vec<String>,
    pub output_type: String,
}

impl Rescorer {
    /// Runs until `stop` says so.
    pub(crate) async fn run(
        self: Arc<Self>,
        mut transitions: broadcast::Receiver<Transition>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(RESCORE_EVERY) => {}
                transition = transitions.recv() => match transition {
                    Ok(t) if t.to != BreakerState::Open => {}
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
            // Half-open too: with no new traffic, these calls are the breaker's probes, so a
            // recovered model closes it and its degraded answers are scored again.
            if self.scorer.breaker_state() == BreakerState::Open {
                continue;
            }
            if let Err(error) = self.round().await {
                tracing::warn!(model = self.model.as_str(), %error, "re-scoring round failed");
            }
        }
    }

    /// Scores up to [`ROUND`] waiting inputs; returns how many got revision 2.
    pub(crate) async fn round(&self) -> Result<usize, String> {
        let backend = self.runnel.backend();
        let prefix = format!("{}/", self.model);
        let entries = backend
            .kv_scan(RESCORE_BUCKET, &prefix, None, ROUND)
            .await
            .map_err(|e| e.to_string())?;
        if entries.is_empty() {
            return Ok(0);
        }
        let attempts = entries.into_iter().map(|entry| self.rescore(entry));
        let done = futures::future::join_all(attempts).await;
        let mut rescored = 0;
        for result in done {
            match result {
                Ok(true) => rescored += 1,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(model = self.model.as_str(), %error, "re-scoring an input")
                }
            }
        }
        metrics::counter!("runnel_predictions_rescored_total", "model" => self.model.clone())
            .increment(rescored as u64);
        Ok(rescored)
    }

    /// One waiting input: `Ok(true)` once revision 2 is published and the entry gone,
    /// `Ok(false)` when the model did not answer (it stays).
    async fn rescore(&self, entry: KvEntry) -> Result<bool, String> {
        let backend = self.runnel.backend();
        let waiting: Waiting = match serde_json::from_slice(&entry.value) {
            Ok(waiting) => waiting,
            Err(error) => {
                // Not ours to read: drop it rather than retry it forever.
                tracing::warn!(model = self.model.as_str(), key = entry.key.as_str(), %error, "an unreadable re-scoring entry was removed");
                backend
                    .kv_delete(RESCORE_BUCKET, &entry.key, Expect::Revision(entry.revision))
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(false);
            }
        };
        let Some((outputs, version)) = self.scorer.model_only(waiting.row.clone()).await else {
            return Ok(false);
        };
        let event = self.revision_two(&waiting, &outputs, &version)?;
        self.runnel
            .publish(event)
            .await
            .map_err(|e| e.to_string())?;
        backend
            .kv_delete(RESCORE_BUCKET, &entry.key, Expect::Revision(entry.revision))
            .await
            .map_err(|e| e.to_string())?;
        Ok(true)
    }

    fn revision_two(
        &self,
        waiting: &Waiting,
        outputs: &[f64],
        version: &str,
    ) -> Result<Event, String> {
        let input = Event::from_json_value(waiting.event.clone()).map_err(|e| e.to_string())?;
        let stream = StreamName::new(waiting.stream.clone()).map_err(|e| e.to_string())?;
        let message = Message {
            group: Arc::from(self.group.as_str()),
            event: Arc::new(input),
            stream,
            partition: waiting.partition,
            offset: waiting.offset,
            attempt: 1,
            from_dlq: false,
        };
        let mut data = waiting.data.clone();
        if let Value::Object(fields) = &mut data {
            let named: serde_json::Map<String, Value> = self
                .outputs
                .iter()
                .zip(outputs)
                .map(|(name, value)| (name.clone(), crate::stage::number(*value)))
                .collect();
            fields.insert("outputs".into(), Value::Object(named));
            fields.insert("version".into(), Value::from(version));
            fields.insert("served_by".into(), Value::from("model"));
            fields.insert("degraded".into(), Value::from(false));
            fields.insert("reason".into(), Value::Null);
            fields.insert("reason_detail".into(), Value::Null);
            fields.insert("revision".into(), Value::from(2));
            fields.insert(
                "rescores".into(),
                serde_json::json!({"served_by": waiting.served_by, "reason": waiting.reason}),
            );
        }
        let reply = message
            .reply(&self.output_type, data)
            .map_err(|e| e.to_string())?;
        let id = message
            .event
            .derived_id(&format!("{}/revision", self.group), 2);
        reply
            .into_builder()
            .id(id)
            .build()
            .map_err(|e| e.to_string())
    }
}
