//! Dialing the destinations the edge asks for.
//!
//! A flow names a destination IP and port; the connector checks it against its own
//! allow-list, then opens a TCP connection with the configured connect timeout and TCP
//! keep-alive, or a connected UDP socket for a UDP flow. Failures come back typed, so the
//! runtime can answer the edge with the matching status (refused, timeout, unreachable,
//! not allowed) and the client sees why its flow failed.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tracing::debug;

use crate::config::ConnectorConfig;
use crate::flows::AdmitError;
use crate::metrics::{ConnectorMetrics, DialErrorKind};
use crate::values::{canonical_ip, DestinationAllowList};

/// Largest UDP payload relayed by default: 1232 bytes, the EDNS buffer size DNS settled on
/// so that a reply fits an IPv6 minimum-MTU packet, which also fits a QUIC datagram on any
/// path. UDP flows in zt are mostly DNS to the cluster resolver.
pub const DEFAULT_MAX_UDP_PAYLOAD: usize = 1232;

/// Why a flow's destination could not be reached. Each variant names the destination.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The destination is outside `zt-allowed-destinations`.
    #[error("destination {dst} is not in this connector's allowed destinations")]
    NotAllowed {
        /// The destination asked for.
        dst: SocketAddr,
    },
    /// The destination can never be dialled: port 0, an unspecified, multicast or
    /// broadcast address.
    #[error("destination {dst} is not a dialable address")]
    InvalidDestination {
        /// The destination asked for.
        dst: SocketAddr,
    },
    /// Nothing listens at the destination (it answered with a reset, or an ICMP port
    /// unreachable for UDP).
    #[error("connection to {dst} refused")]
    Refused {
        /// The destination.
        dst: SocketAddr,
    },
    /// The destination did not answer within the connect timeout.
    #[error("connection to {dst} timed out after {after:?}")]
    Timeout {
        /// The destination.
        dst: SocketAddr,
        /// The connect timeout that ran out.
        after: Duration,
    },
    /// No route to the destination's network or host.
    #[error("{dst} is unreachable: {source}")]
    Unreachable {
        /// The destination.
        dst: SocketAddr,
        /// The OS's error.
        source: io::Error,
    },
    /// The flow was not admitted (too many flows, or draining).
    #[error(transparent)]
    NotAdmitted(#[from] AdmitError),
    /// Any other local failure (no ports, no descriptors, …).
    #[error("cannot dial {dst}: {source}")]
    Io {
        /// The destination.
        dst: SocketAddr,
        /// The OS's error.
        source: io::Error,
    },
}

impl DialError {
    /// The kind counted in `/metrics` and mapped to the protocol's status.
    pub fn kind(&self) -> DialErrorKind {
        match self {
            Self::NotAllowed { .. } | Self::InvalidDestination { .. } => DialErrorKind::NotAllowed,
            Self::Refused { .. } => DialErrorKind::Refused,
            Self::Timeout { .. } => DialErrorKind::Timeout,
            Self::Unreachable { .. } => DialErrorKind::Unreachable,
            Self::NotAdmitted(e) => e.kind(),
            Self::Io { .. } => DialErrorKind::Other,
        }
    }

    fn from_io(dst: SocketAddr, err: io::Error, timeout: Duration) -> Self {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => Self::Refused { dst },
            // The kernel gave up on its own SYN retries before our timeout ran out.
            io::ErrorKind::TimedOut => Self::Timeout {
                dst,
                after: timeout,
            },
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                Self::Unreachable { dst, source: err }
            }
            _ => Self::Io { dst, source: err },
        }
    }
}

/// Why a UDP datagram could not be relayed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The datagram is larger than the relay carries; it was not sent (or was dropped on
    /// receipt).
    #[error("datagram of {len} bytes for {dst} exceeds the {max}-byte limit")]
    TooLarge {
        /// The destination.
        dst: SocketAddr,
        /// The datagram's size (on receipt: at least this).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The destination answered with ICMP port unreachable.
    #[error("UDP destination {dst} refused the datagram")]
    Refused {
        /// The destination.
        dst: SocketAddr,
    },
    /// Any other socket failure.
    #[error("UDP relay to {dst} failed: {source}")]
    Io {
        /// The destination.
        dst: SocketAddr,
        /// The OS's error.
        source: io::Error,
    },
}

/// Dials destinations for flows: allow-list, connect timeout, TCP keep-alive.
#[derive(Debug, Clone)]
pub struct OriginDialer {
    allowed: DestinationAllowList,
    connect_timeout: Duration,
    keep_alive: Option<Duration>,
    metrics: Arc<ConnectorMetrics>,
}

impl OriginDialer {
    /// A dialer with the configuration's `warp-routing` settings and allow-list, counting
    /// failures into `metrics`.
    pub fn new(config: &ConnectorConfig, metrics: Arc<ConnectorMetrics>) -> Self {
        Self {
            allowed: config.allowed_destinations.clone(),
            connect_timeout: config.warp_routing.connect_timeout,
            keep_alive: config.warp_routing.tcp_keep_alive,
            metrics,
        }
    }

    /// Checks a destination against the allow-list and the addresses that can never be
    /// dialled, without dialing it.
    pub fn check(&self, dst: SocketAddr) -> Result<(), DialError> {
        let ip = canonical_ip(dst.ip());
        let undialable = dst.port() == 0
            || ip.is_unspecified()
            || ip.is_multicast()
            || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
        if undialable {
            // Linux connects 0.0.0.0 to the local host, which would slip past an
            // allow-list that names only remote networks.
            return Err(DialError::InvalidDestination { dst });
        }
        if !self.allowed.allows(ip) {
            return Err(DialError::NotAllowed { dst });
        }
        Ok(())
    }

