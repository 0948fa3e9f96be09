//! `GET /v1/trace/{correlationid}`: every event of one workflow across streams, causes before
//! effects, read from the correlation index (`runnel_runtime::trace`) — no stream is scanned.
//! Needs the `admin` scope: a trace shows events of every stream.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use runnel_runtime::trace::{self, TRACE_GROUP};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::auth::Caller;
use crate::extract::ApiPath;
use crate::problem::{ApiError, Problem};

/// One event of a trace, placed in its causal tree.
#[derive(Debug, Serialize, ToSchema)]
pub struct TraceEventView {
    /// 0 for a root (an event whose cause is not in the trace), 1 for what it caused, …
    pub depth: usize,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub stream: String,
    pub partition: u32,
    pub offset: u64,
    /// The event's `time` (RFC 3339), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causationid: Option<String>,
}

/// A workflow's events in causal order.
#[derive(Debug, Serialize, ToSchema)]
pub struct TraceView {
    pub correlationid: String,
    /// Pre-order walk of the causation tree: each event after its cause; siblings by time.
    pub events: Vec<TraceEventView>,
    /// More than 10,000 events share this correlation id; the first 10,000 by key are shown.
    pub truncated: bool,
}

/// Every indexed event of one correlation id, in causal order.
#[utoipa::path(
    get,
    path = "/v1/trace/{correlationid}",
    tag = "trace",
    params(("correlationid" = String, Path, description = "A workflow's correlation id: the root event's id, which its effects carry as `correlationid`")),
    responses(
        (status = 200, body = TraceView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Nothing indexed under that id (`trace.unknown`), or the index is off (`trace.disabled`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn get_trace(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(correlation): ApiPath<String>,
) -> Result<Json<TraceView>, ApiError> {
    caller.require_admin()?;
    if !state.config.trace_index {
        return Err(ApiError::not_found(
            "trace.disabled",
            "the correlation index is off on this server (trace_index = false)",
        ));
    }
    let (steps, truncated) = trace::trace(&state.runnel, &correlation).await?;
    if steps.is_empty() {
        return Err(ApiError::not_found(
            "trace.unknown",
            format!(
                "no event is indexed under correlation id `{correlation}`; the index follows \
                 the log as consumer group `{TRACE_GROUP}`, so a just-published event may not \
                 be in it yet (its lag shows the delay)"
            ),
        ));
    }
    Ok(Json(TraceView {
        correlationid: correlation,
        events: steps
            .into_iter()
            .map(|step| TraceEventView {
                depth: step.depth,
                id: step.entry.id,
                source: step.entry.source,
                event_type: step.entry.event_type,
                stream: step.entry.stream,
                partition: step.entry.partition,
                offset: step.entry.offset,
                time: step.entry.time,
                causationid: step.entry.causationid,
            })
            .collect(),
        truncated,
    }))
}
