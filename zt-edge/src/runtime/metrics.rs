//! Counters in Prometheus text format, `/metrics` and `/ready` over HTTP/1.
//!
//! Counters are plain atomics bumped on the data path; the per-tunnel connection gauge is
//! read from the registry when scraped, so it is never out of step with it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;
use zt_http::{RequestBody, ServerConfig};

use crate::audit::CloseReason;
use uuid::Uuid;

const REASONS: [(CloseReason, &str); 13] = [
    (CloseReason::Completed, "completed"),
    (CloseReason::ClientReset, "client_reset"),
    (CloseReason::OriginReset, "origin_reset"),
    (CloseReason::Denied, "denied"),
    (CloseReason::NoRoute, "no_route"),
    (CloseReason::NoConnector, "no_connector"),
    (CloseReason::ConnectFailed, "connect_failed"),
    (CloseReason::Timeout, "timeout"),
    (CloseReason::SessionExpired, "session_expired"),
    (CloseReason::EdgeShutdown, "edge_shutdown"),
    (CloseReason::ConnectionLost, "connection_lost"),
    (CloseReason::Revoked, "revoked"),
    (CloseReason::Error, "error"),
];

/// Where the per-tunnel connection gauge is read from when scraped (the registry), so the
/// counters need not know the registry.
pub(crate) trait ConnectionCounts: Send + Sync {
    /// Connections held per tunnel, sorted by tunnel.
    fn counts(&self) -> Vec<(Uuid, usize)>;
}

/// The edge's counters.
#[derive(Default)]
pub(crate) struct Metrics {
    flows: [AtomicU64; REASONS.len()],
    auth_refusals: AtomicU64,
    client_sessions: AtomicU64,
    client_sessions_total: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    pub(crate) ready: AtomicBool,
}

impl Metrics {
    pub(crate) fn flow_ended(&self, reason: CloseReason, up: u64, down: u64) {
        if let Some(i) = REASONS.iter().position(|(r, _)| *r == reason) {
            self.flows[i].fetch_add(1, Ordering::Relaxed);
        }
        self.bytes_up.fetch_add(up, Ordering::Relaxed);
        self.bytes_down.fetch_add(down, Ordering::Relaxed);
    }

    pub(crate) fn auth_refused(&self) {
        self.auth_refusals.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn session_started(&self) {
        self.client_sessions.fetch_add(1, Ordering::Relaxed);
        self.client_sessions_total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn session_ended(&self) {
        self.client_sessions.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn render(&self, registry: &dyn ConnectionCounts) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP zt_edge_connector_connections Registered connector connections held by this edge, per tunnel.");
        let _ = writeln!(out, "# TYPE zt_edge_connector_connections gauge");
        for (tunnel, n) in registry.counts() {
            let _ = writeln!(
                out,
                "zt_edge_connector_connections{{tunnel=\"{tunnel}\"}} {n}"
            );
        }
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {v}");
        };
        gauge(
            &mut out,
            "zt_edge_client_sessions",
            "Client sessions open now.",
            "gauge",
            self.client_sessions.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "zt_edge_client_sessions_total",
            "Client sessions opened since start.",
            "counter",
            self.client_sessions_total.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "zt_edge_auth_refusals_total",
            "Refused connector and client authentications.",
            "counter",
            self.auth_refusals.load(Ordering::Relaxed),
        );
        let _ = writeln!(out, "# HELP zt_edge_flows_total Flows ended, by outcome.");
        let _ = writeln!(out, "# TYPE zt_edge_flows_total counter");
        for (i, (_, name)) in REASONS.iter().enumerate() {
            let v = self.flows[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "zt_edge_flows_total{{outcome=\"{name}\"}} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP zt_edge_flow_bytes_total Bytes relayed, by direction."
        );
        let _ = writeln!(out, "# TYPE zt_edge_flow_bytes_total counter");
        let _ = writeln!(
            out,
            "zt_edge_flow_bytes_total{{direction=\"up\"}} {}",
            self.bytes_up.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "zt_edge_flow_bytes_total{{direction=\"down\"}} {}",
            self.bytes_down.load(Ordering::Relaxed)
        );
        out
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp
}

/// Concurrent scrape connections; more are closed on accept. Prometheus keeps one and a
/// readiness probe opens one now and then; the bound keeps a flood from exhausting the
/// edge's file descriptors, which its QUIC connections and state store need.
const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send a complete request head, and the longest a kept-alive
/// connection may sit idle: scrapers and probes send theirs at once.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read (hyper's minimum buffer); these paths take no headers.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long the server waits for scrapes in progress once the edge stops.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

fn answer(
    req: &Request<RequestBody>,
    metrics: &Metrics,
    registry: &Arc<dyn ConnectionCounts>,
) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => text(StatusCode::OK, metrics.render(&**registry)),
        "/ready" if metrics.ready.load(Ordering::Acquire) => {
            text(StatusCode::OK, "{\"status\":200}\n".to_owned())
        }
        "/ready" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"status\":503}\n".to_owned(),
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n".to_owned()),
    }
}

/// Serves `/metrics` and `/ready` on `listener` until `stop` changes, then shuts down
/// gracefully (scrapes in progress get [`SHUTDOWN_TIMEOUT`]). The port may be reachable
/// by the whole cluster, so connections, the request head and the time to send it, and
/// the time a response may wait for a client that stopped reading are all bounded, by
/// the server loop shared with the connector and the admin API (zt-http).
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    registry: Arc<dyn ConnectionCounts>,
    mut stop: watch::Receiver<bool>,
) {
    let config = ServerConfig::new("edge metrics")
        .with_max_connections(MAX_CONNECTIONS)
        .with_header_read_timeout(HEADER_READ_TIMEOUT)
        .with_max_request_head(MAX_REQUEST_HEAD)
        .with_shutdown_timeout(SHUTDOWN_TIMEOUT);
    let handler =
        move |req: Request<RequestBody>| std::future::ready(answer(&req, &metrics, &registry));
    zt_http::serve(listener, config, handler, async move {
        // A stop, or the edge gone (the sender dropped): either way, stop accepting.
        let _ = stop.changed().await;
    })
    .await;
}

/// Binds the metrics listener.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
