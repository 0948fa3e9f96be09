//! A feature pipeline declared in `runnel.toml` survives SIGKILL: `runnel serve` is killed at
//! random moments while events are published, started again on its data directory, and the
//! results it published (ids, values, revisions) equal those of an uninterrupted run: nothing
//! missing, nothing doubled. On JetStream, two servers share the pipeline's group; one is killed
//! mid-run and the survivor takes its partitions with their window state: results unchanged.
//!
//! The input keeps within `max_out_of_orderness` (as the golden tests' permutation property
//! assumes): then which events a window holds does not depend on how deliveries were batched,
//! so two runs are comparable result by result. The JetStream half needs a nats-server at
//! `RUNNEL_TEST_NATS_URL` (`.ci/run` starts one); without it that test says it was skipped,
//! unless `RUNNEL_CI` is set.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use common::Serve;

const CONFIG: &str = r#"
default_partitions = 2

[[features]]
name = "spend"
input = "payment.charged"
window = { kind = "tumbling", size = "10s" }
max_out_of_orderness = "3s"
output = "feature.computed"
aggregates = [
  { name = "payments", kind = "count" },
  { name = "spent", kind = "sum", field = "/amount" },
  { name = "largest", kind = "max", field = "/amount" },
]
"#;

const EVENTS: usize = 400;
const BATCH: usize = 10;
const KEYS: usize = 8;
/// Event time of the first payment: 2026-01-01T00:00:00Z, in seconds.
const BASE: i64 = 1_767_225_600;
/// The flush events, far after every payment: they move each partition's watermark past
/// every window of the run.
const FLUSH_AT: i64 = BASE + 100_000;

