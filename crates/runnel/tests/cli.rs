//! The operator's commands against a real server (started in this test process on a free
//! loopback port), as a user runs them: human tables and `--json` carrying the same figures,
//! and the exit codes `runnel --help` documents.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use std::sync::Arc;

use runnel_backend_embedded::{EmbeddedBackend, EmbeddedConfig};
use runnel_server::{Server, ServerConfig};
use serde_json::{Value, json};

/// A server on 127.0.0.1:0 over a temporary data directory, stopped on drop.
struct TestServer {
    url: String,
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    serving: Option<tokio::task::JoinHandle<Result<(), runnel_server::ServerError>>>,
    home: tempfile::TempDir,
    _data: tempfile::TempDir,
}

impl TestServer {
    fn start() -> Self {
        Self::start_with(Vec::new())
    }

    fn start_with(api_keys: Vec<runnel_server::ApiKeyConfig>) -> Self {
        Self::start_configured(|config| config.api_keys = api_keys)
    }

    /// A server with the default configuration as `configure` changes it.
    fn start_configured(configure: impl FnOnce(&mut ServerConfig)) -> Self {
        let data = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut config = ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data.path().to_path_buf(),
            ..ServerConfig::default()
        };
        configure(&mut config);
        let server = runtime
            .block_on(async {
                let backend = EmbeddedBackend::open(EmbeddedConfig::new(&config.data_dir)).await?;
                Server::bind(config, Arc::new(backend)).await
            })
            .unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = runtime.spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Self {
            url: format!("http://{addr}"),
            runtime,
            stop: Some(stop),
            serving: Some(serving),
            home,
            _data: data,
        }
    }

    /// Runs `runnel <args> --url <this server>` with an empty home (no cli.toml) and no
    /// RUNNEL_* variables.
    fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, None)
    }

    fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = runnel(self.home.path());
        command.args(args).args(["--url", &self.url]);
        run_command(command, stdin)
    }

    /// Runs and expects exit 0; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert_success(args, &output);
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs with `--json` and expects exit 0; returns the parsed stdout.
    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let stdout = self.ok(&args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(serving) = self.serving.take() {
            let _ = self.runtime.block_on(serving);
        }
    }
}

fn runnel(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_runnel"));
    command
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("RUNNEL_URL")
        .env_remove("RUNNEL_KEY");
    command
}

fn run_command(mut command: Command, stdin: Option<&str>) -> Output {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("start runnel");
    if let Some(text) = stdin {
        // A command that refuses its arguments exits without reading its input.
        let written = child.stdin.take().unwrap().write_all(text.as_bytes());
        if let Err(error) = written {
            assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
        }
    }
    child.wait_with_output().unwrap()
}

fn assert_success(args: &[&str], output: &Output) {
    assert!(
        output.status.success(),
        "{args:?} exited {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn order_lines(n: usize, offset: usize) -> String {
    (offset..offset + n)
        .map(|i| {
            json!({"specversion": "1.0", "id": format!("o-{i}"), "source": "/test",
                   "type": "order.placed", "partitionkey": format!("c{}", i % 3),
                   "data": {"n": i}})
            .to_string()
                + "\n"
        })
        .collect()
}

#[test]
fn publish_from_stdin_then_streams_lag_and_tail_agree_in_tables_and_json() {
    let server = TestServer::start();
    let output = server.run_with_stdin(&["publish", "--json"], Some(&order_lines(250, 0)));
    assert_success(&["publish"], &output);
    let published: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(published["published"], 250);
    assert_eq!(published["streams"]["order"], 250);
    // Piped: no progress bar on stderr.
    assert!(output.stderr.is_empty(), "{:?}", output.stderr);

    // The same ids again are duplicates, and the human output says so.
    let output = server.run_with_stdin(&["publish"], Some(&order_lines(10, 0)));
    assert_success(&["publish again"], &output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("published 0 events (10 duplicates skipped)"),
        "{stdout}"
    );

    let single = server.json(&[
        "publish",
        "--type",
        "order.shipped",
        "--data",
        r#"{"n": 1}"#,
        "--partition-key",
        "c1",
    ]);
    assert_eq!(single["stream"], "order");
    assert_eq!(single["duplicate"], false);

    let streams = server.json(&["streams"]);
    let order = streams
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "order")
        .unwrap();
    assert_eq!(order["events"], 251);
    let table = server.ok(&["streams"]);
    let row = table.lines().find(|l| l.starts_with("order")).unwrap();
    assert!(row.split_whitespace().any(|c| c == "251"), "{table}");

    // A group: lag shows every event; tail them all (acked); lag drops to 0.
    let api = ureq_put(
        &server.url,
        "/v1/groups/audit",
        json!({"filter": "order.*", "start": "earliest"}),
    );
    assert!(api < 300, "PUT group: {api}");
    let lag = server.json(&["lag", "audit"]);
    assert_eq!(lag["total_events"], 251);
    let table = server.ok(&["lag", "audit"]);
    assert!(table.contains("group audit: 251 events behind"), "{table}");
    let groups = server.json(&["groups"]);
    let audit = &groups.as_array().unwrap()[0];
    assert_eq!(audit["name"], "audit");
    assert_eq!(audit["lag"], 251);
    let table = server.ok(&["groups"]);
    let row = table.lines().find(|l| l.starts_with("audit")).unwrap();
    assert!(row.split_whitespace().any(|c| c == "251"), "{table}");

    let tail = server.ok(&["tail", "audit", "--count", "100", "--json"]);
    let lines: Vec<Value> = tail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 100);
    assert!(
        lines
            .iter()
            .all(|m| m["event"]["type"] == "order.placed" || m["event"]["type"] == "order.shipped")
    );
    let human = server.ok(&["tail", "audit", "--no-follow", "--wait-ms", "500"]);
    assert_eq!(
        human.lines().filter(|l| l.starts_with("order/")).count(),
        151,
        "{human}"
    );

    let lag = wait_for_lag(&server, "audit", 0);
    assert_eq!(lag["total_events"], 0);
    let table = server.ok(&["lag", "audit"]);
    assert!(table.contains("group audit: 0 events behind"), "{table}");
}

