//! `runnel bench inference`: what scoring costs (issue 22's benchmark).
//!
//! Three parts, each optional (`--only`):
//! - `models`: the shipped fraud models (`models/fraud_lr.onnx`, `models/fraud_rf.onnx`, built
//!   into the binary) in this process through tract, one call at a time with 1 and with 32
//!   rows: rows/s, µs/row and the call's p50/p99, on the calling thread (tract alone) and
//!   through `Model::predict` (tokio's blocking pool, as the stage calls it);
//! - `mlserver`: the same models trained for MLServer's scikit-learn runtime by the shipped
//!   training script (built into the binary, run with the `python` beside `--mlserver`) and
//!   served by a private MLServer on free ports, called through `RemoteModel` (the Open
//!   Inference Protocol) one call at a time: the same figures, and the ratio to in-process;
//! - `stage`: the inference stage end to end over an embedded backend in a temporary
//!   directory, under fsync `os` and `group`: customers' features written to the online
//!   feature store first, then `order.placed` events published at `--rate` for `--seconds`
//!   (1 ms ticks, each tick's events in one publish), scored by the LR model with the stage's
//!   default batching, deadline and breaker. Latency is the prediction's append time minus its
//!   input's append time, both read back from the log (the same clock): p50, p99 and max. Every
//!   input must get exactly one prediction; the run reports inputs, predictions, inputs
//!   without one and duplicates, and how many the model (rather than the ladder) answered.
//!   With MLServer, a third run scores through it (fsync `os`).

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use runnel_backend::{Backend, BackendError, ReadFrom, StreamName};
use runnel_backend_embedded::{EmbeddedBackend, EmbeddedConfig};
use runnel_clock::Micros;
use runnel_envelope::{Event, EventType, Source};
use runnel_inference::{
    InferenceStage, Model, ModelSpec, OnnxModel, OnnxOptions, RemoteModel, RemoteOptions,
    StageOptions,
};
use runnel_runtime::{Runnel, RuntimeConfig};
use runnel_stages::{FeatureStore, FeatureValue};
use serde::Serialize;
use serde_json::{Value, json};

use super::{FsyncArg, print_table};
use crate::measure::cpu_seconds;

const LR_ONNX: &[u8] = include_bytes!("../../../../models/fraud_lr.onnx");
const RF_ONNX: &[u8] = include_bytes!("../../../../models/fraud_rf.onnx");
const TEST_SET: &str = include_str!("../../../../models/fraud_testset.csv");
const TRAINING_SCRIPT: &str = include_str!("../../../../scripts/train_fraud_model.py");
const INPUTS: usize = 5;
const OUTPUTS: [&str; 2] = ["legit", "fraud"];
const BATCHES: [usize; 2] = [1, 32];
const FEATURE_SET: &str = "customer_1h";
/// Events published (and scored) before each stage run's measured part.
const WARM_UP: u64 = 500;

/// The stage's model: the shipped LR with the stage's defaults (batching, deadline, breaker).
const MODEL_TOML: &str = r#"
name = "fraud"
input = "order.placed"
output = "fraud.scored"
outputs = ["legit", "fraud"]
inputs = [
  { name = "amount", pointer = "/amount" },
  { name = "orders_1h", feature = "customer_1h.orders", default = 0 },
  { name = "spent_1h", feature = "customer_1h.spent", default = 0 },
  { name = "mean_1h", feature = "customer_1h.mean", default = 0 },
  { name = "merchants_1h", feature = "customer_1h.merchants", default = 0 },
]
fallback = { legit = "if(amount > 1000, 0.1, 0.97)", fraud = "if(amount > 1000, 0.9, 0.03)" }
"#;