    /// Opens a TCP connection to `dst`.
    pub async fn dial_tcp(&self, dst: SocketAddr) -> Result<TcpStream, DialError> {
        let result = self.dial_tcp_inner(dst).await;
        if let Err(err) = &result {
            self.metrics.dial_failed(err.kind());
            debug!(%dst, cause = %err, "dial failed");
        }
        result
    }

    async fn dial_tcp_inner(&self, dst: SocketAddr) -> Result<TcpStream, DialError> {
        self.check(dst)?;
        let io_err = |source| DialError::Io { dst, source };
        let socket = match dst {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(io_err)?;
        if let Some(idle) = self.keep_alive {
            // As Go (and so cloudflared) does: the same value for the idle time and the
            // probe interval.
            let ka = TcpKeepalive::new().with_time(idle).with_interval(idle);
            SockRef::from(&socket)
                .set_tcp_keepalive(&ka)
                .map_err(io_err)?;
        }
        let stream = match tokio::time::timeout(self.connect_timeout, socket.connect(dst)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => return Err(DialError::from_io(dst, err, self.connect_timeout)),
            Err(_) => {
                return Err(DialError::Timeout {
                    dst,
                    after: self.connect_timeout,
                })
            }
        };
        // Flows carry interactive protocols (kubectl exec, TLS handshakes); QUIC already
        // packs the bytes on the edge side, so Nagle's delay would buy nothing here.
        stream.set_nodelay(true).map_err(io_err)?;
        Ok(stream)
    }

    /// Opens a UDP socket connected to `dst` for one UDP flow, carrying datagrams of at
    /// most `max_payload` bytes.
    pub async fn dial_udp(
        &self,
        dst: SocketAddr,
        max_payload: usize,
    ) -> Result<UdpRelay, DialError> {
        let result = self.dial_udp_inner(dst, max_payload).await;
        if let Err(err) = &result {
            self.metrics.dial_failed(err.kind());
            debug!(%dst, cause = %err, "UDP dial failed");
        }
        result
    }

    async fn dial_udp_inner(
        &self,
        dst: SocketAddr,
        max_payload: usize,
    ) -> Result<UdpRelay, DialError> {
        self.check(dst)?;
        let io_err = |source| DialError::Io { dst, source };
        let local: SocketAddr = match dst {
            SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).await.map_err(io_err)?;
        // Connecting makes the kernel drop datagrams from any other source, so nobody
        // else can inject replies into the flow.
        socket
            .connect(dst)
            .await
            .map_err(|e| DialError::from_io(dst, e, self.connect_timeout))?;
        Ok(UdpRelay {
            socket,
            dst,
            max_payload,
        })
    }
}

/// A UDP flow's socket, connected to its destination.
#[derive(Debug)]
pub struct UdpRelay {
    socket: UdpSocket,
    dst: SocketAddr,
    max_payload: usize,
}

impl UdpRelay {
    /// The destination.
    pub fn destination(&self) -> SocketAddr {
        self.dst
    }

    /// The largest payload carried.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Sends one datagram to the destination.
    pub async fn send(&self, payload: &[u8]) -> Result<(), RelayError> {
        if payload.len() > self.max_payload {
            return Err(RelayError::TooLarge {
                dst: self.dst,
                len: payload.len(),
                max: self.max_payload,
            });
        }
        self.socket
            .send(payload)
            .await
            .map(drop)
            .map_err(|e| self.relay_err(e))
    }

    /// Receives one datagram from the destination into `buf`, which must hold
    /// `max_payload + 1` bytes so that an oversized datagram is detected rather than
    /// silently truncated. An oversized datagram is dropped and reported as
    /// [`RelayError::TooLarge`]; the relay stays usable.
    pub async fn recv(&self, buf: &mut [u8]) -> Result<usize, RelayError> {
        let want = self.max_payload + 1;
        let buf_len = buf.len();
        let Some(buf) = buf.get_mut(..want) else {
            return Err(RelayError::Io {
                dst: self.dst,
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("receive buffer of {buf_len} bytes, need {want}"),
                ),
            });
        };
        let n = self.socket.recv(buf).await.map_err(|e| self.relay_err(e))?;
        if n > self.max_payload {
            return Err(RelayError::TooLarge {
                dst: self.dst,
                len: n,
                max: self.max_payload,
            });
        }
        Ok(n)
    }

    fn relay_err(&self, err: io::Error) -> RelayError {
        if err.kind() == io::ErrorKind::ConnectionRefused {
            RelayError::Refused { dst: self.dst }
        } else {
            RelayError::Io {
                dst: self.dst,
                source: err,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_kinds() {
        let dst: SocketAddr = "192.0.2.1:443".parse().unwrap();
        let t = Duration::from_secs(5);
        let kind = |e: io::Error| DialError::from_io(dst, e, t).kind();
        assert_eq!(
            kind(io::ErrorKind::ConnectionRefused.into()),
            DialErrorKind::Refused
        );
        assert_eq!(kind(io::ErrorKind::TimedOut.into()), DialErrorKind::Timeout);
        // The errno values Linux returns for "no route to host" and "network unreachable".
        assert_eq!(
            kind(io::Error::from_raw_os_error(113)),
            DialErrorKind::Unreachable
        );
        assert_eq!(
            kind(io::Error::from_raw_os_error(101)),
            DialErrorKind::Unreachable
        );
        assert_eq!(
            kind(io::ErrorKind::AddrNotAvailable.into()),
            DialErrorKind::Other
        );
    }
}
