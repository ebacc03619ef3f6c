//! Connections that negotiated ALPN `argotunnel`: cloudflared's QUIC protocol, which zt-proto
//! does not speak. The edge's listener authenticates nothing on them; it hands the QUIC
//! connection over as raw bidirectional streams, and the caller runs cloudflared's control
//! and flow protocols (Cap'n Proto RPC, flow preambles) on top.
//!
//! Transport settings are the listener's own (quinn fixes them before the ClientHello is
//! read). They suit cloudflared: the idle timeout is negotiated down to cloudflared's 5 s
//! and the edge keeps the connection alive every `keep_alive_interval` (1 s by default);
//! datagrams are enabled; cloudflared opens one bidirectional stream (its control stream),
//! well inside the few streams an unregistered connection may open (it keeps that limit:
//! zt-proto never registers it), and the edge opens one per flow, bounded by cloudflared's
//! own stream limit.

use std::net::SocketAddr;

use quinn::VarInt;

use crate::flow::CloseCode;
use crate::transport::stream::{FlowError, FlowRecvStream, FlowSendStream, FlowStream};

fn quic_stream(send: quinn::SendStream, recv: quinn::RecvStream) -> FlowStream {
    FlowStream::new(
        send.id().index(),
        FlowSendStream::from_quic(send),
        FlowRecvStream::from_quic(recv, None),
    )
}

/// A connection whose client chose ALPN `argotunnel` (an unmodified cloudflared), after its
/// TLS handshake and before anything else. See the module docs for what zt-proto does and
/// does not do with it.
#[derive(Debug, Clone)]
pub struct ArgotunnelConnection {
    conn: quinn::Connection,
}

impl ArgotunnelConnection {
    pub(crate) fn new(conn: quinn::Connection) -> Self {
        Self { conn }
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// The TLS server name the peer asked for (cloudflared always asks for
    /// `quic.cftunnel.com`), if it sent one.
    pub fn server_name(&self) -> Option<String> {
        self.conn
            .handshake_data()
            .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|d| d.server_name)
    }

    /// The next bidirectional stream the peer opens (cloudflared's first one is its control
    /// stream). The stream's id stands in for a flow id.
    pub async fn accept_stream(&self) -> Result<FlowStream, FlowError> {
        let (send, recv) = self.conn.accept_bi().await?;
        Ok(quic_stream(send, recv))
    }

    /// Opens a bidirectional stream to the peer (one per flow for cloudflared). Nothing is
    /// sent until the caller writes to it.
    pub async fn open_stream(&self) -> Result<FlowStream, FlowError> {
        let (send, recv) = self.conn.open_bi().await?;
        Ok(quic_stream(send, recv))
    }

    /// Closes the connection with a code and a reason the peer sees.
    pub fn close(&self, code: CloseCode, reason: &str) {
        self.conn.close(VarInt::from_u32(code.0), reason.as_bytes());
    }

    /// Waits until the connection is closed, by either side or by timeout, and says why.
    pub async fn closed(&self) -> quinn::ConnectionError {
        self.conn.closed().await
    }

    /// The QUIC connection itself, for what the methods above do not cover (datagrams, RTT
    /// statistics).
    pub fn quic(&self) -> &quinn::Connection {
        &self.conn
    }
}
