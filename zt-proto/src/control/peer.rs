//! The connector's and the client's control machines: both register with a signed
//! `register` frame and wait for the edge's answer; then the connector can unregister and
//! the client reports posture and receives route pushes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{frame_name, Codec, ControlError};
use crate::auth::{sign_register, Exporter, ProofKey};
use crate::error::EncodeError;
use crate::frame::{
    Claim, ClientClaim, ConnectorClaim, ControlFrame, EdgeList, GoAway, PostureReport, Proof,
    Register, RegisterError, Registered, RoutePush, Unregister, PROTOCOL_VERSION,
};
use crate::limits::Limits;

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
    /// The organisation's live edges, to move to when this one is lost.
    EdgesPushed(EdgeList),
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
        key: &ProofKey,
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
            proof: Proof::EMPTY,
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
            (PeerState::Registered, ControlFrame::EdgeList(l)) => {
                self.events.push_back(PeerEvent::EdgesPushed(l));
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

mod sealed {
    pub trait Sealed {}
}

/// The two registering roles, as the type parameter of [`PeerControl`]. Sealed: the
/// protocol has exactly these.
pub trait PeerRole: sealed::Sealed + Send + 'static {
    /// What the role claims when it registers.
    type Claim;
    #[doc(hidden)]
    fn claim(claim: Self::Claim) -> Claim;
}

/// The connector role ([`ConnectorControl`]).
#[derive(Debug)]
pub enum ConnectorRole {}

/// The client role ([`ClientControl`]).
#[derive(Debug)]
pub enum ClientRole {}

impl sealed::Sealed for ConnectorRole {}
impl sealed::Sealed for ClientRole {}

impl PeerRole for ConnectorRole {
    type Claim = ConnectorClaim;
    fn claim(claim: ConnectorClaim) -> Claim {
        Claim::Connector(claim)
    }
}

impl PeerRole for ClientRole {
    type Claim = ClientClaim;
    fn claim(claim: ClientClaim) -> Claim {
        Claim::Client(claim)
    }
}

/// A registering peer's control stream, one machine for both roles: it registers, then
/// handles go-away and pings; each role adds its own frames (a connector's unregister, a
/// client's posture reports and route pushes).
#[derive(Debug)]
pub struct PeerControl<R: PeerRole> {
    core: PeerCore,
    role: std::marker::PhantomData<R>,
}

/// A connector's control stream: registers a tunnel connection, then handles go-away and
/// its own unregister.
pub type ConnectorControl = PeerControl<ConnectorRole>;

/// A client's control stream: registers a device, then receives route pushes and sends
/// posture reports.
pub type ClientControl = PeerControl<ClientRole>;

impl<R: PeerRole> PeerControl<R> {
    /// Starts a registration: the signed `register` frame is ready in
    /// [`PeerControl::poll_transmit`] at once. `exporter` is this connection's TLS exporter
    /// value (see [`crate::EXPORTER_LABEL`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        claim: R::Claim,
        software_version: impl Into<String>,
        features: Vec<String>,
        key: &ProofKey,
        exporter: &Exporter,
        now: Instant,
        register_timeout: Duration,
        limits: Limits,
    ) -> Result<Self, EncodeError> {
        let core = PeerCore::new(
            R::claim(claim),
            software_version.into(),
            features,
            key,
            exporter,
            now,
            register_timeout,
            limits,
        )?;
        Ok(Self {
            core,
            role: std::marker::PhantomData,
        })
    }

    /// Feeds bytes read from the control stream.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<(), ControlError> {
        self.core.handle_input(data)
    }

    /// Tells the machine the time; a registration unanswered by its deadline ends.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now)
    }

    /// When [`Self::handle_timeout`] next needs calling, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// Bytes to write to the control stream, if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.core.codec.take()
    }

    /// The next event for the owner, if any.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.core.events.pop_front()
    }

    /// Whether the edge accepted the registration (and nothing ended it since).
    pub fn is_registered(&self) -> bool {
        self.core.state == PeerState::Registered
    }

    /// Sends a ping; the edge's pong comes back as [`PeerEvent::Pong`].
    pub fn ping(&mut self, nonce: u64) -> Result<(), ControlError> {
        self.core.send_registered(ControlFrame::Ping(nonce))
    }
}

impl ConnectorControl {
    /// Tells the edge this connector is draining: no new flows; in-flight ones have `grace`.
    pub fn unregister(&mut self, grace: Duration) -> Result<(), ControlError> {
        self.core
            .send_registered(ControlFrame::Unregister(Unregister { grace }))
    }
}

impl ClientControl {
    /// Sends the device's posture.
    pub fn report_posture(&mut self, report: PostureReport) -> Result<(), ControlError> {
        self.core
            .send_registered(ControlFrame::PostureReport(report))
    }
}