#[derive(Debug, Args)]
pub struct InferenceBenchArgs {
    /// Print one JSON object per run instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Which parts to run: `models` (in-process rows), `mlserver` (the same through
    /// MLServer), `stage` (event → prediction latency at `--rate`).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "models,mlserver,stage"
    )]
    pub only: Vec<Part>,
    /// Seconds each model row scores for (after a short warm-up).
    #[arg(long, default_value_t = 3.0)]
    pub row_seconds: f64,
    /// Events per second the stage runs publish.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub rate: u64,
    /// Seconds each stage run publishes for.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub seconds: u64,
    /// The fsync policies of the in-process stage runs, in the order they run.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "os,group")]
    pub fsync: Vec<FsyncArg>,
    /// Customers the events are spread over (partition keys, each with features in the
    /// store).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub customers: u64,
    /// The `mlserver` executable of a virtual environment that also has scikit-learn
    /// (`pip install mlserver mlserver-sklearn`); its `python` trains the models. Without it
    /// the MLServer rows are skipped, and the output says so.
    #[arg(long, env = "RUNNEL_TEST_MLSERVER")]
    pub mlserver: Option<PathBuf>,
}

/// A part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Part {
    Models,
    Mlserver,
    Stage,
}

/// One model row: calls of `batch` rows, one at a time.
#[derive(Debug, Serialize)]
struct ModelRun {
    workload: &'static str,
    model: &'static str,
    /// `in_process` (tract) or `mlserver`.
    runner: &'static str,
    batch: usize,
    calls: u64,
    rows: u64,
    seconds: f64,
    rows_per_sec: f64,
    us_per_row: f64,
    call_p50_us: f64,
    call_p99_us: f64,
    /// In-process: µs/row through `Model::predict` (the blocking pool hop included), as the
    /// stage calls it.
    pooled_us_per_row: Option<f64>,
    /// MLServer: its µs/row over in-process `Model::predict`'s for the same model and batch.
    over_in_process: Option<f64>,
}

/// One stage run: events at a fixed rate through the LR model's stage.
#[derive(Debug, Serialize)]
struct StageRun {
    workload: &'static str,
    runner: &'static str,
    fsync: FsyncArg,
    rate_per_sec: u64,
    customers: u64,
    /// Inputs published in the measured part.
    events: u64,
    /// Predictions of those inputs found in the log.
    predictions: u64,
    /// Inputs without a prediction, and predictions beyond the first per input.
    missing: u64,
    duplicates: u64,
    /// Predictions the model answered (the rest came from the cache or the fallback).
    by_model: u64,
    degraded: u64,
    /// Model calls and rows per call in the measured part.
    calls: u64,
    rows_per_call: f64,
    seconds: f64,
    events_per_sec: f64,
    /// Prediction's append time − input's append time, in ms.
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// The target for this fsync policy, and whether p99 met it.
    target_p99_ms: Option<f64>,
    met: Option<bool>,
    cpu_us_per_event: Option<f64>,
}

/// A run skipped, and why.
#[derive(Debug, Serialize)]
struct Skipped {
    workload: &'static str,
    skipped: String,
}

