//! The official CloudEvents Python SDK against a real server: runs
//! `tests/python/test_cloudevents.py` (pytest when available, else plain Python) with the
//! server's URL in `RUNNEL_URL`. Structured, binary and batch events are sent with the SDK and
//! the events pulled back must equal them, extensions included.
//!
//! Runs only when `RUNNEL_PYTHON` names a Python with `cloudevents` installed (CI sets it);
//! otherwise it says it was skipped and passes — except under `RUNNEL_CI`, where a missing
//! Python is a failure.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the Python run may take before it is killed and the test fails.
const PYTHON_DEADLINE: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_python_sdk_round_trips_structured_binary_and_batch() {
    let Some(python) = std::env::var_os("RUNNEL_PYTHON").filter(|p| !p.is_empty()) else {
        assert!(
            std::env::var_os("RUNNEL_CI").is_none(),
            "RUNNEL_CI is set but RUNNEL_PYTHON is not: the CloudEvents SDK test must run in CI"
        );
        println!(
            "skipped: set RUNNEL_PYTHON to a Python with cloudevents installed to run the \
             CloudEvents SDK test"
        );
        return;
    };
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/test_cloudevents.py");
    assert!(script.exists(), "missing {}", script.display());
    let server = common::serve(|_| {}).await;
    let url = format!("http://{}", server.addr);
    let (passed, output) = tokio::task::spawn_blocking(move || run_python(&python, &script, &url))
        .await
        .unwrap();
    server.stop().await;
    assert!(passed, "the CloudEvents SDK test failed:\n{output}");
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
        .env("RUNNEL_URL", url)
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
            panic!("the CloudEvents SDK test ran longer than {PYTHON_DEADLINE:?}");
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
