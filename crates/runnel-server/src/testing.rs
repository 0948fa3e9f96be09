//! A small HTTP/1.1 client for tests against a running server (feature `test-util`): one
//! request per connection, whole bodies, over TLS when asked ([`Client::with_tls`]). Shared
//! by this crate's tests and the binary's process tests so neither copies it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// An answer: status, headers and body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`Value::Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect: {0}")]
    Connect(#[from] std::io::Error),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
}

/// A client for one server address.
#[derive(Clone)]
pub struct Client {
    addr: SocketAddr,
    token: Option<String>,
    tls: Option<TlsConnector>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            token: None,
            tls: None,
        }
    }

    /// Speaks HTTPS, trusting `roots` and asking for the address's IP as the server name.
    pub fn with_tls(mut self, roots: rustls::RootCertStore) -> Self {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("rustls' default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        self.tls = Some(TlsConnector::from(Arc::new(config)));
        self
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sends a request; `headers` are `(name, value)` pairs.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Answer, ClientError> {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        self.send_raw(method, path, &headers, body).await
    }

    /// Like [`Client::send`], with header values as raw bytes (for invalid-input tests).
    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &[u8])],
        body: impl Into<Bytes>,
    ) -> Result<Answer, ClientError> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body.into()))?;
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        match &self.tls {
            None => exchange(stream, request).await,
            Some(tls) => {
                let name = ServerName::IpAddress(self.addr.ip().into());
                exchange(tls.connect(name, stream).await?, request).await
            }
        }
    }

    pub async fn get(&self, path: &str) -> Result<Answer, ClientError> {
        self.send("GET", path, &[], Bytes::new()).await
    }

    /// A JSON request.
    pub async fn json(
        &self,
        method: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Answer, ClientError> {
        self.send(
            method,
            path,
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }

    /// One event in structured mode.
    pub async fn publish(&self, event: &serde_json::Value) -> Result<Answer, ClientError> {
        self.send(
            "POST",
            "/v1/events",
            &[("content-type", "application/cloudevents+json")],
            event.to_string(),
        )
        .await
    }

    /// A batch.
    pub async fn publish_batch(&self, events: &[serde_json::Value]) -> Result<Answer, ClientError> {
        self.send(
            "POST",
            "/v1/events",
            &[("content-type", "application/cloudevents-batch+json")],
            serde_json::Value::Array(events.to_vec()).to_string(),
        )
        .await
    }
}

/// One request and its whole answer over `io`.
async fn exchange<IO>(io: IO, request: Request<Full<Bytes>>) -> Result<Answer, ClientError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let driver = tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    driver.abort();
    Ok(Answer {
        status,
        headers,
        body,
    })
}
