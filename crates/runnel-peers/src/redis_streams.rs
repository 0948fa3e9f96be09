//! Redis Streams through the `redis` crate: one stream key per topic, `XADD` (pipelined for a
//! batch), consumer groups created at the start of the stream, `XREADGROUP` of up to 1,000
//! entries and one `XACK` of all of them. Consumers get a connection of their own, because
//! a blocking read holds its connection.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;

use crate::{OnEvent, Peer, PeerError, Result, Topic, unique_name};

const PEER: &str = "redis";

/// A Redis server, reached at one URL.
pub struct RedisPeer {
    name: String,
    durability: String,
    client: redis::Client,
    connection: MultiplexedConnection,
}

impl RedisPeer {
    /// Connects to `url` (`redis://127.0.0.1:6379`); `name` and `durability` label its rows.
    pub async fn connect(
        url: &str,
        name: impl Into<String>,
        durability: impl Into<String>,
    ) -> Result<Self> {
        let unreachable = |e: redis::RedisError| PeerError::Unreachable {
            peer: PEER,
            address: url.to_string(),
            reason: e.to_string(),
        };
        let client = redis::Client::open(url).map_err(unreachable)?;
        let connection = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| PeerError::Unreachable {
            peer: PEER,
            address: url.to_string(),
            reason: "no answer in 2 s".into(),
        })?
        .map_err(unreachable)?;
        Ok(Self {
            name: name.into(),
            durability: durability.into(),
            client,
            connection,
        })
    }

    /// The server's `appendonly` and `appendfsync` settings, as `CONFIG GET` reports them.
    pub async fn persistence(&self) -> Result<(String, String)> {
        let mut c = self.connection.clone();
        let get = |key: &'static str| redis::cmd("CONFIG").arg("GET").arg(key).clone();
        let ao: Vec<String> = get("appendonly")
            .query_async(&mut c)
            .await
            .map_err(|e| PeerError::request(PEER, "config get", e))?;
        let fs: Vec<String> = get("appendfsync")
            .query_async(&mut c)
            .await
            .map_err(|e| PeerError::request(PEER, "config get", e))?;
        Ok((
            ao.get(1).cloned().unwrap_or_default(),
            fs.get(1).cloned().unwrap_or_default(),
        ))
    }
}

#[async_trait]
impl Peer for RedisPeer {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn durability(&self) -> String {
        self.durability.clone()
    }

    async fn open(&self, groups: &[String]) -> Result<Arc<dyn Topic>> {
        let key = unique_name("bench:");
        let mut c = self.connection.clone();
        for group in groups {
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&key)
                .arg(group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async::<()>(&mut c)
                .await
                .map_err(|e| PeerError::request(PEER, "xgroup create", e))?;
        }
        Ok(Arc::new(RedisTopic {
            client: self.client.clone(),
            connection: self.connection.clone(),
            key,
        }))
    }
}

struct RedisTopic {
    client: redis::Client,
    connection: MultiplexedConnection,
    key: String,
}

#[async_trait]
impl Topic for RedisTopic {
    async fn publish(&self, payloads: Vec<Bytes>) -> Result<()> {
        let mut c = self.connection.clone();
        let mut pipe = redis::pipe();
        for payload in &payloads {
            pipe.cmd("XADD")
                .arg(&self.key)
                .arg("*")
                .arg("p")
                .arg(&payload[..]);
        }
        pipe.query_async::<()>(&mut c)
            .await
            .map_err(|e| PeerError::request(PEER, "xadd", e))
    }

    async fn consume(
        &self,
        group: &str,
        count: u64,
        on_event: OnEvent,
        deadline: tokio::time::Instant,
    ) -> Result<u64> {
        let mut c = self
            .client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| PeerError::request(PEER, "connect consumer", e))?;
        let mut done = 0;
        while done < count {
            if tokio::time::Instant::now() > deadline {
                return Err(PeerError::Timeout {
                    workload: "redis consume",
                    done,
                    expected: count,
                });
            }
            let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(group)
                .arg("c1")
                .arg("COUNT")
                .arg(1000)
                .arg("BLOCK")
                .arg(50)
                .arg("STREAMS")
                .arg(&self.key)
                .arg(">")
                .query_async(&mut c)
                .await
                .map_err(|e| PeerError::request(PEER, "xreadgroup", e))?;
            let Some(reply) = reply else { continue };
            let mut ack = redis::cmd("XACK");
            ack.arg(&self.key).arg(group);
            let mut read = 0;
            for entry in reply.keys.iter().flat_map(|k| k.ids.iter()) {
                if let Some(redis::Value::BulkString(bytes)) = entry.map.get("p") {
                    on_event(bytes);
                }
                ack.arg(&entry.id);
                read += 1;
            }
            if read > 0 {
                ack.query_async::<()>(&mut c)
                    .await
                    .map_err(|e| PeerError::request(PEER, "xack", e))?;
                done += read;
            }
        }
        Ok(done)
    }

    async fn close(&self) -> Result<()> {
        let mut c = self.connection.clone();
        redis::cmd("DEL")
            .arg(&self.key)
            .query_async::<()>(&mut c)
            .await
            .map_err(|e| PeerError::request(PEER, "del", e))
    }
}
