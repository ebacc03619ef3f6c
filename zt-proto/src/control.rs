//! The control-stream state machines, free of I/O and clocks.
//!
//! Each machine takes bytes read from the control stream ([`handle_input`]) and the current
//! time ([`handle_timeout`]), and hands out bytes to write ([`poll_transmit`]) and events for
//! its owner ([`poll_event`]). The owner drives it over whatever carries the bytes: the
//! transport over a QUIC stream, the tests over a `Vec`.
//!
//! Order on the stream: the peer's `register` comes first; the edge answers `registered` or
//! `register_error` (and then closes). After registration the frames are independent
//! messages; a frame that makes no sense in the current state is a protocol violation.
//!
//! [`handle_input`]: EdgeControl::handle_input
//! [`handle_timeout`]: EdgeControl::handle_timeout
//! [`poll_transmit`]: EdgeControl::poll_transmit
//! [`poll_event`]: EdgeControl::poll_event

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use uuid::Uuid;
use zt_creds::AuthKey;

use crate::auth::{sign_register, verify_proof, Exporter};
use crate::error::{DecodeError, EncodeError};
use crate::frame::{
    Claim, ClientClaim, ConnectorClaim, ControlFrame, GoAway, PostureReport, Register,
    RegisterError, RegisterErrorCode, Registered, RetryAdvice, RoutePush, Unregister, PROOF_LEN,
    PROTOCOL_VERSION,
};
use crate::limits::Limits;

/// The one message every refused registration gets, whatever was wrong.
pub const REFUSED_MESSAGE: &str = "registration refused: invalid credentials";

/// The control stream broke the protocol; the connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The bytes are not a valid frame.
    #[error("invalid control frame: {0}")]
    Decode(#[from] DecodeError),
    /// A valid frame arrived where the protocol does not allow it.
    #[error("unexpected {frame} frame while {state}")]
    Unexpected {
        /// The frame's name.
        frame: &'static str,
        /// What the machine was doing.
        state: &'static str,
    },
    /// A frame we were asked to send breaks a limit.
    #[error("cannot send control frame: {0}")]
    Encode(#[from] EncodeError),
    /// The operation needs a registered connection.
    #[error("the connection is not registered (it is {state})")]
    NotRegistered {
        /// What the machine is doing instead.
        state: &'static str,
    },
}

fn frame_name(f: &ControlFrame) -> &'static str {
    match f {
        ControlFrame::Register(_) => "register",
        ControlFrame::Registered(_) => "registered",
        ControlFrame::RegisterError(_) => "register_error",
        ControlFrame::GoAway(_) => "go_away",
        ControlFrame::Unregister(_) => "unregister",
        ControlFrame::Ping(_) => "ping",
        ControlFrame::Pong(_) => "pong",
        ControlFrame::RoutePush(_) => "route_push",
        ControlFrame::PostureReport(_) => "posture_report",
        _ => "extension",
    }
}

/// Buffers shared by every machine: undecoded input and unsent output.
#[derive(Debug)]
struct Codec {
    input: BytesMut,
    output: BytesMut,
    limits: Limits,
}

impl Codec {
    fn new(limits: Limits) -> Self {
        Self {
            input: BytesMut::new(),
            output: BytesMut::new(),
            limits,
        }
    }

    fn next_frame(&mut self) -> Result<Option<ControlFrame>, DecodeError> {
        loop {
            match ControlFrame::decode_with(&mut self.input, &self.limits)? {
                // Extensions are for later versions; this one skips them.
                Some(ControlFrame::Extension { .. }) => continue,
                other => return Ok(other),
            }
        }
    }

    fn send(&mut self, f: &ControlFrame) -> Result<(), EncodeError> {
        f.encode_with(&mut self.output, &self.limits)
    }

    fn take(&mut self) -> Option<Bytes> {
        if self.output.is_empty() {
            None
        } else {
            Some(self.output.split().freeze())
        }
    }
}

