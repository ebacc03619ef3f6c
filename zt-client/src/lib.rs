//! The zt client runtime: what runs on an engineer's device (or inside a Rust service) and
//! carries each flow to the edge as one QUIC stream.
//!
//! - [`Client::connect`] registers the device with the edge (trying each listed edge
//!   address), keeps that connection up, reconnects with capped full-jitter backoff when
//!   it drops or the edge sends go-away, reports device posture, and publishes the routes
//!   the edge pushes ([`Client::routes`]).
//! - [`Client::dial`] opens a TCP flow as an `AsyncRead + AsyncWrite` stream
//!   ([`ClientStream`], half-close preserved); [`Client::dial_udp`] a UDP flow. A refusal
//!   comes back as a typed [`DialError`] that says what the edge answered: no route,
//!   denied by rule X, no live connector, refused, timed out, unreachable, too many flows.
//! - [`forward_tcp`] / [`forward_udp`] serve a local port that leads to one private
//!   address; [`serve_socks`] is a SOCKS5 proxy (CONNECT to IPv4, IPv6 and names).
//! - [`PostureSpec`] describes local checks (`file:`, `command:`, `env:`).
//!
//! - `tun` (Linux, cargo feature `tun`): a TUN device that captures the edge's pushed
//!   routes, so plain programs reach private addresses with no proxy set-up; each TCP
//!   connection is one flow, UDP to configured resolvers is carried too.
//!
//! What this crate is *not*: it makes no routing or policy decision (the edge does). It
//! never installs a tracing subscriber.
//!
//! The SOCKS5 wire format ([`socks`]) and the posture spec parser are free of I/O and
//! build without the default `runtime` feature.
//!
//! # Example: dial a private address from a Rust service
//!
//! ```no_run
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use zt_client::{Client, ClientOptions, DialError};
//! use zt_creds::{DeviceCredentials, PermissionMode};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let creds = DeviceCredentials::load("/etc/zt/device.json", PermissionMode::Default)?;
//! let client = Client::connect(&creds, ClientOptions::default()).await?;
//! match client.dial("198.51.100.101:443".parse()?).await {
//!     Ok(mut stream) => {
//!         stream.write_all(b"hello").await?;
//!         stream.shutdown().await?; // FIN; the answer can still arrive
//!         let mut answer = Vec::new();
//!         stream.read_to_end(&mut answer).await?;
//!     }
//!     // "flow to 198.51.100.101:443 denied by rule block-prod"
//!     Err(e @ DialError::Denied { .. }) => eprintln!("{e}"),
//!     Err(e) => return Err(e.into()),
//! }
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "runtime")]
mod backoff;
#[cfg(feature = "runtime")]
mod client;
#[cfg(feature = "runtime")]
mod error;
#[cfg(feature = "runtime")]
mod forward;
pub mod login;
mod posture;
#[cfg(feature = "runtime")]
mod proxy;
pub mod socks;
#[cfg(feature = "runtime")]
mod stream;
#[cfg(feature = "runtime")]
mod transport;

pub use posture::{PostureProbe, PostureSpec, PostureSpecError};

#[cfg(feature = "runtime")]
pub use client::{Client, ClientOptions, ConnectionState, MAX_CONNECTIONS};
#[cfg(feature = "runtime")]
pub use error::{ConnectError, DialError};
#[cfg(feature = "runtime")]
pub use forward::{forward_tcp, forward_udp, DEFAULT_UDP_IDLE, MAX_FORWARDED};
#[cfg(feature = "runtime")]
pub use proxy::{reply_code, serve_socks, HANDSHAKE_TIMEOUT};
#[cfg(feature = "runtime")]
pub use stream::ClientStream;
#[cfg(feature = "runtime")]
pub use transport::{EdgeProtocol, HttpProxy, ProtocolParseError, ProxyError, QUIC_HEAD_START};
// The protocol types a caller of this crate meets.
#[cfg(feature = "runtime")]
pub use zt_proto::{
    EdgeTrust, FlowStatus, FlowStatusCode, MemberReport, Placement, ResetCode, RoutePush,
    TransportSettings, UdpFlow,
};
#[cfg(all(feature = "tun", target_os = "linux"))]
pub mod tun;
