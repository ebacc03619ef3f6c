//! zt-proto's integration tests, in one test binary (one module per topic) so the workspace
//! links one binary per crate instead of one per file.
#![allow(clippy::unwrap_used)]

#[cfg(feature = "transport")]
mod common;

mod argotunnel;
mod flows;
mod over_tcp;
mod over_tcp_abuse;
mod proptest_frames;
mod registration;
mod tcp_splice;
mod vectors;
