//! `runnel`: the one binary. Every subcommand's flags are defined here, in one place, and
//! handed to the module that does the work.

mod bench;
mod consumer_child;
mod log_writer;
mod measure;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runnel carries typed events from producers to independent consumer groups and never loses
/// one: a durable partitioned log, at-least-once delivery, classified retries and dead-letter
/// queues.
#[derive(Debug, Parser)]
#[command(
    name = "runnel",
    version,
    about,
    after_help = "Exit codes: 0 success, 1 a check failed, 2 usage error, 3 server unreachable or refused."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server (CloudEvents in, consumer groups out) until SIGTERM or SIGINT.
    ///
    /// Configuration: defaults, then `runnel.toml`, then `RUNNEL_<FIELD>` environment
    /// variables, then these flags; `runnel config show` prints the result.
    Serve(serve::ServeArgs),
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Measure Runnel on this machine (results as a table, or JSON with --json).
    Bench {
        #[command(subcommand)]
        target: bench::BenchTarget,
    },
    /// Appends to a log until killed, printing each acknowledged offset (crash-test harness).
    #[command(name = "__log-writer", hide = true)]
    LogWriter(log_writer::LogWriterArgs),
    /// Runs a consumer group until killed (crash-test harness).
    #[command(name = "__consumer-child", hide = true)]
    ConsumerChild(consumer_child::ConsumerChildArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration `serve` would use (TOML, or JSON with --json).
    Show(serve::ShowArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUNNEL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::Config {
            command: ConfigCommand::Show(args),
        } => serve::show(args),
        Command::Bench { target } => bench::run(target),
        Command::LogWriter(args) => log_writer::run(args),
        Command::ConsumerChild(args) => consumer_child::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            // A configuration the server refuses is a usage error.
            let config_error = error.downcast_ref::<runnel_server::ConfigError>().is_some()
                || matches!(
                    error.downcast_ref::<runnel_server::ServerError>(),
                    Some(runnel_server::ServerError::Config(_))
                );
            if config_error {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
