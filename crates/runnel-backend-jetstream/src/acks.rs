//! Publish acknowledgements of appends, gathered per batch.
//!
//! async-nats's JetStream publish makes every message a request of its own: a fresh inbox
//! subject, a one-shot channel, a permit, two timers, a boxed future and a parse of an
//! untagged JSON enum. An append waits for its whole batch anyway, so the backend publishes
//! each record with a reply subject under one inbox of its own, `<inbox>.<batch>.<index>`;
//! one task files each acknowledgement under its batch, and the append waits once per batch,
//! with one deadline. In profiles of `runnel bench runtime --backend jetstream` the
//! per-message requests were about a fifth of the publishing client's CPU.
//!
//! Acknowledgements mean what JetStream's do: stored (with its sequence, or the first
//! sequence of a duplicate), refused (with JetStream's error), or — if none came before the
//! deadline, or the server answered "no responders" while the stream had no leader — a
//! failure that may pass, which the append retries as before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::{Message, StatusCode, Subject};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A record JetStream stored, or found already stored (`duplicate`) at `sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stored {
    pub sequence: u64,
    pub duplicate: bool,
}

/// How one message of a batch fared.
pub(crate) type Outcome = Result<Stored, PublishError>;

/// The body of JetStream's answer to a publish: `{"stream":…,"seq":…,"duplicate":…}` or
/// `{"error":{…}}`. Fields it does not name are skipped without being kept.
#[derive(Deserialize)]
struct AckBody {
    seq: Option<u64>,
    #[serde(default)]
    duplicate: bool,
    error: Option<async_nats::jetstream::Error>,
}

/// What an answer to a publish says.
fn outcome_of(message: &Message) -> Outcome {
    if message.status == Some(StatusCode::NO_RESPONDERS) {
        return Err(PublishError::new(PublishErrorKind::StreamNotFound));
    }
    let body: AckBody = serde_json::from_slice(&message.payload)
        .map_err(|e| PublishError::with_source(PublishErrorKind::Other, e))?;
    match (body.error, body.seq) {
        (Some(error), _) => {
            let kind = match error.error_code() {
                ErrorCode::STREAM_WRONG_LAST_SEQUENCE => PublishErrorKind::WrongLastSequence,
                ErrorCode::STREAM_WRONG_LAST_MESSAGE_ID => PublishErrorKind::WrongLastMessageId,
                _ => PublishErrorKind::Other,
            };
            Err(PublishError::with_source(kind, error))
        }
        (None, Some(sequence)) => Ok(Stored {
            sequence,
            duplicate: body.duplicate,
        }),
        (None, None) => Err(PublishError::with_source(
            PublishErrorKind::Other,
            format!(
                "an acknowledgement with neither a sequence nor an error: {}",
                String::from_utf8_lossy(&message.payload)
            ),
        )),
    }
}

/// A batch whose acknowledgements are being gathered.
struct Gathering {
    outcomes: Vec<Option<Outcome>>,
    /// Acknowledgements expected: the batch's length, or fewer if sending stopped early.
    expected: usize,
    received: usize,
    done: Option<oneshot::Sender<Vec<Option<Outcome>>>>,
}

impl Gathering {
    fn finish_if_complete(&mut self) -> bool {
        if self.received < self.expected {
            return false;
        }
        if let Some(done) = self.done.take() {
            let _ = done.send(std::mem::take(&mut self.outcomes));
        }
        true
    }
}

impl std::fmt::Debug for Gathering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gathering")
            .field("expected", &self.expected)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

type Batches = Arc<Mutex<HashMap<u64, Gathering>>>;

fn lock(batches: &Batches) -> std::sync::MutexGuard<'_, HashMap<u64, Gathering>> {
    batches
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The backend's inbox for publish acknowledgements, and the task that files them.
#[derive(Debug)]
pub(crate) struct AckInbox {
    prefix: String,
    next_batch: AtomicU64,
    batches: Batches,
    task: JoinHandle<()>,
}

impl AckInbox {
    /// Subscribes to a fresh inbox of `client` (under its inbox prefix, so the permissions
    /// that allow replies to requests allow these) and starts filing what arrives there.
    pub async fn start(client: &async_nats::Client) -> Result<Self, async_nats::SubscribeError> {
        let prefix = client.new_inbox();
        let mut subscriber = client.subscribe(format!("{prefix}.*.*")).await?;
        let batches: Batches = Arc::default();
        let filing = batches.clone();
        let skip = prefix.len() + 1;
        let task = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                let Some((batch, index)) = reply_place(&message.subject, skip) else {
                    continue;
                };
                let outcome = outcome_of(&message);
                let mut batches = lock(&filing);
                let Some(gathering) = batches.get_mut(&batch) else {
                    continue;
                };
                if let Some(slot @ None) = gathering.outcomes.get_mut(index) {
                    *slot = Some(outcome);
                    gathering.received += 1;
                    if gathering.finish_if_complete() {
                        batches.remove(&batch);
                    }
                }
            }
        });
        Ok(Self {
            prefix,
            next_batch: AtomicU64::new(0),
            batches,
            task,
        })
    }

    /// Opens a batch of `len` messages; their reply subjects come from the returned
    /// [`AckBatch`].
    pub fn open(&self, len: usize) -> AckBatch<'_> {
        let id = self.next_batch.fetch_add(1, Ordering::Relaxed);
        let (done, arrived) = oneshot::channel();
        lock(&self.batches).insert(
            id,
            Gathering {
                outcomes: (0..len).map(|_| None).collect(),
                expected: len,
                received: 0,
                done: Some(done),
            },
        );
        AckBatch {
            inbox: self,
            id,
            arrived: Some(arrived),
        }
    }
}

