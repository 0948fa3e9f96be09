//! A consumer process for crash tests: runs one consumer group over the embedded backend in
//! `--dir` until it is killed. `transform` publishes one `invoice.issued` per `order.placed`;
//! `record` appends `b <id>` and `e <id>` lines around each handler run to `--out`; `poison`
//! does the same but aborts the process on an event marked `"poison": true`.
//!
//! It prints `ready` once its group is configured and before it consumes anything, so a test
//! that reads the line knows the process started, and no handler (not even one that aborts the
//! process at once) has run yet. With `--until-caught-up` it stops cleanly and exits 0 once the
//! group has no lag, so a test can tell "caught up" from "crashed" by the exit status alone.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use runnel_backend_embedded::{EmbeddedBackend, EmbeddedConfig, FsyncPolicy};
use runnel_envelope::{Event, EventType, Source};
use runnel_runtime::{GroupConfig, HandlerError, Runnel, RuntimeConfig, TypePattern};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Mode {
    Transform,
    Record,
    /// Like `record`, but aborts the process on an event whose data has `"poison": true`.
    Poison,
}

#[derive(Debug, Args)]
pub struct ConsumerChildArgs {
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Where `record` writes its lines.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Record processed ids (the idempotency store).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub processed_ids: bool,
    #[arg(long, default_value_t = 8)]
    pub max_in_flight: usize,
    /// Crashes before a suspect is quarantined (the runtime's default is 3).
    #[arg(long, default_value_t = 3)]
    pub max_crashes: u32,
    /// Stop cleanly and exit 0 once the group has no lag, instead of running until killed.
    #[arg(long)]
    pub until_caught_up: bool,
}

pub fn run(args: ConsumerChildArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(serve(args))
}

async fn serve(args: ConsumerChildArgs) -> anyhow::Result<()> {
    let backend = EmbeddedBackend::open(EmbeddedConfig {
        fsync: FsyncPolicy::group(),
        ..EmbeddedConfig::new(&args.dir)
    })
    .await
    .context("opening the embedded backend")?;
    let runnel = Runnel::open(RuntimeConfig::default(), Arc::new(backend));
    let (name, filter) = match args.mode {
        Mode::Transform => ("transformer", "order.placed"),
        Mode::Record => ("recorder", "order.placed"),
        Mode::Poison => ("poisoned", "order.placed"),
    };
    let config = GroupConfig {
        max_in_flight: args.max_in_flight,
        processed_ids: args.processed_ids,
        max_crashes: args.max_crashes,
        ack_wait: Duration::from_secs(5),
        lease_ttl: Duration::from_secs(1),
        ..GroupConfig::new(name, TypePattern::new(filter)?)
    };
    // Configured before `ready`, so that a test may ask for the group's lag after any kill;
    // `ready` before `run`, so that nothing is consumed before the test has heard from us.
    runnel.put_group(config.clone()).await?;
    println!("ready");
    std::io::stdout().flush()?;
    let group = runnel.group(name).config(config);
    let handle = match args.mode {
        Mode::Transform => {
            group
                .run(|message| async move {
                    let data = message.event.data().as_json().cloned().unwrap_or_default();
                    tokio::time::sleep(Duration::from_micros(300)).await;
                    let output = Event::builder(
                        EventType::new("invoice.issued")
                            .map_err(|e| HandlerError::permanent(e.to_string()))?,
                        Source::new("test://transformer")
                            .map_err(|e| HandlerError::permanent(e.to_string()))?,
                    )
                    .data_json(data)
                    .build()
                    .map_err(|e| HandlerError::permanent(e.to_string()))?;
                    Ok(vec![output])
                })
                .await?
        }
        Mode::Record | Mode::Poison => {
            let poison_kills = matches!(args.mode, Mode::Poison);
            let path = args.out.context("--out is required with --mode record")?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let file = Arc::new(Mutex::new(file));
            group
                .run(move |message| {
                    let file = file.clone();
                    async move {
                        let id = message.event.id().as_str().to_string();
                        let poisoned = message
                            .event
                            .data()
                            .as_json()
                            .is_some_and(|d| d["poison"] == serde_json::Value::Bool(true));
                        if poison_kills && poisoned {
                            // A bug that takes the whole process down, every time.
                            std::process::abort();
                        }
                        let line = |tag: &str| {
                            let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
                            let _ = f.write_all(format!("{tag} {id}\n").as_bytes());
                        };
                        line("b");
                        tokio::time::sleep(Duration::from_micros(500)).await;
                        line("e");
                        Ok(vec![])
                    }
                })
                .await?
        }
    };
    if !args.until_caught_up {
        // Run until killed.
        std::future::pending::<()>().await;
    }
    while runnel.lag(name).await?.total_events > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.stop().await?;
    Ok(())
}
