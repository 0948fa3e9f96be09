//! The OpenAPI document served at `/openapi.json`, generated from the handlers' annotations
//! and the view types, so it cannot drift from the routes.
//!
//! The schema registry's Confluent-compatible routes come from another crate without
//! annotations; they are listed here by hand (one place), with their generic shapes.

use std::sync::OnceLock;

use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, Required, ResponseBuilder, Type};
use utoipa::{Modify, OpenApi};

use crate::routes::{admin, events, features, groups, models, ops, sagas, trace};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Runnel",
        description = "Runnel's HTTP API: CloudEvents 1.0 over HTTP (structured, binary and \
                       batch), consumer groups with pull, ack, nack and Server-Sent Events, \
                       dead-letter queues, streams, feature sets, the schema registry, health and metrics. \
                       Errors are RFC 9457 problem documents with a stable `code`. With API \
                       keys configured, `/v1` and `/registry` need `Authorization: Bearer <key>`."
    ),
    paths(
        events::publish,
        groups::list_groups,
        groups::put_group,
        groups::describe_group,
        groups::delete_group,
        groups::pull,
        groups::ack,
        groups::nack,
        groups::event_stream,
        admin::list_streams,
        admin::describe_stream,
        admin::create_stream,
        admin::delete_stream,
        admin::list_dlq,
        admin::get_dlq_entry,
        admin::replay_dlq,
        admin::purge_dlq,
        admin::delete_dlq_entry,
        trace::get_trace,
        features::list_features,
        features::describe_feature,
        features::get_feature_value,
        features::point_in_time,
        models::list_models,
        models::describe_model,
        models::compare_models,
        sagas::list_sagas,
        sagas::get_saga,
        sagas::retry_saga,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::openapi,
    ),
    modifiers(&Security, &Registry),
    tags(
        (name = "publish", description = "CloudEvents in"),
        (name = "consume", description = "Pull, ack, nack, Server-Sent Events"),
        (name = "groups", description = "Consumer group settings and state"),
        (name = "streams", description = "Streams (admin)"),
        (name = "dlq", description = "Dead-letter queues (admin)"),
        (name = "trace", description = "One workflow's events across streams (admin)"),
        (name = "features", description = "Feature sets: pipelines and the online feature store"),
        (name = "models", description = "Models of `[[models]]`: version, breaker, predictions by outcome"),
        (name = "sagas", description = "Saga instances of `[[sagas]]`: list, show, retry (admin)"),
        (name = "registry", description = "Schema registry, Confluent-compatible"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The registry's routes (see [`crate::routes::registry`]).
const REGISTRY_ROUTES: &[(&str, &[HttpMethod], &str)] = &[
    ("/registry/", &[HttpMethod::Get], "Registry root"),
    (
        "/registry/subjects",
        &[HttpMethod::Get],
        "Subjects (event types)",
    ),
    (
        "/registry/subjects/{subject}",
        &[HttpMethod::Post, HttpMethod::Delete],
        "Look a schema up under a subject; delete a subject",
    ),
    (
        "/registry/subjects/{subject}/versions",
        &[HttpMethod::Get, HttpMethod::Post],
        "Versions of a subject; register a schema",
    ),
    (
        "/registry/subjects/{subject}/versions/{version}",
        &[HttpMethod::Get, HttpMethod::Delete],
        "One version (`latest` or a number); delete it",
    ),
    (
        "/registry/subjects/{subject}/versions/{version}/schema",
        &[HttpMethod::Get],
        "The schema of a version",
    ),
    (
        "/registry/schemas/types",
        &[HttpMethod::Get],
        "Schema types",
    ),
    (
        "/registry/schemas/ids/{id}",
        &[HttpMethod::Get],
        "A schema by global id",
    ),
    (
        "/registry/schemas/ids/{id}/schema",
        &[HttpMethod::Get],
        "The raw schema by global id",
    ),
    (
        "/registry/schemas/ids/{id}/subjects",
        &[HttpMethod::Get],
        "Subjects holding a schema",
    ),
    (
        "/registry/schemas/ids/{id}/versions",
        &[HttpMethod::Get],
        "Subject versions holding a schema",
    ),
    (
        "/registry/compatibility/subjects/{subject}/versions",
        &[HttpMethod::Post],
        "Check a schema against every version",
    ),
    (
        "/registry/compatibility/subjects/{subject}/versions/{version}",
        &[HttpMethod::Post],
        "Check a schema against one version",
    ),
    (
        "/registry/config",
        &[HttpMethod::Get, HttpMethod::Put, HttpMethod::Delete],
        "Global compatibility",
    ),
    (
        "/registry/config/{subject}",
        &[HttpMethod::Get, HttpMethod::Put, HttpMethod::Delete],
        "A subject's compatibility",
    ),
];

struct Registry;

impl Modify for Registry {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, methods, summary) in REGISTRY_ROUTES {
            let params: Vec<_> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .map(|name| {
                    ParameterBuilder::new()
                        .name(name)
                        .parameter_in(ParameterIn::Path)
                        .required(Required::True)
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                        .build()
                })
                .collect();
            for method in *methods {
                let json = || {
                    ContentBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(Type::Object)))
                        .build()
                };
                let mut operation = OperationBuilder::new()
                    .tag("registry")
                    .summary(Some(*summary))
                    .parameters(Some(params.clone()))
                    .response(
                        "200",
                        ResponseBuilder::new()
                            .description("Confluent Schema Registry response")
                            .content("application/vnd.schemaregistry.v1+json", json())
                            .build(),
                    )
                    .response(
                        "4XX",
                        ResponseBuilder::new()
                            .description("Confluent error `{error_code, message}`")
                            .content("application/vnd.schemaregistry.v1+json", json())
                            .build(),
                    );
                if matches!(method, HttpMethod::Post | HttpMethod::Put) {
                    operation = operation.request_body(Some(
                        RequestBodyBuilder::new()
                            .content("application/vnd.schemaregistry.v1+json", json())
                            .content("application/json", json())
                            .build(),
                    ));
                }
                let item = PathItem::new(method.clone(), operation.build());
                match openapi.paths.paths.get_mut(*path) {
                    Some(existing) => existing.merge_operations(item),
                    None => {
                        openapi.paths.paths.insert(path.to_string(), item);
                    }
                }
            }
        }
    }
}

/// The document as JSON text, built once.
pub fn document_json() -> String {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    })
    .clone()
}