// ---------------------------------------------------------------------------------------
// Connector and client side
// ---------------------------------------------------------------------------------------

/// What a connector's or client's control machine reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerEvent {
    /// The edge accepted the registration.
    Registered(Registered),
    /// The edge refused it; the connection is over.
    Refused(RegisterError),
    /// The edge did not answer the registration in time; the connection is over.
    RegisterTimedOut,
    /// The edge is draining: connect elsewhere, this connection ends after the drain time.
    GoAway(GoAway),
    /// New routes to capture (clients only).
    RoutesPushed(RoutePush),
    /// The edge answered our ping with this nonce.
    Pong(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerState {
    AwaitingAnswer,
    Registered,
    Closed,
}

impl PeerState {
    fn name(self) -> &'static str {
        match self {
            Self::AwaitingAnswer => "awaiting the registration answer",
            Self::Registered => "registered",
            Self::Closed => "closed",
        }
    }
}

#[derive(Debug)]
struct PeerCore {
    codec: Codec,
    state: PeerState,
    deadline: Instant,
    events: VecDeque<PeerEvent>,
    is_client: bool,
}

impl PeerCore {
    #[allow(clippy::too_many_arguments)]
    fn new(
        claim: Claim,
        software_version: String,
        features: Vec<String>,
        key: &AuthKey,
        exporter: &Exporter,
        now: Instant,
        register_timeout: Duration,
        limits: Limits,
    ) -> Result<Self, EncodeError> {
        let is_client = matches!(claim, Claim::Client(_));
        let mut register = Register {
            protocol_version: PROTOCOL_VERSION,
            claim,
            software_version,
            features,
            proof: [0; PROOF_LEN],
        };
        sign_register(&mut register, key, exporter)?;
        let mut codec = Codec::new(limits);
        codec.send(&ControlFrame::Register(register))?;
        Ok(Self {
            codec,
            state: PeerState::AwaitingAnswer,
            deadline: now + register_timeout,
            events: VecDeque::new(),
            is_client,
        })
    }

    fn handle_input(&mut self, data: &[u8]) -> Result<(), ControlError> {
        self.codec.input.extend_from_slice(data);
        while let Some(frame) = self.codec.next_frame()? {
            self.handle_frame(frame)?;
        }
        Ok(())
    }

    fn unexpected(&self, f: &ControlFrame) -> ControlError {
        ControlError::Unexpected {
            frame: frame_name(f),
            state: self.state.name(),
        }
    }

