//! `runnel bench runtime`: consume+ack throughput of consumer groups, publish→handler latency
//! at fixed rates, and memory with many keys in flight — the runtime over the embedded backend,
//! or (`--backend jetstream`) over NATS JetStream, where the same run also times raw
//! `async-nats` publishes and consumes of as many events of the same size, so Runnel's cost on
//! top of JetStream is a ratio measured on one server in one run.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use hdrhistogram::Histogram;
use runnel_backend::{Backend, StreamConfig, StreamName};
use runnel_backend_embedded::{EmbeddedBackend, EmbeddedConfig};
use runnel_backend_jetstream::{JetStreamBackend, JetStreamConfig};
use runnel_envelope::{Event, EventType, Source};
use runnel_runtime::{GroupConfig, HandlerError, Runnel, RuntimeConfig, TypePattern};
use serde::Serialize;

use super::{FsyncArg, print_table};
use crate::measure::{cpu_seconds, mib, peak_rss_bytes, reset_peak_rss};

#[derive(Debug, Args)]
pub struct RuntimeBenchArgs {
    /// Print one JSON object per run instead of a table.
    #[arg(long)]
    pub json: bool,
    /// A short pass (fewer events, shorter runs, no 10 M memory run).
    #[arg(long)]
    pub quick: bool,
    /// Only these workloads (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Workload>,
    /// Events per consume run (default 500,000 on the embedded backend and 200,000 on
    /// JetStream; 20,000 and 10,000 with `--quick`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub events: Option<u64>,
    /// Only consume runs with these numbers of groups.
    #[arg(long, value_delimiter = ',', value_parser = PossibleValuesParser::new(["1", "4"])
        .map(|g| if g == "4" { 4usize } else { 1 }))]
    pub groups: Vec<usize>,
    /// Only consume runs with processed ids on (`true`) or off (`false`).
    #[arg(long)]
    pub processed_ids: Option<bool>,
    /// Only these fsync policies for the embedded backend (default: both).
    #[arg(long, value_delimiter = ',', value_parser = PossibleValuesParser::new(["os", "group"])
        .map(|p| if p == "os" { FsyncArg::Os } else { FsyncArg::Group }))]
    pub fsync: Vec<FsyncArg>,
    /// The backend under the runtime.
    #[arg(long, value_enum, default_value = "embedded")]
    pub backend: BackendArg,
    /// With `--backend jetstream`: the nats-server (2.10+, JetStream on) to use. Without it, a
    /// private one is started from `--nats-server-bin` with default settings.
    #[arg(long)]
    pub nats_url: Option<String>,
    /// The nats-server binary to start when no `--nats-url` is given.
    #[arg(
        long,
        env = "RUNNEL_TEST_NATS_SERVER_BIN",
        default_value = ".venv/bin/nats-server"
    )]
    pub nats_server_bin: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    /// The embedded log (`os` and `group` fsync).
    Embedded,
    /// NATS JetStream, beside raw `async-nats` on the same server.
    Jetstream,
}

/// Where a bench runtime keeps its events.
#[derive(Debug, Clone)]
pub(super) enum Target {
    Embedded(FsyncArg),
    /// A JetStream server's URL; each run gets a namespace of its own.
    JetStream(String),
}

impl Target {
    fn label(&self) -> String {
        match self {
            Target::Embedded(fsync) => format!("{fsync:?}").to_lowercase(),
            Target::JetStream(_) => "jetstream".into(),
        }
    }
}

/// A runtime opened for one run, and what to remove when it ends.
pub(super) struct Opened {
    pub runnel: Runnel,
    _dir: Option<tempfile::TempDir>,
    jetstream: Option<JetStreamConfig>,
}

