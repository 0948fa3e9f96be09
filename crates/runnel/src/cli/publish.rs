//! `runnel publish`: one event from flags, or CloudEvents JSON lines from a file or stdin,
//! published in batches; a progress bar on a terminal.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use runnel_envelope::EventType;

use super::{ClientArgs, UsageError, print_json, print_table, progress_on_terminal};
use crate::api::ApiError;

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Event type (`order.placed`): publish one event built from the flags. Without it, events
    /// are read as CloudEvents JSON, one per line, from --file or stdin.
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Option<String>,
    /// The event's data, JSON (with --type).
    #[arg(
        long,
        value_name = "JSON",
        requires = "event_type",
        conflicts_with = "file"
    )]
    pub data: Option<String>,
    /// Partition key: events with the same key stay in order (with --type).
    #[arg(
        long,
        value_name = "KEY",
        requires = "event_type",
        conflicts_with = "file"
    )]
    pub partition_key: Option<String>,
    /// Event id (with --type; default: a new unique id).
    #[arg(
        long,
        value_name = "ID",
        requires = "event_type",
        conflicts_with = "file"
    )]
    pub id: Option<String>,
    /// Event source (with --type; default `/runnel-cli`).
    #[arg(
        long,
        value_name = "URI",
        requires = "event_type",
        conflicts_with = "file"
    )]
    pub source: Option<String>,
    /// When it happened, RFC 3339 (`2026-01-01T10:00:00Z`) (with --type; default: now, so
    /// feature windows, which read event time from `time`, can place it).
    #[arg(
        long,
        value_name = "RFC3339",
        requires = "event_type",
        conflicts_with = "file"
    )]
    pub time: Option<String>,
    /// Read CloudEvents JSON lines from this file instead of stdin.
    #[arg(long, value_name = "PATH", conflicts_with = "event_type")]
    pub file: Option<PathBuf>,
    /// Events per request when reading lines (a request is all or nothing; the server also
    /// limits its size, `max_body_bytes`).
    #[arg(long, value_name = "N", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The one event of `--type`, its data as the text given.
#[derive(Serialize)]
struct OneEvent<'a> {
    specversion: &'static str,
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    time: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partitionkey: Option<&'a str>,
}

/// Whether stdin holds input that `--type` would ignore: a non-empty file, or a pipe or socket
/// with bytes ready (waiting up to 50 ms for a writer that starts with this process, as in
/// `echo … | runnel publish`). A terminal, `/dev/null`, or a pipe nobody writes to is not.
fn stdin_has_lines() -> bool {
    // SAFETY: fstat, poll and ioctl(FIONREAD) only read the state of descriptor 0 into
    // locals this function owns; an invalid descriptor makes them fail, which reads as "no".
    unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        if libc::fstat(0, &mut stat) != 0 {
            return false;
        }
        let kind = stat.st_mode & libc::S_IFMT;
        if kind == libc::S_IFREG {
            return stat.st_size > 0;
        }
        if kind != libc::S_IFIFO && kind != libc::S_IFSOCK {
            return false;
        }
        let mut poll = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        if libc::poll(&mut poll, 1, 50) <= 0 {
            return false;
        }
        let mut ready: libc::c_int = 0;
        libc::ioctl(0, libc::FIONREAD, &mut ready) == 0 && ready > 0
    }
}

/// What was published when reading stopped at `line`: every line before it, nothing after.
fn sent_before(line: usize) -> String {
    match line {
        0 | 1 => "nothing was published".to_string(),
        2 => "line 1 was published, none from line 2 on".to_string(),
        _ => format!(
            "the events of lines 1–{} were published, none from line {line} on",
            line - 1
        ),
    }
}

/// The index in its batch of the event a problem is about: the first segment of its first
/// path (`/2/type`), else the "event 2 of the batch" its detail starts with (the server's
/// 413 for an event too large names no path).
fn batch_index(problem: &Value) -> Option<usize> {
    let from_path = problem["errors"][0]["path"]
        .as_str()
        .and_then(|path| path.strip_prefix('/')?.split('/').next()?.parse().ok());
    from_path.or_else(|| {
        problem["detail"]
            .as_str()?
            .strip_prefix("event ")?
            .split_once(" of the batch")?
            .0
            .parse()
            .ok()
    })
}

