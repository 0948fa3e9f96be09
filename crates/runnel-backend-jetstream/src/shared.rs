//! What every partition and bucket of one backend holds in common: the connection, the
//! clock and the limits learnt at connect.

use std::time::Duration;

use async_nats::jetstream;
use runnel_clock::SharedClock;

use crate::acks::AckInbox;

/// What the partitions and buckets of one backend share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub js: jetstream::Context,
    pub client: async_nats::Client,
    /// Where the acknowledgements of appended records arrive.
    pub acks: AckInbox,
    pub clock: SharedClock,
    pub dedup_header: Option<String>,
    /// The server's largest message, from its `INFO` at connect (servers of one cluster
    /// share their configuration).
    pub max_payload: usize,
    /// How long to wait for any answer (acknowledgement, API reply, fetched batch).
    pub request_timeout: Duration,
    /// How long an append keeps retrying transient failures before giving up.
    pub retry_for: Duration,
}
