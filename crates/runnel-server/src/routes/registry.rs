//! The schema registry over HTTP, compatible with Confluent Schema Registry clients (schema
//! type `JSON`), mounted by [`super::router`] under `/registry`.
//!
//! Handlers only parse, call [`SchemaRegistry`] and map the result: every rule lives in
//! `runnel-schema`. Errors use Confluent's body `{"error_code": N, "message": "..."}` with its
//! codes ([`RegistryError::error_code`]) rather than the problem documents of the rest of the
//! API, because Confluent's clients read that shape. Bad input of any shape is a 4xx, never a
//! panic or a 500 (only a failing store is a 500, code 50001). Responses are
//! `application/vnd.schemaregistry.v1+json`; requests may be that, `application/json`,
//! `application/vnd.schemaregistry+json`, `application/octet-stream` or unlabelled.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use runnel_envelope::EventType;
use runnel_schema::{
    CompatibilityMode, InvalidSchema, RegistryError, SchemaId, SchemaRegistry, SubjectVersion,
    Verdict, VersionRef,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// The media type of every response.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Request media types accepted for bodies.
const ACCEPTED_CONTENT_TYPES: &[&str] = &[
    "application/vnd.schemaregistry.v1+json",
    "application/vnd.schemaregistry+json",
    "application/json",
    "application/octet-stream",
];

type Registry = State<Arc<SchemaRegistry>>;
type ApiResult = Result<Response, ConfluentError>;

/// The registry's REST API:
///
/// | method | path | |
/// | --- | --- | --- |
/// | GET | `/subjects` | subjects (`?deleted=true`, `?subjectPrefix=`) |
/// | GET, POST | `/subjects/{s}/versions` | versions; register |
/// | GET, DELETE | `/subjects/{s}/versions/{v\|latest}` | one version (`?deleted=true`); delete (`?permanent=true`) |
/// | GET | `/subjects/{s}/versions/{v}/schema` | the schema alone (`?deleted=true`) |
/// | POST, DELETE | `/subjects/{s}` | look a schema up; delete the subject |
/// | GET | `/schemas/ids/{id}` (`/schema`, `/subjects`, `/versions`) | by global id (holders: `?deleted=true`) |
/// | GET | `/schemas/types` | `["JSON"]` |
/// | POST | `/compatibility/subjects/{s}/versions[/{v}]` | check (`?verbose=true`) |
/// | GET, PUT, DELETE | `/config`, `/config/{s}` | compatibility level |
pub fn router(registry: Arc<SchemaRegistry>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_version_schema),
        )
        .route("/schemas/types", get(schema_types))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_by_id))
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(check_all_versions),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check_version),
        )
        .route(
            "/config",
            get(get_global_config)
                .put(put_global_config)
                .delete(delete_global_config),
        )
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(registry)
}

// ---- errors and responses -------------------------------------------------------------------

/// An error in Confluent's shape: `{"error_code": N, "message": "..."}` with its status.
#[derive(Debug)]
struct ConfluentError {
    status: StatusCode,
    code: u32,
    message: String,
}

impl ConfluentError {
    fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn invalid_schema(error: InvalidSchema) -> Self {
        RegistryError::InvalidSchema(error).into()
    }
}

impl From<RegistryError> for ConfluentError {
    fn from(error: RegistryError) -> Self {
        let status =
            StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(%error, "schema registry request failed");
        }
        Self::new(status, error.error_code(), error.to_string())
    }
}

impl IntoResponse for ConfluentError {
    fn into_response(self) -> Response {
        respond(
            self.status,
            &json!({"error_code": self.code, "message": self.message}),
        )
    }
}

fn respond(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

fn ok(body: &Value) -> ApiResult {
    Ok(respond(StatusCode::OK, body))
}

async fn not_found() -> ConfluentError {
    ConfluentError::new(StatusCode::NOT_FOUND, 404, "HTTP 404 Not Found")
}

async fn method_not_allowed() -> ConfluentError {
    ConfluentError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        405,
        "HTTP 405 Method Not Allowed",
    )
}

