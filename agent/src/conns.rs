//! The accept loop, and how its connections end at shutdown.
//!
//! `cgsight daemon`'s holder hands one listening socket to every server it starts, so during an
//! upgrade the replaced server and its successor accept from the same queue. axum-server's
//! graceful shutdown closes at once any connection whose request has arrived but has not been
//! read yet; closing a socket with unread bytes sends a reset, and the client sees a failed
//! scrape. Here shutdown stops accepting at once (the successor takes every new connection),
//! lets each accepted connection begin its request, and only then asks hyper to close it after
//! the response. A connection reaches hyper only once its first bytes are there
//! ([`RequestStarted`](crate::accept::RequestStarted)), so its request does begin.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum_server::accept::Accept;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};

use crate::accept;

/// Serves `app` on `listener` through `acceptor` until `shutdown` resolves, then gives the
/// accepted connections up to `drain` to end.
pub async fn serve<A>(
    listener: TcpListener,
    acceptor: A,
    app: Router,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) where
    A: Accept<TcpStream, Router, Service = Router> + Clone + Send + Sync + 'static,
    A::Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A::Future: Send,
{
    let mut builder = Builder::new(TokioExecutor::new());
    accept::configure(&mut builder);
    let builder = Arc::new(builder);
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a sender; `recv` returns None once all have ended.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // EMFILE and the like: the queue keeps the connection; try again shortly.
                    tracing::debug!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        tokio::spawn(connection(
            tcp,
            acceptor.clone(),
            app.clone(),
            builder.clone(),
            stop_rx.clone(),
            alive_tx.clone(),
        ));
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; open ones finish their request");
    let _ = stop_tx.send(true);
    drop(alive_tx);
    let _ = tokio::time::timeout(drain, alive_rx.recv()).await;
}

async fn connection<A>(
    tcp: TcpStream,
    acceptor: A,
    app: Router,
    builder: Arc<Builder<TokioExecutor>>,
    mut stop: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
) where
    A: Accept<TcpStream, Router, Service = Router>,
    A::Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok((stream, app)) = acceptor.accept(tcp, app).await else {
        return;
    };
    // Stores a permit on the first request, so a later wait returns at once.
    let begun = Arc::new(Notify::new());
    let seen = begun.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        seen.notify_one();
        tower::ServiceExt::oneshot(app.clone(), req)
    });
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        biased;
        _ = conn.as_mut() => return,
        _ = stop.wait_for(|s| *s) => {}
    }
    tokio::select! {
        biased;
        _ = conn.as_mut() => return,
        _ = begun.notified() => {}
        _ = tokio::time::sleep(accept::HEADER_TIMEOUT) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
