//! Connections from unmodified cloudflared connectors, which zt-proto does not speak: QUIC
//! with ALPN `argotunnel`, or TLS over TCP with ALPN `h2` and server name `h2.cftunnel.com`
//! (cloudflared's `--protocol http2`, see [`crate::transport::argotunnel_h2`]). The edge's
//! listeners authenticate nothing on them; they hand the connection over as streams, and
//! the caller runs cloudflared's control and flow protocols (Cap'n Proto RPC, flow
//! preambles or request headers) on top.
//!
//! QUIC:
//! Transport settings are the listener's own (quinn fixes them before the ClientHello is
//! read). They suit cloudflared: the idle timeout is negotiated down to cloudflared's 5 s
//! and the edge keeps the connection alive every `keep_alive_interval` (1 s by default);
//! datagrams are enabled; cloudflared opens one bidirectional stream (its control stream),
//! well inside the few streams an unregistered connection may open (it keeps that limit:
//! zt-proto never registers it), and the edge opens one per flow, bounded by cloudflared's
//! own stream limit.

use std::net::SocketAddr;

use quinn::VarInt;

use std::sync::Arc;

use crate::flow::CloseCode;
use crate::transport::argotunnel_h2::Http2;
use crate::transport::stream::{FlowError, FlowRecvStream, FlowSendStream, FlowStream};

fn quic_stream(send: quinn::SendStream, recv: quinn::RecvStream) -> FlowStream {
    FlowStream::new(
        send.id().index(),
        FlowSendStream::from_quic(send),
        FlowRecvStream::from_quic(recv, None),
    )
}

/// Which of cloudflared's protocols a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArgotunnelProtocol {
    /// QUIC, ALPN `argotunnel` (`--protocol quic`).
    Quic,
    /// HTTP/2 over TLS on TCP, cloudflared the HTTP/2 server (`--protocol http2`).
    Http2,
}

impl ArgotunnelProtocol {
    /// cloudflared's own word for it, as in its `--protocol` flag and logs: `quic` or `http2`.
    pub fn word(self) -> &'static str {
        match self {
            Self::Quic => "quic",
            Self::Http2 => "http2",
        }
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Quic(quinn::Connection),
    Http2(Arc<Http2>),
}

/// A connection from an unmodified cloudflared, after its TLS handshake and before
/// anything else. See the module docs for what zt-proto does and does not do with it.
///
/// A cheap handle: clones share the connection.
#[derive(Debug, Clone)]
pub struct ArgotunnelConnection {
    kind: Kind,
}

impl ArgotunnelConnection {
    pub(crate) fn new(conn: quinn::Connection) -> Self {
        Self {
            kind: Kind::Quic(conn),
        }
    }

    pub(crate) fn http2(conn: Http2) -> Self {
        Self {
            kind: Kind::Http2(Arc::new(conn)),
        }
    }

    /// Which protocol the connection speaks.
    pub fn protocol(&self) -> ArgotunnelProtocol {
        match self.kind {
            Kind::Quic(_) => ArgotunnelProtocol::Quic,
            Kind::Http2(_) => ArgotunnelProtocol::Http2,
        }
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        match &self.kind {
            Kind::Quic(c) => c.remote_address(),
            Kind::Http2(h) => h.remote,
        }
    }

    /// The TLS server name the peer asked for (cloudflared asks for `quic.cftunnel.com`
    /// over QUIC and `h2.cftunnel.com` over HTTP/2), if it sent one.
    pub fn server_name(&self) -> Option<String> {
        match &self.kind {
            Kind::Quic(c) => c
                .handshake_data()
                .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|d| d.server_name),
            Kind::Http2(h) => h.server_name.clone(),
        }
    }

    /// The control stream. Over QUIC it is the first bidirectional stream cloudflared opens
    /// (this waits for it); over HTTP/2 the edge opens it, a request with
    /// `Cf-Cloudflared-Proxy-Connection-Upgrade: control-stream`, and it is returned at
    /// once (cloudflared's refusal of it reads as a reset).
    pub async fn control_stream(&self) -> Result<FlowStream, FlowError> {
        match &self.kind {
            Kind::Quic(_) => self.accept_stream().await,
            Kind::Http2(h) => h.control_stream().await,
        }
    }

    /// The next bidirectional stream the peer opens. The stream's id stands in for a flow
    /// id. Over HTTP/2 cloudflared, the server, opens none: this waits until the connection
    /// ends and says why.
    pub async fn accept_stream(&self) -> Result<FlowStream, FlowError> {
        match &self.kind {
            Kind::Quic(c) => {
                let (send, recv) = c.accept_bi().await?;
                Ok(quic_stream(send, recv))
            }
            Kind::Http2(h) => Err(FlowError::ConnectionLost(h.closed().await)),
        }
    }

    /// Opens a bidirectional stream to the peer over QUIC (one per flow for cloudflared).
    /// Nothing is sent until the caller writes to it. Over HTTP/2 flows are requests
    /// ([`ArgotunnelConnection::request`]) and this fails with [`FlowError::Closed`].
    pub async fn open_stream(&self) -> Result<FlowStream, FlowError> {
        match &self.kind {
            Kind::Quic(c) => {
                let (send, recv) = c.open_bi().await?;
                Ok(quic_stream(send, recv))
            }
            Kind::Http2(_) => Err(FlowError::Closed),
        }
    }

    /// Over HTTP/2: sends `req` with its body left open and waits for the response headers;
    /// the stream's halves are the request body (the edge's direction) and the response
    /// body. The caller bounds the wait. Over QUIC this fails with [`FlowError::Closed`].
    pub async fn request(
        &self,
        req: http::Request<()>,
    ) -> Result<(http::response::Parts, FlowStream), FlowError> {
        match &self.kind {
            Kind::Quic(_) => Err(FlowError::Closed),
            Kind::Http2(h) => h.request(req).await,
        }
    }

    /// Closes the connection with a code and a reason the peer sees (over QUIC; HTTP/2 has
    /// no place for them in this direction, and the TCP connection simply closes).
    pub fn close(&self, code: CloseCode, reason: &str) {
        match &self.kind {
            Kind::Quic(c) => c.close(VarInt::from_u32(code.0), reason.as_bytes()),
            Kind::Http2(h) => h.close(),
        }
    }

    /// Waits until the connection is closed, by either side or by timeout, and says why.
    pub async fn closed(&self) -> quinn::ConnectionError {
        match &self.kind {
            Kind::Quic(c) => c.closed().await,
            Kind::Http2(h) => h.closed().await,
        }
    }

    /// The QUIC connection itself, for what the methods above do not cover (datagrams, RTT
    /// statistics); `None` over HTTP/2.
    pub fn quic(&self) -> Option<&quinn::Connection> {
        match &self.kind {
            Kind::Quic(c) => Some(c),
            Kind::Http2(_) => None,
        }
    }
}
