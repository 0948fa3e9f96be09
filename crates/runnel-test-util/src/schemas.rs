//! Schemas at the runtime's boundaries, over any backend: validation at publish (every failing
//! path), `require_schema`, poison pills at consume (`schema_invalid`), and groups pinned to a
//! version receiving events upcast and downcast. Expanded by [`crate::runtime_conformance_tests!`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use runnel_backend::{Header, ReadFrom, Record};
use runnel_envelope::{Event, EventType, Source};
use runnel_runtime::{DlqFilter, GroupConfig, HandlerError, Runnel, RuntimeError, TypePattern};
use serde_json::{Value, json};

use crate::BackendHarness;
use crate::runtime::{eventually, runtime_with, stream_total};

const V1: &str = r#"{
  "type": "object",
  "properties": { "order_id": { "type": "string" }, "amount": { "type": "number" } },
  "required": ["order_id", "amount"],
  "additionalProperties": false
}"#;

const V2: &str = r#"{
  "type": "object",
  "properties": {
    "order_id": { "type": "string" },
    "amount": { "type": "number" },
    "currency": { "type": "string", "default": "EUR" }
  },
  "required": ["order_id", "amount"],
  "additionalProperties": false
}"#;

async fn runtime(h: &impl BackendHarness, require_schema: bool) -> Runnel {
    runtime_with(h, require_schema).await
}

fn order_placed() -> EventType {
    EventType::new("order.placed").expect("type")
}

fn order(data: Value, version: Option<u32>) -> Event {
    let mut builder = Event::builder(
        order_placed(),
        Source::new("test://schemas").expect("source"),
    )
    .partition_key("k")
    .data_json(data);
    if let Some(version) = version {
        builder = builder.schema_version(version);
    }
    builder.build().expect("event")
}

pub async fn a_publish_is_validated_and_rejected_with_every_failing_path(h: &impl BackendHarness) {
    let runnel = runtime(h, false).await;
    runnel
        .schemas()
        .register(&order_placed(), V1)
        .await
        .expect("register");
    let err = runnel
        .publish(order(json!({ "order_id": 5, "amount": "ten" }), None))
        .await
        .expect_err("invalid data is refused");
    let RuntimeError::Schema(invalid) = &err else {
        panic!("expected a schema error, got {err}");
    };
    let mut paths: Vec<&str> = invalid.errors().iter().map(|e| e.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["/amount", "/order_id"], "{err}");
    assert_eq!(err.code(), "schema.invalid");

    let ack = runnel
        .publish(order(json!({ "order_id": "o-1", "amount": 10 }), None))
        .await
        .expect("valid data lands");
    let stored = runnel
        .backend()
        .read(
            &ack.stream,
            ack.partition,
            ReadFrom::Offset(ack.offset),
            1,
            usize::MAX,
        )
        .await
        .expect("read");
    let event = Event::decode_binary(&stored[0].value).expect("decode");
    assert_eq!(
        event.schema_version().map(|v| v.get()),
        Some(1),
        "stamped with the version it was validated against"
    );
    let total = stream_total(&runnel, &ack.stream).await;
    assert_eq!(total, 1, "the invalid publish appended nothing");
}

pub async fn a_type_without_a_schema_is_refused_when_schemas_are_required(h: &impl BackendHarness) {
    let runnel = runtime(h, true).await;
    let err = runnel
        .publish(order(json!({ "order_id": "o-1", "amount": 1 }), None))
        .await
        .expect_err("no schema");
    assert_eq!(err.code(), "schema.missing", "{err}");
    runnel
        .schemas()
        .register(&order_placed(), V1)
        .await
        .expect("register");
    runnel
        .publish(order(json!({ "order_id": "o-1", "amount": 1 }), None))
        .await
        .expect("accepted once a schema exists");
}

