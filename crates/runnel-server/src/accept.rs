//! The accept loop: every TCP connection served as HTTP/1.1 by hyper, watched for a graceful
//! stop.
//!
//! It exists instead of `axum::serve` to set hyper's own limits on a request head above the
//! server's ([`crate::limits`]): hyper answers a head it cannot parse with a bare status and no
//! body, so its limits are raised out of the way and the server's middleware answers heads that
//! are too large with problem documents, like every other error. Only heads past hyper's raised
//! limits (a URL over 64 KiB, a head over 1 MiB, more than 1,000 headers) still get hyper's
//! bare 414/431.
//!
//! With TLS ([`crate::tls`]) each connection is a TLS handshake first, then the same HTTP/1.1.
//! A client that speaks plain HTTP to that port gets a plain `400` problem document
//! (`tls.required`) telling it to use `https://`, instead of a connection that just closes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::problem::{ApiError, PROBLEM_JSON};

/// hyper's buffer for a request head: well above [`crate::limits::MAX_HEAD_BYTES`].
const HYPER_MAX_BUF: usize = 1 << 20;
/// hyper's most headers: well above [`crate::limits::MAX_HEADERS`].
const HYPER_MAX_HEADERS: usize = 1_000;
/// A client must send its request head within this long of connecting or of its last request.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A client must finish its TLS handshake within this long of connecting.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// The first byte of a TLS record carrying a handshake (a ClientHello starts with it).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// At most this much of a plain-HTTP request is read and dropped after answering it.
const PLAINTEXT_DRAIN_BYTES: usize = 64 << 10;

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown` resolves, then stops
/// accepting and waits for the open connections to finish their requests (the caller bounds
/// how long).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .max_buf_size(HYPER_MAX_BUF)
        .max_headers(HYPER_MAX_HEADERS)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a moment, as axum::serve does.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        // Watched from now, so a stop waits for a handshake under way too (bounded by
        // HANDSHAKE_TIMEOUT); a connection that completes it after the stop began is told
        // to close at once.
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let served = match tls {
                None => {
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(connection).await
                }
                Some(acceptor) => {
                    let Some(stream) = handshake(stream, peer, &acceptor).await else {
                        return;
                    };
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(connection).await
                }
            };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The TLS session of a new connection, or `None` when there is none to serve: the client
/// left, failed the handshake (refused the certificate, spoke no TLS we accept), took longer
/// than [`HANDSHAKE_TIMEOUT`], or spoke plain HTTP (answered by [`refuse_plaintext`]).
async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: &TlsAcceptor,
) -> Option<TlsStream<TcpStream>> {
    let attempt = async {
        let mut first = [0u8; 1];
        if stream.peek(&mut first).await? == 0 {
            return Ok(None);
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            refuse_plaintext(stream).await?;
            return Ok(None);
        }
        acceptor.accept(stream).await.map(Some)
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt).await {
        Ok(Ok(session)) => session,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// Answers a plain-HTTP request on the TLS port with a `400` problem document and closes:
/// the answer, then end of sending, then what the client sent read and dropped until it
/// closes too (closing with unread data would reset the connection and lose the answer).
async fn refuse_plaintext(mut stream: TcpStream) -> std::io::Result<()> {
    let problem = ApiError::new(
        StatusCode::BAD_REQUEST,
        "tls.required",
        "this server speaks HTTPS only: use an https:// URL",
    )
    .problem();
    let body = serde_json::to_string(&problem).map_err(std::io::Error::other)?;
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: {PROBLEM_JSON}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await?;
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < PLAINTEXT_DRAIN_BYTES {
        match stream.read(&mut sink).await? {
            0 => break,
            n => drained += n,
        }
    }
    Ok(())
}