fn time(seconds: i64, millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(seconds * 1000 + millis)
        .expect("a time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The run's input: payment `n` at about `n` seconds, up to 2 s early (within the 3 s bound),
/// then one flush event per key.
fn events() -> Vec<Value> {
    let mut rng = StdRng::seed_from_u64(21);
    let mut out: Vec<Value> = (0..EVENTS)
        .map(|n| {
            let jitter: i64 = rng.random_range(0..2_000);
            json!({
                "specversion": "1.0",
                "id": format!("pay-{n}"),
                "source": "test://features-crash",
                "type": "payment.charged",
                "time": time(BASE + n as i64, -jitter),
                "partitionkey": format!("card-{}", rng.random_range(0..KEYS)),
                "data": {"amount": rng.random_range(1..1_000)},
            })
        })
        .collect();
    out.extend((0..KEYS).map(|k| {
        json!({
            "specversion": "1.0",
            "id": format!("flush-{k}"),
            "source": "test://features-crash",
            "type": "payment.charged",
            "time": time(FLUSH_AT, 0),
            "partitionkey": format!("card-{k}"),
            "data": {"amount": 0},
        })
    }));
    out
}

/// Publishes a batch; `false` when the server could not be reached or did not accept it.
fn publish_batch(base: &str, batch: &[Value]) -> bool {
    matches!(
        common::request(
            "POST",
            &format!("{base}/v1/events"),
            "application/cloudevents-batch+json",
            Some(&Value::Array(batch.to_vec())),
        ),
        Some((202, _))
    )
}

/// Waits until `base` runs `partitions` input partitions of `spend`, each with its watermark
/// at the flush time and nothing left to publish.
fn wait_until_flushed(base: &str, partitions: usize) {
    let flushed = time(FLUSH_AT - 3, 0).replace(".000Z", "Z");
    let started = Instant::now();
    loop {
        if let Some((200, sets)) = common::request("GET", &format!("{base}/v1/features"), "", None)
        {
            let parts = sets[0]["partitions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let done = parts.len() == partitions
                && parts.iter().all(|p| {
                    p["watermark"].as_str() == Some(flushed.as_str()) && p["unpublished"] == 0
                });
            if done {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "the pipeline never caught up: {sets}"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every result event in the stream, through a fresh group: id → (key, window, revision,
/// values). Panics if an id comes twice.
fn results(base: &str) -> BTreeMap<String, Value> {
    let (status, body) = common::json(
        "PUT",
        &format!("{base}/v1/groups/check"),
        &json!({"filter": "feature.computed"}),
    )
    .expect("create the check group");
    assert!(status == 201 || status == 200, "{body}");
    let mut found = BTreeMap::new();
    let mut empty = 0;
    while empty < 3 {
        let (status, pulled) = common::json(
            "POST",
            &format!("{base}/v1/groups/check/pull"),
            &json!({"max": 500, "wait_ms": 500}),
        )
        .expect("pull");
        assert_eq!(status, 200, "{pulled}");
        let messages = pulled["messages"].as_array().cloned().unwrap_or_default();
        if messages.is_empty() {
            empty += 1;
            continue;
        }
        empty = 0;
        let receipts: Vec<Value> = messages.iter().map(|m| m["receipt"].clone()).collect();
        common::json(
            "POST",
            &format!("{base}/v1/groups/check/ack"),
            &json!({ "receipts": receipts }),
        )
        .expect("ack");
        for m in messages {
            let id = m["event"]["id"].as_str().expect("an id").to_string();
            let data = m["event"]["data"].clone();
            let result = json!({
                "key": data["key"],
                "window_start": data["window_start"],
                "window_end": data["window_end"],
                "revision": data["revision"],
                "values": data["values"],
            });
            assert!(
                found.insert(id.clone(), result).is_none(),
                "result {id} was published twice"
            );
        }
    }
    found
}

fn serve(config: &Path, data: &Path, extra: &[&OsStr]) -> Serve {
    let mut args = vec![
        OsStr::new("--config"),
        config.as_os_str(),
        OsStr::new("--data-dir"),
        data.as_os_str(),
    ];
    args.extend_from_slice(extra);
    Serve::start_with_log(args, std::process::Stdio::null())
}

/// The results of a run on the embedded backend without a crash.
fn uninterrupted() -> BTreeMap<String, Value> {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("runnel.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let server = serve(&config, &dir.path().join("data"), &[]);
    let base = server.url();
    for batch in events().chunks(BATCH) {
        assert!(publish_batch(&base, batch), "publish");
    }
    wait_until_flushed(&base, 2);
    let found = results(&base);
    assert!(
        found.len() > 100,
        "a run of {EVENTS} events fires many windows"
    );
    found
}

/// Input events the pipeline of the server at `base` has processed, over the partitions it
/// runs; `None` when the server does not answer.
fn processed(base: &str) -> Option<u64> {
    let (status, sets) = common::request("GET", &format!("{base}/v1/features"), "", None)?;
    (status == 200).then(|| {
        sets[0]["partitions"]
            .as_array()
            .map(|ps| ps.iter().filter_map(|p| p["next_offset"].as_u64()).sum())
            .unwrap_or(0)
    })
}

#[test]
fn sigkills_during_a_run_and_restarts_give_the_results_of_an_uninterrupted_run() {
    let expected = uninterrupted();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("runnel.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let data = dir.path().join("data");
    let mut server = serve(&config, &data, &[]);
    let all = events();
    // The first batch creates the stream; the pipeline's group finds it at its next
    // rebalance, and only then do the kills start.
    assert!(publish_batch(&server.url(), &all[..BATCH]), "publish");
    let started = Instant::now();
    while processed(&server.url()).unwrap_or(0) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the pipeline never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = Arc::new(Mutex::new(server.url()));
    let done = Arc::new(AtomicBool::new(false));
    // The publisher: batch after batch, slowly enough that the pipeline works between them;
    // a batch refused because the server was killed is published again to the restarted one
    // (the same ids: a copy already appended is deduplicated).
    let publisher = {
        let (url, done) = (url.clone(), done.clone());
        std::thread::spawn(move || {
            for batch in all[BATCH..].chunks(BATCH) {
                loop {
                    let base = url.lock().unwrap().clone();
                    if publish_batch(&base, batch) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut rng = StdRng::seed_from_u64(7);
    let mut kills = 0;
    let mut seen = 0;
    while !done.load(Ordering::SeqCst) {
        // Wait until the pipeline of this server has processed input since it started, then
        // kill it at a random moment of its work.
        let base = server.url();
        let started = Instant::now();
        while processed(&base).unwrap_or(0) <= seen && !done.load(Ordering::SeqCst) {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the pipeline made no progress"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..150)));
        if done.load(Ordering::SeqCst) {
            break;
        }
        seen = processed(&base).unwrap_or(seen);
        server.kill();
        kills += 1;
        server = serve(&config, &data, &[]);
        *url.lock().unwrap() = server.url();
    }
    publisher.join().expect("the publisher");
    assert!(kills >= 4, "only {kills} kills");
    wait_until_flushed(&server.url(), 2);
    let found = results(&server.url());
    // What the pipeline's group dead-lettered (a crash_loop would show here), for a failure.
    let dead = common::request(
        "GET",
        &format!("{}/v1/groups/features-spend/dlq", server.url()),
        "",
        None,
    )
    .map(|(_, body)| body.to_string())
    .unwrap_or_default();
    assert_eq!(
        found.len(),
        expected.len(),
        "as many results as without a crash ({kills} kills; the group's DLQ: {dead})"
    );
    assert_eq!(
        found, expected,
        "the same ids, windows, revisions and values"
    );
}

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

#[test]
fn on_jetstream_a_killed_servers_partitions_move_with_their_window_state() {
    let Some(nats) = nats_url() else { return };
    let expected = uninterrupted();

    let namespace = format!("feat{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("runnel.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let jetstream = [
        OsStr::new("--backend"),
        OsStr::new("jetstream"),
        OsStr::new("--nats-url"),
        OsStr::new(nats.as_str()),
        OsStr::new("--nats-namespace"),
        OsStr::new(namespace.as_str()),
    ];
    // Each with a data directory of its own: its own server id, so its own pipeline instance.
    let mut first = serve(&config, &dir.path().join("a"), &jetstream);
    let second = serve(&config, &dir.path().join("b"), &jetstream);
    let all = events();
    let (before, after) = all.split_at(EVENTS / 2);
    for (i, batch) in before.chunks(BATCH).enumerate() {
        let base = if i % 2 == 0 {
            first.url()
        } else {
            second.url()
        };
        assert!(publish_batch(&base, batch), "publish");
    }
    // Mid-run: each instance holds the window state of the partition it runs.
    let started = Instant::now();
    loop {
        let working = |base: &str| {
            common::request("GET", &format!("{base}/v1/features"), "", None).is_some_and(
                |(_, sets)| {
                    sets[0]["partitions"].as_array().is_some_and(|ps| {
                        ps.len() == 1 && ps[0]["next_offset"].as_u64().unwrap_or(0) > 0
                    })
                },
            )
        };
        if working(&first.url()) && working(&second.url()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the two servers never split the partitions"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    first.kill();
    for batch in after.chunks(BATCH) {
        assert!(publish_batch(&second.url(), batch), "publish");
    }
    // The survivor takes the dead server's partition once its lease lapses (15 s by default),
    // restoring the partition's stage from its checkpoint.
    wait_until_flushed(&second.url(), 2);
    let found = results(&second.url());
    assert_eq!(
        found.len(),
        expected.len(),
        "as many results as without a crash"
    );
    assert_eq!(
        found, expected,
        "the same ids, windows, revisions and values"
    );
}
