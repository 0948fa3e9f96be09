//! `runnel models list|show`: the `[[models]]` a server runs, over HTTP (`GET /v1/models`,
//! `GET /v1/models/{name}`): the version serving, the breaker's state and the predictions
//! by the step of the ladder that answered them.

use clap::{Args, Subcommand};
use serde_json::Value;

use super::{ClientArgs, cell, print_json, print_table, segment};

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List the models with their version, breaker state and predictions by outcome.
    List(ListArgs),
    /// Show one model: version, breaker, predictions and calls, its group's lag and spec.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The model (its `[[models]]` name).
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn run(command: ModelsCommand) -> anyhow::Result<()> {
    match command {
        ModelsCommand::List(args) => list(args),
        ModelsCommand::Show(args) => show(args),
    }
}

fn row(model: &Value) -> Vec<String> {
    let p = &model["predictions"];
    vec![
        cell(&model["name"]),
        cell(&model["version"]),
        cell(&model["breaker"]),
        cell(&p["model"]),
        cell(&p["cache"]),
        cell(&p["fallback"]),
        format!("{} → {}", cell(&model["input"]), cell(&model["output"])),
    ]
}

const HEADERS: &[&str] = &[
    "name", "version", "breaker", "model", "cache", "fallback", "events",
];

fn list(args: ListArgs) -> anyhow::Result<()> {
    let api = args.client.api()?;
    let view = api.get("/v1/models")?;
    if args.client.json {
        return print_json(&view);
    }
    let rows: Vec<Vec<String>> = view
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(row)
        .collect();
    print_table(HEADERS, &rows)
}

fn show(args: ShowArgs) -> anyhow::Result<()> {
    let api = args.client.api()?;
    let model = api.get(&format!("/v1/models/{}", segment(&args.name)))?;
    if args.client.json {
        return print_json(&model);
    }
    print_table(HEADERS, &[row(&model)])?;
    let calls = &model["calls"];
    outln!(
        "group {}: {} model calls ({} failed), {} rows; lag {} events",
        cell(&model["group"]),
        cell(&calls["calls"]),
        cell(&calls["failed"]),
        cell(&calls["rows"]),
        cell(&model["lag"]["total_events"])
    )?;
    Ok(())
}
