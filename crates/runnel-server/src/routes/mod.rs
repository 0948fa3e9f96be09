//! The router: every route, its handler module, and the shared state handlers see.
//!
//! Handlers only parse, check the caller's scope, call the runtime and map the result; the
//! rules live in `runnel-runtime` (and the CloudEvents binding in [`crate::binding`]). The
//! schema registry's routes ([`registry`]) speak Confluent's API and error format.
//! Health, readiness, metrics and the OpenAPI document need no key; everything under `/v1`
//! and `/registry` goes through [`crate::auth::authenticate`].

pub mod admin;
pub mod events;
pub mod features;
pub mod groups;
pub mod models;
pub mod ops;
pub mod registry;
pub mod sagas;
pub mod trace;

use std::ops::Deref;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post, put};
use runnel_envelope::Limits;
use runnel_runtime::Runnel;
use runnel_saga::Sagas;
use runnel_schema::SchemaRegistry;

use crate::auth::{self, Keys};
use crate::config::ServerConfig;
use crate::consume::{Consumers, Shutdown};
use crate::features::Features;
use crate::metrics::Metrics;
use crate::models::Models;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Shared>);

pub struct Shared {
    pub runnel: Runnel,
    pub registry: Arc<SchemaRegistry>,
    pub config: ServerConfig,
    pub limits: Limits,
    pub consumers: Consumers,
    pub metrics: Arc<Metrics>,
    pub shutdown: Shutdown,
    pub keys: Arc<Keys>,
    pub features: Features,
    /// The `[[models]]` stages the binary started.
    pub models: Models,
    /// The `[[sagas]]` the server runs, once [`crate::App::run_sagas`] was called.
    pub sagas: std::sync::OnceLock<Sagas>,
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The feature sets' routes (kept apart: `features.rs` holds their handlers).
fn features_router(state: AppState) -> Router {
    Router::new()
        .route("/v1/features", get(features::list_features))
        .route(
            "/v1/features/{set}",
            get(features::describe_feature).post(features::point_in_time),
        )
        .route("/v1/features/{set}/{key}", get(features::get_feature_value))
        .with_state(state)
}

/// Every route of the server.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/events", post(events::publish))
        .route(
            "/v1/streams",
            get(admin::list_streams).post(admin::create_stream),
        )
        .route(
            "/v1/streams/{stream}",
            get(admin::describe_stream).delete(admin::delete_stream),
        )
        .route("/v1/groups", get(groups::list_groups))
        .route(
            "/v1/groups/{group}",
            put(groups::put_group)
                .get(groups::describe_group)
                .delete(groups::delete_group),
        )
        .route("/v1/groups/{group}/pull", post(groups::pull))
        .route("/v1/groups/{group}/ack", post(groups::ack))
        .route("/v1/groups/{group}/nack", post(groups::nack))
        .route("/v1/groups/{group}/events", get(groups::event_stream))
        .route(
            "/v1/groups/{group}/dlq",
            get(admin::list_dlq).delete(admin::purge_dlq),
        )
        .route("/v1/groups/{group}/dlq/replay", post(admin::replay_dlq))
        .route(
            "/v1/groups/{group}/dlq/{id}",
            get(admin::get_dlq_entry).delete(admin::delete_dlq_entry),
        )
        .route("/v1/trace/{correlationid}", get(trace::get_trace))
        .route("/v1/models", get(models::list_models))
        .route("/v1/models/{name}", get(models::describe_model))
        .route("/v1/models/{name}/compare", get(models::compare_models))
        .route("/v1/sagas", get(sagas::list_sagas))
        .route("/v1/sagas/{id}", get(sagas::get_saga))
        .route("/v1/sagas/{id}/retry", post(sagas::retry_saga))
        .with_state(state.clone())
        .merge(features_router(state.clone()));
    let registry = registry::router(state.registry.clone()).layer(from_fn(auth::registry_guard));
    let protected = api
        .nest("/registry", registry)
        .layer(from_fn_with_state(state.keys.clone(), auth::authenticate));
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .with_state(state.clone())
        .merge(protected)
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(from_fn(crate::limits::request_head))
}
