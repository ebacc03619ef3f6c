//! The metrics and health server (`metrics: 0.0.0.0:8081`).
//!
//! It answers three paths, as cloudflared's does: `/ready` for Kubernetes readiness (200
//! while at least one edge connection is registered, 503 otherwise), `/healthcheck` for
//! liveness (200 while the process runs, whatever the edge's state), and `/metrics` in
//! Prometheus text format. The port is often reachable by the whole cluster, so every
//! resource a client can hold is bounded: connections, header size, and the time a
//! connection may take to send its request or sit idle.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, warn};

use crate::metrics::ConnectorMetrics;

/// Concurrent connections served; more are closed on accept. Probes and a scraper need a
/// handful; the bound keeps a flood from exhausting the connector's file descriptors or
/// its 100 MiB memory limit.
const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send a complete request head, and the longest a kept-alive
/// connection may sit idle: kubelet probes send theirs at once.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read (hyper's minimum buffer); these paths take no headers of
/// interest.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long [`MetricsServer::shutdown`] waits for requests in progress.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the metrics server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The listen address could not be bound (in use, not local, no permission).
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        /// The address from `metrics`.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A running metrics and health server. Stop it with [`MetricsServer::shutdown`];
/// dropping it stops accepting at once without waiting.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and serves `/ready`, `/healthcheck` and `/metrics` from `metrics` on a
    /// background task.
    pub async fn bind(
        addr: SocketAddr,
        metrics: Arc<ConnectorMetrics>,
    ) -> Result<Self, ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, metrics, stopped));
        debug!(addr = %local_addr, "metrics server listening");
        Ok(Self {
            local_addr,
            stop,
            task: Some(task),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections, lets requests in progress finish (up to a few
    /// seconds), closes idle connections and returns once the server is gone.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            if let Err(err) = task.await {
                warn!(cause = %err, "metrics server task failed");
            }
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    metrics: Arc<ConnectorMetrics>,
    mut stopped: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD)
        .keep_alive(true);
    loop {
        let (stream, peer) = tokio::select! {
            res = listener.accept() => match res {
                Ok(conn) => conn,
                Err(err) => {
                    // Out of descriptors and similar: back off briefly rather than spin.
                    warn!(cause = %err, "metrics server accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            // A stop request, or the handle dropped: either way, stop accepting.
            _ = stopped.changed() => break,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(%peer, "metrics server at its connection limit; closing");
            continue;
        };
        let metrics = Arc::clone(&metrics);
        let service = hyper::service::service_fn(move |req| {
            let metrics = Arc::clone(&metrics);
            async move { Ok::<_, Infallible>(respond(&req, &metrics)) }
        });
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        conns.spawn(async move {
            if let Err(err) = conn.await {
                debug!(%peer, cause = %err, "metrics connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        debug!("metrics server stopped with requests still in progress");
    }
    // Whatever did not finish in time is cut off, so no task outlives the server.
    conns.shutdown().await;
}

fn respond(req: &Request<Incoming>, metrics: &ConnectorMetrics) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match req.uri().path() {
        "/ready" => {
            let n = metrics.registered_connections();
            let status = if n > 0 {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = format!(
                "{{\"status\":{},\"readyConnections\":{},\"connectorId\":\"{}\"}}",
                status.as_u16(),
                n,
                metrics.connector_id()
            );
            with_type(status, body, "application/json")
        }
        "/healthcheck" => plain(StatusCode::OK, "OK"),
        "/metrics" => with_type(
            StatusCode::OK,
            metrics.render_prometheus(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        _ => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    with_type(status, body, "text/plain; charset=utf-8")
}

fn with_type(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
