//! One client flow: identity and session → l4 policy → route → connector → open → status
//! to the client → http phase → splice; and its audit line.
//!
//! The client learns the outcome of everything decided before its flow is open as a typed
//! status (no route, denied by rule, no live connector, the connector's connect errors, too
//! many flows). The http phase needs the client's first bytes, which a client sends only
//! once its flow is open, so it runs after the `ok` status: an http `block` then resets the
//! flow with [`ResetCode::REFUSED`] (the audit line names the rule). Bytes read for the
//! decision are forwarded to the connector before anything else, never lost.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tracing::{debug, info, warn};
use zt_policy::{Action, CompiledPolicy, Decision, FlowContext};
use zt_proto::{
    relay, FlowHeader, FlowRecvStream, FlowResponder, FlowStatus, FlowStatusCode, FlowStream,
    OpenError, Protocol, RelayEnd, RelayOutcome, ResetCode, UdpFlow,
};

use super::cloudflared;
use super::registry::{ConnEntry, ConnLink, InFlight};
use super::session::Session;
use super::sniff::{sniff, Sniffed};
use super::Inner;
use crate::audit::{
    CloseReason, ConnectorKind, FlowAction, FlowProtocol, FlowRecord, HalfClose, PolicyPhase,
};
use crate::timestamp::Timestamp;

/// What the client is answered when the flow does not open.
struct Refusal {
    status: FlowStatus,
    reason: CloseReason,
}

fn refuse(code: FlowStatusCode, detail: impl Into<String>, reason: CloseReason) -> Refusal {
    Refusal {
        status: FlowStatus::new(code, detail),
        reason,
    }
}

/// The connector side of an opened flow.
enum Opened {
    /// A TCP flow, and payload that arrived with the connector's answer (cloudflared).
    Tcp(FlowStream, Option<Bytes>),
    Udp(UdpFlow),
}

