//! `runnel`: the one binary. Every subcommand's flags are defined here, in one place, and
//! handed to the module that does the work.

mod api;
mod bench;
mod chaos;
mod cli;
mod config;
mod consumer_child;
mod demo;
mod log_writer;
mod measure;
mod saga_config;
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
    after_help = "Start with `runnel demo`: a server, four consumer groups and 10,000 events, end to end.\n\n\
Commands that talk to a server take --url and --key; without them, RUNNEL_URL and RUNNEL_KEY, \
then `url` and `key` in ~/.config/runnel/cli.toml, then http://127.0.0.1:8717. --json prints \
JSON for scripts with the same figures as the tables.\n\n\
Exit codes: 0 success, 1 a check failed or another error, 2 usage error, 3 server unreachable
or refused."
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
    /// Show what Runnel does, end to end, in one command (start here).
    ///
    /// A server in this process on the embedded log, and the pipeline the seeds describe over
    /// HTTP: 10,000 `order.placed` events fan out to four consumer groups (one with failures
    /// that recover on retry, one whose failures go to its dead-letter queue); a feature set
    /// computes each customer's orders and spend over a sliding hour; the shipped fraud model
    /// scores every order with them (made slow midway: the breaker opens, the cache and the
    /// fallback answer, the breaker closes); an approved score starts the order saga
    /// (reserve → charge → ship, with failures injected and compensated). Live progress, then
    /// a summary checked against the server. Exits 1 if anything is not accounted for.
    Demo(demo::DemoArgs),
    /// Publish events: one from --type/--data, or CloudEvents JSON lines from --file or stdin.
    Publish(cli::publish::PublishArgs),
    /// Pull a group's events and print them (acknowledging each once printed).
    Tail(cli::inspect::TailArgs),
    /// List streams with their partitions, events and bytes.
    Streams(cli::inspect::StreamsArgs),
    /// List consumer groups with their lag, counters and dead-letter depth.
    Groups(cli::inspect::GroupsArgs),
    /// Show a group's lag per partition.
    Lag(cli::inspect::LagArgs),
    /// Inspect, replay or purge a group's dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: cli::dlq::DlqCommand,
    },
    /// Register, check, list, show and lint event schemas.
    Schema {
        #[command(subcommand)]
        command: cli::schema::SchemaCommand,
    },
    /// Show one workflow's events across streams as a causal tree (from the correlation
    /// index: `GET /v1/trace/{id}`).
    Trace(cli::trace::TraceArgs),
    /// Feature sets: list, show, a key's values, point-in-time export for training sets.
    Features {
        #[command(subcommand)]
        command: cli::features::FeaturesCommand,
    },
    /// The server's `[[models]]`: version, breaker state, predictions by outcome.
    Models {
        #[command(subcommand)]
        command: cli::models::ModelsCommand,
    },
    /// List, show and retry instances of the server's `[[sagas]]` (`GET /v1/sagas`).
    Saga {
        #[command(subcommand)]
        command: cli::saga::SagaCommand,
    },
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
    /// Kill the server with SIGKILL under load, over and over, and check nothing acknowledged
    /// was lost.
    ///
    /// Runs `runnel serve` as a child under publishing and consuming threads, kills it at
    /// random moments and restarts it; tears the tail of a segment between cycles and fills
    /// a small tmpfs under a running server. Then checks that every event answered 202 reached
    /// every consumer group, no offset was skipped and dead-letter entries hold the published
    /// events. Prints a table (or --json) and exits 1 if anything was lost or a check failed.
    Chaos(chaos::ChaosArgs),
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

