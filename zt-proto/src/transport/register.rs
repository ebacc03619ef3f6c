//! Registration over any [`Transport`], for every role: the first bidirectional stream
//! carries the control machine, driven by the one [`Driver`] until the machine says
//! registered or refused. The edge consults its [`Authenticator`] on the machine's
//! `AuthRequired` event; the peers turn the machine's answer into a connection or an error.
//! Once registered, the same driver runs on its own task for the connection's life.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::auth::VerifyKey;
use tokio::time::timeout_at;
use tracing::{debug, info};
use uuid::Uuid;

use crate::control::{ClientControl, ConnectorControl};
use crate::control::{EdgeControl, EdgeEvent, PeerEvent, RefusalReason};
use crate::flow::CloseCode;
use crate::frame::{Claim, Registered};
use crate::transport::carrier::{ConnectionLost, Transport};
use crate::transport::driver::{Driver, Ended, Machine, Step};
use crate::transport::error::{AcceptError, ConnectError};
use crate::transport::links::{
    on_edge_event, on_peer_event, ClientConnection, ClientLink, Connection, ConnectorConnection,
    ConnectorLink,
};
use crate::transport::serve::{spawn_acceptor, spawn_stream_refuser};
use crate::transport::settings::TransportSettings;
use crate::transport::shared::Shared;

/// How long a refusing edge waits for the peer to receive its `register_error` before
/// closing the connection.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// Whether the edge lets a source address try to register now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admission {
    /// Go ahead.
    Admit,
    /// Too many recent failures from this address: refuse with `rate_limited`.
    RateLimited,
    /// The edge is draining: refuse with `draining`.
    Draining,
}

/// What the edge supplies to registration: stored keys, a rate limit and an audit hook.
///
/// Called on the task running the registration; keep the methods quick (an in-memory
/// lookup), they run once per registration attempt.
pub trait Authenticator: Send + Sync {
    /// Whether `source` may attempt a registration now (per-address rate limiting of failed
    /// proofs). The default admits everyone.
    fn admit(&self, source: SocketAddr) -> Admission {
        let _ = source;
        Admission::Admit
    }

    /// The key stored for the claim, or `None` if the claim is unknown. For a connector the
    /// implementation must check that the account tag matches the tunnel's.
    fn verify_key(&self, claim: &Claim) -> Option<VerifyKey>;

    /// A registration was refused, with its true reason (for the audit log and for counting
    /// failures per address). The peer was told only the generic answer.
    fn refused(&self, source: SocketAddr, claim: Option<&Claim>, reason: RefusalReason) {
        let _ = (source, claim, reason);
    }
}

/// A peer the edge registered, by role.
pub(crate) enum EdgeRegistered<T: Transport> {
    Connector(ConnectorLink<T>),
    Client(ClientLink<T>),
}

fn lost<T: Transport>(transport: &T) -> ConnectionLost {
    transport
        .close_reason()
        .unwrap_or(quinn::ConnectionError::LocallyClosed)
}

