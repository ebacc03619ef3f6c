//! The transport: drives the I/O-free core over a [`carrier::Transport`] (QUIC, via quinn
//! and rustls, today), plus the two pieces of
//! transport plumbing every peer runtime needs: the TCP ↔ flow splice (`tcp`) and the
//! reconnect backoff (`backoff`), written once here so a fix lands everywhere at once.

pub(crate) mod allowance;
pub(crate) mod argotunnel;
pub(crate) mod argotunnel_h2;
pub(crate) mod backoff;
pub(crate) mod carrier;
pub(crate) mod datagrams;
pub(crate) mod driver;
pub(crate) mod endpoint;
pub(crate) mod enrollment;
pub(crate) mod error;
pub(crate) mod hybrid_kx;
#[cfg(test)]
mod hybrid_kx_openssl;
pub(crate) mod links;
pub(crate) mod over_tcp;
pub(crate) mod peering;
pub(crate) mod register;
pub(crate) mod serve;
pub(crate) mod set;
pub(crate) mod settings;
pub(crate) mod shared;
pub(crate) mod stream;
pub(crate) mod tcp;
pub(crate) mod tcp_endpoint;
pub(crate) mod tls;
//
// How the pieces stack (each uses only those below it):
//   peering (edge-to-edge: its own endpoint, mutual TLS, the peer flow exchange)
//   endpoint (QUIC sockets, handshakes, ALPN)
//   register (every role's registration, over the seam)
//   links (the four role handles over one core) · serve (served flows) · datagrams
//   shared (flow opens, datagram routing) · driver (the one control loop)
//   carrier (the `Transport` seam and its QUIC implementation) · stream (flow streams)
