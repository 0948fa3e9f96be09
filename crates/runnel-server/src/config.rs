//! The server's configuration: one typed struct, each field with its default and the checks
//! that span fields.
//!
//! The binary reads it from `runnel.toml`, `RUNNEL_*` variables and flags (layered in that
//! order, beside the storage settings it owns) and hands it over with an open backend; the
//! server never reads a file or the environment itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::auth::Scope;

/// One API key and what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// A name for logs (never the key itself).
    pub name: String,
    /// The secret sent as `Authorization: Bearer <key>`; at least 16 characters.
    pub key: String,
    /// `publish:<stream pattern>`, `consume:<group pattern>` or `admin` (everything); a
    /// pattern may use `*` for any run of characters.
    pub scopes: Vec<Scope>,
}

/// Everything `runnel serve` can be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8717`. Without API keys only a loopback
    /// address is accepted; with keys, another address needs `tls_cert` and `tls_key` (or
    /// `allow_plaintext`).
    pub bind: SocketAddr,
    /// Data directory: the embedded backend's storage, and this server's id (`server-id`)
    /// on every backend. Default `./runnel-data`.
    pub data_dir: PathBuf,
    /// Largest request body, in bytes; a larger one is answered 413. Default 8 MiB.
    pub max_body_bytes: usize,
    /// Largest event, in bytes of its stored (binary) form; a larger one is answered 413.
    /// Default 1 MiB.
    pub max_event_bytes: usize,
    /// Partitions of a stream created by its first publish. Default 4.
    pub default_partitions: u32,
    /// Refuse to publish event types that have no schema in the registry. Default false
    /// (types without a schema pass unchecked; types with one are always validated).
    pub require_schema: bool,
    /// A publish repeating an event id seen this many seconds ago or less appends nothing and
    /// answers with the first position (`duplicate: true`). Default 120.
    pub dedup_window_secs: u64,
    /// Most messages one pull returns (a larger `max` is lowered to this). Default 1000.
    pub max_pull_messages: usize,
    /// Longest a pull waits for a first message, in ms (a larger `wait_ms` is lowered to
    /// this). Default 30000.
    pub max_pull_wait_ms: u64,
    /// A group's consumer that nobody pulled from for this many seconds is stopped (its
    /// partitions released, its unacknowledged receipts lapse). Default 300.
    pub consumer_idle_secs: u64,
    /// On SIGTERM/SIGINT, how long requests in flight may take to finish, in seconds.
    /// Default 30.
    pub shutdown_grace_secs: u64,
    /// API keys. Default none: then only a loopback `bind` is allowed and nothing is checked.
    pub api_keys: Vec<ApiKeyConfig>,
    /// PEM file with the server's certificate, then the certificates of its chain. With
    /// `tls_key`, the server speaks HTTPS only. Default none (empty): plain HTTP. A relative
    /// path is taken from the working directory.
    pub tls_cert: PathBuf,
    /// PEM file with the private key of `tls_cert` (PKCS#8, PKCS#1 or SEC1). Default none.
    pub tls_key: PathBuf,
    /// With TLS: check `tls_cert` and `tls_key` for new contents every this many seconds and
    /// serve them when they changed (SIGHUP reloads at once). 0: only on SIGHUP. Default 5.
    pub tls_reload_secs: u64,
    /// Serve plain HTTP on a non-loopback `bind` even though API keys then cross the network
    /// in clear (say, behind a TLS-terminating proxy on a trusted network). Default false:
    /// such a `bind` needs `tls_cert` and `tls_key`.
    pub allow_plaintext: bool,
    /// Keep the correlation index behind `GET /v1/trace/{id}` and `runnel trace`: the
    /// consumer group `trace-index` (filter `>`) writes one key-value entry per event, off the
    /// publish path. Default true.
    pub trace_index: bool,
    /// Days an entry of the correlation index is kept. Default 7.
    pub trace_retention_days: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8717)),
            data_dir: PathBuf::from("./runnel-data"),
            max_body_bytes: 8 << 20,
            max_event_bytes: 1 << 20,
            default_partitions: 4,
            require_schema: false,
            dedup_window_secs: 120,
            max_pull_messages: 1000,
            max_pull_wait_ms: 30_000,
            consumer_idle_secs: 300,
            shutdown_grace_secs: 30,
            api_keys: Vec::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            tls_reload_secs: 5,
            allow_plaintext: false,
            trace_index: true,
            trace_retention_days: 7,
        }
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// `tls_cert` or `tls_key` cannot be served.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

