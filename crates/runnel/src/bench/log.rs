//! `runnel bench log`: append throughput and latency under each fsync policy, sequential
//! replay, recovery time after SIGKILL, and memory while appending gigabytes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use hdrhistogram::Histogram;
use runnel_log::{LogConfig, PartitionLog, Record};
use serde::Serialize;

use super::{FsyncArg, print_table};
use crate::measure::{mib, peak_rss_bytes, reset_peak_rss, rss_bytes};

#[derive(Debug, Args)]
pub struct LogBenchArgs {
    /// Print one JSON object per run instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Seconds each append run lasts.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// A short pass (0.3 s runs, 128 MiB recovery, no 4 GiB memory run) to check it works.
    #[arg(long)]
    pub quick: bool,
    /// Directory for the logs (default: a temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Only these workloads (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Workload>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    Append,
    Replay,
    Recovery,
    Memory,
}

/// One measured run; the JSON form of every row.
#[derive(Debug, Serialize)]
struct RunResult {
    workload: &'static str,
    record_bytes: usize,
    fsync: FsyncArg,
    batch: usize,
    writers: usize,
    records: u64,
    seconds: f64,
    records_per_sec: f64,
    mb_per_sec: f64,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    peak_rss_mib: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_bytes: Option<u64>,
    /// Growth of resident memory over the run (the memory workload).
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_growth_mib: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    syncs: Option<u64>,
}

pub fn run(args: LogBenchArgs) -> anyhow::Result<()> {
    let scratch;
    let root = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            scratch = tempfile::tempdir().context("creating a temporary directory")?;
            scratch.path().to_path_buf()
        }
    };
    let seconds = if args.quick { 0.3 } else { args.seconds };
    let wants = |w: Workload| args.only.is_empty() || args.only.contains(&w);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    let mut emit = |result: RunResult| {
        if args.json {
            println!("{}", serde_json::to_string(&result).unwrap_or_default());
        } else {
            eprintln!(
                "  {} {} B {} batch {} x{}: {:.0} rec/s",
                result.workload,
                result.record_bytes,
                serde_json::to_string(&result.fsync).unwrap_or_default(),
                result.batch,
                result.writers,
                result.records_per_sec
            );
        }
        results.push(result);
    };
    let mut run_id = 0;
    if wants(Workload::Append) {
        for record_bytes in [100, 1024] {
            for fsync in [FsyncArg::Os, FsyncArg::Always, FsyncArg::Group] {
                // `always` with 64 writers shows what group commit saves under concurrency.
                let writer_counts: &[usize] = match fsync {
                    FsyncArg::Group => &[1, 8, 64],
                    FsyncArg::Always => &[1, 64],
                    FsyncArg::Os => &[1],
                };
                for &writers in writer_counts {
                    for batch in [1, 100, 1000] {
                        run_id += 1;
                        let dir = root.join(format!("append-{run_id}"));
                        let result = runtime.block_on(append_run(
                            &dir,
                            record_bytes,
                            fsync,
                            batch,
                            writers,
                            seconds,
                        ))?;
                        std::fs::remove_dir_all(&dir).ok();
                        emit(result);
                    }
                }
            }
        }
    }
    if wants(Workload::Replay) {
        let count = if args.quick { 500_000 } else { 5_000_000 };
        emit(replay_run(&root.join("replay"), count)?);
        std::fs::remove_dir_all(root.join("replay")).ok();
    }
    if wants(Workload::Recovery) {
        let bytes = if args.quick { 128 << 20 } else { 1 << 30 };
        for result in recovery_run(&root.join("recovery"), bytes)? {
            emit(result);
        }
        std::fs::remove_dir_all(root.join("recovery")).ok();
    }
    if wants(Workload::Memory) && !args.quick {
        emit(memory_run(&root.join("memory"), 4 << 30)?);
        std::fs::remove_dir_all(root.join("memory")).ok();
    }
    if !args.json {
        let rows: Vec<Vec<String>> = results.iter().map(table_row).collect();
        print_table(
            &[
                "workload",
                "bytes",
                "fsync",
                "batch",
                "writers",
                "seconds",
                "records/s",
                "MB/s",
                "p50 µs",
                "p99 µs",
                "peak RSS MiB",
            ],
            &rows,
        );
    }
    Ok(())
}

