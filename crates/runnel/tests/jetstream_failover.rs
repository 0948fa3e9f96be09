//! Two `runnel serve` processes on one JetStream share a consumer group; one is killed with
//! SIGKILL while events are published and consumed through both. The survivor takes the dead
//! server's partitions once their leases lapse, and every event either server answered 202 is
//! handed to the group's consumers and acknowledged.
//!
//! Needs a nats-server 2.10+ with JetStream at `RUNNEL_TEST_NATS_URL` (`.ci/run` starts one);
//! without it the test says it was skipped, unless `RUNNEL_CI` is set.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::Serve;

const LEASE_TTL_MS: u64 = 2_000;
const PARTITIONS: u32 = 4;

fn nats_url() -> Option<String> {
    match std::env::var("RUNNEL_TEST_NATS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("RUNNEL_CI").is_none(),
                "RUNNEL_CI is set but RUNNEL_TEST_NATS_URL is not"
            );
            println!("skipped: set RUNNEL_TEST_NATS_URL to a nats-server 2.10+ with JetStream");
            None
        }
    }
}

/// A `runnel serve --backend jetstream` child with a data directory of its own (so its own
/// server id); killed when dropped.
struct ServerProcess {
    serve: Serve,
    url: String,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    fn start(nats_url: &str, namespace: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let serve = Serve::start([
            OsStr::new("--backend"),
            OsStr::new("jetstream"),
            OsStr::new("--nats-url"),
            OsStr::new(nats_url),
            OsStr::new("--nats-namespace"),
            OsStr::new(namespace),
            OsStr::new("--data-dir"),
            dir.path().as_os_str(),
        ]);
        let url = serve.url();
        Self {
            serve,
            url,
            _dir: dir,
        }
    }

    fn kill(&mut self) {
        self.serve.kill();
    }
}

/// What the consumer of one server pulled and acknowledged: (event id, partition).
#[derive(Default)]
struct Consumed {
    acked: Vec<(String, u32)>,
    /// Processed, but the ack got no answer (the server was killed with it in flight). The
    /// server may have recorded it (then it is not delivered again) or not (then it is).
    unanswered: Vec<String>,
}

