//! Certificates for TLS tests (feature `test-util`): a CA made on the spot, server
//! certificates it signs for `localhost` and `127.0.0.1`, and the certificate a server
//! presents in a handshake. Shared by this crate's tests and the binary's process tests so
//! neither copies it. Test code: it panics when a certificate cannot be made.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, ServerName};

/// A certificate authority that exists for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A self-signed CA named `name`, with a fresh ECDSA P-256 key.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("a CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("a CA certificate");
        Self { issuer }
    }

    /// The CA certificate in PEM, as a client's `--ca-file` holds it.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes [`TestCa::pem`] to `path`.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.pem()).expect("write the CA file");
    }

    /// A root store trusting this CA only.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.issuer.der().clone())
            .expect("the CA is a trust anchor");
        roots
    }

    /// A server certificate for `localhost` and `127.0.0.1` signed by this CA, with a fresh
    /// key (so each one issued differs).
    pub fn issue(&self) -> ServerCert {
        let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("server names");
        let key = KeyPair::generate().expect("a server key");
        let issuer: &rcgen::Issuer<'_, KeyPair> = &self.issuer;
        let cert = params
            .signed_by(&key, issuer)
            .expect("a server certificate");
        ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// A server certificate and its key.
#[derive(Debug, Clone)]
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl ServerCert {
    /// Writes the pair to `cert` and `key`, each file replaced whole (written beside, then
    /// renamed), the key first.
    pub fn write(&self, cert: &Path, key: &Path) {
        replace(key, &self.key_pem);
        replace(cert, &self.cert_pem);
    }
}

fn replace(path: &Path, text: &str) {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".new");
    std::fs::write(&aside, text).expect("write beside");
    std::fs::rename(&aside, path).expect("rename over");
}

/// The certificate the server at `addr` presents to a client that trusts `roots` and asks
/// for `127.0.0.1`; an error when the handshake fails (the certificate is not trusted, the
/// server speaks no TLS).
pub fn presented_certificate(
    addr: SocketAddr,
    roots: RootCertStore,
) -> std::io::Result<CertificateDer<'static>> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::IpAddress(addr.ip().into());
    let mut session =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
    let mut socket = std::net::TcpStream::connect(addr)?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    socket.set_write_timeout(Some(Duration::from_secs(10)))?;
    while session.is_handshaking() {
        session.complete_io(&mut socket)?;
    }
    session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.clone().into_owned())
        .ok_or_else(|| std::io::Error::other("no certificate presented"))
}
