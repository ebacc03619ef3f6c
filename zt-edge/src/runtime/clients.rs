//! Serves a registered client connection: its session's route pushes (on connect and after
//! every reload that changes them), posture reports, lifetime (go-away at the configured
//! maximum, then close after the drain period) and one task per flow.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tracing::{debug, info, Instrument};
use uuid::Uuid;
use zt_proto::{ClientLink, CloseCode, EdgeEvent};

use super::flow;
use super::renew::{self, RenewError};
use super::session::ClientSession;
use super::shared::Shared;
use crate::audit::CloseReason;

/// Serves a registered client until its connection ends.
pub(crate) async fn serve(shared: Arc<Shared>, link: ClientLink) {
    let connection = link.connection_id();
    let device = shared.device_sessions.join(
        link.claim().device_id,
        zt_proto::session_feature(link.software().1),
        connection,
        shared.config.max_flows_per_session,
    );
    let session = Arc::new(ClientSession::new(link, device));
    let span = tracing::info_span!("client", device = %session.device_id, session = %session.device.id, connection = %connection);
    serve_session(shared.clone(), session, connection)
        .instrument(span)
        .await;
    shared.device_sessions.sweep();
}

/// Why a session reaches its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The edge's `--max-session-lifetime`.
    Lifetime,
    /// The device's sign-in (`zt login`).
    SignInEnded,
    /// The service token's expiry.
    TokenExpired,
}

impl End {
    /// What the go-away tells the client.
    fn says(self) -> &'static str {
        match self {
            Self::Lifetime => "session lifetime reached; reconnect to re-authenticate",
            Self::SignInEnded => {
                "the sign-in has ended and cannot be renewed without you; run `zt login` to sign in again"
            }
            Self::TokenExpired => "the service token has expired",
        }
    }
}