fn table_row(r: &RunResult) -> Vec<String> {
    let opt = |v: Option<f64>, digits: usize| match v {
        Some(v) => format!("{v:.digits$}"),
        None => "-".into(),
    };
    vec![
        r.workload.to_string(),
        r.record_bytes.to_string(),
        format!("{:?}", r.fsync).to_lowercase(),
        r.batch.to_string(),
        r.writers.to_string(),
        format!("{:.3}", r.seconds),
        format!("{:.0}", r.records_per_sec),
        format!("{:.1}", r.mb_per_sec),
        opt(r.p50_us, 1),
        opt(r.p99_us, 1),
        opt(r.peak_rss_mib, 1),
    ]
}

fn open(dir: &Path, fsync: FsyncArg) -> anyhow::Result<PartitionLog> {
    let cfg = LogConfig {
        fsync: fsync.policy(),
        ..LogConfig::default()
    };
    Ok(PartitionLog::open(dir, cfg)
        .with_context(|| format!("opening {}", dir.display()))?
        .0)
}

fn payload(record_bytes: usize, batch: usize) -> Vec<Record> {
    let value: Vec<u8> = (0..record_bytes).map(|i| (i * 31 % 251) as u8).collect();
    vec![Record::new(Vec::new(), value); batch]
}

async fn append_run(
    dir: &Path,
    record_bytes: usize,
    fsync: FsyncArg,
    batch: usize,
    writers: usize,
    seconds: f64,
) -> anyhow::Result<RunResult> {
    let log = open(dir, fsync)?;
    reset_peak_rss();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let log = log.clone();
        let records = payload(record_bytes, batch);
        tasks.push(tokio::spawn(async move {
            let mut histogram = latency_histogram()?;
            let mut appended = 0u64;
            while Instant::now() < deadline {
                let start = Instant::now();
                log.append(records.clone()).await?;
                histogram.saturating_record(start.elapsed().as_nanos() as u64);
                appended += records.len() as u64;
            }
            anyhow::Ok((appended, histogram))
        }));
    }
    let mut histogram = latency_histogram()?;
    let mut records = 0;
    for task in tasks {
        let (count, h) = task.await??;
        records += count;
        histogram.add(h)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let syncs = log.stats().syncs;
    Ok(RunResult {
        workload: "append",
        record_bytes,
        fsync,
        batch,
        writers,
        records,
        seconds: elapsed,
        records_per_sec: records as f64 / elapsed,
        mb_per_sec: (records * record_bytes as u64) as f64 / elapsed / 1e6,
        p50_us: Some(histogram.value_at_quantile(0.5) as f64 / 1e3),
        p99_us: Some(histogram.value_at_quantile(0.99) as f64 / 1e3),
        peak_rss_mib: peak_rss_bytes().map(mib),
        log_bytes: Some(log.size_bytes()),
        rss_growth_mib: None,
        syncs: Some(syncs),
    })
}

/// Nanosecond latencies from 1 ns to 100 s at 3 significant digits.
fn latency_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 100_000_000_000, 3)?)
}

fn replay_run(dir: &Path, count: u64) -> anyhow::Result<RunResult> {
    let record_bytes = 100;
    {
        let log = open(dir, FsyncArg::Os)?;
        let batch = payload(record_bytes, 1000);
        for _ in 0..count / 1000 {
            log.append_blocking(batch.clone())?;
        }
    }
    let log = open(dir, FsyncArg::Os)?;
    reset_peak_rss();
    let started = Instant::now();
    let mut reader = log.reader(0)?;
    let mut records = 0u64;
    let mut bytes = 0u64;
    loop {
        let batch = reader.read(10_000, 16 << 20)?;
        if batch.is_empty() {
            break;
        }
        records += batch.len() as u64;
        bytes += batch.iter().map(|r| r.value.len() as u64).sum::<u64>();
    }
    let elapsed = started.elapsed().as_secs_f64();
    if records != log.high_watermark() {
        bail!("replay read {records} of {} records", log.high_watermark());
    }
    Ok(RunResult {
        workload: "replay",
        record_bytes,
        fsync: FsyncArg::Os,
        batch: 10_000,
        writers: 1,
        records,
        seconds: elapsed,
        records_per_sec: records as f64 / elapsed,
        mb_per_sec: bytes as f64 / elapsed / 1e6,
        p50_us: None,
        p99_us: None,
        peak_rss_mib: peak_rss_bytes().map(mib),
        log_bytes: Some(log.size_bytes()),
        rss_growth_mib: None,
        syncs: None,
    })
}