    fn handle_frame(&mut self, frame: ControlFrame) -> Result<(), ControlError> {
        match (self.state, frame) {
            (PeerState::AwaitingAnswer, ControlFrame::Registered(r)) => {
                self.state = PeerState::Registered;
                self.events.push_back(PeerEvent::Registered(r));
            }
            (PeerState::AwaitingAnswer, ControlFrame::RegisterError(e)) => {
                self.state = PeerState::Closed;
                self.events.push_back(PeerEvent::Refused(e));
            }
            (PeerState::Registered, ControlFrame::GoAway(g)) => {
                self.events.push_back(PeerEvent::GoAway(g));
            }
            (PeerState::Registered, ControlFrame::Ping(n)) => {
                self.codec.send(&ControlFrame::Pong(n))?;
            }
            (PeerState::Registered, ControlFrame::Pong(n)) => {
                self.events.push_back(PeerEvent::Pong(n));
            }
            (PeerState::Registered, ControlFrame::RoutePush(p)) if self.is_client => {
                self.events.push_back(PeerEvent::RoutesPushed(p));
            }
            (_, f) => return Err(self.unexpected(&f)),
        }
        Ok(())
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.state == PeerState::AwaitingAnswer && now >= self.deadline {
            self.state = PeerState::Closed;
            self.events.push_back(PeerEvent::RegisterTimedOut);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (self.state == PeerState::AwaitingAnswer).then_some(self.deadline)
    }

    fn send_registered(&mut self, f: ControlFrame) -> Result<(), ControlError> {
        if self.state != PeerState::Registered {
            return Err(ControlError::NotRegistered {
                state: self.state.name(),
            });
        }
        self.codec.send(&f)?;
        Ok(())
    }
}

macro_rules! peer_common {
    () => {
        /// Feeds bytes read from the control stream.
        pub fn handle_input(&mut self, data: &[u8]) -> Result<(), ControlError> {
            self.0.handle_input(data)
        }

        /// Tells the machine the time; a registration unanswered by its deadline ends.
        pub fn handle_timeout(&mut self, now: Instant) {
            self.0.handle_timeout(now)
        }

        /// When [`Self::handle_timeout`] next needs calling, if ever.
        pub fn poll_timeout(&self) -> Option<Instant> {
            self.0.poll_timeout()
        }

        /// Bytes to write to the control stream, if any.
        pub fn poll_transmit(&mut self) -> Option<Bytes> {
            self.0.codec.take()
        }

        /// The next event for the owner, if any.
        pub fn poll_event(&mut self) -> Option<PeerEvent> {
            self.0.events.pop_front()
        }

        /// Whether the edge accepted the registration (and nothing ended it since).
        pub fn is_registered(&self) -> bool {
            self.0.state == PeerState::Registered
        }

        /// Sends a ping; the edge's pong comes back as [`PeerEvent::Pong`].
        pub fn ping(&mut self, nonce: u64) -> Result<(), ControlError> {
            self.0.send_registered(ControlFrame::Ping(nonce))
        }
    };
}

/// A connector's control stream: registers a tunnel connection, then handles go-away and
/// its own unregister.
#[derive(Debug)]
pub struct ConnectorControl(PeerCore);

impl ConnectorControl {
    /// Starts a registration: the signed `register` frame is ready in
    /// [`ConnectorControl::poll_transmit`] at once. `exporter` is this connection's TLS
    /// exporter value (see [`crate::EXPORTER_LABEL`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        claim: ConnectorClaim,
        software_version: impl Into<String>,
        features: Vec<String>,
        key: &AuthKey,
        exporter: &Exporter,
        now: Instant,
        register_timeout: Duration,
        limits: Limits,
    ) -> Result<Self, EncodeError> {
        PeerCore::new(
            Claim::Connector(claim),
            software_version.into(),
            features,
            key,
            exporter,
            now,
            register_timeout,
            limits,
        )
        .map(Self)
    }

    peer_common!();

    /// Tells the edge this connector is draining: no new flows; in-flight ones have `grace`.
    pub fn unregister(&mut self, grace: Duration) -> Result<(), ControlError> {
        self.0
            .send_registered(ControlFrame::Unregister(Unregister { grace }))
    }
}

/// A client's control stream: registers a device, then receives route pushes and sends
/// posture reports.
#[derive(Debug)]
pub struct ClientControl(PeerCore);

impl ClientControl {
    /// Starts a registration; see [`ConnectorControl::new`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        claim: ClientClaim,
        software_version: impl Into<String>,
        features: Vec<String>,
        key: &AuthKey,
        exporter: &Exporter,
        now: Instant,
        register_timeout: Duration,
        limits: Limits,
    ) -> Result<Self, EncodeError> {
        PeerCore::new(
            Claim::Client(claim),
            software_version.into(),
            features,
            key,
            exporter,
            now,
            register_timeout,
            limits,
        )
        .map(Self)
    }

    peer_common!();

    /// Sends the device's posture.
    pub fn report_posture(&mut self, report: PostureReport) -> Result<(), ControlError> {
        self.0.send_registered(ControlFrame::PostureReport(report))
    }
}