pub fn run(args: InferenceBenchArgs) -> anyhow::Result<()> {
    if args.row_seconds.is_nan() || args.row_seconds <= 0.0 {
        return Err(crate::cli::UsageError("--row-seconds must be above 0".into()).into());
    }
    if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
        // tract builds error values with backtraces on its tree ensemble's hot path.
        eprintln!(
            "warning: RUST_BACKTRACE is set: tract's tree ensembles (the forest rows) run \
             several times slower with it; unset it for figures of record"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(measure(&args))
}

async fn measure(args: &InferenceBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let rows = test_rows()?;
    let lr = load_onnx(dir.path(), "lr", LR_ONNX).await?;
    let rf = load_onnx(dir.path(), "rf", RF_ONNX).await?;
    let mut model_runs = Vec::new();
    if args.only.contains(&Part::Models) {
        for (name, model) in [("lr", &lr), ("rf", &rf)] {
            for batch in BATCHES {
                model_runs.push(in_process_row(args, name, model.clone(), batch, &rows).await?);
            }
        }
        emit_models(args, &model_runs)?;
    }
    let wants_mlserver = args.only.contains(&Part::Mlserver);
    let mlserver = args.mlserver.as_ref().filter(|p| !p.as_os_str().is_empty());
    let mut server = None;
    if wants_mlserver {
        match mlserver {
            None => emit_skipped(
                args,
                "mlserver",
                "no MLServer: pass --mlserver PATH or set RUNNEL_TEST_MLSERVER",
            )?,
            Some(path) => server = Some(MlServer::start(path, &dir.path().join("mlserver")).await?),
        }
    }
    if let Some(server) = &server {
        let mut runs = Vec::new();
        for name in ["lr", "rf"] {
            let remote: Arc<dyn Model> = Arc::new(server.model(name).await?);
            for batch in BATCHES {
                let mut run = remote_row(args, name, remote.clone(), batch, &rows).await?;
                run.over_in_process = model_runs
                    .iter()
                    .find(|r| r.model == name && r.batch == batch)
                    .and_then(|r| r.pooled_us_per_row)
                    .map(|local| run.us_per_row / local);
                runs.push(run);
            }
        }
        emit_models(args, &runs)?;
    }
    if args.only.contains(&Part::Stage) {
        let mut runs = Vec::new();
        for &fsync in &args.fsync {
            runs.push(stage_run(args, lr.clone(), "in_process", fsync, &rows).await?);
        }
        if let Some(server) = &server {
            let remote: Arc<dyn Model> = Arc::new(server.model("lr").await?);
            runs.push(stage_run(args, remote, "mlserver", FsyncArg::Os, &rows).await?);
        }
        emit_stages(args, &runs)?;
    }
    Ok(())
}

fn emit_skipped(
    args: &InferenceBenchArgs,
    workload: &'static str,
    why: &str,
) -> anyhow::Result<()> {
    if args.json {
        let skipped = Skipped {
            workload,
            skipped: why.to_string(),
        };
        println!("{}", serde_json::to_string(&skipped)?);
    } else {
        println!("{workload}: skipped ({why})\n");
    }
    Ok(())
}

fn emit_models(args: &InferenceBenchArgs, runs: &[ModelRun]) -> anyhow::Result<()> {
    if args.json {
        for run in runs {
            println!("{}", serde_json::to_string(run)?);
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.model.to_string(),
                r.runner.to_string(),
                r.batch.to_string(),
                format!("{:.0}", r.rows_per_sec),
                format!("{:.1}", r.us_per_row),
                r.pooled_us_per_row
                    .map_or("-".into(), |x| format!("{x:.1}")),
                format!("{:.0}", r.call_p50_us),
                format!("{:.0}", r.call_p99_us),
                r.over_in_process.map_or("-".into(), |x| format!("{x:.1}×")),
            ]
        })
        .collect();
    print_table(
        &[
            "model",
            "runner",
            "batch",
            "rows/s",
            "µs/row",
            "pooled µs/row",
            "call p50 µs",
            "call p99 µs",
            "vs in-process",
        ],
        &rows,
    );
    println!(
        "(one call at a time; in-process µs/row on the calling thread, pooled through the blocking pool)\n"
    );
    Ok(())
}

fn emit_stages(args: &InferenceBenchArgs, runs: &[StageRun]) -> anyhow::Result<()> {
    if args.json {
        for run in runs {
            println!("{}", serde_json::to_string(run)?);
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.runner.to_string(),
                format!("{:?}", r.fsync).to_lowercase(),
                r.rate_per_sec.to_string(),
                r.events.to_string(),
                r.predictions.to_string(),
                r.by_model.to_string(),
                format!("{:.1}", r.rows_per_call),
                format!("{:.2}", r.p50_ms),
                format!("{:.2}", r.p99_ms),
                format!("{:.2}", r.max_ms),
                r.target_p99_ms.map_or("-".into(), |t| {
                    format!(
                        "≤ {t} {}",
                        if r.met == Some(true) { "met" } else { "MISSED" }
                    )
                }),
                r.cpu_us_per_event.map_or("-".into(), |c| format!("{c:.0}")),
            ]
        })
        .collect();
    print_table(
        &[
            "runner",
            "fsync",
            "rate/s",
            "events",
            "predictions",
            "by model",
            "rows/call",
            "p50 ms",
            "p99 ms",
            "max ms",
            "p99 target",
            "cpu µs/event",
        ],
        &rows,
    );
    println!("(latency: the prediction's append time minus its input's, both read from the log)");
    Ok(())
}

