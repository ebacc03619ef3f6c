//! The OpenID Connect relying party of the zt edge.
//!
//! The edge signs engineers in with the company's identity provider (IdP). The laptop runs the
//! browser part of the authorization-code flow with PKCE and hands the code and verifier to
//! the edge; the edge redeems the code itself ([`Provider::redeem_code`]), so the ID token
//! comes straight from the IdP over TLS. Headless laptops use the device-authorization grant
//! (RFC 8628), which the edge runs too ([`Provider::start_device`],
//! [`Provider::poll_device`]). The login is bound to the device key that opened the exchange:
//! the nonce is [`login_nonce`]`(challenge, device public key)`.
//!
//! # What is checked, and why
//!
//! - **Discovery** ([`Discovery::parse`]): the document's `issuer` must be the configured
//!   issuer byte for byte (Discovery §4.3), or a compromised or mistyped discovery URL could
//!   substitute another IdP; every endpoint is `https://`.
//! - **Keys** ([`Jwks::parse`]): RSA of 2048..=8192 bits, EC P-256/P-384, Ed25519; keys not
//!   for signing, of unknown types or curves, and symmetric `oct` keys are skipped.
//! - **ID token** ([`verify_id_token`]): the `alg` must be on an allow-list of asymmetric
//!   algorithms, so `none` and HMAC (`HS*`, where a public key would become the secret) never
//!   reach a key; the key's type and its own `alg` must fit the header's `alg`; the signature
//!   is checked with ring before any claim is believed; then `iss` exact, `aud` contains the
//!   client id and no other audience, `azp` is the client id, `exp`/`nbf`/`iat` within the
//!   clock skew, and the nonce compared in constant time.
//! - **Login** ([`Provider::verify`]): an unknown `kid` refreshes the JWKS once (rate-limited,
//!   so made-up key ids cannot make the edge hammer the IdP); the email counts only when
//!   `email_verified` is true; the email's domain must be allowed; groups come from the
//!   configured claim; the nonce is remembered until the token expires, so an ID token cannot
//!   be used twice. Users are keyed by (`iss`, `sub`), never by email.
//!
//! Nothing here logs or returns a token, code, verifier or secret: [`ClientSecret`] and
//! [`Tokens`] print `<redacted>`, and error messages carry only what a person needs.
//!
//! This crate is not an OpenID Provider, keeps no sessions and knows nothing of policy; the
//! edge composes it.
//!
//! # Example
//!
//! ```
//! use zt_oidc::{login_nonce, pkce_challenge, pkce_verifier};
//!
//! let verifier = pkce_verifier();
//! assert!((43..=128).contains(&verifier.len()));
//! let challenge = pkce_challenge(&verifier);
//! assert_eq!(challenge.len(), 43);
//! let nonce = login_nonce(b"one-time challenge from the edge", b"device public key");
//! assert_eq!(nonce.len(), 43);
//! ```

mod discovery;
mod error;
mod http;
mod jwks;
pub mod jwt;
mod pkce;
mod provider;
mod settings;
mod verify;

pub use discovery::Discovery;
pub use error::OidcError;
pub use jwks::Jwks;
pub use pkce::{login_nonce, pkce_challenge, pkce_verifier};
pub use provider::{
    DeviceAuthorization, Provider, Tokens, VerifiedLogin, DEFAULT_KEY_REFRESH_MIN_INTERVAL,
    NONCE_LEDGER_CAPACITY,
};
pub use settings::{ClientSecret, ProviderSettings, DEFAULT_CLOCK_SKEW};
pub use verify::{verify_id_token, Checks, IdTokenClaims, ALLOWED_ALGS};

/// The IdP response parsers the fuzz targets reach directly.
#[cfg(fuzzing)]
pub mod fuzzing {
    use crate::{DeviceAuthorization, OidcError, Tokens};

    /// The token endpoint's success response.
    pub fn parse_tokens(body: &[u8]) -> Result<Tokens, OidcError> {
        crate::provider::parse_tokens(body)
    }

    /// The device authorization response.
    pub fn parse_device(body: &[u8]) -> Result<DeviceAuthorization, OidcError> {
        crate::provider::parse_device(body)
    }

    /// The OAuth `error` and `error_description` of an error body, bounded.
    pub fn oauth_error(body: &[u8]) -> (Option<String>, Option<String>) {
        crate::http::oauth_error(body)
    }
}
