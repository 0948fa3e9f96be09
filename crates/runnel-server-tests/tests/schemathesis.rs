//! A bounded schemathesis run against `/openapi.json` of a real server: thousands of
//! generated requests, none of which may get a 5xx (`not_a_server_error`).
//!
//! Runs only when `RUNNEL_PYTHON` names a Python with `schemathesis` installed (CI sets it);
//! otherwise it says it was skipped and passes — except under `RUNNEL_CI`, where a missing
//! Python or schemathesis is a failure.

mod common;

use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_from_the_openapi_document_never_get_a_5xx() {
    let Some(python) = common::outside_python("schemathesis") else {
        return;
    };
    let server = common::serve(|_| {}).await;
    let url = format!("http://{}/openapi.json", server.addr);
    let args = [
        "-m",
        "schemathesis.cli",
        "run",
        &url,
        "--max-examples",
        "25",
    ]
    .into_iter()
    .chain(["--checks", "not_a_server_error", "--request-timeout", "40"])
    .chain(["--generation-deterministic"])
    .map(str::to_string)
    .collect();
    let env = vec![("SCHEMATHESIS_TELEMETRY", "false".to_string())];
    let (passed, output) = common::run_python(python, args, env, DEADLINE).await;
    server.stop().await;
    assert!(passed, "schemathesis found failures:\n{output}");
    let summary: Vec<&str> = output.lines().filter(|l| l.contains("generated")).collect();
    println!("{}", summary.join("\n"));
}
