//! Limits on a request's head (URL and headers), answered with problem documents.
//!
//! A URL or header section larger than anything Runnel's API needs is refused before any
//! handler runs: 414 `request.uri_too_long` or 431 `request.headers_too_large`, each naming the
//! limit. hyper's own, higher limits stay behind these (see [`crate::accept`]).

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::problem::ApiError;

/// Longest request target (path and query), in bytes.
pub const MAX_URI_BYTES: usize = 16 * 1024;
/// Largest header section (names and values), in bytes.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in one request.
pub const MAX_HEADERS: usize = 200;

/// Middleware: refuses a request whose head is over the limits.
pub async fn request_head(request: Request, next: Next) -> Response {
    let uri = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if uri > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "request.uri_too_long",
            format!("the request URL is {uri} bytes; at most {MAX_URI_BYTES} are accepted"),
        )
        .into_response();
    }
    let headers = request.headers();
    if headers.len() > MAX_HEADERS {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request.headers_too_large",
            format!(
                "the request has {} header fields; at most {MAX_HEADERS} are accepted",
                headers.len()
            ),
        )
        .into_response();
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if bytes > MAX_HEAD_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request.headers_too_large",
            format!(
                "the request's headers are {bytes} bytes; at most {MAX_HEAD_BYTES} are accepted"
            ),
        )
        .into_response();
    }
    next.run(request).await
}
