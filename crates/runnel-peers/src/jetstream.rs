//! NATS JetStream through `async-nats`, used as its users would: one file-backed stream per
//! topic, publishes awaited for their `PubAck` (without `Nats-Msg-Id` unless asked for:
//! Runnel sends one per event for deduplication, and JetStream's duplicate tracking has a
//! cost worth seeing side by side), durable pull consumers with explicit acks, one per group.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{Config, StorageType};
use async_nats::jetstream::{self, Context};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::{OnEvent, Peer, PeerError, Result, Topic, unique_name};

const PEER: &str = "jetstream";

/// A JetStream server, reached at one URL.
pub struct JetStreamPeer {
    name: String,
    durability: String,
    js: Context,
    message_ids: bool,
}

impl JetStreamPeer {
    /// Connects to `url`; `name` and `durability` label its rows (they depend on how the
    /// server was started, which this side cannot see).
    pub async fn connect(
        url: &str,
        name: impl Into<String>,
        durability: impl Into<String>,
    ) -> Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(url)
            .await
            .map_err(|e| PeerError::Unreachable {
                peer: PEER,
                address: url.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            name: name.into(),
            durability: durability.into(),
            js: jetstream::new(client),
            message_ids: false,
        })
    }

    /// Publishes with a unique `Nats-Msg-Id` header on every message, so JetStream tracks
    /// duplicates within the stream's window, as it does for Runnel's events.
    pub fn with_message_ids(mut self) -> Self {
        self.message_ids = true;
        self
    }
}

#[async_trait]
impl Peer for JetStreamPeer {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn durability(&self) -> String {
        self.durability.clone()
    }

    async fn open(&self, groups: &[String]) -> Result<Arc<dyn Topic>> {
        let name = unique_name("bench");
        let stream = self
            .js
            .create_stream(Config {
                name: name.clone(),
                subjects: vec![name.clone()],
                storage: StorageType::File,
                ..Config::default()
            })
            .await
            .map_err(|e| PeerError::request(PEER, "create stream", e))?;
        let mut consumers = Vec::new();
        for group in groups {
            let consumer: PullConsumer = stream
                .create_consumer(pull::Config {
                    durable_name: Some(group.clone()),
                    ack_policy: AckPolicy::Explicit,
                    deliver_policy: DeliverPolicy::All,
                    max_ack_pending: 20_000,
                    ..pull::Config::default()
                })
                .await
                .map_err(|e| PeerError::request(PEER, "create consumer", e))?;
            consumers.push((group.clone(), consumer));
        }
        Ok(Arc::new(JetStreamTopic {
            js: self.js.clone(),
            name,
            consumers,
            message_ids: self.message_ids,
            sent: std::sync::atomic::AtomicU64::new(0),
        }))
    }
}

struct JetStreamTopic {
    js: Context,
    name: String,
    consumers: Vec<(String, PullConsumer)>,
    message_ids: bool,
    /// Messages published, for unique `Nats-Msg-Id`s.
    sent: std::sync::atomic::AtomicU64,
}

#[async_trait]
impl Topic for JetStreamTopic {
    async fn publish(&self, payloads: Vec<Bytes>) -> Result<()> {
        let mut acks = Vec::with_capacity(payloads.len());
        for payload in payloads {
            let sent = if self.message_ids {
                let n = self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("{}-{n}", self.name).as_str());
                self.js
                    .publish_with_headers(self.name.clone(), headers, payload)
                    .await
            } else {
                self.js.publish(self.name.clone(), payload).await
            };
            acks.push(sent.map_err(|e| PeerError::request(PEER, "publish", e))?);
        }
        for ack in acks {
            ack.await
                .map_err(|e| PeerError::request(PEER, "publish ack", e))?;
        }
        Ok(())
    }

    async fn consume(
        &self,
        group: &str,
        count: u64,
        on_event: OnEvent,
        deadline: tokio::time::Instant,
    ) -> Result<u64> {
        let consumer = crate::of_group(PEER, &self.consumers, group)?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(1000)
            .messages()
            .await
            .map_err(|e| PeerError::request(PEER, "consume", e))?;
        let mut done = 0;
        while done < count {
            let next = tokio::time::timeout_at(deadline, messages.next()).await;
            let message = match next {
                Err(_) | Ok(None) => {
                    return Err(PeerError::Timeout {
                        workload: "jetstream consume",
                        done,
                        expected: count,
                    });
                }
                Ok(Some(m)) => m.map_err(|e| PeerError::request(PEER, "consume", e))?,
            };
            on_event(&message.payload);
            message
                .ack()
                .await
                .map_err(|e| PeerError::request(PEER, "ack", e))?;
            done += 1;
        }
        Ok(done)
    }

    async fn close(&self) -> Result<()> {
        self.js
            .delete_stream(&self.name)
            .await
            .map_err(|e| PeerError::request(PEER, "delete stream", e))?;
        Ok(())
    }
}
