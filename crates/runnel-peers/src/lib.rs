//! Drivers for the systems Runnel is measured against, and the workloads run on every one.
//!
//! It exists so that `runnel bench compare` puts Runnel beside its peers — NATS JetStream,
//! Redis Streams, RabbitMQ — on the same machine, with the same events, the same
//! concurrency and the same clock, and so that each driver can be tested on its own against
//! the real service. A driver speaks the peer's own client protocol the way its users
//! would (publishes awaited for their acknowledgement or confirm, consumption with explicit
//! acks); nothing here knows Runnel: the binary implements [`Peer`] for Runnel itself.
//!
//! Modules, each for one reason:
//! - `workload`: publish, consume+ack, fixed-rate latency, fan-out and replay over any
//!   [`Peer`], timed the same way for all.
//! - `jetstream`, `redis_streams`, `rabbitmq`: one driver per peer.
//! - `process`: starting private nats-server and redis-server processes (own ports, temporary
//!   directories, chosen fsync settings), killed when dropped.
//!
//! Invariants:
//! - [`Topic::publish`] returns only once every payload of the call is acknowledged by the
//!   peer under the durability the driver's [`Peer::durability`] names.
//! - [`Topic::consume`] hands every payload to its callback and acknowledges it; a clean run
//!   delivers each published payload once per group.
//! - Payloads start with the publish time (µs since the epoch) and a sequence number (see
//!   [`payload`]), which is how latency and counts are measured across processes.

pub mod jetstream;
pub mod process;
pub mod rabbitmq;
pub mod redis_streams;
pub mod workload;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};

/// What went wrong talking to a peer (or running a workload on it).
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer could not be reached or refused the connection; a benchmark reports it as a
    /// skipped row.
    #[error("{peer} unreachable at {address}: {reason}")]
    Unreachable {
        peer: &'static str,
        address: String,
        reason: String,
    },
    /// A request to a connected peer failed.
    #[error("{peer}: {operation}: {reason}")]
    Request {
        peer: &'static str,
        operation: &'static str,
        reason: String,
    },
    /// A helper process (nats-server, redis-server) could not be started.
    #[error("starting {program}: {reason}")]
    Spawn { program: String, reason: String },
    /// A workload did not finish within its deadline.
    #[error("{workload} did not finish before its deadline: {done} of {expected} events")]
    Timeout {
        workload: &'static str,
        done: u64,
        expected: u64,
    },
    /// A payload was too short to carry the publish time and sequence number.
    #[error("payload of {0} bytes is shorter than the 16-byte header")]
    ShortPayload(usize),
    /// An error of a [`Peer`] implemented outside this crate (Runnel itself).
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl PeerError {
    /// A failed request to `peer`.
    pub fn request(peer: &'static str, operation: &'static str, error: impl ToString) -> Self {
        Self::Request {
            peer,
            operation,
            reason: error.to_string(),
        }
    }
}

pub type Result<T, E = PeerError> = std::result::Result<T, E>;

/// What a topic keeps for `group` (its consumer, its queue), from the list made when the topic
/// was opened; a group it was not opened with is an error.
pub(crate) fn of_group<'a, T>(
    peer: &'static str,
    groups: &'a [(String, T)],
    group: &str,
) -> Result<&'a T> {
    groups
        .iter()
        .find(|(g, _)| g == group)
        .map(|(_, t)| t)
        .ok_or_else(|| PeerError::request(peer, "consume", format!("no group {group}")))
}

/// Called with each consumed payload before it is acknowledged.
pub type OnEvent = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// A system under test: opens fresh topics (a stream, queue or key) for each workload.
#[async_trait]
pub trait Peer: Send + Sync {
    /// A short name for tables: `redis-always`, `jetstream-default`, ….
    fn name(&self) -> String;
    /// What an acknowledged publish means for durability, in words for a table.
    fn durability(&self) -> String;
    /// Creates a fresh topic with consumer `groups` that each start at its beginning
    /// (created before anything is published, so fan-out peers route to them).
    async fn open(&self, groups: &[String]) -> Result<Arc<dyn Topic>>;
    /// Why a workload cannot be run on this peer, if it cannot (e.g. replay on a queue that
    /// deletes what is acknowledged).
    fn cannot(&self, _workload: workload::Kind) -> Option<String> {
        None
    }
}

/// One topic of a peer.
#[async_trait]
pub trait Topic: Send + Sync {
    /// Publishes `payloads` (in order, as one batch where the peer has batches) and returns
    /// once every one is acknowledged.
    async fn publish(&self, payloads: Vec<Bytes>) -> Result<()>;
    /// Consumes as group `group` until `count` payloads were handed to `on_event` and
    /// acknowledged, or `deadline` passes (then [`PeerError::Timeout`]).
    async fn consume(
        &self,
        group: &str,
        count: u64,
        on_event: OnEvent,
        deadline: tokio::time::Instant,
    ) -> Result<u64>;
    /// Deletes the topic and what it holds.
    async fn close(&self) -> Result<()>;
}

/// Microseconds since the Unix epoch by the system clock.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A payload of `size` bytes (at least 16): the publish time in µs since the epoch, then
/// `seq`, both big-endian, then filler.
pub fn payload(size: usize, seq: u64) -> Bytes {
    let mut buf = BytesMut::with_capacity(size.max(16));
    buf.put_u64(now_micros());
    buf.put_u64(seq);
    buf.resize(size.max(16), b'x');
    buf.freeze()
}

/// The publish time and sequence number at the start of a payload.
pub fn parse_payload(bytes: &[u8]) -> Result<(u64, u64)> {
    let (Some(time), Some(seq)) = (bytes.get(0..8), bytes.get(8..16)) else {
        return Err(PeerError::ShortPayload(bytes.len()));
    };
    let mut t = [0u8; 8];
    t.copy_from_slice(time);
    let mut s = [0u8; 8];
    s.copy_from_slice(seq);
    Ok((u64::from_be_bytes(t), u64::from_be_bytes(s)))
}

/// A name no other run uses: `prefix` and 12 hex digits of time and process id.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}{:x}{:x}{n}",
        now_micros() & 0xff_ffff_ffff,
        std::process::id()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_carries_time_and_sequence_and_has_the_asked_size() {
        let before = now_micros();
        let p = payload(100, 42);
        assert_eq!(p.len(), 100);
        let (time, seq) = parse_payload(&p).unwrap();
        assert!(time >= before);
        assert_eq!(seq, 42);
        assert!(parse_payload(&p[..10]).is_err());
    }
}
