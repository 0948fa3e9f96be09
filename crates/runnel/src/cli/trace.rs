//! `runnel trace <correlationid>`: one workflow's events across streams as a causal tree, from
//! the server's correlation index (`GET /v1/trace/{id}`).

use clap::Args;
use serde_json::Value;

use super::{ClientArgs, print_json, segment};

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The workflow's correlation id: the id of the event that started it (its effects carry
    /// it as `correlationid`).
    pub correlationid: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn trace(args: TraceArgs) -> anyhow::Result<()> {
    let api = args.client.api()?;
    let view = api.get(&format!("/v1/trace/{}", segment(&args.correlationid)))?;
    if args.client.json {
        return print_json(&view);
    }
    let events = view["events"].as_array().cloned().unwrap_or_default();
    for line in tree_lines(&events) {
        outln!("{line}")?;
    }
    if view["truncated"].as_bool() == Some(true) {
        outln!(
            "(more than {} events: the rest are not shown)",
            events.len()
        )?;
    }
    Ok(())
}

/// One line per event, indented by its depth under its cause.
fn tree_lines(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let depth = e["depth"].as_u64().unwrap_or(0) as usize;
            let branch = if depth == 0 {
                String::new()
            } else {
                format!("{}└─ ", "   ".repeat(depth - 1))
            };
            format!(
                "{branch}{} {}  {}/{}@{}  {}",
                e["type"].as_str().unwrap_or("?"),
                e["id"].as_str().unwrap_or("?"),
                e["stream"].as_str().unwrap_or("?"),
                e["partition"],
                e["offset"],
                e["time"].as_str().unwrap_or("")
            )
            .trim_end()
            .to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn effects_are_indented_under_their_cause() {
        let events = vec![
            json!({"depth": 0, "type": "order.placed", "id": "o1", "stream": "order", "partition": 2, "offset": 7}),
            json!({"depth": 1, "type": "fraud.scored", "id": "f1", "stream": "fraud", "partition": 2, "offset": 0, "time": "2026-12-07T21:00:00Z"}),
            json!({"depth": 2, "type": "payment.requested", "id": "p1", "stream": "payment", "partition": 0, "offset": 3}),
        ];
        assert_eq!(
            super::tree_lines(&events),
            vec![
                "order.placed o1  order/2@7",
                "└─ fraud.scored f1  fraud/2@0  2026-12-07T21:00:00Z",
                "   └─ payment.requested p1  payment/0@3",
            ]
        );
    }
}
