//! A three-node JetStream cluster loses no acknowledged record when a node dies mid-flight.
//!
//! Opt-in: runs when `RUNNEL_TEST_NATS_SERVER_BIN` names a nats-server (2.10+) binary, which
//! `scripts/nats-cluster.sh` finds and sets; says it was skipped otherwise. The test starts
//! three nats-server processes clustered on loopback ports (each with JetStream and a
//! temporary store), connects with `replicas = 3`, and while writers append and a reader
//! follows each partition (committing its offsets), SIGKILLs the first node — the one the
//! clients most likely talk to. Then, on the two survivors: every acknowledged record is at
//! its acknowledged offset, no record was stored twice, the reader read every record in
//! order, and the committed offsets survived.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use runnel_backend::{Backend, Expect, ReadFrom, Record, StreamConfig};
use runnel_backend_jetstream::{JetStreamBackend, JetStreamConfig};
use runnel_test_util::{manual_clock, stream};

const NODES: usize = 3;
const WRITERS: usize = 3;
const PER_WRITER: usize = 300;
const PARTITIONS: u32 = 2;
const GROUP: &str = "follower";

struct Node {
    child: Option<Child>,
    port: u16,
    _store: tempfile::TempDir,
}

/// Three clustered servers; killed when dropped.
struct Cluster {
    nodes: Vec<Node>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Cluster {
    fn start(binary: &str) -> Self {
        let client_ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
        let route_ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
        let routes = route_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = (0..NODES)
            .map(|i| {
                let store = tempfile::Builder::new()
                    .prefix("runnel-js-cluster-")
                    .tempdir()
                    .expect("a store directory");
                let child = Command::new(binary)
                    .args(["-a", "127.0.0.1", "-p", &client_ports[i].to_string(), "-js"])
                    .arg("-sd")
                    .arg(store.path())
                    .args(["-n", &format!("n{i}"), "--cluster_name", "runnel-test"])
                    .args(["-cluster", &format!("nats://127.0.0.1:{}", route_ports[i])])
                    .args(["-routes", &routes])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
                Node {
                    child: Some(child),
                    port: client_ports[i],
                    _store: store,
                }
            })
            .collect();
        Self { nodes }
    }

    fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill().expect("SIGKILL a node");
            let _ = child.wait();
        }
    }
}

