//! The router with `oneshot` requests, no sockets: publishing in every mode, consuming with
//! pull/ack/nack, groups, streams, dead-letter queues, the registry, operations routes.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use common::*;
use serde_json::{Value, json};

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[tokio::test]
async fn structured_publish_is_pulled_back_equal_with_traceparent_unchanged() {
    let (_dir, app) = app().await;
    let router = app.router();
    assert_eq!(
        put_group(&router, "billing", json!({"filter": "order.*"}))
            .await
            .status,
        StatusCode::CREATED
    );
    let mut sent = event("e1", "order.placed", json!({"amount": 12.5}));
    sent["traceparent"] = json!(TRACEPARENT);
    sent["correlationid"] = json!("c-1");
    sent["comexample"] = json!("x");
    sent["time"] = json!("2026-01-02T03:04:05.123456Z");
    let reply = publish(&router, sent.clone()).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.body["id"], "e1");
    assert_eq!(reply.body["stream"], "order");
    assert_eq!(reply.body["duplicate"], false);
    assert!(reply.body["offset"].is_u64() && reply.body["partition"].is_u64());

    let messages = pull(&router, "billing", 10, 5_000).await;
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message["attempt"], 1);
    assert_eq!(message["from_dlq"], false);
    assert_eq!(
        message["event"], sent,
        "the event comes back as it was sent"
    );
    assert_eq!(message["event"]["traceparent"], TRACEPARENT);

    let receipt = message["receipt"].as_str().unwrap();
    let reply = send_json(
        &router,
        "POST",
        "/v1/groups/billing/ack",
        json!({"receipts": [receipt]}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["acked"], 1);
    let again = send_json(
        &router,
        "POST",
        "/v1/groups/billing/ack",
        json!({"receipts": [receipt]}),
    )
    .await;
    assert_problem(&again, 404, "receipt.unknown");
    assert_eq!(again.body["unknown"], json!([receipt]));
    app.close().await.unwrap();
}

#[tokio::test]
async fn binary_mode_maps_ce_headers_and_content_type() {
    let (_dir, app) = app().await;
    let router = app.router();
    put_group(&router, "audit", json!({"filter": "order.*"})).await;
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/events")
        .header("ce-specversion", "1.0")
        .header("ce-id", "b1")
        .header("ce-source", "/shop")
        .header("ce-type", "order.shipped")
        .header("ce-subject", "order-7")
        .header("ce-traceparent", TRACEPARENT)
        .header("ce-comexample", "caf%C3%A9%20%25")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"carrier":"dhl"}"#))
        .unwrap();
    let reply = call(&router, request).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let messages = pull(&router, "audit", 1, 5_000).await;
    let event = &messages[0]["event"];
    assert_eq!(event["id"], "b1");
    assert_eq!(event["subject"], "order-7");
    assert_eq!(event["datacontenttype"], "application/json");
    assert_eq!(event["data"], json!({"carrier": "dhl"}));
    assert_eq!(event["comexample"], "café %");
    assert_eq!(event["traceparent"], TRACEPARENT);
    app.close().await.unwrap();
}

