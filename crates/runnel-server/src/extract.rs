//! Extractors whose rejections are problem documents.
//!
//! axum's own `Json`, `Query` and `Path` reject with plain-text bodies and, for JSON that does
//! not fit the type, 422; these wrappers keep the server's one error shape (400, 413 or 415
//! with a `code`) for every malformed request.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use runnel_runtime::GroupName;
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

/// The body, or 413 past the configured limit.
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(body_rejection)
    }
}

pub fn body_rejection(rejection: BytesRejection) -> ApiError {
    // The only reason the body cannot be buffered that a client causes is its size.
    let text = rejection.body_text();
    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE
        || text.contains("length limit")
    {
        ApiError::too_large(format!(
            "the request body is larger than this server accepts ({text})"
        ))
    } else {
        ApiError::bad_request("request.body_unreadable", text)
    }
}

/// A JSON object body (`application/json` or any `+json` type). An empty body reads as `{}`,
/// so requests whose fields all have defaults may omit it.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let Body(bytes) = Body::from_request(req, state).await?;
        parse_json(&headers, &bytes).map(ApiJson)
    }
}

/// Parses a JSON object request body, naming what is wrong. Every request body of the API is
/// an object; serde would also read a struct from an array of its fields in order.
pub fn parse_json<T: DeserializeOwned>(headers: &HeaderMap, bytes: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        if !is_json(headers) {
            return Err(ApiError::unsupported_media_type(
                "expected a JSON body with `Content-Type: application/json`",
            ));
        }
        bytes
    };
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        // Not JSON at all: the parser below says where.
        Some(b) if !b"[\"-0123456789tfn".contains(b) => {}
        _ => {
            return Err(ApiError::bad_request(
                "request.not_an_object",
                "the request body must be a JSON object",
            )
            .with_field("body", "not an object"));
        }
    }
    serde_json::from_slice(body).map_err(|e| {
        let code = if e.is_data() {
            "request.invalid_field"
        } else {
            "request.malformed_json"
        };
        ApiError::bad_request(code, format!("invalid request body: {e}"))
            .with_field("body", e.to_string())
    })
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(runnel_envelope::is_json_content_type)
}

/// Query parameters.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|r| {
                ApiError::bad_request("request.invalid_query", r.body_text())
                    .with_field("query", r.body_text())
            })
    }
}

/// Path parameters.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|r| ApiError::bad_request("request.invalid_path", r.body_text()))
    }
}

/// The `{group}` of a route as a [`GroupName`]: checked once here, for every route that names
/// a group, so `../x` never reaches storage (400 `name.invalid` at `/group`).
pub struct GroupPath(pub GroupName);

impl<S: Send + Sync> FromRequestParts<S> for GroupPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|r| ApiError::bad_request("request.invalid_path", r.body_text()))?;
        let raw = params
            .iter()
            .find_map(|(name, value)| (name == "group").then(|| value.to_string()))
            .unwrap_or_default();
        GroupName::new(raw).map(GroupPath).map_err(|error| {
            let message = error.to_string();
            ApiError::from(error).with_field("/group", message)
        })
    }
}
