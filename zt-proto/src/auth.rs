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
//!
//! A device enrolled through an identity provider holds an Ed25519 key instead, and signs
//! `SIGNATURE_DOMAIN || exporter || register-without-proof`; the edge stores only the public
//! key, so nothing it holds is enough to pose as the device. Which kind of proof a claim
//! needs is decided by what the edge stores for it ([`VerifyKey`]), never by the frame: a
//! signature never verifies against a shared key, nor a MAC against a public key.

use ring::hmac;
use zt_creds::{AuthKey, DeviceKey, DevicePublicKey};

use crate::error::EncodeError;
use crate::frame::{Proof, Register, PROOF_LEN};

/// TLS exporter label for the registration proof.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-zt/1 register";
/// TLS exporter context for the registration proof (empty).
pub const EXPORTER_CONTEXT: &[u8] = b"";
/// Length of the exporter value the proof covers.
pub const EXPORTER_LEN: usize = 32;
/// Domain separator that starts the HMAC input, so the key is never used for another
/// message format by accident.
pub const PROOF_DOMAIN: &[u8] = b"zt/1 register proof\0";
/// Domain separator that starts the signed message of an Ed25519 registration proof.
pub const SIGNATURE_DOMAIN: &[u8] = b"zt/1 register signature\0";

/// What a peer proves its identity with.
#[derive(Debug, Clone)]
pub enum ProofKey {
    /// The key derived from a tunnel or device secret (HMAC proof).
    Shared(AuthKey),
    /// A device's own Ed25519 key (signature proof).
    Device(DeviceKey),
}

impl From<AuthKey> for ProofKey {
    fn from(key: AuthKey) -> Self {
        Self::Shared(key)
    }
}

/// What the edge checks a proof against.
#[derive(Debug, Clone)]
pub enum VerifyKey {
    /// The stored key derived from the secret.
    Shared(AuthKey),
    /// The device's stored public key.
    Device(DevicePublicKey),
}

impl From<AuthKey> for VerifyKey {
    fn from(key: AuthKey) -> Self {
        Self::Shared(key)
    }
}

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

/// The message an Ed25519 registration proof signs.
fn signed_message(exporter: &Exporter, signed: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNATURE_DOMAIN.len() + exporter.len() + signed.len());
    msg.extend_from_slice(SIGNATURE_DOMAIN);
    msg.extend_from_slice(exporter);
    msg.extend_from_slice(signed);
    msg
}

/// Fills in `register.proof` for this connection: an HMAC for a shared key, an Ed25519
/// signature for a device key.
pub fn sign_register(
    register: &mut Register,
    key: &ProofKey,
    exporter: &Exporter,
) -> Result<(), EncodeError> {
    register.proof = match key {
        ProofKey::Shared(key) => Proof::Mac(compute_proof(key, exporter, register)?),
        ProofKey::Device(key) => {
            let signed = register.signed_bytes()?;
            Proof::Signature(key.sign(&signed_message(exporter, &signed)))
        }
    };
    Ok(())
}

/// Checks `register.proof` against `key` for this connection (an HMAC in constant time, or
/// an Ed25519 signature).
///
/// Returns `false` for any mismatch, including a proof of the other kind and a register
/// frame too large to re-encode.
pub fn verify_proof(key: &VerifyKey, exporter: &Exporter, register: &Register) -> bool {
    let Ok(signed) = register.signed_bytes() else {
        return false;
    };
    match (key, &register.proof) {
        (VerifyKey::Shared(key), Proof::Mac(tag)) => {
            let k = hmac::Key::new(hmac::HMAC_SHA256, key.expose_bytes());
            let mut msg = Vec::with_capacity(PROOF_DOMAIN.len() + exporter.len() + signed.len());
            msg.extend_from_slice(PROOF_DOMAIN);
            msg.extend_from_slice(exporter);
            msg.extend_from_slice(&signed);
            // ring's verify compares the tags in constant time.
            hmac::verify(&k, &msg, tag).is_ok()
        }
        (VerifyKey::Device(public), Proof::Signature(sig)) => {
            public.verify(&signed_message(exporter, &signed), sig)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use uuid::Uuid;
    use zt_creds::{AuthKey, DeviceKey};

    use super::*;
    use crate::frame::{Claim, ClientClaim, ControlFrame, PROTOCOL_VERSION};

    fn register() -> Register {
        Register {
            protocol_version: PROTOCOL_VERSION,
            claim: Claim::Client(ClientClaim {
                device_id: Uuid::from_bytes([7; 16]),
                vnet: String::new(),
            }),
            software_version: "zt test".into(),
            features: vec![],
            proof: Proof::EMPTY,
        }
    }

    #[test]
    fn a_device_signature_verifies_with_its_public_key_only() {
        let device = DeviceKey::generate();
        let mut r = register();
        sign_register(&mut r, &ProofKey::Device(device.clone()), &[1; 32]).unwrap();
        assert!(matches!(r.proof, Proof::Signature(_)));
        let public = VerifyKey::Device(device.public_key());
        assert!(verify_proof(&public, &[1; 32], &r));
        // Another connection, another key, an edited claim: all refused.
        assert!(!verify_proof(&public, &[2; 32], &r));
        let other = VerifyKey::Device(DeviceKey::generate().public_key());
        assert!(!verify_proof(&other, &[1; 32], &r));
        let mut edited = r.clone();
        edited.software_version = "zt tesT".into();
        assert!(!verify_proof(&public, &[1; 32], &edited));
        // The frame carries the 64-byte proof and decodes to the same kind.
        let mut buf = bytes::BytesMut::new();
        ControlFrame::Register(r.clone()).encode(&mut buf).unwrap();
        let mut wire = Bytes::from(buf.to_vec());
        let Some(ControlFrame::Register(back)) = ControlFrame::decode(&mut wire).unwrap() else {
            panic!("not a register frame")
        };
        assert_eq!(back, r);
    }

    #[test]
    fn a_proof_of_one_kind_never_verifies_against_a_key_of_the_other() {
        let shared = AuthKey::from_bytes([9; 32]);
        let device = DeviceKey::generate();
        let mut mac = register();
        sign_register(&mut mac, &ProofKey::Shared(shared.clone()), &[1; 32]).unwrap();
        let mut sig = register();
        sign_register(&mut sig, &ProofKey::Device(device.clone()), &[1; 32]).unwrap();
        assert!(verify_proof(
            &VerifyKey::Shared(shared.clone()),
            &[1; 32],
            &mac
        ));
        assert!(!verify_proof(
            &VerifyKey::Device(device.public_key()),
            &[1; 32],
            &mac
        ));
        assert!(!verify_proof(&VerifyKey::Shared(shared), &[1; 32], &sig));
    }
}
