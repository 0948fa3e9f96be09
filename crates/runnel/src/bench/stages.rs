//! `runnel bench stages`: events per second through a feature window — a 10-minute window
//! sliding by 1 minute, count + sum + mean + distinct, keyed by 100,000 entities by default.
//!
//! Two runs:
//! - `operator`: the window operator alone on decoded records (no log, no JSON), in steady
//!   state: ten minutes of event time fed before the clock starts, then `--minutes` more,
//!   advancing every 10,000 records as a pipeline does after a fetch;
//! - `end-to-end`: the same spec as a `FeaturePipeline` over the embedded log (fsync `os`) on a
//!   backlog of published events: reading, decoding, extracting, windowing, checkpointing,
//!   publishing results and writing the online store; the backlog spans `--e2e-minutes` of
//!   event time, so windows fire and results are published and stored during the run. Beside it, in the same run on the same
//!   backlog, a plain consumer group with the pipeline's group settings (ordering `none`, no
//!   processed ids) and a handler that does nothing: the consume path is the ceiling, and the
//!   ratio is what the stage costs on top of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use runnel_backend::{Backend, StreamConfig, StreamName};
use runnel_backend_embedded::{EmbeddedBackend, EmbeddedConfig};
use runnel_envelope::{Event, EventType, Source};
use runnel_runtime::{
    GroupConfig, HandlerError, Ordering as GroupOrdering, Runnel, RuntimeConfig, TypePattern,
};
use runnel_stages::{
    AggregateKind, AggregateSpec, FeaturePipeline, FeatureSpec, FeatureStage, FieldValue,
    HumanDuration, PipelineOptions, Record, WindowSpec,
};
use serde::Serialize;

use super::{FsyncArg, print_table};
use crate::measure::{cpu_seconds, mib, peak_rss_bytes, reset_peak_rss};

#[derive(Debug, Args)]
pub struct StagesBenchArgs {
    /// Print one JSON object per run instead of a table.
    #[arg(long)]
    pub json: bool,
    /// A short pass: 10,000 keys, fewer events.
    #[arg(long)]
    pub quick: bool,
    /// Entities (window keys). Default 100,000 (10,000 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: Option<u64>,
    /// Events per key per minute of event time. Default 10.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub per_key_per_minute: u64,
    /// Minutes of event time measured by the operator run (after ten of warm-up). Default 3.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub minutes: u64,
    /// Events in the end-to-end backlog. Default 1,000,000 (100,000 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub events: Option<u64>,
    /// Minutes of event time the end-to-end backlog spans (windows end every minute, so
    /// results fire during the run). Default 5.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub e2e_minutes: u64,
}

#[derive(Debug, Serialize)]
struct StageRun {
    /// `operator`, `consume` (a plain group) or `pipeline`.
    workload: &'static str,
    keys: u64,
    events: u64,
    seconds: f64,
    events_per_sec: f64,
    /// Window results emitted during the measured part.
    results: u64,
    /// `pipeline` only: events/s divided by the plain group's events/s on the same backlog.
    ratio_to_consume: Option<f64>,
    /// `operator` only: bytes of window state per (key, open window) at the end.
    state_bytes_per_key_window: Option<f64>,
    /// CPU time of this process per event, in µs.
    cpu_us_per_event: Option<f64>,
    peak_rss_mib: Option<f64>,
    /// The embedded log's fsync policy in end-to-end runs.
    fsync: Option<&'static str>,
}

const MINUTE: i64 = 60_000_000;
/// Records between two advances of the operator run (a pipeline advances after each fetch).
const ADVANCE_EVERY: usize = 10_000;
/// Event time of the first event: 2026-01-01T00:00:00Z.
const BASE_MICROS: i64 = 1_767_225_600_000_000;

fn spec() -> anyhow::Result<FeatureSpec> {
    Ok(FeatureSpec {
        name: "bench_spend".into(),
        input: "payment.charged".into(),
        key: Default::default(),
        time: Default::default(),
        window: WindowSpec::Sliding {
            size: HumanDuration::from_mins(10),
            slide: HumanDuration::from_mins(1),
        },
        max_out_of_orderness: HumanDuration::from_secs(5),
        allowed_lateness: HumanDuration::ZERO,
        idle_timeout: HumanDuration::from_mins(1),
        aggregates: vec![
            AggregateSpec::new("payments", AggregateKind::Count, None),
            AggregateSpec::new("spent", AggregateKind::Sum, Some("/amount")),
            AggregateSpec::new("average", AggregateKind::Mean, Some("/amount")),
            AggregateSpec::new("merchants", AggregateKind::Distinct, Some("/merchant")),
        ],
        output: "feature.computed".parse().context("the output type")?,
        late_stream: None,
    })
}

