//! Test support shared by zt's integration tests and benchmarks.
//!
//! Each piece here used to be written again (or included by `#[path]`) in the tests of every
//! crate that needed it; now there is one of each:
//!
//! - [`pki`]: test certificate authorities, server and client certificates, and the
//!   mutual-TLS set of a Kubernetes API server.
//! - [`data`]: deterministic payloads and their hashes, so both ends of a flow can check
//!   every byte.
//! - [`origin`]: TCP origins on loopback, the hashing origin above all (it answers the
//!   SHA-256 of what it read, then a known reply).
//! - [`loopback`]: the real edge ([`zt_edge::Edge`]) on loopback with its records written,
//!   connectors and clients at the protocol level (zt-proto) or as the real runtimes
//!   (zt-connector, zt-client), and round trips through them.
//! - [`stand_in`]: a small edge built straight on zt-proto's `EdgeListener`, for testing a
//!   client without the real edge.
//! - [`quic`]: bare quinn client endpoints, for tests that speak a protocol by hand.
//! - [`socks`]: a SOCKS5 CONNECT written out byte by byte.
//! - [`cloudflared`]: a connector speaking cloudflared's protocol (Cap'n Proto RPC through
//!   capnp-rpc, an implementation independent of the edge's codec).
//! - [`impair`]: a userspace UDP relay that loses, duplicates, reorders and delays packets.
//! - [`postgres`]: a real PostgreSQL server per test binary, a fresh database per test.
//! - [`oidc`]: a real OpenID Provider (oidc-provider on Node.js, over HTTPS) and a real
//!   browser (headless Chromium) through its login, consent and device pages.
//!
//! What it is not: a library for production code. Everything panics on failure, since a
//! failure here is a failed test; nothing is tuned for speed beyond what the tests need.
//!
//! A typical use, from an integration test of zt-edge:
//!
//! ```no_run
//! # async fn example() {
//! use zt_testkit::loopback::{allow_all, round_trip, Loopback};
//! use zt_testkit::origin::hashing_origin;
//!
//! // An edge routing and allowing loopback, a connector serving flows, a client.
//! let lb = Loopback::start(|_config| {}, &["127.0.0.0/8"], vec![allow_all()]).await;
//! let origin = hashing_origin("127.0.0.1:0", 1000);
//! round_trip(lb.open(origin.addr).await.unwrap(), b"hello", 1000).await;
//! lb.edge.shutdown().await;
//! # }
//! ```
// A test kit reports every failure by panicking: that is how a test fails.
#![allow(clippy::unwrap_used)]

pub mod cloudflared;
pub mod data;
pub mod impair;
pub mod loopback;
pub mod oidc;
pub mod origin;
pub mod pki;
pub mod postgres;
pub mod quic;
pub mod socks;
pub mod stand_in;

use std::time::{Duration, Instant};

/// How long any one awaited step may take before a test gives up. Generous: a step only
/// reaches it when it never completes, so a loaded machine does not fail a correct test.
pub const WAIT: Duration = Duration::from_secs(20);

/// Waits until `f` holds, polling every 20 ms for at most [`WAIT`]; panics naming `what`
/// otherwise.
pub async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not reached in {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Awaits `fut` for at most 30 s (a reconnect or a restart may take a few backoff steps);
/// panics naming `what` when it does not finish.
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    const LIMIT: Duration = Duration::from_secs(30);
    tokio::time::timeout(LIMIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {LIMIT:?}"))
}
