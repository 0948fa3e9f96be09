//! Consumer processes killed with SIGKILL at random moments, restarted until their group has
//! caught up:
//! - consume → transform → publish yields exactly one output per input (deterministic output
//!   ids + publish deduplication), however often the process died between publish and commit;
//! - with the processed-id store on, an event runs again after a crash only if its handler was
//!   still running when the process died (at most `max_in_flight` per crash), never because
//!   its offset was not yet committed.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use runnel_backend::{Backend, ReadFrom, StreamName};
use runnel_backend_embedded::{EmbeddedBackend, EmbeddedConfig, FsyncPolicy};
use runnel_envelope::{Event, EventType, Source};
use runnel_runtime::{Runnel, RuntimeConfig};

const EVENTS: u64 = 5_000;
const MAX_IN_FLIGHT: usize = 8;

async fn open(dir: &Path) -> (Runnel, Arc<dyn Backend>) {
    let backend: Arc<dyn Backend> = Arc::new(
        EmbeddedBackend::open(EmbeddedConfig {
            fsync: FsyncPolicy::group(),
            ..EmbeddedConfig::new(dir)
        })
        .await
        .expect("open backend"),
    );
    (
        Runnel::open(RuntimeConfig::default(), backend.clone()),
        backend,
    )
}

async fn publish_orders(dir: &Path) -> Vec<String> {
    let (runnel, backend) = open(dir).await;
    let events: Vec<Event> = (0..EVENTS)
        .map(|n| {
            Event::builder(
                EventType::new("order.placed").unwrap(),
                Source::new("test").unwrap(),
            )
            .partition_key(format!("customer-{}", n % 50))
            .data_json(serde_json::json!({ "n": n }))
            .build()
            .unwrap()
        })
        .collect();
    let acks = runnel.publish_batch(events).await.unwrap();
    backend.close().await.unwrap();
    acks.into_iter().map(|a| a.id).collect()
}

fn spawn_child(dir: &Path, mode: &str, out: Option<&Path>) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_runnel"));
    command
        .args(["__consumer-child", "--mode", mode, "--max-in-flight"])
        .arg(MAX_IN_FLIGHT.to_string())
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::piped());
    if let Some(out) = out {
        command.arg("--out").arg(out);
    }
    if mode != "poison" {
        // Random kills are not the events' fault: these tests are about redelivery, so no
        // event may be quarantined for being in flight when the test killed the process.
        command.args(["--max-crashes", "1000"]);
    }
    let mut child = command.spawn().expect("start the consumer");
    let stdout = child.stdout.take().unwrap();
    let mut ready = String::new();
    BufReader::new(stdout).read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    child
}

