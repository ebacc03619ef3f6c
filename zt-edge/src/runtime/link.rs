//! The link to one connector connection, zt's own or an unmodified cloudflared, as one type:
//! how a flow is opened on it, how the opened flow is spliced, what it can carry and how it
//! is told to go away. The flow pipeline and the registry use only this type, so neither
//! names a connector kind.

use std::time::Duration;

use bytes::Bytes;
use tracing::warn;
use uuid::Uuid;
use zt_proto::{
    relay, ConnectorLink, FlowHeader, FlowRecvStream, FlowSendStream, FlowStream, OpenError,
    Protocol, RelayOutcome, UdpFlow,
};

use super::cloudflared::link::{self as cloudflared, CloudflaredLink};
use crate::audit::{ConnectorKind, HalfClose};

/// A connector connection, by protocol.
pub(crate) enum ConnLink {
    /// zt's own connector.
    Zt(ConnectorLink),
    /// An unmodified cloudflared.
    Cloudflared(CloudflaredLink),
}

/// The connector side of a flow that opened.
pub(crate) enum OpenedStream {
    /// A TCP flow, with payload that arrived with the connector's answer (cloudflared).
    Tcp {
        /// The stream to the connector.
        stream: FlowStream,
        /// Bytes that came with the answer; they go to the client first.
        early: Option<Bytes>,
        /// How the two streams are spliced.
        mode: SpliceMode,
    },
    /// A UDP flow.
    Udp(UdpFlow),
}

/// How a TCP flow's two streams are spliced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpliceMode {
    /// Each direction ends on its own: a FIN is a half-close, carried end to end.
    HalfClose,
    /// The first FIN from either side ends the whole flow, as cloudflared behaves.
    FirstFinEnds,
}

impl SpliceMode {
    /// Relays both directions until the flow ends. Returns (client → origin, origin →
    /// client).
    pub(crate) async fn splice(
        self,
        client_recv: &mut FlowRecvStream,
        client_send: &mut FlowSendStream,
        origin_recv: &mut FlowRecvStream,
        origin_send: &mut FlowSendStream,
    ) -> (RelayOutcome, RelayOutcome) {
        match self {
            Self::HalfClose => tokio::join!(
                relay(client_recv, origin_send),
                relay(origin_recv, client_send)
            ),
            Self::FirstFinEnds => {
                cloudflared::splice(client_recv, client_send, origin_recv, origin_send).await
            }
        }
    }

    /// What the audit line says of the flow's half-close, when it is not carried.
    pub(crate) fn half_close(self) -> Option<HalfClose> {
        match self {
            Self::HalfClose => None,
            Self::FirstFinEnds => Some(HalfClose::NotSupportedByCloudflared),
        }
    }
}

impl ConnLink {
    pub(crate) fn connection_id(&self) -> Uuid {
        match self {
            Self::Zt(l) => l.connection_id(),
            Self::Cloudflared(l) => l.connection_id,
        }
    }

    /// Whether the connector said it is draining (cloudflared's connections are marked
    /// draining in the registry instead).
    pub(crate) fn is_draining(&self) -> bool {
        match self {
            Self::Zt(l) => l.is_draining(),
            Self::Cloudflared(_) => false,
        }
    }

    pub(crate) fn kind(&self) -> ConnectorKind {
        match self {
            Self::Zt(_) => ConnectorKind::Zt,
            Self::Cloudflared(_) => ConnectorKind::Cloudflared,
        }
    }

    /// Whether UDP flows can be opened on it (cloudflared's datagrams are not served).
    pub(crate) fn serves_udp(&self) -> bool {
        matches!(self, Self::Zt(_))
    }

    /// Opens `header`'s flow. `answer_timeout` bounds cloudflared's answer, which comes
    /// only once it has dialled the origin; zt's open is bounded by the transport.
    pub(crate) async fn open(
        &self,
        header: &FlowHeader,
        answer_timeout: Duration,
    ) -> Result<OpenedStream, OpenError> {
        match (self, header.protocol) {
            (Self::Cloudflared(link), _) => cloudflared::open_flow(link, header, answer_timeout)
                .await
                .map(|(stream, early)| OpenedStream::Tcp {
                    stream,
                    early,
                    mode: SpliceMode::FirstFinEnds,
                }),
            (Self::Zt(link), Protocol::Udp) => link
                .open_udp_flow(header.dest, header.metadata.clone())
                .await
                .map(OpenedStream::Udp),
            (Self::Zt(link), _) => link
                .open_flow(header.dest, Protocol::Tcp, header.metadata.clone())
                .await
                .map(|stream| OpenedStream::Tcp {
                    stream,
                    early: None,
                    mode: SpliceMode::HalfClose,
                }),
        }
    }

    /// Tells the connector the edge is going away. Returns `false` when the protocol has no
    /// such message (cloudflared): the caller then only stops opening flows on it.
    pub(crate) async fn go_away(&self, grace: Duration, reason: &str) -> bool {
        match self {
            Self::Zt(link) => {
                if let Err(e) = link.go_away(grace, reason).await {
                    warn!(connection = %link.connection_id(), error = %e, "cannot send go-away");
                }
                true
            }
            Self::Cloudflared(_) => false,
        }
    }
}
