//! `runnel models list|show|compare`: the `[[models]]` a server runs, over HTTP
//! (`GET /v1/models`, `GET /v1/models/{name}`): the version serving, the breaker's state and
//! the predictions by the step of the ladder that answered them; and a live model against
//! its shadow (`GET /v1/models/{name}/compare`).

use clap::{Args, Subcommand};
use serde_json::Value;

use super::{ClientArgs, cell, print_json, print_table, segment};

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List the models with their version, breaker state and predictions by outcome.
    List(ListArgs),
    /// Show one model: version, breaker, predictions and calls, its group's lag and spec.
    Show(ShowArgs),
    /// Compare a live model with its shadow over the inputs both scored: how often their
    /// highest output agrees, and each output's score delta (shadow − live).
    Compare(CompareArgs),
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The live model (its `[[models]]` name).
    pub name: String,
    /// The shadow (a model with `shadow_of = "<name>"`). Default: the live model's only one.
    #[arg(long)]
    pub shadow: Option<String>,
    /// Predictions read per partition of each model's stream, newest first.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub last: u64,
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
    /// The model (its `[[models]]` name).
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn run(command: ModelsCommand) -> anyhow::Result<()> {
    match command {
        ModelsCommand::List(args) => list(args),
        ModelsCommand::Show(args) => show(args),
        ModelsCommand::Compare(args) => compare(args),
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

/// The comparison's rows per output: the mean delta with its sign (shadow − live), the
/// sizes of the deltas without one.
fn delta_rows(report: &Value) -> Vec<Vec<String>> {
    let signed = |v: &Value| v.as_f64().map_or("-".to_string(), |f| format!("{f:+.4}"));
    let size = |v: &Value| v.as_f64().map_or("-".to_string(), |f| format!("{f:.4}"));
    report["deltas"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|d| {
            vec![
                cell(&d["output"]),
                signed(&d["mean"]),
                size(&d["mean_abs"]),
                size(&d["p50_abs"]),
                size(&d["p99_abs"]),
                size(&d["max_abs"]),
            ]
        })
        .collect()
}

fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let api = args.client.api()?;
    let mut path = format!(
        "/v1/models/{}/compare?last={}",
        segment(&args.name),
        args.last
    );
    if let Some(shadow) = &args.shadow {
        path.push_str(&format!("&shadow={}", segment(shadow)));
    }
    let report = api.get(&path)?;
    if args.client.json {
        return print_json(&report);
    }
    let side = |s: &Value| {
        let versions: Vec<String> = s["versions"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(cell)
            .collect();
        format!(
            "{} ({} predictions on {}, version {})",
            cell(&s["model"]),
            cell(&s["predictions"]),
            cell(&s["output"]),
            if versions.is_empty() {
                "-".to_string()
            } else {
                versions.join(", ")
            }
        )
    };
    outln!("live:   {}", side(&report["live"]))?;
    outln!("shadow: {}", side(&report["shadow"]))?;
    let agreement = report["agreement"]
        .as_f64()
        .map_or("-".to_string(), |a| format!("{:.2}%", a * 100.0));
    outln!(
        "compared {} inputs (both answered by their model): agreement {agreement}; \
         {} with a degraded answer, {} only live, {} only shadow",
        cell(&report["compared"]),
        cell(&report["degraded"]),
        cell(&report["live_only"]),
        cell(&report["shadow_only"])
    )?;
    let rows = delta_rows(&report);
    print_table(
        &[
            "output",
            "mean Δ",
            "mean |Δ|",
            "p50 |Δ|",
            "p99 |Δ|",
            "max |Δ|",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn the_mean_delta_has_a_sign_and_the_sizes_have_none() {
        let report = json!({"deltas": [
            {"output": "fraud", "mean": -0.0123, "mean_abs": 0.0311, "p50_abs": 0.0208,
             "p99_abs": 0.1875, "max_abs": 0.4102},
            {"output": "legit", "mean": 0.0123, "mean_abs": null}
        ]});
        assert_eq!(
            super::delta_rows(&report),
            vec![
                vec!["fraud", "-0.0123", "0.0311", "0.0208", "0.1875", "0.4102"],
                vec!["legit", "+0.0123", "-", "-", "-", "-"],
            ]
        );
    }
}
