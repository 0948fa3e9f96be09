//! The schema registry's Confluent-compatible REST API as the server mounts it under
//! `/registry`, through `tower::ServiceExt::oneshot` (no sockets). Paths below are relative
//! to the mount, as a Confluent client configured with `http://host:port/registry` sends them.

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::{Reply, app};
use runnel_server::routes::registry::CONTENT_TYPE;
use serde_json::{Value, json};

/// `path` under `/registry`, with a JSON body labelled as Confluent's clients label it.
async fn call(app: &Router, method: Method, path: &str, body: Option<Value>) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(format!("/registry{path}"));
    let request = match body {
        Some(body) => request
            .header(header::CONTENT_TYPE, CONTENT_TYPE)
            .body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    }
    .unwrap();
    common::call(app, request).await
}

/// `order.placed` version 1: id and amount, closed.
fn order_v1() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "order_id": {"type": "string"},
            "amount": {"type": "number", "minimum": 0}
        },
        "required": ["order_id", "amount"],
        "additionalProperties": false
    })
}

/// `order.placed` version 2: adds `currency` (required, default EUR).
fn order_v2() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "order_id": {"type": "string"},
            "amount": {"type": "number", "minimum": 0},
            "currency": {"type": "string", "default": "EUR", "pattern": "^[A-Z]{3}$"}
        },
        "required": ["order_id", "amount", "currency"],
        "additionalProperties": false
    })
}

/// `order.placed` with `amount` narrowed to an integer: breaks BACKWARD against v1.
fn order_amount_integer() -> Value {
    json!({
        "type": "object",
        "properties": {
            "order_id": {"type": "string"},
            "amount": {"type": "integer", "minimum": 0}
        },
        "required": ["order_id", "amount"],
        "additionalProperties": false
    })
}

fn schema_body(schema: &Value) -> Value {
    json!({"schema": schema.to_string(), "schemaType": "JSON"})
}

