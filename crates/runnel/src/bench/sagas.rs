//! `runnel bench sagas`: three-step sagas (reserve → charge → ship, each step with a
//! compensation) run in this process over the embedded backend, against in-process step
//! services: one consumer group per service that replies to each command at once.
//!
//! Two runs, after a warm-up of 200 sagas (so every group holds its partitions):
//! - `backlog`: `--sagas` orders published in batches of 500 as fast as they are taken,
//!   timed from the first publish until the last saga completed: sagas completed per second;
//! - `fixed_rate`: `--rate` orders per second for `--seconds`, one publish at a time: the
//!   saga duration (from the instance's start to its outcome, as `runnel_saga_duration_seconds`
//!   measures it) and the time from the order's publish to the outcome, p50 and p99.
//!
//! Beside each figure, what a saga cost the storage: key-value writes, reads and appends per
//! saga (all of them: the services' replies and the group offsets too) and their mean time,
//! counted by a wrapper around the backend, and the process's CPU time per saga.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use runnel_backend::{
    AppendAck, Backend, CommittedOffset, Expect, KvEntry, Partition, PartitionInfo, ReadFrom,
    Record, Revision, StoredRecord, StreamConfig, StreamInfo, StreamName,
};
use runnel_backend_embedded::{EmbeddedBackend, EmbeddedConfig};
use runnel_clock::Micros;
use runnel_envelope::{Event, EventType, Source};
use runnel_runtime::{GroupConfig, Message, Runnel, RuntimeConfig, TypePattern};
use runnel_saga::{
    Saga, SagaDriver, SagaHandle, SagaOptions, SagaQuery, SagaSpec, SagaState, Sagas, StepSpec,
    TriggerSpec,
};
use serde::Serialize;

use super::{FsyncArg, print_table};
use crate::measure::cpu_seconds;

#[derive(Debug, Args)]
pub struct SagasBenchArgs {
    /// Print one JSON object per run instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Orders in the backlog run.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub sagas: u64,
    /// Orders per second in the fixed-rate run.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub rate: u64,
    /// Seconds the fixed-rate run publishes for.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub seconds: u64,
    /// The embedded log's fsync policy (the metadata store commits durably under every one).
    #[arg(long, value_enum, default_value_t = FsyncArg::Group)]
    pub fsync: FsyncArg,
}

#[derive(Debug, Serialize)]
struct SagaRun {
    /// `backlog` or `fixed_rate`.
    workload: &'static str,
    fsync: FsyncArg,
    sagas: u64,
    steps: u64,
    /// The fixed-rate run's publish rate.
    rate_per_sec: Option<u64>,
    seconds: f64,
    sagas_per_sec: f64,
    steps_per_sec: f64,
    /// Saga duration, start to outcome (the instance's own times), in ms.
    p50_ms: f64,
    p99_ms: f64,
    /// From the order's publish to the saga's outcome, in ms.
    from_publish_p50_ms: f64,
    from_publish_p99_ms: f64,
    /// Key-value writes (puts and deletes, offset commits included) per saga.
    kv_writes_per_saga: f64,
    kv_reads_per_saga: f64,
    /// Appends (batches) per saga: orders, commands and replies.
    appends_per_saga: f64,
    /// Mean time of one key-value write and of one append, as their callers wait for them.
    kv_write_mean_us: f64,
    append_mean_us: f64,
    cpu_us_per_saga: Option<f64>,
}

const STEPS: [(&str, &str); 3] = [
    ("reserve", "inventory"),
    ("charge", "payment"),
    ("ship", "shipping"),
];
const WARM_UP: u64 = 200;

