//! The transport seam: what zt/1 needs from whatever carries a connection.
//!
//! The control driver, registration, flow opens, the flow acceptor and the datagram
//! dispatcher are written once against [`Transport`]. QUIC ([`Quic`], over quinn) implements
//! it, and so does TLS 1.3 over TCP with HTTP/2 as the stream multiplexer ([`Tcp`]); the
//! runtimes hold a [`Carrier`], either of the two.
//!
//! What a transport must provide: bidirectional streams with half-close and reset-with-code
//! (handed out as [`FlowSendStream`] / [`FlowRecvStream`]), unreliable datagrams (or a clear
//! [`DatagramError::Unsupported`]), the TLS exporter the proofs bind to, the peer's address,
//! and a close with a code that the peer sees.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use quinn::VarInt;

use crate::auth::{Exporter, EXPORTER_CONTEXT, EXPORTER_LABEL, EXPORTER_LEN};
use crate::flow::CloseCode;
use crate::transport::error::DatagramError;
use crate::transport::over_tcp::Tcp;
use crate::transport::settings::TransportSettings;
use crate::transport::stream::{FlowRecvStream, FlowSendStream};

/// Why a connection ended, as every transport reports it.
///
/// quinn's type, for now: its variants (closed by the peer with a code, closed here, timed
/// out, reset, a transport error) cover what a TCP-based transport can say as well.
pub type ConnectionLost = quinn::ConnectionError;

/// One authenticated, encrypted connection between two zt peers, as the protocol uses it.
///
/// Implementations are cheap handles (`Clone` shares the connection).
pub trait Transport: Clone + Send + Sync + 'static {
    /// Opens a bidirectional stream to the peer.
    fn open_bi(
        &self,
    ) -> impl Future<Output = Result<(FlowSendStream, FlowRecvStream), ConnectionLost>> + Send;

    /// The next bidirectional stream the peer opens.
    fn accept_bi(
        &self,
    ) -> impl Future<Output = Result<(FlowSendStream, FlowRecvStream), ConnectionLost>> + Send;

    /// Sends one unreliable datagram (already framed).
    fn send_datagram(&self, datagram: Bytes) -> Result<(), DatagramError>;

    /// The next datagram the peer sent.
    fn read_datagram(&self) -> impl Future<Output = Result<Bytes, ConnectionLost>> + Send;

    /// Largest datagram sendable now, framing included; `None` if the peer takes none.
    fn max_datagram_size(&self) -> Option<usize>;

    /// This connection's TLS exporter value for zt's proofs (label [`EXPORTER_LABEL`]).
    fn exporter(&self) -> Option<Exporter>;

    /// The peer's address.
    fn remote_address(&self) -> SocketAddr;

    /// The current round-trip time estimate.
    fn rtt(&self) -> Duration;

    /// Lets the peer open up to `n` concurrent bidirectional streams (the edge raises it
    /// once a client is registered).
    fn set_max_concurrent_bi_streams(&self, n: u32);

    /// How many concurrent bidirectional streams a registered peer may open at first; its
    /// flow acceptor doubles that as the open flows near it, up to the settings' maximum
    /// (see `allowance`).
    fn initial_bi_streams(&self, settings: &TransportSettings) -> u32;

    /// Closes the connection at once; the peer sees `code` and `reason`.
    fn close(&self, code: CloseCode, reason: &[u8]);

    /// Why the connection ended, if it has.
    fn close_reason(&self) -> Option<ConnectionLost>;

    /// Waits until the connection ends, by either side or by the idle timeout.
    fn closed(&self) -> impl Future<Output = ConnectionLost> + Send;
}

/// zt/1 over QUIC: a quinn connection.
#[derive(Debug, Clone)]
pub struct Quic(pub(crate) quinn::Connection);

impl Quic {
    /// The quinn connection itself, for what the protocol does not cover (statistics).
    pub fn connection(&self) -> &quinn::Connection {
        &self.0
    }
}

fn halves(
    conn: &quinn::Connection,
    (send, recv): (quinn::SendStream, quinn::RecvStream),
) -> (FlowSendStream, FlowRecvStream) {
    (
        FlowSendStream::from_quic(send),
        FlowRecvStream::from_quic(recv, Some(conn.clone())),
    )
}

impl Transport for Quic {
    async fn open_bi(&self) -> Result<(FlowSendStream, FlowRecvStream), ConnectionLost> {
        self.0.open_bi().await.map(|s| halves(&self.0, s))
    }

