//! Errors of the admin API: the typed error of starting the server, and the JSON error
//! every refused request gets.

use std::net::SocketAddr;
use std::path::PathBuf;

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::store::StoreError;

/// The admin API could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The address is not a loopback address; the admin API is never exposed beyond the
    /// host, since its token is the only thing guarding every tunnel and user.
    #[error("admin API address {addr} is not a loopback address; use 127.0.0.1 or [::1]")]
    NotLoopback {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The listening socket could not be bound.
    #[error("cannot listen for the admin API on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The bound address could not be written where the admin CLI looks for it.
    #[error("cannot write the admin API address to {}", path.display())]
    WriteAddress {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A refused request: HTTP status, a stable machine-readable code, a message for people
/// (saying what to do where there is something to do) and optional structured detail.
///
/// Sent as `{"error": {"code": …, "message": …, "detail": …}}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) detail: Value,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            detail: Value::Null,
        }
    }

    pub(crate) fn with_detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub(crate) fn body(&self) -> Value {
        json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "detail": self.detail,
            }
        })
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let message = e.to_string();
        match e {
            StoreError::Conflict {
                kind,
                field,
                value,
                existing,
            } => ApiError::conflict("conflict", message).with_detail(json!({
                "kind": kind.name(),
                "field": field,
                "value": value,
                "existing": existing,
            })),
            StoreError::NotFound { .. } => ApiError::not_found(message),
            StoreError::Dangling { .. } => ApiError::bad_request("unknown_reference", message),
            StoreError::InUse { by_kind, by_id, .. } => ApiError::conflict("in_use", message)
                .with_detail(json!({ "used_by": { "kind": by_kind.name(), "id": by_id } })),
            StoreError::Invalid { .. } => ApiError::bad_request("invalid", message),
            other => {
                tracing::error!(cause = %other, "admin API storage failure");
                ApiError::internal(format!("the edge's state store failed: {other}"))
            }
        }
    }
}
