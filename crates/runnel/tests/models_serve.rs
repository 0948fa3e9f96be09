//! `[[models]]` in `runnel.toml`, run by the real `runnel serve`: a bad table is refused at
//! start naming the table and the field (exit 2); a good one scores `order.placed` events with
//! the shipped logistic regression, its feature inputs read from the online store of the
//! server's `[[features]]` set, and the prediction events carry scikit-learn's probabilities;
//! `/v1/models`, `/metrics` and `runnel models list|show` show it; a SIGHUP reloads the model
//! file (checked, then swapped: later events are scored by the new version), and so does the
//! file changing, without a signal; SIGTERM stops it cleanly.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{get, runnel};

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

/// (inputs, scikit-learn's fraud probability under LR, under RF) of the committed test set.
fn test_set() -> Vec<(Vec<f64>, f64, f64)> {
    let text = std::fs::read_to_string(models_dir().join("fraud_testset.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let cells: Vec<f64> = line.split(',').map(|c| c.parse().unwrap()).collect();
            (cells[..5].to_vec(), cells[6], cells[7])
        })
        .collect()
}

/// A feature set of each customer's latest summary (what a real pipeline would compute from
/// orders; `last` keeps the test's numbers exact), and the model reading it.
fn config(model: &Path) -> String {
    format!(
        r#"
default_partitions = 1

[[features]]
name = "customer_1h"
input = "customer.summarized"
window = {{ kind = "tumbling", size = "1h" }}
output = "feature.computed"
aggregates = [
  {{ name = "orders", kind = "last", field = "/orders" }},
  {{ name = "spent", kind = "last", field = "/spent" }},
  {{ name = "mean", kind = "last", field = "/mean" }},
  {{ name = "merchants", kind = "last", field = "/merchants" }},
]

[[models]]
name = "fraud"
input = "order.placed"
output = "fraud.scored"
onnx = {{ path = "{}" }}
outputs = ["legit", "fraud"]
inputs = [
  {{ name = "amount", pointer = "/amount" }},
  {{ name = "orders_1h", feature = "customer_1h.orders" }},
  {{ name = "spent_1h", feature = "customer_1h.spent" }},
  {{ name = "mean_1h", feature = "customer_1h.mean" }},
  {{ name = "merchants_1h", feature = "customer_1h.merchants" }},
]
fallback = {{ legit = "0.98", fraud = "0.02" }}
timeout = "2s"
deadline = "5s"
"#,
        model.display()
    )
}

fn publish(base: &str, event: Value) {
    let (status, body) = common::publish(base, &event).expect("publish");
    assert_eq!(status, 202, "{body}");
}

/// Pulls (and acks) prediction events through group `check` until `want` distinct ones came;
/// panics on an id seen twice.
fn predictions(base: &str, seen: &mut BTreeMap<String, Value>, want: usize) {
    let started = Instant::now();
    while seen.len() < want {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} of {want} predictions",
            seen.len()
        );
        let (status, pulled) = common::json(
            "POST",
            &format!("{base}/v1/groups/check/pull"),
            &json!({"max": 100, "wait_ms": 500}),
        )
        .expect("pull");
        assert_eq!(status, 200, "{pulled}");
        let messages = pulled["messages"].as_array().cloned().unwrap_or_default();
        if messages.is_empty() {
            continue;
        }
        let receipts: Vec<Value> = messages.iter().map(|m| m["receipt"].clone()).collect();
        common::json(
            "POST",
            &format!("{base}/v1/groups/check/ack"),
            &json!({ "receipts": receipts }),
        )
        .expect("ack");
        for m in messages {
            let id = m["event"]["id"].as_str().expect("an id").to_string();
            assert!(
                seen.insert(id.clone(), m["event"].clone()).is_none(),
                "{id} twice"
            );
        }
    }
}

fn order(n: usize, amount: f64) -> Value {
    json!({
        "specversion": "1.0",
        "id": format!("order-{n}"),
        "source": "test://shop",
        "type": "order.placed",
        "partitionkey": format!("c{}", n % 10),
        "data": {"amount": amount},
    })
}

#[test]
fn a_bad_models_table_is_refused_at_start_naming_the_table_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = config(&models_dir().join("fraud_lr.onnx"));
    let cases = [
        (
            good.replace("timeout = \"2s\"", "timout = \"2s\""),
            "models[0] (fraud): unknown field `timout`",
        ),
        (
            good.replace("customer_1h.spent", "customer_2h.spent"),
            "models[0] (fraud).inputs[2].feature: no [[features]] set `customer_2h`",
        ),
        (
            good.replace("customer_1h.mean", "customer_1h.median"),
            "models[0] (fraud).inputs[3].feature: feature set `customer_1h` has no aggregate `median`",
        ),
        (
            good.replace("fraud = \"0.02\"", "fraud = \"amout * 2\""),
            "models[0] (fraud).fallback.fraud",
        ),
    ];
    for (text, expected) in cases {
        common::refused_at_start(dir.path(), &text, expected);
    }
}

