//! The server's configuration: one typed struct, each field with its default, layered
//! defaults → `runnel.toml` → `RUNNEL_*` environment variables → command-line flags.
//!
//! It exists so that every way of setting a value goes through the same names and the same
//! checks: the file uses the field names, the environment the same names upper-cased behind
//! `RUNNEL_` (`bind` ← `RUNNEL_BIND`, `max_body_bytes` ← `RUNNEL_MAX_BODY_BYTES`), and the
//! binary's flags overwrite fields after both. `runnel config show` prints the result.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::Scope;

/// When a publish is acknowledged relative to `fdatasync` (see `docs/log-format.md` for what
/// each loses on power failure).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncSetting {
    /// Every append is synced on its own.
    Always,
    /// Group commit: concurrent appends share one sync; each is acknowledged after it. (Default.)
    #[default]
    Group,
    /// Written to the operating system, never synced.
    Os,
}

/// Which engine stores the events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The log and metadata store in `data_dir`, in this process. (Default.)
    #[default]
    Embedded,
    /// A NATS JetStream server or cluster at `nats_url` (see `docs/jetstream.md`); several
    /// servers on one JetStream share consumer groups.
    Jetstream,
}

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
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8717`. Without API keys only a loopback
    /// address is accepted.
    pub bind: SocketAddr,
    /// `embedded` or `jetstream`. Default `embedded`.
    pub backend: BackendKind,
    /// Directory of the embedded backend. Default `./runnel-data`.
    pub data_dir: PathBuf,
    /// With `jetstream`: the NATS server(s), comma-separated. Default `nats://127.0.0.1:4222`.
    pub nats_url: String,
    /// With `jetstream`: prefix of every JetStream stream, subject and KV bucket, so several
    /// deployments share one NATS. Servers that should share groups use the same one.
    /// Default `runnel`.
    pub nats_namespace: String,
    /// With `jetstream`: replicas of the streams and buckets Runnel creates (1 on one server,
    /// 3 or 5 on a cluster). Default 1.
    pub nats_replicas: u32,
    /// With `jetstream`: user name (with `nats_password`). Default none.
    pub nats_user: String,
    /// With `jetstream`: password for `nats_user`. Default none.
    pub nats_password: String,
    /// With `jetstream`: an authentication token. Default none.
    pub nats_token: String,
    /// With `jetstream`: a `.creds` file (JWT and NKey seed). Default none.
    pub nats_creds: String,
    /// `always`, `group` or `os`. Default `group`.
    pub fsync: FsyncSetting,
    /// With `group`: how long a sync waits for more appends, in ms. Default 0 (back to back).
    pub fsync_interval_ms: u64,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8717)),
            backend: BackendKind::Embedded,
            data_dir: PathBuf::from("./runnel-data"),
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_namespace: "runnel".into(),
            nats_replicas: 1,
            nats_user: String::new(),
            nats_password: String::new(),
            nats_token: String::new(),
            nats_creds: String::new(),
            fsync: FsyncSetting::Group,
            fsync_interval_ms: 0,
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
}

/// Why `backend = "jetstream"` is refused by a build without the cargo feature `jetstream`.
pub(crate) const NO_JETSTREAM: &str = "backend = \"jetstream\": this build of Runnel has no \
     JetStream backend (rebuild with the cargo feature `jetstream`)";

/// Environment variables starting with this prefix may set a field.
pub const ENV_PREFIX: &str = "RUNNEL_";

/// The file read when no path is given, if it exists.
pub const DEFAULT_FILE: &str = "runnel.toml";

