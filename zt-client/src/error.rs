//! The client's errors, one enum per operation.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use zt_proto::{FlowStatus, FlowStatusCode, OpenError};

/// [`crate::Client::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The credentials list no edge address and none was given in the options.
    #[error("no edge address: the device credentials list none and no override was given")]
    NoEdge,
    /// An edge address is not `host:port`.
    #[error("edge address {addr:?} is not host:port")]
    BadEdgeAddress {
        /// The address as written.
        addr: String,
    },
    /// The virtual network name does not fit the register frame.
    #[error("virtual network {vnet:?} is longer than 255 bytes")]
    BadVnet {
        /// The name.
        vnet: String,
    },
    /// The edge refused the device and retrying cannot help (unknown device, revoked
    /// secret, unsupported version).
    #[error("the edge at {edge} refused this device: {message}")]
    Refused {
        /// The edge address.
        edge: String,
        /// The edge's message.
        message: String,
    },
    /// [`crate::ClientOptions::connections`] is out of range.
    #[error("{asked} connections asked for; a client keeps 1 to {max}")]
    BadConnections {
        /// What was asked.
        asked: usize,
        /// The most allowed.
        max: usize,
    },
    /// No listed edge could be reached and registered with; `last` is the last failure.
    #[error("could not connect to any edge ({tried} address(es) tried); last failure: {last}")]
    Unreachable {
        /// How many addresses were tried.
        tried: usize,
        /// The last failure, in words.
        last: String,
    },
}

/// A flow could not be opened. The variants that carry `dest` name the edge's answer; the
/// `Display` text is what a person running the command should read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// No route covers the destination in the client's virtual network.
    #[error("no route to {dest} in {}", vnet_words(vnet))]
    NoRoute {
        /// The destination.
        dest: SocketAddr,
        /// The virtual network the client uses ("" for the default).
        vnet: String,
    },
    /// A policy rule denied the flow.
    #[error("flow to {dest} denied by rule {rule}")]
    Denied {
        /// The destination.
        dest: SocketAddr,
        /// The rule's name.
        rule: String,
    },
    /// A route exists but no connector of its tunnel is connected to the edge.
    #[error("no live connector serves the route to {dest}")]
    NoConnector {
        /// The destination.
        dest: SocketAddr,
    },
    /// The destination refused the connection.
    #[error("{dest} refused the connection")]
    ConnectRefused {
        /// The destination.
        dest: SocketAddr,
    },
    /// The destination did not answer in time.
    #[error("connecting to {dest} timed out")]
    Timeout {
        /// The destination.
        dest: SocketAddr,
    },
    /// The destination's network is unreachable from the connector.
    #[error("{dest} is unreachable from the private network")]
    Unreachable {
        /// The destination.
        dest: SocketAddr,
    },
    /// A flow limit was reached (at the edge or the connector).
    #[error("too many flows: the limit was reached while opening a flow to {dest}")]
    TooManyFlows {
        /// The destination.
        dest: SocketAddr,
    },
    /// The edge answered with another error status.
    #[error("the edge refused the flow to {dest}: {status}")]
    Refused {
        /// The destination.
        dest: SocketAddr,
        /// The edge's answer.
        status: FlowStatus,
    },
    /// The edge did not answer the open in time.
    #[error("the edge did not answer the flow open to {dest} within {after:?}")]
    Unanswered {
        /// The destination.
        dest: SocketAddr,
        /// How long the client waited.
        after: Duration,
    },
    /// No connection to the edge came up within the wait bound.
    #[error("not connected to the edge (waited {waited:?}); last failure: {last}")]
    NotConnected {
        /// How long the dial waited for a connection.
        waited: Duration,
        /// Why the client is not connected, in words.
        last: String,
    },
    /// Too many opens are waiting for the edge's answer.
    #[error("too many flow opens waiting for the edge (limit {0})")]
    TooManyPending(usize),
    /// The client was shut down.
    #[error("the client is shut down")]
    Shutdown,
    /// Another transport failure.
    #[error("flow to {dest} failed while opening: {source}")]
    Transport {
        /// The destination.
        dest: SocketAddr,
        /// What failed.
        #[source]
        source: OpenError,
    },
}

