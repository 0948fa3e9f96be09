//! `[[features]]` in `runnel.toml`, run by the real `runnel serve`: a bad table is refused at
//! start naming the table and the field; a good one runs as a pipeline whose values are served
//! by `GET /v1/features/{set}/{key}` and the CLI, shown on `/metrics`, exported point in time,
//! and which stops cleanly on SIGTERM and carries on after a restart.

mod common;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use common::{get, runnel};

const SPEND: &str = r#"
default_partitions = 1

[[features]]
name = "spend"
input = "payment.charged"
window = { kind = "tumbling", size = "1m" }
output = "feature.computed"
aggregates = [
  { name = "payments", kind = "count" },
  { name = "spent", kind = "sum", field = "/amount" },
]
"#;

fn payment(n: u32, card: &str, time: &str, amount: i64) -> Value {
    json!({
        "specversion": "1.0",
        "id": format!("pay-{n}"),
        "source": "test://features",
        "type": "payment.charged",
        "time": time,
        "partitionkey": card,
        "data": {"amount": amount},
    })
}

#[test]
fn a_bad_features_table_is_refused_at_start_naming_the_table_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            SPEND.replace("size = \"1m\"", "size = \"0s\""),
            "features[0] (spend).window.size",
        ),
        (
            SPEND.replace("output = ", "outptu = "),
            "features[0] (spend): unknown field `outptu`",
        ),
        (
            SPEND.replace("kind = \"sum\", field = \"/amount\"", "kind = \"sum\""),
            "features[0] (spend).aggregates[1].field",
        ),
    ];
    for (text, expected) in cases {
        common::refused_at_start(dir.path(), &text, expected);
    }
}

