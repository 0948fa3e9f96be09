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
