//! The accept loop: hand-written with hyper so that one request can drop its own connection
//! (injected resets) with `SO_LINGER 0`, i.e. a TCP RST and no HTTP answer at all.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// Put into each request's extensions; cancelling it drops the connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnAbort(pub(crate) CancellationToken);

/// How long shutdown waits for in-flight requests.
const GRACE: Duration = Duration::from_secs(5);

pub(crate) async fn accept_loop(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) {
    // Every connection task holds a sender; shutdown waits until all are gone.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "sandbox accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let shutdown = shutdown.clone();
        let alive = alive_tx.clone();
        tokio::spawn(async move {
            serve_connection(stream, router, shutdown).await;
            drop(alive);
        });
    }
    drop(listener);
    drop(alive_tx);
    let _ = tokio::time::timeout(GRACE, alive_rx.recv()).await;
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    router: Router,
    shutdown: CancellationToken,
) {
    let abort = CancellationToken::new();
    let token = abort.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnAbort(token.clone()));
        router.clone().oneshot(request.map(Body::new))
    });
    let mut conn = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = &mut conn => {
            if let Err(error) = result {
                tracing::debug!(%error, "sandbox connection ended with an error");
            }
        }
        _ = abort.cancelled() => {
            // Injected reset: close with SO_LINGER 0 so the peer sees a RST, not a clean EOF.
            let parts = conn.into_parts();
            let _ = parts.io.inner().set_zero_linger();
            drop(parts);
        }
        _ = shutdown.cancelled() => {
            std::pin::Pin::new(&mut conn).graceful_shutdown();
            tokio::select! {
                _ = tokio::time::timeout(GRACE, &mut conn) => {}
                _ = abort.cancelled() => {}
            }
        }
    }
}