/// The test set's input rows (the training script wrote them).
fn test_rows() -> anyhow::Result<Vec<Vec<f64>>> {
    let mut reader = csv::Reader::from_reader(TEST_SET.as_bytes());
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.context("the built-in test set")?;
        let row = (0..INPUTS)
            .map(|i| {
                record
                    .get(i)
                    .and_then(|v| v.parse::<f64>().ok())
                    .context("the built-in test set: a row without its five inputs")
            })
            .collect::<anyhow::Result<Vec<f64>>>()?;
        rows.push(row);
    }
    if rows.is_empty() {
        bail!("the built-in test set has no rows");
    }
    Ok(rows)
}

async fn load_onnx(dir: &Path, name: &'static str, bytes: &[u8]) -> anyhow::Result<Arc<OnnxModel>> {
    let path = dir.join(format!("fraud_{name}.onnx"));
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    let options = OnnxOptions {
        name: format!("fraud-{name}"),
        version: Some(format!("fraud_{name}")),
        inputs: INPUTS,
        output: "probabilities".into(),
        outputs: OUTPUTS.iter().map(|s| s.to_string()).collect(),
    };
    let model = tokio::task::spawn_blocking(move || OnnxModel::load(&path, options))
        .await
        .context("the model loading task")??;
    Ok(Arc::new(model))
}

/// The rows of call `n` of `batch` rows, cycling through the test set.
fn batch_of(rows: &[Vec<f64>], n: u64, batch: usize) -> Vec<Vec<f64>> {
    (0..batch)
        .map(|i| rows[(n as usize * batch + i) % rows.len()].clone())
        .collect()
}

/// Call durations (µs) until `seconds` have passed (and at least 10 calls), after a warm-up
/// of a tenth of that; `call` scores call `n`.
async fn timed_calls<F, Fut>(seconds: f64, mut call: F) -> anyhow::Result<(Histogram<u64>, f64)>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let warm = Instant::now();
    let mut n = 0u64;
    while warm.elapsed().as_secs_f64() < seconds / 10.0 || n < 3 {
        call(n).await?;
        n += 1;
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed().as_secs_f64() < seconds || calls < 10 {
        let at = Instant::now();
        call(n + calls).await?;
        histogram.saturating_record(at.elapsed().as_micros().max(1) as u64);
        calls += 1;
    }
    Ok((histogram, started.elapsed().as_secs_f64()))
}

fn model_run(
    model: &'static str,
    runner: &'static str,
    batch: usize,
    histogram: &Histogram<u64>,
    seconds: f64,
) -> ModelRun {
    let calls = histogram.len();
    let rows = calls * batch as u64;
    ModelRun {
        workload: "model",
        model,
        runner,
        batch,
        calls,
        rows,
        seconds,
        rows_per_sec: rows as f64 / seconds,
        us_per_row: seconds * 1e6 / rows as f64,
        call_p50_us: histogram.value_at_quantile(0.5) as f64,
        call_p99_us: histogram.value_at_quantile(0.99) as f64,
        pooled_us_per_row: None,
        over_in_process: None,
    }
}

async fn in_process_row(
    args: &InferenceBenchArgs,
    name: &'static str,
    model: Arc<OnnxModel>,
    batch: usize,
    rows: &[Vec<f64>],
) -> anyhow::Result<ModelRun> {
    let (histogram, seconds) = timed_calls(args.row_seconds, |n| {
        let answer = model.predict_blocking(&batch_of(rows, n, batch));
        async move { answer.map(drop).map_err(Into::into) }
    })
    .await?;
    let mut run = model_run(name, "in_process", batch, &histogram, seconds);
    let pooled: Arc<dyn Model> = model;
    let (histogram, seconds) = timed_calls(args.row_seconds, |n| {
        let (model, rows) = (pooled.clone(), batch_of(rows, n, batch));
        async move { model.predict(rows).await.map(drop).map_err(Into::into) }
    })
    .await?;
    run.pooled_us_per_row = Some(seconds * 1e6 / (histogram.len() * batch as u64) as f64);
    Ok(run)
}