/// The edge's side: waits for the peer's control stream, then runs the machine with `auth`
/// until the peer is registered or refused. `deadline` bounds the whole exchange.
pub(crate) async fn register_at_edge<T: Transport>(
    transport: T,
    settings: TransportSettings,
    edge_name: &str,
    started: Instant,
    auth: &dyn Authenticator,
) -> Result<EdgeRegistered<T>, AcceptError> {
    let addr = transport.remote_address();
    let deadline = started + settings.register_timeout;
    let exporter = transport.exporter().ok_or(AcceptError::Exporter(addr))?;
    let refuse_close = |reason: &[u8]| transport.close(CloseCode::REGISTRATION_REFUSED, reason);
    let (send, recv) = match timeout_at(
        tokio::time::Instant::from_std(deadline),
        transport.accept_bi(),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(AcceptError::Lost { addr, source }),
        Err(_) => {
            auth.refused(addr, None, RefusalReason::Timeout);
            refuse_close(b"no control stream in time");
            return Err(AcceptError::Refused {
                addr,
                reason: RefusalReason::Timeout,
            });
        }
    };
    let connection_id = Uuid::new_v4();
    let machine = EdgeControl::new(
        exporter,
        connection_id,
        edge_name,
        started,
        settings.register_timeout,
        settings.limits,
    );
    let mut driver = Driver::new(machine, send, recv, transport.clone());
    loop {
        match driver.next().await {
            Step::Event(EdgeEvent::AuthRequired(claim)) => match auth.admit(addr) {
                Admission::Admit => {
                    let key = auth.verify_key(&claim);
                    driver.machine.authenticate(key.as_ref());
                }
                Admission::RateLimited => driver.machine.refuse_for(RefusalReason::RateLimited),
                Admission::Draining => driver.machine.refuse_for(RefusalReason::Draining),
            },
            Step::Event(EdgeEvent::Refused { reason, claim }) => {
                auth.refused(addr, claim.as_ref(), reason);
                // The authenticator logs (and rate-limits) refusals for operators; a flood
                // would make one info line here per attempt.
                debug!(remote = %addr, ?reason, "registration refused");
                // Give the answer a moment to arrive; the peer closes on reading it.
                driver.finish(REFUSAL_LINGER).await;
                refuse_close(b"registration refused");
                return Err(AcceptError::Refused { addr, reason });
            }
            Step::Event(EdgeEvent::Registered {
                claim,
                software_version,
                features,
            }) => {
                let shared = Shared::new(transport.clone(), settings.clone());
                let on_event = on_edge_event(&shared);
                let core = Connection {
                    shared: shared.clone(),
                };
                info!(remote = %addr, connection = %connection_id, "peer registered");
                return Ok(match claim {
                    Claim::Connector(claim) => {
                        let control = driver.spawn(on_event);
                        spawn_stream_refuser(transport);
                        EdgeRegistered::Connector(ConnectorLink {
                            core,
                            control,
                            flows: None,
                            claim,
                            connection_id,
                            software_version,
                            features,
                        })
                    }
                    Claim::Client(claim) => {
                        // A client opens one stream per flow: now that it is known, it gets
                        // the initial allowance, which its flow acceptor raises with use.
                        transport
                            .set_max_concurrent_bi_streams(transport.initial_bi_streams(&settings));
                        let control = driver.spawn(on_event);
                        let flows = spawn_acceptor(shared);
                        EdgeRegistered::Client(ClientLink {
                            core,
                            control,
                            flows: Some(Box::new(flows)),
                            claim,
                            connection_id,
                            software_version,
                            features,
                        })
                    }
                });
            }
            // Nothing else can come before registration.
            Step::Event(_) => {}
            Step::Ended(Ended::Violation(source)) => {
                transport.close(CloseCode::PROTOCOL_VIOLATION, b"bad control stream");
                return Err(AcceptError::Control { addr, source });
            }
            Step::Ended(_) => {
                return Err(AcceptError::Lost {
                    addr,
                    source: lost(&transport),
                })
            }
        }
    }
}

/// The registering side's steps, the same for connectors and clients: open the control
/// stream, send the machine's `register`, and wait for the answer.
async fn register_peer<M: Machine<Event = PeerEvent>, T: Transport>(
    transport: &T,
    machine: M,
    timeout: Duration,
) -> Result<(Driver<M, T>, Registered), ConnectError> {
    let (send, recv) = transport.open_bi().await?;
    let mut driver = Driver::new(machine, send, recv, transport.clone());
    let fail = |code: CloseCode, reason: &[u8]| transport.close(code, reason);
    loop {
        match driver.next().await {
            Step::Event(PeerEvent::Registered(r)) => return Ok((driver, r)),
            Step::Event(PeerEvent::Refused(e)) => {
                fail(CloseCode::REGISTRATION_REFUSED, b"registration refused");
                return Err(ConnectError::Refused(e));
            }
            Step::Event(PeerEvent::RegisterTimedOut) => {
                fail(CloseCode::NO_ERROR, b"registration timed out");
                return Err(ConnectError::Timeout(timeout));
            }
            // Nothing else can come before the answer.
            Step::Event(_) => {}
            Step::Ended(Ended::Violation(e)) => {
                fail(CloseCode::PROTOCOL_VIOLATION, b"bad control stream");
                return Err(ConnectError::Control(e));
            }
            Step::Ended(_) => return Err(ConnectError::Lost(lost(transport))),
        }
    }
}

/// Registers a connector connection over `transport` with a machine already holding its
/// signed `register`.
pub(crate) async fn register_connector<T: Transport>(
    transport: T,
    machine: ConnectorControl,
    settings: &TransportSettings,
) -> Result<ConnectorConnection<T>, ConnectError> {
    let (driver, registered) =
        register_peer(&transport, machine, settings.register_timeout).await?;
    let shared = Shared::new(transport, settings.clone());
    let control = driver.spawn(on_peer_event(&shared));
    let flows = spawn_acceptor(shared.clone());
    Ok(ConnectorConnection {
        core: Connection { shared },
        control,
        flows,
        registered,
    })
}

/// Registers a client connection over `transport`; see [`register_connector`].
pub(crate) async fn register_client<T: Transport>(
    transport: T,
    machine: ClientControl,
    settings: &TransportSettings,
) -> Result<ClientConnection<T>, ConnectError> {
    let (driver, registered) =
        register_peer(&transport, machine, settings.register_timeout).await?;
    let shared = Shared::new(transport.clone(), settings.clone());
    let control = driver.spawn(on_peer_event(&shared));
    spawn_stream_refuser(transport);
    Ok(ClientConnection {
        core: Connection { shared },
        control,
        registered,
    })
}
