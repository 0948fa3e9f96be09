//! `runnel features list|show|get|export`: the feature sets a server runs, their online values,
//! and point-in-time exports for training sets (`POST /v1/features/{set}`, see
//! `docs/features.md`).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};

use super::{ClientArgs, UsageError, cell, print_fields_table, print_json, print_table, segment};

#[derive(Debug, Subcommand)]
pub enum FeaturesCommand {
    /// List the feature sets with their input, window, watermark and lag.
    List(ListArgs),
    /// Show one set: its spec and each input partition's watermark and state.
    Show(ShowArgs),
    /// Print a key's latest values from the online store.
    Get(GetArgs),
    /// Write, for each row (key,timestamp) of a CSV file, the values as known at that time,
    /// from the set's result stream (no leakage: see docs/features.md).
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The feature set.
    pub set: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The feature set.
    pub set: String,
    /// The entity key.
    #[arg(value_name = "KEY")]
    pub entity: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// CSV: key, timestamp, one column per aggregate, window_start, window_end, revision.
    Csv,
    /// JSON lines: one object per row.
    Jsonl,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The feature set.
    #[arg(long, value_name = "SET")]
    pub set: String,
    /// CSV file of rows `key,timestamp` (RFC 3339, or whole milliseconds since the epoch); a
    /// first line `key,timestamp` is a header.
    #[arg(long, value_name = "FILE.csv")]
    pub at: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
    pub format: ExportFormat,
    /// Write here instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Rows asked per request (each request reads the set's result stream once).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub rows_per_request: usize,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn run(command: FeaturesCommand) -> anyhow::Result<()> {
    match command {
        FeaturesCommand::List(args) => list(args),
        FeaturesCommand::Show(args) => show(args),
        FeaturesCommand::Get(args) => get(args),
        FeaturesCommand::Export(args) => export(args),
    }
}

/// `sliding 10m/1m`, `tumbling 1h`, `session gap 5m`.
fn window_text(window: &Value) -> String {
    match window["kind"].as_str() {
        Some("sliding") => format!(
            "sliding {}/{}",
            cell(&window["size"]),
            cell(&window["slide"])
        ),
        Some("tumbling") => format!("tumbling {}", cell(&window["size"])),
        Some("session") => format!("session gap {}", cell(&window["gap"])),
        _ => cell(window),
    }
}

/// The lowest watermark over the partitions shown, `-` if none has one.
fn min_watermark(set: &Value) -> String {
    set["partitions"]
        .as_array()
        .and_then(|ps| ps.iter().filter_map(|p| p["watermark"].as_str()).min())
        .unwrap_or("-")
        .to_string()
}

fn sum(set: &Value, field: &str) -> u64 {
    set["partitions"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p[field].as_u64()).sum())
        .unwrap_or(0)
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    let api = args.client.api()?;
    let sets = api.get("/v1/features")?;
    if args.client.json {
        return print_json(&sets);
    }
    let rows: Vec<Vec<String>> = sets
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| {
            vec![
                cell(&s["name"]),
                cell(&s["spec"]["input"]),
                window_text(&s["spec"]["window"]),
                s["partitions"].as_array().map_or(0, Vec::len).to_string(),
                min_watermark(s),
                cell(&s["lag"]["total_events"]),
                sum(s, "open_windows").to_string(),
                sum(s, "results").to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "set",
            "input",
            "window",
            "partitions",
            "watermark",
            "lag",
            "open_windows",
            "results",
        ],
        &rows,
    )
}

fn show(args: ShowArgs) -> anyhow::Result<()> {
    let api = args.client.api()?;
    let set = api.get(&format!("/v1/features/{}", segment(&args.set)))?;
    if args.client.json {
        return print_json(&set);
    }
    let spec = &set["spec"];
    let aggregates: Vec<String> = spec["aggregates"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| match a["field"].as_str() {
            Some(field) => format!("{}={}({field})", cell(&a["name"]), cell(&a["kind"])),
            None => format!("{}={}", cell(&a["name"]), cell(&a["kind"])),
        })
        .collect();
    let mut lines = vec![
        format!("set:          {}", cell(&set["name"])),
        format!("input:        {}", cell(&spec["input"])),
        format!("key:          {}", cell(&spec["key"])),
        format!("time:         {}", cell(&spec["time"])),
        format!("window:       {}", window_text(&spec["window"])),
        format!(
            "lateness:     out-of-orderness {}, allowed {}, idle timeout {}",
            cell(&spec["max_out_of_orderness"]),
            cell(&spec["allowed_lateness"]),
            cell(&spec["idle_timeout"])
        ),
        format!("aggregates:   {}", aggregates.join(", ")),
        format!("output:       {}", cell(&spec["output"])),
        format!("group:        {}", cell(&set["group"])),
        format!(
            "lag:          {} events, {} s",
            cell(&set["lag"]["total_events"]),
            cell(&set["lag"]["max_seconds"])
        ),
    ];
    if let Some(error) = set["last_error"].as_str() {
        lines.push(format!("last error:   {error}"));
    }
    super::write_line(&lines.join("\n"))?;
    print_fields_table(
        &set["partitions"],
        &[
            ("stream", "stream"),
            ("partition", "partition"),
            ("next_offset", "next_offset"),
            ("watermark", "watermark"),
            ("lag_s", "watermark_lag_seconds"),
            ("open_windows", "open_windows"),
            ("state_bytes", "state_bytes"),
            ("too_late", "too_late"),
            ("results", "results"),
        ],
    )
}

