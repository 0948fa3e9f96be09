//! `runnel bench inference` runs end to end at tiny sizes: its JSON carries the promised
//! fields, and every input the stage runs published got exactly one prediction.

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> Vec<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["bench", "inference", "--json"])
        .args(args)
        .env_remove("RUNNEL_TEST_MLSERVER")
        .output()
        .expect("run runnel bench inference");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect()
}

#[test]
fn bench_inference_reports_each_model_and_batch_and_accounts_for_every_event() {
    let runs = bench(&[
        "--only",
        "models,stage",
        "--row-seconds",
        "0.05",
        "--rate",
        "300",
        "--seconds",
        "1",
        "--customers",
        "20",
    ]);
    let (models, stages): (Vec<&Value>, Vec<&Value>) =
        runs.iter().partition(|r| r["workload"] == "model");
    let rows: Vec<(&str, u64)> = models
        .iter()
        .map(|r| (r["model"].as_str().unwrap(), r["batch"].as_u64().unwrap()))
        .collect();
    assert_eq!(rows, [("lr", 1), ("lr", 32), ("rf", 1), ("rf", 32)]);
    for run in &models {
        assert_eq!(run["runner"], "in_process", "{run}");
        assert_eq!(
            run["rows"].as_u64().unwrap(),
            run["calls"].as_u64().unwrap() * run["batch"].as_u64().unwrap(),
            "{run}"
        );
        assert!(run["calls"].as_u64().unwrap() >= 10, "{run}");
        for field in [
            "rows_per_sec",
            "us_per_row",
            "pooled_us_per_row",
            "call_p50_us",
        ] {
            assert!(run[field].as_f64().unwrap() > 0.0, "{field} in {run}");
        }
        assert!(run["over_in_process"].is_null(), "{run}");
    }
    let fsyncs: Vec<&str> = stages
        .iter()
        .map(|r| r["fsync"].as_str().unwrap())
        .collect();
    assert_eq!(fsyncs, ["os", "group"]);
    for run in &stages {
        assert_eq!(run["workload"], "stage", "{run}");
        assert_eq!(run["runner"], "in_process", "{run}");
        assert_eq!(run["events"].as_u64(), Some(300), "{run}");
        assert_eq!(run["predictions"].as_u64(), Some(300), "{run}");
        assert_eq!(run["missing"].as_u64(), Some(0), "{run}");
        assert_eq!(run["duplicates"].as_u64(), Some(0), "{run}");
        let by_model = run["by_model"].as_u64().unwrap();
        let degraded = run["degraded"].as_u64().unwrap();
        assert_eq!(by_model + degraded, 300, "{run}");
        let (p50, p99, max) = (
            run["p50_ms"].as_f64().unwrap(),
            run["p99_ms"].as_f64().unwrap(),
            run["max_ms"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max * 1.001, "{run}");
        assert!(run["target_p99_ms"].as_f64().unwrap() > 0.0, "{run}");
        assert!(run["met"].is_boolean(), "{run}");
    }
}

#[test]
fn without_mlserver_its_rows_are_skipped_and_the_output_says_so() {
    let runs = bench(&["--only", "mlserver"]);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["workload"], "mlserver");
    assert!(
        runs[0]["skipped"]
            .as_str()
            .unwrap()
            .contains("RUNNEL_TEST_MLSERVER"),
        "{runs:?}"
    );
}
