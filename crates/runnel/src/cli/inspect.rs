//! `runnel streams`, `groups`, `lag <group>` and `tail <group>`.

use clap::Args;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{ClientArgs, cell, print_json, print_table, segment};

#[derive(Debug, Args)]
pub struct StreamsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct GroupsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct LagArgs {
    /// The consumer group.
    pub group: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// The consumer group to pull from (its events are acknowledged once printed).
    pub group: String,
    /// Stop after this many events.
    #[arg(long, short = 'n', value_name = "N")]
    pub count: Option<u64>,
    /// Stop when nothing arrives within one wait instead of following.
    #[arg(long)]
    pub no_follow: bool,
    /// How long one pull waits for events, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub wait_ms: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Events in a stream: the sum over partitions of high watermark − start offset.
fn stream_events(stream: &Value) -> u64 {
    stream["partition_info"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    p["high_watermark"]
                        .as_u64()
                        .unwrap_or(0)
                        .saturating_sub(p["start_offset"].as_u64().unwrap_or(0))
                })
                .sum()
        })
        .unwrap_or(0)
}

pub fn streams(args: StreamsArgs) -> anyhow::Result<()> {
    let api = args.client.api()?;
    let streams = api.get("/v1/streams")?;
    let list = streams.as_array().cloned().unwrap_or_default();
    if args.client.json {
        let out: Vec<Value> = list
            .iter()
            .map(|s| {
                let mut s = s.clone();
                s["events"] = json!(stream_events(&s));
                s
            })
            .collect();
        return print_json(&Value::Array(out));
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let bytes: u64 = s["partition_info"]
                .as_array()
                .map(|ps| ps.iter().filter_map(|p| p["bytes"].as_u64()).sum())
                .unwrap_or(0);
            vec![
                cell(&s["name"]),
                cell(&s["partitions"]),
                stream_events(s).to_string(),
                bytes.to_string(),
            ]
        })
        .collect();
    print_table(&["stream", "partitions", "events", "bytes"], &rows);
    Ok(())
}

pub fn groups(args: GroupsArgs) -> anyhow::Result<()> {
    let api = args.client.api()?;
    let groups = api.get("/v1/groups")?;
    let mut out = Vec::new();
    for g in groups.as_array().cloned().unwrap_or_default() {
        let name = g["name"].as_str().unwrap_or_default().to_string();
        let view = api.get(&format!("/v1/groups/{}", segment(&name)))?;
        out.push(json!({
            "name": name,
            "filter": g["config"]["filter"],
            "lag": view["lag"]["total_events"],
            "acked": view["counters"]["acked"],
            "retries": view["counters"]["retries_scheduled"],
            "dlq_depth": view["dlq"]["depth"],
            "running": view["consumer"]["running"],
            "config": g["config"],
        }));
    }
    if args.client.json {
        return print_json(&Value::Array(out));
    }
    let rows: Vec<Vec<String>> = out
        .iter()
        .map(|g| {
            vec![
                cell(&g["name"]),
                cell(&g["filter"]),
                cell(&g["lag"]),
                cell(&g["acked"]),
                cell(&g["retries"]),
                cell(&g["dlq_depth"]),
                if g["running"] == true { "yes" } else { "no" }.into(),
            ]
        })
        .collect();
    print_table(
        &[
            "group", "filter", "lag", "acked", "retries", "dlq", "running",
        ],
        &rows,
    );
    Ok(())
}

pub fn lag(args: LagArgs) -> anyhow::Result<()> {
    let api = args.client.api()?;
    let view = api.get(&format!("/v1/groups/{}", segment(&args.group)))?;
    let lag = &view["lag"];
    if args.client.json {
        return print_json(&json!({
            "group": args.group,
            "total_events": lag["total_events"],
            "max_seconds": lag["max_seconds"],
            "partitions": lag["partitions"],
        }));
    }
    let rows: Vec<Vec<String>> = lag["partitions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            vec![
                cell(&p["stream"]),
                cell(&p["partition"]),
                cell(&p["committed"]),
                cell(&p["high_watermark"]),
                cell(&p["events"]),
                format!("{:.1}", p["seconds"].as_f64().unwrap_or(0.0)),
            ]
        })
        .collect();
    print_table(
        &[
            "stream",
            "partition",
            "committed",
            "high watermark",
            "lag",
            "seconds",
        ],
        &rows,
    );
    println!(
        "group {}: {} events behind, oldest {:.1}s",
        args.group,
        cell(&lag["total_events"]),
        lag["max_seconds"].as_f64().unwrap_or(0.0)
    );
    Ok(())
}

/// A pull's answer, each message kept as the server's text.
#[derive(serde::Deserialize)]
struct PulledText {
    messages: Vec<Box<RawValue>>,
}

/// What `tail` reads of a pulled message.
#[derive(serde::Deserialize)]
struct PulledMessage {
    receipt: String,
    attempt: u64,
    stream: String,
    partition: u64,
    offset: u64,
    event: Box<RawValue>,
}

/// What `tail` prints of a pulled event; `data` as sent.
#[derive(serde::Deserialize)]
struct PulledEvent {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    data: Option<Box<RawValue>>,
}

pub fn tail(args: TailArgs) -> anyhow::Result<()> {
    let api = args.client.api()?;
    let group = segment(&args.group);
    let mut seen = 0u64;
    loop {
        let want = match args.count {
            Some(count) if seen >= count => return Ok(()),
            Some(count) => (count - seen).min(100),
            None => 100,
        };
        // Read as text, so each message and its data print exactly as the server sent them
        // (a number past 64 bits stays that number).
        let answer = api.post_text(
            &format!("/v1/groups/{group}/pull"),
            &json!({"max": want, "wait_ms": args.wait_ms}),
        )?;
        let answer: PulledText = serde_json::from_str(&answer).map_err(|e| {
            anyhow::anyhow!("the server's pull answer is not what it documents: {e}")
        })?;
        if answer.messages.is_empty() {
            if args.no_follow {
                return Ok(());
            }
            continue;
        }
        let mut receipts = Vec::new();
        for raw in &answer.messages {
            let m: PulledMessage = serde_json::from_str(raw.get()).map_err(|e| {
                anyhow::anyhow!("a pulled message is not what the server documents: {e}")
            })?;
            if args.client.json {
                println!("{}", raw.get());
            } else {
                let event: PulledEvent = serde_json::from_str(m.event.get())
                    .map_err(|e| anyhow::anyhow!("a pulled event is not CloudEvents JSON: {e}"))?;
                println!(
                    "{}/{}@{}  {}  {}  {}{}",
                    m.stream,
                    m.partition,
                    m.offset,
                    event.event_type,
                    event.id,
                    event.data.as_deref().map_or("null", RawValue::get),
                    if m.attempt > 1 {
                        format!("  (attempt {})", m.attempt)
                    } else {
                        String::new()
                    }
                );
            }
            receipts.push(m.receipt);
        }
        api.post(
            &format!("/v1/groups/{group}/ack"),
            &json!({"receipts": receipts}),
        )?;
        seen += answer.messages.len() as u64;
    }
}
