//! `runnel streams`, `groups`, `lag <group>` and `tail <group>`.

use std::io::Write;

use clap::Args;
use runnel_envelope::Event;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{ClientArgs, cell, print_json, print_table, segment, stdout_error};

#[derive(Debug, Args)]
pub struct StreamsArgs {
    #[command(subcommand)]
    pub command: Option<StreamsCommand>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `runnel streams` lists every stream; these set one up and remove it.
#[derive(Debug, clap::Subcommand)]
pub enum StreamsCommand {
    /// Creates a stream ahead of its first publish (its partition count is fixed then).
    Create(super::manage::StreamCreateArgs),
    /// Deletes a stream, its events and every group's offsets on it (refused while groups
    /// read it, unless --force).
    Delete(super::manage::StreamDeleteArgs),
}

#[derive(Debug, Args)]
pub struct GroupsArgs {
    #[command(subcommand)]
    pub command: Option<GroupsCommand>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `runnel groups` lists every group; these look into one.
#[derive(Debug, clap::Subcommand)]
pub enum GroupsCommand {
    /// One group: settings, lag, counters (since the server started), and the deliveries its
    /// clients hold on this server (event id, attempt, held since, by which key).
    Show(GroupShowArgs),
    /// Creates a group (refused when it exists: its settings are never replaced by accident).
    Create(super::manage::GroupCreateArgs),
    /// Deletes a group: settings, offsets, retries, processed ids, dead letters, replay
    /// stream (refused while a consumer runs it, unless --force).
    Delete(super::manage::GroupDeleteArgs),
}

#[derive(Debug, Args)]
pub struct GroupShowArgs {
    /// The consumer group.
    pub group: String,
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
    match args.command {
        Some(StreamsCommand::Create(create)) => return super::manage::stream_create(create),
        Some(StreamsCommand::Delete(delete)) => return super::manage::stream_delete(delete),
        None => {}
    }
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
    print_table(&["stream", "partitions", "events", "bytes"], &rows)?;
    Ok(())
}

pub fn groups(args: GroupsArgs) -> anyhow::Result<()> {
    match args.command {
        Some(GroupsCommand::Show(show)) => return group_show(show),
        Some(GroupsCommand::Create(create)) => return super::manage::group_create(create),
        Some(GroupsCommand::Delete(delete)) => return super::manage::group_delete(delete),
        None => {}
    }
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
    )?;
    Ok(())
}

/// `runnel groups show G`.
fn group_show(args: GroupShowArgs) -> anyhow::Result<()> {
    let api = args.client.api()?;
    let view = api.get(&format!("/v1/groups/{}", segment(&args.group)))?;
    if args.client.json {
        return print_json(&view);
    }
    let config = &view["config"];
    outln!("group              {}", cell(&view["name"]))?;
    outln!("filter             {}", cell(&config["filter"]))?;
    outln!(
        "lag                {} events, {}s",
        cell(&view["lag"]["total_events"]),
        view["lag"]["max_seconds"].as_f64().unwrap_or(0.0)
    )?;
    outln!("dlq depth          {}", cell(&view["dlq"]["depth"]))?;
    let counters = &view["counters"];
    outln!(
        "since {}: delivered {}, acked {}, redelivered {}, retries {}, dead-lettered {}",
        cell(&counters["since"]),
        cell(&counters["delivered"]),
        cell(&counters["acked"]),
        cell(&counters["redelivered"]),
        cell(&counters["retries_scheduled"]),
        cell(&counters["dead_lettered"]),
    )?;
    let consumer = &view["consumer"];
    if consumer["running"] != true {
        outln!("consumer           not running on this server")?;
        return Ok(());
    }
    outln!(
        "consumer           running as {}, {} in flight",
        consumer["instance"]
            .as_str()
            .unwrap_or("(a random instance id)"),
        cell(&consumer["outstanding"])
    )?;
    let rows: Vec<Vec<String>> = consumer["in_flight"]
        .as_array()
        .map(|held| {
            held.iter()
                .map(|d| {
                    vec![
                        cell(&d["event_id"]),
                        cell(&d["event_type"]),
                        format!(
                            "{}/{}@{}",
                            cell(&d["stream"]),
                            cell(&d["partition"]),
                            cell(&d["offset"])
                        ),
                        cell(&d["attempt"]),
                        cell(&d["held_since"]),
                        cell(&d["lapses_at"]),
                        d["held_by"].as_str().unwrap_or("-").to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if !rows.is_empty() {
        print_table(
            &[
                "event id",
                "type",
                "position",
                "attempt",
                "held since",
                "lapses at",
                "held by",
            ],
            &rows,
        )?;
    }
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
    )?;
    outln!(
        "group {}: {} events behind, oldest {:.1}s",
        args.group,
        cell(&lag["total_events"]),
        lag["max_seconds"].as_f64().unwrap_or(0.0)
    )?;
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

/// What `tail` prints of a pulled event; `data` as sent, binary data (`data_base64`) read
/// through the envelope.
#[derive(serde::Deserialize)]
struct PulledEvent {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    data: Option<Box<RawValue>>,
    data_base64: Option<serde::de::IgnoredAny>,
    datacontenttype: Option<String>,
}

/// Bytes of binary data `tail` shows in hex; `--json` carries all of it.
const BINARY_PREVIEW_BYTES: usize = 16;

/// Binary data as a person can read it: its size, its content type and its first bytes in
/// hex.
fn binary_preview(bytes: &[u8], content_type: Option<&str>) -> String {
    let hex: String = bytes
        .iter()
        .take(BINARY_PREVIEW_BYTES)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "<binary, {} byte{}{}: {hex}{}>",
        bytes.len(),
        if bytes.len() == 1 { "" } else { "s" },
        content_type.map_or_else(String::new, |t| format!(", {t}")),
        if bytes.len() > BINARY_PREVIEW_BYTES {
            "…"
        } else {
            ""
        }
    )
}

/// The line `tail` prints for a pulled message, and the message's receipt.
fn message_line(raw: &RawValue, json: bool) -> anyhow::Result<(String, String)> {
    let m: PulledMessage = serde_json::from_str(raw.get())
        .map_err(|e| anyhow::anyhow!("a pulled message is not what the server documents: {e}"))?;
    if json {
        return Ok((m.receipt, raw.get().to_string()));
    }
    let event: PulledEvent = serde_json::from_str(m.event.get())
        .map_err(|e| anyhow::anyhow!("a pulled event is not CloudEvents JSON: {e}"))?;
    let data = match (&event.data, &event.data_base64) {
        (Some(data), _) => data.get().to_string(),
        (None, Some(_)) => {
            // The envelope reads `data_base64`, as it does every CloudEvents JSON event.
            let parsed = serde_json::from_str(m.event.get())
                .map_err(anyhow::Error::from)
                .and_then(|value| Ok(Event::from_json_value(value)?))
                .map_err(|e| {
                    anyhow::anyhow!("the binary data of event {} cannot be read: {e}", event.id)
                })?;
            let bytes = parsed.data().as_binary().map_or(&[][..], |b| &b[..]);
            binary_preview(bytes, event.datacontenttype.as_deref())
        }
        (None, None) => "(no data)".to_string(),
    };
    let attempt = if m.attempt > 1 {
        format!("  (attempt {})", m.attempt)
    } else {
        String::new()
    };
    let line = format!(
        "{}/{}@{}  {}  {}  {data}{attempt}",
        m.stream, m.partition, m.offset, event.event_type, event.id,
    );
    Ok((m.receipt, line))
}

/// Writes a line for each pulled message to `out`, flushing each: the receipts of the
/// messages whose line was written, in order, and the error that stopped the rest, if one
/// did. Only these receipts may be acknowledged: the user never saw the others.
fn write_messages(
    out: &mut impl Write,
    messages: &[Box<RawValue>],
    json: bool,
) -> (Vec<String>, anyhow::Result<()>) {
    let mut written = Vec::with_capacity(messages.len());
    for raw in messages {
        let (receipt, line) = match message_line(raw, json) {
            Ok(pair) => pair,
            Err(error) => return (written, Err(error)),
        };
        if let Err(error) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            return (written, Err(stdout_error(error)));
        }
        written.push(receipt);
    }
    (written, Ok(()))
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
        // Write and flush, then acknowledge what was written: a message whose line could not
        // be written (stdout closed, `| head -1`) is left unsettled and comes again after the
        // group's ack_wait.
        let (receipts, written) = write_messages(
            &mut std::io::stdout().lock(),
            &answer.messages,
            args.client.json,
        );
        if !receipts.is_empty() {
            api.post(
                &format!("/v1/groups/{group}/ack"),
                &json!({"receipts": receipts}),
            )?;
        }
        written?;
        seen += receipts.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pull message as the server sends it, around the event's JSON.
    fn message(receipt: &str, event: Value) -> Box<RawValue> {
        let text = json!({"receipt": receipt, "attempt": 1, "from_dlq": false,
                          "stream": "order", "partition": 0, "offset": 7, "event": event})
        .to_string();
        RawValue::from_string(text).unwrap()
    }

    fn order(id: &str) -> Value {
        json!({"specversion": "1.0", "id": id, "source": "/t", "type": "order.placed",
               "data": {"n": 1}})
    }

    /// Accepts `lines` lines, then answers as a pipe whose reader went away.
    struct ClosesAfter {
        lines: usize,
        text: Vec<u8>,
    }

    impl Write for ClosesAfter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let lines = self.text.iter().filter(|&&b| b == b'\n').count();
            if lines >= self.lines {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            self.text.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn only_the_receipts_of_written_lines_are_returned_for_acking() {
        let messages = [
            message("r1", order("a")),
            message("r2", order("b")),
            message("r3", order("c")),
        ];
        let mut out = ClosesAfter {
            lines: 2,
            text: Vec::new(),
        };
        let (receipts, result) = write_messages(&mut out, &messages, false);
        assert_eq!(receipts, ["r1", "r2"]);
        let error = result.unwrap_err();
        assert!(
            error.downcast_ref::<crate::cli::StdoutClosed>().is_some(),
            "{error}"
        );
        let text = String::from_utf8(out.text).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn binary_data_is_shown_as_its_size_type_and_first_bytes_never_null() {
        let bytes: Vec<u8> = (0u8..43).collect();
        let event = Event::builder(
            runnel_envelope::EventType::new("order.audited").unwrap(),
            runnel_envelope::Source::new("/t").unwrap(),
        )
        .id(runnel_envelope::EventId::new("b43").unwrap())
        .data_binary(bytes, "application/octet-stream")
        .build()
        .unwrap();
        let raw = message("r1", event.to_json_value());
        let (receipt, line) = message_line(&raw, false).unwrap();
        assert_eq!(receipt, "r1");
        assert_eq!(
            line,
            "order/0@7  order.audited  b43  \
             <binary, 43 bytes, application/octet-stream: 000102030405060708090a0b0c0d0e0f…>"
        );
    }

    #[test]
    fn an_event_without_data_says_so() {
        let raw = message(
            "r1",
            json!({"specversion": "1.0", "id": "e1", "source": "/t", "type": "order.placed"}),
        );
        let (_, line) = message_line(&raw, false).unwrap();
        assert_eq!(line, "order/0@7  order.placed  e1  (no data)");
        let raw = message("r2", order("e2"));
        assert!(message_line(&raw, false).unwrap().1.ends_with(r#"{"n":1}"#));
    }
}
