//! The zt connector runtime.
//!
//! A connector runs inside a private network (for example as a Kubernetes Deployment),
//! dials *out* to the zt edge over QUIC, proves it owns a tunnel with its credentials
//! file, and serves the flows the edge hands it by dialing the requested private
//! address. It is cloudflared's role in Cloudflare Tunnel.
//!
//! This crate is not written yet; see the project's issues.
