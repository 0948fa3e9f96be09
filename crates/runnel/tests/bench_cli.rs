//! The `runnel bench log` command runs end to end and its JSON carries the promised fields.

use std::process::Command;

#[test]
fn bench_log_quick_prints_one_json_object_per_run() {
    let output = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args([
            "bench",
            "log",
            "--quick",
            "--json",
            "--only",
            "replay,recovery",
        ])
        .output()
        .expect("run runnel bench log");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let runs: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    let workloads: Vec<&str> = runs
        .iter()
        .map(|r| r["workload"].as_str().unwrap())
        .collect();
    assert_eq!(workloads, ["replay", "recovery", "recovery-rebuild"]);
    for run in &runs {
        for field in ["records_per_sec", "mb_per_sec", "seconds", "records"] {
            assert!(run[field].as_f64().unwrap() > 0.0, "{field} in {run}");
        }
        for field in ["p50_us", "p99_us", "peak_rss_mib"] {
            assert!(run.get(field).is_some(), "{field} missing in {run}");
        }
    }
    assert!(runs[1]["log_bytes"].as_u64().unwrap() >= 128 << 20);
}

#[test]
fn unknown_flags_are_a_usage_error_with_exit_code_2() {
    let output = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["bench", "log", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--no-such-flag"));
}