// ---------------------------------------------------------------------------------------
// Edge side
// ---------------------------------------------------------------------------------------

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
    pub fn authenticate(&mut self, key: Option<&AuthKey>) {
        let EdgeState::AwaitingKey(register) =
            std::mem::replace(&mut self.state, EdgeState::Closed)
        else {
            return;
        };
        // Verify against a fixed dummy key when the claim is unknown, so both failures take
        // the same time.
        let dummy = AuthKey::from_bytes([0u8; 32]);
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

    /// Sends a ping; the answer comes back as [`EdgeEvent::Pong`].
    pub fn ping(&mut self, nonce: u64) -> Result<(), ControlError> {
        self.send_registered(ControlFrame::Ping(nonce), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_OFFSET: Duration = Duration::from_secs(5);

    fn connector_claim() -> ConnectorClaim {
        ConnectorClaim {
            tunnel_id: Uuid::from_u128(0x6ff4_2ae2_765d_4adf_8112_31c5_5c15_51ef),
            account_tag: "5ab4e9dfbd435d24068829fda0077963".into(),
            connector_id: Uuid::from_u128(7),
            conn_index: 0,
        }
    }

    fn key() -> AuthKey {
        AuthKey::from_bytes([0x42; 32])
    }

    struct Pair {
        peer: ConnectorControl,
        edge: EdgeControl,
    }

    impl Pair {
        fn new(peer_exporter: Exporter, edge_exporter: Exporter, now: Instant) -> Self {
            let peer = ConnectorControl::new(
                connector_claim(),
                "zt test",
                vec!["half-close".into()],
                &key(),
                &peer_exporter,
                now,
                NOW_OFFSET,
                Limits::default(),
            )
            .unwrap();
            let edge = EdgeControl::new(
                edge_exporter,
                Uuid::from_u128(99),
                "edge-test",
                now,
                NOW_OFFSET,
                Limits::default(),
            );
            Self { peer, edge }
        }

        /// Moves every pending byte both ways, one byte at a time, so every decoder sees
        /// every possible split of a frame.
        fn pump(&mut self) {
            loop {
                let mut moved = false;
                while let Some(b) = self.peer.poll_transmit() {
                    for byte in b.iter() {
                        self.edge.handle_input(&[*byte]).unwrap();
                    }
                    moved = true;
                }
                while let Some(b) = self.edge.poll_transmit() {
                    for byte in b.iter() {
                        self.peer.handle_input(&[*byte]).unwrap();
                    }
                    moved = true;
                }
                if !moved {
                    return;
                }
            }
        }
    }

    #[test]
    fn registration_is_accepted_with_the_right_key_and_exporter() {
        let now = Instant::now();
        let mut p = Pair::new([1; 32], [1; 32], now);
        p.pump();
        assert_eq!(
            p.edge.poll_event(),
            Some(EdgeEvent::AuthRequired(Claim::Connector(connector_claim())))
        );
        p.edge.authenticate(Some(&key()));
        assert!(matches!(
            p.edge.poll_event(),
            Some(EdgeEvent::Registered { claim: Claim::Connector(c), ref software_version, ref features })
                if c == connector_claim() && software_version == "zt test" && features == &["half-close".to_owned()]
        ));
        p.pump();
        match p.peer.poll_event() {
            Some(PeerEvent::Registered(r)) => {
                assert_eq!(r.connection_id, Uuid::from_u128(99));
                assert_eq!(r.edge_name, "edge-test");
            }
            other => panic!("expected registered, got {other:?}"),
        }
        assert!(p.peer.is_registered() && p.edge.is_registered());
        assert_eq!(p.peer.poll_timeout(), None);
        assert_eq!(p.edge.poll_timeout(), None);
    }

    fn refusal_bytes(p: &mut Pair) -> Bytes {
        let b = p.edge.poll_transmit().unwrap();
        p.peer.handle_input(&b).unwrap();
        b
    }

    #[test]
    fn wrong_key_unknown_claim_and_foreign_exporter_get_identical_answers() {
        let now = Instant::now();
        // Wrong key.
        let mut a = Pair::new([1; 32], [1; 32], now);
        a.pump();
        a.edge.poll_event();
        a.edge.authenticate(Some(&AuthKey::from_bytes([0x43; 32])));
        assert_eq!(
            a.edge.poll_event(),
            Some(EdgeEvent::Refused {
                reason: RefusalReason::BadProof,
                claim: Some(Claim::Connector(connector_claim()))
            })
        );
        // No stored key for the claim.
        let mut b = Pair::new([1; 32], [1; 32], now);
        b.pump();
        b.edge.poll_event();
        b.edge.authenticate(None);
        assert!(matches!(
            b.edge.poll_event(),
            Some(EdgeEvent::Refused {
                reason: RefusalReason::UnknownIdentity,
                ..
            })
        ));
        // A proof made for another connection (different exporter).
        let mut c = Pair::new([2; 32], [1; 32], now);
        c.pump();
        c.edge.poll_event();
        c.edge.authenticate(Some(&key()));
        assert!(matches!(
            c.edge.poll_event(),
            Some(EdgeEvent::Refused {
                reason: RefusalReason::BadProof,
                ..
            })
        ));
        let (ra, rb, rc) = (
            refusal_bytes(&mut a),
            refusal_bytes(&mut b),
            refusal_bytes(&mut c),
        );
        assert_eq!(ra, rb);
        assert_eq!(ra, rc);
        for p in [&mut a, &mut b, &mut c] {
            assert!(p.edge.is_closed());
            match p.peer.poll_event() {
                Some(PeerEvent::Refused(e)) => {
                    assert_eq!(e.code, RegisterErrorCode::Unauthorized);
                    assert_eq!(e.retry, RetryAdvice::Never);
                    assert_eq!(e.message, REFUSED_MESSAGE);
                }
                other => panic!("expected a refusal, got {other:?}"),
            }
            assert!(!p.peer.is_registered());
        }
    }

    #[test]
    fn an_edited_claim_under_a_valid_proof_is_refused() {
        let now = Instant::now();
        let mut p = Pair::new([1; 32], [1; 32], now);
        let mut bytes = BytesMut::from(&p.peer.poll_transmit().unwrap()[..]);
        // Flip the connection index, the byte just before the software version.
        let Ok(Some(ControlFrame::Register(mut r))) = ControlFrame::decode(&mut bytes.clone())
        else {
            panic!("not a register frame")
        };
        if let Claim::Connector(c) = &mut r.claim {
            c.conn_index = 3;
        }
        bytes.clear();
        ControlFrame::Register(r).encode(&mut bytes).unwrap();
        p.edge.handle_input(&bytes).unwrap();
        p.edge.poll_event();
        p.edge.authenticate(Some(&key()));
        assert!(matches!(
            p.edge.poll_event(),
            Some(EdgeEvent::Refused {
                reason: RefusalReason::BadProof,
                ..
            })
        ));
    }

    #[test]
    fn version_mismatch_is_refused_without_asking_for_a_key() {
        let now = Instant::now();
        let mut p = Pair::new([1; 32], [1; 32], now);
        let mut wire = BytesMut::from(&p.peer.poll_transmit().unwrap()[..]);
        // protocol_version is the first payload field, right after the 5-byte header.
        wire[5..7].copy_from_slice(&2u16.to_be_bytes());
        p.edge.handle_input(&wire).unwrap();
        assert!(matches!(
            p.edge.poll_event(),
            Some(EdgeEvent::Refused {
                reason: RefusalReason::UnsupportedVersion(2),
                ..
            })
        ));
        p.pump();
        match p.peer.poll_event() {
            Some(PeerEvent::Refused(e)) => {
                assert_eq!(e.code, RegisterErrorCode::UnsupportedVersion);
                assert_eq!(e.retry, RetryAdvice::Never);
            }
            other => panic!("expected refusal, got {other:?}"),
        }
    }

    #[test]
    fn rate_limit_and_draining_refusals_carry_their_retry_advice() {
        let now = Instant::now();
        for (reason, code, retry) in [
            (
                RefusalReason::RateLimited,
                RegisterErrorCode::RateLimited,
                RetryAdvice::After(Duration::from_secs(10)),
            ),
            (
                RefusalReason::Draining,
                RegisterErrorCode::Draining,
                RetryAdvice::Backoff,
            ),
        ] {
            let mut p = Pair::new([1; 32], [1; 32], now);
            p.pump();
            assert!(matches!(
                p.edge.poll_event(),
                Some(EdgeEvent::AuthRequired(_))
            ));
            p.edge.refuse_for(reason);
            assert!(
                matches!(p.edge.poll_event(), Some(EdgeEvent::Refused { reason: r, claim: Some(_) }) if r == reason)
            );
            p.pump();
            assert!(
                matches!(p.peer.poll_event(), Some(PeerEvent::Refused(e)) if e.code == code && e.retry == retry)
            );
        }
    }

    #[test]
    fn an_unencodable_answer_becomes_an_internal_refusal() {
        let now = Instant::now();
        let mut p = Pair::new([1; 32], [1; 32], now);
        p.edge = EdgeControl::new(
            [1; 32],
            Uuid::nil(),
            "e".repeat(300),
            now,
            NOW_OFFSET,
            Limits::default(),
        );
        p.pump();
        p.edge.poll_event();
        p.edge.authenticate(Some(&key()));
        assert!(matches!(
            p.edge.poll_event(),
            Some(EdgeEvent::Refused {
                reason: RefusalReason::Internal,
                claim: Some(_)
            })
        ));
        p.pump();
        assert!(matches!(
            p.peer.poll_event(),
            Some(PeerEvent::Refused(e)) if e.code == RegisterErrorCode::Internal && e.retry == RetryAdvice::Backoff
        ));
    }

    #[test]
    fn silence_times_out_on_both_sides() {
        let now = Instant::now();
        let mut p = Pair::new([1; 32], [1; 32], now);
        let _lost = p.peer.poll_transmit();
        assert_eq!(p.edge.poll_timeout(), Some(now + NOW_OFFSET));
        p.edge
            .handle_timeout(now + NOW_OFFSET - Duration::from_millis(1));
        assert_eq!(p.edge.poll_event(), None);
        p.edge.handle_timeout(now + NOW_OFFSET);
        assert!(matches!(
            p.edge.poll_event(),
            Some(EdgeEvent::Refused {
                reason: RefusalReason::Timeout,
                claim: None
            })
        ));
        p.peer.handle_timeout(now + NOW_OFFSET);
        assert_eq!(p.peer.poll_event(), Some(PeerEvent::RegisterTimedOut));
    }

    #[test]
    fn a_first_frame_other_than_register_is_malformed() {
        let now = Instant::now();
        let mut edge = EdgeControl::new(
            [1; 32],
            Uuid::nil(),
            "e",
            now,
            NOW_OFFSET,
            Limits::default(),
        );
        let mut ping = BytesMut::new();
        ControlFrame::Ping(1).encode(&mut ping).unwrap();
        assert!(matches!(
            edge.handle_input(&ping),
            Err(ControlError::Unexpected { frame: "ping", .. })
        ));
        assert!(matches!(
            edge.poll_event(),
            Some(EdgeEvent::Refused {
                reason: RefusalReason::Malformed,
                ..
            })
        ));
        let mut out = edge.poll_transmit().unwrap();
        assert!(matches!(
            ControlFrame::decode(&mut out),
            Ok(Some(ControlFrame::RegisterError(RegisterError {
                code: RegisterErrorCode::Malformed,
                ..
            })))
        ));
    }

    fn registered_pair(client: bool) -> (Box<dyn PeerLike>, EdgeControl) {
        let now = Instant::now();
        let mut edge = EdgeControl::new(
            [1; 32],
            Uuid::nil(),
            "e",
            now,
            NOW_OFFSET,
            Limits::default(),
        );
        let mut peer: Box<dyn PeerLike> = if client {
            Box::new(
                ClientControl::new(
                    ClientClaim {
                        device_id: Uuid::from_u128(5),
                        vnet: String::new(),
                    },
                    "zt",
                    vec![],
                    &key(),
                    &[1; 32],
                    now,
                    NOW_OFFSET,
                    Limits::default(),
                )
                .unwrap(),
            )
        } else {
            Box::new(
                ConnectorControl::new(
                    connector_claim(),
                    "zt",
                    vec![],
                    &key(),
                    &[1; 32],
                    now,
                    NOW_OFFSET,
                    Limits::default(),
                )
                .unwrap(),
            )
        };
        edge.handle_input(&peer.transmit().unwrap()).unwrap();
        edge.poll_event();
        edge.authenticate(Some(&key()));
        edge.poll_event();
        peer.input(&edge.poll_transmit().unwrap()).unwrap();
        assert!(matches!(peer.event(), Some(PeerEvent::Registered(_))));
        (peer, edge)
    }

    trait PeerLike {
        fn transmit(&mut self) -> Option<Bytes>;
        fn input(&mut self, b: &[u8]) -> Result<(), ControlError>;
        fn event(&mut self) -> Option<PeerEvent>;
        fn ping(&mut self, n: u64) -> Result<(), ControlError>;
    }
    impl PeerLike for ConnectorControl {
        fn transmit(&mut self) -> Option<Bytes> {
            self.poll_transmit()
        }
        fn input(&mut self, b: &[u8]) -> Result<(), ControlError> {
            self.handle_input(b)
        }
        fn event(&mut self) -> Option<PeerEvent> {
            self.poll_event()
        }
        fn ping(&mut self, n: u64) -> Result<(), ControlError> {
            ConnectorControl::ping(self, n)
        }
    }
    impl PeerLike for ClientControl {
        fn transmit(&mut self) -> Option<Bytes> {
            self.poll_transmit()
        }
        fn input(&mut self, b: &[u8]) -> Result<(), ControlError> {
            self.handle_input(b)
        }
        fn event(&mut self) -> Option<PeerEvent> {
            self.poll_event()
        }
        fn ping(&mut self, n: u64) -> Result<(), ControlError> {
            ClientControl::ping(self, n)
        }
    }

    #[test]
    fn go_away_and_pings_reach_the_other_side() {
        for client in [false, true] {
            let (mut peer, mut edge) = registered_pair(client);
            edge.go_away(Duration::from_secs(3), "restart").unwrap();
            edge.ping(11).unwrap();
            peer.input(&edge.poll_transmit().unwrap()).unwrap();
            assert_eq!(
                peer.event(),
                Some(PeerEvent::GoAway(GoAway {
                    drain: Duration::from_secs(3),
                    reason: "restart".into()
                }))
            );
            // The peer answered the edge's ping by itself.
            edge.handle_input(&peer.transmit().unwrap()).unwrap();
            assert_eq!(edge.poll_event(), Some(EdgeEvent::Pong(11)));
            peer.ping(12).unwrap();
            edge.handle_input(&peer.transmit().unwrap()).unwrap();
            peer.input(&edge.poll_transmit().unwrap()).unwrap();
            assert_eq!(peer.event(), Some(PeerEvent::Pong(12)));
        }
    }

    #[test]
    fn unregister_routes_and_posture_go_only_where_they_belong() {
        let now = Instant::now();
        let (_, mut edge) = registered_pair(false);
        assert!(matches!(
            edge.push_routes(RoutePush {
                generation: 1,
                vnet: String::new(),
                routes: vec![]
            }),
            Err(ControlError::Unexpected { .. })
        ));
        let mut conn = ConnectorControl::new(
            connector_claim(),
            "zt",
            vec![],
            &key(),
            &[1; 32],
            now,
            NOW_OFFSET,
            Limits::default(),
        )
        .unwrap();
        assert!(matches!(
            conn.unregister(Duration::from_secs(1)),
            Err(ControlError::NotRegistered { .. })
        ));

        let (mut client, mut edge) = registered_pair(true);
        let push = RoutePush {
            generation: 4,
            vnet: "default".into(),
            routes: vec!["198.51.100.0/24".parse().unwrap()],
        };
        edge.push_routes(push.clone()).unwrap();
        client.input(&edge.poll_transmit().unwrap()).unwrap();
        assert_eq!(client.event(), Some(PeerEvent::RoutesPushed(push)));
        // A client may not unregister: the edge treats it as a violation.
        let mut unreg = BytesMut::new();
        ControlFrame::Unregister(Unregister {
            grace: Duration::ZERO,
        })
        .encode(&mut unreg)
        .unwrap();
        assert!(matches!(
            edge.handle_input(&unreg),
            Err(ControlError::Unexpected {
                frame: "unregister",
                ..
            })
        ));
    }

    #[test]
    fn connector_unregister_and_client_posture_arrive_as_events() {
        let now = Instant::now();
        let mut edge = EdgeControl::new(
            [1; 32],
            Uuid::nil(),
            "e",
            now,
            NOW_OFFSET,
            Limits::default(),
        );
        let mut conn = ConnectorControl::new(
            connector_claim(),
            "zt",
            vec![],
            &key(),
            &[1; 32],
            now,
            NOW_OFFSET,
            Limits::default(),
        )
        .unwrap();
        edge.handle_input(&conn.poll_transmit().unwrap()).unwrap();
        edge.poll_event();
        edge.authenticate(Some(&key()));
        edge.poll_event();
        conn.handle_input(&edge.poll_transmit().unwrap()).unwrap();
        conn.unregister(Duration::from_secs(30)).unwrap();
        edge.handle_input(&conn.poll_transmit().unwrap()).unwrap();
        assert_eq!(
            edge.poll_event(),
            Some(EdgeEvent::Unregister(Unregister {
                grace: Duration::from_secs(30)
            }))
        );

        let mut edge = EdgeControl::new(
            [1; 32],
            Uuid::nil(),
            "e",
            now,
            NOW_OFFSET,
            Limits::default(),
        );
        let mut client = ClientControl::new(
            ClientClaim {
                device_id: Uuid::from_u128(5),
                vnet: "prod".into(),
            },
            "zt",
            vec![],
            &key(),
            &[1; 32],
            now,
            NOW_OFFSET,
            Limits::default(),
        )
        .unwrap();
        edge.handle_input(&client.poll_transmit().unwrap()).unwrap();
        assert!(
            matches!(edge.poll_event(), Some(EdgeEvent::AuthRequired(Claim::Client(c))) if c.vnet == "prod")
        );
        edge.authenticate(Some(&key()));
        edge.poll_event();
        client.handle_input(&edge.poll_transmit().unwrap()).unwrap();
        let report = PostureReport {
            checks: vec![crate::frame::PostureCheck {
                name: "disk".into(),
                passed: true,
            }],
        };
        client.report_posture(report.clone()).unwrap();
        edge.handle_input(&client.poll_transmit().unwrap()).unwrap();
        assert_eq!(edge.poll_event(), Some(EdgeEvent::Posture(report)));
    }

    #[test]
    fn extension_frames_are_skipped_and_garbage_is_an_error() {
        let (mut peer, mut edge) = registered_pair(false);
        let mut wire = BytesMut::new();
        ControlFrame::Extension {
            ty: 0x90,
            payload: Bytes::from_static(b"later"),
        }
        .encode(&mut wire)
        .unwrap();
        ControlFrame::Ping(3).encode(&mut wire).unwrap();
        edge.handle_input(&wire).unwrap();
        peer.input(&edge.poll_transmit().unwrap()).unwrap();
        // The edge skipped the extension and answered the ping after it.
        assert_eq!(peer.event(), Some(PeerEvent::Pong(3)));
        assert!(matches!(
            peer.input(&[0x30, 0, 0, 0, 0]),
            Err(ControlError::Decode(DecodeError::UnknownFrameType {
                ty: 0x30
            }))
        ));
    }
}