    async fn accept_bi(&self) -> Result<(FlowSendStream, FlowRecvStream), ConnectionLost> {
        self.0.accept_bi().await.map(|s| halves(&self.0, s))
    }

    fn send_datagram(&self, datagram: Bytes) -> Result<(), DatagramError> {
        let len = datagram.len();
        match self.0.send_datagram(datagram) {
            Ok(()) => Ok(()),
            Err(quinn::SendDatagramError::ConnectionLost(e)) => {
                Err(DatagramError::ConnectionLost(e))
            }
            Err(quinn::SendDatagramError::TooLarge) => Err(DatagramError::TooLarge {
                len,
                max: self.0.max_datagram_size().unwrap_or(0),
            }),
            Err(_) => Err(DatagramError::Unsupported),
        }
    }

    async fn read_datagram(&self) -> Result<Bytes, ConnectionLost> {
        self.0.read_datagram().await
    }

    fn max_datagram_size(&self) -> Option<usize> {
        self.0.max_datagram_size()
    }

    fn exporter(&self) -> Option<Exporter> {
        let mut out = [0u8; EXPORTER_LEN];
        self.0
            .export_keying_material(&mut out, EXPORTER_LABEL, EXPORTER_CONTEXT)
            .ok()?;
        Some(out)
    }

    fn remote_address(&self) -> SocketAddr {
        self.0.remote_address()
    }

    fn rtt(&self) -> Duration {
        self.0.rtt()
    }

    fn set_max_concurrent_bi_streams(&self, n: u32) {
        self.0.set_max_concurrent_bi_streams(VarInt::from_u32(n));
    }

    fn initial_bi_streams(&self, settings: &TransportSettings) -> u32 {
        // quinn holds a receive state for every stream the peer may open: start small.
        settings.initial_bidi_streams()
    }

    fn close(&self, code: CloseCode, reason: &[u8]) {
        self.0.close(VarInt::from_u32(code.0), reason);
    }

    fn close_reason(&self) -> Option<ConnectionLost> {
        self.0.close_reason()
    }

    async fn closed(&self) -> ConnectionLost {
        self.0.closed().await
    }
}

/// zt/1 over whichever transport a connection came on: what the runtimes hold, so one
/// registry, one connection set and one flow path serve both.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Carrier {
    /// QUIC on UDP.
    Quic(Quic),
    /// TLS 1.3 on TCP, streams multiplexed by HTTP/2.
    Tcp(Tcp),
}

impl Carrier {
    /// The transport's word in logs, metrics and the admin output: `quic` or `tcp`.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Quic(_) => "quic",
            Self::Tcp(_) => "tcp",
        }
    }
}

macro_rules! both {
    ($self:ident, $t:ident => $e:expr) => {
        match $self {
            Carrier::Quic($t) => $e,
            Carrier::Tcp($t) => $e,
        }
    };
}

impl Transport for Carrier {
    async fn open_bi(&self) -> Result<(FlowSendStream, FlowRecvStream), ConnectionLost> {
        both!(self, t => t.open_bi().await)
    }

    async fn accept_bi(&self) -> Result<(FlowSendStream, FlowRecvStream), ConnectionLost> {
        both!(self, t => t.accept_bi().await)
    }

    fn send_datagram(&self, datagram: Bytes) -> Result<(), DatagramError> {
        both!(self, t => t.send_datagram(datagram))
    }

    async fn read_datagram(&self) -> Result<Bytes, ConnectionLost> {
        both!(self, t => t.read_datagram().await)
    }

    fn max_datagram_size(&self) -> Option<usize> {
        both!(self, t => t.max_datagram_size())
    }

    fn exporter(&self) -> Option<Exporter> {
        both!(self, t => t.exporter())
    }

    fn remote_address(&self) -> SocketAddr {
        both!(self, t => t.remote_address())
    }

    fn rtt(&self) -> Duration {
        both!(self, t => t.rtt())
    }

    fn set_max_concurrent_bi_streams(&self, n: u32) {
        both!(self, t => t.set_max_concurrent_bi_streams(n))
    }

    fn initial_bi_streams(&self, settings: &TransportSettings) -> u32 {
        both!(self, t => t.initial_bi_streams(settings))
    }

    fn close(&self, code: CloseCode, reason: &[u8]) {
        both!(self, t => t.close(code, reason))
    }

    fn close_reason(&self) -> Option<ConnectionLost> {
        both!(self, t => t.close_reason())
    }

    async fn closed(&self) -> ConnectionLost {
        both!(self, t => t.closed().await)
    }
}