/// Runs the child, killing it at random moments, until `group` has no lag. Returns how many
/// kills landed while work remained.
async fn run_until_caught_up(dir: &Path, mode: &str, group: &str, out: Option<&Path>) -> usize {
    let mut rng = rand::rng();
    for cycle in 0..30 {
        let mut child = spawn_child(dir, mode, out);
        // Early kills come soon after start, so several land while work remains.
        let pause = if cycle < 6 {
            rng.random_range(80..400)
        } else {
            // Long enough to outlast the old lease (1 s) and finish recovering.
            4_000
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        if let Some(out) = out {
            let mut file = std::fs::OpenOptions::new().append(true).open(out).unwrap();
            writeln!(file, "killed").unwrap();
        }
        let (runnel, backend) = open(dir).await;
        let lag = runnel.lag(group).await.unwrap().total_events;
        backend.close().await.unwrap();
        if lag == 0 {
            // Every kill before this one landed while work remained.
            return cycle;
        }
    }
    panic!("{group} did not catch up in 30 restarts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_and_publish_gives_exactly_one_output_per_input_across_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    publish_orders(dir.path()).await;
    let kills = run_until_caught_up(dir.path(), "transform", "transformer", None).await;
    assert!(kills >= 2, "only {kills} kills landed mid-work");

    let (_, backend) = open(dir.path()).await;
    let invoices = StreamName::new("invoice").unwrap();
    let info = backend.describe_stream(&invoices).await.unwrap();
    let mut outputs_per_input: BTreeMap<u64, usize> = BTreeMap::new();
    for partition in &info.partitions {
        let records = backend
            .read(
                &invoices,
                partition.partition,
                ReadFrom::Offset(0),
                usize::MAX,
                usize::MAX,
            )
            .await
            .unwrap();
        for record in records {
            let event = Event::decode_binary(&record.value).unwrap();
            let n = event.data().as_json().unwrap()["n"].as_u64().unwrap();
            *outputs_per_input.entry(n).or_default() += 1;
        }
    }
    assert_eq!(
        outputs_per_input.len() as u64,
        EVENTS,
        "every input has an output"
    );
    let repeated: Vec<_> = outputs_per_input.iter().filter(|(_, c)| **c != 1).collect();
    assert!(
        repeated.is_empty(),
        "inputs with more than one output: {repeated:?}"
    );
    backend.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_processed_ids_only_handlers_running_at_the_crash_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let ids = publish_orders(dir.path()).await;
    let out = dir.path().join("side-effects.txt");
    std::fs::write(&out, "").unwrap();
    run_until_caught_up(dir.path(), "record", "recorder", Some(&out)).await;

    let text = std::fs::read_to_string(&out).unwrap();
    let mut runs: HashMap<&str, usize> = HashMap::new();
    let mut finished: HashMap<&str, usize> = HashMap::new();
    let mut kills = 0;
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("b", id)) => *runs.entry(id).or_default() += 1,
            Some(("e", id)) => *finished.entry(id).or_default() += 1,
            _ if line == "killed" => kills += 1,
            _ => panic!("unexpected line {line:?}"),
        }
    }
    for id in &ids {
        assert!(
            runs.get(id.as_str()).is_some_and(|n| *n >= 1),
            "{id} never ran"
        );
        assert!(finished.contains_key(id.as_str()), "{id} never finished");
    }
    let repeats: usize = runs.values().map(|n| n - 1).sum();
    assert!(
        repeats <= kills * MAX_IN_FLIGHT,
        "{repeats} repeated runs over {kills} kills: more than the {MAX_IN_FLIGHT} in flight per crash"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_keeps_crashing_the_consumer_is_quarantined_as_a_crash_loop() {
    let dir = tempfile::tempdir().unwrap();
    let poison_id = {
        let (runnel, backend) = open(dir.path()).await;
        let events: Vec<Event> = (0..30u64)
            .map(|n| {
                Event::builder(
                    EventType::new("order.placed").unwrap(),
                    Source::new("test").unwrap(),
                )
                .partition_key(format!("customer-{n}"))
                .data_json(serde_json::json!({ "n": n, "poison": n == 10 }))
                .build()
                .unwrap()
            })
            .collect();
        let acks = runnel.publish_batch(events).await.unwrap();
        backend.close().await.unwrap();
        acks[10].id.clone()
    };
    let out = dir.path().join("handled.txt");
    std::fs::write(&out, "").unwrap();
    let mut crashes = 0;
    let mut survived = false;
    for _ in 0..8 {
        let mut child = spawn_child(dir.path(), "poison", Some(&out));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut exited = None;
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                exited = Some(status);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match exited {
            Some(status) => {
                assert!(
                    !status.success(),
                    "the consumer only ever dies by the poison"
                );
                crashes += 1;
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                let (runnel, backend) = open(dir.path()).await;
                let lag = runnel.lag("poisoned").await.unwrap().total_events;
                backend.close().await.unwrap();
                if lag == 0 {
                    survived = true;
                    break;
                }
            }
        }
    }
    assert!(survived, "the consumer never got past the poison pill");
    assert_eq!(crashes, 3, "quarantined after max_crashes (3) crashes");
    let (runnel, backend) = open(dir.path()).await;
    let dlq = runnel
        .dlq_list("poisoned", &runnel_runtime::DlqFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(
        dlq.entries.len(),
        1,
        "{:#?}",
        dlq.entries
            .iter()
            .map(|e| (&e.id, &e.reason, e.attempts))
            .collect::<Vec<_>>()
    );
    assert_eq!(dlq.entries[0].event_id, poison_id);
    assert!(
        dlq.entries[0].reason.starts_with("crash_loop"),
        "{}",
        dlq.entries[0].reason
    );
    backend.close().await.unwrap();
    let handled = std::fs::read_to_string(&out).unwrap();
    let finished: std::collections::HashSet<&str> = handled
        .lines()
        .filter_map(|l| l.strip_prefix("e "))
        .collect();
    assert_eq!(finished.len(), 29, "every other event was processed");
    assert!(!finished.contains(poison_id.as_str()));
}
