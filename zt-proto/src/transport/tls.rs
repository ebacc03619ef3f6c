//! TLS for the transport: the edge's certificate and key, and how connectors and clients
//! decide to trust the edge (its CA certificate, or the SHA-256 fingerprint of it).
//!
//! TLS 1.3 only, ALPN `zt/1`, no 0-RTT, ring as the crypto provider (the edge also accepts
//! the X25519MLKEM768 hybrid group, see `hybrid_kx`). An edge may also offer
//! ALPN `argotunnel` (cloudflared's protocol) on the same UDP port and `h2` with server name
//! `h2.cftunnel.com` (cloudflared's HTTP/2 mode) on the same TCP port: the certificate is
//! then chosen per handshake from what the client offers (see [`AlpnCertResolver`]).

use std::fmt;
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use zt_creds::CaFingerprint;

use crate::frame::ALPN_ZT1;

/// The ALPN protocol id of cloudflared's QUIC transport. An edge bound with
/// [`EdgeListener::bind_with_argotunnel`](crate::EdgeListener::bind_with_argotunnel) offers it
/// beside [`ALPN_ZT1`] and hands such connections over untouched.
pub const ALPN_ARGOTUNNEL: &[u8] = b"argotunnel";

/// The ALPN protocol id of cloudflared's HTTP/2 transport (`--protocol http2`), offered on
/// the TCP listener of an edge that serves cloudflared, to clients that ask for
/// [`CLOUDFLARED_H2_SERVER_NAME`] alone.
pub const ALPN_H2: &[u8] = b"h2";

/// The TLS server name cloudflared asks for in HTTP/2 mode.
pub const CLOUDFLARED_H2_SERVER_NAME: &str = "h2.cftunnel.com";

/// A certificate, key or trust setting could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// The PEM text holds no certificate.
    #[error("no certificate found in the PEM data for {what}")]
    NoCertificate {
        /// Which input ("edge certificate chain", "edge CA certificate").
        what: &'static str,
    },
    /// The PEM text could not be parsed.
    #[error("invalid PEM in {what}: {reason}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// What the parser said.
        reason: String,
    },
    /// rustls refused the certificate, key or CA.
    #[error("TLS configuration refused for {what}: {source}")]
    Rustls {
        /// Which input.
        what: &'static str,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
}

fn is_pem(data: &[u8]) -> bool {
    let start = data
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(data.len());
    data[start..].starts_with(b"-----BEGIN")
}

pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The edge's provider: ring's, plus the X25519MLKEM768 hybrid group. Current cloudflared
/// releases offer that group first (and only it with `--post-quantum`); zt's own peers do
/// not offer it, so for them nothing changes. The client's order decides the group, so its
/// place in this list does not matter.
pub(super) fn server_provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.kx_groups.insert(0, super::hybrid_kx::X25519_MLKEM768);
    Arc::new(p)
}

/// The edge's TLS identity: its certificate chain (server certificate first, then the CA
/// certificate, so pinning peers can find the CA) and private key.
pub struct ServerIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("chain_len", &self.chain.len())
            .field("key", &"[redacted]")
            .finish()
    }
}

impl ServerIdentity {
    /// From DER: the chain (server certificate first) and a PKCS#8, PKCS#1 or SEC1 key.
    pub fn from_der(chain: Vec<Vec<u8>>, key: Vec<u8>) -> Result<Self, TlsConfigError> {
        if chain.is_empty() {
            return Err(TlsConfigError::NoCertificate {
                what: "edge certificate chain",
            });
        }
        let key = PrivateKeyDer::try_from(key).map_err(|e| TlsConfigError::Pem {
            what: "edge private key",
            reason: e.to_owned(),
        })?;
        Ok(Self {
            chain: chain.into_iter().map(CertificateDer::from).collect(),
            key,
        })
    }

