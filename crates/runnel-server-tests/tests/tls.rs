//! HTTPS from `tls_cert`/`tls_key`, against a real server on 127.0.0.1:0 with a CA and
//! certificates the test makes: events go in and come out over TLS, plain HTTP and untrusted
//! clients are turned away, and a replaced certificate is served without dropping open
//! connections while a bad one is refused and the old one kept.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use runnel_server::test_certs::{ServerCert, TestCa, presented_certificate};
use runnel_server::testing::Client;
use runnel_server::{ConfigError, Server, ServerConfig, ServerError, TlsError, TlsReloader};
use serde_json::json;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A TLS server in this process, its CA, and where its certificate files are.
struct TlsServer {
    ca: TestCa,
    first: ServerCert,
    cert: PathBuf,
    key: PathBuf,
    addr: std::net::SocketAddr,
    reloader: TlsReloader,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
    _dir: TempDir,
}

impl TlsServer {
    async fn start(edit: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("runnel test CA");
        let first = ca.issue();
        let cert = dir.path().join("server.pem");
        let key = dir.path().join("server.key");
        first.write(&cert, &key);
        let mut config = common::config(&dir);
        config.data_dir = dir.path().join("data");
        config.tls_cert = cert.clone();
        config.tls_key = key.clone();
        edit(&mut config);
        let backend = common::backend(&config).await;
        let server = Server::bind(config, backend).await.unwrap();
        assert_eq!(server.scheme(), "https");
        let addr = server.local_addr().unwrap();
        let reloader = server.tls().cloned().expect("TLS is configured");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Self {
            ca,
            first,
            cert,
            key,
            addr,
            reloader,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// A client trusting this server's CA.
    fn client(&self) -> Client {
        Client::new(self.addr).with_tls(self.ca.roots())
    }

    /// The certificate a client trusting the CA is shown now.
    async fn presented(&self) -> rustls::pki_types::CertificateDer<'static> {
        let (addr, roots) = (self.addr, self.ca.roots());
        tokio::task::spawn_blocking(move || presented_certificate(addr, roots))
            .await
            .unwrap()
            .unwrap()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_tls_when_a_client_trusting_the_ca_publishes_and_pulls_should_get_its_event_back() {
    let server = TlsServer::start(|_| {}).await;
    let client = server.client();
    let published = client
        .publish(&common::event("e-1", "order.placed", json!({"n": 1})))
        .await
        .unwrap();
    assert_eq!(published.status, 202, "{}", published.text());
    let created = client
        .json(
            "PUT",
            "/v1/groups/billing",
            &json!({"filter": "order.*", "start": "earliest"}),
        )
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.text());
    let pulled = client
        .json(
            "POST",
            "/v1/groups/billing/pull",
            &json!({"max": 10, "wait_ms": 5000}),
        )
        .await
        .unwrap();
    assert_eq!(pulled.status, 200, "{}", pulled.text());
    let messages = pulled.json()["messages"].clone();
    assert_eq!(messages[0]["event"]["id"], "e-1", "{messages}");
    assert_eq!(messages[0]["event"]["data"], json!({"n": 1}));
    assert_eq!(server.presented().await, server.first.der);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_the_tls_port_is_answered_with_a_problem_naming_https() {
    let server = TlsServer::start(|_| {}).await;
    let plain = Client::new(server.addr);
    let answer = plain.get("/healthz").await.unwrap();
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(answer.json()["code"], "tls.required", "{}", answer.text());
    assert!(answer.text().contains("https://"), "{}", answer.text());
    let healthy = server.client().get("/healthz").await.unwrap();
    assert_eq!(healthy.status, 200, "still serving HTTPS");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_trust_the_ca_is_refused_in_the_handshake() {
    let server = TlsServer::start(|_| {}).await;
    let stranger = Client::new(server.addr).with_tls(TestCa::new("another CA").roots());
    let err = stranger.get("/healthz").await.unwrap_err().to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_files_are_served_after_the_file_check_and_open_connections_keep_working() {
    let server = TlsServer::start(|config| config.tls_reload_secs = 1).await;
    // A keep-alive connection opened on the first certificate.
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(server.addr.ip().into());
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(server.ca.roots())
        .with_no_client_auth(),
    ));
    let tls = connector.connect(name, tcp).await.unwrap();
    let (mut open, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    let health = || {
        Request::get("/healthz")
            .header("host", "127.0.0.1")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let before = open.send_request(health()).await.unwrap();
    assert_eq!(before.status(), 200);
    before.into_body().collect().await.unwrap();

    let second = server.ca.issue();
    second.write(&server.cert, &server.key);
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.presented().await != second.der {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let after = open.send_request(health()).await.unwrap();
    assert_eq!(after.status(), 200, "the connection opened before stays");
    after.into_body().collect().await.unwrap();
    driver.abort();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_new_pair_is_refused_and_the_certificate_in_use_stays() {
    let server = TlsServer::start(|config| config.tls_reload_secs = 0).await;
    std::fs::write(&server.cert, "not a certificate\n").unwrap();
    let err = server.reloader.reload().unwrap_err();
    assert!(
        matches!(
            err,
            TlsError::Pem {
                field: "tls_cert",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("no certificate"), "{err}");
    assert_eq!(server.presented().await, server.first.der);

    // A certificate with another certificate's key.
    let other = server.ca.issue();
    std::fs::write(&server.cert, &other.cert_pem).unwrap();
    std::fs::write(&server.key, &server.first.key_pem).unwrap();
    let err = server.reloader.reload().unwrap_err();
    assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
    assert_eq!(server.presented().await, server.first.der);

    std::fs::remove_file(&server.key).unwrap();
    let err = server.reloader.reload().unwrap_err();
    assert!(
        matches!(
            err,
            TlsError::Read {
                field: "tls_key",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(server.presented().await, server.first.der);

    other.write(&server.cert, &server.key);
    server.reloader.reload().unwrap();
    assert_eq!(server.presented().await, other.der);
    server.stop().await;
}

#[tokio::test]
async fn a_certificate_file_that_cannot_be_read_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(&dir);
    config.tls_cert = dir.path().join("missing.pem");
    config.tls_key = dir.path().join("missing.key");
    let backend = common::backend(&config).await;
    let err = match Server::bind(config, backend).await {
        Ok(_) => panic!("a server without its certificate started"),
        Err(err) => err,
    };
    assert!(
        matches!(
            err,
            ServerError::Config(ConfigError::Tls(TlsError::Read {
                field: "tls_cert",
                ..
            }))
        ),
        "{err}"
    );
    assert!(err.to_string().contains("missing.pem"), "{err}");
}
