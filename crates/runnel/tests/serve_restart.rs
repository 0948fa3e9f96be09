//! A `runnel serve` killed with SIGKILL and started again on its data directory consumes at
//! once: it joins its groups with the same instance id (kept in `<data_dir>/server-id`) and
//! re-adopts the partition leases it held, instead of waiting `lease_ttl` for them to lapse.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::Serve;

fn start(dir: &Path) -> (Serve, String) {
    let server = Serve::start([std::ffi::OsStr::new("--data-dir"), dir.as_os_str()]);
    let url = server.url();
    (server, url)
}

fn pull(base: &str, wait_ms: u64) -> Vec<Value> {
    let (status, body) = common::json(
        "POST",
        &format!("{base}/v1/groups/billing/pull"),
        &json!({"max": 100, "wait_ms": wait_ms}),
    )
    .expect("pull");
    assert_eq!(status, 200, "{body}");
    body["messages"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_server_restarted_after_sigkill_consumes_without_waiting_for_its_old_leases() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, base) = start(dir.path());
    // The default lease_ttl (15 s).
    let (status, _) = common::json(
        "PUT",
        &format!("{base}/v1/groups/billing"),
        &json!({"filter": "order.*"}),
    )
    .expect("create the group");
    assert_eq!(status, 201);
    let lease_ttl = Duration::from_secs(15);
    for n in 0..20 {
        let event = json!({"specversion": "1.0", "id": format!("e{n}"), "source": "test",
                           "type": "order.placed", "partitionkey": format!("k{n}")});
        let (status, body) = common::publish(&base, &event).expect("publish");
        assert_eq!(status, 202, "{body}");
    }
    // The consumer starts and takes every partition's lease; nothing is acked.
    let handed = pull(&base, 2_000);
    assert!(!handed.is_empty(), "the first server handed nothing out");
    first.kill();

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
            common::json("POST", &format!("{base}/v1/groups/billing/ack"), &receipts);
        }
    }
    let took = started.elapsed();
    second.kill();
    assert_eq!(
        seen.len(),
        20,
        "after {took:?} the restarted server had handed out {} of 20 events: it waited for \
         its own old leases",
        seen.len()
    );
    println!("all 20 events consumed {took:?} after the restart (lease_ttl {lease_ttl:?})");
}
