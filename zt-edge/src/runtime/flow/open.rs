//! The open stage: pick a connection of the tunnel and open the flow on it, once more on
//! another connection when the first does not answer in time or is draining.
//!
//! The first pick may wait a short bound for a connector to register (after an edge
//! restart clients often return before connectors); a retry takes only what is there and
//! prefers another replica. A connection whose open went unanswered is marked unhealthy.
//!
//! When this edge holds no usable connection of the tunnel but a live peer edge does
//! (presence), a TCP flow is forwarded there (`forward`) before any wait; a flow that
//! arrived forwarded is opened here only ([`open_local`]), never forwarded again.

use std::sync::Arc;

use tracing::{debug, warn};
use uuid::Uuid;
use zt_proto::{FlowHeader, FlowStatus, FlowStatusCode, OpenError, Protocol};

use super::super::registry::ConnEntry;
use super::super::shared::Shared;
pub(crate) use super::opened::{Opened, Via};
use super::record::{refuse, Refusal};
use crate::audit::CloseReason;

/// Connections an open is tried on before the flow is refused: the first and one retry.
const ATTEMPTS: usize = 2;

/// Opens `header`'s flow on one of `tunnel`'s connections, here or, when only a peer edge
/// holds one, there.
pub(crate) async fn open(
    shared: &Shared,
    tunnel: Uuid,
    header: &FlowHeader,
) -> Result<Opened, Refusal> {
    let udp = header.protocol == Protocol::Udp;
    if !udp && shared.registry.pick(tunnel, None, false).is_none() {
        if let Some(forwarded) = super::forward::forward(shared, tunnel, header).await? {
            return Ok(forwarded);
        }
    }
    open_local(shared, tunnel, header).await
}

/// Opens `header`'s flow on one of this edge's connections of `tunnel`.
pub(crate) async fn open_local(
    shared: &Shared,
    tunnel: Uuid,
    header: &FlowHeader,
) -> Result<Opened, Refusal> {
    let udp = header.protocol == Protocol::Udp;
    let mut tried: Option<Arc<ConnEntry>> = None;
    for _ in 0..ATTEMPTS {
        let conn = match &tried {
            None => {
                let wait = shared.config.connector_wait;
                shared.registry.pick_or_wait(tunnel, udp, wait).await.ok_or_else(|| {
                    let tcp_only = if udp { shared.registry.tcp_only(tunnel) } else { 0 };
                    let detail = if tcp_only > 0 {
                        format!(
                            "tunnel {tunnel} has no connector that carries UDP: its {tcp_only} \
                             live connection(s) are cloudflared's, which carry TCP only here \
                             (over HTTP/2, cloudflared has no UDP at all); run zt-connector \
                             for UDP"
                        )
                    } else if let Some(peer) = udp
                        .then(|| shared.presence.edges_holding(tunnel).into_iter().next())
                        .flatten()
                    {
                        format!(
                            "tunnel {tunnel}'s connectors are on edge {}, and UDP flows are \
                             not forwarded between edges: connect this client to that edge, or \
                             give the tunnel a connector here",
                            peer.name
                        )
                    } else {
                        format!(
                            "tunnel {tunnel} has no live connector (none registered within {wait:?})"
                        )
                    };
                    refuse(FlowStatusCode::NoConnector, detail, CloseReason::NoConnector)
                })?
            }
            Some(previous) => {
                let conn = shared
                    .registry
                    .pick(tunnel, Some(previous), udp)
                    .ok_or_else(|| {
                        refuse(
                            FlowStatusCode::Timeout,
                            format!("tunnel {tunnel}'s connector did not answer in time"),
                            CloseReason::Timeout,
                        )
                    })?;
                debug!(first = %previous.connection_id(), second = %conn.connection_id(), "retrying the open on another connection");
                conn
            }
        };
        let opened = {
            // Counted in flight while it opens, so concurrent picks spread.
            let _opening = conn.begin_flow();
            conn.link.open(header, shared.config.header_timeout).await
        };
        match opened {
            Ok(stream) => {
                conn.mark_healthy();
                return Ok(Opened {
                    _in_flight: Some(conn.begin_flow()),
                    via: Via::Local(conn),
                    stream,
                });
            }
            Err(e) => {
                if let Some(refusal) = final_error(&conn, &e) {
                    return Err(refusal);
                }
            }
        }
        tried = Some(conn);
    }
    Err(refuse(
        FlowStatusCode::Timeout,
        format!("tunnel {tunnel}'s connectors did not answer in time"),
        CloseReason::Timeout,
    ))
}

/// The refusal an open error ends the flow with, or `None` when another connection should
/// be tried (no answer in time, or the connection is draining).
fn final_error(conn: &ConnEntry, e: &OpenError) -> Option<Refusal> {
    match e {
        OpenError::Unanswered(_) => {
            conn.mark_unhealthy();
            None
        }
        OpenError::Draining => {
            conn.mark_draining();
            None
        }
        OpenError::Refused(status) if status.code == FlowStatusCode::Draining => {
            conn.mark_draining();
            None
        }
        OpenError::Refused(status) => Some(Refusal {
            status: FlowStatus::clone(status),
            reason: CloseReason::ConnectFailed,
        }),
        OpenError::TooManyPending(_) => Some(refuse(
            FlowStatusCode::TooManyFlows,
            "too many flows opening on the tunnel's connector",
            CloseReason::ConnectFailed,
        )),
        other => {
            warn!(connection = %conn.connection_id(), error = %other, "flow open failed");
            Some(refuse(
                FlowStatusCode::Unreachable,
                "the tunnel's connector failed to open the flow",
                CloseReason::ConnectFailed,
            ))
        }
    }
}