    /// From PEM text: the chain (server certificate first) and the private key.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsConfigError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsConfigError::Pem {
                what: "edge certificate chain",
                reason: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(TlsConfigError::NoCertificate {
                what: "edge certificate chain",
            });
        }
        // The parser's error text never includes key bytes.
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsConfigError::Pem {
            what: "edge private key",
            reason: e.to_string(),
        })?;
        Ok(Self { chain, key })
    }

    /// The chain, leaf first.
    pub(super) fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// A copy of the private key.
    pub(super) fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    #[cfg(test)]
    pub(crate) fn quic_server_config(&self) -> Result<QuicServerConfig, TlsConfigError> {
        self.quic_server_config_with(None)
    }

    fn certified_key(
        &self,
        provider: &CryptoProvider,
        what: &'static str,
    ) -> Result<Arc<CertifiedKey>, TlsConfigError> {
        let key = provider
            .key_provider
            .load_private_key(self.key.clone_key())
            .map_err(|source| TlsConfigError::Rustls { what, source })?;
        let certified = CertifiedKey::new(self.chain.clone(), key);
        certified
            .keys_match()
            .map_err(|source| TlsConfigError::Rustls { what, source })?;
        Ok(Arc::new(certified))
    }

    /// The edge's server configuration; with `argotunnel`, ALPN `argotunnel` is offered too
    /// and its handshakes present that identity.
    pub(crate) fn quic_server_config_with(
        &self,
        argotunnel: Option<&ServerIdentity>,
    ) -> Result<QuicServerConfig, TlsConfigError> {
        let mut cfg = self.rustls_server_config(argotunnel, false)?;
        if argotunnel.is_some() {
            cfg.alpn_protocols.push(ALPN_ARGOTUNNEL.to_vec());
        }
        QuicServerConfig::try_from(cfg).map_err(|e| TlsConfigError::Rustls {
            what: "QUIC server configuration",
            source: rustls::Error::General(e.to_string()),
        })
    }

    /// The edge's TLS-over-TCP configuration: the same TLS 1.3 only, the same certificate
    /// and no early data as over QUIC, offering ALPN `zt/1` (a client that offers none of
    /// the edge's protocols fails the handshake with `no_application_protocol`); with
    /// `argotunnel`, `h2` too, for cloudflared's HTTP/2 mode, presenting that identity.
    pub(crate) fn tcp_server_config(
        &self,
        argotunnel: Option<&ServerIdentity>,
    ) -> Result<rustls::ServerConfig, TlsConfigError> {
        let mut cfg = self.rustls_server_config(argotunnel, true)?;
        if argotunnel.is_some() {
            cfg.alpn_protocols.push(ALPN_H2.to_vec());
        }
        Ok(cfg)
    }

    fn rustls_server_config(
        &self,
        argotunnel: Option<&ServerIdentity>,
        tcp: bool,
    ) -> Result<rustls::ServerConfig, TlsConfigError> {
        let provider = server_provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|source| TlsConfigError::Rustls {
                what: "TLS versions",
                source,
            })?
            .with_no_client_auth();
        let mut cfg = match argotunnel {
            None => builder
                .with_single_cert(self.chain.clone(), self.key.clone_key())
                .map_err(|source| TlsConfigError::Rustls {
                    what: "edge certificate and key",
                    source,
                })?,
            Some(cf) => builder.with_cert_resolver(Arc::new(AlpnCertResolver {
                zt: self.certified_key(&provider, "edge certificate and key")?,
                argotunnel: cf.certified_key(&provider, "argotunnel certificate and key")?,
                tcp,
            })),
        };
        // The QUIC and TCP listeners offer the same protocols: zt/1 and the pre-login
        // enrollment exchange.
        cfg.alpn_protocols = vec![ALPN_ZT1.to_vec(), crate::enroll::ALPN_ENROLL.to_vec()];
        // No 0-RTT: early data could be replayed, and registration must be bound to a
        // completed handshake.
        cfg.max_early_data_size = 0;
        Ok(cfg)
    }
}

/// Picks the edge's certificate from the ClientHello. Over QUIC, a client that offers ALPN
/// `argotunnel` and not `zt/1` (an unmodified cloudflared, which always asks for
/// `quic.cftunnel.com`) gets the argotunnel identity. Over TCP, a client that asks for
/// `h2.cftunnel.com` offering `h2` or no ALPN at all, and none of zt's protocols, gets it
/// (cloudflared in HTTP/2 mode offers no ALPN); a client offering `h2` for any other name
/// gets no certificate at all: the handshake fails, so a browser or any other HTTP/2 client
/// is refused before a byte of HTTP/2. Everyone else gets the
/// edge's own. rustls then selects the ALPN from the same offer, so the two always agree.
struct AlpnCertResolver {
    zt: Arc<CertifiedKey>,
    argotunnel: Arc<CertifiedKey>,
    tcp: bool,
}