/// Each of the first ten customers' features from the test set, then an event two hours
/// later that closes their window; returns once the last customer's features are served.
fn summarize_customers(base: &str, rows: &[(Vec<f64>, f64, f64)]) {
    for (i, (inputs, _, _)) in rows.iter().take(10).enumerate() {
        publish(
            base,
            json!({
                "specversion": "1.0", "id": format!("summary-{i}"), "source": "test://crm",
                "type": "customer.summarized", "time": "2026-01-01T00:10:00Z",
                "partitionkey": format!("c{i}"),
                "data": {"orders": inputs[1], "spent": inputs[2], "mean": inputs[3], "merchants": inputs[4]},
            }),
        );
    }
    publish(
        base,
        json!({
            "specversion": "1.0", "id": "tick", "source": "test://crm",
            "type": "customer.summarized", "time": "2026-01-01T02:10:00Z",
            "partitionkey": "tick", "data": {"orders": 0, "spent": 0, "mean": 0, "merchants": 0},
        }),
    );
    wait_for(&format!("{base}/v1/features/customer_1h/c9"), |_| true);
}

#[test]
fn a_shadow_forest_scores_the_same_orders_and_is_compared_with_the_live_regression() {
    let dir = tempfile::tempdir().unwrap();
    let lr = models_dir().join("fraud_lr.onnx");
    let rf = models_dir().join("fraud_rf.onnx");
    let shadow = config(&rf)
        .split("[[models]]")
        .nth(1)
        .unwrap()
        .replacen(
            "name = \"fraud\"",
            "name = \"fraud_rf\"\nshadow_of = \"fraud\"",
            1,
        )
        .replacen("fraud.scored", "fraud_shadow.scored", 1);
    std::fs::write(
        dir.path().join("runnel.toml"),
        format!("{}\n[[models]]{shadow}", config(&lr)),
    )
    .unwrap();
    let server = serve(dir.path());
    let base = server.url();
    let rows = test_set();
    summarize_customers(&base, &rows);
    for (i, (inputs, _, _)) in rows.iter().take(10).enumerate() {
        publish(&base, order(i, inputs[0]));
    }
    wait_for(&format!("{base}/v1/models"), |m| {
        m[0]["predictions"]["model"] == 10 && m[1]["predictions"]["model"] == 10
    });
    // What scikit-learn says: how often the regression and the forest pick the same class,
    // and their largest difference.
    let agreeing = rows[..10]
        .iter()
        .filter(|(_, lr, rf)| (*lr > 0.5) == (*rf > 0.5))
        .count();
    let largest = rows[..10]
        .iter()
        .map(|(_, lr, rf)| (rf - lr).abs())
        .fold(0.0, f64::max);
    let out = runnel(&["models", "compare", "fraud", "--url", &base, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["compared"], 10, "{report}");
    assert_eq!(report["shadow"]["model"], "fraud_rf");
    assert_eq!(report["shadow"]["output"], "fraud_shadow.scored");
    let agreement = report["agreement"].as_f64().unwrap();
    assert!(
        (agreement - agreeing as f64 / 10.0).abs() < 1e-9,
        "{report}"
    );
    let max_abs = report["deltas"][1]["max_abs"].as_f64().unwrap();
    assert!((max_abs - largest).abs() <= 2e-5, "{max_abs} vs {largest}");
    let out = runnel(&["models", "compare", "fraud", "--url", &base]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("compared 10 inputs") && text.contains("MAX |Δ|"),
        "{text}"
    );
    // The shadow has no shadow; a name that is not one is refused.
    let (status, problem) = get(&format!("{base}/v1/models/fraud_rf/compare"));
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("model.no_shadow"))
    );
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("runnel models compare fraud --shadow fraud_rf")),
        "{problem}"
    );
    let (status, problem) = get(&format!("{base}/v1/models/fraud/compare?shadow=nope"));
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("model.no_shadow")),
        "{problem}"
    );
    let (status, _) = get(&format!("{base}/v1/models/fraud/compare?last=0"));
    assert_eq!(status, 400);
}