impl Opened {
    /// Closes the backend and deletes the run's data (directory or JetStream namespace).
    pub async fn close(self) -> anyhow::Result<()> {
        self.runnel.backend().close().await?;
        if let Some(config) = self.jetstream {
            JetStreamBackend::delete_namespace(config).await?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    Consume,
    Latency,
    Memory,
}

#[derive(Debug, Serialize)]
struct RunResult {
    workload: &'static str,
    /// `embedded`, `jetstream` (Runnel on JetStream) or `raw-jetstream` (async-nats alone).
    backend: &'static str,
    /// The embedded log's policy (`os`, `group`), or `jetstream`.
    fsync: String,
    groups: usize,
    processed_ids: bool,
    /// Target publish rate (latency runs).
    rate: Option<u64>,
    events: u64,
    seconds: f64,
    events_per_sec: f64,
    p50_us: Option<f64>,
    p95_us: Option<f64>,
    p99_us: Option<f64>,
    peak_rss_mib: Option<f64>,
    /// CPU time of this process (runtime and backend client) per event, in µs.
    cpu_us_per_event: Option<f64>,
    /// CPU time of the JetStream server per event, in µs, when the bench started the server.
    server_cpu_us_per_event: Option<f64>,
}

impl RunResult {
    /// CPU µs per event of this process and the server together, when both were measured.
    fn total_cpu_us(&self) -> Option<f64> {
        Some(self.cpu_us_per_event? + self.server_cpu_us_per_event?)
    }
}

/// Reads the CPU time used by this process and, when known, by the server under test:
/// on a machine shared with other work, CPU per event moves far less from run to run than
/// throughput, and it shows which side a difference comes from.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CpuMeter {
    server_pid: Option<u32>,
}

/// CPU seconds used so far: (this process, the server).
#[derive(Debug, Clone, Copy)]
struct CpuSample(Option<f64>, Option<f64>);

impl CpuMeter {
    fn sample(&self) -> CpuSample {
        CpuSample(
            cpu_seconds(std::process::id()),
            self.server_pid.and_then(cpu_seconds),
        )
    }

    /// µs of CPU per event since `from`: (this process, the server).
    fn per_event(&self, from: CpuSample, events: u64) -> (Option<f64>, Option<f64>) {
        let now = self.sample();
        let per = |a: Option<f64>, b: Option<f64>| Some((b? - a?) * 1e6 / events.max(1) as f64);
        (per(from.0, now.0), per(from.1, now.1))
    }
}

/// One finished run: its JSON object on stdout, or a progress line on stderr (the table
/// comes at the end).
fn announce(r: &RunResult, json: bool) {
    if json {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
    } else {
        eprintln!(
            "  {} {} {} groups={} processed_ids={} rate={:?}: {:.0} events/s p99 {:?} µs",
            r.workload,
            r.backend,
            r.fsync,
            r.groups,
            r.processed_ids,
            r.rate,
            r.events_per_sec,
            r.p99_us
        );
    }
}

pub fn run(args: RuntimeBenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.backend == BackendArg::Jetstream {
        if !args.fsync.is_empty() {
            return Err(crate::cli::UsageError(
                "--fsync chooses the embedded backend's policies; JetStream's is the server's \
                 `sync_interval` (see docs/jetstream.md)"
                    .into(),
            )
            .into());
        }
        return runtime.block_on(jetstream::run(args));
    }
    let wants = |w: Workload| args.only.is_empty() || args.only.contains(&w);
    let mut results = Vec::new();
    let mut emit = |r: RunResult| {
        announce(&r, args.json);
        results.push(r);
    };
    let consume_events = args
        .events
        .unwrap_or(if args.quick { 20_000 } else { 500_000 });
    let policies: Vec<FsyncArg> = [FsyncArg::Os, FsyncArg::Group]
        .into_iter()
        .filter(|p| args.fsync.is_empty() || args.fsync.contains(p))
        .collect();
    let latency_seconds = if args.quick { 1.0 } else { 5.0 };
    if wants(Workload::Consume) {
        for &fsync in &policies {
            for (groups, processed_ids) in [(1, false), (4, false), (1, true)] {
                if !(args.groups.is_empty() || args.groups.contains(&groups))
                    || args.processed_ids.is_some_and(|p| p != processed_ids)
                {
                    continue;
                }
                emit(runtime.block_on(consume_run(
                    &Target::Embedded(fsync),
                    CpuMeter::default(),
                    groups,
                    processed_ids,
                    consume_events,
                ))?);
            }
        }
    }
    if wants(Workload::Latency) {
        for &fsync in &policies {
            for rate in [10_000, 50_000] {
                emit(runtime.block_on(latency_run(
                    &Target::Embedded(fsync),
                    CpuMeter::default(),
                    rate,
                    latency_seconds,
                ))?);
            }
        }
    }
    if wants(Workload::Memory) && !args.quick {
        emit(runtime.block_on(memory_run(10_000_000, 100_000))?);
    }
    if !args.json {
        print_results(&results);
    }
    Ok(())
}

fn print_results(results: &[RunResult]) {
    {
        let opt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|r| {
                vec![
                    r.workload.to_string(),
                    r.backend.to_string(),
                    r.fsync.clone(),
                    r.groups.to_string(),
                    r.processed_ids.to_string(),
                    r.rate.map_or("-".into(), |r| r.to_string()),
                    r.events.to_string(),
                    format!("{:.2}", r.seconds),
                    format!("{:.0}", r.events_per_sec),
                    opt(r.p50_us),
                    opt(r.p95_us),
                    opt(r.p99_us),
                    r.peak_rss_mib.map_or("-".into(), |v| format!("{v:.1}")),
                    r.cpu_us_per_event.map_or("-".into(), |v| format!("{v:.1}")),
                    r.server_cpu_us_per_event
                        .map_or("-".into(), |v| format!("{v:.1}")),
                ]
            })
            .collect();
        print_table(
            &[
                "workload",
                "backend",
                "fsync",
                "groups",
                "processed ids",
                "rate/s",
                "events",
                "seconds",
                "events/s",
                "p50 µs",
                "p95 µs",
                "p99 µs",
                "peak RSS MiB",
                "CPU µs/event",
                "server CPU µs/event",
            ],
            &rows,
        );
    }
}

