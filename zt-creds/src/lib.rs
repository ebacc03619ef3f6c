//! Credentials for zt tunnels and devices.
//!
//! This crate owns every secret zt handles and the files that hold them:
//!
//! - [`TunnelSecret`]: 32 to 128 bytes, redacted in `Debug`/`Display`, zeroized on drop,
//!   compared in constant time; and the [`AuthKey`] derived from it, which is all the edge
//!   stores and all the wire protocol uses.
//! - [`TunnelCredentials`]: cloudflared's credentials file (`AccountTag`, `TunnelSecret`,
//!   `TunnelID`, `TunnelName`, `Endpoint`), read in every shape cloudflared has written and
//!   written in the compact shape cloudflared accepts.
//! - [`TunnelToken`]: cloudflared's tunnel token (base64 of `{"a","s","t","e"}`) plus zt's
//!   extension keys for a self-hosted edge's addresses and CA fingerprint.
//! - [`DeviceCredentials`]: what a client needs to reach and authenticate to an edge.
//! - [`read_private_file`] and [`write_private_file`]: size, type and permission checks on
//!   load ([`PermissionMode`]), atomic 0600 writes that never replace a file unless asked
//!   ([`ExistingFile`]).
//!
//! Errors are one enum per operation ([`ParseError`], [`TokenError`], [`LoadError`],
//! [`WriteError`]); they name the path and the JSON field and never quote a value, since a
//! value may be a secret in the wrong place.
//!
//! It is **not** a network or protocol crate: it never sends a secret anywhere, and proving
//! possession of a secret over a connection is `zt-proto`'s job, with [`AuthKey`]. Nor does
//! it parse `config.yaml`; the connector maps `credentials-permissions` onto
//! [`PermissionMode`].
//!
//! # Example
//!
//! ```
//! use zt_creds::{ExistingFile, PermissionMode, TunnelCredentials, TunnelSecret, TunnelToken};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("tunnel.json");
//!
//! let creds = TunnelCredentials {
//!     account_tag: "0123456789abcdef0123456789abcdef".into(),
//!     tunnel_id: "8e343b13-a087-48ea-825f-9783931ff2a5".parse()?,
//!     tunnel_name: Some("k8s_zero_trust_tunnel".into()),
//!     secret: TunnelSecret::generate(),
//!     endpoint: None,
//! };
//! creds.write(&path, ExistingFile::Refuse)?; // mode 0600, atomic
//! assert!(creds.write(&path, ExistingFile::Refuse).is_err()); // never clobbers
//!
//! let loaded = TunnelCredentials::load(&path, PermissionMode::Default)?;
//! assert_eq!(loaded, creds);
//! assert!(format!("{loaded:?}").contains("secret: [redacted]"));
//!
//! // One string that configures a connector.
//! let token = TunnelToken::from_credentials(loaded).encode();
//! let parsed: TunnelToken = token.parse()?;
//! assert_eq!(parsed.tunnel_id, creds.tunnel_id);
//! assert_eq!(parsed.secret, creds.secret);
//! # Ok(())
//! # }
//! ```

mod credentials;
mod device;
mod device_key;
mod enrollment;
mod file;
mod fingerprint;
mod json;
mod secret;
mod token;

pub use secret::{
    AuthKey, SecretLengthError, TunnelSecret, AUTH_KEY_INFO, AUTH_KEY_SALT, GENERATED_SECRET_LEN,
    MAX_SECRET_LEN, MIN_SECRET_LEN,
};

pub use credentials::TunnelCredentials;
pub use device::{DeviceAuth, DeviceCredentials};
pub use device_key::{
    DeviceKey, DeviceKeyError, DevicePublicKey, DEVICE_PUBLIC_KEY_LEN, DEVICE_SIGNATURE_LEN,
};
pub use enrollment::{Enrollment, EnrollmentError, ENROLLMENT_PREFIX, MAX_ENROLLMENT_LEN};
pub use token::{TokenError, TunnelToken, MAX_TOKEN_LEN, TOKEN_KEY_CA, TOKEN_KEY_EDGE};

pub use fingerprint::{CaFingerprint, FingerprintError};
pub use json::ParseError;

pub use file::{
    read_private_file, write_private_file, ExistingFile, LoadError, PermissionMode,
    PermissionModeError, WriteError, MAX_CREDENTIALS_FILE_LEN,
};
