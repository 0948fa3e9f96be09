//! `runnel saga list|show|retry`: the instances of a server's `[[sagas]]` over HTTP
//! (`GET /v1/sagas`, `GET /v1/sagas/{id}`, `POST /v1/sagas/{id}/retry`), for operators.

use clap::{Args, Subcommand};
use serde_json::Value;

use super::{ClientArgs, cell, print_fields_table, print_json, segment};

#[derive(Debug, Subcommand)]
pub enum SagaCommand {
    /// List instances (by saga type, then id), optionally of one type or state.
    List(ListArgs),
    /// Show one instance: its steps and its timeline (commands, replies, compensations).
    Show(ShowArgs),
    /// Retry a stuck instance: its failed compensation gets a fresh set of attempts.
    Retry(ShowArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only instances of this saga type (a `[[sagas]]` name).
    #[arg(long = "type", value_name = "NAME")]
    pub saga: Option<String>,
    /// Only instances in this state.
    #[arg(long, value_name = "STATE", value_parser = ["running", "compensating", "completed", "compensated", "stuck"])]
    pub state: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The instance id (the `correlationid` of its commands).
    pub id: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn run(command: SagaCommand) -> anyhow::Result<()> {
    match command {
        SagaCommand::List(args) => list(args),
        SagaCommand::Show(args) => show(args, false),
        SagaCommand::Retry(args) => show(args, true),
    }
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    let api = args.client.api()?;
    let mut query = Vec::new();
    if let Some(saga) = &args.saga {
        query.push(format!("type={}", segment(saga)));
    }
    if let Some(state) = &args.state {
        query.push(format!("state={}", segment(state)));
    }
    let path = if query.is_empty() {
        "/v1/sagas".to_string()
    } else {
        format!("/v1/sagas?{}", query.join("&"))
    };
    let view = api.get(&path)?;
    if args.client.json {
        return print_json(&view);
    }
    print_fields_table(
        &view["instances"],
        &[
            ("id", "id"),
            ("saga", "saga"),
            ("state", "state"),
            ("step", "step"),
            ("reason", "reason"),
        ],
    )
}

fn show(args: ShowArgs, retry: bool) -> anyhow::Result<()> {
    let api = args.client.api()?;
    let instance = if retry {
        api.post(
            &format!("/v1/sagas/{}/retry", segment(&args.id)),
            &serde_json::json!({}),
        )?
    } else {
        api.get(&format!("/v1/sagas/{}", segment(&args.id)))?
    };
    if args.client.json {
        return print_json(&instance);
    }
    for line in instance_lines(&instance) {
        outln!("{line}")?;
    }
    Ok(())
}

/// The instance's head, its steps, then its timeline, one line each.
fn instance_lines(instance: &Value) -> Vec<String> {
    let mut lines = vec![format!(
        "{} {}  {}{}",
        cell(&instance["saga"]),
        cell(&instance["id"]),
        cell(&instance["state"]),
        match instance["reason"].as_str() {
            Some(reason) => format!(" ({reason})"),
            None => String::new(),
        }
    )];
    lines.push("steps:".into());
    for step in instance["steps"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        lines.push(format!(
            "  {}  {}  attempts {}{}",
            cell(&step["name"]),
            cell(&step["status"]),
            cell(&step["attempts"]),
            match step["error"].as_str() {
                Some(error) => format!("  error: {error}"),
                None => String::new(),
            }
        ));
    }
    lines.push("timeline:".into());
    let start = instance["started_at"].as_i64().unwrap_or(0);
    for entry in instance["timeline"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let at_ms = (entry["at"].as_i64().unwrap_or(start) - start) as f64 / 1000.0;
        let mut line = format!("  +{at_ms:.1}ms  {}", cell(&entry["what"]));
        for (key, label) in [
            ("step", ""),
            ("attempt", "#"),
            ("event_type", ""),
            ("event_id", "id "),
            ("detail", ""),
        ] {
            if !entry[key].is_null() {
                line.push_str(&format!("  {label}{}", cell(&entry[key])));
            }
        }
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn an_instance_shows_its_steps_then_its_timeline() {
        let instance = json!({
            "id": "i1", "saga": "order", "state": "compensated",
            "reason": "step `charge` failed", "started_at": 1_000_000,
            "steps": [
                {"name": "reserve", "status": "compensated", "attempts": 1},
                {"name": "charge", "status": "failed", "attempts": 1, "error": "declined"}
            ],
            "timeline": [
                {"at": 1_000_000, "what": "started"},
                {"at": 1_002_500, "what": "command_sent", "step": "reserve", "attempt": 1,
                 "event_type": "inventory.reserve_requested", "event_id": "c1"}
            ]
        });
        assert_eq!(
            super::instance_lines(&instance),
            vec![
                "order i1  compensated (step `charge` failed)",
                "steps:",
                "  reserve  compensated  attempts 1",
                "  charge  failed  attempts 1  error: declined",
                "timeline:",
                "  +0.0ms  started",
                "  +2.5ms  command_sent  reserve  #1  inventory.reserve_requested  id c1",
            ]
        );
    }
}
