//! PKCE (RFC 7636, `S256` only) and the nonce that binds a login to a device key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::digest::{Context, SHA256};
use ring::rand::{SecureRandom as _, SystemRandom};

/// Random bytes in a verifier: 48 bytes make 64 base64url characters (RFC 7636 §4.1 wants
/// 43..=128 unreserved characters and at least 256 bits of entropy; this has 384).
const VERIFIER_BYTES: usize = 48;

/// A fresh code verifier: 64 characters of `[A-Za-z0-9_-]` from the system's random source.
pub fn pkce_verifier() -> String {
    let mut bytes = [0u8; VERIFIER_BYTES];
    // The system random source failing is an unusable machine, not bad input.
    #[allow(clippy::expect_used)]
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random number generator failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The `S256` code challenge of a verifier: base64url-nopad(SHA-256(ASCII(verifier))).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&SHA256, verifier.as_bytes()))
}

/// The nonce that binds a login to a device key: base64url-nopad(SHA-256(challenge ‖ device
/// public key)). The edge makes the challenge (fixed length) and knows the key that opened the
/// exchange, so an ID token minted for one device cannot be replayed for another.
pub fn login_nonce(challenge: &[u8], device_public_key: &[u8]) -> String {
    let mut ctx = Context::new(&SHA256);
    ctx.update(challenge);
    ctx.update(device_public_key);
    URL_SAFE_NO_PAD.encode(ctx.finish())
}
