//! `runnel bench http`: publishing over HTTP to an in-process server (embedded backend, group
//! commit) with 1, 16 and 64 keep-alive connections, single events and batches of 100 events
//! of about 100 bytes of data. The load generator runs in the same process, so the figures are
//! what two cores do for client and server together.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use runnel_backends::{BackendSettings, FsyncSetting};
use runnel_server::ServerConfig;
use serde::Serialize;

use super::print_table;
use crate::config::RunnelConfig;
use crate::measure::{mib, peak_rss_bytes, reset_peak_rss};

#[derive(Debug, Args)]
pub struct HttpBenchArgs {
    /// Print one JSON object per run instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Seconds each run lasts.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// A short pass (0.5 s runs).
    #[arg(long)]
    pub quick: bool,
}

#[derive(Debug, Serialize)]
struct RunResult {
    workload: &'static str,
    fsync: &'static str,
    connections: usize,
    batch: usize,
    events: u64,
    seconds: f64,
    events_per_sec: f64,
    requests_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    peak_rss_mib: Option<f64>,
}

pub fn run(args: HttpBenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_all(args))
}

async fn run_all(args: HttpBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = RunnelConfig {
        server: ServerConfig {
            bind: "127.0.0.1:0".parse()?,
            data_dir: dir.path().to_path_buf(),
            ..ServerConfig::default()
        },
        storage: BackendSettings {
            fsync: FsyncSetting::Group,
            ..BackendSettings::default()
        },
        features: Vec::new(),
        sagas: Vec::new(),
        models: Vec::new(),
    };
    let server = config.bind().await.context("starting the server")?;
    let addr = server.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let seconds = if args.quick { 0.5 } else { args.seconds };
    let mut results = Vec::new();
    for batch in [1usize, 100] {
        for connections in [1usize, 16, 64] {
            let result = publish_run(addr, connections, batch, seconds).await?;
            if args.json {
                println!("{}", serde_json::to_string(&result)?);
            } else {
                eprintln!(
                    "  {} connections, batch {}: {:.0} events/s",
                    connections, batch, result.events_per_sec
                );
            }
            results.push(result);
        }
    }
    let _ = stop.send(());
    serving.await??;
    if !args.json {
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|r| {
                vec![
                    r.workload.to_string(),
                    r.fsync.to_string(),
                    r.connections.to_string(),
                    r.batch.to_string(),
                    format!("{:.0}", r.events_per_sec),
                    format!("{:.0}", r.requests_per_sec),
                    format!("{:.0}", r.p50_us),
                    format!("{:.0}", r.p99_us),
                    r.peak_rss_mib.map_or("-".into(), |m| format!("{m:.1}")),
                ]
            })
            .collect();
        print_table(
            &[
                "workload",
                "fsync",
                "connections",
                "batch",
                "events/s",
                "requests/s",
                "p50 µs",
                "p99 µs",
                "peak RSS MiB",
            ],
            &rows,
        );
    }
    Ok(())
}

/// Unique ids across runs, so no publish is answered as a duplicate.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn body(batch: usize) -> (Bytes, &'static str) {
    let mut text = String::with_capacity(batch * 200 + 2);
    let pad = "x".repeat(80);
    if batch > 1 {
        text.push('[');
    }
    for i in 0..batch {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        if i > 0 {
            text.push(',');
        }
        let _ = write!(
            text,
            r#"{{"specversion":"1.0","id":"bench-{id}","source":"bench","type":"bench.happened","partitionkey":"k{}","data":{{"n":{id},"pad":"{pad}"}}}}"#,
            id % 1000
        );
    }
    if batch > 1 {
        text.push(']');
        (text.into(), "application/cloudevents-batch+json")
    } else {
        (text.into(), "application/cloudevents+json")
    }
}

async fn publish_run(
    addr: SocketAddr,
    connections: usize,
    batch: usize,
    seconds: f64,
) -> anyhow::Result<RunResult> {
    reset_peak_rss();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let events = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let events = events.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            while Instant::now() < deadline {
                let (payload, content_type) = body(batch);
                let request = hyper::Request::post("/v1/events")
                    .header("host", addr.to_string())
                    .header("content-type", content_type)
                    .body(Full::new(payload))?;
                let start = Instant::now();
                let response = sender.send_request(request).await?;
                let status = response.status();
                let answer = response.into_body().collect().await?.to_bytes();
                if status.as_u16() != 202 {
                    bail!(
                        "publish answered {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
                latencies.saturating_record(start.elapsed().as_micros() as u64);
                events.fetch_add(batch as u64, Ordering::Relaxed);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for task in tasks {
        latencies.add(task.await??)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let events = events.load(Ordering::Relaxed);
    Ok(RunResult {
        workload: "publish",
        fsync: "group",
        connections,
        batch,
        events,
        seconds: elapsed,
        events_per_sec: events as f64 / elapsed,
        requests_per_sec: latencies.len() as f64 / elapsed,
        p50_us: latencies.value_at_quantile(0.5) as f64,
        p99_us: latencies.value_at_quantile(0.99) as f64,
        peak_rss_mib: peak_rss_bytes().map(mib),
    })
}
