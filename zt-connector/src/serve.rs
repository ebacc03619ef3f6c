//! Serving one flow the edge opened: admit, dial, answer, relay.
//!
//! TCP flows are relayed by zt-proto's [`TcpSplice`], with TCP's semantics kept on both
//! sides: a FIN from the edge becomes `shutdown(Write)` toward the origin while the origin
//! may keep sending, and the origin's FIN becomes the stream's FIN while the edge may keep
//! sending. Only a reset (the origin's RST, the edge's stream reset or stop) tears both
//! directions down, and it travels as a reset: toward the edge with
//! [`ResetCode::CONNECTION_RESET`](zt_proto::ResetCode::CONNECTION_RESET), toward the
//! origin as a TCP RST (zero linger). A side that stops taking bytes aborts the flow too
//! ([`WriteFailure::Reset`]).
//!
//! Each flow holds its connection (`Arc<ConnectorConnection>`) so the connection outlives
//! the connection loop while flows still run on it, and its [`FlowGuard`] so a drain
//! waits for it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::{debug, warn};
use zt_proto::{
    ConnectorConnection, DatagramError, FlowHeader, FlowResponder, FlowStatus, FlowStatusCode,
    Protocol, SpliceCounter, TcpSplice, UdpFlow, WriteFailure, MAX_TEXT_LEN,
};

use crate::dial::{DialError, OriginDialer, RelayError, UdpRelay, DEFAULT_MAX_UDP_PAYLOAD};
use crate::flows::{FlowGuard, FlowLimiter};
use crate::metrics::{ConnectorMetrics, DialErrorKind};

/// How long a UDP flow may pass no datagram either way before it is closed. UDP has no
/// end of its own; DNS answers come within seconds, so a minute of silence means the
/// client is gone.
pub const UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// After a clean end, how long to wait for the edge to acknowledge the last bytes before
/// the flow counts as finished (a drain that closes the connection right after must not
/// cut them off).
const FINAL_ACK_WAIT: Duration = Duration::from_secs(10);

/// The relay's byte counts, fed to `/metrics` as they happen so a scrape sees a long
/// flow's bytes before it ends.
struct Relayed<'a>(&'a ConnectorMetrics);

impl SpliceCounter for Relayed<'_> {
    fn to_flow(&self, n: u64) {
        self.0.add_bytes_to_edge(n);
    }
    fn to_tcp(&self, n: u64) {
        self.0.add_bytes_to_origin(n);
    }
}

/// What a flow needs from the connector.
#[derive(Debug, Clone)]
pub(crate) struct FlowServices {
    pub(crate) flows: FlowLimiter,
    pub(crate) dialer: OriginDialer,
    pub(crate) metrics: Arc<ConnectorMetrics>,
}

/// The status answered for a flow that could not be served.
pub(crate) fn status_for(err: &DialError) -> FlowStatus {
    let code = match err.kind() {
        DialErrorKind::Refused => FlowStatusCode::ConnectRefused,
        DialErrorKind::Timeout => FlowStatusCode::Timeout,
        DialErrorKind::Unreachable => FlowStatusCode::Unreachable,
        // The connector's own allow-list acts as a rule; the detail names it.
        DialErrorKind::NotAllowed => {
            return FlowStatus::new(FlowStatusCode::Denied, "zt-allowed-destinations")
        }
        DialErrorKind::TooManyFlows => FlowStatusCode::TooManyFlows,
        DialErrorKind::Draining => FlowStatusCode::Draining,
        _ => FlowStatusCode::Internal,
    };
    let mut detail = err.to_string();
    if detail.len() > MAX_TEXT_LEN {
        let mut cut = MAX_TEXT_LEN;
        while !detail.is_char_boundary(cut) {
            cut -= 1;
        }
        detail.truncate(cut);
    }
    FlowStatus::new(code, detail)
}

async fn reject(responder: FlowResponder, err: &DialError) {
    let status = status_for(err);
    debug!(status = %status, "flow refused");
    if let Err(e) = responder.reject(status).await {
        debug!(cause = %e, "could not answer the refusal; the stream is gone");
    }
}

/// Serves one flow request to its end. Runs on its own task, inside the flow's span.
pub(crate) async fn serve_flow(
    ctx: FlowServices,
    conn: Arc<ConnectorConnection>,
    header: FlowHeader,
    responder: FlowResponder,
) {
    let guard = match ctx.flows.try_admit() {
        Ok(g) => g,
        Err(err) => return reject(responder, &DialError::NotAdmitted(err)).await,
    };
    match header.protocol {
        Protocol::Tcp => serve_tcp(&ctx, header, responder, guard).await,
        Protocol::Udp => serve_udp(&ctx, header, responder, guard).await,
        other => {
            let status = FlowStatus::new(
                FlowStatusCode::BadHeader,
                format!("protocol {other} is not served by this connector"),
            );
            let _ = responder.reject(status).await;
        }
    }
    // Only now may the connection close, if this was its last user.
    drop(conn);
}

