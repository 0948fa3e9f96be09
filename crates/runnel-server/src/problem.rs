//! RFC 9457 problem documents: the one error type of every handler ([`ApiError`]) and the
//! one place where runtime, envelope and backend errors become HTTP statuses.
//!
//! It exists so that every failure a client can cause reads the same way:
//! `application/problem+json` with `type`, `title`, `status`, `detail` for people, a stable
//! `code` for programs (the runtime's and envelope's own codes where they exist), and for
//! invalid events `errors: [{path, message}]` naming the failing fields. A 5xx is reserved
//! for the server's own failures (storage, shutdown), never for what a client sent.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use runnel_backend::BackendError;
use runnel_envelope::EnvelopeError;
use runnel_runtime::RuntimeError;
use runnel_schema::{RegistryError, ValidationError};
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of problem documents.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Where in the request a problem is: a JSON pointer into the body (`/type`, `/2/id`), a
/// header name (`ce-type`), or `body`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldProblem {
    pub path: String,
    pub message: String,
}

/// A problem document (RFC 9457).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:runnel:problem:<code>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code, e.g. `envelope.missing_attribute`, `group.unknown`.
    pub code: String,
    /// The failing fields, for invalid input.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldProblem>,
    /// More members for specific problems (e.g. `unknown` and `expired` receipts).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The error every handler returns.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
    detail: String,
    errors: Vec<FieldProblem>,
    extra: Option<serde_json::Map<String, serde_json::Value>>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        detail: impl Into<String>,
    ) -> Self {
        let code = code.into();
        debug_assert!(
            crate::codes::is_known(&code),
            "error code `{code}` is not in crate::codes::ERROR_CODES"
        );
        Self {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            extra: None,
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "auth.unauthenticated", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "auth.forbidden", detail)
    }

    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "request.unsupported_media_type",
            detail,
        )
    }

    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "request.too_large", detail)
    }

    pub fn unavailable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail)
    }

    /// Adds a failing field.
    pub fn with_field(mut self, path: impl Into<String>, message: impl Into<String>) -> Self {
        self.errors.push(FieldProblem {
            path: path.into(),
            message: message.into(),
        });
        self
    }

    /// Adds an extension member.
    pub fn with_member(mut self, name: &str, value: serde_json::Value) -> Self {
        self.extra
            .get_or_insert_with(Default::default)
            .insert(name.to_string(), value);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &str {
        &self.code
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        Problem {
            problem_type: format!("urn:runnel:problem:{}", self.code),
            title: self
                .status
                .canonical_reason()
                .unwrap_or("Error")
                .to_string(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_string(),
            errors: self.errors.clone(),
            extra: self.extra.clone(),
        }
    }

    /// An envelope error of one event; `locate` turns an attribute name into a path (a JSON
    /// pointer in structured mode, a header name in binary mode).
    pub fn from_envelope(error: &EnvelopeError, locate: &dyn Fn(&str) -> String) -> Self {
        match error {
            EnvelopeError::InBatch { index, source } => {
                let inner =
                    Self::from_envelope(source, &|attr| format!("/{index}{}", locate(attr)));
                Self {
                    detail: error.to_string(),
                    ..inner
                }
            }
            EnvelopeError::TooLarge { .. } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                error.code(),
                error.to_string(),
            ),
            _ => {
                let mut api = Self::bad_request(error.code(), error.to_string());
                if let Some(attribute) = error.attribute() {
                    api = api.with_field(locate(attribute), error.to_string());
                } else if matches!(error, EnvelopeError::MalformedJson { .. }) {
                    api = api.with_field("body", error.to_string());
                }
                api
            }
        }
    }
}

/// A JSON pointer to a member of the body.
pub fn pointer(attribute: &str) -> String {
    format!("/{attribute}")
}

impl From<RuntimeError> for ApiError {
    fn from(error: RuntimeError) -> Self {
        Self::from_runtime(&error)
    }
}