/// Lag is committed a little after the ack: wait for the figure.
fn wait_for_lag(server: &TestServer, group: &str, expected: u64) -> Value {
    let mut lag = Value::Null;
    for _ in 0..100 {
        lag = server.json(&["lag", group]);
        if lag["total_events"] == expected {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    lag
}

/// A raw PUT for test setup (the CLI has no command to create groups).
/// Waits until group `mailer`'s dead-letter queue holds `n` entries: a nack is answered when
/// the runtime has it, and the entry is written just after.
fn wait_for_dead_letters(base: &str, n: usize) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let mut response = agent
            .get(format!("{base}/v1/groups/mailer/dlq"))
            .call()
            .unwrap();
        let body: Value = response.body_mut().read_json().unwrap();
        if body["entries"].as_array().map_or(0, Vec::len) >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} dead letters never came: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn ureq_put(base: &str, path: &str, body: Value) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    agent
        .put(&format!("{base}{path}"))
        .header("content-type", "application/json")
        .send(body.to_string())
        .unwrap()
        .status()
        .as_u16()
}

fn ureq_post(base: &str, path: &str, body: Value) -> Value {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    agent
        .post(&format!("{base}{path}"))
        .header("content-type", "application/json")
        .send(body.to_string())
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap_or(Value::Null)
}