impl ServerConfig {
    /// Defaults, then the file (`path`, or `runnel.toml` in the working directory if it exists),
    /// then the environment variables (`RUNNEL_<FIELD>`; others starting with `RUNNEL_` are
    /// left alone, they belong to other parts of Runnel). Not yet validated: flags come next.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let file = match path {
            Some(path) => Some(read_file(path)?),
            None => {
                let default = Path::new(DEFAULT_FILE);
                if default.exists() {
                    Some(read_file(default)?)
                } else {
                    None
                }
            }
        };
        Self::layered(file.as_ref().map(|(p, t)| (p.as_path(), t.as_str())), env)
    }

    /// Defaults, then a file's text, then environment variables.
    pub fn layered(
        file: Option<(&Path, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let defaults = toml::Table::try_from(Self::default())
            .map_err(|e| ConfigError::Invalid(format!("defaults: {e}")))?;
        let mut table = defaults.clone();
        if let Some((path, text)) = file {
            let from_file: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::File {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    })?;
            for (key, value) in from_file {
                table.insert(key, value);
            }
            // Typed check now, so a bad file is blamed on the file and not on a variable.
            toml::Value::Table(table.clone())
                .try_into::<Self>()
                .map_err(|e| ConfigError::File {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
        }
        let mut env: Vec<(String, String)> = env.into_iter().collect();
        env.sort();
        for (var, raw) in env {
            let Some(name) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let field = name.to_ascii_lowercase();
            let Some(default) = defaults.get(&field) else {
                continue;
            };
            let value = env_value(default, &raw).map_err(|message| ConfigError::Env {
                var: var.clone(),
                message,
            })?;
            table.insert(field, value);
            toml::Value::Table(table.clone())
                .try_into::<Self>()
                .map_err(|e| ConfigError::Env {
                    var: var.clone(),
                    message: e.to_string(),
                })?;
        }
        toml::Value::Table(table)
            .try_into::<Self>()
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }

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
        let max_partitions = runnel_backend_embedded::MAX_PARTITIONS;
        if !(1..=max_partitions).contains(&self.default_partitions) {
            return bad(format!(
                "default_partitions must be 1 to {max_partitions}, got {}",
                self.default_partitions
            ));
        }
        if self.max_pull_messages == 0 {
            return bad("max_pull_messages must be at least 1".into());
        }
        if self.backend == BackendKind::Jetstream {
            if !cfg!(feature = "jetstream") {
                return bad(NO_JETSTREAM.into());
            }
            if self.nats_url.trim().is_empty() {
                return bad("backend = \"jetstream\" needs nats_url".into());
            }
            for url in self.nats_url.split(',') {
                if let Some((scheme, _)) = url.trim().split_once("://")
                    && !["nats", "tls", "ws", "wss"].contains(&scheme)
                {
                    return bad(format!(
                        "nats_url `{url}`: a NATS URL is nats://, tls://, ws:// or wss:// \
                         (or host:port)"
                    ));
                }
            }
            #[cfg(feature = "jetstream")]
            if let Err(error) = runnel_backend_jetstream::validate_namespace(&self.nats_namespace) {
                return bad(format!("nats_namespace: {error}"));
            }
            if !(1..=5).contains(&self.nats_replicas) {
                return bad(format!(
                    "nats_replicas must be 1 to 5 (JetStream's limit), got {}",
                    self.nats_replicas
                ));
            }
            let methods = [
                !self.nats_user.is_empty(),
                !self.nats_token.is_empty(),
                !self.nats_creds.is_empty(),
            ];
            if methods.iter().filter(|set| **set).count() > 1 {
                return bad(
                    "give one of nats_user (with nats_password), nats_token or nats_creds".into(),
                );
            }
            if !self.nats_password.is_empty() && self.nats_user.is_empty() {
                return bad("nats_password needs nats_user".into());
            }
        }
        Ok(())
    }

    /// A copy with API key secrets replaced, for printing and logging.
    pub fn redacted(&self) -> Self {
        let mut copy = self.clone();
        for key in &mut copy.api_keys {
            key.key = "<redacted>".into();
        }
        for secret in [&mut copy.nats_password, &mut copy.nats_token] {
            if !secret.is_empty() {
                *secret = "<redacted>".into();
            }
        }
        copy
    }

    /// The effective values as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    pub fn fsync_interval(&self) -> Duration {
        Duration::from_millis(self.fsync_interval_ms)
    }
}

fn read_file(path: &Path) -> Result<(PathBuf, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((path.to_path_buf(), text))
}

