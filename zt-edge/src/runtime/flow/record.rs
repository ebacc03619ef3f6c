//! The record stage: what the flow's audit line says (the policy decision, the connector,
//! bytes, the close reason), the refusals a client is answered with, and the line written
//! once the flow has ended.

use std::time::Instant;

use tracing::{info, warn};
use zt_policy::{Action, Decision};
use zt_proto::{FlowStatus, FlowStatusCode, RelayEnd};

use super::super::shared::Shared;
use super::opened::Via;
use crate::audit::{CloseReason, ConnectorKind, FlowAction, FlowRecord, PolicyPhase};
use crate::timestamp::Timestamp;

/// What the client is answered when the flow does not open, and why the audit line says it
/// ended.
pub(crate) struct Refusal {
    pub(crate) status: FlowStatus,
    pub(crate) reason: CloseReason,
}

pub(super) fn refuse(
    code: FlowStatusCode,
    detail: impl Into<String>,
    reason: CloseReason,
) -> Refusal {
    Refusal {
        status: FlowStatus::new(code, detail),
        reason,
    }
}

/// The refusal of a flow whose device stopped being live while the flow was opening.
pub(super) fn revoked() -> Refusal {
    refuse(
        FlowStatusCode::Denied,
        "device is no longer authorized",
        CloseReason::Revoked,
    )
}

/// Notes the deciding phase, action and rule.
pub(super) fn note_decision(rec: &mut FlowRecord, d: &Decision<'_>) {
    rec.phase = Some(match d.phase {
        zt_policy::Phase::L4 => PolicyPhase::L4,
        zt_policy::Phase::Http => PolicyPhase::Http,
        zt_policy::Phase::Dns => PolicyPhase::Dns,
    });
    rec.action = Some(match d.action {
        Action::Allow => FlowAction::Allow,
        Action::Block => FlowAction::Block,
        Action::Off => FlowAction::Off,
    });
    rec.rule_id = d.rule_id;
    rec.rule_name = d.rule_name.map(str::to_owned);
}

/// Notes the connector connection that serves the flow, and the peer edge holding it when
/// the flow was forwarded.
pub(super) fn note_connector(rec: &mut FlowRecord, tunnel: uuid::Uuid, via: &Via) {
    rec.tunnel_id = Some(tunnel);
    match via {
        Via::Local(conn) => {
            rec.connector_id = Some(conn.connector_id);
            rec.connector_kind = Some(conn.kind());
            rec.connector_version = Some(conn.version.clone());
            rec.connector_transport = Some(conn.transport().to_owned());
        }
        Via::Peer { edge, connector } => {
            rec.connector_edge = Some(edge.clone());
            rec.connector_id = Some(connector.connector_id);
            rec.connector_kind = Some(match connector.kind {
                zt_proto::PeerConnectorKind::Cloudflared => ConnectorKind::Cloudflared,
                _ => ConnectorKind::Zt,
            });
            rec.connector_transport = Some(connector.transport.clone());
        }
    }
}

/// Why a spliced TCP flow ended, from how each direction ended.
pub(super) fn close_reason(up: &RelayEnd, down: &RelayEnd) -> CloseReason {
    match (up, down) {
        (RelayEnd::Finished, RelayEnd::Finished) => CloseReason::Completed,
        // First: a lost connection makes the edge reset the other side, whose answering
        // reset must not be taken for the cause.
        (RelayEnd::ConnectionLost, _) | (_, RelayEnd::ConnectionLost) => {
            CloseReason::ConnectionLost
        }
        (RelayEnd::Reset(_), _) | (_, RelayEnd::Stopped(_)) => CloseReason::ClientReset,
        (_, RelayEnd::Reset(_)) | (RelayEnd::Stopped(_), _) => CloseReason::OriginReset,
        _ => CloseReason::Error,
    }
}

/// Writes the flow's one audit line, its log line and its metrics.
pub(super) fn finish(shared: &Shared, mut rec: FlowRecord, started: Instant) {
    rec.time = Timestamp::now();
    rec.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    info!(
        close_reason = ?rec.close_reason,
        rule = rec.rule_name.as_deref().unwrap_or(""),
        bytes_up = rec.bytes_up,
        bytes_down = rec.bytes_down,
        duration_ms = rec.duration_ms,
        "flow ended"
    );
    shared
        .metrics
        .flow_ended(rec.close_reason, rec.bytes_up, rec.bytes_down);
    if let Err(e) = shared.audit.record_flow(&rec) {
        warn!(error = %e, "cannot write the audit log");
    }
}