/// A 413, told by the limit the server's problem names: an event over `max_event_bytes`,
/// which no --batch helps, or a request over `max_body_bytes`, which a smaller --batch does
/// unless the request is one event.
fn too_large(problem: &Value, lines: &[usize]) -> String {
    let (first, last) = (
        lines.first().copied().unwrap_or(1),
        lines.last().copied().unwrap_or(1),
    );
    if problem["code"] == "envelope.too_large" {
        let line = if lines.len() == 1 {
            Some(first)
        } else {
            batch_index(problem).and_then(|index| lines.get(index).copied())
        };
        let which = match line {
            Some(line) => format!("line {line} is an event"),
            None => format!("an event of lines {first}–{last} is"),
        };
        format!(
            "{which} larger than the server's max_event_bytes: make it smaller, or raise \
             max_event_bytes on the server (a smaller --batch cannot help); {}",
            sent_before(first)
        )
    } else if lines.len() == 1 {
        format!(
            "line {first} alone is more than the server takes in one request \
             (max_body_bytes): the event is too large to publish; {}",
            sent_before(first)
        )
    } else {
        format!(
            "lines {first}–{last} ({} events) are more than the server takes in one request \
             (max_body_bytes): lower --batch; {}",
            lines.len(),
            sent_before(first)
        )
    }
}

/// The server's refusal of a batch, told by line: which line it names (the problem's paths
/// start with the event's index in the batch), and what was published before the batch.
fn refused_batch(error: ApiError, lines: &[usize]) -> anyhow::Error {
    let (first, last) = (
        lines.first().copied().unwrap_or(1),
        lines.last().copied().unwrap_or(1),
    );
    let context = match &error {
        ApiError::Status {
            status: 413,
            problem,
            ..
        } => too_large(problem, lines),
        ApiError::Status { problem, .. } => {
            let line = batch_index(problem).and_then(|index| lines.get(index));
            match line {
                Some(line) => format!(
                    "line {line} was refused, and with it its batch (lines {first}–{last}); {}",
                    sent_before(first)
                ),
                None => format!(
                    "the batch of lines {first}–{last} was refused; {}",
                    sent_before(first)
                ),
            }
        }
        _ => format!("publishing lines {first}–{last}; {}", sent_before(first)),
    };
    anyhow::Error::new(error).context(context)
}

/// A new event id: time and randomness, unique enough for a command line.
fn new_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("cli-{nanos:x}-{:08x}", rand::random::<u32>())
}

