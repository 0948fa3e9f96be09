//! `GET /v1/models` and `GET /v1/models/{name}`: the `[[models]]` this server runs, each with
//! the version serving now, its circuit breaker's state and its predictions by outcome;
//! `GET /v1/models/{name}/compare`: a live model against its shadow. The list needs the
//! `admin` scope; one model (and its comparison) `admin` or `consume` on its group
//! (`inference-<name>`), as for feature sets.

use axum::Json;
use axum::extract::State;
use runnel_inference::{Comparison, ModelSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use crate::auth::Caller;
use crate::extract::{ApiPath, ApiQuery};
use crate::models::ModelView;
use crate::problem::{ApiError, Problem};
use crate::views::LagView;

/// A model: its spec, the version serving, its breaker and its counts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelInfoView {
    pub name: String,
    /// The events it scores (type pattern) and the type of its predictions.
    pub input: String,
    pub output: String,
    /// The consumer group the stage reads its input as.
    pub group: String,
    /// False once the stage stopped (the server is stopping).
    pub running: bool,
    /// The version serving now.
    pub version: Option<String>,
    /// `closed`, `open` or `half_open`.
    pub breaker: Option<String>,
    /// Predictions by the step that answered: `model`, `cache`, `fallback`.
    #[schema(value_type = Object)]
    pub predictions: Value,
    /// Model calls (batches), failed calls, rows sent.
    #[schema(value_type = Object)]
    pub calls: Value,
    /// The `[[models]]` table, with defaults filled in.
    #[schema(value_type = Object)]
    pub spec: Value,
    /// The group's lag on the input; absent if it could not be read.
    pub lag: Option<LagView>,
}

async fn view(state: &AppState, model: ModelView) -> ModelInfoView {
    let lag = match state.runnel.lag(&model.group).await {
        Ok(lag) => Some(LagView::from(lag)),
        Err(error) => {
            tracing::debug!(group = %model.group, %error, "model: no lag for its group");
            None
        }
    };
    let counts = model.status.as_ref().map(|s| s.counts).unwrap_or_default();
    ModelInfoView {
        name: model.spec.name.clone(),
        input: model.spec.input.clone(),
        output: model.spec.output.as_str().to_string(),
        group: model.group,
        running: model.status.is_some(),
        version: model.status.as_ref().map(|s| s.version.clone()),
        breaker: model
            .status
            .as_ref()
            .map(|s| s.breaker.as_str().to_string()),
        predictions: serde_json::json!({
            "model": counts.model,
            "cache": counts.cache,
            "fallback": counts.fallback,
        }),
        calls: serde_json::json!({
            "calls": counts.calls,
            "failed": counts.failed_calls,
            "rows": counts.rows,
        }),
        spec: serde_json::to_value(&model.spec).unwrap_or(Value::Null),
        lag,
    }
}

/// Every model this server runs.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "models",
    responses(
        (status = 200, body = Vec<ModelInfoView>),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn list_models(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ModelInfoView>>, ApiError> {
    caller.require_admin()?;
    let mut views = Vec::new();
    for model in state.models.list() {
        views.push(view(&state, model).await);
    }
    Ok(Json(views))
}

/// One model.
#[utoipa::path(
    get,
    path = "/v1/models/{name}",
    tag = "models",
    params(("name" = String, Path, description = "The model (`[[models]]` name)")),
    responses(
        (status = 200, body = ModelInfoView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such model (`model.unknown`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn describe_model(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ModelInfoView>, ApiError> {
    caller.require_consume(&runnel_inference::group_name(&name))?;
    let model = known_model(&state, &name)?;
    Ok(Json(view(&state, model).await))
}

/// Model `name`, or 404 `model.unknown` naming the models there are.
fn known_model(state: &AppState, name: &str) -> Result<ModelView, ApiError> {
    state.models.get(name).ok_or_else(|| {
        let names = state.models.names();
        let there = if names.is_empty() {
            "this server runs no models (`[[models]]` in runnel.toml)".to_string()
        } else {
            format!("the models are: {}", names.join(", "))
        };
        ApiError::not_found("model.unknown", format!("no model `{name}`: {there}"))
            .with_field("/name", "unknown model")
    })
}

/// `GET /v1/models/{name}/compare` query.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CompareQuery {
    /// The shadow to compare with (`shadow_of` names the live model). Default: its only one.
    pub shadow: Option<String>,
    /// Predictions read per partition of each model's stream, newest first. Default 10000,
    /// at most 1000000.
    pub last: Option<u64>,
}

/// The live model against its shadow over the inputs both scored: how often their highest
/// output agrees and each output's score delta (shadow − live).
#[utoipa::path(
    get,
    path = "/v1/models/{name}/compare",
    tag = "models",
    params(("name" = String, Path, description = "The live model"), CompareQuery),
    responses(
        (status = 200, description = "The comparison (see docs/inference.md)", body = Object),
        (status = 400, description = "No shadow to compare with (`model.no_shadow`), or a bad query", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such model (`model.unknown`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub async fn compare_models(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<CompareQuery>,
) -> Result<Json<Comparison>, ApiError> {
    caller.require_consume(&runnel_inference::group_name(&name))?;
    let live = known_model(&state, &name)?.spec;
    let last = query.last.unwrap_or(10_000);
    if last == 0 || last > 1_000_000 {
        return Err(ApiError::bad_request(
            "request.invalid_query",
            format!("last={last}: give 1 to 1000000 predictions per partition"),
        )
        .with_field("/last", "out of range"));
    }
    let shadows: Vec<ModelSpec> = state
        .models
        .specs()
        .into_iter()
        .filter(|s| s.shadow_of.as_deref() == Some(name.as_str()))
        .collect();
    let names = || {
        shadows
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let shadow = match (&query.shadow, shadows.len()) {
        (_, 0) => {
            let detail = match &live.shadow_of {
                Some(live_name) => format!(
                    "model `{name}` is itself a shadow of `{live_name}`: compare from the live \
                     model (runnel models compare {live_name} --shadow {name}, or \
                     GET /v1/models/{live_name}/compare?shadow={name})"
                ),
                None => format!(
                    "model `{name}` has no shadow: declare one in runnel.toml \
                     (a [[models]] table with shadow_of = \"{name}\")"
                ),
            };
            return Err(ApiError::bad_request("model.no_shadow", detail));
        }
        (None, 1) => shadows[0].clone(),
        (None, _) => {
            return Err(ApiError::bad_request(
                "model.no_shadow",
                format!(
                    "model `{name}` has several shadows ({}): name one with shadow=",
                    names()
                ),
            )
            .with_field("/shadow", "needed"));
        }
        (Some(wanted), _) => shadows
            .iter()
            .find(|s| &s.name == wanted)
            .cloned()
            .ok_or_else(|| {
                ApiError::bad_request(
                    "model.no_shadow",
                    format!(
                        "`{wanted}` is not a shadow of `{name}`; its shadows are: {}",
                        names()
                    ),
                )
                .with_field("/shadow", "not a shadow of this model")
            })?,
    };
    let comparison = runnel_inference::compare_models(&state.runnel, &live, &shadow, last)
        .await
        .map_err(|e| ApiError::unavailable("backend.unavailable", e.to_string()))?;
    Ok(Json(comparison))
}