/// Writes `bytes` of 1 KiB records in a child process, kills it with SIGKILL while it keeps
/// appending, and times reopening the log; then times it again with every index removed.
fn recovery_run(dir: &Path, bytes: u64) -> anyhow::Result<[RunResult; 2]> {
    let exe = std::env::current_exe().context("locating the runnel binary")?;
    let mut child = Command::new(exe)
        .args(["__log-writer", "--fsync", "os", "--max-value", "1024"])
        .args([
            "--max-batch",
            "1000",
            "--segment-bytes",
            &(128u64 << 20).to_string(),
        ])
        .args(["--report", "false", "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the log writer")?;
    let stdout = child.stdout.take().context("writer stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    lines.next().transpose()?; // "ready"
    let deadline = Instant::now() + Duration::from_secs(300);
    while dir_bytes(dir) < bytes {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the writer did not reach {bytes} bytes in 300 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().context("killing the writer")?;
    child.wait()?;
    let log_bytes = dir_bytes(dir);
    let after_kill = timed_open(dir, "recovery", log_bytes)?;
    // The worst case: every index lost, so every segment is scanned and its indexes rebuilt.
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path
            .extension()
            .is_some_and(|e| e == "index" || e == "timeindex")
        {
            std::fs::remove_file(path)?;
        }
    }
    let rebuild = timed_open(dir, "recovery-rebuild", log_bytes)?;
    Ok([after_kill, rebuild])
}

fn timed_open(dir: &Path, workload: &'static str, log_bytes: u64) -> anyhow::Result<RunResult> {
    reset_peak_rss();
    let started = Instant::now();
    let (log, report) = PartitionLog::open(dir, LogConfig::default())?;
    let elapsed = started.elapsed().as_secs_f64();
    let records = log.high_watermark() - log.start_offset();
    tracing::info!(?report, "recovered");
    Ok(RunResult {
        workload,
        record_bytes: 1024,
        fsync: FsyncArg::Os,
        batch: 0,
        writers: 1,
        records,
        seconds: elapsed,
        records_per_sec: records as f64 / elapsed,
        mb_per_sec: log_bytes as f64 / elapsed / 1e6,
        p50_us: None,
        p99_us: None,
        peak_rss_mib: peak_rss_bytes().map(mib),
        log_bytes: Some(log_bytes),
        rss_growth_mib: None,
        syncs: None,
    })
}

/// Appends `bytes` of 1 KiB records and reports how far resident memory grew.
fn memory_run(dir: &Path, bytes: u64) -> anyhow::Result<RunResult> {
    // Old segments go by size retention, as in production, so the disk is not the limit.
    let cfg = LogConfig {
        fsync: FsyncArg::Os.policy(),
        retention: runnel_log::Retention {
            max_bytes: Some(1 << 30),
            max_age: None,
        },
        ..LogConfig::default()
    };
    let (log, _) = PartitionLog::open(dir, cfg)?;
    let batch = payload(1024, 1000);
    let batch_bytes = 1024 * 1000;
    let before = rss_bytes().unwrap_or(0);
    reset_peak_rss();
    let started = Instant::now();
    let mut written = 0u64;
    let mut records = 0u64;
    while written < bytes {
        log.append_blocking(batch.clone())?;
        written += batch_bytes;
        records += 1000;
        if records.is_multiple_of(100_000) {
            log.enforce_retention()?;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let peak = peak_rss_bytes().unwrap_or(0);
    Ok(RunResult {
        workload: "memory",
        record_bytes: 1024,
        fsync: FsyncArg::Os,
        batch: 1000,
        writers: 1,
        records,
        seconds: elapsed,
        records_per_sec: records as f64 / elapsed,
        mb_per_sec: written as f64 / elapsed / 1e6,
        p50_us: None,
        p99_us: None,
        peak_rss_mib: Some(mib(peak)),
        log_bytes: Some(written),
        rss_growth_mib: Some(mib(peak.saturating_sub(before))),
        syncs: None,
    })
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