/// Opens a runtime on `target` with stream `bench` of 4 partitions, in fresh storage.
pub(super) async fn open(target: &Target) -> anyhow::Result<Opened> {
    let (backend, dir, jetstream): (Arc<dyn Backend>, _, _) = match target {
        Target::Embedded(fsync) => {
            let dir = tempfile::tempdir()?;
            let backend = EmbeddedBackend::open(EmbeddedConfig {
                fsync: fsync.policy(),
                ..EmbeddedConfig::new(dir.path())
            })
            .await
            .context("opening the embedded backend")?;
            (Arc::new(backend), Some(dir), None)
        }
        Target::JetStream(url) => {
            let config = JetStreamConfig {
                namespace: runnel_peers::unique_name("bench"),
                ..JetStreamConfig::new(url.clone())
            };
            let backend = JetStreamBackend::connect(config.clone())
                .await
                .with_context(|| format!("connecting the JetStream backend to {url}"))?;
            (Arc::new(backend), None, Some(config))
        }
    };
    let runnel = Runnel::open(RuntimeConfig::default(), backend);
    runnel
        .create_stream(
            &StreamName::new("bench")?,
            StreamConfig {
                partitions: 4,
                ..StreamConfig::default()
            },
        )
        .await?;
    Ok(Opened {
        runnel,
        _dir: dir,
        jetstream,
    })
}

/// An event of about 100 bytes of data, keyed.
fn bench_event(n: u64, keys: u64) -> anyhow::Result<Event> {
    Ok(
        Event::builder(EventType::new("bench.happened")?, Source::new("bench")?)
            .partition_key(format!("k{}", n % keys))
            .data_json(serde_json::json!({ "n": n, "pad": "x".repeat(80) }))
            .build()?,
    )
}

pub(super) fn group(name: &str, processed_ids: bool) -> anyhow::Result<GroupConfig> {
    Ok(GroupConfig {
        processed_ids,
        max_in_flight: 256,
        max_ack_pending: 4096,
        ..GroupConfig::new(name, TypePattern::new("bench.*")?)
    })
}

async fn publish_all(runnel: &Runnel, count: u64, keys: u64) -> anyhow::Result<()> {
    let mut n = 0;
    while n < count {
        let end = (n + 1000).min(count);
        // Sized up front: collecting `Result`s cannot know the length, and growing a vector
        // of events a thousand long is the bench's cost, not the runtime's.
        let mut batch = Vec::with_capacity((end - n) as usize);
        for i in n..end {
            batch.push(bench_event(i, keys)?);
        }
        n = end;
        runnel.publish_batch(batch).await?;
    }
    Ok(())
}

async fn consume_run(
    target: &Target,
    meter: CpuMeter,
    groups: usize,
    processed_ids: bool,
    events: u64,
) -> anyhow::Result<RunResult> {
    Ok(
        consume_and_publish_runs(target, meter, groups, processed_ids, events)
            .await?
            .0,
    )
}

