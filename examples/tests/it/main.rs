//! The end-to-end tests of the `zt` binary and the crates together, in one test binary (one
//! module per former file) so the workspace links one binary per crate instead of one per
//! file. Every module drives real processes (`CARGO_BIN_EXE_zt`) or the real runtimes over
//! loopback.
//!
//! `e2e_tun` re-executes this binary inside network namespaces, running only its ignored
//! helper test by exact name; `soak` is ignored (run by `benches/soak.sh`).
#![allow(clippy::unwrap_used)]

mod support;

mod abuse_auth;
mod abuse_enroll;
mod abuse_exhaustion;
mod abuse_flood;
mod abuse_policy;
mod abuse_secrets;
mod admin_cli;
mod cli;
mod client_socks;
mod config_as_code;
mod connector_run;
mod demo;
mod e2e_cloudflared;
mod e2e_cloudflared_binary;
mod e2e_edge_restart;
mod e2e_edges;
mod e2e_half_close;
mod e2e_identity_posture;
mod e2e_idp_login;
mod e2e_kubectl_path;
mod e2e_policy;
mod e2e_postgres;
mod e2e_replicas;
mod e2e_rolling_restart;
mod e2e_sessions;
mod e2e_tun;
mod e2e_udp;
mod faults_blackhole;
mod faults_impairment;
mod faults_k8s_streams;
mod faults_rolling;
mod idp_harness;
mod manifests;
mod soak;
