//! Proof of possession: how a connector or client shows it holds its secret without sending
//! it, in a way that is worthless on any other connection.
//!
//! Both ends of a TLS 1.3 connection can derive the same exporter value (RFC 8446, section
//! 7.5), and nobody outside the connection can. The peer computes
//! `HMAC-SHA256(auth_key, PROOF_DOMAIN || exporter || register-without-proof)`, where
//! `auth_key` is the HKDF output `zt-creds` derives from the secret. The edge, which stores
//! only `auth_key`, recomputes it and compares in constant time. A proof captured from one
//! connection fails on every other one because the exporter differs, and it also covers
//! every field of the register frame, so a claim cannot be edited under a valid proof.

use ring::hmac;
use zt_creds::AuthKey;

use crate::error::EncodeError;
use crate::frame::{Register, PROOF_LEN};

/// TLS exporter label for the registration proof.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-zt/1 register";
/// TLS exporter context for the registration proof (empty).
pub const EXPORTER_CONTEXT: &[u8] = b"";
/// Length of the exporter value the proof covers.
pub const EXPORTER_LEN: usize = 32;
/// Domain separator that starts the HMAC input, so the key is never used for another
/// message format by accident.
pub const PROOF_DOMAIN: &[u8] = b"zt/1 register proof\0";

/// The exporter value of one connection, as both ends derive it.
pub type Exporter = [u8; EXPORTER_LEN];

fn mac_input(ctx: &mut hmac::Context, exporter: &Exporter, signed: &[u8]) {
    ctx.update(PROOF_DOMAIN);
    ctx.update(exporter);
    ctx.update(signed);
}

/// Computes the proof for `register` on the connection whose exporter value is `exporter`.
pub fn compute_proof(
    key: &AuthKey,
    exporter: &Exporter,
    register: &Register,
) -> Result<[u8; PROOF_LEN], EncodeError> {
    let signed = register.signed_bytes()?;
    let k = hmac::Key::new(hmac::HMAC_SHA256, key.expose_bytes());
    let mut ctx = hmac::Context::with_key(&k);
    mac_input(&mut ctx, exporter, &signed);
    let tag = ctx.sign();
    let mut out = [0u8; PROOF_LEN];
    out.copy_from_slice(tag.as_ref());
    Ok(out)
}

/// Fills in `register.proof` for this connection.
pub fn sign_register(
    register: &mut Register,
    key: &AuthKey,
    exporter: &Exporter,
) -> Result<(), EncodeError> {
    register.proof = compute_proof(key, exporter, register)?;
    Ok(())
}

/// Checks `register.proof` against `key` for this connection, in constant time.
///
/// Returns `false` for any mismatch, including a register frame too large to re-encode.
pub fn verify_proof(key: &AuthKey, exporter: &Exporter, register: &Register) -> bool {
    let Ok(signed) = register.signed_bytes() else {
        return false;
    };
    let k = hmac::Key::new(hmac::HMAC_SHA256, key.expose_bytes());
    let mut msg = Vec::with_capacity(PROOF_DOMAIN.len() + exporter.len() + signed.len());
    msg.extend_from_slice(PROOF_DOMAIN);
    msg.extend_from_slice(exporter);
    msg.extend_from_slice(&signed);
    // ring's verify compares the tags in constant time.
    hmac::verify(&k, &msg, &register.proof).is_ok()
}
