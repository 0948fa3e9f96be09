//! Sagas declared in `runnel.toml` and run by real `runnel serve` children, their steps done
//! by a Python HTTP consumer (pull/ack, replies published over HTTP; `saga/step_services.py`),
//! on the embedded backend and on JetStream:
//! - one order completes and one is compensated, visible through `GET /v1/sagas`,
//!   `runnel saga show` and `/metrics`;
//! - the server SIGKILLed at random moments over many instances;
//! - the server aborted at every step boundary of the driver (`RUNNEL_SAGA_CRASH_AT`: after
//!   an instance's write, before its commands' publish, after a reply was applied) over many
//!   instances;
//! - on JetStream, two servers sharing the instances, one SIGKILLed mid-run.
//!
//! Afterwards every instance has exactly one outcome, no step was sent twice as a new command
//! (the services count executions by command id), and every compensation matches its step.
//! Needs `RUNNEL_PYTHON` (a Python 3) and, for the JetStream variants, a nats-server 2.10+
//! with JetStream at `RUNNEL_TEST_NATS_URL`; each is skipped without them, except under
//! `RUNNEL_CI`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
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

/// Where the servers keep their streams and instances.
#[derive(Debug, Clone)]
enum Store {
    /// The embedded backend in the server's data directory.
    Embedded,
    /// JetStream at `url`, under a namespace of this test's own.
    JetStream { url: String, namespace: String },
}

impl Store {
    /// JetStream under a fresh namespace, or `None` (the test is skipped) without a server.
    fn jetstream(test: &str) -> Option<Self> {
        match std::env::var("RUNNEL_TEST_NATS_URL") {
            Ok(url) if !url.is_empty() => Some(Store::JetStream {
                url,
                namespace: format!("saga-{test}-{}", std::process::id()),
            }),
            _ => {
                assert!(
                    std::env::var_os("RUNNEL_CI").is_none(),
                    "RUNNEL_CI is set but RUNNEL_TEST_NATS_URL is not"
                );
                println!("skipped: set RUNNEL_TEST_NATS_URL to a nats-server 2.10+ with JetStream");
                None
            }
        }
    }

    /// The same store under a namespace of its own for part `part` of a test.
    fn part(&self, part: &str) -> Self {
        match self {
            Store::Embedded => Store::Embedded,
            Store::JetStream { url, namespace } => Store::JetStream {
                url: url.clone(),
                namespace: format!("{namespace}-{part}"),
            },
        }
    }

    fn args(&self) -> Vec<String> {
        match self {
            Store::Embedded => Vec::new(),
            Store::JetStream { url, namespace } => vec![
                "--backend".into(),
                "jetstream".into(),
                "--nats-url".into(),
                url.clone(),
                "--nats-namespace".into(),
                namespace.clone(),
            ],
        }
    }
}

/// A `runnel serve` child on a fixed address (restarts keep it, so the services and the
/// test find the new server where the old one was).
struct Server(Child);

impl Server {
    fn start(config: &Path, dir: &Path, store: &Store) -> Self {
        Self::try_start(config, dir, store, &[]).expect("runnel serve started")
    }