async fn serve_tcp(
    ctx: &FlowServices,
    header: FlowHeader,
    responder: FlowResponder,
    guard: FlowGuard,
) {
    let tcp = match ctx.dialer.dial_tcp(header.dest).await {
        Ok(s) => s,
        Err(err) => return reject(responder, &err).await,
    };
    let stream = match responder.accept().await {
        Ok(s) => s,
        Err(err) => {
            debug!(cause = %err, "the edge went away before the flow was answered");
            return;
        }
    };
    debug!("flow open");
    let out = TcpSplice::new()
        .on_write_failure(WriteFailure::Reset)
        .wait_for_ack(FINAL_ACK_WAIT)
        .run_with(tcp, stream, &[], &Relayed(&ctx.metrics))
        .await;
    debug!(
        to_origin = out.to_tcp,
        to_edge = out.to_flow,
        aborted = out.reset,
        "flow ended"
    );
    drop(guard);
}

async fn serve_udp(
    ctx: &FlowServices,
    header: FlowHeader,
    responder: FlowResponder,
    guard: FlowGuard,
) {
    let relay = match ctx
        .dialer
        .dial_udp(header.dest, DEFAULT_MAX_UDP_PAYLOAD)
        .await
    {
        Ok(r) => r,
        Err(err) => return reject(responder, &err).await,
    };
    let flow = match responder.accept_udp().await {
        Ok(f) => f,
        Err(err) => {
            debug!(cause = %err, "the edge went away before the UDP flow was answered");
            return;
        }
    };
    debug!("UDP flow open");
    relay_udp(relay, flow, &ctx.metrics).await;
    drop(guard);
}

async fn relay_udp(relay: UdpRelay, mut flow: UdpFlow, metrics: &ConnectorMetrics) {
    let mut buf = vec![0u8; relay.max_payload() + 1];
    let idle = tokio::time::sleep(UDP_IDLE_TIMEOUT);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            payload = flow.recv() => match payload {
                Some(p) => {
                    idle.as_mut().reset(tokio::time::Instant::now() + UDP_IDLE_TIMEOUT);
                    match relay.send(&p).await {
                        Ok(()) => metrics.add_bytes_to_origin(p.len() as u64),
                        Err(e) => debug!(cause = %e, "UDP datagram not delivered to the origin"),
                    }
                }
                None => {
                    debug!("the edge ended the UDP flow");
                    break;
                }
            },
            got = relay.recv(&mut buf) => match got {
                Ok(n) => {
                    idle.as_mut().reset(tokio::time::Instant::now() + UDP_IDLE_TIMEOUT);
                    let payload = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                    match flow.send(payload) {
                        Ok(()) => metrics.add_bytes_to_edge(n as u64),
                        Err(DatagramError::ConnectionLost(e)) => {
                            debug!(cause = %e, "edge connection lost; ending the UDP flow");
                            break;
                        }
                        Err(e) => debug!(cause = %e, "UDP datagram not delivered to the edge"),
                    }
                }
                // An ICMP error or an oversized answer loses one datagram, as UDP does.
                Err(e @ (RelayError::Refused { .. } | RelayError::TooLarge { .. })) => {
                    debug!(cause = %e, "UDP datagram from the origin dropped");
                }
                Err(e) => {
                    warn!(cause = %e, "UDP origin socket failed; ending the flow");
                    break;
                }
            },
            () = &mut idle => {
                debug!(idle = ?UDP_IDLE_TIMEOUT, "UDP flow idle; closing it");
                break;
            }
        }
    }
    flow.close();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::AdmitError;
    use std::net::SocketAddr;

    #[test]
    fn dial_errors_map_to_flow_statuses() {
        let dst: SocketAddr = "192.0.2.1:443".parse().unwrap();
        let cases = [
            (DialError::Refused { dst }, FlowStatusCode::ConnectRefused),
            (
                DialError::Timeout {
                    dst,
                    after: Duration::from_secs(5),
                },
                FlowStatusCode::Timeout,
            ),
            (
                DialError::Unreachable {
                    dst,
                    source: std::io::Error::from_raw_os_error(113),
                },
                FlowStatusCode::Unreachable,
            ),
            (DialError::NotAllowed { dst }, FlowStatusCode::Denied),
            (
                DialError::InvalidDestination { dst },
                FlowStatusCode::Denied,
            ),
            (
                DialError::NotAdmitted(AdmitError::TooManyFlows { limit: 3 }),
                FlowStatusCode::TooManyFlows,
            ),
            (
                DialError::NotAdmitted(AdmitError::Draining),
                FlowStatusCode::Draining,
            ),
        ];
        for (err, code) in cases {
            let status = status_for(&err);
            assert_eq!(status.code, code, "{err}");
            assert!(status.detail.len() <= MAX_TEXT_LEN);
            let mut wire = bytes::BytesMut::new();
            status.encode(&mut wire).unwrap();
        }
        assert_eq!(
            status_for(&DialError::NotAllowed { dst }).detail,
            "zt-allowed-destinations"
        );
    }
}
