//! A real crash test of the embedded backend: a child process appends records, commits group
//! offsets and writes keys from several concurrent writers, printing each write once it is
//! acknowledged, and is killed with SIGKILL at a random moment. After each kill the backend is
//! reopened and every acknowledged write must be there, cycle after cycle.
//!
//! This test target has no libtest harness (`harness = false`): `main` is the test when
//! [`CHILD_DIR`] is unset and the child process when it is set. (A `[[bin]]` target would make
//! `cargo run` ambiguous in the workspace.)

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use runnel_backend::{Backend, Expect, ReadFrom, Record, StreamConfig};
use runnel_backend_embedded::{EmbeddedBackend, EmbeddedConfig, FsyncPolicy};
use runnel_test_util::{stream, temp_dir};

const CHILD_DIR: &str = "RUNNEL_EMBEDDED_CRASH_CHILD_DIR";
const CHILD_CYCLE: &str = "RUNNEL_EMBEDDED_CRASH_CHILD_CYCLE";
const READY: &str = "CHILD READY";
const CYCLES: usize = 8;
const WRITERS: u32 = 4;
const PARTITIONS: u32 = 2;
const STREAM: &str = "crash";
const BUCKET: &str = "crash";

fn backend_config(dir: &Path) -> EmbeddedConfig {
    EmbeddedConfig {
        fsync: FsyncPolicy::group(),
        // Small segments so kills also land around segment rolls.
        segment_bytes: 16 << 10,
        ..EmbeddedConfig::new(dir)
    }
}

fn main() {
    match std::env::var_os(CHILD_DIR) {
        Some(dir) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("child: a runtime");
            runtime.block_on(child(PathBuf::from(dir)));
        }
        None => {
            acknowledged_records_offsets_and_kv_writes_survive_sigkill();
            println!("test acknowledged_records_offsets_and_kv_writes_survive_sigkill ... ok");
        }
    }
}

/// The child process: writes from several writers until killed.
async fn child(dir: PathBuf) {
    let cycle = std::env::var(CHILD_CYCLE).unwrap_or_default();
    let backend = Arc::new(
        EmbeddedBackend::open(backend_config(Path::new(&dir)))
            .await
            .expect("child: open"),
    );
    backend
        .create_stream(
            &stream(STREAM),
            StreamConfig {
                partitions: PARTITIONS,
                ..StreamConfig::default()
            },
        )
        .await
        .expect("child: create stream");
    say(READY.to_string());
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| tokio::spawn(write_until_killed(backend.clone(), cycle.clone(), writer)))
        .collect();
    for writer in writers {
        writer.await.expect("child: writer");
    }
}

/// Appends, commits and writes a key in a loop, printing each acknowledged write. Bounded so
/// a child that is never killed still ends.
async fn write_until_killed(backend: Arc<EmbeddedBackend>, cycle: String, writer: u32) {
    let s = stream(STREAM);
    let partition = writer % PARTITIONS;
    let group = format!("group-{writer}");
    let key = format!("key-{writer}");
    for i in 0..20_000u32 {
        let value = format!("c{cycle}-w{writer}-{i}");
        let ack = backend
            .append(&s, partition, vec![Record::new(key.clone(), value.clone())])
            .await
            .expect("child: append");
        say(format!(
            "ACK append {partition} {} {value}",
            ack.base_offset
        ));
        let next = ack.base_offset + 1;
        let revision = backend
            .commit_offset(&group, &s, partition, next, Expect::Any)
            .await
            .expect("child: commit");
        say(format!("ACK offset {group} {partition} {next} {revision}"));
        let revision = backend
            .kv_put(BUCKET, &key, Bytes::from(value.clone()), Expect::Any, None)
            .await
            .expect("child: kv put");
        say(format!("ACK kv {key} {revision} {value}"));
    }
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    // A closed pipe means the parent is gone; there is nobody left to tell.
    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
}

/// Everything children acknowledged, over all cycles.
#[derive(Default)]
struct Acknowledged {
    /// (partition, offset) → value
    records: BTreeMap<(u32, u64), String>,
    /// (group, partition) → (revision, offset) of the latest acknowledged commit
    offsets: BTreeMap<(String, u32), (u64, u64)>,
    /// key → (revision, value) of the latest acknowledged write
    kv: BTreeMap<String, (u64, String)>,
}