async fn serve_session(shared: Arc<Shared>, session: Arc<ClientSession>, connection: Uuid) {
    info!(remote = %session.remote, vnet = %session.vnet_requested, "client connection joined its session");
    shared.metrics.session_started();
    shared
        .sessions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(connection, session.clone());
    session.push_routes(&shared.snapshot.load_full()).await;

    let mut revisions = shared.revision.subscribe();
    let mut stop = shared.stop.subscribe();
    // The session ends at the first of: the edge's maximum lifetime, counted from the
    // device session's start (whichever connection started it), and the end of the
    // device's sign-in or the service token's expiry.
    let far = Duration::from_secs(86_400 * 365);
    let deadline = |snapshot: &super::snapshot::Snapshot| -> Option<(std::time::Instant, End)> {
        let lifetime = shared
            .config
            .max_session_lifetime
            .map(|l| (session.device.started + l, End::Lifetime));
        let credential = snapshot.devices.get(&session.device_id).and_then(|d| {
            let at = d.expires_at?;
            let left = at
                .to_system_time()
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            let why = if d.service_token.is_some() {
                End::TokenExpired
            } else {
                End::SignInEnded
            };
            Some((std::time::Instant::now() + left, why))
        });
        match (lifetime, credential) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    };
    // When to renew the device's sign-in with the provider's refresh token, if the edge
    // keeps one: a little before its end (see the renew module).
    let renew_at = |snapshot: &super::snapshot::Snapshot| -> Option<tokio::time::Instant> {
        let d = snapshot.devices.get(&session.device_id)?;
        let login = d.login.as_ref().filter(|l| l.renewable)?;
        let end = d.expires_at?;
        let at = end
            .to_system_time()
            .checked_sub(renew::ahead(login.since, end))?;
        let wait = at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        Some(tokio::time::Instant::now() + wait)
    };
    let far_away = || tokio::time::Instant::now() + far;
    let mut renew_due = renew_at(&shared.snapshot.load());
    let renew_timer = tokio::time::sleep_until(renew_due.unwrap_or_else(far_away));
    tokio::pin!(renew_timer);
    let mut renewing: Option<
        tokio::task::JoinHandle<Result<Option<crate::timestamp::Timestamp>, RenewError>>,
    > = None;
    // Why the sign-in could not be renewed, said at its end.
    let mut renew_refused: Option<String> = None;
    // The device's end and whether it is renewable, as the store says them: what the
    // timers follow (the instants computed from them differ at every look).
    let end_of = |snapshot: &super::snapshot::Snapshot| {
        snapshot
            .devices
            .get(&session.device_id)
            .map(|d| (d.expires_at, d.login.as_ref().is_some_and(|l| l.renewable)))
    };
    let mut credential_end = end_of(&shared.snapshot.load());
    let mut ends = deadline(&shared.snapshot.load());
    let expiry = tokio::time::sleep_until(
        ends.map_or_else(far_away, |(at, _)| tokio::time::Instant::from_std(at)),
    );
    tokio::pin!(expiry);
    let mut expired = false;
    let drain = tokio::time::sleep(far);
    tokio::pin!(drain);
    let mut edges = super::presence::edge_list_for(&shared.presence, session.link.software().1);
    loop {
        tokio::select! {
            list = super::presence::next_edge_list(&mut edges) => {
                if let Err(e) = session.link.push_edges(list).await {
                    debug!(error = %e, "cannot push the edge list");
                }
            }
            request = session.link.accept_flow() => match request {
                Some((header, responder)) => {
                    let shared = shared.clone();
                    let session = session.clone();
                    let span = tracing::info_span!("flow", id = header.flow_id, dest = %header.dest, protocol = %header.protocol);
                    tokio::spawn(flow::serve(shared, session, header, responder).instrument(span));
                }
                None => break,
            },
            event = session.link.next_event() => match event {
                Some(EdgeEvent::Posture(report)) => {
                    let checks: HashMap<String, bool> = report.checks.into_iter().map(|c| (c.name, c.passed)).collect();
                    debug!(checks = checks.len(), "posture reported");
                    session.device.set_posture(checks);
                }
                Some(_) => {}
                None => {
                    // The client ended its control stream: the session is over. Close the
                    // connection as well, or it would stay open (refusing every flow, with
                    // its stream tables allocated) for as long as the client keeps it alive.
                    session.link.close(CloseCode::NO_ERROR, "control stream ended");
                    break;
                }
            },
            changed = revisions.changed() => {
                if changed.is_ok() {
                    let snapshot = shared.snapshot.load_full();
                    if !snapshot.devices.contains_key(&session.device_id) {
                        // Revoked, removed, or its user removed: every flow ends now.
                        session.device.end(CloseReason::Revoked);
                        info!("device revoked or removed; ending its session and every flow");
                        session.link.close(CloseCode::GOING_AWAY, "device revoked");
                        break;
                    }
                    session.push_routes(&snapshot).await;
                    // A new sign-in of the same device, or a renewal, moves its end; a new
                    // end forgets an old renewal's refusal.
                    let end = end_of(&snapshot);
                    if end != credential_end {
                        let moved = end.map(|e| e.0) != credential_end.map(|e| e.0);
                        credential_end = end;
                        if !expired {
                            ends = deadline(&snapshot);
                            expiry.as_mut().reset(
                                ends.map_or_else(far_away, |(at, _)| tokio::time::Instant::from_std(at)),
                            );
                            if moved {
                                renew_refused = None;
                            }
                            if renewing.is_none() {
                                renew_due = renew_at(&snapshot);
                                renew_timer.as_mut().reset(renew_due.unwrap_or_else(far_away));
                            }
                        }
                    }
                }
            }
            _ = &mut renew_timer, if !expired && renew_due.is_some() && renewing.is_none() => {
                let shared = shared.clone();
                let (device, remote) = (session.device_id, session.remote);
                let transport = session.link.transport_word();
                renewing = Some(tokio::spawn(async move {
                    renew::renew(&shared, device, remote, transport).await
                }));
                renew_due = None;
            }
            done = async {
                match renewing.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            }, if renewing.is_some() => {
                renewing = None;
                match done {
                    // The new end arrives with the store's revision, which may have come
                    // while this task ran: take the next renewal time from the snapshot.
                    Ok(Ok(_)) => {
                        // Not at once again, if the snapshot is still the one from before.
                        let soonest = tokio::time::Instant::now() + Duration::from_secs(1);
                        renew_due = renew_at(&shared.snapshot.load()).map(|at| at.max(soonest));
                        renew_timer.as_mut().reset(renew_due.unwrap_or_else(far_away));
                    }
                    Ok(Err(RenewError::Transient(why))) => {
                        // Again in a while, while the sign-in lasts.
                        let left = ends.map(|(at, _)| at.saturating_duration_since(std::time::Instant::now())).unwrap_or_default();
                        let again = (left / 3).clamp(Duration::from_millis(250), Duration::from_secs(30));
                        if left > again {
                            renew_due = Some(tokio::time::Instant::now() + again);
                            renew_timer.as_mut().reset(tokio::time::Instant::now() + again);
                        } else {
                            renew_refused = Some(format!("the identity provider could not be reached to renew it ({why})"));
                        }
                    }
                    Ok(Err(RenewError::Final(why))) => {
                        renew::forget_token(&shared, session.device_id);
                        renew_refused = Some(why);
                    }
                    Err(e) => debug!(error = %e, "the renewal task ended early"),
                }
            }
            _ = &mut expiry, if !expired && ends.is_some() => {
                expired = true;
                let grace = shared.config.session_drain;
                session.device.end(CloseReason::SessionExpired);
                let why = ends.map_or(End::Lifetime, |e| e.1);
                let says = match (&renew_refused, why) {
                    (Some(refused), End::SignInEnded) => format!("the sign-in has ended and {refused}; run `zt login` to sign in again"),
                    _ => why.says().to_owned(),
                };
                info!(age_s = session.device.started.elapsed().as_secs(), reason = %says, "session reached its end; asking the client to go away");
                session.go_away(grace, &says).await;
                drain.as_mut().reset(tokio::time::Instant::now() + grace);
            }
            _ = &mut drain => {
                session.link.close(CloseCode::GOING_AWAY, "session ended");
                break;
            }
            _ = session.link.closed() => break,
            _ = stop.changed() => break,
        }
    }
    shared
        .sessions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&connection);
    shared.metrics.session_ended();
    info!(
        device_sessions = shared.device_sessions.len(),
        "client connection ended"
    );
}