impl fmt::Debug for AlpnCertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlpnCertResolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for AlpnCertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let (mut zt, mut argo, mut h2) = (false, false, false);
        for proto in hello.alpn().into_iter().flatten() {
            zt |= proto == ALPN_ZT1 || proto == crate::enroll::ALPN_ENROLL;
            argo |= proto == ALPN_ARGOTUNNEL;
            h2 |= proto == ALPN_H2;
        }
        if self.tcp {
            // cloudflared's HTTP/2 mode: `h2.cftunnel.com`, offering `h2` or (as the
            // releases seen so far do) no ALPN at all, and none of zt's protocols.
            let cloudflared = hello.server_name() == Some(CLOUDFLARED_H2_SERVER_NAME);
            let offered = hello.alpn().is_some_and(|mut a| a.next().is_some());
            if !zt && cloudflared && (h2 || !offered) {
                return Some(self.argotunnel.clone());
            }
            // `h2` for any other name is refused before a byte of HTTP/2.
            return (!h2 || zt).then(|| self.zt.clone());
        }
        Some(if argo && !zt {
            self.argotunnel.clone()
        } else {
            self.zt.clone()
        })
    }
}

/// How a connector or client decides to trust the edge.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum EdgeTrust {
    /// The edge's CA certificate (DER); the server certificate must chain to it.
    CaCertificate(CertificateDer<'static>),
    /// The SHA-256 fingerprint of the edge's CA certificate (DER). The edge sends its CA
    /// certificate in its chain; the one with this fingerprint becomes the only trust anchor.
    CaFingerprint(CaFingerprint),
}

impl EdgeTrust {
    /// Trust the CA certificate in this PEM text (the first certificate in it).
    pub fn ca_pem(pem: &[u8]) -> Result<Self, TlsConfigError> {
        let cert = CertificateDer::pem_slice_iter(pem)
            .next()
            .ok_or(TlsConfigError::NoCertificate {
                what: "edge CA certificate",
            })?
            .map_err(|e| TlsConfigError::Pem {
                what: "edge CA certificate",
                reason: e.to_string(),
            })?;
        Ok(Self::CaCertificate(cert))
    }

    /// Trust the CA certificate in a file's contents, PEM or DER (PEM is recognised by its
    /// `-----BEGIN` line).
    pub fn ca_file_contents(contents: &[u8]) -> Result<Self, TlsConfigError> {
        if is_pem(contents) {
            Self::ca_pem(contents)
        } else if contents.is_empty() {
            Err(TlsConfigError::NoCertificate {
                what: "edge CA certificate",
            })
        } else {
            Ok(Self::ca_der(contents.to_vec()))
        }
    }

    /// Trust this CA certificate (DER).
    pub fn ca_der(der: Vec<u8>) -> Self {
        Self::CaCertificate(CertificateDer::from(der))
    }

    /// Trust the CA certificate with this fingerprint.
    pub fn fingerprint(fp: CaFingerprint) -> Self {
        Self::CaFingerprint(fp)
    }

    pub(crate) fn quic_client_config(&self) -> Result<QuicClientConfig, TlsConfigError> {
        self.quic_client_config_for(ALPN_ZT1)
    }

    /// The QUIC client configuration offering `alpn` alone.
    pub(crate) fn quic_client_config_for(
        &self,
        alpn: &[u8],
    ) -> Result<QuicClientConfig, TlsConfigError> {
        QuicClientConfig::try_from(self.rustls_client_config(alpn)?).map_err(|e| {
            TlsConfigError::Rustls {
                what: "QUIC client configuration",
                source: rustls::Error::General(e.to_string()),
            }
        })
    }

    /// The peer's TLS-over-TCP configuration: the same TLS 1.3 only, the same CA pinning
    /// (an intercepting middlebox fails the handshake) and ALPN `zt/1`, as over QUIC.
    pub(crate) fn tcp_client_config(&self) -> Result<rustls::ClientConfig, TlsConfigError> {
        self.rustls_client_config(ALPN_ZT1)
    }

