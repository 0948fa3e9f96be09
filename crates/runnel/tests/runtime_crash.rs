//! Consumer processes killed with SIGKILL at random moments, restarted, and then let finish:
//! - consume → transform → publish yields exactly one output per input (deterministic output
//!   ids + publish deduplication), however often the process died between publish and commit;
//! - with the processed-id store on, an event runs again after a crash only if its handler was
//!   still running when the process died (at most `max_in_flight` per crash), never because
//!   its offset was not yet committed;
//! - an event that aborts the process every time is quarantined as a crash loop after
//!   `max_crashes` crashes, each counted however soon after the start it comes.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use runnel_backend::{Backend, ReadFrom, StreamName};
use runnel_backend_embedded::{EmbeddedBackend, EmbeddedConfig, FsyncPolicy};
use runnel_envelope::{Event, EventType, Source};
use runnel_runtime::{Runnel, RuntimeConfig};

const EVENTS: u64 = 5_000;
const MAX_IN_FLIGHT: usize = 8;
/// Kills at random moments before a consumer is let finish.
const KILLS: usize = 10;

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

/// The consumer child's command line.
fn child_command(dir: &Path, mode: &str, out: Option<&Path>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_runnel"));
    command
        .args(["__consumer-child", "--mode", mode, "--max-in-flight"])
        .arg(MAX_IN_FLIGHT.to_string())
        .arg("--dir")
        .arg(dir);
    if let Some(out) = out {
        command.arg("--out").arg(out);
    }
    if mode != "poison" {
        // Random kills are not the events' fault: these tests are about redelivery, so no
        // event may be quarantined for being in flight when the test killed the process.
        command.args(["--max-crashes", "1000"]);
    }
    command
}

/// Starts the consumer child and waits for its `ready`: its group is configured and nothing
/// is consumed yet, so a kill from here on lands on a consumer that was up.
fn spawn_child(dir: &Path, mode: &str, out: Option<&Path>, extra: &[&str]) -> Child {
    let mut child = child_command(dir, mode, out)
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the consumer");
    let stdout = child.stdout.take().unwrap();
    let mut ready = String::new();
    BufReader::new(stdout).read_line(&mut ready).unwrap();
    if ready.is_empty() {
        // Its own error is on stderr, which the test shares.
        let status = child.wait().unwrap();
        panic!("the consumer ended before it was ready: {status}");
    }
    assert_eq!(ready.trim(), "ready");
    child
}

/// Runs the child and kills it at random moments, up to [`KILLS`] times, then lets it run
/// until `group` has no lag. Returns how many kills landed while work remained.
async fn run_until_caught_up(dir: &Path, mode: &str, group: &str, out: Option<&Path>) -> usize {
    let mut rng = rand::rng();
    for kill in 0..KILLS {
        let mut child = spawn_child(dir, mode, out, &[]);
        let pause = if kill < 4 {
            // The first consumer takes its leases at once: soon after its start it is busy.
            rng.random_range(80..400)
        } else {
            // A restarted one waits out its predecessor's leases (1 s) first.
            rng.random_range(1_000..3_000)
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
            return kill;
        }
    }
    // The rest without kills, however long it takes on this machine: the child stops by
    // itself once its group has no lag.
    let child = spawn_child(dir, mode, out, &["--until-caught-up"]);
    let status = wait_for_exit(child).await;
    assert!(status.success(), "the consumer failed: {status}");
    KILLS
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

/// How one run of the poisoned consumer ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// The poison aborted it.
    Crashed,
    /// It got past every event and stopped by itself.
    CaughtUp,
}

/// Waits for the child to end by itself. There is no deadline to meet, only a guard against
/// a hang: a slow machine just makes the wait longer.
async fn wait_for_exit(mut child: Child) -> ExitStatus {
    let give_up = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > give_up {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the consumer neither ended nor crashed in 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the poisoned consumer once, until it crashes or catches up. Its exit status says
/// which, whenever it comes: before or after its `ready` line (not waited for), or after a
/// slow start on a loaded machine.
async fn run_poisoned_once(dir: &Path, out: &Path) -> Ending {
    let child = child_command(dir, "poison", Some(out))
        .arg("--until-caught-up")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the consumer");
    let status = wait_for_exit(child).await;
    if status.success() {
        return Ending::CaughtUp;
    }
    // Its error, if it failed otherwise, is on stderr, which the test shares.
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "the consumer only ever dies by the poison: {status}"
    );
    Ending::Crashed
}

/// Publishes `count` orders of different customers, the one at `poison` marked to abort the
/// consumer; returns the poison's id.
async fn publish_with_poison(dir: &Path, count: u64, poison: u64) -> String {
    let (runnel, backend) = open(dir).await;
    let events: Vec<Event> = (0..count)
        .map(|n| {
            Event::builder(
                EventType::new("order.placed").unwrap(),
                Source::new("test").unwrap(),
            )
            .partition_key(format!("customer-{n}"))
            .data_json(serde_json::json!({ "n": n, "poison": n == poison }))
            .build()
            .unwrap()
        })
        .collect();
    let acks = runnel.publish_batch(events).await.unwrap();
    backend.close().await.unwrap();
    acks[poison as usize].id.clone()
}

/// Restarts the poisoned consumer until it catches up; returns how many runs crashed.
async fn crashes_until_caught_up(dir: &Path, out: &Path) -> u32 {
    let mut crashes = 0;
    for _ in 0..8 {
        match run_poisoned_once(dir, out).await {
            Ending::Crashed => crashes += 1,
            Ending::CaughtUp => return crashes,
        }
    }
    panic!("the consumer never got past the poison pill ({crashes} crashes)");
}

/// The group's dead-letter queue holds exactly the poison, quarantined as a crash loop.
async fn assert_quarantined_as_crash_loop(dir: &Path, poison_id: &str) {
    let (runnel, backend) = open(dir).await;
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
}

/// Ids of the events whose handler finished.
fn finished(out: &Path) -> std::collections::HashSet<String> {
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("e "))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_keeps_crashing_the_consumer_is_quarantined_as_a_crash_loop() {
    let dir = tempfile::tempdir().unwrap();
    let poison_id = publish_with_poison(dir.path(), 30, 10).await;
    let out = dir.path().join("handled.txt");
    std::fs::write(&out, "").unwrap();
    let crashes = crashes_until_caught_up(dir.path(), &out).await;
    assert_eq!(crashes, 3, "quarantined after max_crashes (3) crashes");
    assert_quarantined_as_crash_loop(dir.path(), &poison_id).await;
    let finished = finished(&out);
    assert_eq!(finished.len(), 29, "every other event was processed");
    assert!(!finished.contains(&poison_id));
}

/// A consumer once reached its poison before it said `ready`, and the test took the crash for
/// a consumer that never started. Here the poison is the first and only event, so each run
/// dies as soon as it consumes anything: every one of those crashes is counted, until the
/// quarantine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_dies_on_its_first_event_has_every_crash_counted() {
    let dir = tempfile::tempdir().unwrap();
    let poison_id = publish_with_poison(dir.path(), 1, 0).await;
    let out = dir.path().join("handled.txt");
    std::fs::write(&out, "").unwrap();
    let crashes = crashes_until_caught_up(dir.path(), &out).await;
    assert_eq!(crashes, 3, "quarantined after max_crashes (3) crashes");
    assert_quarantined_as_crash_loop(dir.path(), &poison_id).await;
    assert!(finished(&out).is_empty(), "the poison never finished");
}
