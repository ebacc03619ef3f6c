//! Forwarding a flow to a peer edge that holds a connection of its tunnel, when this edge
//! holds none: the flow is decided here (policy runs once, at the client's edge), opened
//! there on a connector connection, and spliced here between the client and the peering
//! stream, so one audit line here names both edges.
//!
//! The live edges holding a usable connection are tried most connections first (one that
//! failed a dial or a flow in the last few seconds last), at most [`PEER_ATTEMPTS`] of
//! them; a peer that cannot be reached, does not answer in time, is draining or has lost
//! its connections is skipped for the next. A refusal about the
//! destination (connect refused, unreachable, too many flows) is final, as it would be
//! here. UDP flows are not forwarded (they ride datagrams, which peering does not carry).

use tracing::{debug, warn};
use uuid::Uuid;
use zt_proto::{FlowHeader, FlowStatusCode, PeerFlowOpen};

use super::super::link::{OpenedStream, SpliceMode};
use super::super::shared::Shared;
use super::opened::{Opened, Via};
use super::record::Refusal;
use crate::audit::CloseReason;

/// Peer edges a flow is tried on before it falls back to waiting for a local connector.
const PEER_ATTEMPTS: usize = 2;

/// Forwards `header`'s flow. `Ok(None)`: no peer could take it (none holds the tunnel,
/// or every one tried failed), so the caller goes on as with no peers.
pub(super) async fn forward(
    shared: &Shared,
    tunnel: Uuid,
    header: &FlowHeader,
) -> Result<Option<Opened>, Refusal> {
    let Some(links) = shared.peer_links.as_ref() else {
        return Ok(None);
    };
    let open = PeerFlowOpen {
        tunnel_id: tunnel,
        from_edge: shared.presence.edge_id(),
        flow: header.clone(),
    };
    // The peer's own open may wait for its connector and retry once, as here.
    let answer_timeout = shared.config.header_timeout + shared.config.open_timeout * 2;
    // Edges that just failed a dial or a flow go last (stable: most connections first).
    let mut targets = shared.presence.edges_holding(tunnel);
    targets.sort_by_key(|t| links.recently_failed(t.edge_id));
    for target in targets.into_iter().take(PEER_ATTEMPTS) {
        let conn = match links.connection(target.edge_id, target.peer).await {
            Ok(conn) => conn,
            Err(e) => {
                warn!(peer_edge = %target.name, peer = %target.peer, error = %e, "cannot reach the peer edge holding the tunnel");
                continue;
            }
        };
        match conn.open_flow(&open, answer_timeout).await {
            Ok((answer, Some(stream))) => {
                let Some(connector) = answer.connector else {
                    // An ok answer always names its connector; decoding checks it.
                    continue;
                };
                let mode = if connector.first_fin_ends {
                    SpliceMode::FirstFinEnds
                } else {
                    SpliceMode::HalfClose
                };
                debug!(peer_edge = %target.name, "flow forwarded");
                return Ok(Some(Opened {
                    via: Via::Peer {
                        edge: target.name,
                        connector,
                    },
                    stream: OpenedStream::Tcp {
                        stream,
                        early: None,
                        mode,
                    },
                    _in_flight: None,
                }));
            }
            Ok((answer, None)) => match answer.status.code {
                // The peer lost its connections or is going away: try another.
                FlowStatusCode::NoConnector | FlowStatusCode::Draining => {
                    debug!(peer_edge = %target.name, status = %answer.status, "the peer edge cannot serve the tunnel now");
                }
                code => {
                    let reason = match code {
                        FlowStatusCode::Timeout => CloseReason::Timeout,
                        FlowStatusCode::Denied => CloseReason::Denied,
                        _ => CloseReason::ConnectFailed,
                    };
                    return Err(Refusal {
                        status: answer.status,
                        reason,
                    });
                }
            },
            Err(e) => {
                warn!(peer_edge = %target.name, error = %e, "forwarding a flow to the peer edge failed");
                links.drop_connection(target.edge_id).await;
            }
        }
    }
    Ok(None)
}