pub async fn an_event_failing_its_schema_at_consume_is_dead_lettered_as_schema_invalid(
    h: &impl BackendHarness,
) {
    let runnel = runtime(h, false).await;
    runnel
        .schemas()
        .register(&order_placed(), V1)
        .await
        .expect("register");
    // Written past the producer's check, as an old or foreign producer could.
    let bad = order(json!({ "order_id": "o-1" }), Some(1));
    let stream = runnel_backend::StreamName::new("order").expect("name");
    runnel
        .create_stream(&stream, runnel_backend::StreamConfig::default())
        .await
        .expect("stream");
    runnel
        .backend()
        .append(
            &stream,
            0,
            vec![Record {
                key: bytes::Bytes::from_static(b"k"),
                value: bad.encode_binary().into(),
                headers: vec![
                    Header::new("id", bad.id().as_str().to_string()),
                    Header::new("type", "order.placed"),
                ],
            }],
        )
        .await
        .expect("append");
    let (handle, handled) = counting_group(
        &runnel,
        GroupConfig::new("validating", TypePattern::new("order.*").expect("pattern")),
    )
    .await;
    let entry = first_dlq_entry(&runnel, "validating").await;
    assert!(
        entry.reason.starts_with("schema_invalid"),
        "{}",
        entry.reason
    );
    assert!(
        entry.reason.contains("amount"),
        "names the failing field: {}",
        entry.reason
    );
    assert_eq!(entry.event_id, bad.id().as_str());
    assert_eq!(
        *handled.lock().expect("count"),
        0,
        "the handler never saw it"
    );
    handle.stop().await.expect("stop");
}

/// Runs a group whose handler only counts what it is handed.
async fn counting_group(
    runnel: &Runnel,
    config: GroupConfig,
) -> (runnel_runtime::ConsumerHandle, Arc<Mutex<usize>>) {
    let handled = Arc::new(Mutex::new(0));
    let count = handled.clone();
    let name = config.name.clone();
    let handle = runnel
        .group(&name)
        .config(config)
        .run(move |_m| {
            let count = count.clone();
            async move {
                *count.lock().expect("count") += 1;
                Ok::<_, HandlerError>(vec![])
            }
        })
        .await
        .expect("run");
    (handle, handled)
}

/// The group's first dead-letter entry, waiting for it up to 20 s.
async fn first_dlq_entry(runnel: &Runnel, group: &str) -> runnel_runtime::DlqEntry {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let page = runnel
            .dlq_list(group, &DlqFilter::default(), None, 10)
            .await
            .expect("list");
        if let Some(entry) = page.entries.into_iter().next() {
            return entry;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{group}: never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Data and schema version as a handler received them.
type Received = (Value, Option<u32>);

pub async fn an_event_that_adapted_does_not_match_the_pinned_version_is_dead_lettered(
    h: &impl BackendHarness,
) {
    let runnel = runtime(h, false).await;
    // Compatible by the checker's rules (v2 drops `note` from the lines), but lines that
    // `note` told apart are equal once it is dropped, and v2 wants them unique: an old event
    // read at v2 cannot be valid v2 data.
    let with_note = r#"{
      "type": "object",
      "properties": {
        "order_id": { "type": "string" },
        "amount": { "type": "number" },
        "lines": { "type": "array", "uniqueItems": true, "items": {
          "type": "object",
          "properties": { "sku": { "type": "string" }, "note": { "type": "string" } }
        } }
      },
      "required": ["order_id", "amount"]
    }"#;
    let without_note = r#"{
      "type": "object",
      "properties": {
        "order_id": { "type": "string" },
        "amount": { "type": "number" },
        "lines": { "type": "array", "uniqueItems": true, "items": {
          "type": "object",
          "properties": { "sku": { "type": "string" } }
        } }
      },
      "required": ["order_id", "amount"]
    }"#;
    for (version, schema) in [("v1", with_note), ("v2", without_note)] {
        runnel
            .schemas()
            .register(&order_placed(), schema)
            .await
            .expect(version);
    }
    let old = order(
        json!({
            "order_id": "o-1",
            "amount": 1,
            "lines": [{ "sku": "a", "note": "gift" }, { "sku": "a" }]
        }),
        Some(1),
    );
    runnel.publish(old.clone()).await.expect("v1 event");
    let (handle, handled) = counting_group(
        &runnel,
        GroupConfig {
            schema_version: Some(2),
            ..GroupConfig::new("reads-v2", TypePattern::new("order.*").expect("pattern"))
        },
    )
    .await;
    let entry = first_dlq_entry(&runnel, "reads-v2").await;
    assert!(
        entry.reason.starts_with("schema_invalid") && entry.reason.contains("/lines"),
        "{}",
        entry.reason
    );
    assert_eq!(entry.event_id, old.id().as_str());
    assert_eq!(
        *handled.lock().expect("count"),
        0,
        "the handler never saw it"
    );
    handle.stop().await.expect("stop");
}

