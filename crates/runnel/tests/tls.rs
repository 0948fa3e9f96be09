//! `runnel serve` with TLS, as a child process with a CA and certificates the test makes:
//! it says `https://` on its first line, a SIGHUP serves replaced certificate files, and a
//! non-loopback bind with keys but without TLS is refused at start.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Serve;
use runnel_server::test_certs::{ServerCert, TestCa, presented_certificate};
use tempfile::TempDir;

/// A CA and a server certificate it signed in `cert`/`key`.
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
        Self {
            dir,
            ca,
            first,
            cert,
            key,
        }
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