pub fn run(args: SagasBenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let runs = runtime.block_on(measure(&args))?;
    if args.json {
        for run in &runs {
            println!("{}", serde_json::to_string(run)?);
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.workload.to_string(),
                r.sagas.to_string(),
                r.rate_per_sec.map_or("-".into(), |x| x.to_string()),
                format!("{:.0}", r.sagas_per_sec),
                format!("{:.0}", r.steps_per_sec),
                format!("{:.1}", r.p50_ms),
                format!("{:.1}", r.p99_ms),
                format!("{:.1}", r.from_publish_p50_ms),
                format!("{:.1}", r.from_publish_p99_ms),
                format!("{:.1}", r.kv_writes_per_saga),
                format!("{:.1}", r.kv_reads_per_saga),
                format!("{:.1}", r.appends_per_saga),
                r.cpu_us_per_saga.map_or("-".into(), |c| format!("{c:.0}")),
            ]
        })
        .collect();
    print_table(
        &[
            "workload",
            "sagas",
            "rate/s",
            "sagas/s",
            "steps/s",
            "p50 ms",
            "p99 ms",
            "pub→end p50",
            "pub→end p99",
            "kv writes",
            "kv reads",
            "appends",
            "cpu µs/saga",
        ],
        &rows,
    );
    println!(
        "(fsync {:?}; durations from each instance's start to its outcome; storage figures per saga)",
        args.fsync
    );
    Ok(())
}

fn saga() -> anyhow::Result<Saga> {
    SagaSpec {
        name: "order".into(),
        trigger: TriggerSpec {
            event_type: "order.placed".into(),
            condition: None,
        },
        steps: STEPS
            .iter()
            .map(|(step, domain)| {
                StepSpec::command(
                    step,
                    &format!("{domain}.{step}_requested"),
                    &format!("{domain}.{step}_done"),
                )
                .compensate(
                    &format!("{domain}.{step}_undo_requested"),
                    &format!("{domain}.{step}_undone"),
                )
            })
            .collect(),
    }
    .validate()
    .map_err(|e| anyhow::anyhow!("the bench's saga: {e}"))
}

fn order(n: u64) -> anyhow::Result<Event> {
    Ok(Event::builder(
        EventType::new("order.placed")?,
        Source::new("bench://shop")?,
    )
    .partition_key(format!("order-{n}"))
    .data_json(serde_json::json!({ "order": n, "items": 2, "amount": 300 }))
    .build()?)
}

/// The step services: a group per service over its command type, replying at once.
async fn services(runnel: &Runnel) -> anyhow::Result<Vec<runnel_runtime::ConsumerHandle>> {
    let mut handles = Vec::new();
    for (step, domain) in STEPS {
        let command = format!("{domain}.{step}_requested");
        let done = format!("{domain}.{step}_done");
        let name = format!("svc-{domain}");
        let mut group = GroupConfig::new(&name, TypePattern::new(&command)?);
        group.max_in_flight = 512;
        group.processed_ids = false;
        let handle = runnel
            .group(&name)
            .config(group)
            .run(move |message: Message| {
                let reply = message.reply(&done, serde_json::json!({ "ok": true }));
                async move { reply.map(|r| vec![r]) }
            })
            .await?;
        handles.push(handle);
    }
    Ok(handles)
}

async fn wait_completed(driver: &SagaHandle, want: u64, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let counts = driver.counts();
        if counts.completed >= want {
            return Ok(());
        }
        if counts.compensated + counts.stuck > 0 {
            bail!("a bench saga did not complete: {counts:?}");
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {want} sagas completed within {within:?}",
                counts.completed
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn now_micros() -> Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as Micros)
}

/// Publishes orders `range`, in batches of `batch`, remembering when each was published
/// (by the id of the instance it starts).
async fn publish_orders(
    runnel: &Runnel,
    saga: &Saga,
    range: std::ops::Range<u64>,
    batch: usize,
    published: &mut HashMap<String, Micros>,
) -> anyhow::Result<()> {
    let orders = range.map(order).collect::<anyhow::Result<Vec<_>>>()?;
    for chunk in orders.chunks(batch) {
        let at = now_micros();
        for event in chunk {
            published.insert(saga.instance_id(event.source(), event.id()), at);
        }
        runnel.publish_batch(chunk.to_vec()).await?;
    }
    Ok(())
}