pub fn run(args: PublishArgs) -> anyhow::Result<()> {
    if args.event_type.is_some() && stdin_has_lines() {
        return Err(UsageError(
            "--type publishes one event built from flags and does not read stdin, but lines \
             were piped to stdin: drop --type to publish the lines (each a CloudEvents JSON \
             event), or stop piping to publish the one event"
                .into(),
        )
        .into());
    }
    if let Some(event_type) = &args.event_type {
        // Checked here, so a bad flag is a usage error before any request.
        let event_type =
            EventType::new(event_type.as_str()).map_err(|e| UsageError(format!("--type: {e}")))?;
        // Kept as text, so the data arrives as written (numbers past 64 bits included).
        let data: Option<Box<RawValue>> = match &args.data {
            Some(text) => Some(
                serde_json::from_str(text)
                    .map_err(|e| UsageError(format!("--data is not JSON: {e}")))?,
            ),
            None => None,
        };
        let time = match &args.time {
            Some(text) => chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|e| {
                    UsageError(format!(
                        "--time `{text}` is not an RFC 3339 time such as 2026-01-01T10:00:00Z: {e}"
                    ))
                })?
                .to_utc(),
            None => chrono::Utc::now(),
        }
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let api = args.client.api()?;
        let id = args.id.clone().unwrap_or_else(new_id);
        let event = OneEvent {
            specversion: "1.0",
            id: &id,
            source: args.source.as_deref().unwrap_or("/runnel-cli"),
            event_type: event_type.as_str(),
            time: &time,
            data: data.as_deref(),
            partitionkey: args.partition_key.as_deref(),
        };
        // One event in the structured mode, not a batch of one: what the server refuses is
        // about "the event", with paths such as `/source`.
        let position = api
            .post_as("/v1/events", "application/cloudevents+json", &event)
            .map_err(|error| match error {
                ApiError::Status { .. } => {
                    anyhow::Error::new(error).context("the event was refused")
                }
                other => other.into(),
            })?;
        if args.client.json {
            return print_json(&position);
        }
        outln!(
            "published {} to {}/{} at offset {}{}",
            position["id"].as_str().unwrap_or_default(),
            position["stream"].as_str().unwrap_or_default(),
            position["partition"],
            position["offset"],
            if position["duplicate"] == true {
                " (duplicate: already published)"
            } else {
                ""
            }
        )?;
        return Ok(());
    }

    let api = args.client.api()?;
    let reader: Box<dyn BufRead> = match &args.file {
        Some(path) if path.is_dir() => {
            return Err(UsageError(format!(
                "--file {} is a directory, not a file of CloudEvents JSON lines",
                path.display()
            ))
            .into());
        }
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path)
                .map_err(|e| UsageError(format!("cannot open {}: {e}", path.display())))?,
        )),
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprintln!(
                    "reading CloudEvents JSON lines from the terminal (Ctrl-D to end; \
                     --type publishes one event from flags)"
                );
            }
            Box::new(std::io::stdin().lock())
        }
    };
    let input = args
        .file
        .as_ref()
        .map_or_else(|| "stdin".to_string(), |p| p.display().to_string());
    let total_hint = match &args.file {
        Some(path) => std::fs::read(path)
            .map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64)
            .ok(),
        None => None,
    };
    let bar = if progress_on_terminal() {
        let (bar, template) = match total_hint {
            Some(n) => (
                indicatif::ProgressBar::new(n),
                "{spinner} publishing {pos}/{len} events  {elapsed_precise} {wide_bar}",
            ),
            // Lines from stdin: no total to draw a bar against, a count and a rate.
            None => (
                indicatif::ProgressBar::no_length(),
                "{spinner} publishing {pos} events  {elapsed_precise}  {per_sec}",
            ),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(template)
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let batch_size = args.batch as usize;
    let mut batch = Vec::with_capacity(batch_size);
    // The line each event of the batch came from.
    let mut lines: Vec<usize> = Vec::with_capacity(batch_size);
    let mut published = 0u64;
    let mut duplicates = 0u64;
    let mut streams: BTreeMap<String, u64> = BTreeMap::new();
    let mut flush =
        |batch: &mut Vec<Box<RawValue>>, lines: &mut Vec<usize>| -> anyhow::Result<()> {
            if batch.is_empty() {
                return Ok(());
            }
            let positions = api
                .publish_batch(batch)
                .map_err(|error| refused_batch(error, lines))?;
            for p in positions.as_array().into_iter().flatten() {
                if p["duplicate"] == true {
                    duplicates += 1;
                } else {
                    published += 1;
                    *streams
                        .entry(p["stream"].as_str().unwrap_or_default().to_string())
                        .or_default() += 1;
                }
            }
            if let Some(bar) = &bar {
                bar.inc(batch.len() as u64);
            }
            batch.clear();
            lines.clear();
            Ok(())
        };
    for (number, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| {
            anyhow::anyhow!(
                "reading line {} of {input}: {e}; {}",
                number + 1,
                sent_before(lines.first().copied().unwrap_or(number + 1))
            )
        })?;
        if line.trim().is_empty() {
            continue;
        }
        // Kept as text: the server gets each line's JSON as written.
        let event: Box<RawValue> = serde_json::from_str(&line).map_err(|e| {
            UsageError(format!(
                "line {}: not JSON: {e}; {}",
                number + 1,
                sent_before(lines.first().copied().unwrap_or(number + 1))
            ))
        })?;
        batch.push(event);
        lines.push(number + 1);
        if batch.len() >= batch_size {
            flush(&mut batch, &mut lines)?;
        }
    }
    flush(&mut batch, &mut lines)?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if args.client.json {
        return print_json(&json!({
            "published": published,
            "duplicates": duplicates,
            "streams": streams,
        }));
    }
    let rows: Vec<Vec<String>> = streams
        .iter()
        .map(|(s, n)| vec![s.clone(), n.to_string()])
        .collect();
    if !rows.is_empty() {
        print_table(&["stream", "published"], &rows)?;
    }
    outln!(
        "published {published} event{} ({duplicates} duplicate{} skipped)",
        if published == 1 { "" } else { "s" },
        if duplicates == 1 { "" } else { "s" }
    )?;
    Ok(())
}