impl Acknowledged {
    /// Takes one line of a child's output; returns whether it was an acknowledgement. A line
    /// cut short by the kill does not parse and is ignored.
    fn take(&mut self, line: &str) -> bool {
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            ["ACK", "append", partition, offset, value] => {
                let (Ok(partition), Ok(offset)) = (partition.parse(), offset.parse()) else {
                    return false;
                };
                self.records.insert((partition, offset), value.to_string());
            }
            ["ACK", "offset", group, partition, offset, revision] => {
                let (Ok(partition), Ok(offset), Ok(revision)) =
                    (partition.parse(), offset.parse(), revision.parse())
                else {
                    return false;
                };
                let latest = self
                    .offsets
                    .entry((group.to_string(), partition))
                    .or_default();
                *latest = (*latest).max((revision, offset));
            }
            ["ACK", "kv", key, revision, value] => {
                let Ok(revision) = revision.parse() else {
                    return false;
                };
                let latest = self.kv.entry(key.to_string()).or_insert((0, String::new()));
                if revision > latest.0 {
                    *latest = (revision, value.to_string());
                }
            }
            _ => return false,
        }
        true
    }
}

fn acknowledged_records_offsets_and_kv_writes_survive_sigkill() {
    let dir = temp_dir();
    let exe = std::env::current_exe().expect("the test binary's path");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut acked = Acknowledged::default();
    let mut rng = rand::rng();
    for cycle in 0..CYCLES {
        let mut child = Command::new(&exe)
            .env(CHILD_DIR, dir.path())
            .env(CHILD_CYCLE, cycle.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the child");
        let stdout = child.stdout.take().expect("the child's stdout");
        let (lines_tx, lines_rx) = mpsc::channel();
        let pump = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let wait = Duration::from_secs(30);
        loop {
            let line = lines_rx.recv_timeout(wait).expect("the child's ready line");
            if line == READY {
                break;
            }
        }
        // Kill after a random number of acknowledgements (the first cycle runs long enough
        // for every writer to get going): sometimes at once, sometimes well into the run;
        // the writers are mid-way through something either way.
        let kill_after = if cycle == 0 {
            200
        } else {
            rng.random_range(0..400)
        };
        let mut this_cycle = 0;
        while this_cycle < kill_after {
            let line = lines_rx.recv_timeout(wait).expect("an acknowledgement");
            if acked.take(&line) {
                this_cycle += 1;
            }
        }
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child");
        pump.join().expect("the pump thread");
        for line in lines_rx.try_iter() {
            acked.take(&line);
        }
        runtime.block_on(verify(dir.path(), &acked, cycle));
    }
    assert!(
        acked.records.len() > 100,
        "only {} records acknowledged",
        acked.records.len()
    );
    assert_eq!(acked.offsets.len(), WRITERS as usize);
    assert_eq!(acked.kv.len(), WRITERS as usize);
}

async fn verify(dir: &Path, acked: &Acknowledged, cycle: usize) {
    let backend = EmbeddedBackend::open(backend_config(&PathBuf::from(dir)))
        .await
        .unwrap_or_else(|e| panic!("cycle {cycle}: reopen after SIGKILL: {e}"));
    let s = stream(STREAM);
    for partition in 0..PARTITIONS {
        let mut held = BTreeMap::new();
        let mut next = 0;
        loop {
            let batch = backend
                .read(&s, partition, ReadFrom::Offset(next), 1_000, usize::MAX)
                .await
                .unwrap_or_else(|e| panic!("cycle {cycle}: read partition {partition}: {e}"));
            let Some(last) = batch.last() else { break };
            next = last.offset + 1;
            for record in batch {
                held.insert(record.offset, record.value);
            }
        }
        for ((_, offset), value) in acked.records.range((partition, 0)..(partition + 1, 0)) {
            assert_eq!(
                held.get(offset).map(|v| v.as_ref()),
                Some(value.as_bytes()),
                "cycle {cycle}: acknowledged record {partition}/{offset}"
            );
        }
    }
    for ((group, partition), (revision, offset)) in &acked.offsets {
        let committed = backend
            .committed_offset(group, &s, *partition)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("cycle {cycle}: {group} lost its committed offset"));
        assert!(
            committed.revision >= *revision && committed.offset >= *offset,
            "cycle {cycle}: {group} acknowledged offset {offset} at revision {revision}, \
             found {committed:?}"
        );
        if committed.revision == *revision {
            assert_eq!(committed.offset, *offset, "cycle {cycle}: {group}");
        }
    }
    for (key, (revision, value)) in &acked.kv {
        let entry = backend
            .kv_get(BUCKET, key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("cycle {cycle}: key {key} lost"));
        assert!(
            entry.revision >= *revision,
            "cycle {cycle}: {key} acknowledged at revision {revision}, found {}",
            entry.revision
        );
        if entry.revision == *revision {
            assert_eq!(
                entry.value,
                Bytes::from(value.clone()),
                "cycle {cycle}: {key}"
            );
        }
    }
    backend.close().await.expect("close after verifying");
}