/// Pulls and acks through `base` until `stop`, recording each acknowledged message.
fn consume(base: String, stop: Arc<AtomicBool>, record: Arc<Mutex<Consumed>>) {
    while !stop.load(Ordering::Relaxed) {
        let Some((200, pulled)) = common::json(
            "POST",
            &format!("{base}/v1/groups/billing/pull"),
            &json!({"max": 50, "wait_ms": 200}),
        ) else {
            // Killed (or not yet reachable): this consumer is gone.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let messages = pulled["messages"].as_array().cloned().unwrap_or_default();
        if messages.is_empty() {
            continue;
        }
        let receipts: Vec<Value> = messages.iter().map(|m| m["receipt"].clone()).collect();
        let answer = common::json(
            "POST",
            &format!("{base}/v1/groups/billing/ack"),
            &json!({ "receipts": receipts }),
        );
        // A 404/409 answer acknowledges every receipt it does not list as unknown or lapsed
        // (a lapsed one is delivered again, wherever its partition went).
        let refused: HashSet<String> = match &answer {
            Some((404 | 409, problem)) => ["unknown", "expired"]
                .iter()
                .flat_map(|member| problem[*member].as_array().cloned().unwrap_or_default())
                .filter_map(|receipt| receipt.as_str().map(str::to_string))
                .collect(),
            _ => HashSet::new(),
        };
        let mut record = record.lock().expect("record lock");
        for m in &messages {
            let id = m["event"]["id"].as_str().unwrap_or_default().to_string();
            let partition = m["partition"].as_u64().unwrap_or(u64::MAX) as u32;
            let receipt = m["receipt"].as_str().unwrap_or_default();
            match answer {
                Some((200, _)) => record.acked.push((id, partition)),
                Some((404 | 409, _)) if !refused.contains(receipt) => {
                    record.acked.push((id, partition))
                }
                None => record.unanswered.push(id),
                // Refused (e.g. a lapsed receipt): it will be delivered again.
                Some(_) => {}
            }
        }
    }
}

fn event(n: usize) -> Value {
    json!({
        "specversion": "1.0",
        "id": format!("evt-{n}"),
        "source": "test://failover",
        "type": "order.placed",
        "partitionkey": format!("customer-{}", n % 97),
        "data": {"n": n},
    })
}

/// Publishes events `range` through `base`; returns the ids answered 202.
fn publish(base: &str, range: std::ops::Range<usize>) -> Vec<String> {
    let mut accepted = Vec::new();
    for n in range {
        if let Some((202, _)) = common::publish(base, &event(n)) {
            accepted.push(format!("evt-{n}"));
        }
    }
    accepted
}

#[test]
fn a_killed_servers_partitions_move_to_the_survivor_and_every_accepted_event_is_consumed() {
    let Some(nats) = nats_url() else { return };
    let namespace = format!("f{}", std::process::id());
    let mut a = ServerProcess::start(&nats, &namespace);
    let b = ServerProcess::start(&nats, &namespace);

    let (status, _) = common::json(
        "POST",
        &format!("{}/v1/streams", a.url),
        &json!({"name": "order", "partitions": PARTITIONS}),
    )
    .expect("create the stream");
    assert!(status == 201 || status == 200, "create stream: {status}");
    let (status, _) = common::json(
        "PUT",
        &format!("{}/v1/groups/billing", a.url),
        &json!({"filter": "order.*", "lease_ttl": LEASE_TTL_MS, "processed_ids": true}),
    )
    .expect("create the group");
    assert_eq!(status, 201, "create group");

    let stop = Arc::new(AtomicBool::new(false));
    let through_a = Arc::new(Mutex::new(Consumed::default()));
    let through_b = Arc::new(Mutex::new(Consumed::default()));
    let consumers = [
        (a.url.clone(), through_a.clone()),
        (b.url.clone(), through_b.clone()),
    ]
    .into_iter()
    .map(|(url, record)| {
        let stop = stop.clone();
        std::thread::spawn(move || consume(url, stop, record))
    })
    .collect::<Vec<_>>();

    // Publish through both, until each server's consumer has been handed events.
    let mut accepted = Vec::new();
    let mut next = 0;
    let both_consuming = Instant::now();
    loop {
        accepted.extend(publish(&a.url, next..next + 50));
        accepted.extend(publish(&b.url, next + 50..next + 100));
        next += 100;
        let a_has = !through_a.lock().unwrap().acked.is_empty();
        let b_has = !through_b.lock().unwrap().acked.is_empty();
        if a_has && b_has {
            break;
        }
        assert!(
            both_consuming.elapsed() < Duration::from_secs(30),
            "the two servers did not both get partitions of the group within 30 s \
             ({} published, {} acked through A, {} through B)",
            accepted.len(),
            through_a.lock().unwrap().acked.len(),
            through_b.lock().unwrap().acked.len()
        );
    }
    let partitions_of = |record: &Arc<Mutex<Consumed>>| -> BTreeSet<u32> {
        record
            .lock()
            .unwrap()
            .acked
            .iter()
            .map(|(_, p)| *p)
            .collect()
    };
    let a_partitions = partitions_of(&through_a);
    println!("before the kill: A consumed partitions {a_partitions:?}");

    a.kill();
    let killed_at = Instant::now();
    let b_before = through_b.lock().unwrap().acked.len();
    // Publishing goes on through the survivor.
    accepted.extend(publish(&b.url, next..next + 300));

    // The survivor takes over A's partitions once their leases lapse.
    let taken_over = loop {
        let taken: BTreeSet<u32> = through_b.lock().unwrap().acked[b_before..]
            .iter()
            .map(|(_, p)| *p)
            .filter(|p| a_partitions.contains(p))
            .collect();
        if taken == a_partitions {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < Duration::from_millis(LEASE_TTL_MS) + Duration::from_secs(13),
            "the survivor did not consume the dead server's partitions {a_partitions:?} \
             within 30 s (it took {taken:?})"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    println!(
        "the survivor consumed from all of A's partitions {taken_over:?} after the kill \
         (lease_ttl {LEASE_TTL_MS} ms)"
    );

    // Every accepted event is acknowledged by one of the consumers, or was processed by A with
    // its ack in flight when A died (recorded or not: if not, B delivers it again).
    let deadline = Instant::now() + Duration::from_secs(60);
    let missing = loop {
        let a = through_a.lock().unwrap();
        let b = through_b.lock().unwrap();
        let consumed: HashSet<String> = a
            .acked
            .iter()
            .chain(b.acked.iter())
            .map(|(id, _)| id.clone())
            .chain(a.unanswered.iter().cloned())
            .collect();
        drop((a, b));
        let missing: Vec<&String> = accepted
            .iter()
            .filter(|id| !consumed.contains(*id))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing.into_iter().cloned().collect::<Vec<_>>();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    stop.store(true, Ordering::Relaxed);
    for consumer in consumers {
        consumer.join().expect("consumer thread");
    }
    assert!(
        missing.is_empty(),
        "{} of {} accepted events were never consumed, e.g. {:?}",
        missing.len(),
        accepted.len(),
        &missing[..missing.len().min(5)]
    );
    // With `processed_ids`, an ack answered 200 is recorded durably: the survivor skips
    // those events instead of handing them out again.
    let mut times: HashMap<String, usize> = HashMap::new();
    for (id, _) in through_a
        .lock()
        .unwrap()
        .acked
        .iter()
        .chain(through_b.lock().unwrap().acked.iter())
    {
        *times.entry(id.clone()).or_default() += 1;
    }
    let again: Vec<&String> = times
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    let acked: HashSet<&String> = times.keys().collect();
    let recorded_unanswered = through_a
        .lock()
        .unwrap()
        .unanswered
        .iter()
        .filter(|id| !acked.contains(id))
        .count();
    println!(
        "{} accepted, all consumed ({recorded_unanswered} processed by A with the ack \
         unanswered and, recorded before the kill, not delivered again)",
        accepted.len()
    );
    assert!(
        again.is_empty(),
        "{} events were acknowledged (200) twice, e.g. {:?}",
        again.len(),
        &again[..again.len().min(5)]
    );
    drop(b);
    delete_namespace(&nats, &namespace);
}

fn delete_namespace(nats: &str, namespace: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let config = runnel_backend_jetstream::JetStreamConfig {
            namespace: namespace.to_string(),
            ..runnel_backend_jetstream::JetStreamConfig::new(nats)
        };
        if let Err(error) =
            runnel_backend_jetstream::JetStreamBackend::delete_namespace(config).await
        {
            eprintln!("could not delete the test namespace {namespace}: {error}");
        }
    });
}
