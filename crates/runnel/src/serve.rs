//! `runnel serve` and `runnel config show`: the HTTP server with its layered configuration.
//!
//! The flags here are the last layer (defaults → `runnel.toml` → `RUNNEL_*` → flags); both
//! subcommands take the same ones, so `config show` prints exactly what `serve` would use.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use runnel_backends::{BackendKind, FsyncSetting};

use crate::config::RunnelConfig;

/// Configuration flags shared by `serve` and `config show`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Configuration file (default: `runnel.toml` in the working directory, if present).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address to listen on [config: bind; default 127.0.0.1:8717].
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
    /// Where events are stored: `embedded` (this process, in --data-dir) or `jetstream`
    /// (a NATS JetStream server or cluster at --nats-url) [config: backend; default embedded].
    #[arg(long, value_enum)]
    pub backend: Option<BackendFlag>,
    /// Data directory of the embedded backend [config: data_dir; default ./runnel-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// NATS server(s) of the JetStream backend, comma-separated [config: nats_url; default
    /// nats://127.0.0.1:4222]. Credentials: nats_user/nats_password, nats_token or nats_creds
    /// in runnel.toml or RUNNEL_NATS_* variables.
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
    /// Prefix of the JetStream streams and KV buckets; servers sharing groups use the same
    /// [config: nats_namespace; default runnel].
    #[arg(long, value_name = "NAME")]
    pub nats_namespace: Option<String>,
    /// Replicas of the JetStream streams and buckets Runnel creates (3 on a cluster)
    /// [config: nats_replicas; default 1].
    #[arg(long, value_name = "N")]
    pub nats_replicas: Option<u32>,
    /// When publishes are acknowledged relative to fdatasync [config: fsync; default group].
    #[arg(long, value_enum)]
    pub fsync: Option<FsyncFlag>,
    /// Largest request body in bytes [config: max_body_bytes; default 8 MiB].
    #[arg(long, value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Largest event in bytes [config: max_event_bytes; default 1 MiB].
    #[arg(long, value_name = "BYTES")]
    pub max_event_bytes: Option<usize>,
    /// Partitions of streams created by their first publish, 1 to 1024 (default 4) [config:
    /// default_partitions].
    #[arg(long, value_name = "N")]
    pub default_partitions: Option<u32>,
    /// Refuse event types without a registered schema [config: require_schema].
    #[arg(long)]
    pub require_schema: bool,
    /// Serve HTTPS with this PEM certificate chain (server certificate first); needs
    /// --tls-key. Reloaded on SIGHUP and when the files change [config: tls_cert].
    #[arg(long, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert [config: tls_key].
    #[arg(long, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback --bind with API keys, on purpose (say, behind a
    /// TLS-terminating proxy) [config: allow_plaintext].
    #[arg(long)]
    pub allow_plaintext: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BackendFlag {
    /// The durable log and metadata store in --data-dir, in this process.
    Embedded,
    /// NATS JetStream (see docs/jetstream.md).
    Jetstream,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FsyncFlag {
    /// fdatasync before every append returns.
    Always,
    /// Group commit: concurrent appends share one fdatasync.
    Group,
    /// No fdatasync.
    Os,
}

impl ConfigArgs {
    /// Defaults → file → environment → these flags, validated.
    pub fn effective(&self) -> Result<RunnelConfig, runnel_server::ConfigError> {
        let mut config = RunnelConfig::load(self.config.as_deref(), std::env::vars())?;
        if let Some(bind) = self.bind {
            config.server.bind = bind;
        }
        if let Some(backend) = self.backend {
            config.storage.backend = match backend {
                BackendFlag::Embedded => BackendKind::Embedded,
                BackendFlag::Jetstream => BackendKind::Jetstream,
            };
        }
        if let Some(dir) = &self.data_dir {
            config.server.data_dir = dir.clone();
        }
        if let Some(url) = &self.nats_url {
            config.storage.nats_url = url.clone();
        }
        if let Some(namespace) = &self.nats_namespace {
            config.storage.nats_namespace = namespace.clone();
        }
        if let Some(replicas) = self.nats_replicas {
            config.storage.nats_replicas = replicas;
        }
        if let Some(fsync) = self.fsync {
            config.storage.fsync = match fsync {
                FsyncFlag::Always => FsyncSetting::Always,
                FsyncFlag::Group => FsyncSetting::Group,
                FsyncFlag::Os => FsyncSetting::Os,
            };
        }
        if let Some(n) = self.max_body_bytes {
            config.server.max_body_bytes = n;
        }
        if let Some(n) = self.max_event_bytes {
            config.server.max_event_bytes = n;
        }
        if let Some(n) = self.default_partitions {
            config.server.default_partitions = n;
        }
        if self.require_schema {
            config.server.require_schema = true;
        }
        if let Some(path) = &self.tls_cert {
            config.server.tls_cert = path.clone();
        }
        if let Some(path) = &self.tls_key {
            config.server.tls_key = path.clone();
        }
        if self.allow_plaintext {
            config.server.allow_plaintext = true;
        }
        config.validate()?;
        Ok(config)
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print JSON instead of TOML.
    #[arg(long)]
    pub json: bool,
}

/// Runs the server until SIGTERM or SIGINT, then stops gracefully and exits; SIGHUP reloads
/// the TLS certificate and every model, and a changed ONNX file its model.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config.effective()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let server = config.bind().await?;
        let addr = server.local_addr()?;
        // Watched before the first line is out, so a SIGHUP from then on never ends the
        // process.
        let reloads = watch_sighup(server.tls().cloned(), server.app().models().clone());
        let model_files = tokio::spawn(watch_model_files(
            server.app().models().clone(),
            MODEL_FILE_CHECK_EVERY,
        ));
        // The first line on stdout says where to connect (tests with port 0 read it).
        println!("runnel listening on {}://{addr}", server.scheme());
        use std::io::Write;
        std::io::stdout().flush().ok();
        tracing::info!(%addr, "listening");
        let served = server.run(shutdown_signal()).await;
        if let Some(reloads) = reloads {
            reloads.abort();
        }
        model_files.abort();
        served?;
        Ok(())
    })
}

