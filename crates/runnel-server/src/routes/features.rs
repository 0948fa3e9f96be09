//! Feature sets over HTTP: the pipelines this server runs and the online feature store.
//!
//! `GET /v1/features` lists the sets declared in `runnel.toml` with their spec, the watermark
//! of each input partition this server runs, and the lag of their group; `GET
//! /v1/features/{set}/{key}` answers a key's latest value from the store, and `POST
//! /v1/features/{set}` what the result stream said at past moments. Reading needs the
//! `admin` scope or `consume` on the set's group (`features-<set>`).

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use runnel_stages::{
    FeatureValue, PipelineStatus, StoreError, format_time, group_name, read_results,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::AppState;
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiPath};
use crate::features::FeatureSet;
use crate::problem::{ApiError, Problem};
use crate::views::LagView;

/// A feature set: its spec, what this server's pipeline instance is doing, and its group's lag.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FeatureSetView {
    pub name: String,
    /// The `[[features]]` table, with defaults filled in.
    #[schema(value_type = Object)]
    pub spec: Value,
    /// The consumer group the pipeline reads its input as.
    pub group: String,
    /// False once the pipeline stopped (the server is stopping).
    pub running: bool,
    /// The input partitions this server runs, each with its own watermark.
    pub partitions: Vec<FeaturePartitionView>,
    /// Cycles run by this server's instance.
    pub cycles: u64,
    /// The last error of a partition's cycle (it is retried), if any.
    pub last_error: Option<String>,
    /// The group's lag on the input; absent if it could not be read.
    pub lag: Option<LagView>,
}

/// One input partition of a feature pipeline.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FeaturePartitionView {
    pub stream: String,
    pub partition: u32,
    /// The next input offset to process.
    pub next_offset: u64,
    /// The partition's watermark (RFC 3339), absent before its first event.
    pub watermark: Option<String>,
    /// Now minus the watermark, in seconds.
    pub watermark_lag_seconds: Option<f64>,
    /// (key, window) pairs open.
    pub open_windows: u64,
    /// Approximate bytes of window state in memory.
    pub state_bytes: u64,
    /// Events counted in open windows, revising fired windows, sent to the late stream, skipped.
    pub accepted: u64,
    pub late: u64,
    pub too_late: u64,
    pub skipped: u64,
    /// Results emitted.
    pub results: u64,
    /// Results and late events decided but not yet published.
    pub unpublished: u64,
}

/// A key's latest value in a feature set.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FeatureValueView {
    pub set: String,
    pub key: String,
    /// One member per aggregate.
    #[schema(value_type = Object)]
    pub values: Value,
    /// The window the values are of: `[window_start, window_end)`, RFC 3339.
    pub window_start: String,
    pub window_end: String,
    /// 1, then +1 for each re-emission after late events.
    pub revision: u32,
    /// The stage's watermark when the result was emitted (RFC 3339).
    pub watermark: Option<String>,
    /// When the value was written (RFC 3339).
    pub updated_at: String,
    /// Seconds since it was written.
    pub age_seconds: f64,
}

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

impl FeatureValueView {
    fn new(set: &str, key: &str, value: FeatureValue) -> Self {
        let updated_at = i64::try_from(value.updated_at).unwrap_or(i64::MAX);
        Self {
            set: set.to_string(),
            key: key.to_string(),
            values: Value::Object(value.values),
            window_start: format_time(value.window_start),
            window_end: format_time(value.window_end),
            revision: value.revision,
            watermark: value.watermark.map(format_time),
            updated_at: format_time(updated_at),
            age_seconds: (now_micros().saturating_sub(updated_at)).max(0) as f64 / 1e6,
        }
    }
}

