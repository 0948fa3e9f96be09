//! The real `runnel serve` process under publish load, stopped with SIGTERM: it exits 0, and
//! every publish it answered 202 is consumable after a restart.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runnel_server::testing::Client;
use serde_json::{Value, json};

use common::Serve;

/// `runnel serve` on `dir`.
fn start(dir: &Path) -> Serve {
    Serve::start([std::ffi::OsStr::new("--data-dir"), dir.as_os_str()])
}

/// Waits for the child to exit; returns its exit code.
fn wait_exit(mut server: Serve, limit: Duration) -> Option<i32> {
    let started = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status.code();
        }
        if started.elapsed() > limit {
            panic!("runnel serve did not exit within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn load_event(worker: usize, n: usize) -> Value {
    json!({
        "specversion": "1.0",
        "id": format!("w{worker}-{n}"),
        "source": "/load",
        "type": "load.generated",
        "partitionkey": format!("k{}", n % 16),
        "data": {"worker": worker, "n": n, "pad": "x".repeat(100)},
    })
}

/// Publishes until the server stops answering; returns the ids answered 202.
async fn publisher(client: Client, worker: usize, accepted: Arc<Mutex<Vec<String>>>) {
    let mut n = 0;
    // Bounded: the server is stopped long before this.
    while n < 200_000 {
        let result = if n % 2 == 0 {
            let event = load_event(worker, n);
            n += 1;
            client.publish(&event).await.map(|a| (a, vec![event]))
        } else {
            let events: Vec<Value> = (n..n + 10).map(|i| load_event(worker, i)).collect();
            n += 10;
            client.publish_batch(&events).await.map(|a| (a, events))
        };
        match result {
            Ok((answer, events)) if answer.status == 202 => {
                let mut accepted = accepted.lock().unwrap();
                accepted.extend(events.iter().map(|e| e["id"].as_str().unwrap().to_string()));
            }
            // Refused or cut off by the shutdown: not acknowledged, so not promised.
            Ok(_) | Err(_) => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_zero_and_keeps_every_accepted_publish() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let addr = server.addr;
    let client = Client::new(addr);
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..8)
        .map(|w| tokio::spawn(publisher(client.clone(), w, accepted.clone())))
        .collect();
    // Let the load build up, then stop the server in the middle of it.
    let started = Instant::now();
    while accepted.lock().unwrap().len() < 2_000 && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.signal(libc::SIGTERM);
    let code = tokio::task::spawn_blocking(move || wait_exit(server, Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "runnel serve must exit 0 after SIGTERM");
    for worker in workers {
        worker.await.unwrap();
    }
    let accepted: HashSet<String> = accepted.lock().unwrap().iter().cloned().collect();
    assert!(
        accepted.len() >= 2_000,
        "only {} publishes were accepted",
        accepted.len()
    );

    let server = start(dir.path());
    let addr = server.addr;
    let client = Client::new(addr);
    let put = client
        .json(
            "PUT",
            "/v1/groups/verify",
            &json!({"filter": "load.*", "max_ack_pending": 10000}),
        )
        .await
        .unwrap();
    assert_eq!(put.status, 201, "{}", put.text());
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !accepted.is_subset(&seen) && Instant::now() < deadline {
        let pulled = client
            .json(
                "POST",
                "/v1/groups/verify/pull",
                &json!({"max": 1000, "wait_ms": 1000}),
            )
            .await
            .unwrap()
            .json();
        let messages = pulled["messages"].as_array().cloned().unwrap_or_default();
        let receipts: Vec<Value> = messages.iter().map(|m| m["receipt"].clone()).collect();
        for message in &messages {
            seen.insert(message["event"]["id"].as_str().unwrap().to_string());
        }
        if !receipts.is_empty() {
            client
                .json(
                    "POST",
                    "/v1/groups/verify/ack",
                    &json!({"receipts": receipts}),
                )
                .await
                .unwrap();
        }
    }
    let missing: Vec<_> = accepted.difference(&seen).take(10).collect();
    assert!(
        missing.is_empty(),
        "{} of {} accepted publishes are missing after the restart, e.g. {missing:?}",
        accepted.difference(&seen).count(),
        accepted.len()
    );
    println!(
        "{} publishes accepted before SIGTERM, all consumable after restart ({} events in the log)",
        accepted.len(),
        seen.len()
    );
    server.signal(libc::SIGTERM);
    let code = tokio::task::spawn_blocking(move || wait_exit(server, Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}
