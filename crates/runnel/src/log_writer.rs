//! The crash-test writer: appends to a log until it is killed, printing each acknowledged
//! record as `offset length crc32c` on stdout, so a harness can check after `kill -9` that
//! every acknowledged record survived byte for byte.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use rand::{Rng, SeedableRng};
use runnel_log::{LogConfig, PartitionLog, Record};

use crate::bench::FsyncArg;

#[derive(Debug, Args)]
pub struct LogWriterArgs {
    /// Partition directory to append to.
    #[arg(long)]
    pub dir: PathBuf,
    /// Fsync policy of the log.
    #[arg(long, value_enum, default_value = "always")]
    pub fsync: FsyncArg,
    /// Largest value in bytes (values are random in 1..=max).
    #[arg(long, default_value_t = 2048)]
    pub max_value: usize,
    /// Records per batch at most (batches are random in 1..=max).
    #[arg(long, default_value_t = 16)]
    pub max_batch: usize,
    /// Segment size in bytes (small values exercise segment rolls).
    #[arg(long, default_value_t = 1 << 20)]
    pub segment_bytes: u64,
    /// Stop after this many bytes of values (default: run until killed).
    #[arg(long)]
    pub stop_after_bytes: Option<u64>,
    /// Print acknowledgements (off for bulk writing).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub report: bool,
    /// Seed for the random values.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

pub fn run(args: LogWriterArgs) -> anyhow::Result<()> {
    let cfg = LogConfig {
        fsync: args.fsync.policy(),
        segment_bytes: args.segment_bytes,
        ..LogConfig::default()
    };
    let (log, _) = PartitionLog::open(&args.dir, cfg)
        .with_context(|| format!("opening {}", args.dir.display()))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut written = 0u64;
    writeln!(out, "ready {}", log.high_watermark())?;
    out.flush()?;
    loop {
        if args.stop_after_bytes.is_some_and(|limit| written >= limit) {
            writeln!(out, "done {}", log.high_watermark())?;
            out.flush()?;
            return Ok(());
        }
        let count = rng.random_range(1..=args.max_batch);
        let batch: Vec<Record> = (0..count)
            .map(|_| {
                let len = rng.random_range(1..=args.max_value);
                let mut value = vec![0u8; len];
                rng.fill(&mut value[..]);
                Record::new(Vec::new(), value)
            })
            .collect();
        let sums: Vec<(usize, u32)> = batch
            .iter()
            .map(|r| (r.value.len(), crc32c::crc32c(&r.value)))
            .collect();
        written += sums.iter().map(|(len, _)| *len as u64).sum::<u64>();
        let appended = log.append_blocking(batch)?;
        if args.report {
            for (offset, (len, crc)) in appended.offsets().zip(sums) {
                writeln!(out, "{offset} {len} {crc}")?;
            }
            out.flush()?;
        }
    }
}
