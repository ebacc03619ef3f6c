//! zt-connector's integration tests, in one test binary (one module per topic) so the
//! workspace links one binary per crate instead of one per file.
//!
//! `tests/signals.rs` stays a binary of its own: it sends SIGTERM and SIGINT to its own
//! process, which every test sharing that process would receive.
#![allow(clippy::unwrap_used)]

mod common;

mod metrics_server;
mod origin_dial;
mod runtime;
mod transports;
