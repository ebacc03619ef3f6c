//! The connector's counters and their Prometheus text form.
//!
//! Everything is a relaxed atomic: the figures are read by a scrape every few seconds and
//! need no ordering with each other, and the flow path must not take a lock to count.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

/// Why a flow could not be served, as counted in `/metrics` and mapped by the runtime to
/// the protocol's status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DialErrorKind {
    /// The destination answered with a reset (nothing listens there).
    Refused,
    /// The destination did not answer within the connect timeout.
    Timeout,
    /// No route to the destination's network or host.
    Unreachable,
    /// The destination is outside `zt-allowed-destinations`.
    NotAllowed,
    /// `maxActiveFlows` flows are already active.
    TooManyFlows,
    /// The connector is draining and takes no new flows.
    Draining,
    /// Any other local failure (no free ports, out of file descriptors, …).
    Other,
}

impl DialErrorKind {
    /// Every kind, in the order `/metrics` lists them.
    const ALL: [DialErrorKind; 7] = [
        Self::Refused,
        Self::Timeout,
        Self::Unreachable,
        Self::NotAllowed,
        Self::TooManyFlows,
        Self::Draining,
        Self::Other,
    ];

    /// The label value used in `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
            Self::NotAllowed => "not_allowed",
            Self::TooManyFlows => "too_many_flows",
            Self::Draining => "draining",
            Self::Other => "other",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Refused => 0,
            Self::Timeout => 1,
            Self::Unreachable => 2,
            Self::NotAllowed => 3,
            Self::TooManyFlows => 4,
            Self::Draining => 5,
            Self::Other => 6,
        }
    }
}

/// The connector's live figures, shared (in an `Arc`) by the runtime that updates them and
/// the [`MetricsServer`](crate::MetricsServer) that reports them.
#[derive(Debug)]
pub struct ConnectorMetrics {
    connector_id: Uuid,
    ha_connections: AtomicU64,
    /// Of those, the ones over TLS on TCP (the rest are QUIC).
    tcp_connections: AtomicU64,
    active_flows: AtomicU64,
    flows_total: AtomicU64,
    dial_errors: [AtomicU64; 7],
    bytes_to_origin: AtomicU64,
    bytes_to_edge: AtomicU64,
    registration_failures: AtomicU64,
}

impl ConnectorMetrics {
    /// Figures for the connector identified by `connector_id` (a fresh UUID per process,
    /// as cloudflared's), all zero.
    pub fn new(connector_id: Uuid) -> Self {
        Self {
            connector_id,
            ha_connections: AtomicU64::new(0),
            tcp_connections: AtomicU64::new(0),
            active_flows: AtomicU64::new(0),
            flows_total: AtomicU64::new(0),
            dial_errors: Default::default(),
            bytes_to_origin: AtomicU64::new(0),
            bytes_to_edge: AtomicU64::new(0),
            registration_failures: AtomicU64::new(0),
        }
    }

    /// This connector's id, as `/ready` reports it.
    pub fn connector_id(&self) -> Uuid {
        self.connector_id
    }

