//! `GET /v1/trace/{correlationid}`: a workflow's events across streams from the correlation
//! index, causes before effects; unknown ids and a server without the index answer problems.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn a_workflow_is_traced_across_streams_in_causal_order() {
    let (_dir, app) = app().await;
    let router = app.router();
    let mut root = event("o-1", "order.placed", json!({"amount": 12}));
    root["time"] = json!("2026-12-07T10:00:00Z");
    let mut scored = event("f-1", "fraud.scored", json!({"score": 0.1}));
    scored["correlationid"] = json!("o-1");
    scored["causationid"] = json!("o-1");
    scored["time"] = json!("2026-12-07T10:00:01Z");
    let mut charged = event("p-1", "payment.charged", json!({}));
    charged["correlationid"] = json!("o-1");
    charged["causationid"] = json!("f-1");
    charged["time"] = json!("2026-12-07T10:00:02Z");
    let other = event("o-2", "order.placed", json!({"amount": 3}));
    // Effects first: the order in the log is not the causal order.
    for e in [charged, scored, root, other] {
        assert_eq!(publish(&router, e).await.status, 202);
    }
    let mut reply = get(&router, "/v1/trace/o-1").await;
    for _ in 0..200 {
        if reply.status == 200 && reply.body["events"].as_array().map(Vec::len) == Some(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        reply = get(&router, "/v1/trace/o-1").await;
    }
    assert_eq!(reply.status, 200, "{}", reply.text);
    let events = reply.body["events"].as_array().expect("events");
    let seen: Vec<(u64, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["depth"].as_u64().unwrap(),
                e["id"].as_str().unwrap(),
                e["stream"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (0, "o-1", "order"),
            (1, "f-1", "fraud"),
            (2, "p-1", "payment")
        ]
    );
    assert_eq!(reply.body["truncated"], false);
    assert_eq!(events[2]["causationid"], "f-1");
    assert_eq!(events[0]["time"], "2026-12-07T10:00:00Z");

    assert_problem(
        &get(&router, "/v1/trace/nothing-here").await,
        404,
        "trace.unknown",
    );
    app.close().await.unwrap();
}

#[tokio::test]
async fn a_server_without_the_index_says_so() {
    let (_dir, app) = app_with(|config| config.trace_index = false).await;
    let router = app.router();
    assert_eq!(
        publish(&router, event("o-1", "order.placed", json!({})))
            .await
            .status,
        202
    );
    assert_problem(&get(&router, "/v1/trace/o-1").await, 404, "trace.disabled");
    let groups = get(&router, "/v1/groups").await;
    assert!(
        !groups.text.contains("trace-index"),
        "no index group without the index: {}",
        groups.text
    );
    app.close().await.unwrap();
}