impl ApiError {
    fn from_runtime(error: &RuntimeError) -> Self {
        let code = error.code();
        let status = match error {
            RuntimeError::Envelope(e) => return Self::from_envelope(e, &pointer),
            RuntimeError::InBatch { index, source } => {
                let inner = Self::from_runtime(source);
                let errors = inner
                    .errors
                    .iter()
                    .map(|f| FieldProblem {
                        path: format!("/{index}{}", f.path),
                        message: f.message.clone(),
                    })
                    .collect();
                return Self {
                    errors,
                    detail: error.to_string(),
                    ..inner
                };
            }
            RuntimeError::Backend(e) => backend_status(e),
            RuntimeError::Schema(ValidationError::Invalid { errors, .. }) => {
                let mut api = Self::bad_request(code, error.to_string());
                for field in errors {
                    api = api.with_field(format!("/data{}", field.path), field.message.clone());
                }
                return api;
            }
            RuntimeError::InvalidForLatest { version, source } => {
                let mut api = Self::bad_request(code, error.to_string());
                if let ValidationError::Invalid { errors, .. } = source {
                    for field in errors {
                        api = api.with_field(format!("/data{}", field.path), field.message.clone());
                    }
                }
                return api.with_field(
                    "/schemaversion",
                    format!(
                        "not set, so the data was validated against version {version}, the \
                         latest; set it to the version the data follows"
                    ),
                );
            }
            RuntimeError::Schema(
                ValidationError::NoSchema { .. } | ValidationError::SubjectDeleted { .. },
            ) => {
                return Self::bad_request(code, error.to_string())
                    .with_field("/type", error.to_string());
            }
            // The event names a schema version the registry does not have: the client's error.
            RuntimeError::Schema(ValidationError::Registry(
                RegistryError::VersionNotFound { .. } | RegistryError::SubjectNotFound { .. },
            )) => {
                return Self::bad_request(code, error.to_string())
                    .with_field("/schemaversion", error.to_string());
            }
            RuntimeError::Schema(ValidationError::Registry(_)) => StatusCode::SERVICE_UNAVAILABLE,
            RuntimeError::DataNotJson { .. } => {
                return Self::bad_request(code, error.to_string())
                    .with_field("/datacontenttype", error.to_string());
            }
            RuntimeError::Pattern(_) => StatusCode::BAD_REQUEST,
            RuntimeError::Name(_) => StatusCode::BAD_REQUEST,
            RuntimeError::UnknownGroup(_) => StatusCode::NOT_FOUND,
            RuntimeError::GroupInUse { consumers, .. } => {
                return Self::new(StatusCode::CONFLICT, code, error.to_string())
                    .with_member("consumers", serde_json::json!(consumers));
            }
            RuntimeError::StreamInUse { groups, .. } => {
                return Self::new(StatusCode::CONFLICT, code, error.to_string())
                    .with_member("groups", serde_json::json!(groups));
            }
            RuntimeError::InternalGroupRunning { consumers, .. } => {
                return Self::new(StatusCode::CONFLICT, code, error.to_string())
                    .with_member("consumers", serde_json::json!(consumers));
            }
            RuntimeError::InternalGroup { .. } | RuntimeError::InternalStream { .. } => {
                StatusCode::CONFLICT
            }
            RuntimeError::UnknownDlqEntry { .. } => StatusCode::NOT_FOUND,
            RuntimeError::GroupConfig(_) => StatusCode::BAD_REQUEST,
            RuntimeError::StreamRetentionDiffers { .. } => StatusCode::CONFLICT,
            RuntimeError::GroupSetting { field, message } => {
                return Self::bad_request(code, error.to_string())
                    .with_field(format!("/{field}"), message.clone());
            }
            RuntimeError::Serialize(_) => StatusCode::INTERNAL_SERVER_ERROR,
            RuntimeError::FirstPublishFailed { .. } => StatusCode::SERVICE_UNAVAILABLE,
            RuntimeError::Closed => StatusCode::SERVICE_UNAVAILABLE,
        };
        if status.is_server_error() {
            tracing::error!(%error, code, "request failed on the server's side");
        }
        Self::new(status, code, error.to_string())
    }
}

impl From<BackendError> for ApiError {
    fn from(error: BackendError) -> Self {
        RuntimeError::Backend(error).into()
    }
}

fn backend_status(error: &BackendError) -> StatusCode {
    match error {
        BackendError::UnknownStream(_) | BackendError::UnknownPartition { .. } => {
            StatusCode::NOT_FOUND
        }
        BackendError::StreamExists { .. } | BackendError::CasConflict { .. } => {
            StatusCode::CONFLICT
        }
        BackendError::OffsetOutOfRange { .. } | BackendError::Invalid(_) => StatusCode::BAD_REQUEST,
        BackendError::StorageFull(_) => StatusCode::INSUFFICIENT_STORAGE,
        BackendError::Closed | BackendError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        BackendError::Corrupt(_) | BackendError::Engine(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"runnel\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_errors_point_into_the_batch() {
        let inner = EnvelopeError::MissingAttribute { attribute: "type" };
        let error = EnvelopeError::InBatch {
            index: 2,
            source: Box::new(inner),
        };
        let api = ApiError::from_envelope(&error, &pointer);
        assert_eq!(api.status(), StatusCode::BAD_REQUEST);
        assert_eq!(api.code(), "envelope.missing_attribute");
        assert_eq!(api.problem().errors[0].path, "/2/type");
    }

    #[test]
    fn runtime_errors_map_to_client_and_server_statuses() {
        let cases = [
            (RuntimeError::UnknownGroup("g".into()), 404, "group.unknown"),
            (
                RuntimeError::GroupConfig("bad".into()),
                400,
                "group.invalid_config",
            ),
            (RuntimeError::Closed, 503, "runtime.closed"),
        ];
        for (error, status, code) in cases {
            let api = ApiError::from(error);
            assert_eq!(api.status().as_u16(), status);
            assert_eq!(api.code(), code);
        }
    }
}
