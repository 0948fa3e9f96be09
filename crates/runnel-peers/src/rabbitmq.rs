//! RabbitMQ through `lapin` (AMQP 0-9-1): per topic a fanout exchange with one durable queue
//! per group (classic or quorum), persistent messages published on confirm-mode channels
//! and awaited for their confirms, consumers with a prefetch of 1,000 acking each delivery.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::workload::Kind;
use crate::{OnEvent, Peer, PeerError, Result, Topic, unique_name};

const PEER: &str = "rabbitmq";
/// Confirm-mode channels publishes are spread over.
const PUBLISH_CHANNELS: usize = 8;

/// The kind of queue the topics get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    Classic,
    Quorum,
}

impl QueueKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Quorum => "quorum",
        }
    }
}

/// A RabbitMQ broker, reached at one AMQP URI.
pub struct RabbitPeer {
    kind: QueueKind,
    connection: Arc<Connection>,
    channels: Vec<Channel>,
}

impl RabbitPeer {
    /// Connects to `uri` (`amqp://guest:guest@127.0.0.1:5672/%2f`).
    pub async fn connect(uri: &str, kind: QueueKind) -> Result<Self> {
        let unreachable = |reason: String| PeerError::Unreachable {
            peer: PEER,
            address: uri.to_string(),
            reason,
        };
        let connection = tokio::time::timeout(
            std::time::Duration::from_secs(3),
            Connection::connect(uri, ConnectionProperties::default()),
        )
        .await
        .map_err(|_| unreachable("no answer in 3 s".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
        let mut channels = Vec::new();
        for _ in 0..PUBLISH_CHANNELS {
            let channel = connection
                .create_channel()
                .await
                .map_err(|e| PeerError::request(PEER, "create channel", e))?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| PeerError::request(PEER, "confirm select", e))?;
            channels.push(channel);
        }
        Ok(Self {
            kind,
            connection: Arc::new(connection),
            channels,
        })
    }
}

#[async_trait]
impl Peer for RabbitPeer {
    fn name(&self) -> String {
        format!("rabbitmq-{}", self.kind.as_str())
    }

    fn durability(&self) -> String {
        match self.kind {
            QueueKind::Classic => "confirm after fsync (persistent, batched)".into(),
            QueueKind::Quorum => "confirm after fsync of the Raft log (batched)".into(),
        }
    }

    fn cannot(&self, workload: Kind) -> Option<String> {
        (workload == Kind::Replay).then(|| {
            "queues delete acknowledged messages; replay needs RabbitMQ streams (not measured)"
                .into()
        })
    }

    async fn open(&self, groups: &[String]) -> Result<Arc<dyn Topic>> {
        let exchange = unique_name("bench.");
        let channel = &self.channels[0];
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| PeerError::request(PEER, "exchange declare", e))?;
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(self.kind.as_str().into()),
        );
        let mut queues = Vec::new();
        for group in groups {
            let queue = format!("{exchange}.{group}");
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions::durable(),
                    arguments.clone(),
                )
                .await
                .map_err(|e| PeerError::request(PEER, "queue declare", e))?;
            channel
                .queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| PeerError::request(PEER, "queue bind", e))?;
            queues.push((group.clone(), queue));
        }
        Ok(Arc::new(RabbitTopic {
            connection: self.connection.clone(),
            channels: self.channels.clone(),
            next: AtomicUsize::new(0),
            exchange,
            queues,
        }))
    }
}

struct RabbitTopic {
    connection: Arc<Connection>,
    channels: Vec<Channel>,
    next: AtomicUsize,
    exchange: String,
    queues: Vec<(String, String)>,
}

#[async_trait]
impl Topic for RabbitTopic {
    async fn publish(&self, payloads: Vec<Bytes>) -> Result<()> {
        let channel =
            &self.channels[self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len()];
        let mut confirms = Vec::with_capacity(payloads.len());
        for payload in &payloads {
            confirms.push(
                channel
                    .basic_publish(
                        self.exchange.as_str().into(),
                        "".into(),
                        BasicPublishOptions::default(),
                        payload,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .map_err(|e| PeerError::request(PEER, "publish", e))?,
            );
        }
        for confirm in confirms {
            let confirmation = confirm
                .await
                .map_err(|e| PeerError::request(PEER, "confirm", e))?;
            if !confirmation.is_ack() {
                return Err(PeerError::request(PEER, "confirm", "nacked by the broker"));
            }
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
        let queue = crate::of_group(PEER, &self.queues, group)?;
        let channel = self
            .connection
            .create_channel()
            .await
            .map_err(|e| PeerError::request(PEER, "create channel", e))?;
        channel
            .basic_qos(1000, BasicQosOptions::default())
            .await
            .map_err(|e| PeerError::request(PEER, "qos", e))?;
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| PeerError::request(PEER, "consume", e))?;
        let mut done = 0;
        while done < count {
            let delivery = match tokio::time::timeout_at(deadline, consumer.next()).await {
                Err(_) | Ok(None) => {
                    return Err(PeerError::Timeout {
                        workload: "rabbitmq consume",
                        done,
                        expected: count,
                    });
                }
                Ok(Some(d)) => d.map_err(|e| PeerError::request(PEER, "consume", e))?,
            };
            on_event(&delivery.data);
            delivery
                .ack(BasicAckOptions::default())
                .await
                .map_err(|e| PeerError::request(PEER, "ack", e))?;
            done += 1;
        }
        channel
            .close(200, "done".into())
            .await
            .map_err(|e| PeerError::request(PEER, "close channel", e))?;
        Ok(done)
    }

    async fn close(&self) -> Result<()> {
        let channel = &self.channels[0];
        for (_, queue) in &self.queues {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
                .map_err(|e| PeerError::request(PEER, "queue delete", e))?;
        }
        channel
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await
            .map_err(|e| PeerError::request(PEER, "exchange delete", e))
    }
}
