//! Which backend stores the events, with what settings: the one place that knows every
//! storage crate.
//!
//! It exists so that the composition root (the `runnel` binary) can turn the storage part of
//! `runnel.toml` into an `Arc<dyn Backend>` and hand it to the server and the stages, which
//! program against the [`Backend`] trait alone and name no storage crate. The settings keep
//! the flat names users write in `runnel.toml` (`backend`, `fsync`, `nats_url`, …); the binary
//! merges them with the server's settings into one file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use runnel_backend::{Backend, BackendError};
use runnel_backend_embedded::{EmbeddedBackend, EmbeddedConfig, FsyncPolicy};
use runnel_backend_jetstream::{Credentials, JetStreamBackend, JetStreamConfig};
use serde::{Deserialize, Serialize};

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

/// The storage settings of `runnel.toml`. Unknown keys are refused by the file that embeds
/// them (the binary's configuration), not here, so that these flatten into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackendSettings {
    /// `embedded` or `jetstream`. Default `embedded`.
    pub backend: BackendKind,
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
}

impl Default for BackendSettings {
    fn default() -> Self {
        Self {
            backend: BackendKind::Embedded,
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_namespace: "runnel".into(),
            nats_replicas: 1,
            nats_user: String::new(),
            nats_password: String::new(),
            nats_token: String::new(),
            nats_creds: String::new(),
            fsync: FsyncSetting::Group,
            fsync_interval_ms: 0,
        }
    }
}

/// A storage setting that cannot be used, with the key it concerns in the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSettings(pub String);

impl BackendSettings {
    /// Checks the rules that span fields or need more than a type.
    pub fn validate(&self) -> Result<(), InvalidSettings> {
        let bad = |m: String| Err(InvalidSettings(m));
        if self.backend != BackendKind::Jetstream {
            return Ok(());
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
        Ok(())
    }

    /// A copy with secrets replaced, for printing and logging.
    pub fn redacted(&self) -> Self {
        let mut copy = self.clone();
        for secret in [&mut copy.nats_password, &mut copy.nats_token] {
            if !secret.is_empty() {
                *secret = "<redacted>".into();
            }
        }
        copy
    }

    /// Opens the configured backend: the embedded one in `data_dir`, or JetStream at
    /// `nats_url`. `dedup_window` is the runtime's, which JetStream's duplicate window follows.
    pub async fn open(
        &self,
        data_dir: &Path,
        dedup_window: Duration,
    ) -> Result<Arc<dyn Backend>, BackendError> {
        match self.backend {
            BackendKind::Embedded => self.open_embedded(data_dir).await,
            BackendKind::Jetstream => self.open_jetstream(dedup_window).await,
        }
    }

    async fn open_embedded(&self, data_dir: &Path) -> Result<Arc<dyn Backend>, BackendError> {
        let fsync = match self.fsync {
            FsyncSetting::Always => FsyncPolicy::Always,
            FsyncSetting::Os => FsyncPolicy::Os,
            FsyncSetting::Group => match FsyncPolicy::group() {
                FsyncPolicy::Group { max_bytes, .. } => FsyncPolicy::Group {
                    interval: Duration::from_millis(self.fsync_interval_ms),
                    max_bytes,
                },
                other => other,
            },
        };
        let backend = EmbeddedBackend::open(EmbeddedConfig {
            fsync,
            ..EmbeddedConfig::new(data_dir)
        })
        .await?;
        Ok(Arc::new(backend))
    }

    async fn open_jetstream(
        &self,
        dedup_window: Duration,
    ) -> Result<Arc<dyn Backend>, BackendError> {
        let credentials = if !self.nats_creds.is_empty() {
            Credentials::CredsFile(self.nats_creds.clone().into())
        } else if !self.nats_token.is_empty() {
            Credentials::Token(self.nats_token.clone())
        } else if !self.nats_user.is_empty() {
            Credentials::UserPassword {
                user: self.nats_user.clone(),
                password: self.nats_password.clone(),
            }
        } else {
            Credentials::None
        };
        let backend = JetStreamBackend::connect(JetStreamConfig {
            credentials,
            namespace: self.nats_namespace.clone(),
            replicas: self.nats_replicas as usize,
            duplicate_window: dedup_window.max(Duration::from_secs(1)),
            ..JetStreamConfig::new(self.nats_url.clone())
        })
        .await?;
        Ok(Arc::new(backend))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jetstream_settings_name_the_key_that_is_wrong() {
        let settings = BackendSettings {
            backend: BackendKind::Jetstream,
            nats_url: "http://127.0.0.1:4222".into(),
            ..BackendSettings::default()
        };
        let error = settings.validate().unwrap_err();
        assert!(error.0.starts_with("nats_url"), "{error}");
        let settings = BackendSettings {
            backend: BackendKind::Jetstream,
            nats_replicas: 7,
            ..BackendSettings::default()
        };
        assert!(settings.validate().unwrap_err().0.contains("nats_replicas"));
        let settings = BackendSettings {
            backend: BackendKind::Jetstream,
            nats_password: "p".into(),
            ..BackendSettings::default()
        };
        assert!(
            settings
                .validate()
                .unwrap_err()
                .0
                .contains("nats_password needs nats_user")
        );
    }

    #[test]
    fn redacted_hides_nats_secrets() {
        let settings = BackendSettings {
            nats_token: "s3cret".into(),
            ..BackendSettings::default()
        };
        assert_eq!(settings.redacted().nats_token, "<redacted>");
        assert_eq!(BackendSettings::default().redacted().nats_token, "");
    }
}
