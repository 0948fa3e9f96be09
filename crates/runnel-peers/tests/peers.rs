//! Each driver against the real local service: a few hundred events published to a topic
//! with two groups, and each group consumes every one of them exactly once.
//!
//! Services: Redis on 127.0.0.1:6379, RabbitMQ on 127.0.0.1:5672 (guest/guest), and the
//! nats-server named by `RUNNEL_TEST_NATS_URL` (2.10+, with JetStream). A service that is
//! absent makes its test print `skipped: …` and pass — unless `RUNNEL_CI` is set, where it
//! fails.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use runnel_peers::jetstream::JetStreamPeer;
use runnel_peers::rabbitmq::{QueueKind, RabbitPeer};
use runnel_peers::redis_streams::RedisPeer;
use runnel_peers::{OnEvent, Peer, PeerError, parse_payload, workload};

const EVENTS: u64 = 300;

/// The peer, or `None` after saying why it is skipped (a failure under `RUNNEL_CI`).
fn available<P>(service: &str, peer: Result<P, PeerError>) -> Option<P> {
    match peer {
        Ok(peer) => Some(peer),
        Err(error) => {
            assert!(
                std::env::var_os("RUNNEL_CI").is_none(),
                "RUNNEL_CI is set but {service} is not reachable: {error}"
            );
            println!("skipped: {service} is not reachable: {error}");
            None
        }
    }
}

/// Publishes `EVENTS` events to a fresh topic with groups `a` and `b` and checks that each
/// group consumes every sequence number once.
async fn every_event_is_consumed_once_per_group(peer: &dyn Peer) {
    let groups = vec!["a".to_string(), "b".to_string()];
    let topic = peer.open(&groups).await.expect("open a topic");
    let published = workload::preload(&topic, 100, EVENTS, Duration::from_secs(60))
        .await
        .expect("publish");
    assert_eq!(published, EVENTS);
    for group in &groups {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let on_event: OnEvent = Arc::new(move |bytes: &[u8]| {
            let (_, seq) = parse_payload(bytes).expect("a bench payload");
            sink.lock().unwrap().push(seq);
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let consumed = topic
            .consume(group, EVENTS, on_event, deadline)
            .await
            .expect("consume");
        assert_eq!(consumed, EVENTS, "{} group {group}", peer.name());
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..EVENTS).collect::<Vec<_>>(),
            "{} group {group}",
            peer.name()
        );
    }
    topic.close().await.expect("delete the topic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_streams_deliver_every_event_once_per_group() {
    let peer = RedisPeer::connect("redis://127.0.0.1:6379", "redis", "as configured").await;
    let Some(peer) = available("Redis on 127.0.0.1:6379", peer) else {
        return;
    };
    every_event_is_consumed_once_per_group(&peer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_classic_queues_deliver_every_event_once_per_group() {
    let peer =
        RabbitPeer::connect("amqp://guest:guest@127.0.0.1:5672/%2f", QueueKind::Classic).await;
    let Some(peer) = available("RabbitMQ on 127.0.0.1:5672", peer) else {
        return;
    };
    every_event_is_consumed_once_per_group(&peer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_quorum_queues_deliver_every_event_once_per_group() {
    let peer =
        RabbitPeer::connect("amqp://guest:guest@127.0.0.1:5672/%2f", QueueKind::Quorum).await;
    let Some(peer) = available("RabbitMQ on 127.0.0.1:5672", peer) else {
        return;
    };
    every_event_is_consumed_once_per_group(&peer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_delivers_every_event_once_per_group() {
    let url = match std::env::var("RUNNEL_TEST_NATS_URL") {
        Ok(url) if !url.is_empty() => Ok(url),
        _ => Err(PeerError::Unreachable {
            peer: "jetstream",
            address: "RUNNEL_TEST_NATS_URL".into(),
            reason: "not set (e.g. nats://127.0.0.1:14222, nats-server 2.10+ with -js)".into(),
        }),
    };
    let Some(url) = available("nats-server (RUNNEL_TEST_NATS_URL)", url) else {
        return;
    };
    let peer = JetStreamPeer::connect(&url, "jetstream", "as configured").await;
    let Some(peer) = available("nats-server (RUNNEL_TEST_NATS_URL)", peer) else {
        return;
    };
    every_event_is_consumed_once_per_group(&peer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_workload_sees_every_event_it_published() {
    let peer = RedisPeer::connect("redis://127.0.0.1:6379", "redis", "as configured").await;
    let Some(peer) = available("Redis on 127.0.0.1:6379", peer) else {
        return;
    };
    let figures = workload::latency(
        &peer,
        100,
        2_000,
        Duration::from_millis(200),
        Duration::from_secs(20),
    )
    .await
    .expect("latency run");
    assert_eq!(figures.events, 400);
    assert!(figures.p50_us.is_some() && figures.p999_us >= figures.p50_us);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_redis_with_appendfsync_always_serves_the_driver() {
    let binary = std::path::Path::new("redis-server");
    let server = runnel_peers::process::start_redis(binary, "always").await;
    let Some(server) = available("redis-server on PATH", server) else {
        return;
    };
    let peer = RedisPeer::connect(&server.url("redis"), "redis-always", "fsync")
        .await
        .expect("connect");
    assert_eq!(
        peer.persistence().await.expect("config get"),
        ("yes".to_string(), "always".to_string())
    );
    every_event_is_consumed_once_per_group(&peer).await;
}
