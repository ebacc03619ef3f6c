//! The zt edge runtime.
//!
//! The edge accepts connectors and clients on one QUIC port, keeps the registry of live
//! connector connections per tunnel, the route table, the gateway policy, identities and
//! an audit log, and splices each client flow onto a connector of the right tunnel.
//!
//! This crate is not written yet; see the project's issues.
