//! A blocking client of the server's HTTP API (`docs/http-api.md`), shared by the CLI's
//! commands and `runnel demo`: JSON in and out, problem documents turned into errors, and
//! "cannot connect" kept apart from "the server said no" so the binary can exit 3 for both
//! with a message naming the URL.
//!
//! `https://` URLs go through rustls (on `ring`): the server's certificate is checked against
//! the webpki roots, or only against the CAs of a [`CaFile`] (`--ca-file`) for a private CA.
//! A certificate the client does not accept is reported as such, naming the problem and the
//! way to trust a private CA.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Serialize;
use serde_json::Value;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No connection (refused, timed out, bad address, a TLS certificate not accepted).
    #[error("cannot reach the server at {url}: {message}")]
    Unreachable { url: String, message: String },
    /// 401 or 403: the key is missing, unknown or lacks the scope.
    #[error("the server at {url} refused the request ({status}): {detail}")]
    Refused {
        url: String,
        status: u16,
        detail: String,
    },
    /// Any other non-2xx answer, with the problem document's detail.
    #[error("{method} {url}: {status} {detail}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        detail: String,
        problem: Value,
    },
}

impl ApiError {
    /// Unreachable or refused: exit code 3.
    pub fn is_connection(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Refused { .. })
    }
}

/// The CA certificates of a PEM file, the only ones trusted for `https://` when given.
#[derive(Debug, Clone)]
pub struct CaFile {
    certs: Vec<ureq::tls::Certificate<'static>>,
}

/// Why a CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    #[error("cannot read the CA file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CA file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl CaFile {
    /// Reads every `BEGIN CERTIFICATE` block of `path`; at least one, each a usable CA.
    pub fn read(path: &Path) -> Result<Self, CaFileError> {
        let invalid = |message: String| CaFileError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let pem = std::fs::read(path).map_err(|source| CaFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let ders = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("not a PEM file: {e}")))?;
        if ders.is_empty() {
            return Err(invalid(
                "no certificate in it (expected PEM `BEGIN CERTIFICATE` blocks)".into(),
            ));
        }
        let mut store = rustls::RootCertStore::empty();
        for (index, der) in ders.iter().enumerate() {
            store.add(der.clone()).map_err(|e| {
                invalid(format!(
                    "certificate {} cannot be a trust anchor: {e}",
                    index + 1
                ))
            })?;
        }
        let certs = ders
            .iter()
            .map(|der| ureq::tls::Certificate::from_der(der).to_owned())
            .collect();
        Ok(Self { certs })
    }
}

/// A server's base URL and optional API key, over one pooled agent.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    key: Option<String>,
    agent: ureq::Agent,
    /// The server inside this process (`--data-dir`), kept running while any copy lives.
    _local: Option<std::sync::Arc<crate::cli::local::LocalServer>>,
}

impl Api {
    /// A client trusting the webpki roots for `https://`.
    pub fn new(base: &str, key: Option<String>) -> Self {
        Self::with_ca(base, key, None)
    }