async fn remote_row(
    args: &InferenceBenchArgs,
    name: &'static str,
    model: Arc<dyn Model>,
    batch: usize,
    rows: &[Vec<f64>],
) -> anyhow::Result<ModelRun> {
    let (histogram, seconds) = timed_calls(args.row_seconds, |n| {
        let (model, rows) = (model.clone(), batch_of(rows, n, batch));
        async move { model.predict(rows).await.map(drop).map_err(Into::into) }
    })
    .await?;
    Ok(model_run(name, "mlserver", batch, &histogram, seconds))
}

/// A private MLServer serving `fraud-lr` and `fraud-rf`; killed when dropped.
struct MlServer {
    child: Child,
    port: u16,
}

impl Drop for MlServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl MlServer {
    /// Trains the joblib models with the `python` beside `mlserver`, writes MLServer's
    /// settings into `dir` and starts it there; ready once both models answer metadata.
    async fn start(mlserver: &Path, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let script = dir.join("train_fraud_model.py");
        std::fs::write(&script, TRAINING_SCRIPT)?;
        let python = mlserver.with_file_name("python");
        let output = Command::new(&python)
            .arg(&script)
            .arg("--joblib")
            .arg(dir)
            .output()
            .with_context(|| format!("running {}", python.display()))?;
        if !output.status.success() {
            bail!(
                "training the MLServer models with {} failed: {}",
                python.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        for name in ["lr", "rf"] {
            let settings = json!({
                "name": format!("fraud-{name}"),
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": { "uri": "./model.joblib", "version": format!("fraud_{name}") },
            });
            std::fs::write(
                dir.join(name).join("model-settings.json"),
                settings.to_string(),
            )?;
        }
        let port = free_port()?;
        let settings = json!({
            "host": "127.0.0.1",
            "http_port": port,
            "grpc_port": free_port()?,
            "metrics_port": free_port()?,
            // With today's uvloop MLServer's worker processes die at start; serve in-process.
            "parallel_workers": 0,
        });
        std::fs::write(dir.join("settings.json"), settings.to_string())?;
        let log = dir.join("mlserver.log");
        let child = Command::new(mlserver)
            .arg("start")
            .arg(dir)
            .current_dir(dir)
            .stdout(Stdio::from(std::fs::File::create(&log)?))
            .stderr(Stdio::from(std::fs::File::create(
                dir.join("mlserver.err"),
            )?))
            .spawn()
            .with_context(|| format!("starting {}", mlserver.display()))?;
        let mut server = Self { child, port };
        let started = Instant::now();
        loop {
            if server.model("lr").await.is_ok() && server.model("rf").await.is_ok() {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                let err = std::fs::read_to_string(dir.join("mlserver.err")).unwrap_or_default();
                bail!("mlserver exited at start ({status}): {err}");
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("mlserver not ready after 120 s");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn model(&self, name: &str) -> anyhow::Result<RemoteModel> {
        Ok(RemoteModel::connect(RemoteOptions {
            name: format!("fraud-{name}"),
            url: format!("http://127.0.0.1:{}", self.port),
            model: format!("fraud-{name}"),
            version: None,
            inputs: INPUTS,
            input_name: "input-0".into(),
            output: "predict_proba".into(),
            outputs: OUTPUTS.iter().map(|s| s.to_string()).collect(),
            connect_timeout: Duration::from_secs(5),
        })
        .await?)
    }
}

fn customer(n: u64) -> String {
    format!("c-{n}")
}

fn now_micros() -> Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as Micros)
}

/// Writes every customer's last-hour features (taken from the test set's rows).
async fn write_features(
    store: &FeatureStore,
    customers: u64,
    rows: &[Vec<f64>],
) -> anyhow::Result<()> {
    let now = now_micros();
    let end = i64::try_from(now).context("the clock is past year 294,000")?;
    let mut writes = tokio::task::JoinSet::new();
    for c in 0..customers {
        let row = &rows[c as usize % rows.len()];
        let mut values = serde_json::Map::new();
        for (i, name) in ["orders", "spent", "mean", "merchants"].iter().enumerate() {
            values.insert(name.to_string(), json!(row[i + 1]));
        }
        let value = FeatureValue {
            values,
            window_start: end - 3_600_000_000,
            window_end: end,
            revision: 1,
            watermark: None,
            updated_at: now,
        };
        let store = store.clone();
        writes.spawn(async move { store.put(FEATURE_SET, &customer(c), &value).await });
        if writes.len() >= 64
            && let Some(done) = writes.join_next().await
        {
            done??;
        }
    }
    while let Some(done) = writes.join_next().await {
        done??;
    }
    Ok(())
}

fn order(n: u64, customers: u64, rows: &[Vec<f64>]) -> anyhow::Result<Event> {
    let amount = rows[n as usize % rows.len()][0];
    Ok(Event::builder(
        EventType::new("order.placed")?,
        Source::new("bench://shop")?,
    )
    .partition_key(customer(n % customers))
    .data_json(json!({ "order": n, "amount": amount }))
    .build()?)
}

/// Records in `stream` (all partitions; none when it does not exist yet).
async fn high_watermarks(backend: &dyn Backend, stream: &StreamName) -> anyhow::Result<u64> {
    match backend.describe_stream(stream).await {
        Ok(info) => Ok(info.partitions.iter().map(|p| p.high_watermark).sum()),
        Err(BackendError::UnknownStream(_)) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Every event in `stream` with its append time.
async fn read_all(
    backend: &dyn Backend,
    stream: &StreamName,
) -> anyhow::Result<Vec<(Micros, Event)>> {
    let info = backend.describe_stream(stream).await?;
    let mut events = Vec::new();
    for partition in info.partitions {
        let mut offset = partition.start_offset;
        while offset < partition.high_watermark {
            let records = backend
                .read(
                    stream,
                    partition.partition,
                    ReadFrom::Offset(offset),
                    1000,
                    4 << 20,
                )
                .await?;
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            for record in records {
                events.push((record.timestamp, Event::decode_binary(&record.value)?));
            }
        }
    }
    Ok(events)
}

/// Publishes `count` orders from `first` at `rate` per second in 1 ms ticks, each tick's
/// orders in one publish; returns their ids.
async fn publish_at_rate(
    runnel: &Runnel,
    first: u64,
    count: u64,
    rate: u64,
    customers: u64,
    rows: &[Vec<f64>],
) -> anyhow::Result<HashSet<String>> {
    let mut ids = HashSet::with_capacity(count as usize);
    let started = Instant::now();
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut in_flight = tokio::task::JoinSet::new();
    let mut tick = 0u64;
    let mut next = first;
    while next < first + count {
        interval.tick().await;
        tick += 1;
        // Orders due by the end of this tick (rates below 1,000/s skip ticks).
        let due = (first + tick * rate / 1000).min(first + count);
        if due <= next {
            continue;
        }
        let batch = (next..due)
            .map(|n| order(n, customers, rows))
            .collect::<anyhow::Result<Vec<_>>>()?;
        ids.extend(batch.iter().map(|e| e.id().as_str().to_string()));
        next = due;
        let runnel = runnel.clone();
        in_flight.spawn(async move { runnel.publish_batch(batch).await });
        while let Some(done) = in_flight.try_join_next() {
            done??;
        }
    }
    while let Some(done) = in_flight.join_next().await {
        done??;
    }
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "published");
    Ok(ids)
}

async fn wait_for(
    backend: &dyn Backend,
    stream: &StreamName,
    want: u64,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let have = high_watermarks(backend, stream).await?;
        if have >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {have} of {want} predictions within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn stage_run(
    args: &InferenceBenchArgs,
    model: Arc<dyn Model>,
    runner: &'static str,
    fsync: FsyncArg,
    rows: &[Vec<f64>],
) -> anyhow::Result<StageRun> {
    let dir = tempfile::tempdir()?;
    let backend: Arc<dyn Backend> = Arc::new(
        EmbeddedBackend::open(EmbeddedConfig {
            fsync: fsync.policy(),
            ..EmbeddedConfig::new(dir.path())
        })
        .await
        .context("opening the embedded backend")?,
    );
    let runnel = Runnel::open(RuntimeConfig::default(), backend.clone());
    let store = FeatureStore::new(backend.clone());
    write_features(&store, args.customers, rows).await?;
    let spec: ModelSpec = toml::from_str(MODEL_TOML).context("the bench's model table")?;
    let stage = InferenceStage::start_with_model(
        &runnel,
        spec,
        model,
        StageOptions {
            store: Some(store),
            ..StageOptions::default()
        },
    )
    .await
    .context("starting the stage")?;
    let predictions = StreamName::new("fraud")?;
    let inputs = StreamName::new("order")?;

    // Warm-up: the group holds its partitions, both streams exist, the model is hot.
    publish_at_rate(&runnel, 0, WARM_UP, args.rate, args.customers, rows).await?;
    wait_for(&*backend, &predictions, WARM_UP, Duration::from_secs(120)).await?;

    let total = args.rate * args.seconds;
    let counts = stage.scorer().counts();
    let cpu = cpu_seconds(std::process::id());
    let started = Instant::now();
    let ids = publish_at_rate(&runnel, WARM_UP, total, args.rate, args.customers, rows).await?;
    let published_in = started.elapsed().as_secs_f64();
    let waited = wait_for(
        &*backend,
        &predictions,
        WARM_UP + total,
        Duration::from_secs(120),
    )
    .await;
    let cpu = cpu.zip(cpu_seconds(std::process::id())).map(|(a, b)| b - a);
    let after = stage.scorer().counts();
    stage.stop().await?;
    if let Err(e) = waited {
        tracing::warn!(%e, "not every input was scored");
    }

    // Latency from the log: input append time → prediction append time.
    let appended: HashMap<String, Micros> = read_all(&*backend, &inputs)
        .await?
        .into_iter()
        .filter(|(_, e)| ids.contains(e.id().as_str()))
        .map(|(at, e)| (e.id().as_str().to_string(), at))
        .collect();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut scored: HashMap<String, u64> = HashMap::new();
    let (mut by_model, mut degraded) = (0u64, 0u64);
    for (at, event) in read_all(&*backend, &predictions).await? {
        let data = event.data().as_json();
        let field = |pointer: &str| data.and_then(|d| d.pointer(pointer));
        let Some(input) = field("/input/id").and_then(Value::as_str) else {
            continue;
        };
        let Some(input_at) = appended.get(input) else {
            continue;
        };
        let seen = scored.entry(input.to_string()).or_default();
        *seen += 1;
        if *seen > 1 {
            continue;
        }
        histogram.saturating_record(at.saturating_sub(*input_at).max(1));
        if field("/served_by").and_then(Value::as_str) == Some("model") {
            by_model += 1;
        }
        if field("/degraded").and_then(Value::as_bool) == Some(true) {
            degraded += 1;
        }
    }
    runnel.backend().close().await?;
    let found = scored.len() as u64;
    let duplicates = scored.values().map(|n| n - 1).sum();
    let calls = after.calls - counts.calls;
    let target = match (runner, fsync) {
        ("in_process", FsyncArg::Os) => Some(5.0),
        ("in_process", FsyncArg::Group) => Some(10.0),
        _ => None,
    };
    let p99_ms = histogram.value_at_quantile(0.99) as f64 / 1000.0;
    Ok(StageRun {
        workload: "stage",
        runner,
        fsync,
        rate_per_sec: args.rate,
        customers: args.customers,
        events: total,
        predictions: found,
        missing: total.saturating_sub(found),
        duplicates,
        by_model,
        degraded,
        calls,
        rows_per_call: (after.rows - counts.rows) as f64 / calls.max(1) as f64,
        seconds: published_in,
        events_per_sec: total as f64 / published_in,
        p50_ms: histogram.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms,
        max_ms: histogram.max() as f64 / 1000.0,
        target_p99_ms: target,
        met: target.map(|t| p99_ms <= t),
        cpu_us_per_event: cpu.map(|c| c * 1e6 / total as f64),
    })
}
