//! Consumer groups over HTTP: configure, describe, delete, pull, ack, nack, and the event
//! stream.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use runnel_runtime::RuntimeError;

use super::AppState;
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery, GroupPath};
use crate::problem::{ApiError, Problem};
use crate::views::{
    AckRequest, AckResponse, ConsumerView, CountersView, DeleteQuery, DlqDepthView, GroupSpec,
    GroupView, LagView, MessageView, NackRequest, NackResponse, PullRequest, PullResponse,
};

/// The longest `reason` a nack may give, in bytes.
pub const MAX_NACK_REASON_BYTES: usize = 4096;

/// Messages an event stream asks the consumer for at a time.
const STREAM_BATCH: usize = 64;
/// How long an event stream waits before it checks for shutdown and a replaced consumer.
const STREAM_POLL: Duration = Duration::from_secs(5);

/// Every group's settings.
#[utoipa::path(
    get,
    path = "/v1/groups",
    tag = "groups",
    responses(
        (status = 200, description = "Groups by name", body = Vec<GroupSpecNamed>),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn list_groups(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<GroupSpecNamed>>, ApiError> {
    caller.require_admin()?;
    let groups = state.runnel.list_groups().await?;
    Ok(Json(
        groups
            .iter()
            .map(|g| GroupSpecNamed {
                name: g.name.clone(),
                config: GroupSpec::from_config(g),
            })
            .collect(),
    ))
}

/// A group's name and settings.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct GroupSpecNamed {
    pub name: String,
    pub config: GroupSpec,
}

/// Create or replace a group's settings. A running consumer of the group on this server is
/// restarted with them (its outstanding receipts lapse).
#[utoipa::path(
    put,
    path = "/v1/groups/{group}",
    tag = "groups",
    params(("group" = String, Path, description = "1–56 characters of a-z, 0-9, `_`, `-`")),
    request_body(content = GroupSpec, content_type = "application/json"),
    responses(
        (status = 200, description = "Replaced", body = GroupSpec),
        (status = 201, description = "Created", body = GroupSpec),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn put_group(
    State(state): State<AppState>,
    caller: Caller,
    GroupPath(group): GroupPath,
    ApiJson(spec): ApiJson<GroupSpec>,
) -> Result<(StatusCode, Json<GroupSpec>), ApiError> {
    caller.require_consume(&group)?;
    refuse_internal(&group)?;
    let config = spec.to_config(&group)?;
    let existed = match state.runnel.group_config(&group).await {
        Ok(_) => true,
        Err(RuntimeError::UnknownGroup(_)) => false,
        Err(e) => return Err(e.into()),
    };
    state.runnel.put_group(config.clone()).await?;
    state.consumers.stop(&group).await;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(GroupSpec::from_config(&config))))
}

/// Groups of the server's own stages (`saga-*`, `features-*`, `inference-*`, `trace-index`)
/// are configured and consumed in the server only: an HTTP client pulling one would take
/// partitions from the stage, and its acks would commit past events the stage never saw.
/// `GET /v1/groups/{group}` still shows them, and `DELETE` with `force=true` removes them.
fn refuse_internal(group: &str) -> Result<(), ApiError> {
    match runnel_runtime::internal_group(group) {
        Some(owner) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "group.internal",
            format!(
                "group `{group}` is Runnel's own ({owner} runs it in the server): it is not \
                 configured or consumed over HTTP (GET /v1/groups/{group} shows its progress)"
            ),
        )),
        None => Ok(()),
    }
}