impl ServerConfig {
    /// Checks the rules that span fields or need more than a type.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.api_keys.is_empty() && !self.bind.ip().is_loopback() {
            return bad(format!(
                "refusing to listen on {} without API keys: anyone who can reach it could \
                 publish, consume and purge. Add [[api_keys]] to runnel.toml (or \
                 RUNNEL_API_KEYS), or bind a loopback address such as 127.0.0.1",
                self.bind
            ));
        }
        match (
            self.tls_cert.as_os_str().is_empty(),
            self.tls_key.as_os_str().is_empty(),
        ) {
            (false, true) => return bad("tls_cert is set but tls_key is not: set both".into()),
            (true, false) => return bad("tls_key is set but tls_cert is not: set both".into()),
            _ => {}
        }
        if !self.bind.ip().is_loopback() && self.tls_files().is_none() && !self.allow_plaintext {
            return bad(format!(
                "refusing to listen on {} over plain HTTP: API keys would cross the network \
                 in clear. Set tls_cert and tls_key (PEM files) to serve HTTPS, or set \
                 allow_plaintext = true if that is intended (say, behind a TLS-terminating \
                 proxy)",
                self.bind
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for key in &self.api_keys {
            if key.key.len() < 16 {
                return bad(format!(
                    "API key `{}` is shorter than 16 characters",
                    key.name
                ));
            }
            if !seen.insert(&key.key) {
                return bad(format!(
                    "API key `{}` repeats another key's secret",
                    key.name
                ));
            }
            if key.scopes.is_empty() {
                return bad(format!("API key `{}` has no scopes", key.name));
            }
        }
        if self.max_body_bytes < 1024 {
            return bad("max_body_bytes must be at least 1024".into());
        }
        if self.max_event_bytes == 0 {
            return bad("max_event_bytes must be at least 1".into());
        }
        if !(1..=runnel_backend::MAX_PARTITIONS).contains(&self.default_partitions) {
            return bad(format!(
                "default_partitions must be 1 to {}, got {}",
                runnel_backend::MAX_PARTITIONS,
                self.default_partitions
            ));
        }
        if self.max_pull_messages == 0 {
            return bad("max_pull_messages must be at least 1".into());
        }
        Ok(())
    }

    /// The certificate and key files, when TLS is configured.
    pub fn tls_files(&self) -> Option<(&Path, &Path)> {
        if self.tls_cert.as_os_str().is_empty() || self.tls_key.as_os_str().is_empty() {
            None
        } else {
            Some((&self.tls_cert, &self.tls_key))
        }
    }

    /// A copy with API key secrets replaced, for printing and logging.
    pub fn redacted(&self) -> Self {
        let mut copy = self.clone();
        for key in &mut copy.api_keys {
            key.key = "<redacted>".into();
        }
        copy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_without_keys_is_refused() {
        let config = ServerConfig {
            bind: "0.0.0.0:8717".parse().unwrap(),
            ..ServerConfig::default()
        };
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("without API keys"), "{err}");
        let with_key = ServerConfig {
            api_keys: admin_key(),
            allow_plaintext: true,
            ..config
        };
        with_key.validate().unwrap();
        assert!(ServerConfig::default().validate().is_ok());
    }

    fn admin_key() -> Vec<ApiKeyConfig> {
        vec![ApiKeyConfig {
            name: "ops".into(),
            key: "0123456789abcdef".into(),
            scopes: vec![Scope::Admin],
        }]
    }

    #[test]
    fn non_loopback_with_keys_needs_tls_or_allow_plaintext() {
        let plain = ServerConfig {
            bind: "0.0.0.0:8717".parse().unwrap(),
            api_keys: admin_key(),
            ..ServerConfig::default()
        };
        let err = plain.validate().unwrap_err().to_string();
        for named in ["tls_cert", "tls_key", "allow_plaintext"] {
            assert!(err.contains(named), "{err}");
        }
        let tls = ServerConfig {
            tls_cert: "cert.pem".into(),
            tls_key: "key.pem".into(),
            ..plain.clone()
        };
        tls.validate().unwrap();
        assert_eq!(
            tls.tls_files(),
            Some((Path::new("cert.pem"), Path::new("key.pem")))
        );
        let on_purpose = ServerConfig {
            allow_plaintext: true,
            ..plain.clone()
        };
        on_purpose.validate().unwrap();
        let loopback = ServerConfig {
            bind: "127.0.0.1:8717".parse().unwrap(),
            ..plain
        };
        loopback.validate().unwrap();
        assert_eq!(loopback.tls_files(), None);
    }

    #[test]
    fn a_certificate_without_its_key_is_refused() {
        let err = ServerConfig {
            tls_cert: "cert.pem".into(),
            ..ServerConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("tls_key is not"), "{err}");
        let err = ServerConfig {
            tls_key: "key.pem".into(),
            ..ServerConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("tls_cert is not"), "{err}");
    }

    #[test]
    fn a_default_partition_count_no_stream_can_have_is_refused() {
        let err = ServerConfig {
            default_partitions: 4_000_000_000,
            ..ServerConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("default_partitions must be 1 to 1024"),
            "{err}"
        );
    }
}
