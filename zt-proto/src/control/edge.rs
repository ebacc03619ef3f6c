//! The edge's control machine for one connection: reads the peer's `register`, asks its
//! owner for the claim's key, checks the proof in constant time, and answers; once the peer
//! is registered, it sends go-away, route pushes and pings, and reports unregister, posture
//! and pongs.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use uuid::Uuid;
use zt_creds::AuthKey;

use super::{frame_name, Codec, ControlError, REFUSED_MESSAGE};
use crate::auth::{verify_proof, Exporter, VerifyKey};
use crate::frame::{
    Claim, ControlFrame, EdgeList, GoAway, PostureReport, Register, RegisterError,
    RegisterErrorCode, Registered, RetryAdvice, RoutePush, Unregister, PROTOCOL_VERSION,
};
use crate::limits::Limits;

/// Why the edge refused a registration. Local only: on the wire, every authentication
/// failure looks the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalReason {
    /// No key is stored for the claim (unknown tunnel or device, or wrong account tag).
    UnknownIdentity,
    /// The proof does not match the stored key for this connection.
    BadProof,
    /// The peer asked for a protocol version the edge does not speak.
    UnsupportedVersion(u16),
    /// The peer did not register in time.
    Timeout,
    /// The first frame was not a register frame, or not a valid one.
    Malformed,
    /// The source address has too many recent failures.
    RateLimited,
    /// The edge is draining.
    Draining,
    /// The edge could not produce its answer (an edge name over 255 bytes).
    Internal,
}

/// What the edge's control machine reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EdgeEvent {
    /// A register frame arrived: look up the key for `claim` and call
    /// [`EdgeControl::authenticate`] (or [`EdgeControl::refuse`]).
    AuthRequired(Claim),
    /// The peer is registered.
    Registered {
        /// Who it is.
        claim: Claim,
        /// The software version it reported.
        software_version: String,
        /// The features it offered.
        features: Vec<String>,
    },
    /// The registration was refused; the refusal is queued for sending, after which the
    /// owner closes the connection.
    Refused {
        /// Why (for the audit log; the peer is not told).
        reason: RefusalReason,
        /// The claim, if the peer got as far as making one.
        claim: Option<Claim>,
    },
    /// The connector is draining.
    Unregister(Unregister),
    /// The client reported its posture.
    Posture(PostureReport),
    /// The peer answered our ping with this nonce.
    Pong(u64),
}

#[derive(Debug)]
enum EdgeState {
    AwaitingRegister,
    AwaitingKey(Box<Register>),
    Registered { is_client: bool },
    Closed,
}

impl EdgeState {
    fn name(&self) -> &'static str {
        match self {
            Self::AwaitingRegister => "awaiting register",
            Self::AwaitingKey(_) => "authenticating",
            Self::Registered { .. } => "registered",
            Self::Closed => "closed",
        }
    }
}

/// The edge's side of one connection's control stream.
#[derive(Debug)]
pub struct EdgeControl {
    codec: Codec,
    state: EdgeState,
    events: VecDeque<EdgeEvent>,
    exporter: Exporter,
    connection_id: Uuid,
    edge_name: String,
    deadline: Instant,
}

impl EdgeControl {
    /// A machine for a new connection whose TLS exporter value is `exporter`. The peer must
    /// register by `now + register_timeout`.
    pub fn new(
        exporter: Exporter,
        connection_id: Uuid,
        edge_name: impl Into<String>,
        now: Instant,
        register_timeout: Duration,
        limits: Limits,
    ) -> Self {
        Self {
            codec: Codec::new(limits),
            state: EdgeState::AwaitingRegister,
            events: VecDeque::new(),
            exporter,
            connection_id,
            edge_name: edge_name.into(),
            deadline: now + register_timeout,
        }
    }

