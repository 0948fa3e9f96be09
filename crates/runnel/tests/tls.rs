//! `runnel serve` with TLS, as a child process with a CA and certificates the test makes:
//! it says `https://` on its first line, a SIGHUP serves replaced certificate files, and a
//! non-loopback bind with keys but without TLS is refused at start. The CLI publishes and
//! reads over HTTPS trusting the CA from `--ca-file`, `RUNNEL_CA_FILE` or `cli.toml`, and
//! says what is wrong when it cannot (an untrusted certificate, the wrong scheme, a bad CA
//! file).

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::Serve;
use runnel_server::test_certs::{ServerCert, TestCa, presented_certificate};
use serde_json::{Value, json};
use tempfile::TempDir;

/// A CA, a server certificate it signed in `cert`/`key`, and `ca.pem` for clients.
struct Certs {
    dir: TempDir,
    ca: TestCa,
    first: ServerCert,
    cert: PathBuf,
    key: PathBuf,
}

impl Certs {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("runnel test CA");
        let first = ca.issue();
        let cert = dir.path().join("server.pem");
        let key = dir.path().join("server.key");
        first.write(&cert, &key);
        ca.write(&dir.path().join("ca.pem"));
        Self {
            dir,
            ca,
            first,
            cert,
            key,
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// `runnel serve` over HTTPS with these files and a data directory beside them.
    fn serve(&self, more: &[&str]) -> Serve {
        let data = self.dir.path().join("data");
        let mut args = vec![
            OsStr::new("--data-dir"),
            data.as_os_str(),
            OsStr::new("--tls-cert"),
            self.cert.as_os_str(),
            OsStr::new("--tls-key"),
            self.key.as_os_str(),
        ];
        args.extend(more.iter().map(OsStr::new));
        let server = Serve::start(args);
        assert_eq!(server.scheme, "https");
        server
    }
}

fn runnel(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_runnel"));
    command
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("RUNNEL_URL")
        .env_remove("RUNNEL_KEY")
        .env_remove("RUNNEL_CA_FILE")
        .env_remove("RUNNEL_TLS_CERT")
        .env_remove("RUNNEL_TLS_KEY")
        .env_remove("RUNNEL_ALLOW_PLAINTEXT");
    command
}

#[test]
fn sighup_serves_replaced_certificate_files() {
    let certs = Certs::new();
    // No file check: only the signal can make the server read the files again.
    let config = certs.dir.path().join("runnel.toml");
    std::fs::write(&config, "tls_reload_secs = 0\n").unwrap();
    let server = certs.serve(&["--config", config.to_str().unwrap()]);
    assert_eq!(
        presented_certificate(server.addr, certs.ca.roots()).unwrap(),
        certs.first.der
    );

    let renewed_ca = TestCa::new("renewed CA");
    let renewed = renewed_ca.issue();
    renewed.write(&certs.cert, &certs.key);
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match presented_certificate(server.addr, renewed_ca.roots()) {
            Ok(der) if der == renewed.der => break,
            other => assert!(
                Instant::now() < deadline,
                "the renewed certificate was never served: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        presented_certificate(server.addr, certs.ca.roots()).is_err(),
        "the old CA no longer vouches for what is served"
    );
}

#[test]
fn a_non_loopback_bind_with_keys_and_no_tls_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let output = runnel(dir.path())
        .args(["serve", "--bind", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env(
            "RUNNEL_API_KEYS",
            r#"[{name = "ci", key = "0123456789abcdef", scopes = ["admin"]}]"#,
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for named in ["tls_cert", "tls_key", "allow_plaintext"] {
        assert!(stderr.contains(named), "{named} in {stderr}");
    }
}

#[test]
fn config_show_prints_the_tls_settings() {
    let dir = tempfile::tempdir().unwrap();
    let output = runnel(dir.path())
        .current_dir(dir.path())
        .args([
            "config",
            "show",
            "--tls-cert",
            "cert.pem",
            "--tls-key",
            "key.pem",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    for line in [
        "tls_cert = \"cert.pem\"",
        "tls_key = \"key.pem\"",
        "tls_reload_secs = 5",
        "allow_plaintext = false",
    ] {
        assert!(stdout.contains(line), "{line} in {stdout}");
    }
}

/// Runs `runnel <args>` with an empty home; the exit code, stdout and stderr.
fn run(home: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = runnel(home).args(args).output().unwrap();
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Creates consumer group `group` over HTTPS (the CLI has no command for it).
fn put_group(url: &str, ca: &TestCa, group: &str) {
    let ca = ureq::tls::Certificate::from_pem(ca.pem().as_bytes()).unwrap();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let answer = agent
        .put(&format!("{url}/v1/groups/{group}"))
        .header("content-type", "application/json")
        .send(json!({"filter": "order.*", "start": "earliest"}).to_string())
        .unwrap();
    assert_eq!(answer.status().as_u16(), 201);
}

#[test]
fn the_cli_publishes_and_reads_over_https_trusting_the_ca_file() {
    let certs = Certs::new();
    let server = certs.serve(&[]);
    let url = server.url();
    let ca_file = certs.ca_file();
    let ca_file = ca_file.to_str().unwrap();
    let home = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(
        home.path(),
        &[
            "publish",
            "--type",
            "order.placed",
            "--data",
            r#"{"n": 1}"#,
            "--id",
            "e-1",
            "--json",
            "--url",
            &url,
            "--ca-file",
            ca_file,
        ],
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");

    // Read back, trusting the CA through RUNNEL_CA_FILE this time.
    put_group(&url, &certs.ca, "billing");
    let output = runnel(home.path())
        .args(["tail", "billing", "--count", "1", "--json", "--url", &url])
        .env("RUNNEL_CA_FILE", ca_file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let message: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(message["event"]["id"], "e-1", "{message}");
    assert_eq!(message["event"]["data"], json!({"n": 1}), "{message}");

    // And through `ca_file` in cli.toml, relative to the file.
    let config_dir = home.path().join(".config").join("runnel");
    std::fs::create_dir_all(&config_dir).unwrap();
    certs.ca.write(&config_dir.join("ca.pem"));
    std::fs::write(
        config_dir.join("cli.toml"),
        format!("url = \"{url}\"\nca_file = \"ca.pem\"\n"),
    )
    .unwrap();
    let (code, stdout, stderr) = run(home.path(), &["streams", "--json"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("\"order\""), "{stdout}");
}

#[test]
fn a_cli_that_does_not_trust_the_certificate_names_the_problem_and_the_fix() {
    let certs = Certs::new();
    let server = certs.serve(&[]);
    let home = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(home.path(), &["streams", "--url", &server.url()]);
    assert_eq!(code, Some(3), "{stdout}{stderr}");
    for said in [
        "TLS certificate is not accepted",
        "not signed by a certificate authority this client trusts",
        "UnknownIssuer",
        "--ca-file",
    ] {
        assert!(stderr.contains(said), "{said} in {stderr}");
    }

    // Another CA's file does not help either.
    let stranger = home.path().join("stranger.pem");
    TestCa::new("another CA").write(&stranger);
    let (code, _, stderr) = run(
        home.path(),
        &[
            "streams",
            "--url",
            &server.url(),
            "--ca-file",
            stranger.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
}

#[test]
fn the_wrong_scheme_is_told_apart_from_a_dead_server() {
    let certs = Certs::new();
    let tls = certs.serve(&[]);
    let home = tempfile::tempdir().unwrap();
    // Plain HTTP to the TLS port: the server answers that it speaks HTTPS only.
    let plain_url = format!("http://{}", tls.addr);
    let (code, stdout, stderr) = run(home.path(), &["streams", "--url", &plain_url]);
    assert_ne!(code, Some(0), "{stdout}");
    assert!(stderr.contains("HTTPS only"), "{stderr}");
    assert!(stderr.contains("https://"), "{stderr}");

    // https:// to a plain server: no TLS in the answer.
    let data = certs.dir.path().join("plain-data");
    let plain = Serve::start([OsStr::new("--data-dir"), data.as_os_str()]);
    let https_url = format!("https://{}", plain.addr);
    let (code, _, stderr) = run(
        home.path(),
        &[
            "streams",
            "--url",
            &https_url,
            "--ca-file",
            certs.ca_file().to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("did not answer in TLS"), "{stderr}");
}

#[test]
fn a_ca_file_that_holds_no_certificate_is_a_usage_error() {
    let certs = Certs::new();
    let server = certs.serve(&[]);
    let home = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(
        home.path(),
        &[
            "streams",
            "--url",
            &server.url(),
            "--ca-file",
            certs.key.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no certificate"), "{stderr}");
    let (code, _, stderr) = run(
        home.path(),
        &[
            "streams",
            "--url",
            &server.url(),
            "--ca-file",
            "/nonexistent/ca.pem",
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent/ca.pem"), "{stderr}");
}
