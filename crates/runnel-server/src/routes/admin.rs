//! Administration: streams (list, describe, create, delete) and dead-letter queues (list,
//! show, replay, purge). Every route needs the `admin` scope.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use runnel_backend::{StreamConfig, StreamName};
use runnel_runtime::{DlqSelector, RuntimeError};

use super::AppState;
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiPath, ApiQuery, GroupPath};
use crate::problem::{ApiError, Problem};
use crate::views::{
    CreateStream, DeleteQuery, DlqEntryView, DlqListQuery, DlqPageView, DlqPurgeQuery,
    PurgeResponse, ReplayReportView, ReplayRequest, StreamView,
};

/// Entries per DLQ page when `limit` is not given.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

fn stream_name(name: &str) -> Result<StreamName, ApiError> {
    StreamName::new(name).map_err(|e| {
        ApiError::bad_request("name.invalid", e.to_string()).with_field("stream", e.to_string())
    })
}

/// Every stream, with partitions, high watermarks and retention.
#[utoipa::path(
    get,
    path = "/v1/streams",
    tag = "streams",
    responses(
        (status = 200, body = Vec<StreamView>),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn list_streams(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<StreamView>>, ApiError> {
    caller.require_admin()?;
    let streams = state.runnel.backend().list_streams().await?;
    Ok(Json(streams.into_iter().map(StreamView::from).collect()))
}

/// One stream.
#[utoipa::path(
    get,
    path = "/v1/streams/{stream}",
    tag = "streams",
    params(("stream" = String, Path)),
    responses(
        (status = 200, body = StreamView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown stream", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn describe_stream(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(stream): ApiPath<String>,
) -> Result<Json<StreamView>, ApiError> {
    caller.require_admin()?;
    let name = stream_name(&stream)?;
    let info = state.runnel.backend().describe_stream(&name).await?;
    Ok(Json(info.into()))
}

/// Create a stream (streams are otherwise created by their first publish, with the server's
/// default partitions). Creating an existing stream with the same partition count answers
/// 200 with it; a different count is a 409.
#[utoipa::path(
    post,
    path = "/v1/streams",
    tag = "streams",
    request_body(content = CreateStream, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = StreamView),
        (status = 200, description = "Already there with that partition count", body = StreamView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Exists with another partition count or retention", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn create_stream(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateStream>,
) -> Result<(StatusCode, Json<StreamView>), ApiError> {
    caller.require_admin()?;
    let name = stream_name(&request.name)?;
    let partitions = request
        .partitions
        .unwrap_or(state.config.default_partitions);
    let max = state.runnel.backend().max_partitions();
    if partitions == 0 || partitions > max {
        let message = format!("must be 1 ..= {max}");
        return Err(ApiError::bad_request(
            "stream.invalid_partitions",
            format!("`partitions` {message}"),
        )
        .with_field("/partitions", message));
    }
    let retention_given = request.retention.max_age_ms.is_some()
        || request.retention.max_bytes_per_partition.is_some();
    let config = StreamConfig {
        partitions,
        retention: (&request.retention).into(),
    };
    let (info, created) = state
        .runnel
        .ensure_stream(&name, config, retention_given)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(info.into())))
}

/// Delete a stream: its events, its definition, and every group's offsets, in-flight lists
/// and scheduled retries on it. Refused (409 `stream.in_use`, naming the groups) while a
/// group reads it — its filter matches the stream's events, or a consumer holds one of its
/// partitions — or while a feature set or model of this server publishes its results into
/// it (`stages` names them), and (409 `stream.internal`) for a group's replay stream, unless
/// `force=true`; forced, this server's consumers stop reading it first. A later publish
/// creates it again, empty.
#[utoipa::path(
    delete,
    path = "/v1/streams/{stream}",
    tag = "streams",
    params(("stream" = String, Path), DeleteQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown stream", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "In use (`groups` names the groups reading it), or a replay stream", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn delete_stream(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(stream): ApiPath<String>,
    ApiQuery(query): ApiQuery<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    let name = stream_name(&stream)?;
    let force = query.force.unwrap_or(false);
    if !force {
        // The stages of this server that publish into it: their results (the history that
        // point-in-time lookups and comparisons read) would be gone while they run.
        let writers: Vec<String> = state
            .features
            .sets()
            .into_iter()
            .filter(|set| set.status.is_some() && set.spec.output.domain() == name.as_str())
            .map(|set| format!("feature set `{}`", set.spec.name))
            .chain(
                state
                    .models
                    .list()
                    .into_iter()
                    .filter(|m| m.status.is_some() && m.spec.output.domain() == name.as_str())
                    .map(|m| format!("model `{}`", m.spec.name)),
            )
            .collect();
        if !writers.is_empty() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "stream.in_use",
                format!(
                    "stream `{stream}` is in use: {} of this server publish{} into it (their \
                     results, which point-in-time lookups and comparisons read); remove {} \
                     from runnel.toml and restart, or force the deletion",
                    writers.join(", "),
                    if writers.len() == 1 { "es" } else { "" },
                    if writers.len() == 1 { "it" } else { "them" }
                ),
            )
            .with_member("stages", serde_json::json!(writers)));
        }
    }
    state.runnel.delete_stream(&name, force).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A page of the group's dead-letter queue, filtered.
