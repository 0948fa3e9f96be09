//! Private servers for a benchmark or a test: a nats-server or redis-server on a free
//! loopback port with a temporary data directory and the fsync setting under test, so the
//! shared services of the machine are never reconfigured. Killed (SIGKILL) when dropped.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{PeerError, Result};

/// A server process this crate started.
pub struct ServerProcess {
    child: Option<Child>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `nats://127.0.0.1:<port>` or `redis://127.0.0.1:<port>`, by `scheme`.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| PeerError::Spawn {
            program: "a free port".into(),
            reason: e.to_string(),
        })
}

fn spawn_err(program: &str, e: impl ToString) -> PeerError {
    PeerError::Spawn {
        program: program.to_string(),
        reason: e.to_string(),
    }
}

async fn start(
    program: &str,
    mut command: Command,
    port: u16,
    dir: tempfile::TempDir,
) -> Result<ServerProcess> {
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| spawn_err(program, e))?;
    let mut server = ServerProcess {
        child: Some(child),
        port,
        _dir: dir,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(server);
        }
        if let Some(child) = server.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(spawn_err(program, format!("exited at start ({status})")));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(spawn_err(
                program,
                format!("not listening on {port} after 15 s"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `binary` (nats-server 2.10+) with JetStream on a free port; `sync_always` sets
/// `sync_interval: always` (fsync before every acknowledgement) instead of the default.
pub async fn start_nats(binary: &Path, sync_always: bool) -> Result<ServerProcess> {
    let program = binary.display().to_string();
    let dir = tempfile::Builder::new()
        .prefix("runnel-peer-nats-")
        .tempdir()
        .map_err(|e| spawn_err(&program, e))?;
    let port = free_port()?;
    let store = dir.path().join("js");
    let sync = if sync_always {
        "\n  sync_interval: always"
    } else {
        ""
    };
    let config = format!(
        "listen: \"127.0.0.1:{port}\"\njetstream {{\n  store_dir: {:?}{sync}\n}}\n",
        store.display().to_string()
    );
    let config_path = dir.path().join("nats.conf");
    std::fs::write(&config_path, config).map_err(|e| spawn_err(&program, e))?;
    let mut command = Command::new(binary);
    command.arg("-c").arg(&config_path);
    start(&program, command, port, dir).await
}

/// Starts `binary` (redis-server) on a free port with an append-only file and
/// `appendfsync` = `always` or `everysec`, no RDB snapshots.
pub async fn start_redis(binary: &Path, appendfsync: &str) -> Result<ServerProcess> {
    let program = binary.display().to_string();
    let dir = tempfile::Builder::new()
        .prefix("runnel-peer-redis-")
        .tempdir()
        .map_err(|e| spawn_err(&program, e))?;
    let port = free_port()?;
    let mut command = Command::new(binary);
    command
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            appendfsync,
        ])
        .args(["--daemonize", "no", "--protected-mode", "no"])
        .arg("--dir")
        .arg(dir.path());
    start(&program, command, port, dir).await
}
