//! A `runnel serve` killed with SIGKILL and started again on its data directory consumes at
//! once: it joins its groups with the same instance id (kept in `<data_dir>/server-id`) and
//! re-adopts the partition leases it held, instead of waiting `lease_ttl` for them to lapse.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn start(dir: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start runnel serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    let addr = line
        .trim()
        .strip_prefix("runnel listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    (child, format!("http://{addr}"))
}

fn post(url: &str, content_type: &str, body: Value) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(url)
        .header("content-type", content_type)
        .send(body.to_string())
        .expect("request");
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_json().unwrap_or(Value::Null),
    )
}

fn pull(base: &str, wait_ms: u64) -> Vec<Value> {
    let (status, body) = post(
        &format!("{base}/v1/groups/billing/pull"),
        "application/json",
        json!({"max": 100, "wait_ms": wait_ms}),
    );
    assert_eq!(status, 200, "{body}");
    body["messages"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_server_restarted_after_sigkill_consumes_without_waiting_for_its_old_leases() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, base) = start(dir.path());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    // The default lease_ttl (15 s).
    let status = agent
        .put(&format!("{base}/v1/groups/billing"))
        .header("content-type", "application/json")
        .send(json!({"filter": "order.*"}).to_string())
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 201);
    let lease_ttl = Duration::from_secs(15);
    for n in 0..20 {
        let (status, body) = post(
            &format!("{base}/v1/events"),
            "application/cloudevents+json",
            json!({"specversion": "1.0", "id": format!("e{n}"), "source": "test",
                   "type": "order.placed", "partitionkey": format!("k{n}")}),
        );
        assert_eq!(status, 202, "{body}");
    }
    // The consumer starts and takes every partition's lease; nothing is acked.
    let handed = pull(&base, 2_000);
    assert!(!handed.is_empty(), "the first server handed nothing out");
    first.kill().unwrap();
    first.wait().unwrap();

    let (mut second, base) = start(dir.path());
    let started = Instant::now();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 20 && started.elapsed() < lease_ttl {
        for message in pull(&base, 500) {
            seen.insert(
                message["event"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
            let receipts = json!({"receipts": [message["receipt"]]});
            post(
                &format!("{base}/v1/groups/billing/ack"),
                "application/json",
                receipts,
            );
        }
    }
    let took = started.elapsed();
    second.kill().unwrap();
    second.wait().unwrap();
    assert_eq!(
        seen.len(),
        20,
        "after {took:?} the restarted server had handed out {} of 20 events: it waited for \
         its own old leases",
        seen.len()
    );
    println!("all 20 events consumed {took:?} after the restart (lease_ttl {lease_ttl:?})");
}