#[test]
fn serve_scores_events_with_features_as_scikit_learn_does_and_reloads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    // The model file the config names: the logistic regression now, the forest after the
    // reload.
    let model = dir.path().join("fraud.onnx");
    std::fs::copy(models_dir().join("fraud_lr.onnx"), &model).unwrap();
    std::fs::write(dir.path().join("runnel.toml"), config(&model)).unwrap();
    let server = serve(dir.path());
    let base = server.url();
    let (status, body) = common::json(
        "PUT",
        &format!("{base}/v1/groups/check"),
        &json!({"filter": "fraud.scored"}),
    )
    .expect("create the check group");
    assert!(status == 201 || status == 200, "{body}");

    let rows = test_set();
    summarize_customers(&base, &rows);

    for (i, (inputs, _, _)) in rows.iter().take(10).enumerate() {
        publish(&base, order(i, inputs[0]));
    }
    let mut seen = BTreeMap::new();
    predictions(&base, &mut seen, 10);
    let first_version = {
        let (_, model) = get(&format!("{base}/v1/models/fraud"));
        model["version"].as_str().unwrap().to_string()
    };
    assert!(first_version.starts_with("sha-"), "{first_version}");
    for event in seen.values() {
        let data = &event["data"];
        let i: usize = data["entity"].as_str().unwrap()[1..].parse().unwrap();
        let fraud = data["outputs"]["fraud"].as_f64().unwrap();
        assert!(
            (fraud - rows[i].1).abs() <= 1e-5,
            "c{i}: {fraud} vs scikit-learn {}",
            rows[i].1
        );
        assert_eq!(data["served_by"], "model", "{data}");
        assert_eq!(data["version"], first_version.as_str());
        assert_eq!(data["inputs"]["orders_1h"].as_f64(), Some(rows[i].0[1]));
    }

    let models = wait_for(&format!("{base}/v1/models"), |m| {
        m[0]["predictions"]["model"] == 10
    });
    assert_eq!(models[0]["name"], "fraud");
    assert_eq!(models[0]["breaker"], "closed");
    assert_eq!(models[0]["group"], "inference-fraud");
    assert_eq!(
        models[0]["predictions"],
        json!({"model": 10, "cache": 0, "fallback": 0})
    );
    let (status, problem) = get(&format!("{base}/v1/models/nope"));
    assert_eq!(
        (status, problem["code"].as_str()),
        (404, Some("model.unknown"))
    );

    let text = ureq::get(&format!("{base}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    for needle in [
        "runnel_predictions_total{model=\"fraud\",outcome=\"model\"} 10",
        "runnel_model_circuit_state{model=\"fraud\"} 0",
        "runnel_model_calls_total{model=\"fraud\",result=\"ok\"}",
    ] {
        assert!(text.contains(needle), "{needle} in\n{text}");
    }

    let out = runnel(&["models", "list", "--url", &base]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && table.contains("fraud") && table.contains("closed"),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = runnel(&["models", "show", "fraud", "--url", &base, "--json"]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(shown["version"], first_version.as_str(), "{shown}");

    // A new file and a SIGHUP: checked, swapped; later events are scored by it.
    std::fs::copy(models_dir().join("fraud_rf.onnx"), &model).unwrap();
    server.signal(libc::SIGHUP);
    let reloaded = wait_for(&format!("{base}/v1/models/fraud"), |m| {
        m["version"] != first_version.as_str()
    });
    let second_version = reloaded["version"].as_str().unwrap().to_string();
    for (i, (inputs, _, _)) in rows.iter().take(10).enumerate() {
        publish(&base, order(10 + i, inputs[0]));
    }
    predictions(&base, &mut seen, 20);
    let after: Vec<&Value> = seen
        .values()
        .filter(|e| e["data"]["version"] == second_version.as_str())
        .collect();
    assert_eq!(after.len(), 10, "ten scored by the new version");
    for event in after {
        let data = &event["data"];
        let i: usize = data["entity"].as_str().unwrap()[1..].parse().unwrap();
        let fraud = data["outputs"]["fraud"].as_f64().unwrap();
        assert!(
            (fraud - rows[i].2).abs() <= 1e-5,
            "c{i}: {fraud} vs scikit-learn's forest {}",
            rows[i].2
        );
    }
    // A file of another shape is refused; the version serving stays.
    std::fs::write(&model, b"not a model").unwrap();
    server.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    let (_, still) = get(&format!("{base}/v1/models/fraud"));
    assert_eq!(still["version"], second_version.as_str());
    // No signal: the file changing is enough. The first version's file again.
    std::fs::copy(models_dir().join("fraud_lr.onnx"), &model).unwrap();
    wait_for(&format!("{base}/v1/models/fraud"), |m| {
        m["version"] == first_version.as_str()
    });

    let mut server = server;
    server.signal(libc::SIGTERM);
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "clean exit on SIGTERM");
}

fn serve(dir: &Path) -> common::Serve {
    common::serve_dir(dir)
}

fn wait_for(url: &str, done: impl Fn(&Value) -> bool) -> Value {
    common::wait_for(url, Duration::from_secs(60), done)
}