fn partitions(status: Option<&PipelineStatus>) -> Vec<FeaturePartitionView> {
    let now = now_micros();
    let Some(status) = status else {
        return Vec::new();
    };
    status
        .partitions
        .iter()
        .map(|((stream, partition), p)| FeaturePartitionView {
            stream: stream.to_string(),
            partition: *partition,
            next_offset: p.next_offset,
            watermark: p.watermark.map(format_time),
            watermark_lag_seconds: p
                .watermark
                .map(|w| (now.saturating_sub(w)).max(0) as f64 / 1e6),
            open_windows: p.open_windows,
            state_bytes: p.state_bytes as u64,
            accepted: p.counters.accepted,
            late: p.counters.late,
            too_late: p.counters.too_late,
            skipped: p.counters.skipped,
            results: p.counters.results,
            unpublished: p.unpublished as u64,
        })
        .collect()
}

async fn view(state: &AppState, set: FeatureSet) -> FeatureSetView {
    let group = group_name(&set.spec.name);
    let lag = match state.runnel.lag(&group).await {
        Ok(lag) => Some(LagView::from(lag)),
        Err(error) => {
            tracing::debug!(%group, %error, "feature set: no lag for its group");
            None
        }
    };
    FeatureSetView {
        name: set.spec.name.clone(),
        spec: serde_json::to_value(&set.spec).unwrap_or(Value::Null),
        group,
        running: set.status.is_some(),
        partitions: partitions(set.status.as_ref()),
        cycles: set.status.as_ref().map_or(0, |s| s.cycles),
        last_error: set.status.and_then(|s| s.last_error),
        lag,
    }
}

/// The feature set `name`, or 404 `feature.unknown_set` naming the sets there are.
fn known_set(state: &AppState, name: &str) -> Result<FeatureSet, ApiError> {
    state.features.set(name).ok_or_else(|| {
        let names = state.features.names();
        let there = if names.is_empty() {
            "this server runs no feature sets (`[[features]]` in runnel.toml)".to_string()
        } else {
            format!("the sets are: {}", names.join(", "))
        };
        ApiError::not_found(
            "feature.unknown_set",
            format!("no feature set `{name}`: {there}"),
        )
        .with_field("/set", "unknown feature set")
    })
}

fn require_read(caller: &Caller, set: &str) -> Result<(), ApiError> {
    caller.require_consume(&group_name(set))
}

