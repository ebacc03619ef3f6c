//! The admin API: HTTP/1.1 with JSON bodies on a loopback address, guarded by the bearer
//! token kept in the state directory.
//!
//! Every request must carry `Authorization: Bearer <token>`; the token is compared in
//! constant time before the body is read, and anything else gets 401. Bodies are bounded
//! by [`MAX_ADMIN_BODY`] (413 `body_too_large`) and must arrive within 10 s of the server
//! starting to read them (408 `body_timeout`). Errors are
//! `{"error": {"code", "message", "detail"}}` with a matching HTTP status. Writes go
//! through the [`Db`](crate::Db) in one transaction each; the running edge reloads routes
//! and policy on the new revision, so changes apply live.
//!
//! On bind the server writes its address to [`ADMIN_ADDR_FILE`] in the state directory
//! (0600, replaced atomically), where the admin CLI finds it next to the token.

mod api;
mod error;
mod http;
mod policy;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use zt_http::HttpServer;

pub use error::AdminError;

use crate::live::LiveView;
use crate::state::EdgeState;

/// The file in the state directory holding the admin API's address (`127.0.0.1:PORT`).
pub const ADMIN_ADDR_FILE: &str = "admin.addr";

/// Largest request body accepted, in bytes. The largest real request is a list of a few
/// thousand CIDRs or domains (tens of KiB); the bound keeps a confused client from making
/// the edge buffer without limit.
pub const MAX_ADMIN_BODY: usize = 1024 * 1024;

/// Options for [`AdminServer::bind_with`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct AdminOptions {
    /// Addresses (`host:port`) clients reach the edge at, written into the device
    /// credentials of `zt user add` when the caller names none.
    pub edge_addresses: Vec<String>,
    /// The key sealing secrets in a shared store, when the edge keeps one: `zt edge join`
    /// hands a copy to the new edge.
    pub secrets_key_file: Option<std::path::PathBuf>,
    /// The revision the running edge has applied: each change is answered once it applies
    /// (at most [`APPLY_WAIT`] later), so what the command made works at once.
    pub applied: Option<tokio::sync::watch::Receiver<crate::store::Revision>>,
}

/// Longest a change's answer waits for the running edge to apply it.
pub const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl AdminOptions {
    /// Sets the edge addresses put into device credentials by default.
    pub fn with_edge_addresses(mut self, addresses: Vec<String>) -> Self {
        self.edge_addresses = addresses;
        self
    }

    /// Answers changes once the running edge applied them.
    pub fn with_applied(
        mut self,
        applied: tokio::sync::watch::Receiver<crate::store::Revision>,
    ) -> Self {
        self.applied = Some(applied);
        self
    }

    /// Sets the secrets key file handed to joining edges.
    pub fn with_secrets_key_file(mut self, path: Option<std::path::PathBuf>) -> Self {
        self.secrets_key_file = path;
        self
    }
}

/// A running admin API server. Dropping it stops accepting; [`AdminServer::shutdown`]
/// also waits for requests in progress.
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    server: HttpServer,
}

impl AdminServer {
    /// Binds the admin API on `addr` (a loopback address; port 0 picks a free one), writes
    /// the bound address to [`ADMIN_ADDR_FILE`] and starts serving.
    pub async fn bind(
        addr: SocketAddr,
        state: Arc<EdgeState>,
        live: Arc<dyn LiveView>,
    ) -> Result<AdminServer, AdminError> {
        Self::bind_with(addr, state, live, AdminOptions::default()).await
    }

    /// [`AdminServer::bind`] with options.
    pub async fn bind_with(
        addr: SocketAddr,
        state: Arc<EdgeState>,
        live: Arc<dyn LiveView>,
        options: AdminOptions,
    ) -> Result<AdminServer, AdminError> {
        if !addr.ip().is_loopback() {
            return Err(AdminError::NotLoopback { addr });
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AdminError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| AdminError::Bind { addr, source })?;
        let path = state.dir().join(ADMIN_ADDR_FILE);
        let contents = format!("{local_addr}\n");
        let write_path = path.clone();
        tokio::task::spawn_blocking(move || {
            crate::fsutil::write_atomic(&write_path, contents.as_bytes())
        })
        .await
        .map_err(|e| AdminError::WriteAddress {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?
        .map_err(|source| AdminError::WriteAddress { path, source })?;
        let ctx = Arc::new(api::Ctx {
            state,
            live,
            edge_addresses: options.edge_addresses,
            secrets_key_file: options.secrets_key_file,
            applied: options.applied,
        });
        let server = http::spawn(listener, ctx);
        tracing::info!(addr = %local_addr, "admin API listening");
        Ok(AdminServer { local_addr, server })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in progress finish (a few seconds at most) and
    /// returns once the server is gone.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}
