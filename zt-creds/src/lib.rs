//! Credentials for zt tunnels and devices.
//!
//! This crate owns every secret zt handles: the tunnel secret type ([`TunnelSecret`],
//! redacted, zeroized, compared in constant time), the authentication key derived from it
//! ([`AuthKey`]), cloudflared-compatible credentials files and tunnel tokens, device
//! credentials for clients, and the safe reading and writing of those files.
//!
//! It does no networking; `zt-proto` uses [`AuthKey`] to prove possession of a secret.
//!
//! ```
//! use zt_creds::TunnelSecret;
//!
//! let secret = TunnelSecret::generate();
//! assert_eq!(secret.len(), 32);
//! assert_eq!(format!("{secret:?}"), "[redacted]");
//! let key = secret.derive_auth_key();
//! assert_eq!(key, secret.derive_auth_key());
//! ```

mod secret;

pub use secret::{
    AuthKey, SecretLengthError, TunnelSecret, AUTH_KEY_INFO, AUTH_KEY_SALT, GENERATED_SECRET_LEN,
    MAX_SECRET_LEN, MIN_SECRET_LEN,
};
