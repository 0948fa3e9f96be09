//! A battery of bad requests against a real server over HTTP: each gets its 4xx problem
//! document with a stable code, never a 5xx, and the server keeps serving.

mod common;

use common::*;
use serde_json::json;

struct Case {
    what: &'static str,
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
    /// The failing field, when the problem names one.
    field: Option<&'static str>,
}

fn case(
    what: &'static str,
    method: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        what,
        method,
        path,
        headers: content_type
            .map(|ct| vec![("content-type", ct.as_bytes().to_vec())])
            .unwrap_or_default(),
        body: body.into(),
        status,
        code,
        field: None,
    }
}

impl Case {
    fn field(mut self, path: &'static str) -> Self {
        self.field = Some(path);
        self
    }
    /// Sets a header, replacing one of the same name.
    fn header(mut self, name: &'static str, value: &[u8]) -> Self {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.to_vec()));
        self
    }
}

const CE: Option<&str> = Some("application/cloudevents+json");
const BATCH: Option<&str> = Some("application/cloudevents-batch+json");
const JSON: Option<&str> = Some("application/json");

fn binary(
    what: &'static str,
    content_type: Option<&'static str>,
    body: &[u8],
    status: u16,
    code: &'static str,
) -> Case {
    let mut c = case(
        what,
        "POST",
        "/v1/events",
        content_type,
        body.to_vec(),
        status,
        code,
    );
    for (name, value) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "b1"),
        ("ce-source", "/t"),
        ("ce-type", "order.placed"),
    ] {
        c.headers.push((name, value.as_bytes().to_vec()));
    }
    c
}

