//! A bounded schemathesis run against `/openapi.json` of a real server: thousands of
//! generated requests, none of which may get a 5xx (`not_a_server_error`).
//!
//! Runs only when `RUNNEL_PYTHON` names a Python with `schemathesis` installed (CI sets it);
//! otherwise it says it was skipped and passes — except under `RUNNEL_CI`, where a missing
//! Python or schemathesis is a failure.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_from_the_openapi_document_never_get_a_5xx() {
    let ci = std::env::var_os("RUNNEL_CI").is_some();
    let Some(python) = std::env::var_os("RUNNEL_PYTHON").filter(|p| !p.is_empty()) else {
        assert!(
            !ci,
            "RUNNEL_CI is set but RUNNEL_PYTHON is not: schemathesis must run in CI"
        );
        println!("skipped: set RUNNEL_PYTHON to a Python with schemathesis installed");
        return;
    };
    let installed = Command::new(&python)
        .args(["-c", "import schemathesis"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        assert!(
            !ci,
            "RUNNEL_CI is set but schemathesis is not installed in RUNNEL_PYTHON"
        );
        println!("skipped: schemathesis is not installed in RUNNEL_PYTHON");
        return;
    }
    let server = common::serve(|_| {}).await;
    let url = format!("http://{}/openapi.json", server.addr);
    let (passed, output) = tokio::task::spawn_blocking(move || {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(&python)
            .args(["-m", "schemathesis.cli", "run", &url])
            .args(["--max-examples", "25", "--checks", "not_a_server_error"])
            .args(["--request-timeout", "40", "--generation-deterministic"])
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .stdout(Stdio::from(log.reopen().unwrap()))
            .stderr(Stdio::from(log.reopen().unwrap()))
            .spawn()
            .expect("start schemathesis");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!("schemathesis ran longer than {DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        (
            status.success(),
            std::fs::read_to_string(log.path()).unwrap_or_default(),
        )
    })
    .await
    .unwrap();
    server.stop().await;
    assert!(passed, "schemathesis found failures:\n{output}");
    let summary: Vec<&str> = output.lines().filter(|l| l.contains("generated")).collect();
    println!("{}", summary.join("\n"));
}
