//! HTTPS: the certificate chain and key named by `tls_cert` and `tls_key`, served by the accept
//! loop through a resolver whose certificate can be replaced while the server runs.
//!
//! It exists so that API keys never cross a network in clear and a renewed certificate is
//! picked up without a restart. A reload ([`TlsReloader::reload`] on SIGHUP, or
//! [`TlsReloader::reload_if_changed`] every `tls_reload_secs`) swaps the one
//! [`CertifiedKey`] that new handshakes get; connections already open keep the session they
//! negotiated, so nothing is dropped.
//!
//! Invariants:
//! - The key served always belongs to the leaf certificate served with it: every load checks
//!   the pair, and a pair that fails (a file half written, a key of another certificate, no
//!   certificate in the file) changes nothing — the certificate in use stays and the error
//!   says which file was wrong.
//! - rustls on the `ring` provider, TLS 1.2 and 1.3, ALPN `http/1.1`; no client certificates.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{Error as RustlsError, InconsistentKeys};
use tokio_rustls::TlsAcceptor;

/// Why a certificate and key could not be loaded. Each names the field and file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {field} {path}: {source}")]
    Read {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{field} {path}: {message}")]
    Pem {
        field: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("tls_key {path}: the key cannot be used: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: RustlsError,
    },
    #[error("tls_cert {path}: the first certificate cannot be used: {source}")]
    Certificate {
        path: PathBuf,
        #[source]
        source: RustlsError,
    },
    #[error(
        "tls_key {key} is not the key of the first certificate in tls_cert {cert} (the \
         server's own certificate must come first, its CA chain after it)"
    )]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("cannot set up TLS: {0}")]
    Setup(#[source] RustlsError),
}

/// The certificate and key files, the pair loaded from them, and what reloads them.
/// Cloning shares it: a clone's reload changes what every handshake gets.
#[derive(Clone)]
pub struct TlsReloader {
    inner: Arc<Inner>,
}

struct Inner {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// A hash of what the files held at the last load (or of the error reading them), good
    /// or bad: the file check loads (and reports) each new content once, not at every tick.
    seen: Mutex<u64>,
}

impl std::fmt::Debug for TlsReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReloader")
            .field("cert_path", &self.inner.cert_path)
            .field("key_path", &self.inner.key_path)
            .finish_non_exhaustive()
    }
}

impl TlsReloader {
    /// Loads `cert` (PEM: the server's certificate first, then its chain) and `key` (PEM:
    /// PKCS#8, PKCS#1 or SEC1).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let read = read_pair(cert, key);
        let seen = stamp(&read);
        let (cert_pem, key_pem) = read?;
        let certified = certified_key(&provider, cert, &cert_pem, key, &key_pem)?;
        Ok(Self {
            inner: Arc::new(Inner {
                cert_path: cert.to_path_buf(),
                key_path: key.to_path_buf(),
                provider,
                current: RwLock::new(Arc::new(certified)),
                seen: Mutex::new(seen),
            }),
        })
    }

    /// Reads both files again and serves what they hold from the next handshake on. On an
    /// error the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let read = read_pair(&self.inner.cert_path, &self.inner.key_path);
        *self.seen() = stamp(&read);
        self.install(read)
    }

    /// As [`TlsReloader::reload`] if either file changed since the last load or attempt;
    /// `Ok(true)` when a new certificate is served. A bad pair is reported once, then left
    /// alone until the files change again.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let read = read_pair(&self.inner.cert_path, &self.inner.key_path);
        let now = stamp(&read);
        {
            let mut seen = self.seen();
            if *seen == now {
                return Ok(false);
            }
            *seen = now;
        }
        self.install(read).map(|()| true)
    }

    pub fn cert_path(&self) -> &Path {
        &self.inner.cert_path
    }

    pub fn key_path(&self) -> &Path {
        &self.inner.key_path
    }

    /// A TLS acceptor whose handshakes take the certificate in use at the time.
    pub(crate) fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.inner.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Setup)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    fn install(&self, read: Result<(Vec<u8>, Vec<u8>), TlsError>) -> Result<(), TlsError> {
        let (cert_pem, key_pem) = read?;
        let certified = certified_key(
            &self.inner.provider,
            &self.inner.cert_path,
            &cert_pem,
            &self.inner.key_path,
            &key_pem,
        )?;
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
        Ok(())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, u64> {
        self.inner
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Hands every handshake the certificate in use.
#[derive(Debug)]
struct Resolver(TlsReloader);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |field, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            field,
            path: path.to_path_buf(),
            source,
        })
    };
    Ok((read("tls_cert", cert)?, read("tls_key", key)?))
}

/// What a read found, as one number to compare with the last one.
fn stamp(read: &Result<(Vec<u8>, Vec<u8>), TlsError>) -> u64 {
    let mut hasher = DefaultHasher::new();
    match read {
        Ok(pair) => pair.hash(&mut hasher),
        Err(error) => error.to_string().hash(&mut hasher),
    }
    hasher.finish()
}

fn certified_key(
    provider: &CryptoProvider,
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let pem_error = |field, path: &Path, message: String| TlsError::Pem {
        field,
        path: path.to_path_buf(),
        message,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("tls_cert", cert_path, format!("not a PEM file: {e}")))?;
    if chain.is_empty() {
        return Err(pem_error(
            "tls_cert",
            cert_path,
            "no certificate in it (expected PEM `BEGIN CERTIFICATE` blocks)".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        let message = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no private key in it (expected a PEM `BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE \
                 KEY` or `BEGIN EC PRIVATE KEY` block)"
                    .to_string()
            }
            other => format!("not a PEM file: {other}"),
        };
        pem_error("tls_key", key_path, message)
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::Key {
            path: key_path.to_path_buf(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(RustlsError::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(RustlsError::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::Mismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            })
        }
        Err(source) => Err(TlsError::Certificate {
            path: cert_path.to_path_buf(),
            source,
        }),
    }
}

/// Checks the files every `every` and serves new contents (see
/// [`TlsReloader::reload_if_changed`]), logging what happened; runs until aborted.
pub(crate) async fn watch(tls: TlsReloader, every: std::time::Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let check = tls.clone();
        match tokio::task::spawn_blocking(move || check.reload_if_changed()).await {
            Ok(Ok(true)) => tracing::info!(
                cert = %tls.cert_path().display(),
                key = %tls.key_path().display(),
                "TLS certificate reloaded: the files changed"
            ),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, "TLS certificate not reloaded; the one in use stays")
            }
            Err(error) => tracing::error!(%error, "TLS certificate check failed"),
        }
    }
}
