//! `runnel dlq list|show|replay|purge`: a group's dead-letter queue.

use std::io::{BufRead, IsTerminal, Write};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::{
    CheckFailed, ClientArgs, UsageError, cell, print_fields_table, print_json,
    progress_on_terminal, segment,
};

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List a group's dead-letter entries, a page at a time (filter with --type, --class,
    /// --since, --until, --reason; the next page with --after).
    List(ListArgs),
    /// Show one entry, with its original event.
    Show(ShowArgs),
    /// Deliver entries to the group again (they leave the queue when acked).
    Replay(ReplayArgs),
    /// Delete entries for good (asks to confirm unless --yes).
    Purge(PurgeArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ClassArg {
    Transient,
    Service,
    Permanent,
}

impl ClassArg {
    fn as_str(self) -> &'static str {
        match self {
            ClassArg::Transient => "transient",
            ClassArg::Service => "service",
            ClassArg::Permanent => "permanent",
        }
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The consumer group.
    pub group: String,
    /// Only entries whose event type matches this pattern (`order.*`).
    #[arg(long = "type", value_name = "PATTERN")]
    pub event_type: Option<String>,
    /// Only entries of this failure class.
    #[arg(long, value_enum)]
    pub class: Option<ClassArg>,
    /// Only entries dead-lettered at or after this time: RFC 3339
    /// (`2026-01-01T00:00:00Z`), or microseconds since the epoch.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only entries dead-lettered before this time: RFC 3339, or microseconds since the epoch.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only entries whose reason contains this text (in any case).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// The next page: start after this entry id (the `next` the previous page printed).
    #[arg(long, value_name = "ID")]
    pub after: Option<String>,
    /// Most entries to list (a page), 1 to 1000.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub limit: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The consumer group.
    pub group: String,
    /// The entry id (`stream-partition-offset`).
    pub id: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// What to replay: ids, a class, or all (exactly one).
#[derive(Debug, Args)]
#[command(
    group(clap::ArgGroup::new("selector").required(true).args(["ids", "class", "all"])),
    override_usage = "runnel dlq replay [OPTIONS] <GROUP> (<ID>... | --class <CLASS> | --all)"
)]
pub struct ReplayArgs {
    /// The consumer group.
    pub group: String,
    /// Entry ids to replay.
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// Replay every entry of this failure class.
    #[arg(long, value_enum)]
    pub class: Option<ClassArg>,
    /// Replay every entry.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// What to purge: a class, or all (exactly one).
#[derive(Debug, Args)]
#[command(
    group(clap::ArgGroup::new("selector").required(true).args(["class", "all"])),
    override_usage = "runnel dlq purge [OPTIONS] <GROUP> (--class <CLASS> | --all)"
)]
pub struct PurgeArgs {
    /// The consumer group.
    pub group: String,
    /// Purge only entries of this failure class.
    #[arg(long, value_enum)]
    pub class: Option<ClassArg>,
    /// Purge every entry.
    #[arg(long)]
    pub all: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn run(command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List(args) => list(args),
        DlqCommand::Show(args) => show(args),
        DlqCommand::Replay(args) => replay(args),
        DlqCommand::Purge(args) => purge(args),
    }
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    let api = args.client.api()?;
    // The server's query names (`GET /v1/groups/{group}/dlq`), each value escaped.
    let limit = args.limit.to_string();
    let query: Vec<String> = [
        ("type", args.event_type.as_deref()),
        ("class", args.class.map(ClassArg::as_str)),
        ("since", args.since.as_deref()),
        ("until", args.until.as_deref()),
        ("reason", args.reason.as_deref()),
        ("after", args.after.as_deref()),
        ("limit", Some(limit.as_str())),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some(format!("{name}={}", segment(value?))))
    .collect();
    let path = format!(
        "/v1/groups/{}/dlq?{}",
        segment(&args.group),
        query.join("&")
    );
    if args.client.json {
        // The server's text as it is: event data keeps its key order and numbers.
        return outln!("{}", api.get_text(&path)?.trim_end());
    }
    let page = api.get(&path)?;
    print_fields_table(
        &page["entries"],
        &[
            ("id", "id"),
            ("type", "event_type"),
            ("event id", "event_id"),
            ("class", "class"),
            ("attempts", "attempts"),
            ("reason", "reason"),
            ("dead-lettered at", "dead_lettered_at"),
        ],
    )?;
    if let Some(next) = page["next"].as_str() {
        outln!("(more: the next page is --after {next})")?;
    }
    Ok(())
}

