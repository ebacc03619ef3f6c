//! zt-edge's integration tests, in one test binary (one module per topic) so the workspace
//! links one binary per crate instead of one per file.
//!
//! `durability` re-executes this binary as its child, running only its own ignored child
//! test by exact name.
#![allow(clippy::unwrap_used)]

mod common;

mod admin_api;
mod admin_slow_body;
mod audit;
mod audit_bounds;
mod cloudflared_edge;
mod cloudflared_h2;
mod cloudflared_replay;
mod cloudflared_wire;
mod config;
mod durability;
mod metrics_abuse;
mod postgres;
mod runtime;
mod state_dir;
mod store;
mod store_model;