/// A consume run, and the publishing of its backlog (one task, batches of 1,000) as a
/// `publish` run.
async fn consume_and_publish_runs(
    target: &Target,
    meter: CpuMeter,
    groups: usize,
    processed_ids: bool,
    events: u64,
) -> anyhow::Result<(RunResult, RunResult)> {
    let opened = open(target).await?;
    let runnel = opened.runnel.clone();
    let publish_cpu = meter.sample();
    let publish_started = Instant::now();
    publish_all(&runnel, events, 10_000).await?;
    let publish_seconds = publish_started.elapsed().as_secs_f64();
    let (publish_cpu, publish_server_cpu) = meter.per_event(publish_cpu, events);
    reset_peak_rss();
    let consume_cpu = meter.sample();
    let started = Instant::now();
    let mut handles = Vec::new();
    let mut counters = Vec::new();
    for g in 0..groups {
        let count = Arc::new(AtomicU64::new(0));
        counters.push(count.clone());
        let name = format!("g{g}");
        handles.push(
            runnel
                .group(&name)
                .config(group(&name, processed_ids)?)
                .run(move |_message| {
                    let count = count.clone();
                    async move {
                        count.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, HandlerError>(vec![])
                    }
                })
                .await?,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while counters.iter().any(|c| c.load(Ordering::Relaxed) < events) {
        if Instant::now() > deadline {
            bail!("consumers did not finish in 600 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (consume_cpu, consume_server_cpu) = meter.per_event(consume_cpu, events * groups as u64);
    for handle in handles {
        handle.stop().await?;
    }
    opened.close().await?;
    let backend = backend_label(target);
    let publish = RunResult {
        workload: "publish",
        backend,
        fsync: target.label(),
        groups: 0,
        processed_ids: false,
        rate: None,
        events,
        seconds: publish_seconds,
        events_per_sec: events as f64 / publish_seconds,
        p50_us: None,
        p95_us: None,
        p99_us: None,
        peak_rss_mib: None,
        cpu_us_per_event: publish_cpu,
        server_cpu_us_per_event: publish_server_cpu,
    };
    let consume = RunResult {
        workload: "consume",
        backend,
        fsync: target.label(),
        groups,
        processed_ids,
        rate: None,
        events,
        seconds: elapsed,
        events_per_sec: events as f64 / elapsed,
        p50_us: None,
        p95_us: None,
        p99_us: None,
        peak_rss_mib: peak_rss_bytes().map(mib),
        cpu_us_per_event: consume_cpu,
        server_cpu_us_per_event: consume_server_cpu,
    };
    Ok((consume, publish))
}

fn backend_label(target: &Target) -> &'static str {
    match target {
        Target::Embedded(_) => "embedded",
        Target::JetStream(_) => "jetstream",
    }
}

/// Publishes at `rate` events/s in 1 ms ticks for `seconds`; the handler records the time
/// from each event's creation (its `time`) to the handler running.
async fn latency_run(
    target: &Target,
    meter: CpuMeter,
    rate: u64,
    seconds: f64,
) -> anyhow::Result<RunResult> {
    let opened = open(target).await?;
    let runnel = opened.runnel.clone();
    let histogram = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let seen = Arc::new(AtomicU64::new(0));
    let (sink, count) = (histogram.clone(), seen.clone());
    let handle = runnel
        .group("latency")
        .config(group("latency", false)?)
        .run(move |message| {
            let (sink, count) = (sink.clone(), count.clone());
            async move {
                if let Some(time) = message.event.time() {
                    let micros = (chrono::Utc::now() - time).num_microseconds().unwrap_or(0);
                    if let Ok(mut h) = sink.lock() {
                        h.saturating_record(micros.max(1) as u64);
                    }
                }
                count.fetch_add(1, Ordering::Relaxed);
                Ok::<_, HandlerError>(vec![])
            }
        })
        .await?;
    reset_peak_rss();
    let per_tick = (rate / 1000).max(1);
    let ticks = (seconds * 1000.0) as u64;
    let cpu = meter.sample();
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut published = 0u64;
    let mut in_flight = tokio::task::JoinSet::new();
    for _ in 0..ticks {
        interval.tick().await;
        let batch: Vec<Event> = (published..published + per_tick)
            .map(|n| bench_event(n, 10_000))
            .collect::<anyhow::Result<_>>()?;
        published += per_tick;
        let runnel = runnel.clone();
        in_flight.spawn(async move { runnel.publish_batch(batch).await });
        while let Some(done) = in_flight.try_join_next() {
            done??;
        }
    }
    while let Some(done) = in_flight.join_next().await {
        done??;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.load(Ordering::Relaxed) < published && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu_us_per_event, server_cpu_us_per_event) =
        meter.per_event(cpu, seen.load(Ordering::Relaxed));
    handle.stop().await?;
    opened.close().await?;
    let h = histogram
        .lock()
        .map_err(|_| anyhow::anyhow!("histogram lock poisoned"))?;
    Ok(RunResult {
        workload: "latency",
        backend: backend_label(target),
        fsync: target.label(),
        groups: 1,
        processed_ids: false,
        rate: Some(rate),
        events: seen.load(Ordering::Relaxed),
        seconds: elapsed,
        events_per_sec: published as f64 / elapsed,
        p50_us: Some(h.value_at_quantile(0.50) as f64),
        p95_us: Some(h.value_at_quantile(0.95) as f64),
        p99_us: Some(h.value_at_quantile(0.99) as f64),
        peak_rss_mib: peak_rss_bytes().map(mib),
        cpu_us_per_event,
        server_cpu_us_per_event,
    })
}

/// Publishes `events` over `keys` distinct keys while a group consumes them; reports the peak
/// resident memory of the whole process.
async fn memory_run(events: u64, keys: u64) -> anyhow::Result<RunResult> {
    let opened = open(&Target::Embedded(FsyncArg::Group)).await?;
    let runnel = opened.runnel.clone();
    reset_peak_rss();
    let seen = Arc::new(AtomicU64::new(0));
    let count = seen.clone();
    let handle = runnel
        .group("memory")
        .config(group("memory", false)?)
        .run(move |_message| {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::Relaxed);
                Ok::<_, HandlerError>(vec![])
            }
        })
        .await?;
    let started = Instant::now();
    publish_all(&runnel, events, keys).await?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    while seen.load(Ordering::Relaxed) < events && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    handle.stop().await?;
    opened.close().await?;
    Ok(RunResult {
        workload: "memory",
        backend: "embedded",
        fsync: "group".into(),
        groups: 1,
        processed_ids: false,
        rate: None,
        events: seen.load(Ordering::Relaxed),
        seconds: elapsed,
        events_per_sec: events as f64 / elapsed,
        p50_us: None,
        p95_us: None,
        p99_us: None,
        peak_rss_mib: peak_rss_bytes().map(mib),
        cpu_us_per_event: None,
        server_cpu_us_per_event: None,
    })
}

/// `--backend jetstream`: Runnel's consume, publish and latency runs on a JetStream server,
/// and raw `async-nats` doing the same (events of the size Runnel stores, same count,
/// batches of 1,000, acks awaited) on the same server, with Runnel ÷ raw.
mod jetstream {
    use std::time::Duration;

    use anyhow::Context;
    use runnel_peers::jetstream::JetStreamPeer;
    use runnel_peers::{Peer, workload};

    use super::{
        CpuMeter, RunResult, RuntimeBenchArgs, Target, Workload, bench_event,
        consume_and_publish_runs, consume_run, latency_run, print_results,
    };

    pub async fn run(args: RuntimeBenchArgs) -> anyhow::Result<()> {
        let mut server = None;
        let url = match &args.nats_url {
            Some(url) => url.clone(),
            None => {
                let started = runnel_peers::process::start_nats(&args.nats_server_bin, false)
                    .await
                    .context("starting a nats-server (give --nats-url or --nats-server-bin)")?;
                let url = started.url("nats");
                server = Some(started);
                url
            }
        };
        eprintln!("  nats-server at {url}");
        let meter = CpuMeter {
            server_pid: server.as_ref().and_then(|s| s.pid()),
        };
        let target = Target::JetStream(url.clone());
        let wants = |w: Workload| args.only.is_empty() || args.only.contains(&w);
        let events = args
            .events
            .unwrap_or(if args.quick { 10_000 } else { 200_000 });
        // The consume runs `--groups` and `--processed-ids` leave in: (groups, processed ids).
        let selected = |groups: usize, processed_ids: bool| {
            (args.groups.is_empty() || args.groups.contains(&groups))
                && args.processed_ids.is_none_or(|p| p == processed_ids)
        };
        let latency_seconds = if args.quick { 1.0 } else { 5.0 };
        // What JetStream stores per Runnel event: its binary envelope (plus the backend's frame).
        let size = bench_event(0, 10_000)?.encoded_len();
        let raw = JetStreamPeer::connect(&url, "raw-jetstream", "as the server is set").await?;
        // What Runnel sends: a `Nats-Msg-Id` per event, which JetStream tracks for dedup.
        let raw_with_ids = JetStreamPeer::connect(&url, "raw-jetstream", "as the server is set")
            .await?
            .with_message_ids();
        let mut results = Vec::new();
        let mut emit = |r: RunResult| {
            super::announce(&r, args.json);
            results.push(r);
        };
        let mut ratios = Vec::new();
        let mut ceiling = None;
        if wants(Workload::Consume) && selected(1, false) {
            let (consume, publish) =
                consume_and_publish_runs(&target, meter, 1, false, events).await?;
            let (raw_publish, raw_consume) =
                raw_publish_consume(&raw, meter, "raw-jetstream", size, events).await?;
            let (id_publish, id_consume) =
                raw_publish_consume(&raw_with_ids, meter, "raw-jetstream+msg-id", size, events)
                    .await?;
            for (what, runnel, raw) in [
                ("publish (raw without Nats-Msg-Id)", &publish, &raw_publish),
                (
                    "publish (raw with Nats-Msg-Id, as Runnel sends)",
                    &publish,
                    &id_publish,
                ),
                ("consume (raw without Nats-Msg-Id)", &consume, &raw_consume),
                ("consume (raw with Nats-Msg-Id)", &consume, &id_consume),
            ] {
                ratios.push((what, runnel.events_per_sec / raw.events_per_sec));
            }
            // CPU per event, this process and the server together: what bounds throughput
            // when both share the machine's cores.
            for (what, runnel, raw) in [
                (
                    "publish CPU per event, client + server (raw without Nats-Msg-Id; lower is better)",
                    &publish,
                    &raw_publish,
                ),
                (
                    "publish CPU per event, client + server (raw with Nats-Msg-Id; lower is better)",
                    &publish,
                    &id_publish,
                ),
                (
                    "consume CPU per event, client + server (raw without Nats-Msg-Id; lower is better)",
                    &consume,
                    &raw_consume,
                ),
            ] {
                if let (Some(r), Some(w)) = (runnel.total_cpu_us(), raw.total_cpu_us()) {
                    ratios.push((what, r / w));
                }
            }
            // No publisher that sends a `Nats-Msg-Id` per event (as deduplication needs) can
            // be faster than raw async-nats sending nothing else: this is its ceiling.
            ceiling = Some(id_publish.events_per_sec / raw_publish.events_per_sec);
            emit(publish);
            emit(raw_publish);
            emit(id_publish);
            emit(consume);
            emit(raw_consume);
            emit(id_consume);
        }
        if wants(Workload::Consume) && selected(4, false) {
            emit(consume_run(&target, meter, 4, false, events).await?);
        }
        if wants(Workload::Consume) && selected(1, true) {
            emit(consume_run(&target, meter, 1, true, (events / 4).max(1)).await?);
        }
        if wants(Workload::Latency) {
            for rate in [10_000, 50_000] {
                let runnel = latency_run(&target, meter, rate, latency_seconds).await?;
                let cpu = meter.sample();
                let figures = workload::latency(
                    &raw,
                    size,
                    rate,
                    Duration::from_secs_f64(latency_seconds),
                    Duration::from_secs(60),
                )
                .await?;
                let mut raw_row = row("latency", Some(rate), &figures);
                (raw_row.cpu_us_per_event, raw_row.server_cpu_us_per_event) =
                    meter.per_event(cpu, figures.events);
                if let (Some(r), Some(w)) = (runnel.p99_us, raw_row.p99_us) {
                    ratios.push((
                        if rate == 10_000 {
                            "latency p99 at 10k/s (lower is better)"
                        } else {
                            "latency p99 at 50k/s (lower is better)"
                        },
                        r / w,
                    ));
                }
                if let (Some(r), Some(w)) = (runnel.total_cpu_us(), raw_row.total_cpu_us()) {
                    ratios.push((
                        if rate == 10_000 {
                            "latency run CPU per event at 10k/s, client + server (lower is better)"
                        } else {
                            "latency run CPU per event at 50k/s, client + server (lower is better)"
                        },
                        r / w,
                    ));
                }
                emit(runnel);
                emit(raw_row);
            }
        }
        if args.json {
            for (what, ratio) in &ratios {
                println!(
                    "{}",
                    serde_json::json!({ "workload": "ratio", "what": what, "runnel_over_raw": ratio })
                );
            }
            if let Some(ceiling) = ceiling {
                println!(
                    "{}",
                    serde_json::json!({ "workload": "ratio", "what": CEILING, "raw_with_ids_over_raw": ceiling })
                );
            }
        } else {
            print_results(&results);
            if !ratios.is_empty() {
                println!();
                println!(
                    "Runnel on JetStream ÷ raw async-nats (same server, {events} events of {size} B):"
                );
                for (what, ratio) in &ratios {
                    println!("  {what}: {ratio:.2}×");
                }
            }
            if let Some(ceiling) = ceiling {
                println!("  {CEILING}: {ceiling:.2}×");
            }
        }
        drop(server);
        Ok(())
    }

    /// The ratio that bounds Runnel's publish ÷ raw without ids: raw async-nats publishing with
    /// a `Nats-Msg-Id` per event, and nothing else, ÷ raw publishing without.
    const CEILING: &str =
        "ceiling for any publisher sending Nats-Msg-Id: raw with ÷ raw without Nats-Msg-Id";

    /// Raw publishes of `events` payloads of `size` bytes in batches of 1,000 (one task, acks
    /// awaited per batch, as the runtime's `publish_all`), then one durable consumer
    /// consuming and acking them all.
    async fn raw_publish_consume(
        raw: &JetStreamPeer,
        meter: CpuMeter,
        backend: &'static str,
        size: usize,
        events: u64,
    ) -> anyhow::Result<(RunResult, RunResult)> {
        let topic = raw.open(&["g0".to_string()]).await?;
        let cpu = meter.sample();
        let started = std::time::Instant::now();
        let mut n = 0;
        while n < events {
            let last = (n + 1000).min(events);
            topic
                .publish((n..last).map(|i| runnel_peers::payload(size, i)).collect())
                .await?;
            n = last;
        }
        let publish_seconds = started.elapsed().as_secs_f64();
        let publish_cpu = meter.per_event(cpu, events);
        let cpu = meter.sample();
        let started = std::time::Instant::now();
        let on_event: runnel_peers::OnEvent = std::sync::Arc::new(|_: &[u8]| {});
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        topic.consume("g0", events, on_event, deadline).await?;
        let consume_seconds = started.elapsed().as_secs_f64();
        let consume_cpu = meter.per_event(cpu, events);
        topic.close().await?;
        let publish = workload::Figures {
            events,
            seconds: publish_seconds,
            events_per_sec: events as f64 / publish_seconds,
            ..Default::default()
        };
        let consume = workload::Figures {
            events,
            seconds: consume_seconds,
            events_per_sec: events as f64 / consume_seconds,
            ..Default::default()
        };
        let mut consume_row = row("consume", None, &consume);
        consume_row.groups = 1;
        consume_row.backend = backend;
        (
            consume_row.cpu_us_per_event,
            consume_row.server_cpu_us_per_event,
        ) = consume_cpu;
        let mut publish_row = row("publish", None, &publish);
        publish_row.backend = backend;
        (
            publish_row.cpu_us_per_event,
            publish_row.server_cpu_us_per_event,
        ) = publish_cpu;
        Ok((publish_row, consume_row))
    }

    fn row(workload: &'static str, rate: Option<u64>, f: &workload::Figures) -> RunResult {
        RunResult {
            workload,
            backend: "raw-jetstream",
            fsync: "jetstream".into(),
            groups: if workload == "publish" { 0 } else { 1 },
            processed_ids: false,
            rate,
            events: f.events,
            seconds: f.seconds,
            events_per_sec: f.events_per_sec,
            p50_us: f.p50_us,
            p95_us: f.p95_us,
            p99_us: f.p99_us,
            peak_rss_mib: None,
            cpu_us_per_event: None,
            server_cpu_us_per_event: None,
        }
    }
}