fn note_decision(rec: &mut FlowRecord, d: &Decision<'_>) {
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

/// Serves one flow and writes its audit line.
pub(crate) async fn serve(
    inner: Arc<Inner>,
    session: Arc<Session>,
    header: FlowHeader,
    responder: FlowResponder,
) {
    inner.client_flows.fetch_add(1, Ordering::AcqRel);
    let started = Instant::now();
    let protocol = match header.protocol {
        Protocol::Udp => FlowProtocol::Udp,
        _ => FlowProtocol::Tcp,
    };
    let mut rec = FlowRecord::new(session.remote, header.dest, protocol, CloseReason::Error);
    rec.device_id = Some(session.device_id);
    let result = run(&inner, &session, &header, responder, &mut rec).await;
    if let Err(refusal) = result {
        rec.close_reason = refusal.reason;
    }
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
    inner
        .metrics
        .flow_ended(rec.close_reason, rec.bytes_up, rec.bytes_down);
    if let Err(e) = inner.audit.record_flow(&rec) {
        warn!(error = %e, "cannot write the audit log");
    }
    inner.client_flows.fetch_sub(1, Ordering::AcqRel);
}

/// Everything up to the end of the flow. `Err` is a refusal the client has been sent.
async fn run(
    inner: &Inner,
    session: &Session,
    header: &FlowHeader,
    responder: FlowResponder,
    rec: &mut FlowRecord,
) -> Result<(), Refusal> {
    // Held until the flow ends.
    let permit = session.flows.try_acquire();
    let decided = match permit {
        Ok(_) => decide_and_open(inner, session, header, rec).await,
        Err(_) => Err(refuse(
            FlowStatusCode::TooManyFlows,
            format!(
                "the session has {} flows open, the most allowed",
                inner.config.max_flows_per_session
            ),
            CloseReason::Error,
        )),
    };
    match decided {
        Ok((opened, conn, _in_flight, policy)) => {
            rec.tunnel_id = Some(conn.tunnel_id);
            rec.connector_id = Some(conn.connector_id);
            rec.connector_kind = Some(conn.kind());
            rec.connector_version = Some(conn.version.clone());
            match opened {
                Opened::Tcp(origin, early) => {
                    let client = match responder.accept().await {
                        Ok(c) => c,
                        Err(e) => {
                            debug!(error = %e, "client gone before its flow opened");
                            rec.close_reason = CloseReason::ClientReset;
                            return Ok(());
                        }
                    };
                    if conn.kind() == ConnectorKind::Cloudflared {
                        rec.half_close = Some(HalfClose::NotSupportedByCloudflared);
                    }
                    let origin = Origin {
                        stream: origin,
                        early,
                        cloudflared: conn.kind() == ConnectorKind::Cloudflared,
                    };
                    tcp(inner, session, header, &policy, client, origin, rec).await;
                }
                Opened::Udp(origin) => {
                    let client = match responder.accept_udp().await {
                        Ok(c) => c,
                        Err(e) => {
                            debug!(error = %e, "client gone before its flow opened");
                            rec.close_reason = CloseReason::ClientReset;
                            return Ok(());
                        }
                    };
                    udp(client, origin, rec).await;
                }
            }
            Ok(())
        }
        Err(refusal) => {
            debug!(status = %refusal.status, "flow refused");
            if let Err(e) = responder.reject(refusal.status.clone()).await {
                debug!(error = %e, "cannot send the refusal");
            }
            Err(refusal)
        }
    }
}

type Decided = (Opened, Arc<ConnEntry>, InFlight, Arc<CompiledPolicy>);

fn vnet_field(vnet: &super::snapshot::VnetEntry) -> String {
    if vnet.is_default {
        String::new()
    } else {
        vnet.id.to_string()
    }
}

async fn decide_and_open(
    inner: &Inner,
    session: &Session,
    header: &FlowHeader,
    rec: &mut FlowRecord,
) -> Result<Decided, Refusal> {
    if session.is_closing() || inner.draining.load(Ordering::Acquire) {
        return Err(refuse(
            FlowStatusCode::Draining,
            "session is ending; reconnect",
            CloseReason::SessionExpired,
        ));
    }
    let snapshot = inner.snapshot.load_full();
    let Some(device) = snapshot.devices.get(&session.device_id) else {
        return Err(refuse(
            FlowStatusCode::Denied,
            "device is no longer authorized",
            CloseReason::Denied,
        ));
    };
    rec.identity_email = Some(device.identity.email.clone());
    let Some(vnet) = snapshot.resolve_vnet(&session.vnet_requested) else {
        return Err(refuse(
            FlowStatusCode::NoRoute,
            format!("unknown virtual network {:?}", session.vnet_requested),
            CloseReason::NoRoute,
        ));
    };
    rec.vnet = Some(vnet.id);

    let policy = inner.policy.load_full();
    let posture = session.posture();
    let device_ctx = zt_policy::Device {
        id: session.device_id.to_string(),
        posture: (*posture).clone(),
    };
    let vnet_str = vnet_field(vnet);
    let proto = match header.protocol {
        Protocol::Udp => zt_policy::Protocol::Udp,
        _ => zt_policy::Protocol::Tcp,
    };
    let ctx = FlowContext {
        identity: Some(&device.identity),
        device: Some(&device_ctx),
        vnet: &vnet_str,
        session_age_seconds: Some(session.started.elapsed().as_secs()),
        ..FlowContext::new(
            session.remote.ip(),
            header.dest.ip(),
            header.dest.port(),
            proto,
        )
    };
    let decision = policy.l4(&ctx);
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
    let tunnel = target.tunnel_id;
    rec.tunnel_id = Some(tunnel);

    let Some(first) = inner
        .registry
        .pick_or_wait(
            tunnel,
            header.protocol == Protocol::Udp,
            inner.config.connector_wait,
        )
        .await
    else {
        return Err(refuse(
            FlowStatusCode::NoConnector,
            format!(
                "tunnel {tunnel} has no live connector (none registered within {:?})",
                inner.config.connector_wait
            ),
            CloseReason::NoConnector,
        ));
    };
    match open_on(inner, &first, header).await {
        Ok(opened) => {
            first.mark_healthy();
            let guard = first.begin_flow();
            return Ok((opened, first, guard, policy));
        }
        Err(e) => {
            if let Some(refusal) = final_error(&first, &e) {
                return Err(refusal);
            }
        }
    }
    // The first connection did not answer or is draining: once more, on another one.
    let Some(second) = inner
        .registry
        .pick(tunnel, Some(&first), header.protocol == Protocol::Udp)
    else {
        return Err(refuse(
            FlowStatusCode::Timeout,
            format!("tunnel {tunnel}'s connector did not answer in time"),
            CloseReason::Timeout,
        ));
    };
    debug!(first = %first.connection_id(), second = %second.connection_id(), "retrying the open on another connection");
    match open_on(inner, &second, header).await {
        Ok(opened) => {
            second.mark_healthy();
            let guard = second.begin_flow();
            Ok((opened, second, guard, policy))
        }
        Err(e) => Err(final_error(&second, &e).unwrap_or_else(|| {
            refuse(
                FlowStatusCode::Timeout,
                format!("tunnel {tunnel}'s connectors did not answer in time"),
                CloseReason::Timeout,
            )
        })),
    }
}

/// Opens the flow on `conn`, counting it in flight meanwhile.
async fn open_on(
    inner: &Inner,
    conn: &Arc<ConnEntry>,
    header: &FlowHeader,
) -> Result<Opened, OpenError> {
    let _opening = conn.begin_flow();
    let link = match &conn.link {
        ConnLink::Zt(link) => link,
        ConnLink::Cloudflared(link) => {
            // cloudflared answers once it has dialled the origin: allow a dial's time.
            return cloudflared::open_flow(link, header, inner.config.header_timeout)
                .await
                .map(|(s, early)| Opened::Tcp(s, early));
        }
    };
    match header.protocol {
        Protocol::Udp => link
            .open_udp_flow(header.dest, header.metadata.clone())
            .await
            .map(Opened::Udp),
        _ => link
            .open_flow(header.dest, Protocol::Tcp, header.metadata.clone())
            .await
            .map(|s| Opened::Tcp(s, None)),
    }
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
            status: status.clone(),
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

/// The first bytes of the client's flow, read until they name a host, the size bound is
/// reached, the time bound passes, or the client finishes its side.
async fn read_first_bytes(
    recv: &mut FlowRecvStream,
    max: usize,
    timeout: std::time::Duration,
) -> (Vec<Bytes>, Sniffed, bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut chunks = Vec::new();
    let mut seen = BytesMut::new();
    loop {
        let verdict = sniff(&seen);
        if verdict != Sniffed::NeedMore || seen.len() >= max {
            return (chunks, verdict, false);
        }
        match tokio::time::timeout_at(deadline, recv.read_chunk()).await {
            Ok(Ok(Some(chunk))) => {
                let room = max.saturating_sub(seen.len());
                seen.extend_from_slice(&chunk[..chunk.len().min(room)]);
                chunks.push(chunk);
            }
            Ok(Ok(None)) => return (chunks, sniff(&seen), true),
            // A reset or lost connection shows again in the relay that follows.
            Ok(Err(_)) | Err(_) => return (chunks, sniff(&seen), false),
        }
    }
}

/// The connector side of a TCP flow, with the payload that came with its answer.
struct Origin {
    stream: FlowStream,
    early: Option<Bytes>,
    /// cloudflared ends the whole flow at the first FIN (see `cloudflared::splice`).
    cloudflared: bool,
}

#[allow(clippy::too_many_arguments)]
async fn tcp(
    inner: &Inner,
    session: &Session,
    header: &FlowHeader,
    policy: &CompiledPolicy,
    client: FlowStream,
    origin: Origin,
    rec: &mut FlowRecord,
) {
    let (mut client_send, mut client_recv) = client.into_split();
    let (mut origin_send, mut origin_recv) = origin.stream.into_split();
    let mut down_early = 0u64;
    if let Some(early) = origin.early {
        let n = early.len() as u64;
        if client_send.write_chunk(early).await.is_err() {
            origin_send.reset(ResetCode::ABORTED);
            origin_recv.stop(ResetCode::ABORTED);
            rec.close_reason = CloseReason::ClientReset;
            return;
        }
        down_early = n;
    }

    let snapshot = inner.snapshot.load_full();
    let identity = snapshot
        .devices
        .get(&session.device_id)
        .map(|d| d.identity.clone());
    let posture = session.posture();
    let device_ctx = zt_policy::Device {
        id: session.device_id.to_string(),
        posture: (*posture).clone(),
    };
    let vnet_str = snapshot
        .resolve_vnet(&session.vnet_requested)
        .map(vnet_field)
        .unwrap_or_default();
    let ctx = FlowContext {
        identity: identity.as_deref(),
        device: Some(&device_ctx),
        vnet: &vnet_str,
        session_age_seconds: Some(session.started.elapsed().as_secs()),
        ..FlowContext::new(
            session.remote.ip(),
            header.dest.ip(),
            header.dest.port(),
            zt_policy::Protocol::Tcp,
        )
    };

    let mut prefix: Vec<Bytes> = Vec::new();
    let mut client_finished = false;
    if let Some(off) = policy.http_off(&ctx) {
        note_decision(rec, &off);
    } else if policy.inspects_http() {
        let limits = inner.config.first_bytes;
        let (chunks, sniffed, fin) =
            read_first_bytes(&mut client_recv, limits.max_bytes, limits.timeout).await;
        prefix = chunks;
        client_finished = fin;
        let (sni, host) = match &sniffed {
            Sniffed::Tls(sni) => (sni.as_deref(), None),
            Sniffed::Http(host) => (None, host.as_deref()),
            Sniffed::Other | Sniffed::NeedMore => (None, None),
        };
        let ctx = FlowContext {
            sni,
            http_host: host,
            ..ctx
        };
        let decision = policy.http_inspect(&ctx);
        if !decision.is_default() || !decision.permits() {
            note_decision(rec, &decision);
        }
        if !decision.permits() {
            client_send.reset(ResetCode::REFUSED);
            client_recv.stop(ResetCode::REFUSED);
            origin_send.reset(ResetCode::CANCELLED);
            origin_recv.stop(ResetCode::CANCELLED);
            rec.close_reason = CloseReason::Denied;
            return;
        }
    }

    let mut up_prefix = 0u64;
    for chunk in prefix {
        let n = chunk.len() as u64;
        if origin_send.write_chunk(chunk).await.is_err() {
            client_send.reset(ResetCode::ABORTED);
            client_recv.stop(ResetCode::ABORTED);
            rec.bytes_up = up_prefix;
            rec.close_reason = CloseReason::OriginReset;
            return;
        }
        up_prefix += n;
    }
    let (up, down) = if client_finished {
        let _ = origin_send.finish();
        let down = relay(&mut origin_recv, &mut client_send).await;
        (
            RelayOutcome {
                bytes: 0,
                end: RelayEnd::Finished,
            },
            down,
        )
    } else if origin.cloudflared {
        cloudflared::splice(
            &mut client_recv,
            &mut client_send,
            &mut origin_recv,
            &mut origin_send,
        )
        .await
    } else {
        tokio::join!(
            relay(&mut client_recv, &mut origin_send),
            relay(&mut origin_recv, &mut client_send)
        )
    };
    rec.bytes_up = up_prefix + up.bytes;
    rec.bytes_down = down_early + down.bytes;
    rec.close_reason = close_reason(&up.end, &down.end);
}

fn close_reason(up: &RelayEnd, down: &RelayEnd) -> CloseReason {
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

/// Relays a UDP flow's datagrams both ways until either side ends it.
async fn udp(mut client: UdpFlow, mut origin: UdpFlow, rec: &mut FlowRecord) {
    let mut up = 0u64;
    let mut down = 0u64;
    loop {
        tokio::select! {
            p = client.recv() => match p {
                Some(p) => {
                    let n = p.len() as u64;
                    match origin.send(p) {
                        Ok(()) => up += n,
                        Err(e) => debug!(error = %e, "datagram to the connector dropped"),
                    }
                }
                None => break,
            },
            p = origin.recv() => match p {
                Some(p) => {
                    let n = p.len() as u64;
                    match client.send(p) {
                        Ok(()) => down += n,
                        Err(e) => debug!(error = %e, "datagram to the client dropped"),
                    }
                }
                None => break,
            },
        }
    }
    client.close();
    origin.close();
    rec.bytes_up = up;
    rec.bytes_down = down;
    rec.close_reason = CloseReason::Completed;
}