// ---- request parsing ------------------------------------------------------------------------

/// Path parameters by name, with a rejection in Confluent's format.
struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ConfluentError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Path(map)| Params(map))
            .map_err(|e| ConfluentError::new(StatusCode::NOT_FOUND, 404, e.body_text()))
    }
}

impl Params {
    fn raw(&self, name: &str) -> &str {
        self.0.get(name).map_or("", String::as_str)
    }

    fn subject(&self) -> Result<EventType, ConfluentError> {
        let raw = self.raw("subject");
        EventType::new(raw).map_err(|e| {
            RegistryError::InvalidSubject {
                subject: raw.chars().take(200).collect(),
                reason: e.to_string(),
            }
            .into()
        })
    }

    fn version(&self) -> Result<VersionRef, ConfluentError> {
        Ok(self.raw("version").parse::<VersionRef>()?)
    }

    fn id(&self) -> Result<SchemaId, ConfluentError> {
        let raw = self.raw("id");
        raw.parse::<u32>().map(SchemaId).map_err(|_| {
            ConfluentError::new(
                StatusCode::NOT_FOUND,
                40403,
                format!(
                    "schema `{}` not found: an id is a positive integer",
                    raw.chars().take(64).collect::<String>()
                ),
            )
        })
    }
}

/// Whether `?name=true` (any case) is in the query.
fn flag(query: &Option<String>, name: &str) -> bool {
    param(query, name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn param<'q>(query: &'q Option<String>, name: &str) -> Option<&'q str> {
    query
        .as_deref()?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The body as JSON, after checking its media type.
fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, ConfluentError> {
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let media = content_type
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !ACCEPTED_CONTENT_TYPES.contains(&media.as_str()) {
            return Err(ConfluentError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                415,
                format!(
                    "unsupported content type `{media}`: send {}",
                    ACCEPTED_CONTENT_TYPES.join(", ")
                ),
            ));
        }
    }
    let body = body
        .map_err(|e| ConfluentError::new(e.status(), e.status().as_u16().into(), e.body_text()))?;
    serde_json::from_slice(&body).map_err(|e| {
        ConfluentError::new(
            StatusCode::BAD_REQUEST,
            400,
            format!("the request body is not valid JSON: {e}"),
        )
    })
}

/// A schema in a request: `{"schema": "...", "schemaType": "JSON", "references": []}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaRequest {
    schema: Option<Value>,
    schema_type: Option<String>,
    references: Option<Vec<Value>>,
    metadata: Option<Value>,
    rule_set: Option<Value>,
}

