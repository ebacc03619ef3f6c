//! zt-client's integration tests, in one test binary (one module per topic) so the
//! workspace links one binary per crate instead of one per file.
#![allow(clippy::unwrap_used)]

mod common;

mod client;
mod sets;
mod transports;
