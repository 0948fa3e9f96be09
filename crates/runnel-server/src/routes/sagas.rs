//! `GET /v1/sagas`, `GET /v1/sagas/{id}` and `POST /v1/sagas/{id}/retry`: the instances of
//! the server's `[[sagas]]`, one instance with its steps and timeline, and the retry of a
//! stuck one. Thin calls of [`runnel_saga::Sagas`]; all need the `admin` scope: instances
//! carry the data of every stream their steps touch.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use runnel_saga::{InstanceSummary, SagaError, SagaQuery, SagaState};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use crate::auth::Caller;
use crate::extract::{ApiPath, ApiQuery};
use crate::problem::{ApiError, Problem};

/// Which instances to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SagaListQuery {
    /// Of this saga type only (a `[[sagas]]` name).
    #[serde(rename = "type")]
    pub saga: Option<String>,
    /// In this state only: `running`, `compensating`, `completed`, `compensated` or `stuck`.
    pub state: Option<String>,
    /// After this instance id (the last of the previous page); needs `type`.
    pub after: Option<String>,
    /// At most this many (default and cap 1000).
    pub limit: Option<usize>,
}

/// A page of instances, by saga type then id.
#[derive(Debug, Serialize, ToSchema)]
pub struct SagaListView {
    /// Each instance's id, saga, state, reason, trigger type, current step and times (µs
    /// since the epoch).
    #[schema(value_type = Vec<Object>)]
    pub instances: Vec<InstanceSummary>,
}

fn state_named(name: &str) -> Result<SagaState, ApiError> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).map_err(|_| {
        ApiError::bad_request(
            "request.invalid_query",
            format!(
                "state `{name}` is not one of running, compensating, completed, compensated, stuck"
            ),
        )
        .with_field("state", "unknown state")
    })
}

fn saga_error(error: SagaError) -> ApiError {
    match error {
        SagaError::NotFound(id) => {
            ApiError::not_found("saga.not_found", format!("no saga instance `{id}`"))
        }
        SagaError::UnknownSaga(name) => ApiError::not_found(
            "saga.unknown",
            format!("no saga `{name}` is declared on this server ([[sagas]] in runnel.toml)"),
        ),
        SagaError::NotStuck(not_stuck) => ApiError::new(
            StatusCode::CONFLICT,
            "saga.not_stuck",
            not_stuck.to_string(),
        ),
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "saga.failed",
            other.to_string(),
        ),
    }
}

/// The server's sagas, asked for instance `id`: with no `[[sagas]]` no instance exists.
fn sagas_holding<'a>(state: &'a AppState, id: &str) -> Result<&'a runnel_saga::Sagas, ApiError> {
    crate::sagas::view(state).ok_or_else(|| saga_error(SagaError::NotFound(id.to_string())))
}

/// Instances of the server's sagas.
#[utoipa::path(
    get,
    path = "/v1/sagas",
    tag = "sagas",
    params(SagaListQuery),
    responses(
        (status = 200, body = SagaListView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No saga of that type (`saga.unknown`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn list_sagas(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<SagaListQuery>,
) -> Result<Json<SagaListView>, ApiError> {
    caller.require_admin()?;
    let saga_state = query.state.as_deref().map(state_named).transpose()?;
    let Some(sagas) = crate::sagas::view(&state) else {
        return match query.saga {
            Some(name) => Err(saga_error(SagaError::UnknownSaga(name))),
            None => Ok(Json(SagaListView {
                instances: Vec::new(),
            })),
        };
    };
    let instances = sagas
        .list(&SagaQuery {
            saga: query.saga,
            state: saga_state,
            after: query.after,
            limit: query.limit,
        })
        .await
        .map_err(saga_error)?;
    Ok(Json(SagaListView { instances }))
}

/// One instance: each step's status, attempts, command in flight, result, error and times,
/// and its timeline (every command, reply, timeout, retry, compensation and the outcome).
#[utoipa::path(
    get,
    path = "/v1/sagas/{id}",
    tag = "sagas",
    params(("id" = String, Path, description = "The instance id (the `correlationid` of its commands)")),
    responses(
        (status = 200, description = "The instance", body = Object),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such instance (`saga.not_found`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn get_saga(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<runnel_saga::Instance>, ApiError> {
    caller.require_admin()?;
    let sagas = sagas_holding(&state, &id)?;
    sagas.get(&id).await.map(Json).map_err(saga_error)
}

/// Retries a stuck instance: its failed compensation gets a fresh set of attempts (new
/// command ids), the first sent now.
#[utoipa::path(
    post,
    path = "/v1/sagas/{id}/retry",
    tag = "sagas",
    params(("id" = String, Path, description = "The stuck instance's id")),
    responses(
        (status = 200, description = "The instance after the retry", body = Object),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such instance (`saga.not_found`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The instance is not stuck (`saga.not_stuck`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn retry_saga(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<runnel_saga::Instance>, ApiError> {
    caller.require_admin()?;
    let sagas = sagas_holding(&state, &id)?;
    sagas.retry(&id).await.map(Json).map_err(saga_error)
}