/// From now on, on every SIGHUP: reloads the TLS certificate and key (a bad pair is logged and
/// the certificate in use stays), and every `[[models]]` model (see [`reload_models`]).
fn watch_sighup(
    tls: Option<runnel_server::TlsReloader>,
    models: runnel_server::models::Models,
) -> Option<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(hangups) => Some(tokio::spawn(reload_on_sighup(hangups, tls, models))),
        Err(error) => {
            tracing::error!(%error, "cannot watch SIGHUP; TLS reloads only when the files change");
            None
        }
    }
}

async fn reload_on_sighup(
    mut hangups: tokio::signal::unix::Signal,
    tls: Option<runnel_server::TlsReloader>,
    models: runnel_server::models::Models,
) {
    while hangups.recv().await.is_some() {
        reload_models(&models).await;
        let Some(tls) = tls.clone() else {
            tracing::info!("SIGHUP: no TLS configured, nothing else to reload");
            continue;
        };
        match tokio::task::spawn_blocking(move || tls.reload()).await {
            Ok(Ok(())) => tracing::info!("SIGHUP: TLS certificate reloaded"),
            Ok(Err(error)) => {
                tracing::error!(%error, "SIGHUP: TLS certificate not reloaded; the one in use stays")
            }
            Err(error) => tracing::error!(%error, "SIGHUP: TLS reload failed"),
        }
    }
}

/// Loads each model again from its `[[models]]` table (the ONNX file as it is now, or the
/// model server's current version), checked as at start (a probe row scored, the declared
/// shape), then swapped in atomically: batches in flight finish on the old version, every
/// later one uses the new; there is no moment without a model and no event is scored twice.
/// A model that fails to load or has another shape is logged and the version serving stays.
pub(crate) async fn reload_models(models: &runnel_server::models::Models) {
    for spec in models.specs() {
        reload_model(models, &spec, "SIGHUP").await;
    }
}

/// Loads one model again from its table and swaps it in (see [`reload_models`]); `why` starts
/// each log line.
async fn reload_model(
    models: &runnel_server::models::Models,
    spec: &runnel_inference::ModelSpec,
    why: &str,
) {
    let name = spec.name.as_str();
    let loaded = match runnel_inference::load_model(spec).await {
        Ok(model) => model,
        Err(error) => {
            tracing::error!(model = name, %error, "{why}: model not reloaded; the version serving stays");
            return;
        }
    };
    let version = loaded.info().version.clone();
    match models.reload(name, loaded) {
        Ok(old) => tracing::info!(
            model = name,
            from = old.as_str(),
            to = version.as_str(),
            "{why}: model reloaded"
        ),
        Err(error) => {
            tracing::error!(model = name, %error, "{why}: model not reloaded; the version serving stays")
        }
    }
}

/// How often the ONNX files of `[[models]]` are checked for a new version.
const MODEL_FILE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// What says an ONNX file changed: its modification time and size (`None`: unreadable).
fn file_stamp(path: &str) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Every `every`, reloads each in-process model whose ONNX file changed since the last look,
/// as SIGHUP does (checked first; a file that does not load, such as one half written, is
/// logged and the version serving stays until the file changes again). Runs until aborted.
async fn watch_model_files(models: runnel_server::models::Models, every: std::time::Duration) {
    let files =
        |models: &runnel_server::models::Models| -> Vec<(runnel_inference::ModelSpec, String)> {
            models
                .specs()
                .into_iter()
                .filter_map(|spec| {
                    let path = spec.onnx.as_ref()?.path.clone();
                    Some((spec, path))
                })
                .collect()
        };
    let mut seen: std::collections::HashMap<String, Option<(std::time::SystemTime, u64)>> =
        files(&models)
            .into_iter()
            .map(|(spec, path)| (spec.name, file_stamp(&path)))
            .collect();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        for (spec, path) in files(&models) {
            let now = file_stamp(&path);
            let before = seen.insert(spec.name.clone(), now);
            if before.is_some_and(|before| before != now) && now.is_some() {
                reload_model(&models, &spec, &format!("{path} changed")).await;
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::error!(%error, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
    }
}

/// Prints the effective configuration (API key secrets redacted).
pub fn show(args: ShowArgs) -> anyhow::Result<()> {
    let config = args.config.effective()?.redacted();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&config)?);
    } else {
        print!("{}", config.to_toml());
    }
    Ok(())
}
