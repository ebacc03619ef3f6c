//! One client flow as a pipeline of named stages:
//!
//! 1. [`decide`]: one policy input, the l4 phase and the route, on the snapshot the flow
//!    started with;
//! 2. [`open`]: a connection of the tunnel picked and the flow opened on it, retried once;
//! 3. the client's answer: a typed status for everything decided so far (no route, denied
//!    by rule, no live connector, the connector's connect errors, too many flows), or `ok`;
//! 4. [`inspect`]: the http phase on the client's first bytes, which a client sends only
//!    once its flow is open (an http `block` then resets the flow with
//!    [`ResetCode::REFUSED`]);
//! 5. [`splice`]: the bytes both ways;
//! 6. [`record`]: the decision and the flow's one audit line.
//!
//! A flow decides everything on one revision, from its first decision to its audit line.
//! Opening and inspecting take time, so before the client is told `ok`, and again before the
//! splice, the flow checks that its device is still live in the edge's current revision; a
//! device removed meanwhile gets its flow refused with close reason `revoked`. A flow cut
//! because the edge ended its session says why: `revoked` or `session_expired`.

mod decide;
mod forward;
mod inspect;
mod open;
mod opened;
mod record;
mod splice;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tracing::debug;
use zt_proto::{FlowHeader, FlowResponder, FlowStatusCode, Protocol, ResetCode};

use self::decide::Decided;
use self::inspect::Verdict;
pub(crate) use self::open::open_local;
use self::opened::Opened;
pub(crate) use self::opened::{Opened as OpenedFlow, Via};
use self::record::refuse;
pub(crate) use self::record::Refusal;
use self::splice::TcpEnds;
use super::link::OpenedStream;
use super::session::ClientSession;
use super::shared::Shared;
use super::snapshot::Snapshot;
use crate::audit::{CloseReason, FlowProtocol, FlowRecord};

/// Serves one flow and writes its audit line.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    session: Arc<ClientSession>,
    header: FlowHeader,
    responder: FlowResponder,
) {
    shared.client_flows.fetch_add(1, Ordering::AcqRel);
    let started = Instant::now();
    let protocol = match header.protocol {
        Protocol::Udp => FlowProtocol::Udp,
        _ => FlowProtocol::Tcp,
    };
    let mut rec = FlowRecord::new(session.remote, header.dest, protocol, CloseReason::Error);
    rec.edge = Some(shared.config.edge_name.clone());
    rec.device_id = Some(session.device_id);
    rec.session_id = Some(session.device.id);
    if let Err(refusal) = carry(&shared, &session, &header, responder, &mut rec).await {
        rec.close_reason = refusal.reason;
    }
    // A flow the edge cut by ending its session (expiry, revocation) says why.
    if let Some(reason) = session.device.end_reason() {
        if matches!(
            rec.close_reason,
            CloseReason::ConnectionLost
                | CloseReason::ClientReset
                | CloseReason::OriginReset
                | CloseReason::Error
                | CloseReason::SessionExpired
        ) {
            rec.close_reason = reason;
        }
    }
    record::finish(&shared, rec, started);
    shared.client_flows.fetch_sub(1, Ordering::AcqRel);
}

/// Everything up to the end of the flow. `Err` is a refusal the client has been sent.
async fn carry(
    shared: &Shared,
    session: &ClientSession,
    header: &FlowHeader,
    responder: FlowResponder,
    rec: &mut FlowRecord,
) -> Result<(), Refusal> {
    // Held until the flow ends.
    let Ok(_permit) = session.device.flows.try_acquire() else {
        let refusal = refuse(
            FlowStatusCode::TooManyFlows,
            format!(
                "the session has {} flows open, the most allowed",
                shared.config.max_flows_per_session
            ),
            CloseReason::Error,
        );
        return reject(responder, refusal).await;
    };
    // The revision this flow decides on, from its first decision to its audit line.
    let snapshot = shared.snapshot.load_full();
    let (decided, opened) = match decide_and_open(shared, &snapshot, session, header, rec).await {
        Ok(staged) => staged,
        Err(refusal) => return reject(responder, refusal).await,
    };
    let Opened {
        stream, _in_flight, ..
    } = opened;
    match stream {
        OpenedStream::Tcp {
            stream,
            early,
            mode,
        } => {
            let client = match responder.accept().await {
                Ok(c) => c,
                Err(e) => {
                    debug!(error = %e, "client gone before its flow opened");
                    rec.close_reason = CloseReason::ClientReset;
                    return Ok(());
                }
            };
            rec.half_close = mode.half_close();
            let (client_send, client_recv) = client.into_split();
            let (origin_send, origin_recv) = stream.into_split();
            let mut ends = TcpEnds {
                client_send,
                client_recv,
                origin_send,
                origin_recv,
            };
            if !splice::send_early(&mut ends, early, rec).await {
                return Ok(());
            }
            let limits = shared.config.first_bytes;
            let inspected = match inspect::inspect(
                &snapshot.policy,
                &decided.input,
                limits,
                &mut ends.client_recv,
                rec,
            )
            .await
            {
                Verdict::Pass(inspected) => inspected,
                Verdict::Block => {
                    ends.reset(ResetCode::REFUSED, ResetCode::CANCELLED);
                    rec.close_reason = CloseReason::Denied;
                    return Ok(());
                }
            };
            if !decide::still_live(shared, session) {
                debug!("device removed while the flow was inspected; refusing it");
                ends.reset(ResetCode::REFUSED, ResetCode::CANCELLED);
                rec.close_reason = CloseReason::Revoked;
                return Ok(());
            }
            splice::tcp(ends, inspected, mode, rec).await;
        }
        OpenedStream::Udp(origin) => {
            let client = match responder.accept_udp().await {
                Ok(c) => c,
                Err(e) => {
                    debug!(error = %e, "client gone before its flow opened");
                    rec.close_reason = CloseReason::ClientReset;
                    return Ok(());
                }
            };
            splice::udp(client, origin, rec).await;
        }
    }
    Ok(())
}

/// The stages before the client is answered: decide, open, and the check that the device
/// is still live now that the connector has answered.
async fn decide_and_open(
    shared: &Shared,
    snapshot: &Snapshot,
    session: &ClientSession,
    header: &FlowHeader,
    rec: &mut FlowRecord,
) -> Result<(Decided, Opened), Refusal> {
    let decided = decide::decide(shared, snapshot, session, header, rec)?;
    let opened = open::open(shared, decided.tunnel, header).await?;
    record::note_connector(rec, decided.tunnel, &opened.via);
    if !decide::still_live(shared, session) {
        debug!("device removed while the flow was opening; refusing it");
        opened.abandon();
        return Err(record::revoked());
    }
    Ok((decided, opened))
}

/// Sends the client its refusal.
async fn reject(responder: FlowResponder, refusal: Refusal) -> Result<(), Refusal> {
    debug!(status = %refusal.status, "flow refused");
    if let Err(e) = responder.reject(refusal.status.clone()).await {
        debug!(error = %e, "cannot send the refusal");
    }
    Err(refusal)
}
