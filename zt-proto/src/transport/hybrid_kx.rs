//! The X25519MLKEM768 hybrid key exchange (TLS group 0x11ec), which ring's provider lacks.
//!
//! Current cloudflared releases offer it first in their TLS handshakes to the edge, and with
//! `--post-quantum` it is the only group they offer, so an edge without it cannot serve them.
//! The group combines ML-KEM-768 (FIPS 203, the `ml-kem` crate) with X25519 (ring, through
//! rustls' own group), laid out as draft-ietf-tls-ecdhe-mlkem and Go's crypto/tls lay it out:
//!
//! - the client's share is the ML-KEM encapsulation key (1184 bytes) then its X25519 public
//!   key (32 bytes);
//! - the server's share is the ML-KEM ciphertext (1088 bytes) then its X25519 public key;
//! - the shared secret is the ML-KEM shared key (32 bytes) then the X25519 shared secret.
//!
//! Both halves must succeed: a malformed encapsulation key, ciphertext or X25519 key is an
//! invalid key share.

use ml_kem::array::Array;
use ml_kem::{Decapsulate, DecapsulationKey, EncapsulationKey, KeyExport, MlKem768};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::crypto::{ActiveKeyExchange, CompletedKeyExchange, SharedSecret, SupportedKxGroup};
use rustls::{Error, NamedGroup, PeerMisbehaved, ProtocolVersion};

/// ML-KEM-768 encapsulation key length.
const EK_LEN: usize = 1184;
/// ML-KEM-768 ciphertext length.
const CT_LEN: usize = 1088;
/// X25519 public key length.
const X25519_LEN: usize = 32;

/// The X25519MLKEM768 group, for a rustls provider's `kx_groups`.
pub(crate) static X25519_MLKEM768: &dyn SupportedKxGroup = &X25519MlKem768;

#[derive(Debug)]
struct X25519MlKem768;

fn x25519() -> &'static dyn SupportedKxGroup {
    rustls::crypto::ring::kx_group::X25519
}

fn random<const N: usize>() -> Result<[u8; N], Error> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| Error::FailedToGetRandomBytes)?;
    Ok(out)
}

fn invalid_share() -> Error {
    PeerMisbehaved::InvalidKeyShare.into()
}

impl SupportedKxGroup for X25519MlKem768 {
    /// The client side: a fresh ML-KEM key pair and X25519 key.
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let dk = DecapsulationKey::<MlKem768>::from_seed(Array(random::<64>()?));
        let ecdh = x25519().start()?;
        let mut pub_key = Vec::with_capacity(EK_LEN + X25519_LEN);
        pub_key.extend_from_slice(dk.encapsulation_key().to_bytes().as_slice());
        pub_key.extend_from_slice(ecdh.pub_key());
        Ok(Box::new(Active { dk, ecdh, pub_key }))
    }

    /// The server side: encapsulate to the client's ML-KEM key, X25519 with its key.
    fn start_and_complete(&self, peer: &[u8]) -> Result<CompletedKeyExchange, Error> {
        if peer.len() != EK_LEN + X25519_LEN {
            return Err(invalid_share());
        }
        let (ek, peer_x25519) = peer.split_at(EK_LEN);
        let ek = Array::try_from(ek).map_err(|_| invalid_share())?;
        // `new` checks the key as FIPS 203 requires (every coefficient reduced).
        let ek = EncapsulationKey::<MlKem768>::new(&ek).map_err(|_| invalid_share())?;
        let (ct, kem_secret) = ek.encapsulate_deterministic(&Array(random::<32>()?));
        let ecdh = x25519().start_and_complete(peer_x25519)?;
        let mut pub_key = Vec::with_capacity(CT_LEN + X25519_LEN);
        pub_key.extend_from_slice(ct.as_slice());
        pub_key.extend_from_slice(&ecdh.pub_key);
        let mut secret = Vec::with_capacity(64);
        secret.extend_from_slice(kem_secret.as_slice());
        secret.extend_from_slice(ecdh.secret.secret_bytes());
        Ok(CompletedKeyExchange {
            group: self.name(),
            pub_key,
            secret: SharedSecret::from(secret),
        })
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519MLKEM768
    }

    fn usable_for_version(&self, version: ProtocolVersion) -> bool {
        version == ProtocolVersion::TLSv1_3
    }
}

struct Active {
    dk: DecapsulationKey<MlKem768>,
    ecdh: Box<dyn ActiveKeyExchange>,
    pub_key: Vec<u8>,
}

impl ActiveKeyExchange for Active {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, Error> {
        if peer.len() != CT_LEN + X25519_LEN {
            return Err(invalid_share());
        }
        let (ct, peer_x25519) = peer.split_at(CT_LEN);
        let kem_secret = self.dk.decapsulate_slice(ct).map_err(|_| invalid_share())?;
        let ecdh = self.ecdh.complete(peer_x25519)?;
        let mut secret = Vec::with_capacity(64);
        secret.extend_from_slice(kem_secret.as_slice());
        secret.extend_from_slice(ecdh.secret_bytes());
        Ok(SharedSecret::from(secret))
    }

