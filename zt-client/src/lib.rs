//! The zt client runtime.
//!
//! The client runs on an engineer's device and carries each flow to the edge as one QUIC
//! stream: a local port forward, a SOCKS5 proxy, or an embeddable `dial()`.
//!
//! This crate is not written yet; see the project's issues.
