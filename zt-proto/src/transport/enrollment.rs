//! Connections that negotiated ALPN `zt-enroll/1`: the enrollment exchange of `zt login`
//! (see the crate's `enroll` module for its messages). Nothing on them is authenticated by
//! the listener; the edge's enrollment handler runs the exchange on one bidirectional
//! stream and bounds it itself.

use std::net::SocketAddr;

use crate::auth::Exporter;
use crate::flow::CloseCode;
use crate::transport::carrier::{ConnectionLost, Quic, Transport};
use crate::transport::stream::{FlowRecvStream, FlowSendStream};

/// A QUIC connection for the enrollment exchange, on either side.
#[derive(Debug, Clone)]
pub struct EnrollmentConnection {
    conn: Quic,
}

impl EnrollmentConnection {
    pub(crate) fn new(conn: Quic) -> Self {
        Self { conn }
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// The connection's TLS exporter value, which the possession signature covers.
    pub fn exporter(&self) -> Option<Exporter> {
        self.conn.exporter()
    }

    /// The edge side: the stream the laptop opens for the exchange.
    pub async fn accept_stream(&self) -> Result<(FlowSendStream, FlowRecvStream), ConnectionLost> {
        self.conn.accept_bi().await
    }

    /// The laptop side: opens the exchange's stream.
    pub async fn open_stream(&self) -> Result<(FlowSendStream, FlowRecvStream), ConnectionLost> {
        self.conn.open_bi().await
    }

    /// Waits until the connection ends, by either side or by the idle timeout.
    pub async fn closed(&self) -> ConnectionLost {
        self.conn.closed().await
    }

    /// Closes the connection.
    pub fn close(&self, code: CloseCode, reason: &str) {
        self.conn.close(code, reason.as_bytes());
    }
}
