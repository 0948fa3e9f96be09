//! Helpers shared by this crate's integration tests: an application over a fresh data
//! directory, one-shot requests against its router, and a real server on 127.0.0.1:0.

#![allow(dead_code)] // each test file uses a different subset

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use runnel_backend::Backend;
use runnel_backend_embedded::{EmbeddedBackend, EmbeddedConfig};
use runnel_server::testing::Client;
use runnel_server::{App, Server, ServerConfig, ServerError};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt;

/// A config storing under `dir`, binding 127.0.0.1:0.
pub fn config(dir: &TempDir) -> ServerConfig {
    ServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        ..ServerConfig::default()
    }
}

/// The embedded backend in `config.data_dir`, as the binary opens it by default.
pub async fn backend(config: &ServerConfig) -> Arc<dyn Backend> {
    Arc::new(
        EmbeddedBackend::open(EmbeddedConfig::new(&config.data_dir))
            .await
            .unwrap(),
    )
}

/// An application over `config` and the embedded backend in its data directory.
pub async fn open(config: ServerConfig) -> Result<App, ServerError> {
    let backend = backend(&config).await;
    App::open(config, backend)
}

/// An application over a fresh data directory; keep the `TempDir` alive while it is used.
pub async fn app() -> (TempDir, App) {
    let dir = tempfile::tempdir().unwrap();
    let app = open(config(&dir)).await.unwrap();
    (dir, app)
}

pub async fn app_with(edit: impl FnOnce(&mut ServerConfig)) -> (TempDir, App) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir);
    edit(&mut config);
    let app = open(config).await.unwrap();
    (dir, app)
}

/// An answer of the router.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Value,
    pub text: String,
}

/// Sends one request through the router (no socket).
pub async fn call(router: &Router, request: Request<Body>) -> Reply {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Reply {
        status,
        content_type,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text,
    }
}

pub fn request(
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    builder.body(body.into()).unwrap()
}

pub async fn get(router: &Router, path: &str) -> Reply {
    call(router, request("GET", path, None, Body::empty())).await
}

pub async fn send_json(router: &Router, method: &str, path: &str, body: Value) -> Reply {
    call(
        router,
        request(method, path, Some("application/json"), body.to_string()),
    )
    .await
}

/// A structured-mode publish.
pub async fn publish(router: &Router, event: Value) -> Reply {
    call(
        router,
        request(
            "POST",
            "/v1/events",
            Some("application/cloudevents+json"),
            event.to_string(),
        ),
    )
    .await
}

/// A minimal valid event.
pub fn event(id: &str, event_type: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "/tests",
        "type": event_type,
        "data": data,
    })
}

/// Creates a group with `filter` and extra settings.
pub async fn put_group(router: &Router, group: &str, spec: Value) -> Reply {
    send_json(router, "PUT", &format!("/v1/groups/{group}"), spec).await
}

/// Pulls up to `max`, waiting up to `wait_ms`.
pub async fn pull(router: &Router, group: &str, max: u64, wait_ms: u64) -> Vec<Value> {
    let reply = send_json(
        router,
        "POST",
        &format!("/v1/groups/{group}/pull"),
        json!({"max": max, "wait_ms": wait_ms}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Asserts a problem document with `status` and `code`.
pub fn assert_problem(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status.as_u16(), status, "{}", reply.text);
    assert_eq!(
        reply.content_type, "application/problem+json",
        "{}",
        reply.text
    );
    assert_eq!(reply.body["code"], code, "{}", reply.text);
    assert_eq!(reply.body["status"], status, "{}", reply.text);
    assert!(reply.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
}

/// A real server on 127.0.0.1:0 in this process.
pub struct Running {
    pub dir: TempDir,
    pub addr: SocketAddr,
    pub client: Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), runnel_server::ServerError>>>,
}

impl Running {
    /// Sends the shutdown signal and waits for the server to stop.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

pub async fn serve(edit: impl FnOnce(&mut ServerConfig)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir);
    edit(&mut config);
    let backend = backend(&config).await;
    let server = Server::bind(config, backend).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Running {
        dir,
        addr,
        client: Client::new(addr),
        stop: Some(stop),
        task: Some(task),
    }
}

/// The Python interpreter for tests with clients of other ecosystems (`RUNNEL_PYTHON`), if it
/// has `module`. Without one the test is skipped — except under `RUNNEL_CI`, where `.ci/run`
/// installs them, so a missing client is a failure.
pub fn outside_python(module: &str) -> Option<std::ffi::OsString> {
    let ci = std::env::var_os("RUNNEL_CI").is_some();
    let Some(python) = std::env::var_os("RUNNEL_PYTHON").filter(|p| !p.is_empty()) else {
        assert!(
            !ci,
            "RUNNEL_CI is set but RUNNEL_PYTHON is not: this test must run in CI"
        );
        println!("skipped: set RUNNEL_PYTHON to a Python with `{module}` installed");
        return None;
    };
    let installed = std::process::Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        assert!(
            !ci,
            "RUNNEL_CI is set but `{module}` is not installed in RUNNEL_PYTHON"
        );
        println!("skipped: `{module}` is not installed in RUNNEL_PYTHON");
        return None;
    }
    Some(python)
}

/// Runs `python args…` with `env` (off the async runtime), killing it after `deadline`;
/// returns whether it succeeded and everything it printed. Output goes to a file, so a chatty
/// failure cannot fill a pipe and stall the child.
pub async fn run_python(
    python: std::ffi::OsString,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    deadline: std::time::Duration,
) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = std::process::Command::new(&python)
            .args(&args)
            .envs(env)
            .stdout(std::process::Stdio::from(log.reopen().unwrap()))
            .stderr(std::process::Stdio::from(log.reopen().unwrap()))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.to_string_lossy()));
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{args:?} ran longer than {deadline:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut text = std::fs::read_to_string(log.path()).unwrap_or_default();
        text.push_str(&format!(
            "\n{} exited with {status}",
            python.to_string_lossy()
        ));
        (status.success(), text)
    })
    .await
    .unwrap()
}

/// Runs a test script of `tests/python/` under pytest against `env`.
pub async fn run_python_script(
    python: std::ffi::OsString,
    script: &str,
    env: Vec<(&'static str, String)>,
) -> (bool, String) {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/python")
        .join(script);
    assert!(path.exists(), "missing {}", path.display());
    let args = vec![
        "-m".into(),
        "pytest".into(),
        "-v".into(),
        "-p".into(),
        "no:cacheprovider".into(),
        path.to_string_lossy().into_owned(),
    ];
    run_python(python, args, env, std::time::Duration::from_secs(300)).await
}
