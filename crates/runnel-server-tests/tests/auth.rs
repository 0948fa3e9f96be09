//! API keys: 401 without a key or with an unknown one, 403 for each scope a key lacks, and
//! the refusal to listen beyond loopback without keys.

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use runnel_server::{ApiKeyConfig, ServerConfig, ServerError};
use serde_json::json;

const PUBLISHER: &str = "publisher-key-0000000001";
const CONSUMER: &str = "consumer-key-00000000002";
const ADMIN: &str = "admin-key-00000000000003";

fn keys(config: &mut ServerConfig) {
    let key = |name: &str, key: &str, scopes: &[&str]| ApiKeyConfig {
        name: name.into(),
        key: key.into(),
        scopes: scopes
            .iter()
            .map(|s| s.to_string().try_into().unwrap())
            .collect(),
    };
    config.api_keys = vec![
        key("orders-service", PUBLISHER, &["publish:order*"]),
        key("billing-service", CONSUMER, &["consume:billing*"]),
        key("ops", ADMIN, &["admin"]),
    ];
}

async fn as_key(
    router: &Router,
    key: Option<&str>,
    method: &str,
    path: &str,
    ct: &str,
    body: String,
) -> Reply {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", ct);
    if let Some(key) = key {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    call(router, builder.body(Body::from(body)).unwrap()).await
}

fn order() -> String {
    event("a1", "order.placed", json!(1)).to_string()
}

const CE: &str = "application/cloudevents+json";
const JSON: &str = "application/json";

#[tokio::test]
async fn no_key_or_an_unknown_key_is_401_on_every_protected_route() {
    let (_dir, app) = app_with(keys).await;
    let router = app.router();
    for (method, path, ct, body) in [
        ("POST", "/v1/events", CE, order()),
        (
            "PUT",
            "/v1/groups/billing",
            JSON,
            json!({"filter": "order.*"}).to_string(),
        ),
        ("POST", "/v1/groups/billing/pull", JSON, "{}".to_string()),
        ("GET", "/v1/streams", JSON, String::new()),
        ("GET", "/v1/groups/billing/dlq", JSON, String::new()),
    ] {
        for key in [None, Some("not-a-key-at-all-000000")] {
            let reply = as_key(&router, key, method, path, ct, body.clone()).await;
            assert_problem(&reply, 401, "auth.unauthenticated");
        }
    }
    // The registry answers in the shape Confluent's clients read, not a problem document.
    for key in [None, Some("not-a-key-at-all-000000")] {
        let reply = as_key(
            &router,
            key,
            "GET",
            "/registry/subjects",
            JSON,
            String::new(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
        assert_eq!(reply.content_type, "application/vnd.schemaregistry.v1+json");
        assert_eq!(reply.body["error_code"], 40101, "{}", reply.text);
    }
    let raw = Request::builder()
        .method("GET")
        .uri("/v1/streams")
        .header("authorization", format!("Basic {ADMIN}"))
        .body(Body::empty())
        .unwrap();
    assert_problem(&call(&router, raw).await, 401, "auth.unauthenticated");
    // Operations routes need no key.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(get(&router, path).await.status, StatusCode::OK, "{path}");
    }
    app.close().await.unwrap();
}

#[tokio::test]
async fn publish_scope_covers_matching_streams_only() {
    let (_dir, app) = app_with(keys).await;
    let router = app.router();
    let ok = as_key(&router, Some(PUBLISHER), "POST", "/v1/events", CE, order()).await;
    assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.text);
    let other = event("p1", "payment.charged", json!(1)).to_string();
    assert_problem(
        &as_key(
            &router,
            Some(PUBLISHER),
            "POST",
            "/v1/events",
            CE,
            other.clone(),
        )
        .await,
        403,
        "auth.forbidden",
    );
    // A batch touching one forbidden stream is refused whole.
    let batch = json!([
        event("b1", "order.placed", json!(1)),
        event("b2", "payment.charged", json!(2))
    ])
    .to_string();
    let reply = as_key(
        &router,
        Some(PUBLISHER),
        "POST",
        "/v1/events",
        "application/cloudevents-batch+json",
        batch,
    )
    .await;
    assert_problem(&reply, 403, "auth.forbidden");
    assert_problem(
        &as_key(&router, Some(CONSUMER), "POST", "/v1/events", CE, order()).await,
        403,
        "auth.forbidden",
    );
    assert_eq!(
        as_key(&router, Some(ADMIN), "POST", "/v1/events", CE, other)
            .await
            .status,
        StatusCode::ACCEPTED
    );
    // Publishers neither consume nor administer.
    let put = json!({"filter": "order.*"}).to_string();
    assert_problem(
        &as_key(
            &router,
            Some(PUBLISHER),
            "PUT",
            "/v1/groups/billing",
            JSON,
            put,
        )
        .await,
        403,
        "auth.forbidden",
    );
    assert_problem(
        &as_key(
            &router,
            Some(PUBLISHER),
            "GET",
            "/v1/streams",
            JSON,
            String::new(),
        )
        .await,
        403,
        "auth.forbidden",
    );
    app.close().await.unwrap();
}

#[tokio::test]
async fn consume_scope_covers_matching_groups_only() {
    let (_dir, app) = app_with(keys).await;
    let router = app.router();
    let put = json!({"filter": "order.*"}).to_string();
    let created = as_key(
        &router,
        Some(CONSUMER),
        "PUT",
        "/v1/groups/billing-eu",
        JSON,
        put.clone(),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    for (method, path, body) in [
        ("GET", "/v1/groups/billing-eu", String::new()),
        ("POST", "/v1/groups/billing-eu/pull", "{}".to_string()),
    ] {
        let reply = as_key(&router, Some(CONSUMER), method, path, JSON, body).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{method} {path}: {}",
            reply.text
        );
    }
    for (method, path, body) in [
        ("PUT", "/v1/groups/emails", put.clone()),
        ("POST", "/v1/groups/emails/pull", "{}".to_string()),
        (
            "POST",
            "/v1/groups/emails/ack",
            json!({"receipts": []}).to_string(),
        ),
        ("GET", "/v1/groups/billing-eu/dlq", String::new()),
        (
            "POST",
            "/v1/groups/billing-eu/dlq/replay",
            json!({"all": true}).to_string(),
        ),
        ("GET", "/v1/groups", String::new()),
        ("POST", "/v1/streams", json!({"name": "x"}).to_string()),
    ] {
        let reply = as_key(&router, Some(CONSUMER), method, path, JSON, body).await;
        assert_problem(&reply, 403, "auth.forbidden");
    }
    app.close().await.unwrap();
}

#[tokio::test]
async fn admin_scope_administers_and_guards_registry_writes() {
    let (_dir, app) = app_with(keys).await;
    let router = app.router();
    for path in ["/v1/streams", "/v1/groups"] {
        assert_eq!(
            as_key(&router, Some(ADMIN), "GET", path, JSON, String::new())
                .await
                .status,
            StatusCode::OK
        );
    }
    let schema = json!({"schema": json!({"type": "object"}).to_string()}).to_string();
    let path = "/registry/subjects/order.placed/versions";
    // Any key reads the registry; only admin changes it.
    assert_eq!(
        as_key(
            &router,
            Some(CONSUMER),
            "GET",
            "/registry/subjects",
            JSON,
            String::new()
        )
        .await
        .status,
        StatusCode::OK
    );
    let refused = as_key(&router, Some(CONSUMER), "POST", path, JSON, schema.clone()).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    assert_eq!(
        refused.content_type,
        "application/vnd.schemaregistry.v1+json"
    );
    assert_eq!(refused.body["error_code"], 40301, "{}", refused.text);
    assert_eq!(
        as_key(&router, Some(ADMIN), "POST", path, JSON, schema)
            .await
            .status,
        StatusCode::OK
    );
    app.close().await.unwrap();
}

#[tokio::test]
async fn a_non_loopback_bind_without_keys_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        bind: "0.0.0.0:0".parse().unwrap(),
        ..common::config(&dir)
    };
    match common::open(config.clone()).await {
        Err(ServerError::Config(e)) => assert!(e.to_string().contains("without API keys"), "{e}"),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a non-loopback bind without keys must be refused"),
    }
    let mut with_keys = config;
    keys(&mut with_keys);
    // Keys would cross the network in clear: refused unless said on purpose (or TLS).
    match common::open(with_keys.clone()).await {
        Err(ServerError::Config(e)) => assert!(e.to_string().contains("allow_plaintext"), "{e}"),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a non-loopback plain-HTTP bind with keys must be refused"),
    }
    with_keys.allow_plaintext = true;
    common::open(with_keys)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
}

#[tokio::test]
async fn deleting_a_stream_or_a_group_needs_the_admin_scope() {
    let (_dir, app) = app_with(keys).await;
    let router = app.router();
    for (key, path) in [
        (PUBLISHER, "/v1/streams/order"),
        (CONSUMER, "/v1/streams/order"),
        // Consuming as `billing` is not administering it.
        (CONSUMER, "/v1/groups/billing?force=true"),
        (PUBLISHER, "/v1/groups/billing"),
    ] {
        let reply = as_key(&router, Some(key), "DELETE", path, JSON, String::new()).await;
        assert_problem(&reply, 403, "auth.forbidden");
    }
    for (path, code) in [
        ("/v1/streams/order", "stream.unknown"),
        ("/v1/groups/billing", "group.unknown"),
    ] {
        let reply = as_key(&router, Some(ADMIN), "DELETE", path, JSON, String::new()).await;
        assert_problem(&reply, 404, code);
    }
    app.close().await.unwrap();
}