/// Connects and creates the stream once the cluster has elected its JetStream leader.
async fn connect_when_ready(config: JetStreamConfig) -> Arc<JetStreamBackend> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = async {
            let backend = JetStreamBackend::connect(config.clone()).await?;
            backend
                .create_stream(
                    &stream("orders"),
                    StreamConfig {
                        partitions: PARTITIONS,
                        ..StreamConfig::default()
                    },
                )
                .await?;
            Ok::<_, runnel_backend::BackendError>(backend)
        };
        match attempt.await {
            Ok(backend) => return Arc::new(backend),
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "the cluster never became ready: {error}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Follows one partition from offset 0, committing as it goes, until `done` and caught up
/// with the final high watermark; returns the values in the order read.
async fn follow(
    backend: Arc<JetStreamBackend>,
    partition: u32,
    done: Arc<AtomicBool>,
) -> Vec<String> {
    let s = stream("orders");
    let mut seen = Vec::new();
    let mut next = 0;
    let mut revision = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "the reader never caught up");
        match backend
            .read(&s, partition, ReadFrom::Offset(next), 100, usize::MAX)
            .await
        {
            Ok(records) if !records.is_empty() => {
                for record in &records {
                    assert_eq!(record.offset, next, "records come in order, without gaps");
                    next += 1;
                    seen.push(String::from_utf8_lossy(&record.value).into_owned());
                }
                let expect = revision.map_or(Expect::Absent, Expect::Revision);
                match backend
                    .commit_offset(GROUP, &s, partition, next, expect)
                    .await
                {
                    Ok(r) => revision = Some(r),
                    // The commit may have landed before the failure: re-read its revision.
                    Err(_) => {
                        revision = backend
                            .committed_offset(GROUP, &s, partition)
                            .await
                            .ok()
                            .flatten()
                            .map(|c| c.revision)
                    }
                }
            }
            Ok(_) => {
                if done.load(Ordering::Acquire) {
                    match backend.partition_info(&s, partition).await {
                        Ok(info) if info.high_watermark == next => return seen,
                        _ => {}
                    }
                }
                let _ = backend
                    .wait_for_data(&s, partition, next, Duration::from_millis(200))
                    .await;
            }
            // During the failover: try again.
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_three_nodes_when_one_is_killed_mid_flight_no_acknowledged_record_is_lost() {
    let Some(binary) = std::env::var("RUNNEL_TEST_NATS_SERVER_BIN")
        .ok()
        .filter(|b| !b.is_empty())
    else {
        println!(
            "skipped: set RUNNEL_TEST_NATS_SERVER_BIN to a nats-server 2.10+ binary \
             (scripts/nats-cluster.sh does) to run the three-node cluster test"
        );
        return;
    };
    let mut cluster = Cluster::start(&binary);
    let clock = manual_clock();
    let config = JetStreamConfig {
        namespace: "cluster".into(),
        replicas: 3,
        request_timeout: Duration::from_secs(2),
        clock: clock.shared(),
        ..JetStreamConfig::new(cluster.urls())
    };
    let started = Instant::now();
    let backend = connect_when_ready(config.clone()).await;
    println!("cluster ready in {:.1?}", started.elapsed());
    let s = stream("orders");

    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..PARTITIONS)
        .map(|p| tokio::spawn(follow(backend.clone(), p, done.clone())))
        .collect();

    let appended = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (backend, s, appended) = (backend.clone(), s.clone(), appended.clone());
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut failed = Vec::new();
            for i in 0..PER_WRITER {
                let value = format!("w{w}-{i}");
                let partition = (i % PARTITIONS as usize) as u32;
                let record = Record::new("k", value.clone()).with_header("identity", value.clone());
                match backend.append(&s, partition, vec![record]).await {
                    Ok(ack) => acked.push((partition, ack.base_offset, value)),
                    Err(error) => failed.push(error.to_string()),
                }
                appended.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (acked, failed)
        }));
    }
    // Kill the first node once a third of the records are written.
    while appended.load(Ordering::Relaxed) < WRITERS * PER_WRITER / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.kill(0);
    let killed_at = Instant::now();
    println!(
        "killed node n0 after {} appends",
        appended.load(Ordering::Relaxed)
    );

    let mut acked = Vec::new();
    let mut failed = Vec::new();
    for writer in writers {
        let (a, f) = writer.await.expect("writer");
        acked.extend(a);
        failed.extend(f);
    }
    done.store(true, Ordering::Release);
    println!(
        "{} appends acknowledged, {} failed (during the failover); writing ended {:.1?} after the kill",
        acked.len(),
        failed.len(),
        killed_at.elapsed()
    );
    for error in &failed {
        println!("  failed: {error}");
    }
    assert!(
        acked.len() >= WRITERS * PER_WRITER / 2,
        "most appends succeed across a failover"
    );

    let mut logs: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for p in 0..PARTITIONS {
        let values = runnel_test_util::read_all(&*backend, &s, p)
            .await
            .iter()
            .map(|r| String::from_utf8_lossy(&r.value).into_owned())
            .collect();
        logs.insert(p, values);
    }
    for (partition, offset, value) in &acked {
        assert_eq!(
            logs[partition].get(*offset as usize),
            Some(value),
            "acknowledged {value} at {partition}/{offset}"
        );
    }
    let mut unique = HashSet::new();
    for value in logs.values().flatten() {
        assert!(unique.insert(value.clone()), "{value} stored twice");
    }
    for (p, reader) in readers.into_iter().enumerate() {
        let seen = reader.await.expect("reader");
        assert_eq!(&seen, &logs[&(p as u32)], "the reader of partition {p}");
        let committed = backend
            .committed_offset(GROUP, &s, p as u32)
            .await
            .expect("committed offset")
            .map(|c| c.offset);
        assert_eq!(committed, Some(seen.len() as u64), "partition {p}");
    }
    backend.close().await.expect("close");
}