#[test]
fn dlq_list_show_replay_and_purge() {
    let server = TestServer::start();
    let output = server.run_with_stdin(&["publish"], Some(&order_lines(5, 0)));
    assert_success(&["publish"], &output);
    ureq_put(
        &server.url,
        "/v1/groups/mailer",
        json!({"filter": "order.*", "start": "earliest"}),
    );
    // Dead-letter all five.
    let mut dead = 0;
    while dead < 5 {
        let pulled = ureq_post(
            &server.url,
            "/v1/groups/mailer/pull",
            json!({"max": 10, "wait_ms": 1000}),
        );
        for m in pulled["messages"].as_array().unwrap() {
            ureq_post(
                &server.url,
                "/v1/groups/mailer/nack",
                json!({"receipt": m["receipt"], "class": "permanent", "reason": "bad address"}),
            );
            dead += 1;
        }
    }

    wait_for_dead_letters(&server.url, 5);
    let page = server.json(&["dlq", "list", "mailer"]);
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 5);
    let id = entries[0]["id"].as_str().unwrap().to_string();
    let table = server.ok(&["dlq", "list", "mailer"]);
    assert_eq!(
        table.lines().filter(|l| l.contains("bad address")).count(),
        5
    );

    let entry = server.json(&["dlq", "show", "mailer", &id]);
    assert_eq!(entry["id"], id.as_str());
    assert_eq!(entry["class"], "permanent");
    let human = server.ok(&["dlq", "show", "mailer", &id]);
    assert!(human.contains("bad address"), "{human}");

    // One of the ids is not there: the rest is replayed, and the exit code says so (1).
    let output = server.run(&["dlq", "replay", "mailer", &id, "missing-0-9", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let replay: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(replay["replayed"], 1);
    assert_eq!(replay["missing"], json!(["missing-0-9"]));

    // Replay by class: the other four (one is already being replayed).
    let replay = server.json(&["dlq", "replay", "mailer", "--class", "permanent"]);
    assert_eq!(replay["replayed"], 4, "{replay}");
    assert_eq!(replay["already_pending"], 1, "{replay}");
    let human = server.ok(&["dlq", "replay", "mailer", "--all"]);
    assert!(
        human.contains("replayed 0 entries to group mailer (5 already being replayed"),
        "{human}"
    );

    // Purge without --yes and without a terminal refuses: a usage error.
    let output = server.run(&["dlq", "purge", "mailer", "--all"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--yes"));
    let purged = server.json(&["dlq", "purge", "mailer", "--all", "--yes"]);
    assert_eq!(purged["purged"], 5, "{purged}");
    let page = server.json(&["dlq", "list", "mailer"]);
    assert_eq!(page["entries"], json!([]));
}

#[test]
fn schema_register_check_list_show_and_lint() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("v1.json");
    let breaking = dir.path().join("breaking.json");
    std::fs::write(
        &v1,
        json!({"type": "object", "properties": {"n": {"type": "integer"}}}).to_string(),
    )
    .unwrap();
    std::fs::write(
        &breaking,
        json!({"type": "object", "properties": {"n": {"type": "string"}}, "required": ["n"]})
            .to_string(),
    )
    .unwrap();
    let v1 = v1.to_str().unwrap();
    let breaking = breaking.to_str().unwrap();

    let check = server.json(&["schema", "check", "order.placed", v1]);
    assert_eq!(check["compatible"], true);
    let registered = server.json(&["schema", "register", "order.placed", v1]);
    assert_eq!(registered["version"], 1);

    let output = server.run(&["schema", "check", "order.placed", breaking]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("INCOMPATIBLE"), "{stdout}");
    let output = server.run(&["schema", "check", "order.placed", breaking, "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let check: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(check["compatible"], false);
    assert!(!check["reasons"].as_array().unwrap().is_empty());

    let list = server.json(&["schema", "list"]);
    assert_eq!(
        list,
        json!([{"event_type": "order.placed", "version": 1, "id": registered["id"]}])
    );
    assert!(server.ok(&["schema", "list"]).contains("order.placed"));
    let shown = server.json(&["schema", "show", "order.placed"]);
    assert_eq!(shown["schema"]["properties"]["n"]["type"], "integer");

    assert_eq!(server.json(&["schema", "lint"])["lints"], json!([]));
    let output = server.run(&["schema", "lint", "order.place", "order.placed"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).contains("order.place"));
}

#[test]
fn publish_from_lines_says_which_line_stopped_it_and_what_was_published_before() {
    let server = TestServer::start();
    let stderr = |output: &Output| String::from_utf8_lossy(&output.stderr).into_owned();
    // Line 6 of 7 has a type the server refuses; batches of 2: lines 1–4 go, 5–6 do not.
    let mut lines = order_lines(5, 0);
    lines.push_str(
        &(json!({"specversion": "1.0", "id": "bad", "source": "/t", "type": "Q.X"}).to_string()
            + "\n"),
    );
    lines.push_str(&order_lines(1, 5));
    let output = server.run_with_stdin(&["publish", "--batch", "2"], Some(&lines));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.contains("line 6 was refused")
            && text.contains("lines 5–6")
            && text.contains("lines 1–4 were published"),
        "{text}"
    );
    assert!(
        text.contains("must be lowercase"),
        "the server's reason: {text}"
    );
    let streams = server.json(&["streams"]);
    assert_eq!(streams[0]["events"], 4, "{streams}");

    // Not JSON on line 3: lines 1–2 were sent in their batch, line 3 stops the rest.
    let mut lines = order_lines(2, 10);
    lines.push_str("{not json\n");
    let output = server.run_with_stdin(&["publish", "--batch", "2"], Some(&lines));
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("line 3: not JSON")
            && stderr(&output).contains("lines 1–2 were published"),
        "{}",
        stderr(&output)
    );

    // Flags that build the one event of --type are refused with lines, not ignored.
    let output = server.run_with_stdin(&["publish", "--id", "x"], Some(&order_lines(1, 20)));
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("--id"), "{}", stderr(&output));
    let output = server.run_with_stdin(&["publish", "--batch", "0"], Some(""));
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    // Data goes through publish and tail as written, big integers included.
    let data = r#"{"big":12345678901234567890123,"e":1E2}"#;
    server.ok(&[
        "publish",
        "--type",
        "ledger.posted",
        "--data",
        data,
        "--id",
        "l1",
    ]);
    let line = format!(
        r#"{{"specversion":"1.0","id":"l2","source":"/t","type":"ledger.posted","data":{data}}}"#
    );
    let output = server.run_with_stdin(&["publish"], Some(&(line + "\n")));
    assert_success(&["publish ledger line"], &output);
    let api = ureq_put(
        &server.url,
        "/v1/groups/ledger",
        json!({"filter": "ledger.*"}),
    );
    assert!(api < 300, "PUT group: {api}");
    let tail = server.ok(&["tail", "ledger", "--count", "2", "--json"]);
    assert_eq!(
        tail.lines()
            .filter(|l| l.contains(&format!(r#""data":{data}"#)))
            .count(),
        2,
        "{tail}"
    );
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let output = server.run(&["publish", "--file", dir_arg]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(dir_arg) && stderr(&output).contains("is a directory"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn exit_codes_unreachable_is_3_usage_is_2_and_config_comes_from_env_and_cli_toml() {
    let home = tempfile::tempdir().unwrap();
    // Nothing listens on port 1.
    let output = run_command(
        {
            let mut c = runnel(home.path());
            c.args(["streams", "--url", "http://127.0.0.1:1"]);
            c
        },
        None,
    );
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains("http://127.0.0.1:1"));

    let output = run_command(
        {
            let mut c = runnel(home.path());
            c.args(["lag"]);
            c
        },
        None,
    );
    assert_eq!(output.status.code(), Some(2), "missing argument");

    let server = TestServer::start();
    let output = server.run(&["publish", "--type", "order.placed", "--data", "{not json"]);
    assert_eq!(output.status.code(), Some(2));

    // --type with lines piped in would publish one event and ignore the lines: refused.
    let output = server.run_with_stdin(
        &["publish", "--type", "order.placed"],
        Some(&order_lines(3, 0)),
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--type") && stderr.contains("stdin"),
        "{stderr}"
    );
    assert_eq!(
        server.json(&["streams"]),
        json!([]),
        "nothing was published"
    );

    // RUNNEL_URL, then cli.toml.
    let output = run_command(
        {
            let mut c = runnel(home.path());
            c.args(["streams", "--json"]).env("RUNNEL_URL", &server.url);
            c
        },
        None,
    );
    assert_success(&["streams via RUNNEL_URL"], &output);
    let output = run_command(
        {
            let mut c = runnel(home.path());
            c.args(["streams"])
                .env("RUNNEL_URL", "ftp://127.0.0.1:8717");
            c
        },
        None,
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("RUNNEL_URL must be an http:// or https:// URL"),
        "the message names where the URL came from: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::create_dir_all(home.path().join(".config/runnel")).unwrap();
    std::fs::write(
        home.path().join(".config/runnel/cli.toml"),
        format!("url = \"{}\"\n", server.url),
    )
    .unwrap();
    let output = run_command(
        {
            let mut c = runnel(home.path());
            c.args(["streams"]);
            c
        },
        None,
    );
    assert_success(&["streams via cli.toml"], &output);
}

#[test]
fn with_api_keys_no_key_is_refused_with_exit_3_and_the_key_from_flag_or_env_is_sent() {
    let key = "ops-key-0123456789abcdef";
    let server = TestServer::start_with(vec![
        serde_json::from_value(json!({"name": "ops", "key": key, "scopes": ["admin"]})).unwrap(),
    ]);
    let output = server.run(&["streams"]);
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&server.url) && stderr.contains("401"),
        "{stderr}"
    );

    assert_eq!(server.json(&["streams", "--key", key]), json!([]));
    let output = run_command(
        {
            let mut c = runnel(server.home.path());
            c.args(["streams", "--url", &server.url])
                .env("RUNNEL_KEY", key);
            c
        },
        None,
    );
    assert_success(&["streams with RUNNEL_KEY"], &output);
}

/// Runs `command` (a shell command line) with a pseudo-terminal as its stdin, stdout and
/// stderr, through util-linux `script`; returns everything the terminal showed.
fn on_a_terminal(command_line: &str, home: &Path) -> String {
    let output = Command::new("script")
        .args(["-qefc", command_line, "/dev/null"])
        .env("HOME", home)
        .env("TERM", "xterm")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("RUNNEL_URL")
        .env_remove("RUNNEL_KEY")
        .stdin(Stdio::null())
        .output()
        .expect("run util-linux `script` (package bsdutils)");
    let shown = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{command_line} failed: {shown}");
    shown
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[test]
fn bulk_publish_shows_a_progress_bar_on_a_terminal_and_none_when_piped() {
    let server = TestServer::start();
    let lines = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(lines.path(), order_lines(100_000, 0)).unwrap();

    let bin = env!("CARGO_BIN_EXE_runnel");
    let shown = on_a_terminal(
        &format!(
            "{} publish --url {} < {}",
            shell_quote(bin),
            server.url,
            shell_quote(&lines.path().display().to_string())
        ),
        server.home.path(),
    );
    assert!(
        shown.contains("publishing "),
        "no progress on the terminal: {shown}"
    );
    assert!(shown.contains("published 100000 events"), "{shown}");

    // Piped: the same input again (every id a duplicate), no bar on stderr.
    let input = std::fs::read_to_string(lines.path()).unwrap();
    let output = server.run_with_stdin(&["publish", "--json"], Some(&input));
    assert_success(&["publish"], &output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("publishing"),
        "progress was drawn into a pipe: {stderr}"
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["published"], 0, "{summary}");
    assert_eq!(summary["duplicates"], 100_000, "{summary}");
}

/// Publishes `n` events to a data directory and dead-letters all of them in group `mailer`.
fn dead_letter_in(dir: &Path, n: u64) {
    use runnel_backend::Backend;
    use runnel_backend_embedded::{EmbeddedBackend, EmbeddedConfig};
    use runnel_envelope::{Event, EventType, Source};
    use runnel_runtime::{HandlerError, Runnel, RuntimeConfig};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let backend: std::sync::Arc<dyn Backend> = std::sync::Arc::new(
            EmbeddedBackend::open(EmbeddedConfig::new(dir))
                .await
                .unwrap(),
        );
        let runnel = Runnel::open(RuntimeConfig::default(), backend.clone());
        let events: Vec<Event> = (0..n)
            .map(|i| {
                Event::builder(
                    EventType::new("order.placed").unwrap(),
                    Source::new("test").unwrap(),
                )
                .partition_key(format!("c{}", i % 64))
                .data_json(json!({ "n": i }))
                .build()
                .unwrap()
            })
            .collect();
        for chunk in events.chunks(1000) {
            runnel.publish_batch(chunk.to_vec()).await.unwrap();
        }
        let consumer = runnel
            .group("mailer")
            .subscribe("order.*")
            .run(|_message| async { Err::<Vec<Event>, _>(HandlerError::permanent("no address")) })
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while runnel.dlq_depth("mailer").await.unwrap().depth < n {
            assert!(
                std::time::Instant::now() < deadline,
                "dead-lettering took too long"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        consumer.stop().await.unwrap();
        backend.close().await.unwrap();
    });
}

#[test]
fn dlq_replay_of_10000_entries_reports_progress_and_the_final_counts() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    dead_letter_in(data.path(), 10_000);
    let dir = data.path().display().to_string();

    // The server is stopped: --data-dir works on its directory directly.
    let depth = {
        let mut command = runnel(home.path());
        command.args(["groups", "--json", "--data-dir", &dir]);
        let output = run_command(command, None);
        assert_success(&["groups"], &output);
        let groups: Value = serde_json::from_slice(&output.stdout).unwrap();
        groups.to_string()
    };
    assert!(depth.contains("10000"), "the DLQ depth is 10000: {depth}");

    let bin = env!("CARGO_BIN_EXE_runnel");
    let shown = on_a_terminal(
        &format!(
            "{} dlq replay mailer --all --data-dir {}",
            shell_quote(bin),
            shell_quote(&dir)
        ),
        home.path(),
    );
    assert!(
        shown.contains("replaying") && shown.contains("/10000 entries"),
        "no progress on the terminal: {shown}"
    );
    assert!(
        shown.contains(
            "replayed 10000 entries to group mailer (0 already being replayed, 0 not found)"
        ),
        "final counts: {shown}"
    );
    // Replaying them again: all already pending, reported the same way in JSON.
    let mut command = runnel(home.path());
    command.args([
        "dlq",
        "replay",
        "mailer",
        "--all",
        "--json",
        "--data-dir",
        &dir,
    ]);
    let output = run_command(command, None);
    assert_success(&["dlq", "replay"], &output);
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("replaying"),
        "no progress bar into a pipe"
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["replayed"].as_u64().unwrap() + report["already_pending"].as_u64().unwrap(),
        10_000,
        "{report}"
    );
}

#[test]
fn data_dir_works_on_a_stopped_servers_data_and_is_refused_while_one_runs() {
    let home = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().display().to_string();
    // A directory that does not exist is a usage error naming it, and nothing is created.
    let missing = data.path().join("no-such-dir");
    let mut command = runnel(home.path());
    command.args(["publish", "--data-dir"]).arg(&missing);
    let output = run_command(command, Some(&order_lines(1, 0)));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no-such-dir"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!missing.exists());

    let mut command = runnel(home.path());
    command.args(["publish", "--json", "--data-dir", &dir]);
    let output = run_command(command, Some(&order_lines(25, 0)));
    assert_success(&["publish", "--data-dir"], &output);

    let mut command = runnel(home.path());
    command.args(["streams", "--json", "--data-dir", &dir]);
    let output = run_command(command, None);
    assert_success(&["streams", "--data-dir"], &output);
    let streams: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(streams.to_string().contains("\"order\""), "{streams}");
    assert!(streams.to_string().contains("25"), "{streams}");

    let mut command = runnel(home.path());
    command.args(["streams", "--data-dir", &dir, "--url", "http://127.0.0.1:1"]);
    let output = run_command(command, None);
    assert_eq!(
        output.status.code(),
        Some(2),
        "--data-dir with --url is a usage error"
    );

    // A running server holds the directory.
    let server = TestServer::start();
    let mut command = runnel(home.path());
    command
        .args(["streams", "--data-dir"])
        .arg(server._data.path());
    let output = run_command(command, None);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already open"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn config_show_prints_the_layered_configuration_as_toml_and_json_with_secrets_redacted() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("runnel.toml");
    std::fs::write(
        &file,
        "default_partitions = 8\nnats_user = \"svc\"\nnats_password = \"hunter2-hunter2\"\n",
    )
    .unwrap();
    let run = |json: bool| {
        let mut command = runnel(home.path());
        command
            .args(["config", "show", "--config"])
            .arg(&file)
            .args(["--backend", "jetstream", "--nats-replicas", "3"])
            .env("RUNNEL_NATS_URL", "nats://10.1.2.3:4222");
        if json {
            command.arg("--json");
        }
        let output = run_command(command, None);
        assert_success(&["config", "show"], &output);
        String::from_utf8(output.stdout).unwrap()
    };
    let shown: Value = serde_json::from_str(&run(true)).unwrap();
    assert_eq!(shown["backend"], "jetstream", "flag");
    assert_eq!(shown["nats_replicas"], 3, "flag");
    assert_eq!(shown["nats_url"], "nats://10.1.2.3:4222", "environment");
    assert_eq!(shown["default_partitions"], 8, "file");
    assert_eq!(shown["fsync"], "group", "default");
    assert_eq!(shown["nats_password"], "<redacted>");
    let toml = run(false);
    assert!(toml.contains("backend = \"jetstream\""), "{toml}");
    assert!(
        toml.contains("nats_url = \"nats://10.1.2.3:4222\""),
        "{toml}"
    );
    assert!(toml.contains("default_partitions = 8"), "{toml}");
    assert!(!toml.contains("hunter2"), "{toml}");

    // A value the server refuses is a usage error naming it.
    let mut command = runnel(home.path());
    command.args([
        "config",
        "show",
        "--nats-replicas",
        "9",
        "--backend",
        "jetstream",
    ]);
    let output = run_command(command, None);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nats_replicas"));
}

#[test]
fn bench_runtime_filters_refuse_values_that_select_no_run() {
    let home = tempfile::tempdir().unwrap();
    // Each refused command line and what its error must name. The embedded backend's fsync
    // policies mean nothing to a JetStream run: refused before a server is started.
    let refused: [(&[&str], &[&str]); 4] = [
        (&["--groups", "3"], &["--groups"]),
        (&["--events", "0"], &["--events"]),
        (&["--fsync", "always"], &["--fsync"]),
        (
            &["--backend", "jetstream", "--fsync", "os"],
            &["--fsync", "sync_interval"],
        ),
    ];
    for (args, named) in refused {
        let mut command = runnel(home.path());
        command.args(["bench", "runtime"]).args(args);
        let output = run_command(command, None);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        for name in named {
            assert!(
                stderr.contains(name),
                "{args:?} should name {name}: {stderr}"
            );
        }
    }
}

/// Runs `runnel <args> --url <server>` with stdout a pipe whose reader has already gone, as
/// in `runnel … | head -0`.
fn run_into_a_closed_pipe(server: &TestServer, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut command = runnel(server.home.path());
    command
        .args(args)
        .args(["--url", &server.url])
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped());
    command.output().unwrap()
}

/// Ended as a Unix tool whose reader went away: by SIGPIPE, with nothing on stderr.
fn assert_quiet_sigpipe_exit(args: &[&str], output: &Output) {
    use std::os::unix::process::ExitStatusExt;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGPIPE),
        "{args:?} exited {:?}: {stderr}",
        output.status
    );
    assert!(stderr.is_empty(), "{args:?} said something: {stderr}");
}

#[test]
fn tail_into_a_closed_pipe_exits_quietly_and_acks_nothing_it_could_not_write() {
    let server = TestServer::start();
    let output = server.run_with_stdin(&["publish"], Some(&order_lines(3, 0)));
    assert_success(&["publish"], &output);
    // A short ack_wait, so what tail leaves unsettled comes again soon.
    let status = ureq_put(
        &server.url,
        "/v1/groups/audit",
        json!({"filter": "order.*", "start": "earliest", "ack_wait": 300}),
    );
    assert!(status < 300, "PUT group: {status}");

    let args = ["tail", "audit", "--no-follow", "--wait-ms", "5000"];
    let output = run_into_a_closed_pipe(&server, &args);
    assert_quiet_sigpipe_exit(&args, &output);

    // Not one line reached a reader, so not one event was acknowledged: all three come again.
    let tail = server.ok(&["tail", "audit", "--count", "3", "--json"]);
    let mut ids: Vec<String> = tail
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["event"]["id"].to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, [r#""o-0""#, r#""o-1""#, r#""o-2""#], "{tail}");
}

#[test]
fn listing_commands_into_a_closed_pipe_exit_quietly() {
    let server = TestServer::start();
    let output = server.run_with_stdin(&["publish"], Some(&order_lines(3, 0)));
    assert_success(&["publish"], &output);
    ureq_put(
        &server.url,
        "/v1/groups/mailer",
        json!({"filter": "order.*", "start": "earliest"}),
    );
    for args in [
        &["dlq", "list", "mailer"][..],
        &["dlq", "list", "mailer", "--json"],
        &["streams"],
        &["lag", "mailer"],
        &["schema", "list"],
    ] {
        let output = run_into_a_closed_pipe(&server, args);
        assert_quiet_sigpipe_exit(args, &output);
    }
}

#[test]
fn reports_printed_as_they_go_into_a_closed_pipe_exit_quietly() {
    // `config show` prints with println!, as the bench, chaos and the demo do: a closed stdout
    // made it panic ("failed printing to stdout", exit 101).
    let home = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let args = ["config", "show"];
    let output = runnel(home.path())
        .args(args)
        .current_dir(home.path())
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_quiet_sigpipe_exit(&args, &output);
}

#[test]
fn tail_shows_binary_data_as_its_size_and_first_bytes_not_null() {
    let server = TestServer::start();
    ureq_put(
        &server.url,
        "/v1/groups/audit",
        json!({"filter": "order.*", "start": "earliest"}),
    );
    // Binary mode: the body is the data, bytes as `application/octet-stream` says.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let bytes: Vec<u8> = (0u8..43).collect();
    let status = agent
        .post(&format!("{}/v1/events", server.url))
        .header("ce-specversion", "1.0")
        .header("ce-id", "b43")
        .header("ce-source", "/audit")
        .header("ce-type", "order.audited")
        .header("content-type", "application/octet-stream")
        .send(&bytes[..])
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 202);

    let shown = server.ok(&["tail", "audit", "--count", "1"]);
    assert_eq!(
        shown.trim_end(),
        "order/0@0  order.audited  b43  \
         <binary, 43 bytes, application/octet-stream: 000102030405060708090a0b0c0d0e0f…>",
    );
}

#[test]
fn an_event_over_max_event_bytes_is_named_as_such_and_not_blamed_on_the_batch() {
    let server = TestServer::start();
    // Line 2 of 3 is over the server's max_event_bytes (1 MiB by default): no --batch helps.
    let big = json!({"specversion": "1.0", "id": "big", "source": "/t", "type": "order.placed",
                     "data": {"s": "x".repeat(1_200_000)}});
    let lines = order_lines(1, 0) + &big.to_string() + "\n" + &order_lines(1, 1);
    for (batch, published_before) in [
        ("500", "nothing was published"),
        ("1", "line 1 was published"),
    ] {
        let output = server.run_with_stdin(&["publish", "--batch", batch], Some(&lines));
        assert_eq!(output.status.code(), Some(1), "--batch {batch}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("line 2 is an event larger than the server's max_event_bytes")
                && stderr.contains(published_before),
            "--batch {batch}: {stderr}"
        );
        assert!(
            !stderr.contains("lower --batch"),
            "--batch {batch}: {stderr}"
        );
    }
}

#[test]
fn a_request_over_max_body_bytes_asks_for_a_smaller_batch_unless_it_is_one_event() {
    let server = TestServer::start_configured(|config| config.max_body_bytes = 300_000);
    let event = |id: &str, bytes: usize| {
        json!({"specversion": "1.0", "id": id, "source": "/t", "type": "order.placed",
               "data": {"s": "x".repeat(bytes)}})
        .to_string()
            + "\n"
    };
    // Five events of 100 kB fit in no request of 300 kB together: a smaller batch helps.
    let lines: String = (0..5).map(|i| event(&format!("m{i}"), 100_000)).collect();
    let output = server.run_with_stdin(&["publish"], Some(&lines));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("(max_body_bytes): lower --batch; nothing was published"),
        "{stderr}"
    );
    // One event of 400 kB is too large in any batch: the event is named, not the batch.
    let lines = event("m0", 100) + &event("huge", 400_000);
    let output = server.run_with_stdin(&["publish", "--batch", "1"], Some(&lines));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 2 alone is more than the server takes in one request")
            && stderr.contains("max_body_bytes")
            && stderr.contains("line 1 was published"),
        "{stderr}"
    );
    assert!(!stderr.contains("lower --batch"), "{stderr}");
}