/// An environment value read as the kind of value the field's default is: strings as they
/// are, numbers and booleans parsed, lists and tables as TOML (`[{name = "ci", ...}]`).
fn env_value(default: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    match default {
        toml::Value::String(_) => Ok(toml::Value::String(raw.to_string())),
        toml::Value::Integer(_) => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("expected a whole number, got `{raw}`")),
        toml::Value::Boolean(_) => match raw.trim() {
            "true" | "1" | "yes" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("expected true or false, got `{raw}`")),
        },
        _ => {
            let table: toml::Table = format!("value = {raw}")
                .parse()
                .map_err(|e: toml::de::Error| format!("expected a TOML value: {e}"))?;
            table
                .get("value")
                .cloned()
                .ok_or_else(|| "expected a TOML value".to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_then_file_then_environment() {
        let file = "bind = \"127.0.0.1:9000\"\nmax_body_bytes = 2048\ndefault_partitions = 8\n";
        let config = ServerConfig::layered(
            Some((Path::new("runnel.toml"), file)),
            env(&[
                ("RUNNEL_MAX_BODY_BYTES", "4096"),
                ("RUNNEL_LOG", "debug"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(config.bind, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.max_body_bytes, 4096, "environment beats the file");
        assert_eq!(config.default_partitions, 8, "file beats the default");
        assert_eq!(config.max_pull_wait_ms, 30_000, "default kept");
    }

    #[test]
    fn api_keys_come_from_the_file_or_the_environment() {
        let file = "[[api_keys]]\nname = \"ci\"\nkey = \"0123456789abcdef\"\nscopes = [\"publish:order*\", \"admin\"]\n";
        let config =
            ServerConfig::layered(Some((Path::new("runnel.toml"), file)), env(&[])).unwrap();
        assert_eq!(config.api_keys.len(), 1);
        assert_eq!(config.api_keys[0].scopes.len(), 2);
        let config = ServerConfig::layered(
            None,
            env(&[(
                "RUNNEL_API_KEYS",
                "[{name = \"x\", key = \"fedcba9876543210\", scopes = [\"consume:*\"]}]",
            )]),
        )
        .unwrap();
        assert_eq!(config.api_keys[0].name, "x");
    }

    #[test]
    fn bad_values_name_their_source() {
        let err = ServerConfig::layered(Some((Path::new("runnel.toml"), "bind = 12\n")), env(&[]))
            .unwrap_err();
        assert!(matches!(err, ConfigError::File { .. }), "{err}");
        let err = ServerConfig::layered(
            Some((Path::new("runnel.toml"), "no_such_field = 1\n")),
            env(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("no_such_field"), "{err}");
        let err =
            ServerConfig::layered(None, env(&[("RUNNEL_MAX_BODY_BYTES", "lots")])).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Env { var, .. } if var == "RUNNEL_MAX_BODY_BYTES"),
            "{err}"
        );
        let err = ServerConfig::layered(
            None,
            env(&[(
                "RUNNEL_API_KEYS",
                "[{name = \"x\", key = \"fedcba9876543210\", scopes = [\"root\"]}]",
            )]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("root"), "{err}");
    }

    #[test]
    fn the_jetstream_backend_is_chosen_and_checked_from_file_or_environment() {
        let file =
            "backend = \"jetstream\"\nnats_url = \"nats://10.0.0.1:4222\"\nnats_replicas = 3\n";
        let config = ServerConfig::layered(
            Some((Path::new("runnel.toml"), file)),
            env(&[
                ("RUNNEL_NATS_NAMESPACE", "prod"),
                ("RUNNEL_NATS_USER", "runnel"),
                ("RUNNEL_NATS_PASSWORD", "s3cret-password"),
            ]),
        )
        .unwrap();
        assert_eq!(config.backend, BackendKind::Jetstream);
        assert_eq!(config.nats_url, "nats://10.0.0.1:4222");
        assert_eq!(
            (config.nats_replicas, config.nats_namespace.as_str()),
            (3, "prod")
        );
        config.validate().unwrap();
        let shown = config.redacted().to_toml();
        assert!(!shown.contains("s3cret-password"), "{shown}");
        assert!(shown.contains("nats_user = \"runnel\""), "{shown}");

        let bad = |config: ServerConfig, expected: &str| {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        };
        bad(
            ServerConfig {
                nats_replicas: 7,
                ..config.clone()
            },
            "nats_replicas",
        );
        bad(
            ServerConfig {
                nats_token: "tok".into(),
                ..config.clone()
            },
            "one of",
        );
        bad(
            ServerConfig {
                nats_user: String::new(),
                ..config.clone()
            },
            "nats_password needs nats_user",
        );
        bad(
            ServerConfig {
                nats_url: "http://127.0.0.1:4222".into(),
                ..config.clone()
            },
            "nats://",
        );
        #[cfg(feature = "jetstream")]
        bad(
            ServerConfig {
                nats_namespace: "a_b".into(),
                ..config.clone()
            },
            "nats_namespace",
        );
        ServerConfig {
            nats_url: "nats://a:4222,tls://b:4222".into(),
            ..config.clone()
        }
        .validate()
        .unwrap();
        let err = ServerConfig::layered(None, env(&[("RUNNEL_BACKEND", "kafka")])).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Env { var, .. } if var == "RUNNEL_BACKEND"),
            "{err}"
        );
    }

    #[test]
    fn non_loopback_without_keys_is_refused() {
        let config = ServerConfig {
            bind: "0.0.0.0:8717".parse().unwrap(),
            ..ServerConfig::default()
        };
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("without API keys"), "{err}");
        let with_key = ServerConfig {
            api_keys: vec![ApiKeyConfig {
                name: "ops".into(),
                key: "0123456789abcdef".into(),
                scopes: vec![Scope::Admin],
            }],
            ..config
        };
        with_key.validate().unwrap();
        assert!(ServerConfig::default().validate().is_ok());
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

    #[test]
    fn show_redacts_secrets_and_round_trips() {
        let config = ServerConfig {
            api_keys: vec![ApiKeyConfig {
                name: "ops".into(),
                key: "0123456789abcdef".into(),
                scopes: vec![Scope::Admin],
            }],
            ..ServerConfig::default()
        };
        let text = config.redacted().to_toml();
        assert!(!text.contains("0123456789abcdef"));
        let back = ServerConfig::layered(Some((Path::new("x"), &text)), env(&[])).unwrap();
        assert_eq!(back.bind, config.bind);
    }
}