/// Every feature set this server runs, with its spec, watermark per partition and lag.
#[utoipa::path(
    get,
    path = "/v1/features",
    tag = "features",
    responses(
        (status = 200, body = Vec<FeatureSetView>),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn list_features(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<FeatureSetView>>, ApiError> {
    caller.require_admin()?;
    let mut views = Vec::new();
    for set in state.features.sets() {
        views.push(view(&state, set).await);
    }
    Ok(Json(views))
}

/// One feature set: spec, watermark per partition, lag.
#[utoipa::path(
    get,
    path = "/v1/features/{set}",
    tag = "features",
    params(("set" = String, Path, description = "A feature set's name")),
    responses(
        (status = 200, body = FeatureSetView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown feature set (`feature.unknown_set`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn describe_feature(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(set): ApiPath<String>,
) -> Result<Json<FeatureSetView>, ApiError> {
    require_read(&caller, &set)?;
    let found = known_set(&state, &set)?;
    Ok(Json(view(&state, found).await))
}

/// A key's latest value in a feature set: the values of its latest window (a later window
/// or a higher revision always wins), the window, revision, watermark and age.
#[utoipa::path(
    get,
    path = "/v1/features/{set}/{key}",
    tag = "features",
    params(
        ("set" = String, Path, description = "A feature set's name"),
        ("key" = String, Path, description = "The entity key (percent-encoded)"),
    ),
    responses(
        (status = 200, body = FeatureValueView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown feature set (`feature.unknown_set`) or no value for the key yet (`feature.unknown_key`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn get_feature_value(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((set, key)): ApiPath<(String, String)>,
) -> Result<Json<FeatureValueView>, ApiError> {
    require_read(&caller, &set)?;
    known_set(&state, &set)?;
    let value = state
        .features
        .store()
        .get(&set, &key)
        .await
        .map_err(|error| match error {
            StoreError::Damaged { .. } => ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "backend.corrupt",
                error.to_string(),
            ),
            _ => ApiError::unavailable("feature.store_unavailable", error.to_string()),
        })?;
    match value {
        Some(value) => Ok(Json(FeatureValueView::new(&set, &key, value))),
        None => Err(ApiError::not_found(
            "feature.unknown_key",
            format!(
                "feature set `{set}` has no value for key `{key}` yet (no window of it has \
                 fired)"
            ),
        )
        .with_field("/key", "no value for this key")),
    }
}

/// `POST /v1/features/{set}`: rows of (key, time) to look up.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PointInTimeRequest {
    pub rows: Vec<PointInTimeRow>,
}

/// One row of a training set: an entity and the moment its label was known.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PointInTimeRow {
    pub key: String,
    /// RFC 3339.
    pub time: String,
}

/// The values of each row as known at its time, in the order asked.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PointInTimeResponse {
    pub rows: Vec<PointInTimeAnswer>,
    /// Results of the set read from its result stream.
    pub results_read: u64,
}

/// One row's answer; `values` and the window are absent when nothing was known at `time`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PointInTimeAnswer {
    pub key: String,
    pub time: String,
    #[schema(value_type = Option<Object>)]
    pub values: Option<Value>,
    pub window_start: Option<String>,
    pub window_end: Option<String>,
    pub revision: Option<u32>,
    /// When the log appended the result (RFC 3339).
    pub published_at: Option<String>,
}

/// The values of each (key, time) row as they were known at that time, from the set's result
/// stream: a result counts when its window ended at or before `time` and it was published at
/// or before `time`; of those, the latest window (then the highest revision) wins. See
/// `docs/features.md` (point-in-time lookups).
#[utoipa::path(
    post,
    path = "/v1/features/{set}",
    tag = "features",
    params(("set" = String, Path, description = "A feature set's name")),
    request_body(content = PointInTimeRequest, content_type = "application/json"),
    responses(
        (status = 200, body = PointInTimeResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown feature set (`feature.unknown_set`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn point_in_time(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(set): ApiPath<String>,
    ApiJson(request): ApiJson<PointInTimeRequest>,
) -> Result<Json<PointInTimeResponse>, ApiError> {
    require_read(&caller, &set)?;
    let found = known_set(&state, &set)?;
    let mut times = Vec::with_capacity(request.rows.len());
    for (i, row) in request.rows.iter().enumerate() {
        let time = DateTime::parse_from_rfc3339(&row.time).map_err(|e| {
            let path = format!("/rows/{i}/time");
            ApiError::bad_request(
                "request.invalid_field",
                format!("{path}: `{}` is not an RFC 3339 time: {e}", row.time),
            )
            .with_field(path, "not an RFC 3339 time")
        })?;
        times.push(time.timestamp_micros());
    }
    let results = read_results(state.runnel.backend().as_ref(), &found.spec)
        .await
        .map_err(|error| ApiError::unavailable("feature.store_unavailable", error.to_string()))?;
    let rows = request
        .rows
        .into_iter()
        .zip(times)
        .map(|(row, time)| {
            let known = results.at(&row.key, time);
            PointInTimeAnswer {
                values: known.map(|r| Value::Object(r.values.clone())),
                window_start: known.map(|r| format_time(r.window_start)),
                window_end: known.map(|r| format_time(r.window_end)),
                revision: known.map(|r| r.revision),
                published_at: known
                    .map(|r| format_time(i64::try_from(r.appended_at).unwrap_or(i64::MAX))),
                key: row.key,
                time: format_time(time),
            }
        })
        .collect();
    Ok(Json(PointInTimeResponse {
        rows,
        results_read: results.len() as u64,
    }))
}
