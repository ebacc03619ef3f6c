//! The quinn/rustls transport: drives the I/O-free core over QUIC, plus the two pieces of
//! transport plumbing every peer runtime needs: the TCP ↔ flow splice (`tcp`) and the
//! reconnect backoff (`backoff`), written once here so a fix lands everywhere at once.

pub(crate) mod argotunnel;
pub(crate) mod backoff;
pub(crate) mod conn;
pub(crate) mod endpoint;
pub(crate) mod error;
pub(crate) mod hybrid_kx;
#[cfg(test)]
mod hybrid_kx_openssl;
pub(crate) mod settings;
pub(crate) mod stream;
pub(crate) mod tcp;
pub(crate) mod tls;