fn show(args: ShowArgs) -> anyhow::Result<()> {
    let api = args.client.api()?;
    let text = api.get_text(&format!(
        "/v1/groups/{}/dlq/{}",
        segment(&args.group),
        segment(&args.id)
    ))?;
    if args.client.json {
        // The server's text as it is: event data keeps its key order and numbers.
        return outln!("{}", text.trim_end());
    }
    let entry: Value = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!("a dead-letter entry is not what the server documents: {e}")
    })?;
    let event: EventText = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!("a dead-letter entry is not what the server documents: {e}")
    })?;
    for field in [
        "id",
        "event_id",
        "event_type",
        "class",
        "reason",
        "attempts",
        "first_failure_at",
        "last_failure_at",
        "dead_lettered_at",
        "replays",
        "replay_pending",
    ] {
        outln!("{field:<18} {}", cell(&entry[field]))?;
    }
    outln!("event:")?;
    match event.event {
        Some(raw) => outln!("{}", raw.get())?,
        None => outln!("(the original event cannot be decoded; see the entry's reason)")?,
    }
    Ok(())
}

/// The original event of a dead-letter entry, as the server's text.
#[derive(serde::Deserialize)]
struct EventText {
    event: Option<Box<serde_json::value::RawValue>>,
}

/// Entries replayed per request, so a large replay shows progress.
const REPLAY_CHUNK: usize = 500;

fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let api = args.client.api()?;
    let group = segment(&args.group);
    // With --all or --class: list the matching ids first, then replay them in chunks.
    let ids = if args.ids.is_empty() {
        let mut ids = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut query = "limit=1000".to_string();
            if let Some(class) = args.class {
                query.push_str(&format!("&class={}", class.as_str()));
            }
            if let Some(after) = &after {
                query.push_str(&format!("&after={}", segment(after)));
            }
            let page = api.get(&format!("/v1/groups/{group}/dlq?{query}"))?;
            for entry in page["entries"].as_array().into_iter().flatten() {
                if let Some(id) = entry["id"].as_str() {
                    ids.push(id.to_string());
                }
            }
            match page["next"].as_str() {
                Some(next) => after = Some(next.to_string()),
                None => break,
            }
        }
        ids
    } else {
        args.ids.clone()
    };
    let bar = progress_on_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(ids.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "replaying {pos}/{len} entries  {elapsed_precise} {wide_bar}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut replayed = 0u64;
    let mut already_pending = 0u64;
    let mut missing: Vec<Value> = Vec::new();
    for chunk in ids.chunks(REPLAY_CHUNK) {
        let report = api.post(
            &format!("/v1/groups/{group}/dlq/replay"),
            &json!({"ids": chunk}),
        )?;
        replayed += report["replayed"].as_u64().unwrap_or(0);
        already_pending += report["already_pending"].as_u64().unwrap_or(0);
        missing.extend(report["missing"].as_array().cloned().unwrap_or_default());
        if let Some(bar) = &bar {
            bar.inc(chunk.len() as u64);
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let not_found = missing.len();
    if args.client.json {
        print_json(&json!({
            "replayed": replayed,
            "already_pending": already_pending,
            "missing": missing,
        }))?;
    } else {
        outln!(
            "replayed {replayed} entries to group {} ({already_pending} already being replayed, {not_found} not found)",
            args.group,
        )?;
        for id in missing {
            outln!("  not found: {}", cell(&id))?;
        }
    }
    // As `dlq show` of an unknown id: exit 1 when some of the ids asked for were not there.
    if not_found > 0 {
        return Err(CheckFailed(format!(
            "{not_found} of the entries to replay were not found"
        ))
        .into());
    }
    Ok(())
}

fn purge(args: PurgeArgs) -> anyhow::Result<()> {
    let api = args.client.api()?;
    let group = segment(&args.group);
    let what = match args.class {
        Some(class) => format!("the {} entries", class.as_str()),
        None => "every entry".to_string(),
    };
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(UsageError(format!(
                "refusing to purge {what} of group {} without confirmation: pass --yes",
                args.group
            ))
            .into());
        }
        let depth = api.get(&format!("/v1/groups/{group}"))?["dlq"]["depth"].clone();
        eprint!(
            "Purge {what} of group {}'s dead-letter queue ({} entries in all)? This cannot be undone. [y/N] ",
            args.group,
            cell(&depth)
        );
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("nothing purged");
            return Ok(());
        }
    }
    let query = match args.class {
        Some(class) => format!("class={}", class.as_str()),
        None => "all=true".to_string(),
    };
    let answer = api.delete(&format!("/v1/groups/{group}/dlq?{query}"))?;
    if args.client.json {
        return print_json(&answer);
    }
    let purged = answer.get("purged").cloned().unwrap_or(Value::Null);
    outln!("purged {} entries from group {}", cell(&purged), args.group)?;
    Ok(())
}
