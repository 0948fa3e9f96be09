//! `runnel schema register|check|list|show|lint`: the server's schema registry (under
//! `/registry`, Confluent-compatible; the subject is the event type).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use runnel_envelope::{EventType, lint_event_type};
use serde_json::{Value, json};

use super::{CheckFailed, ClientArgs, UsageError, cell, print_json, print_table, segment};
use crate::api::ApiError;

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Register a JSON Schema as the next version of an event type's schema.
    Register(FileArgs),
    /// Check a JSON Schema against the latest registered version; exits 1 if incompatible.
    Check(FileArgs),
    /// List event types with a registered schema.
    List(ListArgs),
    /// Print a registered schema (the latest version unless --version).
    Show(ShowArgs),
    /// Flag event types whose fact is not past tense (`order.place` → `order.placed`);
    /// exits 1 if any is flagged. Without types, lints every registered one.
    Lint(LintArgs),
}

#[derive(Debug, Args)]
pub struct FileArgs {
    /// The event type (`order.placed`).
    pub event_type: String,
    /// The JSON Schema file.
    pub file: PathBuf,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The event type.
    pub event_type: String,
    /// Version number (default: the latest).
    #[arg(long, value_name = "N")]
    pub version: Option<u32>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Event types to lint (default: every registered one).
    pub event_types: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn run(command: SchemaCommand) -> anyhow::Result<()> {
    match command {
        SchemaCommand::Register(args) => register(args),
        SchemaCommand::Check(args) => check(args),
        SchemaCommand::List(args) => list(args),
        SchemaCommand::Show(args) => show(args),
        SchemaCommand::Lint(args) => lint(args),
    }
}

fn parse_type(text: &str) -> anyhow::Result<EventType> {
    EventType::new(text)
        .map_err(|e| UsageError(format!("`{text}` is not an event type: {e}")).into())
}

/// The file's schema, checked to be JSON.
fn read_schema(path: &PathBuf) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str::<Value>(&text)
        .map_err(|e| UsageError(format!("{} is not JSON: {e}", path.display())))?;
    Ok(text)
}

fn lints_of(event_type: &EventType) -> Vec<Value> {
    lint_event_type(event_type)
        .iter()
        .map(|l| json!({"event_type": event_type.as_str(), "code": l.code(), "message": l.message()}))
        .collect()
}

fn register(args: FileArgs) -> anyhow::Result<()> {
    let event_type = parse_type(&args.event_type)?;
    let schema = read_schema(&args.file)?;
    let api = args.client.api()?;
    let answer = api.post(
        &format!(
            "/registry/subjects/{}/versions",
            segment(event_type.as_str())
        ),
        &json!({"schema": schema, "schemaType": "JSON"}),
    )?;
    let lints = lints_of(&event_type);
    if args.client.json {
        return print_json(&json!({
            "event_type": event_type.as_str(),
            "id": answer["id"],
            "version": answer["version"],
            "lints": lints,
        }));
    }
    outln!(
        "registered {} version {} (schema id {})",
        event_type,
        cell(&answer["version"]),
        cell(&answer["id"])
    )?;
    for lint in lints {
        eprintln!("warning: {}", cell(&lint["message"]));
    }
    Ok(())
}

fn check(args: FileArgs) -> anyhow::Result<()> {
    let event_type = parse_type(&args.event_type)?;
    let schema = read_schema(&args.file)?;
    let api = args.client.api()?;
    let answer = api.post(
        &format!(
            "/registry/compatibility/subjects/{}/versions/latest?verbose=true",
            segment(event_type.as_str())
        ),
        &json!({"schema": schema, "schemaType": "JSON"}),
    );
    let (compatible, reasons, note) = match answer {
        Ok(v) => (
            v["is_compatible"] == true,
            v["messages"].as_array().cloned().unwrap_or_default(),
            None,
        ),
        // Nothing registered yet: nothing to break.
        Err(ApiError::Status { status: 404, .. }) => {
            (true, Vec::new(), Some("no version registered yet"))
        }
        Err(e) => return Err(e.into()),
    };
    if args.client.json {
        print_json(&json!({
            "event_type": event_type.as_str(),
            "compatible": compatible,
            "reasons": reasons,
        }))?;
    } else if compatible {
        outln!(
            "compatible: {event_type} can move to this schema{}",
            note.map(|n| format!(" ({n})")).unwrap_or_default()
        )?;
    } else {
        outln!("INCOMPATIBLE: {event_type} cannot move to this schema:")?;
        for reason in &reasons {
            outln!("  - {}", cell(reason))?;
        }
    }
    if compatible {
        Ok(())
    } else {
        Err(CheckFailed(format!("the schema for {event_type} is not compatible")).into())
    }
}

fn subjects(api: &crate::api::Api) -> anyhow::Result<Vec<String>> {
    Ok(api
        .get("/registry/subjects")?
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect())
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    let api = args.client.api()?;
    let mut out = Vec::new();
    for subject in subjects(&api)? {
        let latest = api.get(&format!(
            "/registry/subjects/{}/versions/latest",
            segment(&subject)
        ))?;
        out.push(json!({"event_type": subject, "version": latest["version"], "id": latest["id"]}));
    }
    if args.client.json {
        return print_json(&Value::Array(out));
    }
    let rows: Vec<Vec<String>> = out
        .iter()
        .map(|s| vec![cell(&s["event_type"]), cell(&s["version"]), cell(&s["id"])])
        .collect();
    print_table(&["event type", "latest version", "schema id"], &rows)?;
    Ok(())
}

fn show(args: ShowArgs) -> anyhow::Result<()> {
    let api = args.client.api()?;
    let version = args
        .version
        .map(|v| v.to_string())
        .unwrap_or_else(|| "latest".into());
    let found = api.get(&format!(
        "/registry/subjects/{}/versions/{version}",
        segment(&args.event_type)
    ))?;
    let schema: Value = found["schema"]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    if args.client.json {
        return print_json(&json!({
            "event_type": found["subject"],
            "version": found["version"],
            "id": found["id"],
            "schema": schema,
        }));
    }
    outln!(
        "{} version {} (schema id {})",
        cell(&found["subject"]),
        cell(&found["version"]),
        cell(&found["id"])
    )?;
    outln!("{}", serde_json::to_string_pretty(&schema)?)?;
    Ok(())
}

fn lint(args: LintArgs) -> anyhow::Result<()> {
    let types: Vec<String> = if args.event_types.is_empty() {
        subjects(&args.client.api()?)?
    } else {
        args.event_types.clone()
    };
    let mut lints = Vec::new();
    for t in &types {
        lints.extend(lints_of(&parse_type(t)?));
    }
    if args.client.json {
        print_json(&json!({"checked": types.len(), "lints": lints}))?;
    } else if lints.is_empty() {
        outln!("{} event types checked: all name a past fact", types.len())?;
    } else {
        for lint in &lints {
            outln!("{}: {}", cell(&lint["event_type"]), cell(&lint["message"]))?;
        }
    }
    if lints.is_empty() {
        Ok(())
    } else {
        Err(CheckFailed(format!("{} event types flagged", lints.len())).into())
    }
}