#[test]
fn publish_type_errors_are_about_the_event_with_a_suggestion_that_is_valid() {
    let server = TestServer::start();
    // A bad type is a usage error, found before a request, and the name suggested is valid.
    let output = server.run(&["publish", "--type", "Order-Placed", "--data", "{}"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--type") && stderr.contains("(did you mean `order.placed`?)"),
        "{stderr}"
    );
    // What the server refuses is "the event", not "event 0 of the batch" the user never sent.
    let output = server.run(&["publish", "--type", "order.placed", "--source", "not a uri"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the event was refused") && stderr.contains("`source`"),
        "{stderr}"
    );
    assert!(!stderr.contains("of the batch"), "{stderr}");
    assert_eq!(
        server.json(&["streams"]),
        json!([]),
        "nothing was published"
    );
}

#[test]
fn a_url_without_a_scheme_is_refused_with_the_http_url_to_use() {
    let home = tempfile::tempdir().unwrap();
    let mut command = runnel(home.path());
    command.args(["streams", "--url", "127.0.0.1:19517"]);
    let output = run_command(command, None);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--url") && stderr.contains("`http://127.0.0.1:19517`"),
        "{stderr}"
    );
    assert!(!stderr.contains("TLS"), "{stderr}");
}

#[test]
fn dlq_list_pages_with_after_and_filters_by_reason_and_time() {
    let server = TestServer::start();
    let output = server.run_with_stdin(&["publish"], Some(&order_lines(5, 0)));
    assert_success(&["publish"], &output);
    ureq_put(
        &server.url,
        "/v1/groups/mailer",
        json!({"filter": "order.*", "start": "earliest"}),
    );
    // Dead-letter all five: two time out, three have a bad address.
    let mut dead = 0;
    while dead < 5 {
        let pulled = ureq_post(
            &server.url,
            "/v1/groups/mailer/pull",
            json!({"max": 10, "wait_ms": 1000}),
        );
        for m in pulled["messages"].as_array().unwrap() {
            let reason = if m["event"]["id"] == "o-3" || m["event"]["id"] == "o-4" {
                "SMTP timeout"
            } else {
                "bad address"
            };
            ureq_post(
                &server.url,
                "/v1/groups/mailer/nack",
                json!({"receipt": m["receipt"], "class": "permanent", "reason": reason}),
            );
            dead += 1;
        }
    }

    // Pages of two, each asked for --after the `next` of the one before, until none is left.
    let mut ids: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut args = vec!["dlq", "list", "mailer", "--limit", "2"];
        if let Some(after) = &after {
            args.extend(["--after", after.as_str()]);
        }
        let page = server.json(&args);
        pages += 1;
        for entry in page["entries"].as_array().unwrap() {
            ids.push(entry["id"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 5, "every entry once: {ids:?}");
    // The table says how to ask for the next page.
    let table = server.ok(&["dlq", "list", "mailer", "--limit", "2"]);
    assert!(table.contains(&format!("--after {}", ids[1])), "{table}");

    // The server's filters: text in the reason (any case), and the dead-letter time.
    let count = |args: &[&str]| {
        let mut args = [&["dlq", "list", "mailer"][..], args].concat();
        args.push("--json");
        let output = server.run(&args);
        assert_success(&args, &output);
        let page: Value = serde_json::from_slice(&output.stdout).unwrap();
        page["entries"].as_array().unwrap().len()
    };
    assert_eq!(count(&["--reason", "timeout"]), 2);
    assert_eq!(count(&["--reason", "bad address"]), 3);
    assert_eq!(count(&["--since", "2999-01-01T00:00:00Z"]), 0);
    assert_eq!(count(&["--until", "2999-01-01T00:00:00Z"]), 5);
    assert_eq!(
        count(&[
            "--since",
            "2000-01-01T00:00:00+00:00",
            "--reason",
            "TIMEOUT"
        ]),
        2
    );
}

/// `publish --type` stamps `time` (now, or `--time`), so a feature window, which reads event
/// time from it by default, can place the event; a bad `--time` is a usage error.
#[test]
fn publish_with_type_stamps_the_event_time() {
    let server = TestServer::start();
    ureq_put(
        &server.url,
        "/v1/groups/timed",
        json!({"filter": "order.*", "start": "earliest"}),
    );
    server.ok(&["publish", "--type", "order.placed", "--data", "{}"]);
    server.ok(&[
        "publish",
        "--type",
        "order.placed",
        "--data",
        "{}",
        "--time",
        "2026-01-01T10:00:00+02:00",
    ]);
    let pulled = ureq_post(
        &server.url,
        "/v1/groups/timed/pull",
        json!({"max": 2, "wait_ms": 5000}),
    );
    let times: Vec<String> = pulled["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["event"]["time"].as_str().unwrap_or("none").to_string())
        .collect();
    assert_eq!(times.len(), 2, "{pulled}");
    let now = chrono::DateTime::parse_from_rfc3339(&times[0]).expect("an RFC 3339 time");
    assert!(
        (chrono::Utc::now() - now.to_utc()).num_seconds().abs() < 600,
        "{times:?}"
    );
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(&times[1]).map(|t| t.to_utc()),
        chrono::DateTime::parse_from_rfc3339("2026-01-01T08:00:00Z").map(|t| t.to_utc()),
        "{times:?}"
    );
    let output = server.run(&["publish", "--type", "order.placed", "--time", "yesterday"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--time `yesterday`"));
}

/// `dlq list/show` keep the event data's text (key order, numbers as written), with and
/// without `--json`, as every other command does (issue 20, item 13).
#[test]
fn dlq_list_and_show_keep_the_event_data_as_written() {
    let server = TestServer::start();
    let data = r#"{"zeta":1,"alpha":2.50,"mid":{"b":true,"a":null}}"#;
    server.ok(&["publish", "--type", "order.placed", "--data", data]);
    ureq_put(
        &server.url,
        "/v1/groups/mailer",
        json!({"filter": "order.*", "start": "earliest"}),
    );
    let pulled = ureq_post(
        &server.url,
        "/v1/groups/mailer/pull",
        json!({"max": 1, "wait_ms": 5000}),
    );
    let message = &pulled["messages"][0];
    ureq_post(
        &server.url,
        "/v1/groups/mailer/nack",
        json!({"receipt": message["receipt"], "class": "permanent", "reason": "bad"}),
    );
    wait_for_dead_letters(&server.url, 1);
    let list = server.ok(&["dlq", "list", "mailer", "--json"]);
    assert!(
        list.contains(data),
        "dlq list --json re-wrote the data: {list}"
    );
    let page: Value = serde_json::from_str(&list).unwrap();
    let id = page["entries"][0]["id"].as_str().unwrap().to_string();
    let show = server.ok(&["dlq", "show", "mailer", &id, "--json"]);
    assert!(
        show.contains(data),
        "dlq show --json re-wrote the data: {show}"
    );
    let human = server.ok(&["dlq", "show", "mailer", &id]);
    assert!(human.contains(data), "dlq show re-wrote the data: {human}");
}

/// `groups show G` lists what the group's clients hold on this server, and the counters say
/// since when they count (issue 20, item 14 and 8).
#[test]
fn groups_show_lists_the_deliveries_held_and_when_the_counters_started() {
    let server = TestServer::start();
    let output = server.run_with_stdin(&["publish"], Some(&order_lines(2, 0)));
    assert_success(&["publish"], &output);
    ureq_put(
        &server.url,
        "/v1/groups/mailer",
        json!({"filter": "order.*", "start": "earliest"}),
    );
    let pulled = ureq_post(
        &server.url,
        "/v1/groups/mailer/pull",
        json!({"max": 1, "wait_ms": 5000}),
    );
    let id = pulled["messages"][0]["event"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let view = server.json(&["groups", "show", "mailer"]);
    let held = view["consumer"]["in_flight"].as_array().unwrap();
    assert_eq!(held.len(), 1, "{view}");
    assert_eq!(held[0]["event_id"], id.as_str());
    assert_eq!(held[0]["attempt"], 1);
    assert!(
        held[0]["held_since"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{view}"
    );
    assert!(held[0]["lapses_at"].as_str().is_some(), "{view}");
    assert!(
        view["counters"]["since"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "the counters say since when they count: {view}"
    );
    let human = server.ok(&["groups", "show", "mailer"]);
    assert!(human.contains(&id), "{human}");
    assert!(human.contains("1 in flight"), "{human}");
    // The list of groups is still `runnel groups`.
    let table = server.ok(&["groups"]);
    assert!(table.contains("mailer"), "{table}");
}

/// `streams create` and `groups create` set up what a first publish or pull would create
/// with defaults; creating a group twice never replaces its settings (issue 20, item 14).
#[test]
fn streams_create_and_groups_create_set_up_ahead_and_never_replace() {
    let server = TestServer::start();
    let stream = server.json(&["streams", "create", "order", "--partitions", "2"]);
    assert_eq!(stream["partitions"], 2, "{stream}");
    let listed = server.json(&["streams"]);
    assert_eq!(listed[0]["name"], "order", "{listed}");
    // The same partition count again is fine; another is refused.
    server.ok(&["streams", "create", "order", "--partitions", "2"]);
    let output = server.run(&["streams", "create", "order", "--partitions", "3"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");

    let human = server.ok(&[
        "groups",
        "create",
        "mailer",
        "--filter",
        "order.*",
        "--max-deliver",
        "7",
    ]);
    assert!(human.contains("mailer"), "{human}");
    let view = server.json(&["groups", "show", "mailer"]);
    assert_eq!(view["config"]["filter"], "order.*", "{view}");
    assert_eq!(view["config"]["max_deliver"], 7, "{view}");
    let output = server.run(&["groups", "create", "mailer", "--filter", ">"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("exists already"),
        "{output:?}"
    );
    let view = server.json(&["groups", "show", "mailer"]);
    assert_eq!(
        view["config"]["filter"], "order.*",
        "the settings were kept: {view}"
    );
}

/// `streams delete` and `groups delete` refuse (exit 1, naming what uses it) while a group
/// reads the stream or a consumer runs the group, and delete with `--force` (issue 20,
/// items 6 and 14).
#[test]
fn streams_delete_and_groups_delete_refuse_what_is_in_use_unless_forced() {
    let server = TestServer::start();
    server.ok(&["groups", "create", "mailer", "--filter", "order.*"]);
    server.ok(&["publish", "--type", "order.placed", "--data", "{\"n\":1}"]);
    server.ok(&[
        "publish",
        "--type",
        "payment.charged",
        "--data",
        "{\"n\":1}",
    ]);

    let output = server.run(&["streams", "delete", "order"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("mailer") && stderr.contains("in use"),
        "{stderr}"
    );
    // No group reads `payment`.
    let human = server.ok(&["streams", "delete", "payment"]);
    assert!(human.contains("stream payment deleted"), "{human}");

    // Tail starts the server's consumer of the group, which runs on after it.
    server.ok(&["tail", "mailer", "--no-follow", "--count", "1"]);
    let output = server.run(&["groups", "delete", "mailer"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("consumer instance"), "{stderr}");

    let deleted = server.json(&["groups", "delete", "mailer", "--force"]);
    assert_eq!(deleted["deleted"]["group"], "mailer", "{deleted}");
    let output = server.run(&["groups", "show", "mailer"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    // Its reader gone, the stream is deleted without force.
    server.ok(&["streams", "delete", "order"]);
    let listed = server.json(&["streams"]);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(
        !names.contains(&"order") && !names.contains(&"payment"),
        "{listed}"
    );
    let output = server.run(&["streams", "delete", "order", "--force"]);
    assert_eq!(output.status.code(), Some(1), "unknown: {output:?}");
}
