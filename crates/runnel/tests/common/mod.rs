//! What the tests that run `runnel serve` as a child process share: starting it on a free
//! loopback port (its first stdout line names the address), signalling it, and plain JSON
//! requests to it.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A `runnel serve` child, killed when dropped.
pub struct Serve {
    pub child: Child,
    pub addr: SocketAddr,
    /// `http` or `https`, as its first line says.
    pub scheme: String,
}

impl Serve {
    /// Runs `runnel serve --bind 127.0.0.1:0 <args>` and waits for its address.
    pub fn start<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::start_with_log(args, Stdio::inherit())
    }

    /// As [`Serve::start`], with the server's log (stderr) going to `log`.
    pub fn start_with_log<I, S>(args: I, log: impl Into<Stdio>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args(["serve", "--bind", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start runnel serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the first line");
        let (scheme, addr) = line
            .trim()
            .strip_prefix("runnel listening on ")
            .and_then(|url| url.split_once("://"))
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        let addr = addr.parse().expect("an address");
        Self {
            child,
            addr,
            scheme: scheme.to_string(),
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Sends `signal` (SIGTERM, SIGKILL) to the server.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: `kill` with a live child's pid and a valid signal number has no memory effects.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// SIGKILL, and reaps the child.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `method url` with `body` as `content_type`: the status and the JSON answer (`Null` when
/// it is not JSON), or `None` when the server could not be reached.
pub fn request(
    method: &str,
    url: &str,
    content_type: &str,
    body: Option<&Value>,
) -> Option<(u16, Value)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let response = match (method, body) {
        ("PUT", Some(body)) => agent
            .put(url)
            .header("content-type", content_type)
            .send(body.to_string()),
        ("POST", Some(body)) => agent
            .post(url)
            .header("content-type", content_type)
            .send(body.to_string()),
        ("GET", _) => agent.get(url).call(),
        ("DELETE", _) => agent.delete(url).call(),
        (other, body) => panic!("request: {other} with body {body:?} is not supported here"),
    };
    let mut response = response.ok()?;
    let status = response.status().as_u16();
    Some((
        status,
        response.body_mut().read_json().unwrap_or(Value::Null),
    ))
}

/// A JSON request (`application/json`).
pub fn json(method: &str, url: &str, body: &Value) -> Option<(u16, Value)> {
    request(method, url, "application/json", Some(body))
}

/// Publishes one event in the CloudEvents structured mode.
pub fn publish(base: &str, event: &Value) -> Option<(u16, Value)> {
    request(
        "POST",
        &format!("{base}/v1/events"),
        "application/cloudevents+json",
        Some(event),
    )
}

/// Runs the `runnel` binary with `args` to its end.
pub fn runnel(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(args)
        .output()
        .expect("run runnel")
}

/// `runnel serve` with `dir/runnel.toml` and its data in `dir/data`.
pub fn serve_dir(dir: &std::path::Path) -> Serve {
    let config = dir.join("runnel.toml");
    let data = dir.join("data");
    Serve::start([
        OsStr::new("--config"),
        config.as_os_str(),
        OsStr::new("--data-dir"),
        data.as_os_str(),
    ])
}

/// Writes `text` as `dir/runnel.toml` and checks that `runnel serve` refuses it at start:
/// exit 2, `expected` on stderr.
pub fn refused_at_start(dir: &std::path::Path, text: &str, expected: &str) {
    let path = dir.join("runnel.toml");
    std::fs::write(&path, text).expect("write runnel.toml");
    let data = dir.join("data");
    let out = runnel(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--config",
        path.to_str().expect("a UTF-8 path"),
        "--data-dir",
        data.to_str().expect("a UTF-8 path"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(expected), "{expected} in {stderr}");
}

/// `GET url`: its status and JSON answer.
pub fn get(url: &str) -> (u16, Value) {
    request("GET", url, "", None).expect("reachable")
}

/// Waits (at most `within`) until `GET url` answers 200 and `done` holds for the body.
pub fn wait_for(url: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let started = std::time::Instant::now();
    loop {
        let (status, body) = get(url);
        if status == 200 && done(&body) {
            return body;
        }
        assert!(
            started.elapsed() < within,
            "{url} never got there: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
