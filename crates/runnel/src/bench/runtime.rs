//! `runnel bench runtime`: consume+ack throughput of consumer groups, publish→handler latency
//! at fixed rates, and memory with many keys in flight — the runtime over the embedded backend.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use hdrhistogram::Histogram;
use runnel_backend::{Backend, StreamConfig, StreamName};
use runnel_backend_embedded::{EmbeddedBackend, EmbeddedConfig};
use runnel_envelope::{Event, EventType, Source};
use runnel_runtime::{GroupConfig, HandlerError, Runnel, RuntimeConfig, TypePattern};
use serde::Serialize;

use super::{FsyncArg, print_table};
use crate::measure::{mib, peak_rss_bytes, reset_peak_rss};

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
    fsync: FsyncArg,
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
}

pub fn run(args: RuntimeBenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let wants = |w: Workload| args.only.is_empty() || args.only.contains(&w);
    let mut results = Vec::new();
    let mut emit = |r: RunResult| {
        if args.json {
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
        } else {
            eprintln!(
                "  {} {:?} groups={} processed_ids={} rate={:?}: {:.0} events/s p99 {:?} µs",
                r.workload, r.fsync, r.groups, r.processed_ids, r.rate, r.events_per_sec, r.p99_us
            );
        }
        results.push(r);
    };
    let consume_events = if args.quick { 20_000 } else { 500_000 };
    let latency_seconds = if args.quick { 1.0 } else { 5.0 };
    if wants(Workload::Consume) {
        for fsync in [FsyncArg::Os, FsyncArg::Group] {
            for (groups, processed_ids) in [(1, false), (4, false), (1, true)] {
                emit(runtime.block_on(consume_run(
                    fsync,
                    groups,
                    processed_ids,
                    consume_events,
                ))?);
            }
        }
    }
    if wants(Workload::Latency) {
        for fsync in [FsyncArg::Os, FsyncArg::Group] {
            for rate in [10_000, 50_000] {
                emit(runtime.block_on(latency_run(fsync, rate, latency_seconds))?);
            }
        }
    }
    if wants(Workload::Memory) && !args.quick {
        emit(runtime.block_on(memory_run(10_000_000, 100_000))?);
    }
    if !args.json {
        let opt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|r| {
                vec![
                    r.workload.to_string(),
                    format!("{:?}", r.fsync).to_lowercase(),
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
                ]
            })
            .collect();
        print_table(
            &[
                "workload",
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
            ],
            &rows,
        );
    }
    Ok(())
}

async fn open(dir: &Path, fsync: FsyncArg) -> anyhow::Result<Runnel> {
    let backend: Arc<dyn Backend> = Arc::new(
        EmbeddedBackend::open(EmbeddedConfig {
            fsync: fsync.policy(),
            ..EmbeddedConfig::new(dir)
        })
        .await
        .context("opening the embedded backend")?,
    );
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
    Ok(runnel)
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

fn group(name: &str, processed_ids: bool) -> anyhow::Result<GroupConfig> {
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
        let batch: Vec<Event> = (n..(n + 1000).min(count))
            .map(|i| bench_event(i, keys))
            .collect::<anyhow::Result<_>>()?;
        n += batch.len() as u64;
        runnel.publish_batch(batch).await?;
    }
    Ok(())
}

async fn consume_run(
    fsync: FsyncArg,
    groups: usize,
    processed_ids: bool,
    events: u64,
) -> anyhow::Result<RunResult> {
    let dir = tempfile::tempdir()?;
    let runnel = open(dir.path(), fsync).await?;
    publish_all(&runnel, events, 10_000).await?;
    reset_peak_rss();
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
    for handle in handles {
        handle.stop().await?;
    }
    runnel.backend().close().await?;
    Ok(RunResult {
        workload: "consume",
        fsync,
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
    })
}

/// Publishes at `rate` events/s in 1 ms ticks for `seconds`; the handler records the time
/// from each event's creation (its `time`) to the handler running.
async fn latency_run(fsync: FsyncArg, rate: u64, seconds: f64) -> anyhow::Result<RunResult> {
    let dir = tempfile::tempdir()?;
    let runnel = open(dir.path(), fsync).await?;
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
    handle.stop().await?;
    runnel.backend().close().await?;
    let h = histogram
        .lock()
        .map_err(|_| anyhow::anyhow!("histogram lock poisoned"))?;
    Ok(RunResult {
        workload: "latency",
        fsync,
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
    })
}

/// Publishes `events` over `keys` distinct keys while a group consumes them; reports the peak
/// resident memory of the whole process.
async fn memory_run(events: u64, keys: u64) -> anyhow::Result<RunResult> {
    let dir = tempfile::tempdir()?;
    let runnel = open(dir.path(), FsyncArg::Group).await?;
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
    runnel.backend().close().await?;
    Ok(RunResult {
        workload: "memory",
        fsync: FsyncArg::Group,
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
    })
}
