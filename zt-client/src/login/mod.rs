//! `zt login` and `zt logout`: enroll this device through the edge's identity provider, or
//! end its sign-in.
//!
//! The device key is made here and never leaves the machine; the edge learns only its
//! public half. The browser flow listens on a loopback port for the provider's redirect
//! (RFC 8252 §7.3) and hands the code and the PKCE verifier to the edge, which redeems the
//! code itself; the device-code flow shows a code a person approves on any browser while
//! the edge polls. The edge is trusted only through the CA fingerprint of the enrollment
//! string (or `--ca-fingerprint`): never on first use.

pub mod callback;

#[cfg(feature = "runtime")]
mod run;

pub use callback::{parse_callback, Callback, CallbackError, MAX_CALLBACK_HEAD};
#[cfg(feature = "runtime")]
pub use run::{login, logout, LoginError, LoginEvent, LoginFlow, LoginOptions, LOGIN_TIMEOUT};
