//! The accept loop: one port serves plain HTTP and, when TLS is configured, HTTPS too, told apart
//! by the first byte a client sends (a TLS handshake starts with 0x16, an HTTP request never does).
//!
//! Each request carries the [`Scheme`] it arrived on, so answers can name URLs (key ids) the way
//! the client addressed the vault.

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const TLS_RECORD_HANDSHAKE: u8 = 0x16;
// A client that connects and says nothing (or stalls mid-handshake) gets dropped.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

/// The scheme a request arrived on; inserted into every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

/// Serves `router` on `listener` until `shutdown` turns true, then drains open connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let http = router.clone().layer(axum::Extension(Scheme::Http));
    let https = router.layer(axum::Extension(Scheme::Https));
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    // Per-connection failures (reset before accept, fd pressure) must not stop the listener.
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let watcher = graceful.watcher();
                let (http, https, tls) = (http.clone(), https.clone(), tls.clone());
                // The TLS handshake runs in the connection's own task so a slow client cannot stall accepts.
                tokio::spawn(async move {
                    match classify(&stream).await {
                        Some(true) => match tls {
                            Some(acceptor) => {
                                match tokio::time::timeout(FIRST_BYTES_TIMEOUT, acceptor.accept(stream)).await {
                                    Ok(Ok(tls_stream)) => serve_connection(tls_stream, https, watcher).await,
                                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                                    Err(_) => tracing::debug!("TLS handshake timed out"),
                                }
                            }
                            None => tracing::debug!("TLS handshake on a plain-HTTP listener; closing"),
                        },
                        Some(false) => serve_connection(stream, http, watcher).await,
                        None => {}
                    }
                });
            }
            // The watch guard is not Send, so it is dropped inside this block, not by select!.
            () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

// Some(true) for TLS, Some(false) for anything else, None if the client sent nothing.
async fn classify(stream: &TcpStream) -> Option<bool> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(FIRST_BYTES_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => Some(first[0] == TLS_RECORD_HANDSHAKE),
        _ => None,
    }
}

async fn serve_connection<S>(
    stream: S,
    router: Router,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