    /// An edge connection finished registering.
    pub fn connection_registered(&self) {
        self.ha_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A registered edge connection was lost or closed.
    pub fn connection_lost(&self) {
        saturating_dec(&self.ha_connections);
    }

    /// How many edge connections are registered now.
    pub fn registered_connections(&self) -> u64 {
        self.ha_connections.load(Ordering::Relaxed)
    }

    /// A registered edge connection over TLS on TCP came (`true`) or went (`false`); call
    /// beside [`ConnectorMetrics::connection_registered`] / `connection_lost`.
    pub fn tcp_connection(&self, up: bool) {
        if up {
            self.tcp_connections.fetch_add(1, Ordering::Relaxed);
        } else {
            saturating_dec(&self.tcp_connections);
        }
    }

    /// Registered connections per transport: (QUIC, TCP).
    pub fn connections_by_transport(&self) -> (u64, u64) {
        let all = self.ha_connections.load(Ordering::Relaxed);
        let tcp = self.tcp_connections.load(Ordering::Relaxed).min(all);
        (all - tcp, tcp)
    }

    /// A registration attempt failed (refused by the edge, or the connection broke).
    pub fn registration_failed(&self) {
        self.registration_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Registration attempts that failed since start.
    pub fn registration_failures(&self) -> u64 {
        self.registration_failures.load(Ordering::Relaxed)
    }

    /// A flow was admitted. Called by [`FlowLimiter`](crate::FlowLimiter).
    pub(crate) fn flow_started(&self) {
        self.active_flows.fetch_add(1, Ordering::Relaxed);
        self.flows_total.fetch_add(1, Ordering::Relaxed);
    }

    /// An admitted flow ended. Called when its guard drops.
    pub(crate) fn flow_finished(&self) {
        saturating_dec(&self.active_flows);
    }

    /// Flows in progress now.
    pub fn active_flows(&self) -> u64 {
        self.active_flows.load(Ordering::Relaxed)
    }

    /// Flows admitted since start.
    pub fn total_flows(&self) -> u64 {
        self.flows_total.load(Ordering::Relaxed)
    }

    /// A flow failed for `kind`.
    pub fn dial_failed(&self, kind: DialErrorKind) {
        self.dial_errors[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Flows that failed for `kind` since start.
    pub fn dial_errors(&self, kind: DialErrorKind) -> u64 {
        self.dial_errors[kind.index()].load(Ordering::Relaxed)
    }

    /// `n` bytes were written to an origin (edge → origin).
    pub fn add_bytes_to_origin(&self, n: u64) {
        self.bytes_to_origin.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` bytes were read from an origin and sent to the edge.
    pub fn add_bytes_to_edge(&self, n: u64) {
        self.bytes_to_edge.fetch_add(n, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4) of every figure.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::with_capacity(2048);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        // `write!` into a String cannot fail; the results are ignored for that reason.
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        metric(
            "zt_connector_ha_connections",
            "gauge",
            "Edge connections currently registered.",
            &[("", load(&self.ha_connections))],
        );
        let (quic, tcp) = self.connections_by_transport();
        metric(
            "zt_connector_ha_connections_by_transport",
            "gauge",
            "Edge connections currently registered, by transport (quic, or tcp: TLS over TCP where UDP is blocked).",
            &[("{transport=\"quic\"}", quic), ("{transport=\"tcp\"}", tcp)],
        );
        metric(
            "zt_connector_registration_failures_total",
            "counter",
            "Edge registration attempts that failed.",
            &[("", load(&self.registration_failures))],
        );
        metric(
            "zt_connector_active_flows",
            "gauge",
            "Flows currently being served.",
            &[("", load(&self.active_flows))],
        );
        metric(
            "zt_connector_flows_total",
            "counter",
            "Flows admitted since start.",
            &[("", load(&self.flows_total))],
        );
        let labels: Vec<String> = DialErrorKind::ALL
            .iter()
            .map(|k| format!("{{kind=\"{}\"}}", k.as_str()))
            .collect();
        let samples: Vec<(&str, u64)> = DialErrorKind::ALL
            .iter()
            .zip(&labels)
            .map(|(k, l)| (l.as_str(), load(&self.dial_errors[k.index()])))
            .collect();
        metric(
            "zt_connector_dial_errors_total",
            "counter",
            "Flows that could not be served, by reason.",
            &samples,
        );
        metric(
            "zt_connector_bytes_total",
            "counter",
            "Bytes relayed, by direction.",
            &[
                ("{direction=\"to_origin\"}", load(&self.bytes_to_origin)),
                ("{direction=\"to_edge\"}", load(&self.bytes_to_edge)),
            ],
        );
        let build = format!(
            "{{version=\"{}\",connector_id=\"{}\"}}",
            env!("CARGO_PKG_VERSION"),
            self.connector_id
        );
        metric(
            "zt_connector_build_info",
            "gauge",
            "Build and identity of this connector; always 1.",
            &[(build.as_str(), 1)],
        );
        out
    }
}

fn saturating_dec(a: &AtomicU64) {
    // A stray extra decrement must not wrap a gauge to 2^64.
    let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_exposition() {
        let id = Uuid::parse_str("8e343b13-a087-48ea-825f-9783931ff2a5").unwrap();
        let m = ConnectorMetrics::new(id);
        m.connection_registered();
        m.connection_registered();
        m.connection_lost();
        m.connection_lost();
        m.connection_lost(); // must not wrap
        m.connection_registered();
        m.registration_failed();
        m.flow_started();
        m.flow_started();
        m.flow_finished();
        m.dial_failed(DialErrorKind::Refused);
        m.dial_failed(DialErrorKind::Refused);
        m.dial_failed(DialErrorKind::TooManyFlows);
        m.add_bytes_to_origin(100);
        m.add_bytes_to_edge(2500);
        let text = m.render_prometheus();
        for line in [
            "# TYPE zt_connector_ha_connections gauge",
            "zt_connector_ha_connections 1",
            "zt_connector_registration_failures_total 1",
            "zt_connector_active_flows 1",
            "zt_connector_flows_total 2",
            "zt_connector_dial_errors_total{kind=\"refused\"} 2",
            "zt_connector_dial_errors_total{kind=\"too_many_flows\"} 1",
            "zt_connector_dial_errors_total{kind=\"timeout\"} 0",
            "zt_connector_bytes_total{direction=\"to_origin\"} 100",
            "zt_connector_bytes_total{direction=\"to_edge\"} 2500",
            "zt_connector_build_info{version=\"0.1.0\",connector_id=\"8e343b13-a087-48ea-825f-9783931ff2a5\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // Every sample line belongs to a family announced by HELP and TYPE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
    }
}
