//! The transport's errors, one enum per operation.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::control::{ControlError, RefusalReason};
use crate::error::EncodeError;
use crate::flow::FlowStatus;
use crate::frame::RegisterError;
use crate::transport::settings::SettingsError;
use crate::transport::stream::FlowError;
use crate::transport::tls::TlsConfigError;

/// An endpoint could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The TLS configuration was refused.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    /// A transport setting is out of range.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The edge name does not fit the `registered` frame.
    #[error("edge name is {len} bytes; at most 255 are allowed")]
    EdgeName {
        /// Its length.
        len: usize,
    },
    /// The UDP socket could not be created or bound.
    #[error("cannot bind UDP socket on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A connector or client could not connect and register.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The connection could not be started (bad server name, endpoint closed).
    #[error("cannot connect to the edge at {addr}: {source}")]
    Start {
        /// The edge address.
        addr: SocketAddr,
        /// quinn's reason.
        #[source]
        source: quinn::ConnectError,
    },
    /// The TLS handshake failed: typically the edge's certificate is not trusted (wrong CA,
    /// wrong fingerprint, wrong name) or the edge does not speak `zt/1`.
    #[error("TLS handshake with the edge at {addr} failed: {source}")]
    Handshake {
        /// The edge address.
        addr: SocketAddr,
        /// quinn's reason.
        #[source]
        source: quinn::ConnectionError,
    },
    /// The edge refused the registration; `error.retry` says what to do next.
    #[error("the edge refused the registration ({code:?}, retry {retry:?}): {message}", code = .0.code, retry = .0.retry, message = .0.message)]
    Refused(RegisterError),
    /// The edge did not answer in time.
    #[error("the edge did not answer the registration within {0:?}")]
    Timeout(Duration),
    /// The control stream broke the protocol.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The connection was lost during registration.
    #[error("connection to the edge lost during registration: {0}")]
    Lost(#[from] quinn::ConnectionError),
    /// The TLS exporter was not available (a TLS stack without exporters).
    #[error("the TLS exporter is unavailable on this connection")]
    Exporter,
    /// Over TCP: the TCP connection could not be made (refused, unreachable, timed out).
    #[error("cannot reach the edge at {addr} over TCP: {source}")]
    TcpConnect {
        /// The edge address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Over TCP: the TLS handshake failed, typically because the edge's certificate is not
    /// trusted (wrong CA, wrong fingerprint, an intercepting middlebox) or the edge does not
    /// speak `zt/1` over TCP.
    #[error("TLS handshake over TCP with the edge at {addr} failed: {source}")]
    TcpHandshake {
        /// The edge address.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// Over TCP: the HTTP/2 session could not start.
    #[error("HTTP/2 session with the edge at {addr} failed: {source}")]
    TcpSession {
        /// The edge address.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: crate::transport::over_tcp::TcpSessionError,
    },
}

/// The edge could not register an incoming peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The TLS handshake failed or timed out.
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        /// The peer's address.
        addr: SocketAddr,
        /// quinn's reason.
        #[source]
        source: quinn::ConnectionError,
    },
    /// The registration was refused (and the peer told so).
    #[error("registration from {addr} refused: {reason:?}")]
    Refused {
        /// The peer's address.
        addr: SocketAddr,
        /// The true reason, for the audit log.
        reason: RefusalReason,
    },
    /// The peer broke the protocol on the control stream.
    #[error("control stream from {addr}: {source}")]
    Control {
        /// The peer's address.
        addr: SocketAddr,
        /// What was wrong.
        #[source]
        source: ControlError,
    },
    /// The connection was lost during registration.
    #[error("connection from {addr} lost during registration: {source}")]
    Lost {
        /// The peer's address.
        addr: SocketAddr,
        /// quinn's reason.
        #[source]
        source: quinn::ConnectionError,
    },
    /// The TLS exporter was not available.
    #[error("the TLS exporter is unavailable on the connection from {0}")]
    Exporter(SocketAddr),
    /// Over TCP: the TLS handshake failed or timed out (a client that offers no protocol
    /// the edge serves, an old TLS version, a slow handshake).
    #[error("TLS handshake over TCP with {addr} failed: {source}")]
    TcpHandshake {
        /// The peer's address.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// Over TCP: the HTTP/2 session could not start.
    #[error("HTTP/2 session with {addr} failed: {source}")]
    TcpSession {
        /// The peer's address.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: crate::transport::over_tcp::TcpSessionError,
    },
}

/// A flow could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The peer did not answer within the open timeout. The flow was cancelled; try another
    /// connection, and consider this one unhealthy.
    #[error("flow open unanswered after {0:?}")]
    Unanswered(Duration),
    /// The peer answered with an error status.
    #[error("flow refused: {0}")]
    Refused(FlowStatus),
    /// Too many opens are already waiting for an answer on this connection.
    #[error("too many unanswered flow opens on this connection (limit {0})")]
    TooManyPending(usize),
    /// The header breaks a limit; nothing was sent.
    #[error("flow header not sent: {0}")]
    Header(#[from] EncodeError),
    /// The connection is draining (go-away or unregister): no new flows on it.
    #[error("the connection is draining; open the flow elsewhere")]
    Draining,
    /// The stream failed while opening.
    #[error("flow stream failed while opening: {0}")]
    Stream(#[from] FlowError),
    /// The peer sent an invalid status.
    #[error("invalid flow status from peer: {0}")]
    BadStatus(#[from] crate::error::DecodeError),
}

/// A flow request could not be answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RespondError {
    /// The status breaks a limit (detail over 1,024 bytes).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The stream failed.
    #[error(transparent)]
    Stream(#[from] FlowError),
}

/// A datagram could not be sent or received.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// The payload exceeds the configured limit or what the path allows.
    #[error("datagram payload of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// Largest payload allowed now.
        max: usize,
    },
    /// The peer does not accept datagrams.
    #[error("the peer does not accept datagrams")]
    Unsupported,
    /// The flow id is above 2^62 - 1.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The connection is lost.
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] quinn::ConnectionError),
}

/// The connection is gone, so the control message could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlSendError {
    /// The connection's control stream is closed.
    #[error("the connection's control stream is closed")]
    Closed,
    /// The message is not valid here.
    #[error(transparent)]
    Control(#[from] ControlError),
}