impl Drop for AckInbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `(batch, index)` from a reply subject `<prefix>.<batch>.<index>`.
fn reply_place(subject: &Subject, skip: usize) -> Option<(u64, usize)> {
    let (batch, index) = subject.get(skip..)?.split_once('.')?;
    Some((batch.parse().ok()?, index.parse().ok()?))
}

/// One batch's acknowledgements being gathered.
#[derive(Debug)]
pub(crate) struct AckBatch<'a> {
    inbox: &'a AckInbox,
    id: u64,
    arrived: Option<oneshot::Receiver<Vec<Option<Outcome>>>>,
}

impl AckBatch<'_> {
    /// The reply subject of the batch's message `index`.
    pub fn reply(&self, index: usize) -> Subject {
        Subject::from(format!("{}.{}.{index}", self.inbox.prefix, self.id))
    }

    /// Waits until every message sent has its outcome, or for `timeout`; a message without
    /// one by then has timed out. `sent` is how many of the batch's messages were published
    /// (sending may have stopped early).
    pub async fn outcomes(mut self, sent: usize, timeout: Duration) -> Vec<Outcome> {
        {
            let mut batches = lock(&self.inbox.batches);
            if let Some(gathering) = batches.get_mut(&self.id) {
                gathering.expected = sent;
                gathering.outcomes.truncate(sent);
                if gathering.finish_if_complete() {
                    batches.remove(&self.id);
                }
            }
        }
        let arrived = match self.arrived.take() {
            Some(arrived) => tokio::time::timeout(timeout, arrived)
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        };
        let outcomes = match arrived {
            Some(outcomes) => outcomes,
            // The deadline passed (or the inbox's task is gone): keep what did arrive.
            None => lock(&self.inbox.batches)
                .remove(&self.id)
                .map(|gathering| gathering.outcomes)
                .unwrap_or_default(),
        };
        let mut outcomes: Vec<Outcome> = outcomes
            .into_iter()
            .map(|outcome| {
                outcome.unwrap_or_else(|| Err(PublishError::new(PublishErrorKind::TimedOut)))
            })
            .collect();
        outcomes.resize_with(sent, || Err(PublishError::new(PublishErrorKind::TimedOut)));
        outcomes
    }
}

impl Drop for AckBatch<'_> {
    fn drop(&mut self) {
        lock(&self.inbox.batches).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::HeaderMap;
    use bytes::Bytes;

    fn answer(payload: &str, status: Option<StatusCode>) -> Message {
        Message {
            subject: Subject::from("_INBOX.x.1.0"),
            reply: None,
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            headers: status.map(|_| HeaderMap::new()),
            status,
            description: None,
            length: payload.len(),
        }
    }

    #[test]
    fn acknowledgements_are_read_as_stored_duplicate_or_refused() {
        let stored = outcome_of(&answer(r#"{"stream":"runnel_o_0","seq":7}"#, None));
        assert_eq!(
            stored.ok(),
            Some(Stored {
                sequence: 7,
                duplicate: false
            })
        );
        let duplicate = outcome_of(&answer(
            r#"{"stream":"runnel_o_0","domain":"","seq":3,"duplicate":true}"#,
            None,
        ));
        assert_eq!(
            duplicate.ok(),
            Some(Stored {
                sequence: 3,
                duplicate: true
            })
        );
        let refused = outcome_of(&answer(
            r#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 4"}}"#,
            None,
        ));
        let error = refused.expect_err("a refusal");
        assert_eq!(error.kind(), PublishErrorKind::WrongLastSequence);
        assert!(
            error.to_string().contains("wrong last sequence: 4"),
            "{error}"
        );
        let refused = outcome_of(&answer(
            r#"{"error":{"code":400,"err_code":10070,"description":"wrong last msg ID: a"}}"#,
            None,
        ));
        assert_eq!(
            refused.map_err(|e| e.kind()).err(),
            Some(PublishErrorKind::WrongLastMessageId)
        );
        let full = outcome_of(&answer(
            r#"{"error":{"code":503,"err_code":10047,"description":"insufficient storage"}}"#,
            None,
        ))
        .expect_err("a refusal");
        assert_eq!(full.kind(), PublishErrorKind::Other);
        assert_eq!(
            crate::error::jetstream_code(&full),
            Some(ErrorCode::STORAGE_RESOURCES_EXCEEDED)
        );
    }

    #[test]
    fn no_responders_and_garbage_are_errors_naming_what_came() {
        let leaderless = outcome_of(&answer("", Some(StatusCode::NO_RESPONDERS)));
        assert_eq!(
            leaderless.map_err(|e| e.kind()).err(),
            Some(PublishErrorKind::StreamNotFound)
        );
        let garbage = outcome_of(&answer("not json", None)).expect_err("garbage");
        assert_eq!(garbage.kind(), PublishErrorKind::Other);
        let empty = outcome_of(&answer("{}", None)).expect_err("no sequence");
        assert!(empty.to_string().contains("neither a sequence"), "{empty}");
    }

    #[test]
    fn reply_subjects_name_their_batch_and_index() {
        let prefix = "_INBOX.abc";
        let skip = prefix.len() + 1;
        assert_eq!(
            reply_place(&Subject::from("_INBOX.abc.12.345"), skip),
            Some((12, 345))
        );
        assert_eq!(reply_place(&Subject::from("_INBOX.abc.12"), skip), None);
        assert_eq!(reply_place(&Subject::from("_INBOX.abc.x.1"), skip), None);
        assert_eq!(reply_place(&Subject::from("_INBOX"), skip), None);
    }
}
