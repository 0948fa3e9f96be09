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

fn pull_max(base: &str, max: usize, wait_ms: u64) -> Vec<Value> {
    let (status, body) = common::json(
        "POST",
        &format!("{base}/v1/groups/billing/pull"),
        &json!({"max": max, "wait_ms": wait_ms}),
    )
    .expect("pull");
    assert_eq!(status, 200, "{body}");
    body["messages"].as_array().cloned().unwrap_or_default()
}

fn ack(base: &str, messages: &[Value]) {
    let receipts: Vec<&Value> = messages.iter().map(|m| &m["receipt"]).collect();
    let (status, body) = common::json(
        "POST",
        &format!("{base}/v1/groups/billing/ack"),
        &json!({ "receipts": receipts }),
    )
    .expect("ack");
    assert_eq!(status, 200, "{body}");
}

fn create_group(base: &str) {
    let (status, body) = common::json(
        "PUT",
        &format!("{base}/v1/groups/billing"),
        &json!({"filter": "order.*"}),
    )
    .expect("create the group");
    assert_eq!(status, 201, "{body}");
}

fn publish_batch(base: &str, ids: impl Iterator<Item = String>) {
    let events: Vec<Value> = ids
        .map(|id| json!({"specversion": "1.0", "id": id, "source": "test", "type": "order.placed"}))
        .collect();
    let (status, body) = common::request(
        "POST",
        &format!("{base}/v1/events"),
        "application/cloudevents-batch+json",
        Some(&Value::Array(events)),
    )
    .expect("publish");
    assert_eq!(status, 202, "{body}");
}

fn dead_letters(base: &str) -> Vec<Value> {
    let (status, body) = common::request(
        "GET",
        &format!("{base}/v1/groups/billing/dlq"),
        "application/json",
        None,
    )
    .expect("list the DLQ");
    assert_eq!(status, 200, "{body}");
    body["entries"].as_array().cloned().unwrap_or_default()
}

/// The server hands events to HTTP clients: when it dies, no client died with an event, so
/// its restarts are not crashes of the event a client held (issue 20, item 2).
#[test]
fn given_a_pulled_unacked_event_when_the_server_is_killed_three_times_it_is_not_a_crash_loop() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, mut base) = start(dir.path());
    create_group(&base);
    publish_batch(&base, std::iter::once("only".to_string()));
    for round in 1..=3u64 {
        let messages = pull_max(&base, 1, 5_000);
        assert_eq!(messages.len(), 1, "round {round}: {messages:?}");
        assert_eq!(
            messages[0]["attempt"], round,
            "round {round}: each hand-out is one attempt, and only hand-outs count"
        );
        server.kill();
        (server, base) = start(dir.path());
    }
    let messages = pull_max(&base, 1, 5_000);
    let dlq = dead_letters(&base);
    assert!(
        dlq.is_empty(),
        "three server restarts dead-lettered an event no consumer crashed on: {dlq:?}"
    );
    assert_eq!(
        messages.len(),
        1,
        "the event is delivered again: {messages:?}"
    );
    assert_eq!(messages[0]["event"]["id"], "only");
    assert_eq!(messages[0]["attempt"], 4);
    ack(&base, &messages);
    server.kill();
}

/// Events the server had read but never handed out keep their attempt count, and the
/// deliveries after an unclean restart come in batches as before (issue 20, item 2).
#[test]
fn given_a_sigkilled_server_events_never_handed_out_come_back_as_first_attempts_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, mut base) = start(dir.path());
    let (status, body) = common::json(
        "POST",
        &format!("{base}/v1/streams"),
        &json!({"name": "order", "partitions": 1}),
    )
    .expect("create the stream");
    assert_eq!(status, 201, "{body}");
    create_group(&base);
    publish_batch(&base, (0..10).map(|n| format!("before-{n}")));
    let held = pull_max(&base, 1, 5_000);
    assert_eq!(held.len(), 1, "{held:?}");
    let held_id = held[0]["event"]["id"].as_str().unwrap().to_string();
    server.kill();

    (server, base) = start(dir.path());
    publish_batch(&base, (0..201).map(|n| format!("after-{n}")));
    let mut seen = std::collections::HashMap::new();
    let mut pulls = 0;
    while seen.len() < 211 && pulls < 300 {
        let messages = pull_max(&base, 100, 2_000);
        pulls += 1;
        for message in &messages {
            let id = message["event"]["id"].as_str().unwrap().to_string();
            seen.insert(id, message["attempt"].as_u64().unwrap());
        }
        ack(&base, &messages);
    }
    server.kill();
    assert_eq!(
        seen.len(),
        211,
        "every event is delivered after the restart"
    );
    assert_eq!(
        seen[&held_id], 2,
        "the one handed out comes back as its second attempt"
    );
    let not_first: Vec<_> = seen
        .iter()
        .filter(|(id, attempt)| **id != held_id && **attempt != 1)
        .collect();
    assert!(
        not_first.is_empty(),
        "events never handed out came back as later attempts: {not_first:?}"
    );
    assert!(
        pulls <= 20,
        "{pulls} pulls of up to 100 for 211 ready events: deliveries after the restart were not batched"
    );
}