fn assert_error(reply: &Reply, status: u16, code: u32) {
    assert_eq!(reply.status.as_u16(), status, "{:?}", reply.body);
    assert_eq!(reply.body["error_code"], code, "{:?}", reply.body);
    assert!(
        reply.body["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert_eq!(reply.content_type, CONTENT_TYPE);
}

#[tokio::test]
async fn register_then_read_back_by_version_and_id() {
    let (_dir, server) = app().await;
    let app = server.router();

    let reply = call(
        &app,
        Method::POST,
        "/subjects/order.placed/versions",
        Some(schema_body(&order_v1())),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type, CONTENT_TYPE);
    assert_eq!(reply.body, json!({"id": 1, "version": 1}));
    let reply = call(
        &app,
        Method::POST,
        "/subjects/order.placed/versions",
        Some(schema_body(&order_v2())),
    )
    .await;
    assert_eq!(reply.body, json!({"id": 2, "version": 2}));

    let reply = call(&app, Method::GET, "/subjects", None).await;
    assert_eq!(reply.body, json!(["order.placed"]));
    let reply = call(&app, Method::GET, "/subjects/order.placed/versions", None).await;
    assert_eq!(reply.body, json!([1, 2]));

    let reply = call(
        &app,
        Method::GET,
        "/subjects/order.placed/versions/latest",
        None,
    )
    .await;
    assert_eq!(reply.body["version"], 2);
    assert_eq!(reply.body["id"], 2);
    assert_eq!(reply.body["subject"], "order.placed");
    assert_eq!(reply.body["schemaType"], "JSON");
    let schema: Value = serde_json::from_str(reply.body["schema"].as_str().unwrap()).unwrap();
    assert_eq!(schema, order_v2());

    let reply = call(
        &app,
        Method::GET,
        "/subjects/order.placed/versions/1/schema",
        None,
    )
    .await;
    assert_eq!(reply.body, order_v1());

    let reply = call(&app, Method::GET, "/schemas/ids/1", None).await;
    assert_eq!(reply.body["schemaType"], "JSON");
    let schema: Value = serde_json::from_str(reply.body["schema"].as_str().unwrap()).unwrap();
    assert_eq!(schema, order_v1());
    let reply = call(&app, Method::GET, "/schemas/ids/1/versions", None).await;
    assert_eq!(
        reply.body,
        json!([{"subject": "order.placed", "version": 1}])
    );
    let reply = call(&app, Method::GET, "/schemas/ids/1/subjects", None).await;
    assert_eq!(reply.body, json!(["order.placed"]));
    let reply = call(&app, Method::GET, "/schemas/types", None).await;
    assert_eq!(reply.body, json!(["JSON"]));
}

#[tokio::test]
async fn lookup_and_missing_things_use_confluent_codes() {
    let (_dir, server) = app().await;
    let app = server.router();
    call(
        &app,
        Method::POST,
        "/subjects/order.placed/versions",
        Some(schema_body(&order_v1())),
    )
    .await;

    let reply = call(
        &app,
        Method::POST,
        "/subjects/order.placed",
        Some(schema_body(&order_v1())),
    )
    .await;
    assert_eq!(reply.body["version"], 1);
    assert_eq!(reply.body["id"], 1);

    assert_error(
        &call(
            &app,
            Method::POST,
            "/subjects/order.placed",
            Some(schema_body(&order_v2())),
        )
        .await,
        404,
        40403,
    );
    assert_error(
        &call(&app, Method::GET, "/subjects/order.unknown/versions", None).await,
        404,
        40401,
    );
    assert_error(
        &call(&app, Method::GET, "/subjects/order.placed/versions/7", None).await,
        404,
        40402,
    );
    assert_error(
        &call(&app, Method::GET, "/subjects/order.placed/versions/0", None).await,
        422,
        42202,
    );
    assert_error(
        &call(
            &app,
            Method::GET,
            "/subjects/order.placed/versions/abc",
            None,
        )
        .await,
        422,
        42202,
    );
    assert_error(
        &call(&app, Method::GET, "/schemas/ids/99", None).await,
        404,
        40403,
    );
    assert_error(
        &call(&app, Method::GET, "/schemas/ids/x", None).await,
        404,
        40403,
    );
    assert_error(
        &call(&app, Method::GET, "/subjects/Order%20Placed/versions", None).await,
        422,
        42208,
    );
    assert_error(
        &call(&app, Method::GET, "/no/such/route", None).await,
        404,
        404,
    );
    assert_error(
        &call(&app, Method::PATCH, "/subjects", None).await,
        405,
        405,
    );
}

#[tokio::test]
async fn incompatible_schemas_are_409_and_compatibility_checks_explain() {
    let (_dir, server) = app().await;
    let app = server.router();
    call(
        &app,
        Method::POST,
        "/subjects/order.placed/versions",
        Some(schema_body(&order_v1())),
    )
    .await;

    let reply = call(
        &app,
        Method::POST,
        "/subjects/order.placed/versions",
        Some(schema_body(&order_amount_integer())),
    )
    .await;
    assert_error(&reply, 409, 409);
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("/properties/amount: type narrowed from number to integer"),
        "{:?}",
        reply.body
    );

    let reply = call(
        &app,
        Method::POST,
        "/compatibility/subjects/order.placed/versions/latest",
        Some(schema_body(&order_v2())),
    )
    .await;
    assert_eq!(reply.body, json!({"is_compatible": true}));
    let reply = call(
        &app,
        Method::POST,
        "/compatibility/subjects/order.placed/versions/1?verbose=True",
        Some(schema_body(&order_amount_integer())),
    )
    .await;
    assert_eq!(
        reply.body,
        json!({"is_compatible": false, "messages": ["/properties/amount: type narrowed from number to integer"]})
    );
    let reply = call(
        &app,
        Method::POST,
        "/compatibility/subjects/order.placed/versions?verbose=true",
        Some(schema_body(&order_v2())),
    )
    .await;
    assert_eq!(reply.body, json!({"is_compatible": true, "messages": []}));
    assert_error(
        &call(
            &app,
            Method::POST,
            "/compatibility/subjects/order.none/versions/latest",
            Some(schema_body(&order_v2())),
        )
        .await,
        404,
        40401,
    );
}

#[tokio::test]
async fn config_global_and_per_subject() {
    let (_dir, server) = app().await;
    let app = server.router();
    assert_eq!(
        call(&app, Method::GET, "/config", None).await.body,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    let reply = call(
        &app,
        Method::PUT,
        "/config",
        Some(json!({"compatibility": "FULL"})),
    )
    .await;
    assert_eq!(reply.body, json!({"compatibility": "FULL"}));
    assert_eq!(
        call(&app, Method::GET, "/config", None).await.body,
        json!({"compatibilityLevel": "FULL"})
    );

    assert_error(
        &call(&app, Method::GET, "/config/order.placed", None).await,
        404,
        40408,
    );
    assert_eq!(
        call(
            &app,
            Method::GET,
            "/config/order.placed?defaultToGlobal=true",
            None
        )
        .await
        .body,
        json!({"compatibilityLevel": "FULL"})
    );
    let reply = call(
        &app,
        Method::PUT,
        "/config/order.placed",
        Some(json!({"compatibility": "none"})),
    )
    .await;
    assert_eq!(reply.body, json!({"compatibility": "NONE"}));
    assert_eq!(
        call(&app, Method::GET, "/config/order.placed", None)
            .await
            .body,
        json!({"compatibilityLevel": "NONE"})
    );
    assert_eq!(
        call(&app, Method::DELETE, "/config/order.placed", None)
            .await
            .body,
        json!({"compatibilityLevel": "NONE"})
    );
    assert_error(
        &call(&app, Method::DELETE, "/config/order.placed", None).await,
        404,
        40408,
    );
    assert_eq!(
        call(&app, Method::DELETE, "/config", None).await.body,
        json!({"compatibilityLevel": "FULL"})
    );
    assert_eq!(
        call(&app, Method::GET, "/config", None).await.body,
        json!({"compatibilityLevel": "BACKWARD"})
    );

    assert_error(
        &call(
            &app,
            Method::PUT,
            "/config",
            Some(json!({"compatibility": "SIDEWAYS"})),
        )
        .await,
        422,
        42203,
    );
    assert_error(
        &call(&app, Method::PUT, "/config", Some(json!({}))).await,
        422,
        42203,
    );
}

#[tokio::test]
async fn deletes_soft_then_permanent() {
    let (_dir, server) = app().await;
    let app = server.router();
    call(
        &app,
        Method::POST,
        "/subjects/order.placed/versions",
        Some(schema_body(&order_v1())),
    )
    .await;
    call(
        &app,
        Method::POST,
        "/subjects/order.placed/versions",
        Some(schema_body(&order_v2())),
    )
    .await;

    assert_error(
        &call(
            &app,
            Method::DELETE,
            "/subjects/order.placed/versions/2?permanent=true",
            None,
        )
        .await,
        404,
        40407,
    );
    assert_eq!(
        call(
            &app,
            Method::DELETE,
            "/subjects/order.placed/versions/2",
            None
        )
        .await
        .body,
        json!(2)
    );
    assert_eq!(
        call(&app, Method::GET, "/subjects/order.placed/versions", None)
            .await
            .body,
        json!([1])
    );
    assert_eq!(
        call(
            &app,
            Method::GET,
            "/subjects/order.placed/versions?deleted=true",
            None
        )
        .await
        .body,
        json!([1, 2])
    );
    assert_eq!(
        call(
            &app,
            Method::GET,
            "/subjects/order.placed/versions/2?deleted=true",
            None
        )
        .await
        .body["version"],
        2
    );
    assert_eq!(
        call(
            &app,
            Method::DELETE,
            "/subjects/order.placed/versions/2?permanent=true",
            None
        )
        .await
        .body,
        json!(2)
    );

    assert_error(
        &call(
            &app,
            Method::DELETE,
            "/subjects/order.placed?permanent=true",
            None,
        )
        .await,
        404,
        40405,
    );
    assert_eq!(
        call(&app, Method::DELETE, "/subjects/order.placed", None)
            .await
            .body,
        json!([1])
    );
    assert_eq!(
        call(&app, Method::GET, "/subjects", None).await.body,
        json!([])
    );
    assert_eq!(
        call(&app, Method::GET, "/subjects?deleted=true", None)
            .await
            .body,
        json!(["order.placed"])
    );
    assert_error(
        &call(&app, Method::DELETE, "/subjects/order.placed", None).await,
        404,
        40404,
    );
    assert_eq!(
        call(
            &app,
            Method::DELETE,
            "/subjects/order.placed?permanent=true",
            None
        )
        .await
        .body,
        json!([1])
    );
    assert_error(
        &call(&app, Method::DELETE, "/subjects/order.placed", None).await,
        404,
        40401,
    );
}

#[tokio::test]
async fn only_json_schemas_are_accepted() {
    let (_dir, server) = app().await;
    let app = server.router();
    let uri = "/subjects/order.placed/versions";
    for kind in ["AVRO", "PROTOBUF"] {
        let reply = call(
            &app,
            Method::POST,
            uri,
            Some(json!({"schema": "{\"type\":\"string\"}", "schemaType": kind})),
        )
        .await;
        assert_error(&reply, 422, 42201);
        assert!(reply.body["message"].as_str().unwrap().contains(kind));
    }
    // No schemaType means JSON here.
    let reply = call(
        &app,
        Method::POST,
        uri,
        Some(json!({"schema": "{\"type\":\"object\"}"})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let reply = call(
        &app,
        Method::POST,
        uri,
        Some(json!({"schema": "{}", "references": [{"name": "x", "subject": "y", "version": 1}]})),
    )
    .await;
    assert_error(&reply, 422, 42201);
}

#[tokio::test]
async fn bad_input_is_a_4xx_never_a_500() {
    let (_dir, server) = app().await;
    let app = server.router();
    let uri = "/registry/subjects/order.placed/versions";
    let raw = |body: &'static str, content_type: &'static str| {
        Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap()
    };
    assert_error(
        &common::call(&app, raw("{not json", "application/json")).await,
        400,
        400,
    );
    assert_error(
        &common::call(&app, raw("", "application/json")).await,
        400,
        400,
    );
    assert_error(
        &common::call(&app, raw("[]", "application/json")).await,
        422,
        42201,
    );
    assert_error(
        &common::call(&app, raw("{}", "application/json")).await,
        422,
        42201,
    );
    assert_error(
        &common::call(&app, raw(r#"{"schema": 5}"#, "application/json")).await,
        422,
        42201,
    );
    assert_error(
        &common::call(
            &app,
            raw(r#"{"schema": "{\"type\": 5}"}"#, "application/json"),
        )
        .await,
        422,
        42201,
    );
    assert_error(
        &common::call(&app, raw(r#"{"schema": "not json"}"#, "application/json")).await,
        422,
        42201,
    );
    assert_error(
        &common::call(&app, raw(r#"{"schema": "[1, 2]"}"#, "application/json")).await,
        422,
        42201,
    );
    assert_error(
        &common::call(
            &app,
            raw(
                r##"{"schema": "{\"$ref\": \"#/nowhere\"}"}"##,
                "application/json",
            ),
        )
        .await,
        422,
        42201,
    );
    assert_error(&common::call(&app, raw("{}", "text/plain")).await, 415, 415);
    // Plain JSON and the registry's own media types are accepted.
    for content_type in [
        "application/json",
        "application/vnd.schemaregistry+json",
        "application/vnd.schemaregistry.v1+json; charset=utf-8",
    ] {
        let reply = common::call(
            &app,
            raw(r#"{"schema": "{\"type\": \"object\"}"}"#, content_type),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{content_type}: {:?}",
            reply.body
        );
    }
}

/// `order.placed` at versions 1 and 2, and the v1 schema under `order.replayed` as well.
async fn two_subjects_sharing_schema_one(app: &Router) {
    for (subject, schema) in [
        ("order.placed", order_v1()),
        ("order.placed", order_v2()),
        ("order.replayed", order_v1()),
    ] {
        let reply = call(
            app,
            Method::POST,
            &format!("/subjects/{subject}/versions"),
            Some(schema_body(&schema)),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    }
}

#[tokio::test]
async fn the_schema_of_a_soft_deleted_version_is_read_with_deleted_true() {
    let (_dir, server) = app().await;
    let app = server.router();
    two_subjects_sharing_schema_one(&app).await;
    call(
        &app,
        Method::DELETE,
        "/subjects/order.placed/versions/2",
        None,
    )
    .await;

    let path = "/subjects/order.placed/versions/2/schema";
    assert_error(&call(&app, Method::GET, path, None).await, 404, 40402);
    let reply = call(&app, Method::GET, &format!("{path}?deleted=true"), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body, order_v2());
}

#[tokio::test]
async fn the_subjects_of_an_id_include_soft_deleted_ones_with_deleted_true() {
    let (_dir, server) = app().await;
    let app = server.router();
    two_subjects_sharing_schema_one(&app).await;
    call(&app, Method::DELETE, "/subjects/order.replayed", None).await;

    let live = call(&app, Method::GET, "/schemas/ids/1/subjects", None).await;
    assert_eq!(live.body, json!(["order.placed"]));
    let all = call(
        &app,
        Method::GET,
        "/schemas/ids/1/subjects?deleted=true",
        None,
    )
    .await;
    assert_eq!(all.body, json!(["order.placed", "order.replayed"]));
}

#[tokio::test]
async fn the_versions_of_an_id_include_soft_deleted_ones_with_deleted_true() {
    let (_dir, server) = app().await;
    let app = server.router();
    two_subjects_sharing_schema_one(&app).await;
    call(
        &app,
        Method::DELETE,
        "/subjects/order.replayed/versions/1",
        None,
    )
    .await;

    let live = call(&app, Method::GET, "/schemas/ids/1/versions", None).await;
    assert_eq!(
        live.body,
        json!([{"subject": "order.placed", "version": 1}])
    );
    let all = call(
        &app,
        Method::GET,
        "/schemas/ids/1/versions?deleted=True",
        None,
    )
    .await;
    assert_eq!(
        all.body,
        json!([
            {"subject": "order.placed", "version": 1},
            {"subject": "order.replayed", "version": 1}
        ])
    );
}