#[utoipa::path(
    get,
    path = "/v1/groups/{group}/dlq",
    tag = "dlq",
    params(("group" = String, Path), DlqListQuery),
    responses(
        (status = 200, body = DlqPageView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn list_dlq(
    State(state): State<AppState>,
    caller: Caller,
    GroupPath(group): GroupPath,
    ApiQuery(query): ApiQuery<DlqListQuery>,
) -> Result<Json<DlqPageView>, ApiError> {
    caller.require_admin()?;
    let filter = query.filter().to_filter()?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(
            ApiError::bad_request("request.invalid_query", "`limit` must be 1 ..= 1000")
                .with_field("limit", "must be 1 ..= 1000"),
        );
    }
    let page = state
        .runnel
        .dlq_list(&group, &filter, query.after.as_deref(), limit)
        .await?;
    Ok(Json(DlqPageView {
        entries: page.entries.into_iter().map(DlqEntryView::from).collect(),
        next: page.next,
    }))
}

/// One dead-letter entry, with the original event.
#[utoipa::path(
    get,
    path = "/v1/groups/{group}/dlq/{id}",
    tag = "dlq",
    params(("group" = String, Path), ("id" = String, Path, description = "`stream-partition-offset`")),
    responses(
        (status = 200, body = DlqEntryView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group or entry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn get_dlq_entry(
    State(state): State<AppState>,
    caller: Caller,
    GroupPath(group): GroupPath,
    ApiPath((_, id)): ApiPath<(String, String)>,
) -> Result<Json<DlqEntryView>, ApiError> {
    caller.require_admin()?;
    let entry = state.runnel.dlq_get(&group, &id).await?;
    Ok(Json(entry.into()))
}

/// Deliver entries again, to this group only: by `ids`, by `filter`, or `all`.
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/dlq/replay",
    tag = "dlq",
    params(("group" = String, Path)),
    request_body(content = ReplayRequest, content_type = "application/json"),
    responses(
        (status = 200, body = ReplayReportView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn replay_dlq(
    State(state): State<AppState>,
    caller: Caller,
    GroupPath(group): GroupPath,
    ApiJson(request): ApiJson<ReplayRequest>,
) -> Result<Json<ReplayReportView>, ApiError> {
    caller.require_admin()?;
    let selector = match (request.ids, request.filter, request.all) {
        (Some(ids), None, None | Some(false)) => DlqSelector::Ids(ids),
        (None, Some(filter), None | Some(false)) if !filter.is_empty() => {
            DlqSelector::Filter(filter.to_filter()?)
        }
        (None, None, Some(true)) => DlqSelector::All,
        _ => {
            return Err(ApiError::bad_request(
                "dlq.invalid_selector",
                "give exactly one of `ids`, a `filter` with at least one condition, or `all: true`",
            )
            .with_field("body", "exactly one of ids, filter, all"));
        }
    };
    let report = state.runnel.dlq_replay(&group, &selector).await?;
    state.consumers.rebalance(&group).await;
    Ok(Json(report.into()))
}

/// Remove entries matching a filter, or every entry with `all=true`.
#[utoipa::path(
    delete,
    path = "/v1/groups/{group}/dlq",
    tag = "dlq",
    params(("group" = String, Path), DlqPurgeQuery),
    responses(
        (status = 200, body = PurgeResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn purge_dlq(
    State(state): State<AppState>,
    caller: Caller,
    GroupPath(group): GroupPath,
    ApiQuery(query): ApiQuery<DlqPurgeQuery>,
) -> Result<Json<PurgeResponse>, ApiError> {
    caller.require_admin()?;
    let spec = crate::views::DlqFilterSpec {
        event_type: query.event_type,
        class: query.class,
        since: query.since,
        until: query.until,
        reason: query.reason,
    };
    let selector = match (spec.is_empty(), query.all) {
        (true, Some(true)) => DlqSelector::All,
        (false, None | Some(false)) => DlqSelector::Filter(spec.to_filter()?),
        _ => {
            return Err(ApiError::bad_request(
                "dlq.invalid_selector",
                "give a filter (type, class, since, until, reason) or `all=true`, not both and not neither",
            )
            .with_field("query", "a filter or all=true"));
        }
    };
    let purged = state.runnel.dlq_purge(&group, &selector).await?;
    Ok(Json(PurgeResponse { purged }))
}

/// Remove one entry.
#[utoipa::path(
    delete,
    path = "/v1/groups/{group}/dlq/{id}",
    tag = "dlq",
    params(("group" = String, Path), ("id" = String, Path)),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group or entry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn delete_dlq_entry(
    State(state): State<AppState>,
    caller: Caller,
    GroupPath(group): GroupPath,
    ApiPath((_, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    state.runnel.dlq_get(&group, &id).await?;
    match state
        .runnel
        .dlq_purge(&group, &DlqSelector::Ids(vec![id]))
        .await
    {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(RuntimeError::UnknownDlqEntry { .. }) => Ok(StatusCode::NO_CONTENT),
        Err(e) => Err(e.into()),
    }
}