#[tokio::test]
async fn a_batch_answers_in_order_and_an_invalid_one_appends_nothing() {
    let (_dir, app) = app().await;
    let router = app.router();
    let batch = json!([
        event("a", "order.placed", json!(1)),
        event("b", "payment.charged", json!(2)),
        event("c", "order.placed", json!(3)),
    ]);
    let reply = call(
        &router,
        request(
            "POST",
            "/v1/events",
            Some("application/cloudevents-batch+json"),
            batch.to_string(),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let ids: Vec<&str> = reply
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(reply.body[1]["stream"], "payment");

    let bad = json!([
        event("d", "refund.issued", json!(1)),
        {"specversion": "1.0", "id": "e", "source": "/t", "type": "NotAType"},
    ]);
    let reply = call(
        &router,
        request(
            "POST",
            "/v1/events",
            Some("application/cloudevents-batch+json"),
            bad.to_string(),
        ),
    )
    .await;
    assert_problem(&reply, 400, "envelope.invalid_event_type");
    assert_eq!(reply.body["errors"][0]["path"], "/1/type");
    let stream = get(&router, "/v1/streams/refund").await;
    assert_problem(&stream, 404, "stream.unknown");
    app.close().await.unwrap();
}

#[tokio::test]
async fn a_repeated_id_is_answered_with_the_first_position() {
    let (_dir, app) = app().await;
    let router = app.router();
    let first = publish(&router, event("same", "order.placed", json!(1))).await;
    let second = publish(&router, event("same", "order.placed", json!(1))).await;
    assert_eq!(second.status, StatusCode::ACCEPTED);
    assert_eq!(second.body["duplicate"], true);
    assert_eq!(second.body["offset"], first.body["offset"]);
    assert_eq!(second.body["partition"], first.body["partition"]);
    let metrics = get(&router, "/metrics").await;
    assert!(
        metrics
            .text
            .contains("runnel_publish_duplicates_total{stream=\"order\"} 1"),
        "{}",
        metrics.text
    );
    app.close().await.unwrap();
}

#[tokio::test]
async fn groups_are_created_replaced_and_described_with_lag_per_partition() {
    let (_dir, app) = app().await;
    let router = app.router();
    for n in 0..3 {
        publish(&router, event(&format!("o{n}"), "order.placed", json!(n))).await;
    }
    let created = put_group(
        &router,
        "reports",
        json!({"filter": "order.*", "ack_wait": 5000, "max_deliver": 3, "backoff": [100, 200], "max_in_flight": 8, "ordering": "none"}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.body["ack_wait"], 5000);
    assert_eq!(created.body["ordering"], "none");
    let replaced = put_group(&router, "reports", json!({"filter": "order.*"})).await;
    assert_eq!(replaced.status, StatusCode::OK);
    assert_eq!(
        replaced.body["ack_wait"], 30000,
        "a PUT replaces every setting"
    );

    let described = get(&router, "/v1/groups/reports").await;
    assert_eq!(described.status, StatusCode::OK, "{}", described.text);
    assert_eq!(described.body["lag"]["total_events"], 3);
    let partitions = described.body["lag"]["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 4, "one entry per partition of `order`");
    assert!(
        partitions
            .iter()
            .all(|p| p["stream"] == "order" && p["seconds"].is_number())
    );
    assert_eq!(described.body["consumer"]["running"], false);
    assert_eq!(described.body["dlq"]["depth"], 0);

    let list = get(&router, "/v1/groups").await;
    assert_eq!(list.body[0]["name"], "reports");
    let bad = put_group(&router, "reports", json!({"filter": "Order.*"})).await;
    assert_problem(&bad, 400, "group.invalid_pattern");
    let bad = put_group(
        &router,
        "reports",
        json!({"filter": "order.*", "ack_wait": 1}),
    )
    .await;
    assert_problem(&bad, 400, "group.invalid_config");
    assert_eq!(bad.body["errors"][0]["path"], "/ack_wait");
    app.close().await.unwrap();
}

#[tokio::test]
async fn a_group_changed_behind_a_running_consumer_restarts_it_with_the_new_settings() {
    let (_dir, app) = app().await;
    let router = app.router();
    put_group(&router, "moving", json!({"filter": "rcx.a"})).await;
    publish(&router, event("a1", "rcx.a", json!(1))).await;
    let first = pull(&router, "moving", 1, 5_000).await;
    assert_eq!(first[0]["event"]["id"], "a1");
    send_json(
        &router,
        "POST",
        "/v1/groups/moving/ack",
        json!({"receipts": [first[0]["receipt"]]}),
    )
    .await;
    // As another server sharing the backend would: the stored configuration changes, and
    // this server's running consumer is not told.
    let mut config = app.runnel().group_config("moving").await.unwrap();
    config.filter = runnel_runtime::TypePattern::new("rcx.*").unwrap();
    app.runnel().put_group(config).await.unwrap();
    // The next pull a second or more later finds the change and restarts the consumer; what
    // is published from then on is judged by the new filter.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(pull(&router, "moving", 1, 0).await.is_empty());
    publish(&router, event("b1", "rcx.b", json!(2))).await;
    let mut got = Vec::new();
    for _ in 0..20 {
        got.extend(pull(&router, "moving", 10, 500).await);
        if !got.is_empty() {
            break;
        }
    }
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0]["event"]["id"], "b1",
        "delivered under the new filter"
    );
    app.close().await.unwrap();
}

#[tokio::test]
async fn json_data_reaches_the_consumer_as_the_producer_wrote_it() {
    let (_dir, app) = app().await;
    let router = app.router();
    put_group(&router, "exact", json!({"filter": "ledger.*"})).await;
    let data = r#"{"big":12345678901234567890123,"neg":-9223372036854775809,"e":1E2}"#;
    let body = format!(
        r#"{{"specversion":"1.0","id":"x1","source":"/t","type":"ledger.posted","data":{data}}}"#
    );
    let published = call(
        &router,
        request(
            "POST",
            "/v1/events",
            Some("application/cloudevents+json"),
            body,
        ),
    )
    .await;
    assert_eq!(published.status, StatusCode::ACCEPTED, "{}", published.text);
    let pulled = send_json(
        &router,
        "POST",
        "/v1/groups/exact/pull",
        json!({"max": 1, "wait_ms": 5000}),
    )
    .await;
    assert!(
        pulled.text.contains(&format!(r#""data":{data}"#)),
        "{}",
        pulled.text
    );
    app.close().await.unwrap();
}

#[tokio::test]
async fn json_data_adapted_for_a_pinned_group_keeps_the_text_of_every_value_it_did_not_touch() {
    let (_dir, app) = app().await;
    let router = app.router();
    let v1 = json!({
        "type": "object",
        "properties": {
            "big": {"type": "integer"},
            "neg": {"type": "integer"},
            "e": {"type": "number"},
            "nested": {"type": "object", "properties": {"n": {"type": "integer"}}}
        },
        "additionalProperties": false
    });
    let mut v2 = v1.clone();
    v2["properties"]["currency"] = json!({"type": "string", "default": "EUR"});
    for schema in [v1, v2] {
        let registered = send_json(
            &router,
            "POST",
            "/registry/subjects/ledger.posted/versions",
            json!({"schema": schema.to_string()}),
        )
        .await;
        assert_eq!(registered.status, StatusCode::OK, "{}", registered.text);
    }
    put_group(
        &router,
        "pinned",
        json!({"filter": "ledger.*", "schema_version": 2}),
    )
    .await;
    // Written at version 1: `nested.gone` is not declared (dropped for version 2) and
    // `currency` is missing (filled for version 2); nothing else may change.
    let data = r#"{"big":12345678901234567890123,"neg":-9223372036854775809,"e":1E2,"nested":{"n":12345678901234567890124,"gone":1}}"#;
    let body = format!(
        r#"{{"specversion":"1.0","id":"x1","source":"/t","type":"ledger.posted","schemaversion":1,"data":{data}}}"#
    );
    let published = call(
        &router,
        request(
            "POST",
            "/v1/events",
            Some("application/cloudevents+json"),
            body,
        ),
    )
    .await;
    assert_eq!(published.status, StatusCode::ACCEPTED, "{}", published.text);
    let pulled = send_json(
        &router,
        "POST",
        "/v1/groups/pinned/pull",
        json!({"max": 1, "wait_ms": 5000}),
    )
    .await;
    let adapted = r#"{"big":12345678901234567890123,"neg":-9223372036854775809,"e":1E2,"nested":{"n":12345678901234567890124},"currency":"EUR"}"#;
    assert!(
        pulled.text.contains(&format!(r#""data":{adapted}"#)),
        "{}",
        pulled.text
    );
    app.close().await.unwrap();
}

#[tokio::test]
async fn a_publish_naming_no_version_of_a_soft_deleted_subject_is_refused() {
    let (_dir, app) = app().await;
    let router = app.router();
    let schema = json!({"type": "object", "properties": {"amount": {"type": "number"}}});
    let registered = send_json(
        &router,
        "POST",
        "/registry/subjects/order.placed/versions",
        json!({"schema": schema.to_string()}),
    )
    .await;
    assert_eq!(registered.status, StatusCode::OK, "{}", registered.text);
    let deleted = call(
        &router,
        request(
            "DELETE",
            "/registry/subjects/order.placed",
            None,
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.text);

    let refused = publish(
        &router,
        event("d1", "order.placed", json!({"amount": "ten"})),
    )
    .await;
    assert_problem(&refused, 400, "schema.subject_deleted");
    assert!(refused.text.contains("register"), "{}", refused.text);
    app.close().await.unwrap();
}

#[tokio::test]
async fn v1_data_naming_no_version_is_told_it_was_validated_against_the_latest() {
    let (_dir, app) = app().await;
    let router = app.router();
    let v1 = json!({
        "type": "object",
        "properties": {"amount": {"type": "number"}},
        "additionalProperties": false
    });
    let mut v2 = v1.clone();
    v2["properties"]["currency"] = json!({"type": "string", "default": "EUR"});
    v2["required"] = json!(["currency"]);
    for schema in [v1, v2] {
        let registered = send_json(
            &router,
            "POST",
            "/registry/subjects/order.placed/versions",
            json!({"schema": schema.to_string()}),
        )
        .await;
        assert_eq!(registered.status, StatusCode::OK, "{}", registered.text);
    }
    let refused = publish(&router, event("v1", "order.placed", json!({"amount": 10}))).await;
    assert_problem(&refused, 400, "schema.invalid");
    let detail = refused.body["detail"].as_str().unwrap();
    assert!(detail.contains("currency"), "{detail}");
    assert!(
        detail.contains("names no `schemaversion`") && detail.contains("version 2, the latest"),
        "{detail}"
    );
    let fields: Vec<&str> = refused.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert!(fields.contains(&"/schemaversion"), "{fields:?}");
    // Stamped with the version its data follows, it is accepted.
    let mut stamped = event("v1", "order.placed", json!({"amount": 10}));
    stamped["schemaversion"] = json!(1);
    assert_eq!(publish(&router, stamped).await.status, StatusCode::ACCEPTED);
    app.close().await.unwrap();
}

#[tokio::test]
async fn the_first_pull_of_a_new_consumer_gathers_what_every_partition_has_ready() {
    let (_dir, app) = app().await;
    let router = app.router();
    let created = send_json(
        &router,
        "POST",
        "/v1/streams",
        json!({"name": "order", "partitions": 4}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    // Keys spread over the four partitions.
    let mut partitions = std::collections::BTreeSet::new();
    let mut n = 0;
    while partitions.len() < 4 {
        let key = format!("customer-{n}");
        if partitions.insert(runnel_runtime::partition_for_key(&key, 4)) {
            let mut e = event(&format!("e{n}"), "order.placed", json!({"n": n}));
            e["partitionkey"] = json!(key);
            assert_eq!(publish(&router, e).await.status, StatusCode::ACCEPTED);
        }
        n += 1;
    }
    put_group(&router, "fresh", json!({"filter": "order.*"})).await;
    let messages = pull(&router, "fresh", 10, 5_000).await;
    assert_eq!(messages.len(), 4, "{messages:?}");
    app.close().await.unwrap();
}

#[tokio::test]
async fn a_slow_puller_gets_each_event_once_with_its_full_ack_wait() {
    let (_dir, app) = app().await;
    let router = app.router();
    put_group(
        &router,
        "slow",
        json!({"filter": "order.*", "ack_wait": 300, "ordering": "none"}),
    )
    .await;
    // The first pull starts the consumer; the rest of the events wait in the server for
    // longer than ack_wait between pulls.
    assert!(pull(&router, "slow", 1, 0).await.is_empty());
    for n in 0..4 {
        publish(&router, event(&format!("s{n}"), "order.placed", json!(n))).await;
    }
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let messages = pull(&router, "slow", 1, 5_000).await;
        let message = &messages[0];
        assert_eq!(message["attempt"], 1, "{message}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let reply = send_json(
            &router,
            "POST",
            "/v1/groups/slow/ack",
            json!({"receipts": [message["receipt"]]}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        seen.push(message["event"]["id"].as_str().unwrap().to_string());
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    seen.sort();
    assert_eq!(seen, ["s0", "s1", "s2", "s3"]);
    let group = get(&router, "/v1/groups/slow").await.body;
    assert_eq!(group["counters"]["acked"], 4, "{group}");
    assert_eq!(group["counters"]["ack_timeouts"], 0, "{group}");
    assert_eq!(group["dlq"]["depth"], 0, "{group}");
    app.close().await.unwrap();
}

#[tokio::test]
async fn a_transient_nack_is_delivered_again_and_a_lapsed_receipt_is_a_conflict() {
    let (_dir, app) = app().await;
    let router = app.router();
    put_group(
        &router,
        "mailer",
        json!({"filter": "order.*", "ack_wait": 300}),
    )
    .await;
    publish(&router, event("n1", "order.placed", json!(1))).await;
    let first = pull(&router, "mailer", 1, 5_000).await;
    let receipt = first[0]["receipt"].as_str().unwrap().to_string();
    let reply = send_json(
        &router,
        "POST",
        "/v1/groups/mailer/nack",
        json!({"receipt": receipt, "class": "transient", "reason": "smtp reset"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let second = pull(&router, "mailer", 1, 5_000).await;
    assert_eq!(second[0]["event"]["id"], "n1");
    assert_eq!(second[0]["attempt"], 2);

    // Not settled within ack_wait: the receipt lapses.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let late = second[0]["receipt"].as_str().unwrap();
    let reply = send_json(
        &router,
        "POST",
        "/v1/groups/mailer/ack",
        json!({"receipts": [late]}),
    )
    .await;
    assert_problem(&reply, 409, "receipt.expired");
    assert_eq!(reply.body["acked"], 0);
    let third = pull(&router, "mailer", 1, 5_000).await;
    assert_eq!(third[0]["attempt"], 3, "delivered again after ack_wait");
    app.close().await.unwrap();
}

#[tokio::test]
async fn dead_letters_are_listed_shown_replayed_and_purged() {
    let (_dir, app) = app().await;
    let router = app.router();
    put_group(
        &router,
        "charges",
        json!({"filter": "payment.*", "dlq_alert_threshold": 3}),
    )
    .await;
    for n in 0..3 {
        publish(
            &router,
            event(&format!("p{n}"), "payment.charged", json!(n)),
        )
        .await;
    }
    let messages = pull(&router, "charges", 10, 5_000).await;
    let mut got = messages.clone();
    while got.len() < 3 {
        got.extend(pull(&router, "charges", 10, 5_000).await);
    }
    for (n, message) in got.iter().enumerate() {
        let reply = send_json(
            &router,
            "POST",
            "/v1/groups/charges/nack",
            json!({"receipt": message["receipt"], "class": "permanent", "reason": format!("card declined {n}")}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
    let mut page = Value::Null;
    for _ in 0..100 {
        page = get(&router, "/v1/groups/charges/dlq").await.body;
        if page["entries"].as_array().is_some_and(|e| e.len() == 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{page}");
    assert_eq!(entries[0]["class"], "permanent");
    assert!(entries[0]["event"]["id"].as_str().unwrap().starts_with('p'));
    let metrics = get(&router, "/metrics").await.text;
    assert!(
        metrics.contains("runnel_dlq_alert{group=\"charges\"} 1"),
        "{metrics}"
    );

    let first_page = get(&router, "/v1/groups/charges/dlq?limit=2").await.body;
    assert_eq!(first_page["entries"].as_array().unwrap().len(), 2);
    let next = first_page["next"].as_str().unwrap();
    let second_page = get(
        &router,
        &format!("/v1/groups/charges/dlq?limit=2&after={next}"),
    )
    .await
    .body;
    assert_eq!(second_page["entries"].as_array().unwrap().len(), 1);

    let filtered = get(
        &router,
        "/v1/groups/charges/dlq?reason=DECLINED%201&class=permanent&type=payment.*",
    )
    .await;
    assert_eq!(
        filtered.body["entries"].as_array().unwrap().len(),
        1,
        "{}",
        filtered.text
    );
    let id = filtered.body["entries"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let shown = get(&router, &format!("/v1/groups/charges/dlq/{id}")).await;
    assert_eq!(shown.body["reason"], "card declined 1");

    let replay = send_json(
        &router,
        "POST",
        "/v1/groups/charges/dlq/replay",
        json!({"ids": [id, "nope-0-0"]}),
    )
    .await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.text);
    assert_eq!(replay.body["replayed"], 1);
    assert_eq!(replay.body["missing"], json!(["nope-0-0"]));
    let again = pull(&router, "charges", 1, 5_000).await;
    assert_eq!(again[0]["from_dlq"], true);
    assert_eq!(again[0]["event"]["id"], shown.body["event_id"]);
    send_json(
        &router,
        "POST",
        "/v1/groups/charges/ack",
        json!({"receipts": [again[0]["receipt"]]}),
    )
    .await;

    let neither = call(
        &router,
        request("DELETE", "/v1/groups/charges/dlq", None, Body::empty()),
    )
    .await;
    assert_problem(&neither, 400, "dlq.invalid_selector");
    let remaining = get(&router, "/v1/groups/charges/dlq").await.body;
    let one = remaining["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] != id)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let deleted = call(
        &router,
        request(
            "DELETE",
            &format!("/v1/groups/charges/dlq/{one}"),
            None,
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = get(&router, &format!("/v1/groups/charges/dlq/{one}")).await;
    assert_problem(&gone, 404, "dlq.unknown_entry");
    let purged = call(
        &router,
        request(
            "DELETE",
            "/v1/groups/charges/dlq?all=true",
            None,
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.text);
    let metrics = get(&router, "/metrics").await.text;
    assert!(
        metrics.contains("runnel_consumer_failures_total{group=\"charges\",class=\"permanent\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("runnel_dlq_depth{group=\"charges\"} 0"),
        "{metrics}"
    );
    // Purged below the threshold: the alert is down, though the workers raised it.
    assert!(
        metrics.contains("runnel_dlq_alert{group=\"charges\"} 0"),
        "{metrics}"
    );
    app.close().await.unwrap();
}

#[tokio::test]
async fn streams_are_created_listed_and_described() {
    let (_dir, app) = app().await;
    let router = app.router();
    let body = json!({"name": "inventory", "partitions": 2, "retention": {"max_age_ms": 86400000}});
    let created = send_json(&router, "POST", "/v1/streams", body.clone()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.body["partitions"], 2);
    assert_eq!(created.body["retention"]["max_age_ms"], 86400000);
    assert_eq!(
        send_json(&router, "POST", "/v1/streams", body).await.status,
        StatusCode::OK
    );
    let conflict = send_json(
        &router,
        "POST",
        "/v1/streams",
        json!({"name": "inventory", "partitions": 3}),
    )
    .await;
    assert_problem(&conflict, 409, "stream.exists");
    let other_retention = send_json(
        &router,
        "POST",
        "/v1/streams",
        json!({"name": "inventory", "partitions": 2, "retention": {"max_age_ms": 1000}}),
    )
    .await;
    assert_problem(&other_retention, 409, "stream.exists");
    let unsaid = send_json(
        &router,
        "POST",
        "/v1/streams",
        json!({"name": "inventory", "partitions": 2}),
    )
    .await;
    assert_eq!(
        unsaid.status,
        StatusCode::OK,
        "retention not named: as it is"
    );
    assert_eq!(unsaid.body["retention"]["max_age_ms"], 86400000);
    publish(&router, event("i1", "inventory.reserved", json!(1))).await;
    let described = get(&router, "/v1/streams/inventory").await;
    let hw: u64 = described.body["partition_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["high_watermark"].as_u64().unwrap())
        .sum();
    assert_eq!(hw, 1);
    let list = get(&router, "/v1/streams").await;
    assert_eq!(list.body[0]["name"], "inventory");
    assert_problem(
        &get(&router, "/v1/streams/nothing").await,
        404,
        "stream.unknown",
    );
    assert_problem(
        &get(&router, "/v1/streams/..%2Fx").await,
        400,
        "name.invalid",
    );
    app.close().await.unwrap();
}

#[tokio::test]
async fn a_registered_schema_rejects_invalid_data_with_its_paths() {
    let (_dir, app) = app().await;
    let router = app.router();
    let schema = json!({
        "type": "object",
        "properties": {"amount": {"type": "number"}},
        "required": ["amount"]
    });
    let registered = call(
        &router,
        request(
            "POST",
            "/registry/subjects/order.placed/versions",
            Some("application/json"),
            json!({"schema": schema.to_string()}).to_string(),
        ),
    )
    .await;
    assert_eq!(registered.status, StatusCode::OK, "{}", registered.text);
    let bad = publish(
        &router,
        event("s1", "order.placed", json!({"amount": "ten"})),
    )
    .await;
    assert_problem(&bad, 400, "schema.invalid");
    assert_eq!(bad.body["errors"][0]["path"], "/data/amount");
    let good = publish(&router, event("s2", "order.placed", json!({"amount": 10}))).await;
    assert_eq!(good.status, StatusCode::ACCEPTED, "{}", good.text);
    app.close().await.unwrap();
}

#[tokio::test]
async fn health_readiness_metrics_and_unknown_routes() {
    let (_dir, app) = app().await;
    let router = app.router();
    assert_eq!(get(&router, "/healthz").await.body["status"], "ok");
    assert_eq!(get(&router, "/readyz").await.body["status"], "ready");
    put_group(&router, "lagging", json!({"filter": "order.*"})).await;
    publish(&router, event("m1", "order.placed", json!(1))).await;
    let metrics = get(&router, "/metrics").await;
    assert!(metrics.content_type.starts_with("text/plain"));
    for needle in [
        "runnel_events_published_total{stream=\"order\",type=\"order.placed\"} 1",
        "runnel_consumer_lag_events{group=\"lagging\",stream=\"order\",partition=",
        "runnel_consumer_lag_seconds{group=\"lagging\"",
        "runnel_dlq_depth{group=\"lagging\"} 0",
        "runnel_dlq_alert{group=\"lagging\"} 0",
    ] {
        assert!(
            metrics.text.contains(needle),
            "missing {needle}:\n{}",
            metrics.text
        );
    }
    let messages = pull(&router, "lagging", 1, 5_000).await;
    send_json(
        &router,
        "POST",
        "/v1/groups/lagging/ack",
        json!({"receipts": [messages[0]["receipt"]]}),
    )
    .await;
    let metrics = get(&router, "/metrics").await.text;
    assert!(metrics.contains("runnel_events_consumed_total{group=\"lagging\",stream=\"order\",type=\"order.placed\"} 1"), "{metrics}");
    assert!(
        metrics.contains("runnel_handler_latency_seconds_count{group=\"lagging\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("runnel_consumer_delivered_total{group=\"lagging\"} 1"),
        "{metrics}"
    );
    assert_problem(&get(&router, "/nope").await, 404, "route.unknown");
    let wrong = call(
        &router,
        request("DELETE", "/v1/events", None, Body::empty()),
    )
    .await;
    assert_problem(&wrong, 405, "route.method_not_allowed");
    app.close().await.unwrap();
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let (_dir, app) = app().await;
    let doc = get(&app.router(), "/openapi.json").await.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let expected = [
        ("post", "/v1/events"),
        ("get", "/v1/streams"),
        ("post", "/v1/streams"),
        ("get", "/v1/streams/{stream}"),
        ("get", "/v1/groups"),
        ("put", "/v1/groups/{group}"),
        ("get", "/v1/groups/{group}"),
        ("post", "/v1/groups/{group}/pull"),
        ("post", "/v1/groups/{group}/ack"),
        ("post", "/v1/groups/{group}/nack"),
        ("get", "/v1/groups/{group}/events"),
        ("get", "/v1/groups/{group}/dlq"),
        ("delete", "/v1/groups/{group}/dlq"),
        ("post", "/v1/groups/{group}/dlq/replay"),
        ("get", "/v1/groups/{group}/dlq/{id}"),
        ("delete", "/v1/groups/{group}/dlq/{id}"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
        ("post", "/registry/subjects/{subject}/versions"),
        ("get", "/registry/config"),
    ];
    for (method, path) in expected {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    app.close().await.unwrap();
}

/// A client that pulls and does not ack gets at most `max_ack_pending` events of a partition:
/// the server holds the rest back in the log, and hands them out as acks come in.
#[tokio::test]
async fn a_client_that_does_not_ack_is_held_back_at_max_ack_pending() {
    let (_dir, app) = app().await;
    let router = app.router();
    let created = send_json(
        &router,
        "POST",
        "/v1/streams",
        json!({"name": "slow", "partitions": 1}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let group = json!({"filter": "slow.*", "max_in_flight": 4, "max_ack_pending": 10});
    assert_eq!(
        put_group(&router, "laggard", group).await.status,
        StatusCode::CREATED
    );
    for n in 0..100 {
        let reply = publish(
            &router,
            event(&format!("s{n}"), "slow.done", json!({"n": n})),
        )
        .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    }
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 100 {
        // Pull until nothing more comes without an ack.
        let mut receipts = Vec::new();
        loop {
            let messages = pull(&router, "laggard", 100, 300).await;
            if messages.is_empty() {
                break;
            }
            for message in messages {
                assert!(
                    seen.insert(message["event"]["id"].as_str().unwrap().to_string()),
                    "delivered twice: {message}"
                );
                receipts.push(message["receipt"].clone());
            }
        }
        let expected = 10.min(100 - (seen.len() - receipts.len()));
        assert_eq!(
            receipts.len(),
            expected,
            "outstanding unacked deliveries are bounded by max_ack_pending"
        );
        let reply = send_json(
            &router,
            "POST",
            "/v1/groups/laggard/ack",
            json!({ "receipts": receipts }),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
    app.close().await.unwrap();
}

async fn delete(router: &axum::Router, path: &str) -> Reply {
    call(router, request("DELETE", path, None, Body::empty())).await
}

#[tokio::test]
async fn a_stream_a_group_reads_is_deleted_only_when_forced() {
    let (_dir, app) = app().await;
    let router = app.router();
    put_group(&router, "billing", json!({"filter": "order.*"})).await;
    publish(&router, event("o1", "order.placed", json!(1))).await;
    publish(&router, event("p1", "payment.charged", json!(1))).await;

    let refused = delete(&router, "/v1/streams/order").await;
    assert_problem(&refused, 409, "stream.in_use");
    assert_eq!(
        refused.body["groups"],
        json!(["billing"]),
        "{}",
        refused.text
    );
    assert!(
        refused.text.contains("billing") && refused.text.contains("force"),
        "{}",
        refused.text
    );
    assert_eq!(
        get(&router, "/v1/streams/order").await.status,
        StatusCode::OK
    );

    // Read by no group but the correlation index (on by default): deleted at once.
    let unread = delete(&router, "/v1/streams/payment").await;
    assert_eq!(unread.status, StatusCode::NO_CONTENT, "{}", unread.text);
    assert_problem(
        &get(&router, "/v1/streams/payment").await,
        404,
        "stream.unknown",
    );

    let forced = delete(&router, "/v1/streams/order?force=true").await;
    assert_eq!(forced.status, StatusCode::NO_CONTENT, "{}", forced.text);
    assert_problem(
        &get(&router, "/v1/streams/order").await,
        404,
        "stream.unknown",
    );
    assert_problem(
        &delete(&router, "/v1/streams/order").await,
        404,
        "stream.unknown",
    );
    assert_problem(
        &delete(&router, "/v1/streams/..%2Fx").await,
        400,
        "name.invalid",
    );
    assert_problem(
        &delete(&router, "/v1/streams/order?force=maybe").await,
        400,
        "request.invalid_query",
    );

    // Published to again: the stream is new, and the group gets only what came since.
    publish(&router, event("o2", "order.placed", json!(2))).await;
    let messages = pull(&router, "billing", 10, 2_000).await;
    let ids: Vec<&str> = messages
        .iter()
        .map(|m| m["event"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["o2"]);
    app.close().await.unwrap();
}

#[tokio::test]
async fn a_group_with_a_running_consumer_is_deleted_only_when_forced() {
    let (_dir, app) = app().await;
    let router = app.router();
    put_group(&router, "billing", json!({"filter": "order.*"})).await;
    publish(&router, event("o1", "order.placed", json!(1))).await;
    let first = pull(&router, "billing", 1, 2_000).await;
    assert_eq!(first.len(), 1);

    let refused = delete(&router, "/v1/groups/billing").await;
    assert_problem(&refused, 409, "group.in_use");
    let consumers = refused.body["consumers"].as_array().expect("consumers");
    assert_eq!(consumers.len(), 1, "{}", refused.text);
    assert_eq!(
        get(&router, "/v1/groups/billing").await.status,
        StatusCode::OK
    );

    let forced = delete(&router, "/v1/groups/billing?force=true").await;
    assert_eq!(forced.status, StatusCode::NO_CONTENT, "{}", forced.text);
    assert_problem(
        &get(&router, "/v1/groups/billing").await,
        404,
        "group.unknown",
    );
    assert_problem(
        &delete(&router, "/v1/groups/billing").await,
        404,
        "group.unknown",
    );
    let receipt = first[0]["receipt"].as_str().unwrap();
    let ack = send_json(
        &router,
        "POST",
        "/v1/groups/billing/ack",
        json!({"receipts": [receipt]}),
    )
    .await;
    assert_eq!(ack.status.as_u16(), 404, "{}", ack.text);

    // The server's own stages' groups are refused without force, and while a stage runs
    // them (the correlation index does here) even with it: the stage would stop silently.
    assert_problem(
        &delete(&router, "/v1/groups/trace-index").await,
        409,
        "group.internal",
    );
    let forced = delete(&router, "/v1/groups/trace-index?force=true").await;
    assert_problem(&forced, 409, "group.internal");
    assert!(
        forced.body["consumers"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
            && forced.body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("would stop that stage silently")),
        "{}",
        forced.text
    );
    assert_problem(
        &delete(&router, "/v1/groups/..%2Fx").await,
        400,
        "name.invalid",
    );

    // Created again, the group starts over: nothing of the old one is left.
    put_group(&router, "billing", json!({"filter": "order.*"})).await;
    let again = pull(&router, "billing", 10, 2_000).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["event"]["id"], "o1");
    assert_eq!(again[0]["attempt"], 1, "no attempt of the old group counts");
    app.close().await.unwrap();
}

#[tokio::test]
async fn the_servers_own_groups_are_not_configured_or_consumed_over_http() {
    let (_dir, app) = app().await;
    let router = app.router();
    publish(&router, event("o1", "order.placed", json!(1))).await;
    // The correlation index runs in the server: a client pulling its group would take its
    // partitions, and its acks would commit past events the index never wrote.
    for (method, path, body) in [
        ("POST", "/v1/groups/trace-index/pull", json!({"max": 1})),
        (
            "POST",
            "/v1/groups/trace-index/ack",
            json!({"receipts": ["r"]}),
        ),
        (
            "POST",
            "/v1/groups/trace-index/nack",
            json!({"receipt": "r", "class": "transient", "reason": "x"}),
        ),
        ("PUT", "/v1/groups/trace-index", json!({"filter": ">"})),
        (
            "PUT",
            "/v1/groups/saga-orders",
            json!({"filter": "order.*"}),
        ),
        (
            "PUT",
            "/v1/groups/features-spend",
            json!({"filter": "order.*"}),
        ),
        (
            "PUT",
            "/v1/groups/inference-fraud",
            json!({"filter": "order.*"}),
        ),
    ] {
        let answer = send_json(&router, method, path, body).await;
        assert_problem(&answer, 409, "group.internal");
        assert!(
            answer.body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("not configured or consumed over HTTP")),
            "{method} {path}: {}",
            answer.text
        );
    }
    let stream = get(&router, "/v1/groups/trace-index/events").await;
    assert_problem(&stream, 409, "group.internal");
    // Still shown, with its progress.
    assert_eq!(
        get(&router, "/v1/groups/trace-index").await.status,
        StatusCode::OK
    );
    app.close().await.unwrap();
}
