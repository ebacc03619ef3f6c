//! What the open stage hands on: the opened flow and where its connector connection is
//! (here, or on a peer edge that forwards it). Its own module so that the local open and
//! the forwarding both name it without depending on each other.

use std::sync::Arc;

use zt_proto::ResetCode;

use super::super::link::OpenedStream;
use super::super::registry::{ConnEntry, InFlight};

/// Where an opened flow's connector connection is.
pub(crate) enum Via {
    /// On this edge.
    Local(Arc<ConnEntry>),
    /// On a peer edge, which forwards the flow.
    Peer {
        /// The peer edge's name.
        edge: String,
        /// The connector connection there.
        connector: zt_proto::PeerConnectorInfo,
    },
}

/// A flow open on a connector connection, counted in flight there until dropped.
pub(crate) struct Opened {
    pub(crate) via: Via,
    pub(crate) stream: OpenedStream,
    pub(crate) _in_flight: Option<InFlight>,
}

impl Opened {
    /// Gives the opened flow up before any byte was carried (the client is refused).
    pub(crate) fn abandon(self) {
        match self.stream {
            OpenedStream::Tcp { mut stream, .. } => {
                stream.reset(ResetCode::CANCELLED);
            }
            OpenedStream::Udp(flow) => flow.close(),
        }
    }
}
