//! The server under test: `runnel serve` as a child process of this binary, killed with
//! SIGKILL (or stopped with SIGTERM at the end), and the address its clients should use now.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::api::Api;

/// How long a server may take from spawn to answering `/readyz`.
const START_LIMIT: Duration = Duration::from_secs(60);

/// A running `runnel serve` child.
pub struct ServerProc {
    child: Child,
    pub url: String,
    /// From spawn to the first `200` of `/readyz` (a durable write went through).
    pub recovery: Duration,
}

impl ServerProc {
    /// Starts `runnel serve --bind 127.0.0.1:0 --data-dir <data> --fsync group`, reads the
    /// address from its first stdout line and waits until `/readyz` answers 200. Its stderr
    /// is appended to `log`.
    pub fn spawn(data: &Path, log: &Path) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the runnel binary")?;
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let started = Instant::now();
        let mut child = Command::new(exe)
            .args([
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--fsync",
                "group",
                "--data-dir",
            ])
            .arg(data)
            // No stray `runnel.toml` from the caller's directory.
            .current_dir(data.parent().unwrap_or(data))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("starting runnel serve")?;
        let Some(stdout) = child.stdout.take() else {
            bail!("runnel serve has no stdout pipe");
        };
        let mut proc = Self {
            child,
            url: String::new(),
            recovery: Duration::ZERO,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the first line, then drains stdout so the server never blocks on it.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            for _ in lines {}
        });
        let line = match rx.recv_timeout(START_LIMIT) {
            Ok(Some(Ok(line))) => line,
            Ok(_) => bail!(
                "runnel serve exited before printing its address (see {})",
                log.display()
            ),
            Err(_) => bail!("runnel serve printed nothing within {START_LIMIT:?}"),
        };
        let Some(addr) = line.trim().strip_prefix("runnel listening on ") else {
            bail!("unexpected first line from runnel serve: {line:?}");
        };
        proc.url = addr.to_string();
        let api = Api::new(&proc.url, None);
        loop {
            if api.get("/readyz").is_ok() {
                break;
            }
            if let Some(status) = proc.child.try_wait()? {
                bail!(
                    "runnel serve exited with {status} before it was ready (see {})",
                    log.display()
                );
            }
            if started.elapsed() > START_LIMIT {
                bail!("runnel serve was not ready within {START_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        proc.recovery = started.elapsed();
        Ok(proc)
    }

    pub fn api(&self) -> Api {
        Api::new(&self.url, None)
    }

    /// SIGKILL, and reaps the child.
    pub fn kill_in_place(&mut self) -> anyhow::Result<()> {
        self.signal(libc::SIGKILL)?;
        self.child.wait().context("waiting for the killed server")?;
        Ok(())
    }

    /// SIGTERM, and waits for a clean exit (code 0) within `limit`.
    pub fn stop(mut self, limit: Duration) -> anyhow::Result<()> {
        self.signal(libc::SIGTERM)?;
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                if status.success() {
                    return Ok(());
                }
                bail!("runnel serve exited with {status} after SIGTERM");
            }
            if started.elapsed() > limit {
                bail!("runnel serve did not exit within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: libc::c_int) -> anyhow::Result<()> {
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: `kill` with our own unreaped child's pid and a valid signal number only
        // sends a signal; it touches no memory of this process.
        let rc = unsafe { libc::kill(pid, signal) };
        if rc != 0 {
            bail!(
                "kill({pid}, {signal}) failed: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }
}

impl Drop for ServerProc {
    /// A harness that fails half-way leaves no server behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Where the load threads send requests: the current server's client, or none while it is
/// down. Threads wait here instead of hammering a dead address.
#[derive(Default)]
pub struct Target {
    current: Mutex<Option<Api>>,
    changed: Condvar,
    /// Set when the run is over or failed: waiting threads give up.
    pub abort: AtomicBool,
}

impl Target {
    pub fn set(&self, api: Option<Api>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = api;
        self.changed.notify_all();
    }

    pub fn abort(&self) {
        self.abort.store(true, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// The current server's client, waiting while it is down; `None` once aborted.
    pub fn current(&self) -> Option<Api> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.abort.load(Ordering::SeqCst) {
                return None;
            }
            if let Some(api) = current.as_ref() {
                return Some(api.clone());
            }
            current = self
                .changed
                .wait_timeout(current, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// The newest segment file (`*.log`, largest base offset) of a partition directory.
pub fn newest_segment(partition_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let mut newest = None;
    for entry in std::fs::read_dir(partition_dir)
        .with_context(|| format!("reading {}", partition_dir.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "log")
            && newest.as_ref().is_none_or(|n: &PathBuf| path > *n)
        {
            newest = Some(path);
        }
    }
    Ok(newest)
}