fn announce(run: &StageRun, json: bool) {
    if json {
        println!("{}", serde_json::to_string(run).unwrap_or_default());
    } else {
        eprintln!(
            "  {}: {:.0} events/s over {} events",
            run.workload, run.events_per_sec, run.events
        );
    }
}

pub fn run(args: StagesBenchArgs) -> anyhow::Result<()> {
    let keys = args
        .keys
        .unwrap_or(if args.quick { 10_000 } else { 100_000 });
    let events = args
        .events
        .unwrap_or(if args.quick { 100_000 } else { 1_000_000 });
    let mut runs = vec![operator_run(keys, args.per_key_per_minute, args.minutes)?];
    announce(&runs[0], args.json);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (consume, pipeline) = runtime.block_on(end_to_end(keys, events, args.e2e_minutes))?;
    announce(&consume, args.json);
    announce(&pipeline, args.json);
    runs.push(consume);
    runs.push(pipeline);
    if !args.json {
        let rows: Vec<Vec<String>> = runs
            .iter()
            .map(|r| {
                vec![
                    r.workload.to_string(),
                    r.keys.to_string(),
                    r.events.to_string(),
                    format!("{:.0}", r.events_per_sec),
                    r.ratio_to_consume.map_or("-".into(), |x| format!("{x:.2}")),
                    r.results.to_string(),
                    r.state_bytes_per_key_window
                        .map_or("-".into(), |b| format!("{b:.0}")),
                    r.cpu_us_per_event.map_or("-".into(), |c| format!("{c:.2}")),
                ]
            })
            .collect();
        print_table(
            &[
                "workload",
                "keys",
                "events",
                "events/s",
                "ratio",
                "results",
                "B/key/window",
                "cpu_us/event",
            ],
            &rows,
        );
    }
    Ok(())
}

/// One minute of decoded records starting at `minute`: times in order up to a 2 s jitter.
fn minute_of_records(minute: i64, keys: u64, per_key: u64, rng: &mut StdRng) -> Vec<Record> {
    let count = (keys * per_key) as usize;
    (0..count)
        .map(|i| {
            let key = rng.random_range(0..keys);
            let base = (i as i64) * MINUTE / count as i64;
            let jitter = rng.random_range(0..2_000_000);
            Record {
                key: format!("card-{key:06}"),
                event_time: minute * MINUTE + (base - jitter).clamp(0, MINUTE - 1),
                values: vec![
                    FieldValue::Int(rng.random_range(1..10_000)),
                    FieldValue::Int(rng.random_range(0..50)),
                ],
                correlation: None,
            }
        })
        .collect()
}

fn feed(stage: &mut FeatureStage, records: &[Record], offset: &mut u64) -> anyhow::Result<u64> {
    let mut results = 0;
    for chunk in records.chunks(ADVANCE_EVERY) {
        for record in chunk {
            stage.process(0, *offset, record)?;
            *offset += 1;
        }
        results += stage.advance(0).len() as u64;
    }
    Ok(results)
}

fn operator_run(keys: u64, per_key: u64, minutes: u64) -> anyhow::Result<StageRun> {
    let mut rng = StdRng::seed_from_u64(21);
    // Idleness off: the clock given to `advance` does not move in this run.
    let spec = FeatureSpec {
        idle_timeout: HumanDuration::ZERO,
        ..spec()?
    };
    let mut stage = FeatureStage::new(spec, [0], 0)?;
    let mut offset = 0;
    for minute in 0..10 {
        let records = minute_of_records(minute, keys, per_key, &mut rng);
        feed(&mut stage, &records, &mut offset)?;
    }
    let measured: Vec<Vec<Record>> = (10..10 + minutes as i64)
        .map(|minute| minute_of_records(minute, keys, per_key, &mut rng))
        .collect();
    let cpu = cpu_seconds(std::process::id());
    let started = Instant::now();
    let mut results = 0;
    let mut events = 0;
    for records in &measured {
        results += feed(&mut stage, records, &mut offset)?;
        events += records.len() as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    let stats = stage.stats();
    Ok(StageRun {
        workload: "operator",
        keys,
        events,
        seconds,
        events_per_sec: events as f64 / seconds,
        results,
        ratio_to_consume: None,
        state_bytes_per_key_window: (stats.open_windows > 0)
            .then(|| stats.state_bytes as f64 / stats.open_windows as f64),
        cpu_us_per_event: cpu_per_event(cpu, events),
        peak_rss_mib: None,
        fsync: None,
    })
}

fn cpu_per_event(from: Option<f64>, events: u64) -> Option<f64> {
    Some((cpu_seconds(std::process::id())? - from?) * 1e6 / events.max(1) as f64)
}

/// The pipeline's group settings, for both the plain group and the pipeline.
fn group(name: &str) -> anyhow::Result<GroupConfig> {
    Ok(GroupConfig {
        ordering: GroupOrdering::None,
        processed_ids: false,
        max_in_flight: 4096,
        max_ack_pending: 8192,
        ..GroupConfig::new(name, TypePattern::new("payment.charged")?)
    })
}

/// The backlog: `events` payments of `keys` cards, in event-time order over `minutes`.
async fn publish_backlog(
    runnel: &Runnel,
    keys: u64,
    events: u64,
    minutes: u64,
) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(7);
    let per_minute = (events / minutes).max(1);
    let event_type = EventType::new("payment.charged")?;
    let source = Source::new("bench://stages")?;
    let mut n = 0;
    while n < events {
        let end = (n + 1000).min(events);
        let mut batch = Vec::with_capacity((end - n) as usize);
        for i in n..end {
            let micros = BASE_MICROS + (i as i64) * MINUTE / per_minute as i64;
            let time = chrono::DateTime::from_timestamp_micros(micros).context("an event time")?;
            batch.push(
                Event::builder(event_type.clone(), source.clone())
                    .partition_key(format!("card-{:06}", rng.random_range(0..keys)))
                    .time(time)
                    .data_json(serde_json::json!({
                        "amount": rng.random_range(1..10_000),
                        "merchant": rng.random_range(0..50),
                    }))
                    .build()?,
            );
        }
        n = end;
        runnel.publish_batch(batch).await?;
    }
    Ok(())
}

