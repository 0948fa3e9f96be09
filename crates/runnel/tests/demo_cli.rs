//! `runnel demo` as a user runs it, with fewer events: it exits 0 and its JSON summary adds up
//! for every group, checked against the server.

use std::process::Command;

use serde_json::Value;

#[test]
fn demo_with_300_events_accounts_for_every_event_in_every_group() {
    let output = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["demo", "--events", "300", "--json"])
        .output()
        .expect("run runnel demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_str(&stdout).expect("the summary is JSON");
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
    assert!(stdout.contains("demo ran"), "{stdout}");
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
