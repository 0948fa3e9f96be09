//! A real server on 127.0.0.1:0: a long poll answered by a later publish, the event stream
//! (Server-Sent Events), and a graceful stop that ends long polls and event streams.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_is_answered_by_a_later_publish() {
    let server = serve(|_| {}).await;
    let client = server.client.clone();
    client
        .json("PUT", "/v1/groups/waiter", &json!({"filter": "order.*"}))
        .await
        .unwrap();
    let puller = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .json(
                    "POST",
                    "/v1/groups/waiter/pull",
                    &json!({"max": 10, "wait_ms": 10_000}),
                )
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let published = client
        .publish(&event("late", "order.placed", json!(1)))
        .await
        .unwrap();
    assert_eq!(published.status, 202, "{}", published.text());
    let answer = puller.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["messages"][0]["event"]["id"], "late");
    // An empty long poll ends at its wait.
    let started = Instant::now();
    let empty = client
        .json("POST", "/v1/groups/waiter/pull", &json!({"wait_ms": 100}))
        .await
        .unwrap();
    assert_eq!(empty.json()["messages"], json!([]));
    assert!(started.elapsed() >= Duration::from_millis(100));
    server.stop().await;
}

/// Reads from `stream` until `needle` has arrived or the stream ends; returns what was read.
async fn read_until(stream: &mut TcpStream, seen: &mut String, needle: &str) -> bool {
    let mut buffer = [0u8; 4096];
    while !seen.contains(needle) {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => return false,
            Ok(Ok(n)) => seen.push_str(&String::from_utf8_lossy(&buffer[..n])),
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_pushes_messages_and_ends_on_shutdown() {
    let server = serve(|_| {}).await;
    let client = server.client.clone();
    client
        .json("PUT", "/v1/groups/pusher", &json!({"filter": "order.*"}))
        .await
        .unwrap();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /v1/groups/pusher/events HTTP/1.1\r\nhost: runnel\r\naccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut seen = String::new();
    assert!(
        read_until(&mut stream, &mut seen, "\r\n\r\n").await,
        "{seen}"
    );
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("text/event-stream"), "{seen}");

    client
        .publish(&event("pushed", "order.placed", json!({"n": 1})))
        .await
        .unwrap();
    assert!(
        read_until(&mut stream, &mut seen, "\"pushed\"").await,
        "{seen}"
    );
    assert!(seen.contains("event: message"), "{seen}");
    let data_line = seen
        .lines()
        .find(|l| l.starts_with("data:") && l.contains("pushed"))
        .unwrap();
    let message: serde_json::Value =
        serde_json::from_str(data_line.trim_start_matches("data:").trim()).unwrap();
    let receipt = message["receipt"].as_str().unwrap();
    let acked = client
        .json(
            "POST",
            "/v1/groups/pusher/ack",
            &json!({"receipts": [receipt]}),
        )
        .await
        .unwrap();
    assert_eq!(acked.json()["acked"], 1, "{}", acked.text());

    // A graceful stop ends the stream instead of waiting for it.
    let started = Instant::now();
    server.stop().await;
    assert!(!read_until(&mut stream, &mut seen, "never").await);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stopping took {:?}",
        started.elapsed()
    );
}

/// A forced deletion while an event stream reads the group: the stream must not start the
/// group's consumer again between stopping the old one and the deletion (it did, and handed
/// the held event out again, attempt 2, after the 204), and the group created again counts
/// from zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_deletion_ends_the_groups_event_stream_with_nothing_handed_out_after_it() {
    let server = serve(|_| {}).await;
    let client = server.client.clone();
    client
        .json("PUT", "/v1/groups/doomed", &json!({"filter": "order.*"}))
        .await
        .unwrap();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /v1/groups/doomed/events HTTP/1.1\r\nhost: runnel\r\naccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut seen = String::new();
    assert!(
        read_until(&mut stream, &mut seen, "\r\n\r\n").await,
        "{seen}"
    );
    client
        .publish(&event("held", "order.placed", json!({"n": 1})))
        .await
        .unwrap();
    assert!(
        read_until(&mut stream, &mut seen, "\"held\"").await,
        "{seen}"
    );
    assert!(read_until(&mut stream, &mut seen, "\n\n").await, "{seen}");
    let before = seen.len();

    let deleted = client
        .send("DELETE", "/v1/groups/doomed?force=true", &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    // The stream ends with the group's problem; nothing is handed out in between.
    assert!(
        read_until(&mut stream, &mut seen, "event: error").await,
        "{seen}"
    );
    let after = &seen[before..];
    assert!(
        !after.contains("event: message"),
        "handed out after the deletion: {after}"
    );
    assert!(after.contains("group.unknown"), "{after}");
    let gone = client.get("/v1/groups/doomed").await.unwrap();
    assert_eq!(gone.status, 404, "{}", gone.text());

    client
        .json("PUT", "/v1/groups/doomed", &json!({"filter": "order.*"}))
        .await
        .unwrap();
    let again = client.get("/v1/groups/doomed").await.unwrap();
    assert_eq!(
        again.json()["counters"]["delivered"],
        0,
        "the old group's counters: {}",
        again.text()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_ends_long_polls_at_once() {
    let server = serve(|_| {}).await;
    let client = server.client.clone();
    client
        .json("PUT", "/v1/groups/sleepy", &json!({"filter": "order.*"}))
        .await
        .unwrap();
    let puller = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .json(
                    "POST",
                    "/v1/groups/sleepy/pull",
                    &json!({"wait_ms": 30_000}),
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    server.stop().await;
    let answer = puller.await.unwrap().unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["messages"], json!([]));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        started.elapsed()
    );
}