    /// A client trusting only the CAs of `ca` for `https://`, or the webpki roots without.
    pub fn with_ca(base: &str, key: Option<String>, ca: Option<&CaFile>) -> Self {
        let roots = match ca {
            Some(ca) => ureq::tls::RootCerts::new_with_certs(&ca.certs),
            None => ureq::tls::RootCerts::WebPki,
        };
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(roots)
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_secs(120)))
            .tls_config(tls)
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_string(),
            key,
            agent,
            _local: None,
        }
    }

    /// This client with the in-process server it talks to, stopped when the last copy is
    /// dropped.
    pub fn serving(mut self, local: crate::cli::local::LocalServer) -> Self {
        self._local = Some(std::sync::Arc::new(local));
        self
    }

    pub fn get(&self, path: &str) -> Result<Value, ApiError> {
        let url = self.url(path);
        let request = self.auth(self.agent.get(&url));
        self.finish("GET", &url, request.call())
    }

    /// As [`Api::get`], the answer as its JSON text: numbers and key order exactly as sent
    /// (event data keeps its text).
    pub fn get_text(&self, path: &str) -> Result<String, ApiError> {
        let url = self.url(path);
        let request = self.auth(self.agent.get(&url));
        let (status, text) = self.read(request.call())?;
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(self.problem("GET", &url, status, text))
        }
    }

    pub fn delete(&self, path: &str) -> Result<Value, ApiError> {
        let url = self.url(path);
        let request = self.auth(self.agent.delete(&url));
        self.finish("DELETE", &url, request.call())
    }

    pub fn post(&self, path: &str, body: &impl Serialize) -> Result<Value, ApiError> {
        self.post_as(path, "application/json", body)
    }

    /// As [`Api::post`], the answer as its JSON text: numbers and key order exactly as sent.
    pub fn post_text(&self, path: &str, body: &impl Serialize) -> Result<String, ApiError> {
        let (url, result) = self.send_json("POST", path, "application/json", body);
        let (status, text) = self.read(result)?;
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(self.problem("POST", &url, status, text))
        }
    }

    pub fn put(&self, path: &str, body: &impl Serialize) -> Result<Value, ApiError> {
        let (url, result) = self.send_json("PUT", path, "application/json", body);
        self.finish("PUT", &url, result)
    }

    /// Sends `body` as JSON of `content_type` with a POST or PUT; the URL and what came back.
    fn send_json(
        &self,
        method: &'static str,
        path: &str,
        content_type: &str,
        body: &impl Serialize,
    ) -> (
        String,
        Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) {
        let url = self.url(path);
        let body = serde_json::to_vec(body).expect("a JSON value serializes");
        let request = if method == "PUT" {
            self.agent.put(&url)
        } else {
            self.agent.post(&url)
        };
        let result = self
            .auth(request)
            .header("content-type", content_type)
            .send(&body[..]);
        (url, result)
    }

    /// Posts `body` as JSON with the given content type (CloudEvents batches use their own).
    pub fn post_as(
        &self,
        path: &str,
        content_type: &str,
        body: &impl Serialize,
    ) -> Result<Value, ApiError> {
        let (url, result) = self.send_json("POST", path, content_type, body);
        self.finish("POST", &url, result)
    }

    /// Publishes events as one CloudEvents JSON batch; the answer is one position per event.
    /// Events may be [`Value`]s or JSON text kept as written (`Box<RawValue>`).
    pub fn publish_batch<E: Serialize>(&self, events: &[E]) -> Result<Value, ApiError> {
        self.post_as("/v1/events", "application/cloudevents-batch+json", &events)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.key {
            Some(key) => request.header("authorization", &format!("Bearer {key}")),
            None => request,
        }
    }

    fn finish(
        &self,
        method: &'static str,
        url: &str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, ApiError> {
        let (status, text) = self.read(result)?;
        if (200..300).contains(&status) {
            return Ok(if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            });
        }
        Err(self.problem(method, url, status, text))
    }

    /// The status and text of an answer.
    fn read(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, String), ApiError> {
        let mut response = result.map_err(|error| self.unreachable(&error))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()
            .map_err(|error| ApiError::Unreachable {
                url: self.base.clone(),
                message: format!("reading the answer: {error}"),
            })?;
        Ok((status, text))
    }

    /// The error a failed exchange stands for: no connection, or no TLS session with a
    /// certificate this client accepts.
    fn unreachable(&self, error: &ureq::Error) -> ApiError {
        let tls_error = match error {
            ureq::Error::Rustls(e) => Some(e),
            ureq::Error::Io(e) => e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()),
            _ => None,
        };
        let message = match tls_error {
            Some(rustls::Error::InvalidCertificate(problem)) => format!(
                "its TLS certificate is not accepted: {}. To trust a private CA, pass \
                 --ca-file PATH (or RUNNEL_CA_FILE, or `ca_file` in cli.toml) with the CA \
                 certificate that signed it",
                certificate_problem(problem)
            ),
            Some(rustls::Error::InvalidMessage(_)) => {
                format!("{error}: the server did not answer in TLS (does it serve https://?)")
            }
            _ => error.to_string(),
        };
        ApiError::Unreachable {
            url: self.base.clone(),
            message,
        }
    }

    /// The error a non-2xx answer stands for.
    fn problem(&self, method: &'static str, url: &str, status: u16, text: String) -> ApiError {
        let body: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        let detail = body
            .get("detail")
            .and_then(Value::as_str)
            .or_else(|| body.get("message").and_then(Value::as_str))
            .or_else(|| body.get("title").and_then(Value::as_str))
            .map(str::to_string)
            .unwrap_or_else(|| match &body {
                Value::Null => {
                    "(an empty answer, not a problem document: is this a Runnel server?)"
                        .to_string()
                }
                other => other.to_string(),
            });
        if status == 401 || status == 403 {
            return ApiError::Refused {
                url: self.base.clone(),
                status,
                detail,
            };
        }
        ApiError::Status {
            method,
            url: url.to_string(),
            status,
            detail,
            problem: body,
        }
    }
}

/// What is wrong with a certificate, for people.
fn certificate_problem(problem: &rustls::CertificateError) -> String {
    use rustls::CertificateError as E;
    match problem {
        E::UnknownIssuer => {
            "it is not signed by a certificate authority this client trusts (UnknownIssuer)".into()
        }
        E::BadSignature => "its signature does not verify (BadSignature)".into(),
        E::Expired => "it has expired (Expired)".into(),
        E::NotValidYet => "it is not valid yet (NotValidYet)".into(),
        E::NotValidForName => "it is not valid for this host name (NotValidForName)".into(),
        other => other.to_string(),
    }
}