    /// Starts a server with `env` set; `None` if it ended before listening (a crash hook
    /// that fired while it started).
    fn try_start(config: &Path, dir: &Path, store: &Store, env: &[(&str, String)]) -> Option<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(dir)
            .args(store.args())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start runnel serve");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        if line.starts_with("runnel listening on") {
            return Some(Self(child));
        }
        let status = child.wait().expect("wait for runnel serve");
        assert!(
            line.is_empty() && !status.success(),
            "unexpected first line {line:?} ({status})"
        );
        None
    }

    /// Whether the process has ended (by itself: a crash hook).
    fn ended(&mut self) -> bool {
        self.0.try_wait().ok().flatten().is_some()
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

/// A `runnel.toml` with the saga, on a free port, in `dir`: its path and the server's URL.
fn setup(dir: &Path, name: &str) -> (PathBuf, String) {
    let port = free_port();
    let config = dir.join(name);
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
    completes_one_order_and_compensates_another(Store::Embedded);
}

#[test]
fn on_jetstream_a_declared_saga_completes_one_order_and_compensates_another_over_http() {
    if let Some(store) = Store::jetstream("http") {
        completes_one_order_and_compensates_another(store);
    }
}

fn completes_one_order_and_compensates_another(store: Store) {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (config, base) = setup(dir.path(), "runnel.toml");
    let _server = Server::start(&config, &dir.path().join("data"), &store);
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
    let output = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["saga", "list", "--state", "done", "--url", &base])
        .output()
        .expect("runnel saga list");
    assert_eq!(
        output.status.code(),
        Some(2),
        "a state that is none is a usage error"
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("compensated"),
        "the states are listed: {output:?}"
    );

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

/// Every instance has exactly one outcome, by what its order asked for (every third is
/// declined at the charge); no step was sent twice as a new command; every compensated
/// order released exactly what it reserved and was neither refunded nor shipped.
fn assert_one_outcome_each(all: &[Value], log: &Path, orders: usize) {
    let done = executions(log);
    let mut by_instance: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for e in &done {
        by_instance
            .entry(e["instance"].as_str().unwrap_or("?"))
            .or_default()
            .push(e);
    }
    let ids: BTreeSet<&str> = done.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), done.len(), "a command id executed twice");
    let known: BTreeSet<&str> = all.iter().filter_map(|i| i["id"].as_str()).collect();
    for instance in by_instance.keys() {
        assert!(
            known.contains(instance),
            "a command of no instance: {instance}"
        );
    }
    for instance in all {
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
                [
                    count("cmd.reserve"),
                    count("cmd.charge"),
                    count("cmd.ship"),
                    count("cmd.release") + count("cmd.refund")
                ],
                [1, 1, 1, 0],
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
                assert_eq!(count("cmd.charge"), 1, "{id}: {commands:?}");
                assert_eq!(
                    count("cmd.refund") + count("cmd.ship"),
                    0,
                    "{id}: {commands:?}"
                );
                // The release undid this instance's reservation: same step, same instance.
                let release = commands
                    .iter()
                    .find(|e| e["type"] == "cmd.release")
                    .unwrap();
                assert_eq!(release["step"], "reserve", "{id}: {commands:?}");
            }
            other => panic!("{id} ended {other}"),
        }
    }
    let compensated = all.iter().filter(|i| i["state"] == "compensated").count();
    assert_eq!(
        compensated,
        orders.div_ceil(3),
        "every third order is declined"
    );
}

#[test]
fn sigkilled_servers_leave_every_instance_one_outcome_and_every_command_executed_once() {
    sigkilled_servers_leave_one_outcome_each(Store::Embedded);
}

#[test]
fn on_jetstream_sigkilled_servers_leave_every_instance_one_outcome_and_every_command_executed_once()
{
    if let Some(store) = Store::jetstream("sigkill") {
        sigkilled_servers_leave_one_outcome_each(store);
    }
}

fn sigkilled_servers_leave_one_outcome_each(store: Store) {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (config, base) = setup(dir.path(), "runnel.toml");
    let data = dir.path().join("data");
    let log = dir.path().join("executions.jsonl");
    let mut server = Server::start(&config, &data, &store);
    let _services = services(&python, &base, &log);
    const ORDERS: usize = 60;
    let started = Instant::now();
    let mut random = random();
    let mut kills = 0;
    for batch in 0..10 {
        for n in batch * 6..(batch + 1) * 6 {
            publish(&base, &order(n, n % 3 == 0));
        }
        std::thread::sleep(Duration::from_millis(100 + random(600)));
        server.kill();
        kills += 1;
        server = Server::start(&config, &data, &store);
    }
    let all = settled(&base, ORDERS, Duration::from_secs(40));
    println!("{kills} kills, settled after {:?}", started.elapsed());
    drop(server);
    assert_one_outcome_each(&all, &log, ORDERS);
}

/// A xorshift generator seeded by the process id: `random(n)` is in `0..n`.
fn random() -> impl FnMut(u64) -> u64 {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    }
}

/// Publishes `event` once; false when the server did not take it.
fn try_publish(base: &str, event: &Value) -> bool {
    matches!(common::publish(base, event), Some((202, _)))
}

/// The crash hook's settings: abort at `boundary` the `count`th time it is reached.
fn crash_env(boundary: &str, count: u64) -> Vec<(&'static str, String)> {
    vec![
        ("RUNNEL_SAGA_CRASH_AT", boundary.to_string()),
        ("RUNNEL_SAGA_CRASH_COUNT", count.to_string()),
    ]
}