#[test]
fn serve_runs_a_declared_feature_and_serves_its_values_metrics_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("runnel.toml"), SPEND).unwrap();
    let mut server = serve(dir.path());
    let base = server.url();

    // Three payments of card c1 in [00:00, 00:01), then one at 00:01:30 that moves the
    // watermark past the first window's end.
    for (n, (time, amount)) in [
        ("2026-01-01T00:00:05Z", 10),
        ("2026-01-01T00:00:20Z", 20),
        ("2026-01-01T00:00:59Z", 12),
        ("2026-01-01T00:01:30Z", 7),
    ]
    .into_iter()
    .enumerate()
    {
        let (status, body) =
            common::publish(&base, &payment(n as u32, "c1", time, amount)).expect("publish");
        assert_eq!(status, 202, "{body}");
    }
    let value = wait_for(&format!("{base}/v1/features/spend/c1"), |_| true);
    assert_eq!(
        value["values"],
        json!({"payments": 3, "spent": 42}),
        "{value}"
    );
    assert_eq!(value["window_start"], "2026-01-01T00:00:00Z");
    assert_eq!(value["window_end"], "2026-01-01T00:01:00Z");
    assert_eq!(value["revision"], 1);
    assert_eq!(value["watermark"], "2026-01-01T00:01:30Z");
    assert!(value["age_seconds"].as_f64().unwrap() >= 0.0, "{value}");

    let (status, problem) = get(&format!("{base}/v1/features/spend/c2"));
    assert_eq!(
        (status, problem["code"].as_str()),
        (404, Some("feature.unknown_key"))
    );
    let (status, problem) = get(&format!("{base}/v1/features/nope/c1"));
    assert_eq!(
        (status, problem["code"].as_str()),
        (404, Some("feature.unknown_set"))
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("spend"),
        "names the sets there are: {problem}"
    );

    // The group commits what the pipeline acknowledged a moment later.
    let sets = wait_for(&format!("{base}/v1/features"), |sets| {
        sets[0]["partitions"][0]["watermark"] == "2026-01-01T00:01:30Z"
            && sets[0]["lag"]["total_events"] == 0
    });
    assert_eq!(sets[0]["name"], "spend");
    assert_eq!(sets[0]["spec"]["window"]["kind"], "tumbling");
    assert_eq!(sets[0]["group"], "features-spend");
    assert_eq!(sets[0]["partitions"][0]["open_windows"], 1, "{sets}");

    let text = ureq::get(&format!("{base}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let labels = "feature=\"spend\",stream=\"payment\",partition=\"0\"";
    for name in [
        "runnel_feature_watermark_lag_seconds",
        "runnel_feature_open_windows",
        "runnel_feature_state_bytes",
        "runnel_late_events_total",
    ] {
        assert!(
            text.contains(&format!("{name}{{{labels}}}")),
            "{name} in\n{text}"
        );
    }
    assert!(
        text.contains(&format!("runnel_feature_open_windows{{{labels}}} 1")),
        "{text}"
    );

    // The CLI over HTTP.
    let out = runnel(&["features", "get", "spend", "c1", "--url", &base, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["values"]["spent"], 42);
    let out = runnel(&["features", "list", "--url", &base]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && table.contains("spend") && table.contains("tumbling 1m"),
        "{table}"
    );
    let out = runnel(&["features", "show", "spend", "--url", &base]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && shown.contains("features-spend"),
        "{shown}"
    );

    // Point in time: before the window's result was published nothing was known, even at a
    // time after the window's end; now it is.
    let rows = dir.path().join("rows.csv");
    std::fs::write(
        &rows,
        "key,timestamp\nc1,2026-01-01T00:00:30Z\nc1,2026-01-01T00:02:00Z\nc1,2999-01-01T00:00:00Z\nc2,2999-01-01T00:00:00Z\n",
    )
    .unwrap();
    let out = runnel(&[
        "features",
        "export",
        "--set",
        "spend",
        "--at",
        rows.to_str().unwrap(),
        "--url",
        &base,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines,
        [
            "key,timestamp,payments,spent,window_start,window_end,revision",
            "c1,2026-01-01T00:00:30Z,,,,,",
            "c1,2026-01-01T00:02:00Z,,,,,",
            "c1,2999-01-01T00:00:00Z,3,42,2026-01-01T00:00:00Z,2026-01-01T00:01:00Z,1",
            "c2,2999-01-01T00:00:00Z,,,,,",
        ],
        "{csv}"
    );
    let (status, problem) = common::json(
        "POST",
        &format!("{base}/v1/features/spend"),
        &json!({"rows": [
            {"key": "c1", "time": "2999-01-01T00:00:00Z"},
            {"key": "c1", "time": "yesterday"},
        ]}),
    )
    .expect("reachable");
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["errors"][0]["path"], "/rows/1/time", "{problem}");
    let out = runnel(&[
        "features",
        "export",
        "--set",
        "spend",
        "--at",
        rows.to_str().unwrap(),
        "--url",
        &base,
        "--format",
        "jsonl",
    ]);
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[2]["values"], json!({"payments": 3, "spent": 42}));
    assert_eq!(lines[0]["values"], Value::Null);

    // The results' stream is the history exports read: not deleted while the set runs.
    let (status, problem) = common::json(
        "DELETE",
        &format!("{base}/v1/streams/feature"),
        &Value::Null,
    )
    .expect("reachable");
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("stream.in_use")),
        "{problem}"
    );
    assert_eq!(
        problem["stages"],
        json!(["feature set `spend`"]),
        "{problem}"
    );

    // SIGTERM stops the pipeline cleanly and the server exits 0; started again, the pipeline
    // carries on from its checkpoint: the open window [00:01, 00:02) fires with its one event.
    server.signal(libc::SIGTERM);
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "clean exit on SIGTERM");
    let server = serve(dir.path());
    let base = server.url();
    let (status, body) =
        common::publish(&base, &payment(9, "c1", "2026-01-01T00:02:10Z", 1)).expect("publish");
    assert_eq!(status, 202, "{body}");
    let value = wait_for(&format!("{base}/v1/features/spend/c1"), |v| {
        v["window_end"] == "2026-01-01T00:02:00Z"
    });
    assert_eq!(
        value["values"],
        json!({"payments": 1, "spent": 7}),
        "{value}"
    );
}

fn serve(dir: &Path) -> common::Serve {
    common::serve_dir(dir)
}

fn wait_for(url: &str, done: impl Fn(&Value) -> bool) -> Value {
    common::wait_for(url, Duration::from_secs(30), done)
}