/// p50 and p99 of `values` (µs) in ms.
fn percentiles(values: &[u64]) -> anyhow::Result<(f64, f64)> {
    let mut histogram = Histogram::<u64>::new(3)?;
    for &v in values {
        histogram.record(v.max(1))?;
    }
    Ok((
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
    ))
}

/// (start → outcome, publish → outcome) in µs of the completed instances published in `published`.
async fn durations(
    sagas: &Sagas,
    published: &HashMap<String, Micros>,
) -> anyhow::Result<(Vec<u64>, Vec<u64>)> {
    let mut own = Vec::new();
    let mut from_publish = Vec::new();
    let mut after = None;
    loop {
        let page = sagas
            .list(&SagaQuery {
                saga: Some("order".into()),
                state: Some(SagaState::Completed),
                after: after.clone(),
                limit: None,
            })
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        for instance in &page {
            let (Some(at), Some(ended)) = (published.get(&instance.id), instance.ended_at) else {
                continue;
            };
            own.push(ended.saturating_sub(instance.started_at));
            from_publish.push(ended.saturating_sub(*at));
        }
    }
    if own.len() != published.len() {
        bail!("{} of {} sagas found completed", own.len(), published.len());
    }
    Ok((own, from_publish))
}

async fn measure(args: &SagasBenchArgs) -> anyhow::Result<Vec<SagaRun>> {
    let dir = tempfile::tempdir()?;
    let embedded = EmbeddedBackend::open(EmbeddedConfig {
        fsync: args.fsync.policy(),
        ..EmbeddedConfig::new(dir.path())
    })
    .await
    .context("opening the embedded backend")?;
    let counting = Arc::new(Counting::new(Arc::new(embedded)));
    let backend: Arc<dyn Backend> = counting.clone();
    let runnel = Runnel::open(RuntimeConfig::default(), backend.clone());
    let saga = saga()?;
    let services = services(&runnel).await?;
    let mut group = GroupConfig::new("saga-order", TypePattern::new("order.placed")?);
    group.max_in_flight = 512;
    let driver = SagaDriver::start(
        &runnel,
        saga.clone(),
        SagaOptions {
            group: Some(group),
            ..SagaOptions::default()
        },
    )
    .await?;
    let sagas = Sagas::new(&runnel, vec![saga.clone()])?;

    // Warm-up: every group holds its partitions, the streams exist.
    let mut warm = HashMap::new();
    publish_orders(&runnel, &saga, 0..WARM_UP, 100, &mut warm).await?;
    wait_completed(&driver, WARM_UP, Duration::from_secs(120)).await?;

    let mut runs = Vec::new();
    // Backlog.
    let n = args.sagas;
    let mut published = HashMap::new();
    let before = counting.snapshot();
    let cpu = cpu_seconds(std::process::id());
    let started = Instant::now();
    publish_orders(&runnel, &saga, WARM_UP..WARM_UP + n, 500, &mut published).await?;
    wait_completed(&driver, WARM_UP + n, Duration::from_secs(1800)).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu.zip(cpu_seconds(std::process::id())).map(|(a, b)| b - a);
    let storage = counting.snapshot().since(&before);
    let (own, from_publish) = durations(&sagas, &published).await?;
    runs.push(SagaRun::new(
        "backlog",
        args,
        n,
        None,
        seconds,
        &own,
        &from_publish,
        storage,
        cpu,
    )?);

    // Fixed rate.
    let total = args.rate * args.seconds;
    let first = WARM_UP + n;
    let mut published = HashMap::new();
    let before = counting.snapshot();
    let cpu = cpu_seconds(std::process::id());
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / args.rate as u32);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for k in first..first + total {
        tick.tick().await;
        publish_orders(&runnel, &saga, k..k + 1, 1, &mut published).await?;
    }
    wait_completed(&driver, first + total, Duration::from_secs(1800)).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu.zip(cpu_seconds(std::process::id())).map(|(a, b)| b - a);
    let storage = counting.snapshot().since(&before);
    let (own, from_publish) = durations(&sagas, &published).await?;
    runs.push(SagaRun::new(
        "fixed_rate",
        args,
        total,
        Some(args.rate),
        seconds,
        &own,
        &from_publish,
        storage,
        cpu,
    )?);

    driver.stop().await?;
    for service in services {
        service.stop().await?;
    }
    backend.close().await?;
    Ok(runs)
}

