//! The decide stage: one policy input for the whole flow, the l4 phase, and the route.
//!
//! The input is built once, from the snapshot the flow started with, and every later phase
//! (http) reads the same one, so no phase sees another revision's identity or routes.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use uuid::Uuid;
use zt_policy::{Device, FlowContext, Identity};
use zt_proto::{FlowHeader, FlowStatus, FlowStatusCode, Protocol};

use super::super::session::ClientSession;
use super::super::shared::Shared;
use super::super::snapshot::Snapshot;
use super::record::{note_decision, refuse, Refusal};
use crate::audit::{CloseReason, FlowRecord};

/// The fields policy reads of one flow, owned, so every phase borrows the same values.
pub(super) struct FlowInput {
    identity: Arc<Identity>,
    device: Device,
    /// The virtual network as policy names it: empty for the default.
    vnet: String,
    session_age_seconds: u64,
    source: IpAddr,
    dest: SocketAddr,
    protocol: zt_policy::NetProtocol,
}

impl FlowInput {
    /// The policy context of the connection fields (l4, and http before any bytes).
    pub(super) fn context(&self) -> FlowContext<'_> {
        FlowContext {
            identity: Some(&self.identity),
            device: Some(&self.device),
            vnet: &self.vnet,
            session_age_seconds: Some(self.session_age_seconds),
            ..FlowContext::new(self.source, self.dest.ip(), self.dest.port(), self.protocol)
        }
    }
}

/// What the decide stage hands on: the input later phases use and the tunnel to open on.
pub(super) struct Decided {
    pub(super) input: FlowInput,
    pub(super) tunnel: Uuid,
}

/// Decides the flow's l4 phase and route on `snapshot`.
pub(super) fn decide(
    shared: &Shared,
    snapshot: &Snapshot,
    session: &ClientSession,
    header: &FlowHeader,
    rec: &mut FlowRecord,
) -> Result<Decided, Refusal> {
    if session.is_closing() || shared.draining.load(Ordering::Acquire) {
        // The reason the session is ending (expiry, revocation); a shutting-down edge
        // counts as the session's end too.
        let reason = session
            .device
            .end_reason()
            .unwrap_or(CloseReason::SessionExpired);
        return Err(refuse(
            FlowStatusCode::Draining,
            "session is ending; reconnect",
            reason,
        ));
    }
    let Some(device) = snapshot.devices.get(&session.device_id) else {
        return Err(refuse(
            FlowStatusCode::Denied,
            "device is no longer authorized",
            CloseReason::Denied,
        ));
    };
    rec.service_token = device.service_token.clone();
    // A service token has no user; its line names the token instead.
    rec.identity_email = device
        .service_token
        .is_none()
        .then(|| device.identity.email.clone());
    rec.idp = device.identity.idp.clone();
    rec.login_session = device.login.as_ref().map(|l| l.session_id);
    let Some(vnet) = snapshot.resolve_vnet(&session.vnet_requested) else {
        return Err(refuse(
            FlowStatusCode::NoRoute,
            format!("unknown virtual network {:?}", session.vnet_requested),
            CloseReason::NoRoute,
        ));
    };
    rec.vnet = Some(vnet.id);

    let input = FlowInput {
        identity: device.identity.clone(),
        device: Device {
            id: session.device_id.to_string(),
            posture: (*session.device.posture()).clone(),
        },
        vnet: if vnet.is_default {
            String::new()
        } else {
            vnet.id.to_string()
        },
        session_age_seconds: session.device.started.elapsed().as_secs(),
        source: session.remote.ip(),
        dest: header.dest,
        protocol: match header.protocol {
            Protocol::Udp => zt_policy::NetProtocol::Udp,
            _ => zt_policy::NetProtocol::Tcp,
        },
    };
    let decision = snapshot.policy.l4(&input.context());
    note_decision(rec, &decision);
    if !decision.permits() {
        let detail = match decision.rule_name {
            Some(name) => name.to_owned(),
            None => "(l4 default: block)".to_owned(),
        };
        return Err(Refusal {
            status: FlowStatus::denied(detail),
            reason: CloseReason::Denied,
        });
    }

    let Some(target) = snapshot.routes.lookup(vnet.id, header.dest.ip()) else {
        return Err(refuse(
            FlowStatusCode::NoRoute,
            format!(
                "no route to {} in virtual network {}",
                header.dest.ip(),
                vnet.name
            ),
            CloseReason::NoRoute,
        ));
    };
    rec.tunnel_id = Some(target.tunnel_id);
    Ok(Decided {
        input,
        tunnel: target.tunnel_id,
    })
}

/// Whether the session's device is still live in the edge's current revision. A flow that
/// decided on an earlier revision checks this before it carries bytes: a device removed
/// meanwhile must not get a flow it would be refused now.
pub(super) fn still_live(shared: &Shared, session: &ClientSession) -> bool {
    shared
        .snapshot
        .load()
        .devices
        .contains_key(&session.device_id)
}