/// The error and its causes, `: `-separated, leaving out a cause whose text the message
/// already holds (errors that print their source, as many do, would say it twice).
fn error_chain(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// Ends the process as a Unix tool whose reader went away ends: killed by SIGPIPE, without a
/// message (shells print none for it; `pipefail` sees it). Rust starts with SIGPIPE ignored,
/// so it is set back to its default action first.
fn exit_by_sigpipe() -> ExitCode {
    // SAFETY: signal() and raise() only change and signal this process; no handler is
    // installed, and nothing runs after the default action ends the process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    // Not reached; the status a shell reports for a SIGPIPE death otherwise.
    ExitCode::from(128 + libc::SIGPIPE as u8)
}

/// Reports that are printed as they go (`config show`, the bench, chaos, the demo) use
/// `println!`, which panics when stdout's reader has gone (`| head`): such a panic ends the
/// process as a Unix tool ends there, quietly by SIGPIPE; every other panic is reported.
fn exit_quietly_on_closed_stdout() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout")
            && message.ends_with(&format!("(os error {})", libc::EPIPE))
        {
            exit_by_sigpipe();
        }
        report(info);
    }));
}

/// Transparent huge pages off for this process (and its children). With them on, the
/// allocator's fresh memory is faulted in 2 MiB at a time and the kernel zeroes each page
/// whole: a quarter of the CPU of the saga, inference and feature benchmarks went to
/// `clear_page_erms` for memory that was then barely touched.
fn no_transparent_huge_pages() {
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes integer arguments only and touches no memory of
    // ours; a kernel without it answers an error, which changes nothing.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> ExitCode {
    no_transparent_huge_pages();
    let cli = Cli::parse();
    exit_quietly_on_closed_stdout();
    // The demo's failures are on purpose: its dead-letter warnings would drown its output.
    let default_level = match cli.command {
        Command::Demo(_) => "error",
        Command::Serve(_) => "warn",
        // A command with --data-dir runs a loopback server inside itself: its warning about
        // serving without API keys is about nothing the user started.
        _ => "warn,runnel_server::server=error",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUNNEL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or a collector gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::Demo(args) => demo::run(args),
        Command::Publish(args) => cli::publish::run(args),
        Command::Tail(args) => cli::inspect::tail(args),
        Command::Streams(args) => cli::inspect::streams(args),
        Command::Groups(args) => cli::inspect::groups(args),
        Command::Lag(args) => cli::inspect::lag(args),
        Command::Dlq { command } => cli::dlq::run(command),
        Command::Schema { command } => cli::schema::run(command),
        Command::Trace(args) => cli::trace::trace(args),
        Command::Features { command } => cli::features::run(command),
        Command::Saga { command } => cli::saga::run(command),
        Command::Models { command } => cli::models::run(command),
        Command::Config {
            command: ConfigCommand::Show(args),
        } => serve::show(args),
        Command::Bench { target } => bench::run(target),
        Command::Chaos(args) => chaos::run(args),
        Command::LogWriter(args) => log_writer::run(args),
        Command::ConsumerChild(args) => consumer_child::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of stdout went away (`| head -1`); the command has stopped and dropped
        // what it held (a --data-dir server included).
        Err(error) if error.downcast_ref::<cli::StdoutClosed>().is_some() => exit_by_sigpipe(),
        Err(error) => {
            eprintln!("error: {}", error_chain(&error));
            // A configuration the server refuses is a usage error.
            let config_error = error.downcast_ref::<runnel_server::ConfigError>().is_some()
                || matches!(
                    error.downcast_ref::<runnel_server::ServerError>(),
                    Some(runnel_server::ServerError::Config(_))
                );
            let connection_error = error
                .downcast_ref::<api::ApiError>()
                .is_some_and(api::ApiError::is_connection);
            let usage_error = error.downcast_ref::<cli::UsageError>().is_some();
            if config_error || usage_error {
                ExitCode::from(2)
            } else if connection_error {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[test]
    fn a_cause_the_message_already_holds_is_not_said_twice() {
        let error = anyhow::Error::new(runnel_server::ServerError::Backend(
            runnel_backend::BackendError::Unavailable("nats-server 2.9.10 is too old".into()),
        ));
        assert_eq!(
            error_chain(&error),
            "cannot open the backend: backend unavailable: nats-server 2.9.10 is too old"
        );
        let error = anyhow::Error::new(std::io::Error::other("disk on fire")).context("reading x");
        assert_eq!(error_chain(&error), "reading x: disk on fire");
    }
}
