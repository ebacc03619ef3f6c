//! Test certificate authorities and the certificates they sign, made fresh with rcgen.
//!
//! A [`Ca`] signs [`Leaf`] certificates: server certificates for the names a test dials
//! (an IP literal becomes an IP address SAN, anything else a DNS name), client
//! certificates for mutual TLS. A leaf keeps its CA's certificate, so it can hand out the
//! chain an edge presents ([`Leaf::chain_pem`]) and what a peer trusts ([`Leaf::ca_der`],
//! [`Leaf::ca_fingerprint`]). [`KubePki`] is the set a Kubernetes API server and its user
//! hold: a CA, the server's certificate and a client certificate.
//!
//! Leaves are plain owned bytes and can be cloned, so a stand-in edge can restart with the
//! same identity.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zt_creds::CaFingerprint;
use zt_proto::{EdgeTrust, ServerIdentity};

/// The rustls crypto provider the product uses (ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, common_name);
    d
}

/// A subject alternative name for `name`: an IP address when it parses as one, else a DNS
/// name.
fn san(name: &str) -> SanType {
    match name.parse() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(
            name.try_into()
                .unwrap_or_else(|e| panic!("{name:?} is not a DNS name: {e}")),
        ),
    }
}

/// A certificate authority that signs test certificates.
pub struct Ca {
    der: CertificateDer<'static>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A fresh self-signed CA whose subject is `common_name`.
    pub fn new(common_name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            der: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A CA made elsewhere, from its certificate and private key in PEM (say, the edge's own
    /// `ca.pem` and `ca.key`), to sign certificates that CA never issued.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Ca {
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let key = KeyPair::from_pem(key_pem).unwrap();
        let issuer = Issuer::from_ca_cert_der(&der, key).unwrap();
        Ca {
            der,
            pem: cert_pem.to_owned(),
            issuer,
        }
    }

    /// The CA certificate, DER.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.pem.clone()
    }

    /// The pin of this CA: the SHA-256 of its certificate.
    pub fn fingerprint(&self) -> CaFingerprint {
        CaFingerprint::of_der(&self.der)
    }

    /// A certificate with subject `common_name`, the alternative names `sans` and, when
    /// given, one extended key usage.
    pub fn leaf(
        &self,
        common_name: &str,
        sans: &[&str],
        usage: Option<ExtendedKeyUsagePurpose>,
    ) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(common_name);
        params.subject_alt_names = sans.iter().map(|n| san(n)).collect();
        params.extended_key_usages = usage.into_iter().collect();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            der: cert.der().clone(),
            pem: cert.pem(),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
            ca_der: self.der.clone(),
            ca_pem: self.pem.clone(),
        }
    }

    /// A server certificate for `names` (the first one is also its subject).
    pub fn server(&self, names: &[&str]) -> Leaf {
        let cn = names.first().copied().unwrap_or("zt test server");
        self.leaf(cn, names, Some(ExtendedKeyUsagePurpose::ServerAuth))
    }

    /// A client certificate whose subject is `common_name` (Kubernetes takes the user name
    /// from it).
    pub fn client(&self, common_name: &str) -> Leaf {
        self.leaf(common_name, &[], Some(ExtendedKeyUsagePurpose::ClientAuth))
    }
}

/// A certificate and its private key, with the certificate of the CA that signed it.
#[derive(Clone, Debug)]
pub struct Leaf {
    der: CertificateDer<'static>,
    pem: String,
    key_der: Vec<u8>,
    key_pem: String,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
}

impl Leaf {
    /// A self-signed certificate for `names`: its own issuer, trusted by nobody.
    pub fn self_signed(names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = names.iter().map(|n| san(n)).collect();
        let cert = params.self_signed(&key).unwrap();
        Leaf {
            der: cert.der().clone(),
            pem: cert.pem(),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
            ca_der: cert.der().clone(),
            ca_pem: cert.pem(),
        }
    }

    /// The certificate, DER.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// The certificate, PEM.
    pub fn pem(&self) -> String {
        self.pem.clone()
    }