impl SagaRun {
    #[allow(clippy::too_many_arguments)]
    fn new(
        workload: &'static str,
        args: &SagasBenchArgs,
        sagas: u64,
        rate_per_sec: Option<u64>,
        seconds: f64,
        own: &[u64],
        from_publish: &[u64],
        storage: Calls,
        cpu: Option<f64>,
    ) -> anyhow::Result<Self> {
        let (p50_ms, p99_ms) = percentiles(own)?;
        let (from_publish_p50_ms, from_publish_p99_ms) = percentiles(from_publish)?;
        let per = |x: u64| x as f64 / sagas as f64;
        let mean = |micros: u64, calls: u64| micros as f64 / calls.max(1) as f64;
        Ok(Self {
            workload,
            fsync: args.fsync,
            sagas,
            steps: 3,
            rate_per_sec,
            seconds,
            sagas_per_sec: sagas as f64 / seconds,
            steps_per_sec: 3.0 * sagas as f64 / seconds,
            p50_ms,
            p99_ms,
            from_publish_p50_ms,
            from_publish_p99_ms,
            kv_writes_per_saga: per(storage.writes),
            kv_reads_per_saga: per(storage.reads),
            appends_per_saga: per(storage.appends),
            kv_write_mean_us: mean(storage.write_micros, storage.writes),
            append_mean_us: mean(storage.append_micros, storage.appends),
            cpu_us_per_saga: cpu.map(|c| c * 1e6 / sagas as f64),
        })
    }
}

/// Calls a [`Counting`] backend saw.
#[derive(Debug, Clone, Copy, Default)]
struct Calls {
    writes: u64,
    write_micros: u64,
    reads: u64,
    appends: u64,
    append_micros: u64,
}

impl Calls {
    fn since(self, before: &Calls) -> Calls {
        Calls {
            writes: self.writes - before.writes,
            write_micros: self.write_micros - before.write_micros,
            reads: self.reads - before.reads,
            appends: self.appends - before.appends,
            append_micros: self.append_micros - before.append_micros,
        }
    }
}

/// A backend that counts and times the key-value writes, reads and appends made through it.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Backend>,
    writes: AtomicU64,
    write_micros: AtomicU64,
    reads: AtomicU64,
    appends: AtomicU64,
    append_micros: AtomicU64,
}

impl Counting {
    fn new(inner: Arc<dyn Backend>) -> Self {
        Self {
            inner,
            writes: AtomicU64::new(0),
            write_micros: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            appends: AtomicU64::new(0),
            append_micros: AtomicU64::new(0),
        }
    }

    fn snapshot(&self) -> Calls {
        Calls {
            writes: self.writes.load(Ordering::Relaxed),
            write_micros: self.write_micros.load(Ordering::Relaxed),
            reads: self.reads.load(Ordering::Relaxed),
            appends: self.appends.load(Ordering::Relaxed),
            append_micros: self.append_micros.load(Ordering::Relaxed),
        }
    }

