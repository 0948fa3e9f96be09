//! `runnel bench`: measurements of Runnel on this machine, printed as a table for people or as
//! JSON (one object per run) for scripts. Results go in `docs/BENCHMARKS.md` with the command.

mod compare;
mod http;
mod inference;
mod log;
mod runtime;
mod sagas;
mod stages;

use clap::{Subcommand, ValueEnum};
use runnel_log::FsyncPolicy;
use serde::Serialize;

#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// The partition log alone: appends under each fsync policy, replay, recovery, memory.
    Log(log::LogBenchArgs),
    /// The runtime over the embedded backend (or JetStream, beside raw async-nats): consume
    /// throughput, publish→handler latency, memory with many keys.
    Runtime(runtime::RuntimeBenchArgs),
    /// Feature windows: events/s through a 10-minute sliding window (1-minute slide) with
    /// count + sum + mean + distinct, the operator alone and end to end from the log as a
    /// ratio to a plain consumer group on the same backlog.
    Stages(stages::StagesBenchArgs),
    /// Three-step sagas (reserve → charge → ship) with in-process step services over the
    /// embedded backend (`group` fsync by default): sagas completed per second on a backlog,
    /// p50/p99 saga duration at a fixed rate, and the key-value writes, reads and appends each
    /// saga cost.
    Sagas(sagas::SagasBenchArgs),
    /// Model inference: the shipped fraud models (LR and a 20-tree forest) in this process
    /// and through MLServer, rows/s and µs/row with 1 and 32 rows a call; then the inference
    /// stage end to end at 5,000 events/s with features from the store (fsync `os` and
    /// `group`): event → prediction latency p50/p99 against the targets (5 ms, 10 ms).
    Inference(inference::InferenceBenchArgs),
    /// Publishing over HTTP to an in-process server: 1, 16 and 64 connections, single events
    /// and batches of 100.
    Http(http::HttpBenchArgs),
    /// Runnel beside NATS JetStream, Redis Streams and RabbitMQ on this machine: publish,
    /// consume+ack, latency at 10,000 events/s, fan-out and replay, with ratios to Runnel.
    Compare(compare::CompareBenchArgs),
}

pub fn run(target: BenchTarget) -> anyhow::Result<()> {
    match target {
        BenchTarget::Log(args) => log::run(args),
        BenchTarget::Runtime(args) => runtime::run(args),
        BenchTarget::Http(args) => http::run(args),
        BenchTarget::Stages(args) => stages::run(args),
        BenchTarget::Sagas(args) => sagas::run(args),
        BenchTarget::Inference(args) => inference::run(args),
        BenchTarget::Compare(args) => compare::run(args),
    }
}

/// An fsync policy as a flag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncArg {
    /// fdatasync before every append returns.
    Always,
    /// Group commit: concurrent appends share one write and one fdatasync.
    Group,
    /// No fdatasync; acknowledged once written to the operating system.
    Os,
}

impl FsyncArg {
    pub fn policy(self) -> FsyncPolicy {
        match self {
            FsyncArg::Always => FsyncPolicy::Always,
            FsyncArg::Group => FsyncPolicy::group(),
            FsyncArg::Os => FsyncPolicy::Os,
        }
    }
}

/// Prints rows as an aligned table.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:>w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(headers.iter().map(|h| h.to_string()).collect()));
    for row in rows {
        println!("{}", line(row.clone()));
    }
}