fn vnet_words(vnet: &str) -> String {
    if vnet.is_empty() {
        "the default virtual network".to_owned()
    } else {
        format!("virtual network {vnet}")
    }
}

impl DialError {
    pub(crate) fn from_status(dest: SocketAddr, vnet: &str, status: FlowStatus) -> Self {
        match status.code {
            FlowStatusCode::NoRoute => Self::NoRoute {
                dest,
                vnet: vnet.to_owned(),
            },
            FlowStatusCode::Denied => Self::Denied {
                dest,
                rule: status.detail,
            },
            FlowStatusCode::NoConnector => Self::NoConnector { dest },
            FlowStatusCode::ConnectRefused => Self::ConnectRefused { dest },
            FlowStatusCode::Timeout => Self::Timeout { dest },
            FlowStatusCode::Unreachable => Self::Unreachable { dest },
            FlowStatusCode::TooManyFlows => Self::TooManyFlows { dest },
            _ => Self::Refused { dest, status },
        }
    }

    /// The edge's status code, when the edge answered with one.
    pub fn status_code(&self) -> Option<FlowStatusCode> {
        Some(match self {
            Self::NoRoute { .. } => FlowStatusCode::NoRoute,
            Self::Denied { .. } => FlowStatusCode::Denied,
            Self::NoConnector { .. } => FlowStatusCode::NoConnector,
            Self::ConnectRefused { .. } => FlowStatusCode::ConnectRefused,
            Self::Timeout { .. } => FlowStatusCode::Timeout,
            Self::Unreachable { .. } => FlowStatusCode::Unreachable,
            Self::TooManyFlows { .. } => FlowStatusCode::TooManyFlows,
            Self::Refused { status, .. } => status.code,
            _ => return None,
        })
    }
}

impl From<DialError> for io::Error {
    fn from(e: DialError) -> Self {
        let kind = match &e {
            DialError::ConnectRefused { .. } => io::ErrorKind::ConnectionRefused,
            DialError::Timeout { .. } | DialError::Unanswered { .. } => io::ErrorKind::TimedOut,
            DialError::Denied { .. } => io::ErrorKind::PermissionDenied,
            DialError::NoRoute { .. } | DialError::Unreachable { .. } => {
                io::ErrorKind::NetworkUnreachable
            }
            DialError::NotConnected { .. } | DialError::Shutdown => io::ErrorKind::NotConnected,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_a_person_expects() {
        let dest: SocketAddr = "198.51.100.101:443".parse().unwrap();
        let cases = [
            (
                FlowStatus::new(FlowStatusCode::NoRoute, ""),
                "no route to 198.51.100.101:443 in the default virtual network",
            ),
            (
                FlowStatus::denied("block-ssh"),
                "flow to 198.51.100.101:443 denied by rule block-ssh",
            ),
            (
                FlowStatus::new(FlowStatusCode::NoConnector, ""),
                "no live connector serves the route to 198.51.100.101:443",
            ),
            (
                FlowStatus::new(FlowStatusCode::ConnectRefused, ""),
                "198.51.100.101:443 refused the connection",
            ),
            (
                FlowStatus::new(FlowStatusCode::Timeout, ""),
                "connecting to 198.51.100.101:443 timed out",
            ),
            (
                FlowStatus::new(FlowStatusCode::Unreachable, ""),
                "198.51.100.101:443 is unreachable from the private network",
            ),
            (
                FlowStatus::new(FlowStatusCode::TooManyFlows, ""),
                "too many flows: the limit was reached while opening a flow to 198.51.100.101:443",
            ),
            (
                FlowStatus::new(FlowStatusCode::Internal, ""),
                "the edge refused the flow to 198.51.100.101:443: internal error",
            ),
        ];
        let staging = DialError::from_status(
            dest,
            "staging",
            FlowStatus::new(FlowStatusCode::NoRoute, ""),
        );
        assert_eq!(
            staging.to_string(),
            "no route to 198.51.100.101:443 in virtual network staging"
        );
        for (status, text) in cases {
            let code = status.code;
            let e = DialError::from_status(dest, "", status);
            assert_eq!(e.to_string(), text);
            assert_eq!(e.status_code(), Some(code));
        }
    }
}