    /// The private key, PKCS#8 DER.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key_der.clone()).into()
    }

    /// The private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.key_pem.clone()
    }

    /// The certificate then its CA's, PEM: the chain a server presents.
    pub fn chain_pem(&self) -> String {
        format!("{}{}", self.pem, self.ca_pem)
    }

    /// The certificate then its CA's, DER.
    pub fn chain_der(&self) -> Vec<CertificateDer<'static>> {
        vec![self.der.clone(), self.ca_der.clone()]
    }

    /// The signing CA's certificate, DER.
    pub fn ca_der(&self) -> Vec<u8> {
        self.ca_der.to_vec()
    }

    /// The signing CA's certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// The pin of the signing CA.
    pub fn ca_fingerprint(&self) -> CaFingerprint {
        CaFingerprint::of_der(&self.ca_der)
    }

    /// What a zt peer trusts to reach a server presenting this certificate: its CA.
    pub fn trust(&self) -> EdgeTrust {
        EdgeTrust::ca_der(self.ca_der())
    }

    /// The certificate chain and key as a zt edge's identity.
    pub fn identity(&self) -> ServerIdentity {
        ServerIdentity::from_pem(self.chain_pem().as_bytes(), self.key_pem.as_bytes()).unwrap()
    }
}

/// A CA and a server certificate for `names` signed by it: what a test edge presents.
pub fn server(names: &[&str]) -> Leaf {
    Ca::new("zt test CA").server(names)
}

/// The certificates of a Kubernetes API server and its user: a CA, the server's
/// certificate (name `kubernetes` and the given addresses) and the client certificate of
/// `alice@example.com`, each fresh.
pub struct KubePki {
    /// The cluster CA.
    pub ca: Ca,
    /// The API server's certificate.
    pub server: Leaf,
    /// The user's client certificate.
    pub client: Leaf,
}

impl KubePki {
    /// A CA named `ca_name`; the API server's certificate for `kubernetes` and each of
    /// `server_ips`; the client certificate of `alice@example.com`.
    pub fn new(ca_name: &str, server_ips: &[&str]) -> KubePki {
        let ca = Ca::new(ca_name);
        let mut names = vec!["kubernetes"];
        names.extend_from_slice(server_ips);
        let server = ca.leaf(
            "kube-apiserver",
            &names,
            Some(ExtendedKeyUsagePurpose::ServerAuth),
        );
        let client = ca.client("alice@example.com");
        KubePki { ca, server, client }
    }

    /// Writes `ca.pem`, `server.pem`, `server.key`, `client.pem` and `client.key` into `dir`.
    pub fn write_to(&self, dir: &Path) {
        for (name, body) in [
            ("ca.pem", self.ca.pem()),
            ("server.pem", self.server.pem()),
            ("server.key", self.server.key_pem()),
            ("client.pem", self.client.pem()),
            ("client.key", self.client.key_pem()),
        ] {
            std::fs::write(dir.join(name), body).unwrap();
        }
    }

    /// The API server's TLS configuration: it requires a client certificate of the CA.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        mutual_tls_server_config(
            vec![self.ca.der().clone()],
            vec![self.server.der().clone()],
            self.server.key_der(),
        )
    }

    /// A client configuration trusting the CA, presenting the client certificate when
    /// `with_cert`.
    pub fn client_config(&self, with_cert: bool) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let b = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        Arc::new(if with_cert {
            b.with_client_auth_cert(vec![self.client.der().clone()], self.client.key_der())
                .unwrap()
        } else {
            b.with_no_client_auth()
        })
    }
}

/// A TLS server configuration presenting `chain` with `key` that requires a client
/// certificate issued by one of `client_roots`, as a Kubernetes API server does.
pub fn mutual_tls_server_config(
    client_roots: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Arc<rustls::ServerConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in client_roots {
        roots.add(c).unwrap();
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

/// The certificates of a PEM document.
pub fn pem_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// The certificates of a PEM file.
pub fn read_pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    pem_certs(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}
