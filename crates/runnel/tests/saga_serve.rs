//! Sagas declared in `runnel.toml` and run by a real `runnel serve` child, their steps done
//! by a Python HTTP consumer (pull/ack, replies published over HTTP; `saga/step_services.py`):
//! one order completes and one is compensated, visible through `GET /v1/sagas`,
//! `runnel saga show` and `/metrics`; and a crash test that SIGKILLs the server at random
//! moments over many instances. Needs `RUNNEL_PYTHON` (a Python 3; skipped without one,
//! except under `RUNNEL_CI`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const SAGA_TOML: &str = r#"
[[sagas]]
name = "order"
trigger = { type = "shop.order_placed" }

[[sagas.steps]]
name = "reserve"
command = "cmd.reserve"
success = "inventory.reserved"
timeout = "60s"
compensation = { command = "cmd.release", success = "inventory.released" }

[[sagas.steps]]
name = "charge"
command = "cmd.charge"
success = "payment.charged"
failure = "payment.declined"
timeout = "60s"
compensation = { command = "cmd.refund", success = "payment.refunded" }

[[sagas.steps]]
name = "ship"
command = "cmd.ship"
success = "shipping.shipped"
timeout = "60s"
"#;

fn python() -> Option<OsString> {
    let ci = std::env::var_os("RUNNEL_CI").is_some();
    match std::env::var_os("RUNNEL_PYTHON").filter(|p| !p.is_empty()) {
        Some(python) => Some(python),
        None => {
            assert!(!ci, "RUNNEL_CI is set but RUNNEL_PYTHON is not");
            println!("skipped: set RUNNEL_PYTHON to a Python 3");
            None
        }
    }
}

/// A `runnel serve` child on a fixed address (restarts keep it, so the services and the
/// test find the new server where the old one was).
struct Server(Child);

impl Server {
    fn start(config: &Path, dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start runnel serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("first line");
        assert!(line.starts_with("runnel listening on"), "{line:?}");
        Self(child)
    }