async fn end_to_end(keys: u64, events: u64, minutes: u64) -> anyhow::Result<(StageRun, StageRun)> {
    let dir = tempfile::tempdir()?;
    let backend: Arc<dyn Backend> = Arc::new(
        EmbeddedBackend::open(EmbeddedConfig {
            fsync: FsyncArg::Os.policy(),
            ..EmbeddedConfig::new(dir.path())
        })
        .await
        .context("opening the embedded backend")?,
    );
    let runnel = Runnel::open(RuntimeConfig::default(), backend.clone());
    runnel
        .create_stream(
            &StreamName::new("payment")?,
            StreamConfig {
                partitions: 4,
                ..StreamConfig::default()
            },
        )
        .await?;
    publish_backlog(&runnel, keys, events, minutes).await?;

    // The plain group: the consume path alone.
    reset_peak_rss();
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    let cpu = cpu_seconds(std::process::id());
    let started = Instant::now();
    let handle = runnel
        .group("plain")
        .config(group("plain")?)
        .run(move |_message| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                Ok::<_, HandlerError>(vec![])
            }
        })
        .await?;
    let deadline = Instant::now() + Duration::from_secs(900);
    while count.load(Ordering::Relaxed) < events {
        if Instant::now() > deadline {
            bail!("the plain group did not finish in 900 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let consume_seconds = started.elapsed().as_secs_f64();
    let consume_cpu = cpu_per_event(cpu, events);
    handle.stop().await?;
    let consume = StageRun {
        workload: "consume",
        keys,
        events,
        seconds: consume_seconds,
        events_per_sec: events as f64 / consume_seconds,
        results: 0,
        ratio_to_consume: None,
        state_bytes_per_key_window: None,
        cpu_us_per_event: consume_cpu,
        peak_rss_mib: peak_rss_bytes().map(mib),
        fsync: Some("os"),
    };

    // The pipeline on the same backlog.
    reset_peak_rss();
    let cpu = cpu_seconds(std::process::id());
    let started = Instant::now();
    let pipeline = FeaturePipeline::start(
        &runnel,
        spec()?,
        PipelineOptions {
            group: Some(group("features-bench_spend")?),
            ..PipelineOptions::default()
        },
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    let results = loop {
        let status = pipeline.status();
        let done: u64 = status.partitions.values().map(|p| p.next_offset).sum();
        let unpublished: usize = status.partitions.values().map(|p| p.unpublished).sum();
        if done >= events && unpublished == 0 {
            break status
                .partitions
                .values()
                .map(|p| p.counters.results)
                .sum::<u64>();
        }
        if Instant::now() > deadline {
            bail!("the pipeline did not finish in 1800 s ({done} of {events} events)");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    let pipeline_cpu = cpu_per_event(cpu, events);
    pipeline.stop().await?;
    backend.close().await?;
    let rate = events as f64 / seconds;
    let piped = StageRun {
        workload: "pipeline",
        keys,
        events,
        seconds,
        events_per_sec: rate,
        results,
        ratio_to_consume: Some(rate / consume.events_per_sec),
        state_bytes_per_key_window: None,
        cpu_us_per_event: pipeline_cpu,
        peak_rss_mib: peak_rss_bytes().map(mib),
        fsync: Some("os"),
    };
    Ok((consume, piped))
}
