//! The operator's commands: each talks HTTP to a running server (`docs/http-api.md`) and
//! prints a table for people or, with `--json`, JSON carrying the same figures for scripts.
//!
//! The connection flags (`--url`, `--key`, `--ca-file`, `--json`, `--data-dir`) are defined
//! once, in [`ClientArgs`], and flattened into every command. Where they are not given:
//! `RUNNEL_URL` / `RUNNEL_KEY` / `RUNNEL_CA_FILE`, then `~/.config/runnel/cli.toml`
//! (`url = "…"`, `key = "…"`, `ca_file = "…"`), then `http://127.0.0.1:8717`. `--data-dir`
//! works on a stopped server's data directly (see [`local`]).
//!
//! Everything a command prints goes through [`write_line`] (or `outln!`), never `println!`:
//! a reader that closed stdout (`runnel dlq list g | head -1`) is an error these return,
//! [`StdoutClosed`], and the binary then exits as Unix tools do, quietly, by SIGPIPE.

/// `println!` for the commands: the line is written and flushed, and a closed stdout is an
/// error ([`StdoutClosed`]) rather than a panic.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_line(&format!($($arg)*))
    };
}

pub mod dlq;
pub mod features;
pub mod inspect;
pub mod local;
pub mod manage;
pub mod models;
pub mod publish;
pub mod saga;
pub mod schema;
pub mod trace;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;
use serde_json::Value;

use crate::api::{Api, CaFile};

/// The server the default configuration listens on.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8717";

/// Flags every command that talks to a server takes.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server URL [env: RUNNEL_URL; cli.toml: url; default http://127.0.0.1:8717].
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// API key, sent as a bearer token [env: RUNNEL_KEY; cli.toml: key].
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// PEM file of the CA that signed the server's certificate, for an https:// URL: only
    /// its certificates are trusted [env: RUNNEL_CA_FILE; cli.toml: ca_file; default: the
    /// webpki roots].
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// Print JSON for scripts instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Work on this embedded data directory directly (a stopped server's `data_dir`),
    /// through a server inside this command, instead of a server at --url.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["url", "key", "ca_file"])]
    pub data_dir: Option<PathBuf>,
}

/// `~/.config/runnel/cli.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CliFile {
    url: Option<String>,
    key: Option<String>,
    /// Relative to the file's own directory.
    ca_file: Option<PathBuf>,
}

/// A usage error found after parsing (bad JSON in `--data`, a missing file): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A check that failed (an incompatible schema, a lint): exit code 1, after the reasons were
/// printed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckFailed(pub String);

/// stdout was closed by its reader (`runnel tail g | head -1`): the command stopped writing.
/// Not a failure to report: the binary exits quietly, by SIGPIPE, as Unix tools do.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed by its reader")]
pub struct StdoutClosed;

impl ClientArgs {
    /// The client for the resolved URL and key: flags, then environment, then `cli.toml`.
    pub fn api(&self) -> anyhow::Result<Api> {
        if let Some(dir) = &self.data_dir {
            let local = local::LocalServer::start(dir)?;
            return Ok(Api::new(local.url(), None).serving(local));
        }
        let file = read_cli_file()?;
        let (url, from) = if let Some(url) = self.url.clone() {
            (url, "--url".to_string())
        } else if let Some(url) = non_empty_env("RUNNEL_URL") {
            (url, "RUNNEL_URL".to_string())
        } else if let Some(url) = file.url {
            let path = cli_file_path().map_or_else(String::new, |p| p.display().to_string());
            (url, format!("`url` in {path}"))
        } else {
            (DEFAULT_URL.to_string(), "the default URL".to_string())
        };
        if !url.contains("://") {
            return Err(UsageError(format!(
                "{from} has no scheme: {url} (did you mean `http://{url}`?)"
            ))
            .into());
        }
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(
                UsageError(format!("{from} must be an http:// or https:// URL: {url}")).into(),
            );
        }
        let key = self
            .key
            .clone()
            .or_else(|| non_empty_env("RUNNEL_KEY"))
            .or(file.key);
        // Read only for https://, so a CA file meant for another server cannot break this.
        let ca = if url.starts_with("https://") {
            let path = self
                .ca_file
                .clone()
                .or_else(|| non_empty_env("RUNNEL_CA_FILE").map(PathBuf::from))
                .or_else(|| {
                    let path = file.ca_file?;
                    let dir = cli_file_path()?.parent()?.to_path_buf();
                    Some(dir.join(path))
                });
            match path {
                Some(path) => Some(CaFile::read(&path).map_err(|e| UsageError(e.to_string()))?),
                None => None,
            }
        } else {
            None
        };
        Ok(Api::with_ca(&url, key, ca.as_ref()))
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn cli_file_path() -> Option<PathBuf> {
    let config = match non_empty_env("XDG_CONFIG_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(non_empty_env("HOME")?).join(".config"),
    };
    Some(config.join("runnel").join("cli.toml"))
}

fn read_cli_file() -> anyhow::Result<CliFile> {
    let Some(path) = cli_file_path() else {
        return Ok(CliFile::default());
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(CliFile::default());
        }
        Err(error) => {
            return Err(UsageError(format!("cannot read {}: {error}", path.display())).into());
        }
    };
    toml::from_str(&text).map_err(|error| UsageError(format!("{}: {error}", path.display())).into())
}

/// Writes `text` and a line break to stdout and flushes it: once this returns `Ok`, the line
/// has left the process. A closed stdout is [`StdoutClosed`].
pub fn write_line(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .map_err(stdout_error)
}

/// The error writing to stdout failed with: [`StdoutClosed`] for a closed pipe.
pub fn stdout_error(error: std::io::Error) -> anyhow::Error {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        StdoutClosed.into()
    } else {
        anyhow::Error::new(error).context("writing to stdout")
    }
}

/// Prints a value as pretty JSON.
pub fn print_json(value: &Value) -> anyhow::Result<()> {
    write_line(&serde_json::to_string_pretty(value)?)
}

/// Prints rows as a table: the first column left-aligned, numbers right-aligned.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let numeric: Vec<bool> = (0..headers.len())
        .map(|i| {
            !rows.is_empty()
                && rows
                    .iter()
                    .all(|r| r[i].parse::<f64>().is_ok() || r[i] == "-")
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if numeric[i] {
                    format!("{c:>w$}", w = widths[i])
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let headers: Vec<String> = headers.iter().map(|h| h.to_uppercase()).collect();
    let table: Vec<String> = std::iter::once(line(&headers))
        .chain(rows.iter().map(|row| line(row)))
        .collect();
    write_line(&table.join("\n"))
}

/// Prints one row per JSON object of `items` (an array; anything else prints the headers
/// alone), a column per `(header, field)` with the field's value as [`cell`] shows it.
pub fn print_fields_table(items: &Value, columns: &[(&str, &str)]) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = items
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|item| {
            columns
                .iter()
                .map(|(_, field)| cell(&item[*field]))
                .collect()
        })
        .collect();
    let headers: Vec<&str> = columns.iter().map(|(header, _)| *header).collect();
    print_table(&headers, &rows)
}

/// Whether progress bars should be drawn (stderr is a terminal).
pub fn progress_on_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// A JSON number or string field as text, `-` when absent.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A path segment: event types, group and stream names are URL-safe by construction, but ids
/// given on the command line are escaped anyway.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