    /// Feeds bytes read from the control stream.
    ///
    /// An error before registration has already queued the `malformed` refusal; after it, the
    /// owner closes the connection as a protocol violation.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<(), ControlError> {
        self.codec.input.extend_from_slice(data);
        loop {
            let frame = match self.codec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => {
                    if matches!(self.state, EdgeState::AwaitingRegister) {
                        self.refuse_with(RefusalReason::Malformed, None);
                    }
                    return Err(e.into());
                }
            };
            self.handle_frame(frame)?;
        }
    }

    fn handle_frame(&mut self, frame: ControlFrame) -> Result<(), ControlError> {
        let unexpected = |state: &EdgeState, f: &ControlFrame| ControlError::Unexpected {
            frame: frame_name(f),
            state: state.name(),
        };
        match (&self.state, frame) {
            (EdgeState::AwaitingRegister, ControlFrame::Register(r)) => {
                if r.protocol_version != PROTOCOL_VERSION {
                    self.refuse_with(
                        RefusalReason::UnsupportedVersion(r.protocol_version),
                        Some(r.claim),
                    );
                    return Ok(());
                }
                self.events
                    .push_back(EdgeEvent::AuthRequired(r.claim.clone()));
                self.state = EdgeState::AwaitingKey(Box::new(r));
            }
            (EdgeState::AwaitingRegister, f) => {
                let err = unexpected(&self.state, &f);
                self.refuse_with(RefusalReason::Malformed, None);
                return Err(err);
            }
            (EdgeState::Registered { .. }, ControlFrame::Ping(n)) => {
                self.codec.send(&ControlFrame::Pong(n))?;
            }
            (EdgeState::Registered { .. }, ControlFrame::Pong(n)) => {
                self.events.push_back(EdgeEvent::Pong(n));
            }
            (EdgeState::Registered { is_client: false }, ControlFrame::Unregister(u)) => {
                self.events.push_back(EdgeEvent::Unregister(u));
            }
            (EdgeState::Registered { is_client: true }, ControlFrame::PostureReport(p)) => {
                self.events.push_back(EdgeEvent::Posture(p));
            }
            (state, f) => return Err(unexpected(state, &f)),
        }
        Ok(())
    }

    /// Answers an [`EdgeEvent::AuthRequired`] with the key stored for the claim, or `None`
    /// if there is none. The proof is checked in constant time; an unknown claim costs the
    /// same work as a wrong proof and gets the same answer on the wire.
    pub fn authenticate(&mut self, key: Option<&VerifyKey>) {
        let EdgeState::AwaitingKey(register) =
            std::mem::replace(&mut self.state, EdgeState::Closed)
        else {
            return;
        };
        // Verify against a fixed dummy key when the claim is unknown, so both failures take
        // the same time.
        let dummy = VerifyKey::Shared(AuthKey::from_bytes([0u8; 32]));
        let ok = verify_proof(key.unwrap_or(&dummy), &self.exporter, &register);
        let claim = register.claim.clone();
        match (key, ok) {
            (Some(_), true) => {
                let answer = ControlFrame::Registered(Registered {
                    connection_id: self.connection_id,
                    edge_name: self.edge_name.clone(),
                    protocol_version: PROTOCOL_VERSION,
                });
                if self.codec.send(&answer).is_err() {
                    // Only an edge name over 255 bytes gets here: a configuration error.
                    self.refuse_with(RefusalReason::Internal, Some(claim));
                    return;
                }
                self.state = EdgeState::Registered {
                    is_client: matches!(claim, Claim::Client(_)),
                };
                let Register {
                    software_version,
                    features,
                    ..
                } = *register;
                self.events.push_back(EdgeEvent::Registered {
                    claim,
                    software_version,
                    features,
                });
            }
            (None, _) => self.refuse_with(RefusalReason::UnknownIdentity, Some(claim)),
            (Some(_), false) => self.refuse_with(RefusalReason::BadProof, Some(claim)),
        }
    }

    fn refuse_with(&mut self, reason: RefusalReason, claim: Option<Claim>) {
        let (code, retry, message) = match reason {
            RefusalReason::UnknownIdentity | RefusalReason::BadProof => (
                RegisterErrorCode::Unauthorized,
                RetryAdvice::Never,
                REFUSED_MESSAGE,
            ),
            RefusalReason::UnsupportedVersion(_) => (
                RegisterErrorCode::UnsupportedVersion,
                RetryAdvice::Never,
                "unsupported protocol version: this edge speaks version 1",
            ),
            RefusalReason::Timeout => (
                RegisterErrorCode::Timeout,
                RetryAdvice::Backoff,
                "no register frame in time",
            ),
            RefusalReason::Malformed => (
                RegisterErrorCode::Malformed,
                RetryAdvice::Never,
                "the first control frame must be a valid register frame",
            ),
            RefusalReason::RateLimited => (
                RegisterErrorCode::RateLimited,
                RetryAdvice::After(Duration::from_secs(10)),
                "too many failed registrations from this address",
            ),
            RefusalReason::Draining => (
                RegisterErrorCode::Draining,
                RetryAdvice::Backoff,
                "edge is draining",
            ),
            RefusalReason::Internal => (
                RegisterErrorCode::Internal,
                RetryAdvice::Backoff,
                "edge failed to answer",
            ),
        };
        self.queue_refusal(code, retry, message);
        self.events.push_back(EdgeEvent::Refused { reason, claim });
    }

    fn queue_refusal(&mut self, code: RegisterErrorCode, retry: RetryAdvice, message: &str) {
        self.state = EdgeState::Closed;
        let frame = ControlFrame::RegisterError(RegisterError {
            code,
            retry,
            message: message.to_owned(),
        });
        // The texts are ours and short; encoding cannot fail. If it ever did, the peer
        // would see the connection close without an answer, which is still a refusal.
        let _ = self.codec.send(&frame);
    }

    /// Refuses the registration for a reason outside the machine (rate limit, draining).
    /// Does nothing once the peer is registered.
    pub fn refuse(&mut self, code: RegisterErrorCode, retry: RetryAdvice, message: &str) {
        if matches!(
            self.state,
            EdgeState::AwaitingRegister | EdgeState::AwaitingKey(_)
        ) {
            self.queue_refusal(code, retry, message);
        }
    }

    /// Refuses for a reason the edge determined ([`RefusalReason::RateLimited`] or
    /// [`RefusalReason::Draining`]) with the standard answer, and reports it as an event.
    pub fn refuse_for(&mut self, reason: RefusalReason) {
        let claim = match &self.state {
            EdgeState::AwaitingRegister => None,
            EdgeState::AwaitingKey(r) => Some(r.claim.clone()),
            _ => return,
        };
        self.refuse_with(reason, claim);
    }

    /// Tells the machine the time: a peer that has not registered by the deadline is
    /// refused.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, EdgeState::AwaitingRegister) && now >= self.deadline {
            self.refuse_with(RefusalReason::Timeout, None);
        }
    }

    /// When [`EdgeControl::handle_timeout`] next needs calling, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        matches!(self.state, EdgeState::AwaitingRegister).then_some(self.deadline)
    }

    /// Bytes to write to the control stream, if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.codec.take()
    }

    /// The next event for the owner, if any.
    pub fn poll_event(&mut self) -> Option<EdgeEvent> {
        self.events.pop_front()
    }

    /// Whether the peer is registered.
    pub fn is_registered(&self) -> bool {
        matches!(self.state, EdgeState::Registered { .. })
    }

    /// Whether the registration was refused (flush the answer, then close).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, EdgeState::Closed)
    }

    fn send_registered(&mut self, f: ControlFrame, clients_only: bool) -> Result<(), ControlError> {
        match self.state {
            EdgeState::Registered { is_client } if is_client || !clients_only => {
                self.codec.send(&f)?;
                Ok(())
            }
            EdgeState::Registered { .. } => Err(ControlError::Unexpected {
                frame: frame_name(&f),
                state: "serving a connector",
            }),
            ref s => Err(ControlError::NotRegistered { state: s.name() }),
        }
    }

    /// Tells the peer the edge is draining.
    pub fn go_away(&mut self, drain: Duration, reason: &str) -> Result<(), ControlError> {
        self.send_registered(
            ControlFrame::GoAway(GoAway {
                drain,
                reason: reason.to_owned(),
            }),
            false,
        )
    }

    /// Sends a client the routes it should capture (clients only).
    pub fn push_routes(&mut self, push: RoutePush) -> Result<(), ControlError> {
        self.send_registered(ControlFrame::RoutePush(push), true)
    }

    /// Sends the peer the live edges' addresses (connectors and clients that offered
    /// [`EDGE_LIST_FEATURE`](crate::EDGE_LIST_FEATURE) only; the caller checks).
    pub fn push_edges(&mut self, list: EdgeList) -> Result<(), ControlError> {
        self.send_registered(ControlFrame::EdgeList(list), false)
    }

    /// Sends a ping; the answer comes back as [`EdgeEvent::Pong`].
    pub fn ping(&mut self, nonce: u64) -> Result<(), ControlError> {
        self.send_registered(ControlFrame::Ping(nonce), false)
    }
}