fn get(args: GetArgs) -> anyhow::Result<()> {
    let api = args.client.api()?;
    let value = api.get(&format!(
        "/v1/features/{}/{}",
        segment(&args.set),
        segment(&args.entity)
    ))?;
    if args.client.json {
        return print_json(&value);
    }
    let mut rows: Vec<Vec<String>> = value["values"]
        .as_object()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|(name, v)| vec![name.clone(), cell(v)])
        .collect();
    for field in [
        "window_start",
        "window_end",
        "revision",
        "watermark",
        "age_seconds",
    ] {
        rows.push(vec![format!("({field})"), cell(&value[field])]);
    }
    print_table(&["feature", "value"], &rows)
}

/// One row of the input file.
struct Row {
    key: String,
    /// RFC 3339.
    time: String,
}

/// Reads `key,timestamp` rows; errors name the line.
fn read_rows(path: &PathBuf) -> anyhow::Result<Vec<Row>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .map_err(|e| UsageError(format!("--at {}: {e}", path.display())))?;
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 1;
        let record = record.map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
        if record.len() != 2 {
            return Err(UsageError(format!(
                "{} line {line}: expected 2 fields (key,timestamp), got {}",
                path.display(),
                record.len()
            ))
            .into());
        }
        let (key, time) = (&record[0], record[1].trim());
        if line == 1 && key.trim() == "key" && matches!(time, "timestamp" | "time") {
            continue;
        }
        let time = parse_time(time).ok_or_else(|| {
            UsageError(format!(
                "{} line {line}: timestamp `{time}` is neither RFC 3339 nor whole milliseconds \
                 since the epoch",
                path.display()
            ))
        })?;
        rows.push(Row {
            key: key.to_string(),
            time,
        });
    }
    Ok(rows)
}

/// An RFC 3339 time as given, or milliseconds since the epoch as RFC 3339.
fn parse_time(text: &str) -> Option<String> {
    if chrono::DateTime::parse_from_rfc3339(text).is_ok() {
        return Some(text.to_string());
    }
    let millis: i64 = text.parse().ok()?;
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// A value as a CSV cell: text as it is, numbers as JSON, objects (quantiles) as JSON text,
/// nothing as an empty cell.
fn csv_cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn export(args: ExportArgs) -> anyhow::Result<()> {
    let rows = read_rows(&args.at)?;
    let api = args.client.api()?;
    let path = format!("/v1/features/{}", segment(&args.set));
    let set = api.get(&path)?;
    let names: Vec<String> = set["spec"]["aggregates"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a["name"].as_str().map(str::to_string))
        .collect();
    let out: Box<dyn Write> = match &args.out {
        Some(file) => Box::new(
            std::fs::File::create(file)
                .map_err(|e| UsageError(format!("--out {}: {e}", file.display())))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let out = std::io::BufWriter::new(out);
    let mut csv_out = None;
    let mut jsonl_out = None;
    match args.format {
        ExportFormat::Csv => {
            let mut writer = csv::Writer::from_writer(out);
            let mut header = vec!["key".to_string(), "timestamp".to_string()];
            header.extend(names.iter().cloned());
            header.extend(["window_start", "window_end", "revision"].map(String::from));
            writer.write_record(&header).map_err(csv_error)?;
            csv_out = Some(writer);
        }
        ExportFormat::Jsonl => jsonl_out = Some(out),
    }
    for chunk in rows.chunks(args.rows_per_request.max(1)) {
        let body = json!({
            "rows": chunk.iter().map(|r| json!({"key": r.key, "time": r.time})).collect::<Vec<_>>(),
        });
        let answer = api.post(&path, &body)?;
        let answers = answer["rows"].as_array().cloned().unwrap_or_default();
        if answers.len() != chunk.len() {
            anyhow::bail!(
                "the server answered {} rows for {} asked",
                answers.len(),
                chunk.len()
            );
        }
        for (row, answer) in chunk.iter().zip(answers) {
            let values = answer["values"].as_object();
            if let Some(writer) = csv_out.as_mut() {
                let mut record = vec![row.key.clone(), row.time.clone()];
                record.extend(
                    names
                        .iter()
                        .map(|n| csv_cell(values.and_then(|v| v.get(n)))),
                );
                for field in ["window_start", "window_end", "revision"] {
                    record.push(csv_cell(Some(&answer[field])));
                }
                writer.write_record(&record).map_err(csv_error)?;
            }
            if let Some(out) = jsonl_out.as_mut() {
                let mut line = Map::new();
                line.insert("key".into(), Value::from(row.key.clone()));
                line.insert("timestamp".into(), Value::from(row.time.clone()));
                line.insert(
                    "values".into(),
                    values.cloned().map_or(Value::Null, Value::Object),
                );
                for field in ["window_start", "window_end", "revision"] {
                    line.insert(field.into(), answer[field].clone());
                }
                writeln!(out, "{}", Value::Object(line)).map_err(super::stdout_error)?;
            }
        }
    }
    if let Some(mut writer) = csv_out {
        writer.flush().map_err(super::stdout_error)?;
    }
    if let Some(mut out) = jsonl_out {
        out.flush().map_err(super::stdout_error)?;
    }
    Ok(())
}

fn csv_error(error: csv::Error) -> anyhow::Error {
    match error.into_kind() {
        csv::ErrorKind::Io(io) => super::stdout_error(io),
        other => anyhow::anyhow!("writing CSV: {other:?}"),
    }
}
