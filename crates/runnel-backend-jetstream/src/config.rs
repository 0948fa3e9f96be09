//! How the JetStream backend connects and lays out its data: one typed struct, defaults
//! documented on each field.

use std::path::PathBuf;
use std::time::Duration;

use runnel_clock::SharedClock;

/// How the backend authenticates to NATS.
#[derive(Clone, Default)]
pub enum Credentials {
    /// No credentials (or whatever the URL carries, e.g. `nats://user:pass@host`).
    #[default]
    None,
    /// User and password.
    UserPassword { user: String, password: String },
    /// A token.
    Token(String),
    /// A `.creds` file (a JWT and an NKey seed), as issued by `nsc` or Synadia.
    CredsFile(PathBuf),
}

impl std::fmt::Debug for Credentials {
    /// Never prints secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::UserPassword { user, .. } => write!(f, "UserPassword {{ user: {user:?}, .. }}"),
            Self::Token(_) => f.write_str("Token(..)"),
            Self::CredsFile(path) => write!(f, "CredsFile({})", path.display()),
        }
    }
}

/// Configuration of a [`crate::JetStreamBackend`].
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    /// Where NATS listens: `nats://host:port`, or several separated by commas (a cluster's
    /// seed servers). Default `nats://127.0.0.1:4222`.
    pub nats_url: String,
    /// How to authenticate. Default: none.
    pub credentials: Credentials,
    /// Prefix of every JetStream stream, subject and KV bucket this backend uses, so several
    /// Runnel deployments (or tests) share one NATS without seeing each other: partition `p`
    /// of stream `order` is subject `<namespace>.order.<p>`. 1–32 characters of letters,
    /// digits and `-`, a letter first. Default `runnel`.
    pub namespace: String,
    /// Replicas of every JetStream stream and KV bucket the backend creates: 1 on a single
    /// server, 3 (or 5) on a cluster. Applies when a stream or bucket is created; existing
    /// ones keep theirs. Default 1.
    pub replicas: usize,
    /// How long JetStream remembers a record's `Nats-Msg-Id` to drop a second publish of it
    /// (the partition stream's `duplicate_window`). Default 2 minutes, the runtime's default
    /// dedup window.
    pub duplicate_window: Duration,
    /// The record header whose value becomes the message's `Nats-Msg-Id` (the runtime puts
    /// a hash of the event's source and id in `identity`, so two producers reusing ids are
    /// not deduplicated against each other). Records without it get a random id, which still
    /// makes the backend's own retries of an append idempotent. Default `Some("identity")`.
    pub dedup_header: Option<String>,
    /// How long to wait for any reply from NATS (an acknowledgement, an API call). Default 5 s.
    pub request_timeout: Duration,
    /// How often the background task removes expired key-value entries and delete markers.
    /// Default 60 s.
    pub maintenance_interval: Duration,
    /// Source of append timestamps, stream creation times and key-value expiry. Default: the
    /// system clock.
    pub clock: SharedClock,
}

impl JetStreamConfig {
    /// The defaults, connecting to `nats_url`.
    pub fn new(nats_url: impl Into<String>) -> Self {
        Self {
            nats_url: nats_url.into(),
            credentials: Credentials::None,
            namespace: "runnel".into(),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            dedup_header: Some("identity".into()),
            request_timeout: Duration::from_secs(5),
            maintenance_interval: Duration::from_secs(60),
            clock: runnel_clock::system(),
        }
    }
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self::new("nats://127.0.0.1:4222")
    }
}
