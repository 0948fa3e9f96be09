//! The accept loop: every TCP connection served as HTTP/1.1 by hyper, watched for a graceful
//! stop.
//!
//! It exists instead of `axum::serve` to set hyper's own limits on a request head above the
//! server's ([`crate::limits`]): hyper answers a head it cannot parse with a bare status and no
//! body, so its limits are raised out of the way and the server's middleware answers heads that
//! are too large with problem documents, like every other error. Only heads past hyper's raised
//! limits (a URL over 64 KiB, a head over 1 MiB, more than 1,000 headers) still get hyper's
//! bare 414/431.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// hyper's buffer for a request head: well above [`crate::limits::MAX_HEAD_BYTES`].
const HYPER_MAX_BUF: usize = 1 << 20;
/// hyper's most headers: well above [`crate::limits::MAX_HEADERS`].
const HYPER_MAX_HEADERS: usize = 1_000;
/// A client must send its request head within this long of connecting or of its last request.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and waits
/// for the open connections to finish their requests (the caller bounds how long).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .max_buf_size(HYPER_MAX_BUF)
        .max_headers(HYPER_MAX_HEADERS)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
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
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