    fn kill(mut self) {
        // SAFETY: kill(2) on our live child's pid.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Services(Child);

impl Drop for Services {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn services(python: &OsString, base: &str, log: &Path) -> Services {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/saga/step_services.py");
    Services(
        Command::new(python)
            .arg(script)
            .arg(base)
            .arg(log)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Python step services"),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn setup(dir: &Path) -> (std::path::PathBuf, String) {
    let port = free_port();
    let config = dir.join("runnel.toml");
    std::fs::write(
        &config,
        format!("bind = \"127.0.0.1:{port}\"\nconsumer_idle_secs = 3600\n{SAGA_TOML}"),
    )
    .unwrap();
    (config, format!("http://127.0.0.1:{port}"))
}

fn order(n: usize, decline: bool) -> Value {
    json!({"specversion": "1.0", "id": format!("order-{n}"), "source": "test://shop",
           "type": "shop.order_placed", "data": {"order": n, "decline": decline}})
}

/// Publishes `event`, again until the server (maybe restarting) answers 202.
fn publish(base: &str, event: &Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((202, _)) = common::publish(base, event) {
            return;
        }
        assert!(Instant::now() < deadline, "cannot publish {event}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn instances(base: &str) -> Vec<Value> {
    match common::json("GET", &format!("{base}/v1/sagas?type=order"), &Value::Null) {
        Some((200, body)) => body["instances"].as_array().cloned().unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Waits until `expected` instances exist and none is running or compensating.
fn settled(base: &str, expected: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let all = instances(base);
        let open = all
            .iter()
            .filter(|i| matches!(i["state"].as_str(), Some("running" | "compensating")))
            .count();
        if all.len() == expected && open == 0 {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "{} instances, {open} still open, after {within:?}: {all:?}",
            all.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The services' execution log: one line per distinct command id executed.
fn executions(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an execution line"))
        .collect()
}

#[test]
fn a_declared_saga_completes_one_order_and_compensates_another_over_http() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (config, base) = setup(dir.path());
    let _server = Server::start(&config, &dir.path().join("data"));
    let log = dir.path().join("executions.jsonl");
    let _services = services(&python, &base, &log);
    publish(&base, &order(1, false));
    publish(&base, &order(2, true));
    let all = settled(&base, 2, Duration::from_secs(30));
    let mut states: Vec<&str> = all.iter().filter_map(|i| i["state"].as_str()).collect();
    states.sort_unstable();
    assert_eq!(states, ["compensated", "completed"], "{all:?}");
    let compensated = all
        .iter()
        .find(|i| i["state"] == "compensated")
        .and_then(|i| i["id"].as_str())
        .unwrap();

    // The instance with its timeline over HTTP.
    let (status, instance) = common::json(
        "GET",
        &format!("{base}/v1/sagas/{compensated}"),
        &Value::Null,
    )
    .expect("get");
    assert_eq!(status, 200, "{instance}");
    let what: Vec<&str> = instance["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["what"].as_str())
        .collect();
    assert!(what.contains(&"compensation_sent"), "{what:?}");
    assert_eq!(what.last(), Some(&"saga_compensated"), "{what:?}");
    let (status, _) =
        common::json("GET", &format!("{base}/v1/sagas/nope"), &Value::Null).expect("get");
    assert_eq!(status, 404);
    let (status, body) = common::json(
        "POST",
        &format!("{base}/v1/sagas/{compensated}/retry"),
        &json!({}),
    )
    .expect("retry");
    assert_eq!(status, 409, "only a stuck instance is retried: {body}");
    let (status, _) =
        common::json("GET", &format!("{base}/v1/sagas?state=done"), &Value::Null).expect("list");
    assert_eq!(status, 400);

    // The CLI.
    let output = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["saga", "show", compensated, "--url", &base])
        .output()
        .expect("runnel saga show");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("compensated"), "{text}");
    assert!(text.contains("cmd.release"), "{text}");
    assert!(text.contains("payment.declined"), "{text}");
    let output = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["saga", "list", "--state", "completed", "--url", &base])
        .output()
        .expect("runnel saga list");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(text.matches("completed").count(), 1, "{text}");
    assert!(!text.contains(compensated), "{text}");

    // /metrics renders the saga metrics recorded through the `metrics` facade.
    let metrics = ureq::get(format!("{base}/metrics"))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        metrics.contains("runnel_saga_completed_total{saga=\"order\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("runnel_saga_compensated_total{saga=\"order\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("runnel_saga_duration_seconds_bucket"),
        "{metrics}"
    );

    // The declined order released what it reserved and was charged nothing.
    let done = executions(&log);
    let of = |kind: &str| {
        done.iter()
            .filter(|e| e["instance"] == compensated && e["type"] == kind)
            .count()
    };
    assert_eq!((of("cmd.reserve"), of("cmd.release")), (1, 1), "{done:?}");
    assert_eq!((of("cmd.refund"), of("cmd.ship")), (0, 0), "{done:?}");
}

#[test]
fn sigkilled_servers_leave_every_instance_one_outcome_and_every_command_executed_once() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (config, base) = setup(dir.path());
    let data = dir.path().join("data");
    let log = dir.path().join("executions.jsonl");
    let mut server = Server::start(&config, &data);
    let _services = services(&python, &base, &log);
    const ORDERS: usize = 60;
    let started = Instant::now();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    let mut random = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut kills = 0;
    for batch in 0..10 {
        for n in batch * 6..(batch + 1) * 6 {
            publish(&base, &order(n, n % 3 == 0));
        }
        std::thread::sleep(Duration::from_millis(100 + random(600)));
        server.kill();
        kills += 1;
        server = Server::start(&config, &data);
    }
    let all = settled(&base, ORDERS, Duration::from_secs(40));
    println!("{kills} kills, settled after {:?}", started.elapsed());
    drop(server);

    // Exactly one outcome each, by what the order asked for.
    let done = executions(&log);
    let mut by_instance: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for e in &done {
        by_instance
            .entry(e["instance"].as_str().unwrap_or("?"))
            .or_default()
            .push(e);
    }
    let ids: BTreeSet<&str> = done.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), done.len(), "a command id executed twice");
    for instance in &all {
        let id = instance["id"].as_str().unwrap();
        let state = instance["state"].as_str().unwrap();
        let commands = by_instance.get(id).cloned().unwrap_or_default();
        let count = |kind: &str| commands.iter().filter(|e| e["type"] == kind).count();
        // No step was sent twice as a new command (no timeouts happen here: 60 s each).
        for kind in [
            "cmd.reserve",
            "cmd.charge",
            "cmd.ship",
            "cmd.release",
            "cmd.refund",
        ] {
            assert!(
                count(kind) <= 1,
                "{id}: {kind} executed {} times",
                count(kind)
            );
        }
        match state {
            "completed" => assert_eq!(
                [count("cmd.reserve"), count("cmd.charge"), count("cmd.ship")],
                [1, 1, 1],
                "{id}: {commands:?}"
            ),
            "compensated" => {
                // Declined at the charge: the reservation released, nothing refunded.
                assert_eq!(
                    count("cmd.reserve"),
                    count("cmd.release"),
                    "{id}: {commands:?}"
                );
                assert_eq!(count("cmd.release"), 1, "{id}: {commands:?}");
                assert_eq!(
                    count("cmd.refund") + count("cmd.ship"),
                    0,
                    "{id}: {commands:?}"
                );
            }
            other => panic!("{id} ended {other}"),
        }
    }
    let compensated = all.iter().filter(|i| i["state"] == "compensated").count();
    assert_eq!(compensated, ORDERS / 3, "every third order is declined");
}
