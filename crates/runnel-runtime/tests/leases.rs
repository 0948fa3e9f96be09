//! Several instances of one group share partitions through leases; a silent instance's
//! partitions move to the others once its lease TTL passes on the (manual) clock.

mod common;

use std::time::Duration;

use common::*;
use runnel_backend::StreamConfig;
use runnel_runtime::{GroupConfig, HandlerError, TypePattern};

fn config() -> GroupConfig {
    GroupConfig {
        // Long enough that no background heartbeat runs during the test: the test drives
        // rebalancing with `rebalance_now` and moves time with the manual clock.
        lease_ttl: Duration::from_secs(600),
        ..GroupConfig::new("shared", TypePattern::new("order.*").unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_split_partitions_and_a_silent_one_loses_them_after_the_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock_now();
    let runnel = open_runtime(dir.path(), &clock).await;
    let stream = runnel_backend::StreamName::new("order").unwrap();
    runnel
        .create_stream(
            &stream,
            StreamConfig {
                partitions: 6,
                ..StreamConfig::default()
            },
        )
        .await
        .unwrap();
    let handler = |_m| async { Ok::<_, HandlerError>(vec![]) };
    let a = runnel
        .group("shared")
        .config(config())
        .instance_id("a")
        .run(handler)
        .await
        .unwrap();
    assert_eq!(
        a.owned_partitions().await.len(),
        6,
        "alone, a owns everything"
    );

    let b = runnel
        .group("shared")
        .config(config())
        .instance_id("b")
        .run(handler)
        .await
        .unwrap();
    // a hands over b's share at its next heartbeat, then b takes it at its own.
    a.rebalance_now().await.unwrap();
    b.rebalance_now().await.unwrap();
    let (owned_a, owned_b) = (a.owned_partitions().await, b.owned_partitions().await);
    assert_eq!(
        (owned_a.len(), owned_b.len()),
        (3, 3),
        "{owned_a:?} / {owned_b:?}"
    );
    assert!(owned_a.iter().all(|p| !owned_b.contains(p)), "disjoint");

    // a goes silent. Before the TTL passes, b cannot take a's partitions...
    a.pause_heartbeat();
    clock.advance(Duration::from_secs(599));
    b.rebalance_now().await.unwrap();
    assert_eq!(b.owned_partitions().await.len(), 3);
    // ...after it, b owns them all.
    clock.advance(Duration::from_secs(2));
    b.rebalance_now().await.unwrap();
    assert_eq!(b.owned_partitions().await.len(), 6);
    b.stop().await.unwrap();
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_instance_hands_its_partitions_over_with_its_progress() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock_now();
    let runnel = open_runtime(dir.path(), &clock).await;
    for n in 0..100 {
        runnel
            .publish(event("order.placed", &format!("k{n}"), n))
            .await
            .unwrap();
    }
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let a = runnel
        .group("shared")
        .config(config())
        .instance_id("a")
        .run(move |m| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(number(&m.event));
                Ok::<_, HandlerError>(vec![])
            }
        })
        .await
        .unwrap();
    eventually("a handled everything", || seen.lock().unwrap().len() == 100).await;
    a.stop().await.unwrap();
    let lag = runnel.lag("shared").await.unwrap();
    assert_eq!(
        lag.total_events, 0,
        "stopping commits what is done: {lag:?}"
    );

    let again = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = again.clone();
    let b = runnel
        .group("shared")
        .config(config())
        .instance_id("b")
        .run(move |m| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(number(&m.event));
                Ok::<_, HandlerError>(vec![])
            }
        })
        .await
        .unwrap();
    assert_eq!(b.owned_partitions().await.len(), 4);
    runnel
        .publish(event("order.placed", "late", 100))
        .await
        .unwrap();
    eventually("b handled the new event", || {
        !again.lock().unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        *again.lock().unwrap(),
        vec![100],
        "b starts where a stopped"
    );
    b.stop().await.unwrap();
}
