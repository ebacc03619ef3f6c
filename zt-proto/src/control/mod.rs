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

mod edge;
mod peer;
#[cfg(test)]
mod tests;

pub use edge::{EdgeControl, EdgeEvent, RefusalReason};
pub use peer::{
    ClientControl, ClientRole, ConnectorControl, ConnectorRole, PeerControl, PeerEvent, PeerRole,
};

use bytes::{Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::frame::ControlFrame;
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

pub(super) fn frame_name(f: &ControlFrame) -> &'static str {
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
        ControlFrame::EdgeList(_) => "edge_list",
        _ => "extension",
    }
}

/// Buffers shared by every machine: undecoded input and unsent output.
#[derive(Debug)]
pub(super) struct Codec {
    pub(super) input: BytesMut,
    output: BytesMut,
    limits: Limits,
}

impl Codec {
    pub(super) fn new(limits: Limits) -> Self {
        Self {
            input: BytesMut::new(),
            output: BytesMut::new(),
            limits,
        }
    }

    pub(super) fn next_frame(&mut self) -> Result<Option<ControlFrame>, DecodeError> {
        loop {
            match ControlFrame::decode_with(&mut self.input, &self.limits)? {
                // Extensions are for later versions; this one skips them.
                Some(ControlFrame::Extension { .. }) => continue,
                other => return Ok(other),
            }
        }
    }

    pub(super) fn send(&mut self, f: &ControlFrame) -> Result<(), EncodeError> {
        f.encode_with(&mut self.output, &self.limits)
    }

    pub(super) fn take(&mut self) -> Option<Bytes> {
        if self.output.is_empty() {
            None
        } else {
            Some(self.output.split().freeze())
        }
    }
}