/// A group: settings, lag per partition (events and seconds), this server's counters and
/// consumer, and its dead-letter queue depth.
#[utoipa::path(
    get,
    path = "/v1/groups/{group}",
    tag = "groups",
    params(("group" = String, Path)),
    responses(
        (status = 200, body = GroupView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn describe_group(
    State(state): State<AppState>,
    caller: Caller,
    GroupPath(group): GroupPath,
) -> Result<Json<GroupView>, ApiError> {
    caller.require_consume(&group)?;
    let config = state.runnel.group_config(&group).await?;
    let lag = state.runnel.lag(&group).await?;
    let dlq = state.runnel.dlq_depth(&group).await?;
    let counts = state.consumers.counts(&group).await.unwrap_or_default();
    let running = state.consumers.running(&group).await;
    Ok(Json(GroupView {
        name: group.into(),
        config: GroupSpec::from_config(&config),
        lag: LagView::from(lag),
        counters: CountersView::new(counts, state.consumers.started_at()),
        dlq: DlqDepthView::from(dlq),
        consumer: ConsumerView {
            running: running.is_some(),
            outstanding: running.as_ref().map_or(0, |s| s.outstanding()),
            instance: state.consumers.instance().map(str::to_string),
            in_flight: running.map(|s| s.in_flight()).unwrap_or_default(),
        },
    }))
}

/// Delete a group: its settings, committed offsets, leases, scheduled retries, in-flight
/// lists, processed ids, dead-letter queue and replay stream (admin). Refused (409
/// `group.in_use`, naming the consumer instances) while a consumer runs it — this server's
/// HTTP consumer included, until it stops after `consumer_idle_secs` without pulls — and
/// (409 `group.internal`) for the groups of the server's own stages, unless `force=true`;
/// forced, this server's consumer of the group stops first (its receipts lapse).
#[utoipa::path(
    delete,
    path = "/v1/groups/{group}",
    tag = "groups",
    params(("group" = String, Path), DeleteQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "In use (`consumers` names the instances), or Runnel's own", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn delete_group(
    State(state): State<AppState>,
    caller: Caller,
    GroupPath(group): GroupPath,
    ApiQuery(query): ApiQuery<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    let force = query.force.unwrap_or(false);
    // No pull or event stream starts a consumer of the group while it is deleted; forced,
    // this server's consumer stops first (its receipts lapse; the runtime stops its workers).
    state.consumers.begin_deletion(&group, force).await;
    let deleted = state.runnel.delete_group(&group, force).await;
    state.consumers.end_deletion(&group, deleted.is_ok()).await;
    deleted?;
    Ok(StatusCode::NO_CONTENT)
}

/// Long poll: up to `max` messages, waiting up to `wait_ms` for the first. Each message
/// carries a `receipt` to settle it with `ack` or `nack` within the group's `ack_wait`.
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/pull",
    tag = "consume",
    params(("group" = String, Path)),
    request_body(content = PullRequest, content_type = "application/json"),
    responses(
        (status = 200, body = PullResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn pull(
    State(state): State<AppState>,
    caller: Caller,
    GroupPath(group): GroupPath,
    ApiJson(request): ApiJson<PullRequest>,
) -> Result<Json<PullResponse>, ApiError> {
    caller.require_consume(&group)?;
    refuse_internal(&group)?;
    let max = match request.max {
        None => 1,
        Some(0) => {
            return Err(
                ApiError::bad_request("request.invalid_field", "`max` must be at least 1")
                    .with_field("/max", "must be at least 1"),
            );
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    }
    .min(state.config.max_pull_messages);
    let wait = Duration::from_millis(
        request
            .wait_ms
            .unwrap_or(0)
            .min(state.config.max_pull_wait_ms),
    );
    let messages = state
        .consumers
        .pull(&group, max, wait, caller.key_name())
        .await?;
    Ok(Json(PullResponse { messages }))
}

/// Acknowledge messages: they are done. Every valid receipt is acknowledged; if some were
/// unknown (404) or lapsed (409), the problem lists them with the count acknowledged.
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/ack",
    tag = "consume",
    params(("group" = String, Path)),
    request_body(content = AckRequest, content_type = "application/json"),
    responses(
        (status = 200, body = AckResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group or receipt", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A receipt lapsed (past ack_wait, or delivered again)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn ack(
    State(state): State<AppState>,
    caller: Caller,
    GroupPath(group): GroupPath,
    ApiJson(request): ApiJson<AckRequest>,
) -> Result<Json<AckResponse>, ApiError> {
    caller.require_consume(&group)?;
    refuse_internal(&group)?;
    let acked = state.consumers.ack(&group, &request.receipts).await?;
    Ok(Json(AckResponse { acked }))
}

/// Report a failed message: `transient` retries at once, `service` after a backoff,
/// `permanent` dead-letters it.
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/nack",
    tag = "consume",
    params(("group" = String, Path)),
    request_body(content = NackRequest, content_type = "application/json"),
    responses(
        (status = 200, body = NackResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group or receipt", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The receipt lapsed", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn nack(
    State(state): State<AppState>,
    caller: Caller,
    GroupPath(group): GroupPath,
    ApiJson(request): ApiJson<NackRequest>,
) -> Result<Json<NackResponse>, ApiError> {
    caller.require_consume(&group)?;
    refuse_internal(&group)?;
    if request.reason.len() > MAX_NACK_REASON_BYTES {
        // It is kept in the DLQ entry, shown on every page that lists it, and logged.
        return Err(ApiError::bad_request(
            "nack.reason_too_long",
            format!(
                "`reason` is {} bytes; at most {MAX_NACK_REASON_BYTES} are kept",
                request.reason.len()
            ),
        )
        .with_field("/reason", "too long"));
    }
    state
        .consumers
        .nack(&group, &request.receipt, request.class, request.reason)
        .await?;
    Ok(Json(NackResponse { nacked: 1 }))
}

/// Server-Sent Events: the same messages a pull returns, pushed as they arrive (`event:
/// message`, `id:` the receipt, `data:` the message JSON); settle them with `ack`/`nack`.
#[utoipa::path(
    get,
    path = "/v1/groups/{group}/events",
    tag = "consume",
    params(("group" = String, Path)),
    responses(
        (status = 200, description = "An event stream of messages", content_type = "text/event-stream", body = MessageView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn event_stream(
    State(state): State<AppState>,
    caller: Caller,
    GroupPath(group): GroupPath,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    caller.require_consume(&group)?;
    refuse_internal(&group)?;
    // Unknown groups are a 404 now, not an error event later.
    state.consumers.session(&group).await?;
    let holder = caller.key_name().map(str::to_string);
    let stream = futures::stream::unfold(
        (state, group, VecDeque::<MessageView>::new(), false),
        move |(state, group, mut buffer, done)| {
            let holder = holder.clone();
            async move {
                if done {
                    return None;
                }
                loop {
                    if let Some(message) = buffer.pop_front() {
                        let event = SseEvent::default()
                            .event("message")
                            .id(message.receipt.clone())
                            .json_data(&message)
                            .unwrap_or_else(|e| {
                                SseEvent::default().event("error").data(e.to_string())
                            });
                        return Some((Ok(event), (state, group, buffer, false)));
                    }
                    if state.shutdown.is_triggered() {
                        return None;
                    }
                    match state
                        .consumers
                        .pull(&group, STREAM_BATCH, STREAM_POLL, holder.as_deref())
                        .await
                    {
                        Ok(messages) => buffer.extend(messages),
                        Err(error) => {
                            let problem =
                                serde_json::to_string(&error.problem()).unwrap_or_default();
                            let event = SseEvent::default().event("error").data(problem);
                            return Some((Ok(event), (state, group, buffer, true)));
                        }
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
