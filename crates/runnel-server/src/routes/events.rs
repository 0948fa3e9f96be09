//! `POST /v1/events`: publishing in the three modes of the CloudEvents HTTP binding.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use runnel_runtime::RuntimeError;

use super::AppState;
use crate::auth::Caller;
use crate::binding;
use crate::extract::Body;
use crate::problem::{ApiError, Problem};
use crate::views::{CloudEventJson, PublishResult};

/// Publish one event (structured or binary mode) or a batch.
///
/// Answered `202` once every event is durable by the server's fsync policy. A batch is
/// validated whole before anything is appended. An id already published within the dedup
/// window appends nothing and answers with the first publish's position (`duplicate: true`).
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "publish",
    params(
        ("ce-specversion" = Option<String>, Header, description = "Binary mode: `1.0`"),
        ("ce-id" = Option<String>, Header, description = "Binary mode: the event id"),
        ("ce-source" = Option<String>, Header, description = "Binary mode: the source URI-reference"),
        ("ce-type" = Option<String>, Header, description = "Binary mode: `domain.fact`"),
    ),
    request_body(
        description = "Structured (`application/cloudevents+json`), batch \
                       (`application/cloudevents-batch+json`) or binary mode (`ce-*` headers; \
                       the body is the data, its Content-Type the `datacontenttype`).",
        content(
            (CloudEventJson = "application/cloudevents+json"),
            (Vec<CloudEventJson> = "application/cloudevents-batch+json"),
            (Object = "application/json"),
        )
    ),
    responses(
        (status = 202, description = "Durable; one result, or an array for a batch", body = PublishResult),
        (status = 400, description = "Malformed JSON or an invalid attribute; `errors` names the fields", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key may not publish to the event's stream", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body or an event is too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not a CloudEvents content type and no `ce-` headers", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let incoming = binding::read_events(&headers, &body, &state.limits)?;
    let streams: BTreeSet<&str> = incoming
        .events
        .iter()
        .map(|e| e.event_type().domain())
        .collect();
    for stream in streams {
        caller.require_publish(stream)?;
    }
    let types: Vec<(String, Option<String>)> = incoming
        .events
        .iter()
        .map(|e| {
            (
                e.event_type().as_str().to_string(),
                e.correlation_id().map(str::to_string),
            )
        })
        .collect();
    let batch = incoming.batch;
    let acks = state
        .runnel
        .publish_batch(incoming.events)
        .await
        .map_err(|e| match e {
            // One event is not a batch to the client: no `/0` in its paths.
            RuntimeError::InBatch { source, .. } if !batch => ApiError::from(*source),
            other => ApiError::from(other),
        })?;
    let published: BTreeSet<_> = acks.iter().map(|a| a.stream.clone()).collect();
    for stream in &published {
        state.consumers.stream_published(stream).await;
    }
    // Counted per (stream, type) and added once each: a batch is mostly one type, and a
    // labelled counter lookup per event showed in publish profiles.
    let mut counts: std::collections::HashMap<(&str, &str, bool), u64> =
        std::collections::HashMap::new();
    for (ack, (event_type, _)) in acks.iter().zip(&types) {
        *counts
            .entry((ack.stream.as_str(), event_type.as_str(), ack.duplicate))
            .or_default() += 1;
    }
    for ((stream, event_type, duplicate), n) in counts {
        if duplicate {
            state.metrics.duplicates(stream, n);
        } else {
            state.metrics.published(stream, event_type, n);
        }
    }
    let results: Vec<PublishResult> = acks
        .into_iter()
        .zip(types)
        .map(|(ack, (_, correlation))| {
            tracing::debug!(
                id = ack.id.as_str(),
                correlationid = correlation.as_deref().unwrap_or_default(),
                stream = %ack.stream,
                partition = ack.partition,
                offset = ack.offset,
                duplicate = ack.duplicate,
                "published"
            );
            PublishResult::from(ack)
        })
        .collect();
    if batch {
        Ok((StatusCode::ACCEPTED, Json(results)).into_response())
    } else {
        match results.into_iter().next() {
            Some(result) => Ok((StatusCode::ACCEPTED, Json(result)).into_response()),
            None => Err(ApiError::unavailable(
                "runtime.closed",
                "the runtime returned no position",
            )),
        }
    }
}
