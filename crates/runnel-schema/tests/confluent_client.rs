//! Confluent's own client against the registry: serves the REST router under `/registry` on
//! 127.0.0.1 over an embedded backend and runs `tests/python/test_schema_registry.py` (pytest when available,
//! else plain Python) with the URL in `RUNNEL_REGISTRY_URL`.
//!
//! Runs only when `RUNNEL_PYTHON` names a Python with `confluent-kafka` installed (CI sets
//! it); otherwise it says it was skipped and passes — except under `RUNNEL_CI`, where a
//! missing Python is a failure.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fixture;
use runnel_schema::rest::router;

/// How long the Python run may take before it is killed and the test fails.
const PYTHON_DEADLINE: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_python_client_registers_fetches_checks_and_configures() {
    let Some(python) = std::env::var_os("RUNNEL_PYTHON").filter(|p| !p.is_empty()) else {
        // CI must run it: `.ci/run` sets RUNNEL_CI and installs the client.
        assert!(
            std::env::var_os("RUNNEL_CI").is_none(),
            "RUNNEL_CI is set but RUNNEL_PYTHON is not: the Confluent client test must run in CI"
        );
        println!(
            "skipped: set RUNNEL_PYTHON to a Python with confluent-kafka installed to run the \
             Confluent client test"
        );
        return;
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/python/test_schema_registry.py");
    assert!(script.exists(), "missing {}", script.display());

    let f = fixture().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Mounted where the server mounts it.
    let app = axum::Router::new().nest("/registry", router(f.registry.clone()));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let url = format!("http://{addr}/registry");
    let (passed, output) = tokio::task::spawn_blocking(move || run_python(&python, &script, &url))
        .await
        .unwrap();
    server.abort();

    assert!(passed, "the Confluent client test failed:\n{output}");
    println!("{output}");
}

/// Runs the script (under pytest if the interpreter has it); returns whether it passed and
/// its output. Kills it after [`PYTHON_DEADLINE`].
fn run_python(python: &std::ffi::OsStr, script: &std::path::Path, url: &str) -> (bool, String) {
    let has_pytest = Command::new(python)
        .args(["-c", "import pytest"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut command = Command::new(python);
    if has_pytest {
        command.args(["-m", "pytest", "-v", "-p", "no:cacheprovider"]);
    }
    // Output goes to a file, so a chatty failure cannot fill a pipe and stall the child.
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = command
        .arg(script)
        .env("RUNNEL_REGISTRY_URL", url)
        .stdout(Stdio::from(log.reopen().unwrap()))
        .stderr(Stdio::from(log.reopen().unwrap()))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.to_string_lossy()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > PYTHON_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the Confluent client test ran longer than {PYTHON_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut text = std::fs::read_to_string(log.path()).unwrap_or_default();
    text.push_str(&format!(
        "\n{} exited with {status}",
        python.to_string_lossy()
    ));
    (status.success(), text)
}