    /// The TLS-over-TCP configuration offering `alpn` alone.
    pub(crate) fn tcp_client_config_for(
        &self,
        alpn: &[u8],
    ) -> Result<rustls::ClientConfig, TlsConfigError> {
        self.rustls_client_config(alpn)
    }

    fn rustls_client_config(&self, alpn: &[u8]) -> Result<rustls::ClientConfig, TlsConfigError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|source| TlsConfigError::Rustls {
                what: "TLS versions",
                source,
            })?;
        let mut cfg = match self {
            Self::CaCertificate(ca) => {
                let mut roots = RootCertStore::empty();
                roots
                    .add(ca.clone())
                    .map_err(|source| TlsConfigError::Rustls {
                        what: "edge CA certificate",
                        source,
                    })?;
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Self::CaFingerprint(fp) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCaVerifier {
                    fingerprint: *fp,
                    provider: provider(),
                }))
                .with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![alpn.to_vec()];
        cfg.enable_early_data = false;
        Ok(cfg)
    }
}

/// The handshake-signature half of a `ServerCertVerifier` whose struct has a `provider:
/// Arc<CryptoProvider>` field: TLS 1.2 and 1.3 signatures checked with the provider's
/// algorithms, and its schemes named. Every verifier of this crate checks signatures the
/// same way, whatever it checks of the chain.
macro_rules! signatures_by_provider {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}
pub(crate) use signatures_by_provider;

/// Verifies a server chain against the CA certificate whose SHA-256 fingerprint is pinned:
/// the pinned certificate must be in the chain the edge sent, and the server certificate must
/// pass full WebPKI validation (signature, validity, name) with it as the only root.
#[derive(Debug)]
struct PinnedCaVerifier {
    fingerprint: CaFingerprint,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| CaFingerprint::of_der(c) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the edge's certificate chain holds no CA certificate with the pinned fingerprint"
                        .into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(format!("pinned CA unusable: {e}")))?;
        let others: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .filter(|c| c.as_ref() != ca.as_ref())
            .cloned()
            .collect();
        inner.verify_server_cert(end_entity, &others, server_name, ocsp_response, now)
    }

    signatures_by_provider!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pki() -> (String, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["edge.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    #[test]
    fn pem_identity_loads_and_its_debug_output_hides_the_key() {
        let (cert, key, _) = pki();
        let id = ServerIdentity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        let shown = format!("{id:?}");
        assert!(shown.contains("[redacted]"));
        assert!(!shown.contains("PRIVATE"));
        assert!(id.quic_server_config().is_ok());
    }

    #[test]
    fn missing_or_broken_inputs_name_what_is_wrong() {
        let (cert, key, _) = pki();
        assert!(matches!(
            ServerIdentity::from_pem(b"", key.as_bytes()),
            Err(TlsConfigError::NoCertificate {
                what: "edge certificate chain"
            })
        ));
        assert!(matches!(
            ServerIdentity::from_pem(cert.as_bytes(), b"not a key"),
            Err(TlsConfigError::Pem {
                what: "edge private key",
                ..
            })
        ));
        assert!(matches!(
            EdgeTrust::ca_file_contents(b""),
            Err(TlsConfigError::NoCertificate { .. })
        ));
        // A key that does not match the certificate is refused when the config is built.
        let (_, other_key, _) = pki();
        let id = ServerIdentity::from_pem(cert.as_bytes(), other_key.as_bytes()).unwrap();
        assert!(matches!(
            id.quic_server_config(),
            Err(TlsConfigError::Rustls {
                what: "edge certificate and key",
                ..
            })
        ));
    }

    #[test]
    fn a_ca_file_may_be_pem_or_der() {
        let (cert, _, der) = pki();
        let from_pem = EdgeTrust::ca_file_contents(format!("\n{cert}").as_bytes()).unwrap();
        let from_der = EdgeTrust::ca_file_contents(&der).unwrap();
        match (from_pem, from_der) {
            (EdgeTrust::CaCertificate(a), EdgeTrust::CaCertificate(b)) => assert_eq!(a, b),
            other => panic!("unexpected {other:?}"),
        }
    }
}
