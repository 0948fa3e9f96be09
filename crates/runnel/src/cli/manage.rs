//! `runnel streams create|delete` and `runnel groups create|delete`: what an operator sets
//! up ahead of the first publish or pull (a stream's partition count, a group's settings) and
//! removes when done, over the server's admin routes.

use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use super::{CheckFailed, ClientArgs, print_json, segment};
use crate::api::ApiError;

#[derive(Debug, Args)]
pub struct StreamCreateArgs {
    /// The stream: an event type's domain (`order` for `order.placed`).
    pub name: String,
    /// Fixed once created [default: the server's default_partitions].
    #[arg(long, value_name = "N")]
    pub partitions: Option<u32>,
    /// Remove records older than this many ms (whole segments) [default: keep].
    #[arg(long, value_name = "MS")]
    pub max_age_ms: Option<u64>,
    /// Keep at most this many bytes per partition [default: no limit].
    #[arg(long, value_name = "BYTES")]
    pub max_bytes_per_partition: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StartArg {
    Earliest,
    Latest,
}

#[derive(Debug, Args)]
pub struct GroupCreateArgs {
    /// The consumer group.
    pub group: String,
    /// Event types the group receives: `order.*`, `order.placed`, `>` for every type.
    #[arg(long, value_name = "PATTERN")]
    pub filter: String,
    /// Where it starts on partitions it has not committed on [default: earliest].
    #[arg(long, value_enum)]
    pub start: Option<StartArg>,
    /// How long a delivery may stay unsettled before it is delivered again, in ms.
    #[arg(long, value_name = "MS")]
    pub ack_wait: Option<u64>,
    /// Deliveries before an event is dead-lettered.
    #[arg(long, value_name = "N")]
    pub max_deliver: Option<u32>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct StreamDeleteArgs {
    /// The stream.
    pub name: String,
    /// Delete even while groups read it (this server's consumers stop reading it), and
    /// even a group's replay stream.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct GroupDeleteArgs {
    /// The consumer group.
    pub group: String,
    /// Delete even while a consumer runs it (it stops; its clients' receipts lapse), and
    /// even a group of the server's own stages.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `runnel streams create`: refused (exit 1) when the stream exists with other settings.
pub fn stream_create(args: StreamCreateArgs) -> anyhow::Result<()> {
    let api = args.client.api()?;
    let mut body = json!({ "name": args.name });
    if let Some(partitions) = args.partitions {
        body["partitions"] = json!(partitions);
    }
    if args.max_age_ms.is_some() || args.max_bytes_per_partition.is_some() {
        body["retention"] = json!({
            "max_age_ms": args.max_age_ms,
            "max_bytes_per_partition": args.max_bytes_per_partition,
        });
    }
    let stream = api.post("/v1/streams", &body)?;
    if args.client.json {
        return print_json(&stream);
    }
    outln!(
        "stream {} with {} partition(s)",
        super::cell(&stream["name"]),
        super::cell(&stream["partitions"])
    )
}

/// `runnel groups create`: refused (exit 1) when the group exists, so settings are never
/// replaced by accident (`PUT /v1/groups/{group}` replaces them on purpose).
pub fn group_create(args: GroupCreateArgs) -> anyhow::Result<()> {
    let api = args.client.api()?;
    let path = format!("/v1/groups/{}", segment(&args.group));
    match api.get(&path) {
        Ok(existing) => {
            return Err(CheckFailed(format!(
                "group `{}` exists already (filter `{}`); its settings were left as they are",
                args.group,
                super::cell(&existing["config"]["filter"])
            ))
            .into());
        }
        Err(ApiError::Status { status: 404, .. }) => {}
        Err(error) => return Err(error.into()),
    }
    let mut spec = json!({ "filter": args.filter });
    if let Some(start) = args.start {
        spec["start"] = json!(match start {
            StartArg::Earliest => "earliest",
            StartArg::Latest => "latest",
        });
    }
    if let Some(ms) = args.ack_wait {
        spec["ack_wait"] = json!(ms);
    }
    if let Some(n) = args.max_deliver {
        spec["max_deliver"] = json!(n);
    }
    let created: Value = api.put(&path, &spec)?;
    if args.client.json {
        return print_json(&json!({ "name": args.group, "config": created }));
    }
    outln!(
        "group {} receives {}",
        args.group,
        super::cell(&created["filter"])
    )
}

/// `?force=true` when asked for.
fn force_query(force: bool) -> &'static str {
    if force { "?force=true" } else { "" }
}

/// `runnel streams delete`: the server's 409 (groups read it) names the groups.
pub fn stream_delete(args: StreamDeleteArgs) -> anyhow::Result<()> {
    let api = args.client.api()?;
    let path = format!(
        "/v1/streams/{}{}",
        segment(&args.name),
        force_query(args.force)
    );
    api.delete(&path)?;
    if args.client.json {
        return print_json(&json!({ "deleted": { "stream": args.name } }));
    }
    outln!("stream {} deleted", args.name)
}

/// `runnel groups delete`: the server's 409 (a consumer runs it) names the instances.
pub fn group_delete(args: GroupDeleteArgs) -> anyhow::Result<()> {
    let api = args.client.api()?;
    let path = format!(
        "/v1/groups/{}{}",
        segment(&args.group),
        force_query(args.force)
    );
    api.delete(&path)?;
    if args.client.json {
        return print_json(&json!({ "deleted": { "group": args.group } }));
    }
    outln!(
        "group {} deleted (settings, offsets, retries, processed ids, dead letters)",
        args.group
    )
}