/// Orders published while the server aborts itself at `boundary` again and again (each time
/// at a random arrival there), restarted after each abort; at the end a server without the
/// hook finishes what is left. Returns the number of aborts.
fn crash_at_every_arrival(store: &Store, boundary: &str, python: &OsString) -> usize {
    const ORDERS: usize = 60;
    const MAX_ABORTS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let (config, base) = setup(dir.path(), "runnel.toml");
    let data = dir.path().join("data");
    let log = dir.path().join("executions.jsonl");
    let mut random = random();
    // Any arrival, the first after a restart too: the server's aborts blame no trigger.
    let mut count = move || 1 + random(40);
    let mut server: Option<Server> = None;
    let mut aborts = 0;
    let mut next = 0;
    let _services = services(python, &base, &log);
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        assert!(
            Instant::now() < deadline,
            "{boundary}: {aborts} aborts, {next} of {ORDERS} orders published after 240 s"
        );
        let ended = server.as_mut().map(Server::ended);
        let running = match ended {
            Some(true) => {
                aborts += 1;
                server = None;
                false
            }
            Some(false) => true,
            None => false,
        };
        if !running {
            if aborts >= MAX_ABORTS {
                break;
            }
            match Server::try_start(&config, &data, store, &crash_env(boundary, count())) {
                Some(s) => server = Some(s),
                None => aborts += 1,
            }
            continue;
        }
        if next < ORDERS {
            if try_publish(&base, &order(next, next % 3 == 0)) {
                next += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        // Everything published: go on until the hook fires again or all has settled.
        let all = instances(&base);
        let open = all
            .iter()
            .filter(|i| matches!(i["state"].as_str(), Some("running" | "compensating")))
            .count();
        if all.len() == ORDERS && open == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(server);
    let server = Server::start(&config, &data, store);
    while next < ORDERS {
        publish(&base, &order(next, next % 3 == 0));
        next += 1;
    }
    let all = settled(&base, ORDERS, Duration::from_secs(60));
    drop(server);
    assert_one_outcome_each(&all, &log, ORDERS);
    aborts
}

fn crash_at_every_boundary(store: Store) {
    let Some(python) = python() else { return };
    for boundary in ["after_write", "before_publish", "after_reply"] {
        let started = Instant::now();
        let aborts = crash_at_every_arrival(
            &store.part(&boundary.replace('_', "")[..6]),
            boundary,
            &python,
        );
        println!(
            "{boundary}: {aborts} aborts, settled after {:?}",
            started.elapsed()
        );
        assert!(
            aborts >= 3,
            "{boundary}: the crash hook fired only {aborts} times"
        );
    }
}

#[test]
fn a_server_aborted_at_every_step_boundary_leaves_every_instance_one_outcome() {
    crash_at_every_boundary(Store::Embedded);
}

#[test]
fn on_jetstream_a_server_aborted_at_every_step_boundary_leaves_every_instance_one_outcome() {
    if let Some(store) = Store::jetstream("crash") {
        crash_at_every_boundary(store);
    }
}

/// One order whose trigger is in flight at every abort: five servers in a row abort right
/// before publishing its first command (each restart delivers the trigger again and reaches
/// that boundary first). The server's own deaths are not the trigger's fault, so it is never
/// dead-lettered as a crash loop (as it was when the driver's group blamed them), and a
/// server without the hook carries the order to its outcome (declined, so compensated) with
/// every command executed once.
#[test]
fn a_trigger_in_flight_at_every_abort_is_never_dead_lettered() {
    let Some(python) = python() else { return };
    let store = Store::Embedded;
    let dir = tempfile::tempdir().unwrap();
    let (config, base) = setup(dir.path(), "runnel.toml");
    let data = dir.path().join("data");
    let log = dir.path().join("executions.jsonl");
    let _services = services(&python, &base, &log);
    const ABORTS: usize = 5;
    let mut aborts = 0;
    let mut published = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    while aborts < ABORTS {
        assert!(
            Instant::now() < deadline,
            "{aborts} aborts after 120 s (published: {published})"
        );
        let Some(mut server) =
            Server::try_start(&config, &data, &store, &crash_env("before_publish", 1))
        else {
            aborts += 1;
            continue;
        };
        if !published {
            published = try_publish(&base, &order(0, true));
        }
        let waited = Instant::now();
        while !server.ended() && waited.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(server.ended(), "the hook did not fire within 20 s");
        aborts += 1;
    }
    let _server = Server::start(&config, &data, &store);
    let all = settled(&base, 1, Duration::from_secs(60));
    assert_eq!(
        all[0]["state"], "compensated",
        "declined at the charge: {all:?}"
    );
    let dlq = common::json(
        "GET",
        &format!("{base}/v1/groups/saga-order/dlq"),
        &Value::Null,
    );
    let entries = match &dlq {
        Some((200, body)) => body["entries"].as_array().cloned().unwrap_or_default(),
        other => panic!("the saga group's DLQ: {other:?}"),
    };
    assert!(entries.is_empty(), "dead-lettered: {entries:?}");
    assert_one_outcome_each(&all, &log, 1);
}

/// `runnel_saga_started_total` of the server at `base`.
fn started_here(base: &str) -> u64 {
    let Some(text) = ureq::get(format!("{base}/metrics"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
    else {
        return 0;
    };
    text.lines()
        .find(|l| l.starts_with("runnel_saga_started_total{saga=\"order\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .map_or(0, |n| n as u64)
}

/// Two servers drive the instances of one JetStream store. Server `a` starts alone and takes
/// every orders partition; `b` joins and takes its share; the orders are published, half to
/// each server, while no step service runs, so every instance waits for its first reply. `a` is then SIGKILLed with
/// every instance it started still open, and only then do the step services start (talking to
/// `b`): `b` takes `a`'s partitions once its leases lapse and carries every instance to its
/// outcome, each step executed once.
#[test]
fn on_jetstream_two_servers_share_the_instances_and_one_killed_mid_run_hands_its_instances_over() {
    let Some(store) = Store::jetstream("two") else {
        return;
    };
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (config_a, base_a) = setup(dir.path(), "a.toml");
    let (config_b, base_b) = setup(dir.path(), "b.toml");
    let a = Server::start(&config_a, &dir.path().join("a"), &store);
    const ORDERS: usize = 60;
    let open_on = |base: &str| {
        instances(base)
            .iter()
            .filter(|i| matches!(i["state"].as_str(), Some("running" | "compensating")))
            .count()
    };
    // Alone, `a` owns every partition of the orders' stream: it starts the first ten.
    for n in 0..10 {
        publish(&base_a, &order(n, n % 3 == 0));
    }
    let started = Instant::now();
    while started_here(&base_a) < 10 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "server a started {} of 10 instances in 60 s",
            started_here(&base_a)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _b = Server::start(&config_b, &dir.path().join("b"), &store);
    // `b` takes its share once both have seen each other (a heartbeat or two, 5 s apart):
    // orders trickle in until `b` has started one, then the rest go at once.
    let mut next = 10;
    while next < ORDERS {
        let base = if next % 2 == 0 { &base_a } else { &base_b };
        publish(base, &order(next, next % 3 == 0));
        next += 1;
        if started_here(&base_b) == 0 {
            std::thread::sleep(Duration::from_millis(400));
        }
    }
    let started = Instant::now();
    while instances(&base_b).len() < ORDERS {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} of {ORDERS} instances after 60 s",
            instances(&base_b).len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (on_a, on_b) = (started_here(&base_a), started_here(&base_b));
    let open = open_on(&base_b);
    a.kill();
    println!("a started {on_a} instances, b {on_b}; {open} of {ORDERS} open when a was killed");
    assert!(on_a >= 10, "server a started {on_a} instances");
    assert!(on_b > 0, "server b took no share of the orders' partitions");
    assert_eq!(on_a + on_b, ORDERS as u64, "each instance started once");
    assert_eq!(
        open, ORDERS,
        "no step service ran yet: every instance is open"
    );
    // `a`'s leases lapse (15 s) and `b` takes its partitions: its reply groups apply the
    // replies to `a`'s instances, its timers republish what `a` had in flight.
    let log = dir.path().join("executions.jsonl");
    let _services = services(&python, &base_b, &log);
    let all = settled(&base_b, ORDERS, Duration::from_secs(90));
    assert_one_outcome_each(&all, &log, ORDERS);
}
