//! Operations: health, readiness, metrics, the OpenAPI document, and the answers for
//! unknown routes and methods.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use runnel_backend::Expect;

use super::AppState;
use crate::metrics::{FeaturePartitionSnapshot, GroupSnapshot};
use crate::problem::{ApiError, Problem};
use crate::views::StatusView;

/// The key-value bucket readiness writes to.
const READY_BUCKET: &str = "runnel_server";

/// The process is up and serving.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, body = StatusView))
)]
pub async fn healthz() -> Json<StatusView> {
    Json(StatusView {
        status: "ok".into(),
    })
}

/// The backend is open and accepts a durable write; 503 otherwise (and while shutting down).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, body = StatusView),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<StatusView>, ApiError> {
    if state.shutdown.is_triggered() {
        return Err(ApiError::unavailable(
            "server.shutting_down",
            "the server is shutting down",
        ));
    }
    state
        .runnel
        .backend()
        .kv_put(
            READY_BUCKET,
            "readyz",
            Bytes::from_static(b"ok"),
            Expect::Any,
            Some(Duration::from_secs(60)),
        )
        .await
        .map_err(|e| {
            ApiError::unavailable(
                "server.not_ready",
                format!("the backend refused a write: {e}"),
            )
        })?;
    Ok(Json(StatusView {
        status: "ready".into(),
    }))
}

/// Prometheus text format: publishes, duplicates, consumption, handler latency, failures,
/// retries, lag per group and partition (events and seconds), DLQ depth and alert, and per
/// feature pipeline partition: watermark lag, open windows, state bytes, late events, results.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut snapshots = Vec::new();
    match state.runnel.list_groups().await {
        Ok(groups) => {
            for group in groups {
                let name = group.name;
                let lag = state.runnel.lag(&name).await;
                let dlq = state.runnel.dlq_depth(&name).await;
                if let Err(error) = lag.as_ref().map(|_| ()).and(dlq.as_ref().map(|_| ())) {
                    tracing::warn!(group = %name, %error, "metrics: cannot read the group's lag or DLQ depth");
                }
                snapshots.push(GroupSnapshot {
                    counts: state.consumers.counts(&name).await,
                    lag: lag.ok(),
                    dlq: dlq.ok(),
                    group: name,
                });
            }
        }
        Err(error) => tracing::warn!(%error, "metrics: cannot list groups"),
    }
    let text = state
        .metrics
        .render_with(&snapshots, &feature_snapshots(&state));
    let mut response = (StatusCode::OK, text).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The figures of every input partition the feature pipelines of this server run.
fn feature_snapshots(state: &AppState) -> Vec<FeaturePartitionSnapshot> {
    let now = chrono::Utc::now().timestamp_micros();
    let mut out = Vec::new();
    for set in state.features.sets() {
        let Some(status) = set.status else { continue };
        for ((stream, partition), p) in status.partitions {
            out.push(FeaturePartitionSnapshot {
                feature: set.spec.name.clone(),
                stream: stream.to_string(),
                partition,
                watermark_lag_seconds: p
                    .watermark
                    .map(|w| now.saturating_sub(w).max(0) as f64 / 1e6),
                open_windows: p.open_windows,
                state_bytes: p.state_bytes as u64,
                late_events: p.counters.too_late,
                results: p.counters.results,
            });
        }
    }
    out
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json", body = Object))
)]
pub async fn openapi() -> Response {
    let mut response = crate::openapi::document_json().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("route.unknown", "no such route; see /openapi.json")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "route.method_not_allowed",
        "this route does not take that method; see /openapi.json",
    )
}