pub async fn groups_pinned_to_a_version_receive_events_upcast_and_downcast(
    h: &impl BackendHarness,
) {
    let runnel = runtime(h, false).await;
    runnel
        .schemas()
        .register(&order_placed(), V1)
        .await
        .expect("v1");
    runnel
        .schemas()
        .register(&order_placed(), V2)
        .await
        .expect("v2");
    runnel
        .publish(order(json!({ "order_id": "old", "amount": 1 }), Some(1)))
        .await
        .expect("v1 event");
    runnel
        .publish(order(
            json!({ "order_id": "new", "amount": 2, "currency": "USD" }),
            Some(2),
        ))
        .await
        .expect("v2 event");
    let mut received = Vec::new();
    for (group, pinned) in [("reads-v2", 2), ("reads-v1", 1)] {
        let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
        let sink = seen.clone();
        let handle = runnel
            .group(group)
            .config(GroupConfig {
                schema_version: Some(pinned),
                ..GroupConfig::new(group, TypePattern::new("order.*").expect("pattern"))
            })
            .run(move |m| {
                let sink = sink.clone();
                async move {
                    let data = m.event.data().as_json().cloned().unwrap_or_default();
                    let version = m.event.schema_version().map(|v| v.get());
                    sink.lock().expect("seen").push((data, version));
                    Ok::<_, HandlerError>(vec![])
                }
            })
            .await
            .expect("run");
        eventually(group, || seen.lock().expect("seen").len() == 2).await;
        handle.stop().await.expect("stop");
        let mut got = seen.lock().expect("seen").clone();
        got.sort_by_key(|(d, _)| d["order_id"].as_str().unwrap_or_default().to_string());
        received.push(got);
    }
    assert_eq!(
        received[0],
        vec![
            (
                json!({ "order_id": "new", "amount": 2, "currency": "USD" }),
                Some(2)
            ),
            (
                json!({ "order_id": "old", "amount": 1, "currency": "EUR" }),
                Some(2)
            ),
        ],
        "pinned to 2: the v1 event is upcast with the default"
    );
    assert_eq!(
        received[1],
        vec![
            (json!({ "order_id": "new", "amount": 2 }), Some(1)),
            (json!({ "order_id": "old", "amount": 1 }), Some(1)),
        ],
        "pinned to 1: the v2 event loses the field v1 does not know"
    );
}

/// A group pinned to a version gets events published before their type had any schema read
/// as the first version: adapted to the pinned one and validated against it, or, when they
/// do not match it, dead-lettered as `schema_invalid` — never handed out as they were.
pub async fn a_pinned_group_gets_events_from_before_any_schema_adapted_or_dead_lettered(
    h: &impl BackendHarness,
) {
    let runnel = runtime(h, false).await;
    runnel
        .publish(order(json!({ "order_id": "pre", "amount": 1 }), None))
        .await
        .expect("a schema-less event");
    runnel
        .publish(order(json!({ "oops": true }), None))
        .await
        .expect("another");
    runnel
        .schemas()
        .register(&order_placed(), V1)
        .await
        .expect("v1");
    runnel
        .schemas()
        .register(&order_placed(), V2)
        .await
        .expect("v2");
    let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
    let sink = seen.clone();
    let handle = runnel
        .group("reads-v2")
        .config(GroupConfig {
            schema_version: Some(2),
            ..GroupConfig::new("reads-v2", TypePattern::new("order.*").expect("pattern"))
        })
        .run(move |m| {
            let sink = sink.clone();
            async move {
                let data = m.event.data().as_json().cloned().unwrap_or_default();
                let version = m.event.schema_version().map(|v| v.get());
                sink.lock().expect("seen").push((data, version));
                Ok::<_, HandlerError>(vec![])
            }
        })
        .await
        .expect("run");
    let entry = first_dlq_entry(&runnel, "reads-v2").await;
    assert!(
        entry.reason.starts_with("schema_invalid")
            && entry.reason.contains("names no schemaversion"),
        "{}",
        entry.reason
    );
    eventually("the valid one", || !seen.lock().expect("seen").is_empty()).await;
    handle.stop().await.expect("stop");
    assert_eq!(
        seen.lock().expect("seen").clone(),
        vec![(
            json!({ "order_id": "pre", "amount": 1, "currency": "EUR" }),
            Some(2)
        )],
        "adapted from version 1 with the default"
    );
}