    fn pub_key(&self) -> &[u8] {
        &self.pub_key
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519MLKEM768
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_agree_and_shares_have_the_specified_layout() {
        let client = X25519_MLKEM768.start().unwrap();
        assert_eq!(client.pub_key().len(), 1216);
        let server = X25519_MLKEM768
            .start_and_complete(client.pub_key())
            .unwrap();
        assert_eq!(server.pub_key.len(), 1120);
        assert_eq!(server.group, NamedGroup::X25519MLKEM768);
        let client_secret = client.complete(&server.pub_key).unwrap();
        assert_eq!(client_secret.secret_bytes(), server.secret.secret_bytes());
        assert_eq!(client_secret.secret_bytes().len(), 64);
    }

    #[test]
    fn the_x25519_half_is_plain_x25519_at_the_end_of_each_share() {
        // A client whose X25519 half is computed separately must reach the same last 32
        // bytes of secret: the layout puts X25519 after ML-KEM in shares and secret.
        let ecdh = x25519().start().unwrap();
        let dk = DecapsulationKey::<MlKem768>::from_seed(Array([7u8; 64]));
        let mut share = dk.encapsulation_key().to_bytes().to_vec();
        share.extend_from_slice(ecdh.pub_key());
        let server = X25519_MLKEM768.start_and_complete(&share).unwrap();
        let x_secret = ecdh.complete(&server.pub_key[CT_LEN..]).unwrap();
        assert_eq!(&server.secret.secret_bytes()[32..], x_secret.secret_bytes());
        let kem = dk.decapsulate_slice(&server.pub_key[..CT_LEN]).unwrap();
        assert_eq!(&server.secret.secret_bytes()[..32], kem.as_slice());
    }

    #[test]
    fn malformed_shares_are_refused() {
        let client = X25519_MLKEM768.start().unwrap();
        let good = client.pub_key().to_vec();
        assert!(X25519_MLKEM768.start_and_complete(&good[..1215]).is_err());
        // An encapsulation key with an unreduced coefficient (all bits set).
        let mut bad = good.clone();
        bad[..EK_LEN].fill(0xff);
        assert!(X25519_MLKEM768.start_and_complete(&bad).is_err());
        // A server share of the wrong length.
        assert!(client.complete(&[0u8; 100]).is_err());
    }

    #[test]
    fn the_encapsulation_key_modulus_check_is_exact() {
        // FIPS 203 section 7.2: every 12-bit coefficient of the key must be below q = 3329.
        // The first coefficient is the low 12 bits of the first two bytes (little-endian).
        let client = X25519_MLKEM768.start().unwrap();
        let mut share = client.pub_key().to_vec();
        share[0] = 0x00; // 0xd00 = 3328 = q - 1: still a valid key
        share[1] = (share[1] & 0xf0) | 0x0d;
        assert!(X25519_MLKEM768.start_and_complete(&share).is_ok());
        share[0] = 0x01; // 0xd01 = 3329 = q: refused
        assert!(X25519_MLKEM768.start_and_complete(&share).is_err());
    }

    /// The edge's TLS configuration for `argotunnel`, over real QUIC on loopback, against
    /// clients offering the key-exchange groups each cloudflared generation offers (its
    /// tls.Config: P-256 only by default; since post-quantum became the default,
    /// X25519MLKEM768 first then P-256; with `--post-quantum`, X25519MLKEM768 alone). A
    /// client offering a single group proves that group was negotiated.
    #[tokio::test]
    async fn the_argotunnel_listener_accepts_every_group_cloudflared_offers() {
        use std::sync::Arc;

        use crate::transport::tls::ALPN_ARGOTUNNEL;
        use crate::ServerIdentity;

        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let leaf = |name: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            ServerIdentity::from_pem(
                format!("{}{}", cert.pem(), ca.pem()).as_bytes(),
                key.serialize_pem().as_bytes(),
            )
            .unwrap()
        };
        let crypto = leaf("edge.test")
            .quic_server_config_with(Some(&leaf("quic.cftunnel.com")))
            .unwrap();
        let server = quinn::Endpoint::server(
            quinn::ServerConfig::with_crypto(Arc::new(crypto)),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            while let Some(incoming) = server.accept().await {
                tokio::spawn(async move {
                    if let Ok(conn) = incoming.await {
                        conn.closed().await;
                    }
                });
            }
        });

        let ring = rustls::crypto::ring::kx_group::SECP256R1;
        let cases: [(&str, Vec<&'static dyn SupportedKxGroup>); 3] = [
            ("P-256 only (cloudflared 2023.x)", vec![ring]),
            (
                "X25519MLKEM768 then P-256 (post-quantum preferred)",
                vec![X25519_MLKEM768, ring],
            ),
            (
                "X25519MLKEM768 only (--post-quantum)",
                vec![X25519_MLKEM768],
            ),
        ];
        for (case, groups) in cases {
            let mut provider = rustls::crypto::ring::default_provider();
            provider.kx_groups = groups;
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.der().clone()).unwrap();
            let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            tls.alpn_protocols = vec![ALPN_ARGOTUNNEL.to_vec()];
            let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
            let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
            let conn = tokio::time::timeout(
                std::time::Duration::from_secs(20),
                ep.connect(addr, "quic.cftunnel.com").unwrap(),
            )
            .await
            .unwrap_or_else(|_| panic!("{case}: handshake timed out"))
            .unwrap_or_else(|e| panic!("{case}: handshake failed: {e}"));
            let alpn = conn
                .handshake_data()
                .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|d| d.protocol);
            assert_eq!(alpn.as_deref(), Some(ALPN_ARGOTUNNEL), "{case}");
            conn.close(0u32.into(), b"");
        }
    }
}
