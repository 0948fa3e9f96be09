//! `runnel demo` as a user runs it, with fewer events: it exits 0 and its JSON summary adds up
//! for every group, the feature set, the fraud model's predictions and the order saga, checked
//! against the server and the simulated services' ledgers. Every failure the demo injects is a
//! function of the order number, so the counts are exact.

use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};

#[test]
fn demo_with_300_events_accounts_for_every_event_in_every_group() {
    let summary = demo_of_300();
    assert_eq!(summary["events"], 300);
    assert_eq!(summary["published"], 300);
    assert_eq!(summary["ok"], true);
    assert!(summary["duration_secs"].as_f64().unwrap() > 0.0);
    let groups = summary["groups"].as_array().unwrap();
    let names: Vec<&str> = groups
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["payments", "inventory", "emails", "analytics"]);
    for group in groups {
        let acked = group["acked"].as_u64().unwrap();
        let dead = group["dead_lettered"].as_u64().unwrap();
        assert_eq!(acked + dead, 300, "{group}");
        assert_eq!(group["lag"], 0, "{group}");
        assert_eq!(group["missing"], 0, "{group}");
    }
    let by_name = |name: &str| groups.iter().find(|g| g["group"] == name).unwrap();
    // Orders 7, 57, …, 257 have bad addresses; the payment failures all recover.
    assert_eq!(by_name("emails")["dead_lettered"], 6);
    assert_eq!(by_name("payments")["dead_lettered"], 0);
    assert!(by_name("payments")["retries"].as_u64().unwrap() >= 15);
}

#[test]
fn demo_with_300_events_scores_every_order_through_a_slow_model_and_settles_every_saga() {
    let summary = demo_of_300();

    // The feature set counted every order; 300 orders are 100 minutes of event time, so
    // windows of the sliding hour closed and fed the model.
    let features = &summary["features"];
    assert_eq!(features["counted"], 300, "{features}");
    assert_eq!(features["dead_lettered"], 0, "{features}");
    assert_eq!(features["ok"], true, "{features}");
    assert!(features["results"].as_u64().unwrap() > 0, "{features}");

    // One prediction per order. Orders 120..180 met the slow model: the 54 of regular customers
    // (all 50 were scored by the model before) came from the cache, the 6 guest checkouts
    // (123, 133, 143, 153, 163, 173) from the fallback rule; the other 240 from the model.
    let predictions = &summary["predictions"];
    assert_eq!(summary["phases"]["slow_from"], 120);
    assert_eq!(summary["phases"]["slow_until"], 180);
    assert_eq!(predictions["predictions"], 300, "{predictions}");
    let outcomes = json!({"model": 240, "cache": 54, "fallback": 6});
    assert_eq!(predictions["outcomes"], outcomes, "{predictions}");
    assert_eq!(predictions["expected"], outcomes, "{predictions}");
    assert_eq!(predictions["stage"], outcomes, "{predictions}");
    let degraded: u64 = predictions["degraded_reasons"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(degraded, 60, "{predictions}");
    assert_eq!(predictions["dead_lettered"], 0, "{predictions}");
    assert!(
        predictions["with_customer_history"].as_u64().unwrap() > 0,
        "{predictions}"
    );
    // Stolen cards are orders 23, 63, …, 263: flagged, whichever step answered.
    assert_eq!(predictions["flagged"], 7, "{predictions}");
    assert_eq!(predictions["approved"], 293, "{predictions}");
    assert_eq!(predictions["misjudged"], 0, "{predictions}");
    assert_eq!(predictions["ok"], true, "{predictions}");

    // The breaker opened while the model was slow and closed after it recovered.
    let breaker: Vec<(&str, &str)> = predictions["breaker"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["from"].as_str().unwrap(), t["to"].as_str().unwrap()))
        .collect();
    assert_eq!(breaker.first(), Some(&("closed", "open")), "{breaker:?}");
    assert_eq!(
        breaker.last(),
        Some(&("half_open", "closed")),
        "{breaker:?}"
    );

    // One saga per approved order, each with the outcome its order's injected failure makes:
    // out of stock 11, 61, …, 261 (6), card declined 29, 79, …, 279 (6), shipping timeout
    // 47, 147, 247 (3) compensated; the other 278 completed.
    let sagas = &summary["sagas"];
    assert_eq!(sagas["instances"], 293, "{sagas}");
    let outcomes = json!({"completed": 278, "compensated": 15, "stuck": 0});
    assert_eq!(sagas["outcomes"], outcomes, "{sagas}");
    assert_eq!(sagas["expected"], outcomes, "{sagas}");
    assert_eq!(sagas["unfinished"], 0, "{sagas}");
    assert_eq!(
        sagas["compensated_by_failure"],
        json!({"card_declined": 6, "out_of_stock": 6, "ship_timeout": 3}),
        "{sagas}"
    );
    // Declined cards and shipping timeouts had reserved: 9 released exactly that; the
    // shipping timeouts had charged: 3 refunded exactly that.
    let ledger = &sagas["ledger"];
    assert_eq!(ledger["compensated_with_reservation"], 9, "{ledger}");
    assert_eq!(ledger["released_exactly"], 9, "{ledger}");
    assert_eq!(ledger["compensated_with_charge"], 3, "{ledger}");
    assert_eq!(ledger["refunded_exactly"], 3, "{ledger}");
    assert_eq!(ledger["shipped"], 278, "{ledger}");
    // Each command executed once: reserve 293 + release 9; charge 287 + refund 3; ship 281
    // instances, 278 + the 3 never answered twice (two attempts) = 284 (a loaded machine may
    // add a second attempt of a shipment answered late, which ships nothing more: `shipped`
    // above is exact).
    let commands = &sagas["commands"];
    assert_eq!(commands["inventory-service"]["executed"], 302, "{commands}");
    assert_eq!(commands["payment-service"]["executed"], 290, "{commands}");
    let shipping = commands["shipping-service"]["executed"].as_u64().unwrap();
    assert!((284..=2 * 281).contains(&shipping), "{commands}");
    assert_eq!(sagas["problems"], json!([]), "{sagas}");
    assert_eq!(sagas["ok"], true, "{sagas}");
    assert_eq!(summary["ok"], true);
}

/// One `runnel demo --events 300 --json` run, shared by the tests that read its summary.
fn demo_of_300() -> &'static Value {
    static SUMMARY: OnceLock<Value> = OnceLock::new();
    SUMMARY.get_or_init(|| demo_json(300))
}

fn demo_json(events: u64) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["demo", "--events", &events.to_string(), "--json"])
        .output()
        .expect("run runnel demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).expect("the summary is JSON")
}

#[test]
fn demo_prints_a_summary_table_for_people() {
    let output = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["demo", "--events", "100"])
        .output()
        .expect("run runnel demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("dead-lettered"), "{stdout}");
    assert!(
        stdout.contains("every group accounted for all 100 events"),
        "{stdout}"
    );
    // It says what it shows as it runs, and what came of it.
    for said in [
        "the fraud model is slow now",
        "breaker closed → open",
        "the fraud model is fast again",
        "breaker half_open → closed",
        "answered by",
        "compensated because:",
        "every compensated order released exactly what it reserved",
        "all 100 orders accounted for in every group, the features, the predictions and the sagas",
        "demo ran",
    ] {
        assert!(stdout.contains(said), "{said:?} missing from\n{stdout}");
    }
}

#[test]
fn demo_refuses_a_data_dir_a_previous_run_left_instead_of_reporting_every_event_missing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("left-over"), b"x").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["demo", "--events", "10", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run runnel demo");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is not empty"), "{stderr}");
}
