//! Building and running the server: `(ServerConfig, backend) → App::open → Server::bind →
//! run(shutdown)`.
//!
//! It exists to keep the order of start and stop in one place. Start: check the
//! configuration (no non-loopback address without keys, nor with keys in plain HTTP unless
//! allowed), build the runtime, registry and router over the backend the binary opened, load
//! the TLS certificate if one is configured, bind. Stop, once the shutdown future resolves: stop
//! accepting, let requests in flight finish (long polls and event streams end early, up to
//! `shutdown_grace_secs` in all), stop every consumer (workers commit what is done and
//! release their partitions; feature pipelines before them), then close the backend, which flushes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use runnel_backend::{Backend, BackendError};
use runnel_envelope::Limits;
use runnel_runtime::{Runnel, RuntimeConfig};
use runnel_stages::FeatureStore;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::auth::Keys;
use crate::config::{ConfigError, ServerConfig};
use crate::consume::{Consumers, Shutdown};
use crate::features::Features;
use crate::metrics::Metrics;
use crate::models::Models;
use crate::routes::{AppState, Shared, router};
use crate::tls::TlsReloader;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open the backend: {0}")]
    Backend(#[from] BackendError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run the sagas: {0}")]
    Saga(#[from] runnel_saga::SagaError),
    #[error("the server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// The application: runtime, registry, consumers and router over one backend, without a
/// socket (router tests use it directly).
pub struct App {
    state: AppState,
    sweeper: JoinHandle<()>,
    /// Starts the correlation index's consumer and holds it (see [`run_trace_index`]).
    trace_index: Option<JoinHandle<()>>,
    /// The server id of `<data_dir>/server-id`, when this server holds it.
    instance_id: Option<String>,
    /// Runs the `[[sagas]]` drivers (see [`App::run_sagas`]).
    saga_drivers: Option<JoinHandle<()>>,
    /// Holds `<data_dir>/server-id` locked while this server runs.
    _identity: Option<std::fs::File>,
}

impl App {
    /// Builds the application over `backend` (opened by the caller: the binary is where
    /// storage is chosen), its consumers joining their groups with the server id kept in
    /// `config.data_dir` (see [`server_identity`]).
    pub fn open(config: ServerConfig, backend: Arc<dyn Backend>) -> Result<Self, ServerError> {
        config.validate()?;
        let identity = server_identity(&config.data_dir);
        Self::build(config, backend, identity)
    }

    /// Builds the application over `backend` with a random consumer instance id.
    pub fn with_backend(
        config: ServerConfig,
        backend: Arc<dyn Backend>,
    ) -> Result<Self, ServerError> {
        Self::build(config, backend, None)
    }

    fn build(
        config: ServerConfig,
        backend: Arc<dyn Backend>,
        identity: Option<(String, std::fs::File)>,
    ) -> Result<Self, ServerError> {
        config.validate()?;
        let max_partitions = backend.max_partitions();
        if config.default_partitions > max_partitions {
            return Err(ConfigError::Invalid(format!(
                "default_partitions must be 1 to {max_partitions} on the {} backend, got {}",
                backend.kind(),
                config.default_partitions
            ))
            .into());
        }
        let limits = Limits::with_max_event_bytes(config.max_event_bytes);
        let runnel = Runnel::open(
            RuntimeConfig {
                default_partitions: config.default_partitions,
                limits,
                dedup_window: Duration::from_secs(config.dedup_window_secs),
                require_schema: config.require_schema,
                source: "runnel://server".into(),
                ..RuntimeConfig::default()
            },
            backend.clone(),
        );
        // The runtime's own registry: registrations through `/registry` apply to the very
        // next publish.
        let registry = runnel.schemas().clone();
        let metrics = Arc::new(Metrics::new());
        let shutdown = Shutdown::default();
        let idle = Duration::from_secs(config.consumer_idle_secs.max(1));
        let consumers = Consumers::new(runnel.clone(), metrics.clone(), shutdown.clone(), idle);
        let (consumers, lock, instance_id) = match identity {
            Some((id, lock)) => (consumers.with_instance(id.clone()), Some(lock), Some(id)),
            None => (consumers, None, None),
        };
        let features = Features::new(FeatureStore::new(backend.clone()));
        let keys = Arc::new(Keys::new(&config.api_keys));
        let state = AppState(Arc::new(Shared {
            runnel,
            registry,
            limits,
            consumers,
            metrics,
            shutdown,
            keys,
            config,
            features,
            models: Models::default(),
            sagas: std::sync::OnceLock::new(),
        }));
        let sweeper = tokio::spawn(sweep_idle(state.clone(), idle));
        let trace_index = state
            .config
            .trace_index
            .then(|| tokio::spawn(run_trace_index(state.clone())));
        Ok(Self {
            state,
            sweeper,
            trace_index,
            instance_id,
            saga_drivers: None,
            _identity: lock,
        })
    }

    /// Runs `sagas` (validated `[[sagas]]` tables) on this server from now until it stops:
    /// a driver per saga with the server's instance id, and the `/v1/sagas` routes over
    /// them. Once per application; a second call is refused.
    pub fn run_sagas(&mut self, sagas: Vec<runnel_saga::Saga>) -> Result<(), ServerError> {
        let view = runnel_saga::Sagas::new(&self.state.runnel, sagas.clone())?;
        if self.state.sagas.set(view).is_err() {
            return Err(ConfigError::Invalid("the sagas are already running".into()).into());
        }
        if !sagas.is_empty() {
            if !self.capture_stage_metrics() {
                tracing::info!(
                    "another metrics recorder is the process's: runnel_saga_* metrics are not in this server's /metrics"
                );
            }
            self.saga_drivers = Some(tokio::spawn(crate::sagas::run_saga_drivers(
                self.state.clone(),
                sagas,
            )));
        }
        Ok(())
    }

    /// Every route.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// The runtime underneath.
    pub fn runnel(&self) -> &Runnel {
        &self.state.runnel
    }

    pub fn config(&self) -> &ServerConfig {
        &self.state.config
    }

    /// The feature pipelines this server serves and stops (the binary adds them).
    pub fn features(&self) -> &Features {
        &self.state.features
    }

    /// The inference stages this server serves and stops (the binary adds them).
    pub fn models(&self) -> &Models {
        &self.state.models
    }

    /// Makes this server's `/metrics` render what stages record through the `metrics`
    /// facade (the inference stages' `runnel_predictions_total`, breaker state and
    /// transitions): its recorder becomes the process's. Call before starting them. False
    /// if another recorder is the process's.
    pub fn capture_stage_metrics(&self) -> bool {
        self.state.metrics.install_global()
    }

    /// This server's stable id (`<data_dir>/server-id`), when it holds it: stages started
    /// beside the server join their groups with it, so a restart re-adopts their leases at once.
    pub fn instance_id(&self) -> Option<&str> {
        self.instance_id.as_deref()
    }

    /// Ends long polls and event streams and refuses new consumption.
    pub fn begin_shutdown(&self) {
        self.state.shutdown.trigger();
    }

    /// Stops consumers and closes the backend (flushing it).
    pub async fn close(mut self) -> Result<(), ServerError> {
        self.state.shutdown.trigger();
        self.sweeper.abort();
        // Models first (they read the feature store), then pipelines: their last cycle
        // publishes and writes through the backend.
        self.state.models.stop_all().await;
        self.state.features.stop_all().await;
        if let Some(index) = self.trace_index.take() {
            // It sees the shutdown and stops its consumer (committing what is indexed).
            let _ = tokio::time::timeout(Duration::from_secs(30), index).await;
        }
        if let Some(drivers) = self.saga_drivers.take() {
            // They see the shutdown and stop (committing what they applied).
            let _ = tokio::time::timeout(Duration::from_secs(30), drivers).await;
        }
        self.state.consumers.stop_all().await;
        self.state.runnel.backend().close().await?;
        Ok(())
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.sweeper.abort();
        if let Some(index) = &self.trace_index {
            index.abort();
        }
        if let Some(drivers) = &self.saga_drivers {
            drivers.abort();
        }
    }
}

/// Runs the correlation index (`runnel_runtime::trace`) until shutdown: its consumer is
/// started (again after a failure, every few seconds) with this server's instance id, and
/// stopped cleanly when the server stops.
async fn run_trace_index(state: AppState) {
    use runnel_runtime::trace::{TraceIndexOptions, TraceIndexer};
    let options = TraceIndexOptions {
        ttl: Duration::from_secs(state.config.trace_retention_days.max(1) * 24 * 3600),
        instance_id: state.consumers.instance().map(str::to_string),
    };
    let consumer = loop {
        if state.shutdown.is_triggered() {
            return;
        }
        match TraceIndexer::start(&state.runnel, options.clone()).await {
            Ok(consumer) => break consumer,
            Err(error) => {
                tracing::warn!(%error, "the correlation index could not start; trying again in 5 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = state.shutdown.wait() => return,
                }
            }
        }
    };
    state.shutdown.wait().await;
    if let Err(error) = consumer.stop().await {
        tracing::warn!(%error, "the correlation index did not stop cleanly");
    }
}

async fn sweep_idle(state: AppState, idle: Duration) {
    let every = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        tokio::time::sleep(every).await;
        if state.shutdown.is_triggered() {
            return;
        }
        state.consumers.stop_idle().await;
    }
}

/// The application bound to a socket.
pub struct Server {
    app: App,
    listener: TcpListener,
    tls: Option<(TlsReloader, TlsAcceptor)>,
}

impl Server {
    /// Builds the application over `backend` and binds `config.bind`.
    pub async fn bind(
        config: ServerConfig,
        backend: Arc<dyn Backend>,
    ) -> Result<Self, ServerError> {
        let app = App::open(config, backend)?;
        Self::with_app(app).await
    }

    /// Binds an application built elsewhere, with TLS if `tls_cert` and `tls_key` are set
    /// (both files are read before the socket is bound).
    pub async fn with_app(app: App) -> Result<Self, ServerError> {
        let config = app.config();
        let tls = match config.tls_files() {
            Some((cert, key)) => {
                let reloader = TlsReloader::load(cert, key).map_err(ConfigError::from)?;
                let acceptor = reloader.acceptor().map_err(ConfigError::from)?;
                Some((reloader, acceptor))
            }
            None => None,
        };
        let addr = config.bind;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        if config.api_keys.is_empty() {
            tracing::warn!(%addr, "no API keys configured: serving loopback only, without authentication");
        }
        if tls.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(%addr, "serving plain HTTP beyond loopback (allow_plaintext): API keys cross the network in clear");
        }
        Ok(Self { app, listener, tls })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.listener.local_addr().map_err(ServerError::Serve)
    }

    pub fn app(&self) -> &App {
        &self.app
    }

    /// The certificate in use and what reloads it (SIGHUP in the binary), when serving HTTPS.
    pub fn tls(&self) -> Option<&TlsReloader> {
        self.tls.as_ref().map(|(reloader, _)| reloader)
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Serves until `shutdown` resolves, then stops in order (see the module docs).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let Server { app, listener, tls } = self;
        let grace = Duration::from_secs(app.config().shutdown_grace_secs);
        let reload_every = Duration::from_secs(app.config().tls_reload_secs);
        let (watcher, acceptor) = match tls {
            Some((reloader, acceptor)) => {
                let watcher = (!reload_every.is_zero())
                    .then(|| tokio::spawn(crate::tls::watch(reloader, reload_every)));
                (watcher, Some(acceptor))
            }
            None => (None, None),
        };
        let token = app.state.shutdown.clone();
        let signal = {
            let token = token.clone();
            async move {
                shutdown.await;
                tracing::info!("shutting down: no new connections; finishing requests in flight");
                token.trigger();
            }
        };
        let serve = crate::accept::serve(listener, app.router(), acceptor, signal);
        let mut serving = tokio::spawn(serve);
        let served = tokio::select! {
            result = &mut serving => Some(result),
            _ = token.wait() => None,
        };
        let result = match served {
            Some(result) => result,
            None => match tokio::time::timeout(grace, &mut serving).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!(
                        ?grace,
                        "requests still running after the grace period; stopping anyway"
                    );
                    serving.abort();
                    Ok(Ok(()))
                }
            },
        };
        let served = match result {
            Ok(served) => served.map_err(ServerError::Serve),
            Err(join) => Err(ServerError::Serve(std::io::Error::other(join.to_string()))),
        };
        if let Some(watcher) = watcher {
            watcher.abort();
        }
        app.close().await?;
        tracing::info!("stopped");
        served
    }
}