    fn wrote(&self, since: Instant) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.write_micros
            .fetch_add(since.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

#[async_trait]
impl Backend for Counting {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn max_partitions(&self) -> u32 {
        self.inner.max_partitions()
    }

    async fn create_stream(
        &self,
        name: &StreamName,
        config: StreamConfig,
    ) -> runnel_backend::Result<StreamInfo> {
        self.inner.create_stream(name, config).await
    }

    async fn list_streams(&self) -> runnel_backend::Result<Vec<StreamInfo>> {
        self.inner.list_streams().await
    }

    async fn delete_stream(&self, name: &StreamName) -> runnel_backend::Result<()> {
        self.inner.delete_stream(name).await
    }

    async fn delete_group_offsets(&self, group: &str) -> runnel_backend::Result<usize> {
        self.inner.delete_group_offsets(group).await
    }

    async fn kv_delete_prefix(&self, bucket: &str, prefix: &str) -> runnel_backend::Result<usize> {
        self.inner.kv_delete_prefix(bucket, prefix).await
    }

    async fn describe_stream(&self, name: &StreamName) -> runnel_backend::Result<StreamInfo> {
        self.inner.describe_stream(name).await
    }

    async fn append(
        &self,
        stream: &StreamName,
        partition: Partition,
        records: Vec<Record>,
    ) -> runnel_backend::Result<AppendAck> {
        let since = Instant::now();
        let ack = self.inner.append(stream, partition, records).await;
        self.appends.fetch_add(1, Ordering::Relaxed);
        self.append_micros
            .fetch_add(since.elapsed().as_micros() as u64, Ordering::Relaxed);
        ack
    }

    async fn read(
        &self,
        stream: &StreamName,
        partition: Partition,
        from: ReadFrom,
        max_records: usize,
        max_bytes: usize,
    ) -> runnel_backend::Result<Vec<StoredRecord>> {
        self.inner
            .read(stream, partition, from, max_records, max_bytes)
            .await
    }

    async fn offset_for_time(
        &self,
        stream: &StreamName,
        partition: Partition,
        timestamp: Micros,
    ) -> runnel_backend::Result<u64> {
        self.inner
            .offset_for_time(stream, partition, timestamp)
            .await
    }

    async fn partition_info(
        &self,
        stream: &StreamName,
        partition: Partition,
    ) -> runnel_backend::Result<PartitionInfo> {
        self.inner.partition_info(stream, partition).await
    }

    async fn wait_for_data(
        &self,
        stream: &StreamName,
        partition: Partition,
        offset: u64,
        timeout: Duration,
    ) -> runnel_backend::Result<u64> {
        self.inner
            .wait_for_data(stream, partition, offset, timeout)
            .await
    }

    async fn committed_offset(
        &self,
        group: &str,
        stream: &StreamName,
        partition: Partition,
    ) -> runnel_backend::Result<Option<CommittedOffset>> {
        self.inner.committed_offset(group, stream, partition).await
    }

    async fn commit_offset(
        &self,
        group: &str,
        stream: &StreamName,
        partition: Partition,
        offset: u64,
        expect: Expect,
    ) -> runnel_backend::Result<Revision> {
        let since = Instant::now();
        let result = self
            .inner
            .commit_offset(group, stream, partition, offset, expect)
            .await;
        self.wrote(since);
        result
    }

    async fn kv_get(&self, bucket: &str, key: &str) -> runnel_backend::Result<Option<KvEntry>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.kv_get(bucket, key).await
    }

    async fn kv_put(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        expect: Expect,
        ttl: Option<Duration>,
    ) -> runnel_backend::Result<Revision> {
        let since = Instant::now();
        let result = self.inner.kv_put(bucket, key, value, expect, ttl).await;
        self.wrote(since);
        result
    }

    async fn kv_delete(
        &self,
        bucket: &str,
        key: &str,
        expect: Expect,
    ) -> runnel_backend::Result<()> {
        let since = Instant::now();
        let result = self.inner.kv_delete(bucket, key, expect).await;
        self.wrote(since);
        result
    }

    async fn kv_scan(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> runnel_backend::Result<Vec<KvEntry>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.kv_scan(bucket, prefix, start_after, limit).await
    }

    async fn close(&self) -> runnel_backend::Result<()> {
        self.inner.close().await
    }
}
