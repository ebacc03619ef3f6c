//! The metrics and health server (`metrics: 0.0.0.0:8081`).
//!
//! It answers three paths, as cloudflared's does: `/ready` for Kubernetes readiness (200
//! while at least one edge connection is registered, 503 otherwise), `/healthcheck` for
//! liveness (200 while the process runs, whatever the edge's state), and `/metrics` in
//! Prometheus text format. The port is often reachable by the whole cluster, so every
//! resource a client can hold is bounded (by zt-http's server loop, shared with the
//! edge): connections, header size, the time a connection may take to send its request
//! or sit idle, and the time a response may wait for a client that stopped reading.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tracing::debug;
use zt_http::{HttpServer, RequestBody, ServerConfig};

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

/// The server's limits: the values above, and zt-http's defaults for the rest (no path
/// here reads a body; a response write that stalls for 10 s closes its connection).
fn config() -> ServerConfig {
    ServerConfig::new("connector metrics")
        .with_max_connections(MAX_CONNECTIONS)
        .with_header_read_timeout(HEADER_READ_TIMEOUT)
        .with_max_request_head(MAX_REQUEST_HEAD)
        .with_shutdown_timeout(SHUTDOWN_TIMEOUT)
}

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
    server: HttpServer,
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
        let server = HttpServer::spawn(listener, config(), move |req| {
            std::future::ready(respond(&req, &metrics))
        });
        debug!(addr = %local_addr, "metrics server listening");
        Ok(Self { local_addr, server })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections, lets requests in progress finish (up to a few
    /// seconds), closes idle connections and returns once the server is gone.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

fn respond(req: &Request<RequestBody>, metrics: &ConnectorMetrics) -> Response<Full<Bytes>> {
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
            let (quic, tcp) = metrics.connections_by_transport();
            let body = format!(
                "{{\"status\":{},\"readyConnections\":{},\"connectorId\":\"{}\",\"transports\":{{\"quic\":{},\"tcp\":{}}}}}",
                status.as_u16(),
                n,
                metrics.connector_id(),
                quic,
                tcp
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