/// This server's consumer instance id, kept in `<data_dir>/server-id` so that a restarted
/// server re-adopts the partition leases it held at once instead of waiting `lease_ttl` for
/// them to lapse. The file stays locked while the server runs: a second server on the same
/// directory (possible with JetStream, which keeps no data there) gets a random id instead,
/// as does a server that cannot write the directory.
fn server_identity(dir: &std::path::Path) -> Option<(String, std::fs::File)> {
    use std::io::{Read, Seek, Write};
    let path = dir.join("server-id");
    let opened = std::fs::create_dir_all(dir).and_then(|()| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
    });
    let mut file = match opened {
        Ok(file) => file,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "no stable server id; consumers use random instance ids");
            return None;
        }
    };
    if file.try_lock().is_err() {
        tracing::warn!(path = %path.display(), "another server uses this data directory's server id; consumers use random instance ids");
        return None;
    }
    let mut id = String::new();
    let read = file.read_to_string(&mut id);
    let id = id.trim().to_string();
    let valid = read.is_ok()
        && !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if valid {
        return Some((id, file));
    }
    let id = format!("server-{}", uuid::Uuid::now_v7().simple());
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(id.as_bytes()))
        .and_then(|()| file.sync_all());
    match written {
        Ok(()) => Some((id, file)),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot write the server id; consumers use random instance ids");
            None
        }
    }
}