fn battery() -> Vec<Case> {
    let valid = |extra: serde_json::Value| {
        let mut e = event("x1", "order.placed", json!({"n": 1}));
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                e.as_object_mut().unwrap().remove(k);
            } else {
                e[k] = v.clone();
            }
        }
        e.to_string()
    };
    let big_data = "x".repeat(20 * 1024);
    vec![
        case(
            "malformed JSON",
            "POST",
            "/v1/events",
            CE,
            r#"{"specversion": "1.0","#,
            400,
            "envelope.malformed_json",
        )
        .field("body"),
        case(
            "truncated batch",
            "POST",
            "/v1/events",
            BATCH,
            r#"[{"specversion":"1.0","id":"a""#,
            400,
            "envelope.malformed_json",
        ),
        case(
            "structured body is an array",
            "POST",
            "/v1/events",
            CE,
            "[]",
            400,
            "envelope.not_an_object",
        ),
        case(
            "batch body is an object",
            "POST",
            "/v1/events",
            BATCH,
            "{}",
            400,
            "envelope.not_an_array",
        ),
        case(
            "empty batch",
            "POST",
            "/v1/events",
            BATCH,
            "[]",
            400,
            "publish.empty_batch",
        ),
        case(
            "text/plain without ce- headers",
            "POST",
            "/v1/events",
            Some("text/plain"),
            "hello",
            415,
            "request.unsupported_media_type",
        ),
        case(
            "no content type at all",
            "POST",
            "/v1/events",
            None,
            "{}",
            415,
            "request.unsupported_media_type",
        ),
        case(
            "another CloudEvents format",
            "POST",
            "/v1/events",
            Some("application/cloudevents+xml"),
            "<e/>",
            415,
            "request.unsupported_media_type",
        ),
        case(
            "missing source",
            "POST",
            "/v1/events",
            CE,
            valid(json!({"source": null})),
            400,
            "envelope.missing_attribute",
        )
        .field("/source"),
        case(
            "NUL in source",
            "POST",
            "/v1/events",
            CE,
            valid(json!({"source": "/shop\u{0000}x"})),
            400,
            "envelope.invalid_attribute",
        )
        .field("/source"),
        case(
            "space in source",
            "POST",
            "/v1/events",
            CE,
            valid(json!({"source": "/my shop"})),
            400,
            "envelope.invalid_attribute",
        )
        .field("/source"),
        case(
            "missing specversion",
            "POST",
            "/v1/events",
            CE,
            valid(json!({"specversion": null})),
            400,
            "envelope.missing_attribute",
        )
        .field("/specversion"),
        case(
            "type not domain.fact",
            "POST",
            "/v1/events",
            CE,
            valid(json!({"type": "OrderPlaced"})),
            400,
            "envelope.invalid_event_type",
        )
        .field("/type"),
        case(
            "empty id",
            "POST",
            "/v1/events",
            CE,
            valid(json!({"id": ""})),
            400,
            "envelope.invalid_attribute",
        )
        .field("/id"),
        case(
            "id is a number",
            "POST",
            "/v1/events",
            CE,
            valid(json!({"id": 7})),
            400,
            "envelope.wrong_attribute_type",
        )
        .field("/id"),
        case(
            "specversion 0.3",
            "POST",
            "/v1/events",
            CE,
            valid(json!({"specversion": "0.3"})),
            400,
            "envelope.unsupported_specversion",
        )
        .field("/specversion"),
        case(
            "bad traceparent",
            "POST",
            "/v1/events",
            CE,
            valid(json!({"traceparent": "00-xyz"})),
            400,
            "envelope.invalid_attribute",
        )
        .field("/traceparent"),
        case(
            "bad time",
            "POST",
            "/v1/events",
            CE,
            valid(json!({"time": "yesterday"})),
            400,
            "envelope.invalid_attribute",
        )
        .field("/time"),
        case(
            "bad extension name",
            "POST",
            "/v1/events",
            CE,
            valid(json!({"Bad_Name": "x"})),
            400,
            "envelope.invalid_extension_name",
        )
        .field("/Bad_Name"),
        case(
            "invalid event inside a batch",
            "POST",
            "/v1/events",
            BATCH,
            format!("[{}, {}]", valid(json!({})), valid(json!({"id": 1}))),
            400,
            "envelope.wrong_attribute_type",
        )
        .field("/1/id"),
        case(
            "body over max_body_bytes",
            "POST",
            "/v1/events",
            CE,
            vec![b' '; 80 * 1024],
            413,
            "request.too_large",
        ),
        case(
            "event over max_event_bytes",
            "POST",
            "/v1/events",
            CE,
            valid(json!({"data": big_data})),
            413,
            "envelope.too_large",
        ),
        case(
            "invalid UTF-8 in a structured body",
            "POST",
            "/v1/events",
            CE,
            b"{\"specversion\":\"1.0\",\"id\":\"\xff\xfe\"}".to_vec(),
            400,
            "envelope.malformed_json",
        ),
        binary(
            "binary mode: bad JSON body",
            JSON,
            b"{nope",
            400,
            "envelope.malformed_json",
        )
        .field("body"),
        binary(
            "binary mode: text body not UTF-8",
            Some("text/plain"),
            b"\xff\xfe",
            400,
            "publish.invalid_utf8",
        )
        .field("body"),
        binary(
            "binary mode: bad type",
            JSON,
            b"{}",
            400,
            "envelope.invalid_event_type",
        )
        .header("ce-type", b"Order")
        .field("ce-type"),
        binary(
            "binary mode: header not UTF-8",
            JSON,
            b"{}",
            400,
            "envelope.invalid_attribute",
        )
        .header("ce-comexample", b"\xff\xfe")
        .field("ce-comexample"),
        binary(
            "binary mode: broken percent-encoding",
            JSON,
            b"{}",
            400,
            "envelope.invalid_attribute",
        )
        .header("ce-comexample", b"%G1")
        .field("ce-comexample"),
        binary(
            "binary mode: datacontenttype as a header",
            JSON,
            b"{}",
            400,
            "envelope.invalid_attribute",
        )
        .header("ce-datacontenttype", b"text/plain"),
        case(
            "binary mode: only some ce- headers",
            "POST",
            "/v1/events",
            JSON,
            "{}",
            400,
            "envelope.missing_attribute",
        )
        .header("ce-type", b"order.placed"),
        case(
            "pull from an unknown group",
            "POST",
            "/v1/groups/nobody/pull",
            JSON,
            "{}",
            404,
            "group.unknown",
        ),
        case(
            "describe an unknown group",
            "GET",
            "/v1/groups/nobody",
            None,
            "",
            404,
            "group.unknown",
        ),
        case(
            "DLQ of an unknown group",
            "GET",
            "/v1/groups/nobody/dlq",
            None,
            "",
            404,
            "group.unknown",
        ),
        case(
            "unknown stream",
            "GET",
            "/v1/streams/nothing",
            None,
            "",
            404,
            "stream.unknown",
        ),
        case(
            "path-like stream",
            "GET",
            "/v1/streams/..%2Fx",
            None,
            "",
            400,
            "name.invalid",
        ),
        case(
            "path-like group",
            "GET",
            "/v1/groups/..%2Fx",
            None,
            "",
            400,
            "name.invalid",
        ),
        case(
            "path-like group on pull",
            "POST",
            "/v1/groups/..%2F..%2Fetc/pull",
            JSON,
            "{}",
            400,
            "name.invalid",
        ),
        case(
            "dots as a group",
            "PUT",
            "/v1/groups/%2E%2E",
            JSON,
            r#"{"filter":"order.*"}"#,
            400,
            "name.invalid",
        ),
        case(
            "invalid UTF-8 in a path",
            "GET",
            "/v1/groups/%FF%FE",
            None,
            "",
            400,
            "request.invalid_path",
        ),
        case(
            "group settings: malformed JSON",
            "PUT",
            "/v1/groups/known",
            JSON,
            "{",
            400,
            "request.malformed_json",
        ),
        case(
            "group settings: wrong content type",
            "PUT",
            "/v1/groups/known",
            Some("text/plain"),
            r#"{"filter":"order.*"}"#,
            415,
            "request.unsupported_media_type",
        ),
        case(
            "group settings: unknown field",
            "PUT",
            "/v1/groups/known",
            JSON,
            r#"{"filter":"order.*","colour":"red"}"#,
            400,
            "request.invalid_field",
        ),
        case(
            "group settings: huge max_in_flight",
            "PUT",
            "/v1/groups/known",
            JSON,
            r#"{"filter":"order.*","max_in_flight":18446744073709551615}"#,
            400,
            "group.invalid_config",
        ),
        case(
            "a filter no event type can match",
            "PUT",
            "/v1/groups/audit",
            JSON,
            r#"{"filter":"*"}"#,
            400,
            "group.invalid_pattern",
        )
        .field("/filter"),
        case(
            "a stream no event type can publish to",
            "POST",
            "/v1/streams",
            JSON,
            r#"{"name":"payment-x"}"#,
            400,
            "name.invalid",
        ),
        case(
            "a stream named like a group's replay stream",
            "POST",
            "/v1/streams",
            JSON,
            r#"{"name":"replay-billing"}"#,
            400,
            "name.invalid",
        ),
        case(
            "group settings: huge ack_wait",
            "PUT",
            "/v1/groups/known",
            JSON,
            r#"{"filter":"order.*","ack_wait":18446744073709551615}"#,
            400,
            "group.invalid_config",
        ),
        case(
            "pull max 0",
            "POST",
            "/v1/groups/known/pull",
            JSON,
            r#"{"max":0}"#,
            400,
            "request.invalid_field",
        ),
        case(
            "pull max not a number",
            "POST",
            "/v1/groups/known/pull",
            JSON,
            r#"{"max":"ten"}"#,
            400,
            "request.invalid_field",
        ),
        case(
            "ack without receipts",
            "POST",
            "/v1/groups/known/ack",
            JSON,
            "{}",
            400,
            "request.invalid_field",
        ),
        case(
            "ack an unknown receipt",
            "POST",
            "/v1/groups/known/ack",
            JSON,
            r#"{"receipts":["nope"]}"#,
            404,
            "receipt.unknown",
        ),
        case(
            "nack with a bad class",
            "POST",
            "/v1/groups/known/nack",
            JSON,
            r#"{"receipt":"r","class":"fatal"}"#,
            400,
            "request.invalid_field",
        ),
        case(
            "DLQ: bad since",
            "GET",
            "/v1/groups/known/dlq?since=yesterday",
            None,
            "",
            400,
            "dlq.invalid_filter",
        ),
        case(
            "DLQ: limit 0",
            "GET",
            "/v1/groups/known/dlq?limit=0",
            None,
            "",
            400,
            "request.invalid_query",
        ),
        case(
            "DLQ: unknown parameter",
            "GET",
            "/v1/groups/known/dlq?colour=red",
            None,
            "",
            400,
            "request.invalid_query",
        ),
        case(
            "DLQ: unknown entry",
            "GET",
            "/v1/groups/known/dlq/order-0-99",
            None,
            "",
            404,
            "dlq.unknown_entry",
        ),
        case(
            "group: pinned to a schema version a type it matches does not have",
            "PUT",
            "/v1/groups/pinned",
            JSON,
            r#"{"filter":"audit.*","schema_version":99}"#,
            400,
            "group.invalid_config",
        ),
        case(
            "group: the config as an array of its fields",
            "PUT",
            "/v1/groups/arrays",
            JSON,
            r#"["order.*", 20]"#,
            400,
            "request.not_an_object",
        )
        .field("body"),
        case(
            "pull: an empty array for a body",
            "POST",
            "/v1/groups/known/pull",
            JSON,
            "[]",
            400,
            "request.not_an_object",
        )
        .field("body"),
        case(
            "nack: a reason of 5,000 bytes",
            "POST",
            "/v1/groups/known/nack",
            JSON,
            json!({"receipt": "r", "class": "service", "reason": "x".repeat(5000)}).to_string(),
            400,
            "nack.reason_too_long",
        )
        .field("/reason"),
        case(
            "DLQ: purge whose only filter is an empty reason (it would match every entry)",
            "DELETE",
            "/v1/groups/known/dlq?reason=",
            None,
            "",
            400,
            "dlq.invalid_filter",
        )
        .field("reason"),
        case(
            "DLQ: replay with an empty filter (it would select every entry)",
            "POST",
            "/v1/groups/known/dlq/replay",
            JSON,
            r#"{"filter":{}}"#,
            400,
            "dlq.invalid_selector",
        ),
        case(
            "DLQ: replay with two selectors",
            "POST",
            "/v1/groups/known/dlq/replay",
            JSON,
            r#"{"ids":[],"all":true}"#,
            400,
            "dlq.invalid_selector",
        ),
        case(
            "stream: bad name",
            "POST",
            "/v1/streams",
            JSON,
            r#"{"name":"../x"}"#,
            400,
            "name.invalid",
        ),
        case(
            "stream: zero partitions",
            "POST",
            "/v1/streams",
            JSON,
            r#"{"name":"zero","partitions":0}"#,
            400,
            "stream.invalid_partitions",
        ),
        case(
            "an event naming a schema version the registry does not have",
            "POST",
            "/v1/events",
            CE,
            json!({"specversion": "1.0", "id": "sv1", "source": "/t", "type": "audit.logged",
                   "schemaversion": 99, "data": {}})
            .to_string(),
            400,
            "schema.unknown_version",
        )
        .field("/schemaversion"),
        case(
            "a batch whose second event names a schema version the registry does not have",
            "POST",
            "/v1/events",
            BATCH,
            json!([
                {"specversion": "1.0", "id": "sv2", "source": "/t", "type": "audit.logged", "data": {}},
                {"specversion": "1.0", "id": "sv3", "source": "/t", "type": "audit.logged",
                 "schemaversion": 7, "data": {}},
            ])
            .to_string(),
            400,
            "schema.unknown_version",
        )
        .field("/1/schemaversion"),
        case(
            "unknown route",
            "GET",
            "/v2/everything",
            None,
            "",
            404,
            "route.unknown",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_gets_its_problem_and_the_server_keeps_serving() {
    let server = serve(|c| {
        c.max_body_bytes = 64 * 1024;
        c.max_event_bytes = 16 * 1024;
    })
    .await;
    let client = &server.client;
    let created = client
        .json("PUT", "/v1/groups/known", &json!({"filter": "order.*"}))
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.text());
    let registered = client
        .json(
            "POST",
            "/registry/subjects/audit.logged/versions",
            &json!({"schema": json!({"type": "object"}).to_string()}),
        )
        .await
        .unwrap();
    assert_eq!(registered.status, 200, "{}", registered.text());
    let mut failures = Vec::new();
    for case in battery() {
        let headers: Vec<(&str, &[u8])> = case
            .headers
            .iter()
            .map(|(n, v)| (*n, v.as_slice()))
            .collect();
        let answer = client
            .send_raw(case.method, case.path, &headers, case.body.clone())
            .await
            .unwrap();
        let body = answer.json();
        let ok = answer.status == case.status
            && answer.header("content-type") == Some("application/problem+json")
            && body["code"] == case.code
            && body["status"] == case.status
            && case.field.is_none_or(|f| {
                body["errors"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|x| x["path"] == f))
            });
        if !ok {
            failures.push(format!(
                "{}: expected {} {} {:?}, got {} {}",
                case.what,
                case.status,
                case.code,
                case.field,
                answer.status,
                answer.text()
            ));
        }
        let health = client.get("/healthz").await.unwrap();
        assert_eq!(
            health.status, 200,
            "the server stopped serving after: {}",
            case.what
        );
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Nothing bad was appended.
    let streams = client.get("/v1/streams").await.unwrap().json();
    assert_eq!(streams, json!([]), "{streams}");
    server.stop().await;
}
