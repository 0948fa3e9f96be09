//! `--data-dir`: a command works on an embedded data directory directly, through a server
//! inside the command itself, instead of one at `--url`.
//!
//! It exists for operators of a stopped server (inspect streams, a group's lag or its
//! dead-letter queue, replay, purge) without starting one: the commands stay one code path,
//! over HTTP on a loopback port of their own that lives as long as the command. A running
//! server holds the directory's lock, and then this refuses with that error.

use std::net::SocketAddr;
use std::path::Path;
use std::thread::JoinHandle;

use anyhow::Context;
use runnel_backends::BackendKind;

use crate::config::RunnelConfig;

/// A server on a free loopback port over a data directory; stopped gracefully (everything
/// flushed) when dropped.
#[derive(Debug)]
pub struct LocalServer {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl LocalServer {
    /// Opens `dir` with the server configuration `runnel serve` would use there (runnel.toml,
    /// `RUNNEL_*`), on `127.0.0.1:0`, embedded, without API keys.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        if !dir.is_dir() {
            return Err(super::UsageError(format!(
                "--data-dir {}: no such directory",
                dir.display()
            ))
            .into());
        }
        let mut config = RunnelConfig::load(None, std::env::vars())?;
        config.storage.backend = BackendKind::Embedded;
        config.server.data_dir = dir.to_path_buf();
        config.server.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        config.server.api_keys.clear();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let server = runtime
            .block_on(config.bind())
            .with_context(|| format!("opening --data-dir {}", dir.display()))?;
        let url = format!("http://{}", server.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("runnel-local-server".into())
            .spawn(move || {
                let served = runtime.block_on(server.run(async move {
                    let _ = stopped.await;
                }));
                if let Err(error) = served {
                    eprintln!("error: the local server over --data-dir failed: {error}");
                }
            })
            .context("starting the local server's thread")?;
        Ok(Self {
            url,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