/// The schema text of a request, checked for what Runnel supports.
fn schema_text(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<String, ConfluentError> {
    let body = json_body(headers, body)?;
    let request: SchemaRequest = serde_json::from_value(body).map_err(|e| {
        ConfluentError::invalid_schema(InvalidSchema::at("", format!("malformed request: {e}")))
    })?;
    // Confluent's default is AVRO; Runnel holds JSON Schema only, so no type means JSON.
    if let Some(kind) = request.schema_type
        && !kind.eq_ignore_ascii_case("JSON")
    {
        return Err(ConfluentError::invalid_schema(
            InvalidSchema::UnsupportedType(kind.chars().take(64).collect()),
        ));
    }
    if request.references.is_some_and(|r| !r.is_empty()) {
        return Err(ConfluentError::invalid_schema(InvalidSchema::Unsupported(
            "references",
        )));
    }
    if request.metadata.is_some_and(|m| !m.is_null()) {
        return Err(ConfluentError::invalid_schema(InvalidSchema::Unsupported(
            "metadata",
        )));
    }
    if request.rule_set.is_some_and(|r| !r.is_null()) {
        return Err(ConfluentError::invalid_schema(InvalidSchema::Unsupported(
            "ruleSet",
        )));
    }
    match request.schema {
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(text),
        Some(Value::String(_)) | None => Err(ConfluentError::invalid_schema(InvalidSchema::at(
            "",
            "the request has no `schema`",
        ))),
        Some(_) => Err(ConfluentError::invalid_schema(InvalidSchema::at(
            "",
            "`schema` must be the schema as a JSON string",
        ))),
    }
}

/// The compatibility level of a config request: `{"compatibility": "FULL"}` (or
/// `compatibilityLevel`).
fn compatibility_of(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<CompatibilityMode, ConfluentError> {
    let body = json_body(headers, body)?;
    let level = body
        .get("compatibility")
        .or_else(|| body.get("compatibilityLevel"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ConfluentError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                42203,
                "the request has no `compatibility`",
            )
        })?;
    level
        .parse::<CompatibilityMode>()
        .map_err(|e| ConfluentError::new(StatusCode::UNPROCESSABLE_ENTITY, 42203, e.to_string()))
}

fn version_body(v: &SubjectVersion) -> Value {
    json!({
        "subject": v.subject.as_str(),
        "version": v.version,
        "id": v.id.0,
        "schemaType": "JSON",
        "schema": v.schema.canonical(),
    })
}

// ---- handlers ---------------------------------------------------------------------------------

async fn root() -> ApiResult {
    ok(&json!({}))
}

async fn list_subjects(State(registry): Registry, RawQuery(query): RawQuery) -> ApiResult {
    let subjects = if flag(&query, "deleted") {
        registry.subjects_including_deleted().await?
    } else {
        registry.subjects().await?
    };
    let prefix = param(&query, "subjectPrefix").unwrap_or("");
    let names: Vec<&str> = subjects
        .iter()
        .map(EventType::as_str)
        .filter(|s| s.starts_with(prefix))
        .collect();
    ok(&json!(names))
}

async fn list_versions(
    State(registry): Registry,
    params: Params,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let subject = params.subject()?;
    let versions = if flag(&query, "deleted") {
        registry.versions_including_deleted(&subject).await?
    } else {
        registry.versions(&subject).await?
    };
    ok(&json!(versions))
}

async fn register(
    State(registry): Registry,
    params: Params,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let subject = params.subject()?;
    let text = schema_text(&headers, body)?;
    let registered = registry.register(&subject, &text).await?;
    ok(&json!({"id": registered.id.0, "version": registered.version}))
}

async fn get_version(
    State(registry): Registry,
    params: Params,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let (subject, version) = (params.subject()?, params.version()?);
    let found = if flag(&query, "deleted") {
        registry.get_including_deleted(&subject, version).await?
    } else {
        registry.get(&subject, version).await?
    };
    ok(&version_body(&found))
}

async fn get_version_schema(
    State(registry): Registry,
    params: Params,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let (subject, version) = (params.subject()?, params.version()?);
    let found = if flag(&query, "deleted") {
        registry.get_including_deleted(&subject, version).await?
    } else {
        registry.get(&subject, version).await?
    };
    ok(found.schema.value())
}

async fn delete_version(
    State(registry): Registry,
    params: Params,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let (subject, version) = (params.subject()?, params.version()?);
    let deleted = registry
        .delete_version(&subject, version, flag(&query, "permanent"))
        .await?;
    ok(&json!(deleted))
}

async fn lookup(
    State(registry): Registry,
    params: Params,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let subject = params.subject()?;
    let text = schema_text(&headers, body)?;
    let found = registry
        .lookup_with(&subject, &text, flag(&query, "deleted"))
        .await?;
    ok(&version_body(&found))
}

async fn delete_subject(
    State(registry): Registry,
    params: Params,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let subject = params.subject()?;
    let deleted = registry
        .delete_subject(&subject, flag(&query, "permanent"))
        .await?;
    ok(&json!(deleted))
}

async fn schema_types() -> ApiResult {
    ok(&json!(["JSON"]))
}

async fn schema_by_id(State(registry): Registry, params: Params) -> ApiResult {
    let doc = registry.by_id(params.id()?).await?;
    ok(&json!({"schema": doc.canonical(), "schemaType": "JSON"}))
}

async fn raw_schema_by_id(State(registry): Registry, params: Params) -> ApiResult {
    let doc = registry.by_id(params.id()?).await?;
    ok(doc.value())
}

/// Who holds schema `id`: live versions, or with `?deleted=true` soft-deleted ones too.
async fn holders_of(
    registry: &SchemaRegistry,
    id: SchemaId,
    query: &Option<String>,
) -> Result<Vec<(EventType, u32)>, ConfluentError> {
    registry.by_id(id).await?;
    Ok(if flag(query, "deleted") {
        registry.subjects_for_id_including_deleted(id).await?
    } else {
        registry.subjects_for_id(id).await?
    })
}

async fn subjects_by_id(
    State(registry): Registry,
    params: Params,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let mut subjects: Vec<String> = holders_of(&registry, params.id()?, &query)
        .await?
        .into_iter()
        .map(|(s, _)| s.to_string())
        .collect();
    subjects.dedup();
    ok(&json!(subjects))
}

async fn versions_by_id(
    State(registry): Registry,
    params: Params,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let pairs: Vec<Value> = holders_of(&registry, params.id()?, &query)
        .await?
        .into_iter()
        .map(|(subject, version)| json!({"subject": subject.as_str(), "version": version}))
        .collect();
    ok(&json!(pairs))
}

fn verdict_body(verdict: Verdict, verbose: bool) -> Value {
    if verbose {
        json!({"is_compatible": verdict.compatible, "messages": verdict.reasons})
    } else {
        json!({"is_compatible": verdict.compatible})
    }
}

async fn check_version(
    State(registry): Registry,
    params: Params,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let (subject, version) = (params.subject()?, params.version()?);
    let text = schema_text(&headers, body)?;
    let verdict = registry
        .check_compatibility(&subject, version, &text)
        .await?;
    ok(&verdict_body(verdict, flag(&query, "verbose")))
}

async fn check_all_versions(
    State(registry): Registry,
    params: Params,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let subject = params.subject()?;
    let text = schema_text(&headers, body)?;
    let verdict = registry.check_compatibility_all(&subject, &text).await?;
    ok(&verdict_body(verdict, flag(&query, "verbose")))
}

async fn get_global_config(State(registry): Registry) -> ApiResult {
    let mode = registry.config(None).await?;
    ok(&json!({"compatibilityLevel": mode}))
}

async fn put_global_config(
    State(registry): Registry,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let mode = compatibility_of(&headers, body)?;
    registry.set_config(None, mode).await?;
    ok(&json!({"compatibility": mode}))
}

async fn delete_global_config(State(registry): Registry) -> ApiResult {
    let previous = registry.delete_config(None).await?;
    let mode = previous.unwrap_or(registry.settings().default_compatibility);
    ok(&json!({"compatibilityLevel": mode}))
}

async fn get_subject_config(
    State(registry): Registry,
    params: Params,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let subject = params.subject()?;
    let mode = match registry.subject_config(&subject).await? {
        Some(mode) => mode,
        None if flag(&query, "defaultToGlobal") => registry.config(None).await?,
        None => {
            return Err(RegistryError::SubjectConfigNotSet {
                subject: subject.to_string(),
            }
            .into());
        }
    };
    ok(&json!({"compatibilityLevel": mode}))
}

async fn put_subject_config(
    State(registry): Registry,
    params: Params,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let subject = params.subject()?;
    let mode = compatibility_of(&headers, body)?;
    registry.set_config(Some(&subject), mode).await?;
    ok(&json!({"compatibility": mode}))
}

async fn delete_subject_config(State(registry): Registry, params: Params) -> ApiResult {
    let subject = params.subject()?;
    match registry.delete_config(Some(&subject)).await? {
        Some(mode) => ok(&json!({"compatibilityLevel": mode})),
        None => Err(RegistryError::SubjectConfigNotSet {
            subject: subject.to_string(),
        }
        .into()),
    }
}
