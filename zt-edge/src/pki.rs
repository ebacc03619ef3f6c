//! The edge's own certificate authority and the certificates it issues.
//!
//! The CA is what connectors and clients pin (SHA-256 of its DER), so it is created once and
//! never replaced; server certificates are short-lived by comparison and can be reissued
//! under it at any time. Every key is ECDSA P-256.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::hex;
use crate::timestamp::Timestamp;

/// CA lifetime: twenty years, so pins handed out today outlive the deployment.
const CA_VALIDITY: Duration = Duration::days(20 * 365 + 5);
/// Server certificate lifetime: the 397 days public CAs are held to, a habit worth keeping
/// even for a private CA; the edge renews well before the end (see `RENEW_BEFORE`).
pub(crate) const LEAF_VALIDITY: Duration = Duration::days(397);
/// A server certificate closer than this to its end is reissued when the state is opened.
pub(crate) const RENEW_BEFORE: Duration = Duration::days(30);
/// Backdating covers clients whose clocks run a little behind.
const BACKDATE: Duration = Duration::hours(1);

/// The host names and addresses a server certificate is valid for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerNames {
    /// DNS names.
    pub dns: Vec<String>,
    /// IP addresses.
    pub ips: Vec<IpAddr>,
}

impl ServerNames {
    /// `localhost`, this machine's host name, `127.0.0.1` and `::1`.
    pub fn defaults() -> Self {
        let mut dns = vec!["localhost".to_owned()];
        if let Some(host) = host_name() {
            dns.push(host);
        }
        Self {
            dns,
            ips: vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            ],
        }
        .normalized()
    }

    /// Sorted, lowercase and without duplicates, so two lists compare by content.
    pub(crate) fn normalized(mut self) -> Self {
        for d in &mut self.dns {
            *d = d.to_ascii_lowercase();
        }
        self.dns.sort();
        self.dns.dedup();
        self.ips.sort();
        self.ips.dedup();
        self
    }

    fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.ips.is_empty()
    }
}

/// This machine's host name when it is a usable DNS name. Read from procfs because the
/// standard library has no portable call and the crate forbids `unsafe`.
fn host_name() -> Option<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = raw.trim().to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name != "localhost"
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    valid.then_some(name)
}

/// A failure to create key material or a certificate.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IssueError {
    #[error(transparent)]
    Rcgen(#[from] rcgen::Error),
    #[error("the system random generator failed")]
    Random,
    #[error("no DNS name or IP address to certify")]
    NoNames,
    #[error(
        "this edge holds no CA key (it joined with `zt edge join`): certificates are issued on \
         the edge that holds the CA key"
    )]
    NoCaKey,
}

fn random_serial() -> Result<SerialNumber, IssueError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| IssueError::Random)?;
    // A positive INTEGER of at most 20 octets, as RFC 5280 asks.
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// The CA: certificate and, on the edge that issues certificates, its signing key. An edge
/// that joined another's organisation (`zt edge join`) has the certificate alone.
pub(crate) struct Ca {
    pub(crate) cert_der: CertificateDer<'static>,
    pub(crate) cert_pem: String,
    key: Option<KeyPair>,
}

/// A newly issued certificate with its key, in PEM for the files and DER for rustls.
pub(crate) struct Issued {
    pub(crate) chain_pem: String,
    pub(crate) key_pem: String,
    pub(crate) leaf: LeafInfo,
}

/// What the edge needs from a server certificate.
pub(crate) struct LeafInfo {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
    pub(crate) names: ServerNames,
    pub(crate) not_after: Timestamp,
}

impl Ca {
    /// Creates a new CA named after the account tag.
    pub(crate) fn generate(account_tag: &str) -> Result<Self, IssueError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let prefix: String = account_tag.chars().take(8).collect();
        dn.push(DnType::CommonName, format!("zt edge CA {prefix}"));
        dn.push(DnType::OrganizationName, "zt");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            key: Some(key),
        })
    }

    /// Loads the CA from its PEM files, checking that the key (when there is one) belongs
    /// to the certificate. Errors name the file (`cert` or `key`) and what is wrong.
    pub(crate) fn load(cert_pem: &str, key_pem: Option<&str>) -> Result<Self, (Which, String)> {
        let mut certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes());
        let cert_der = match certs.next() {
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err((Which::Cert, format!("not a PEM certificate: {e}"))),
            None => return Err((Which::Cert, "holds no certificate".to_owned())),
        };
        if certs.next().is_some() {
            return Err((Which::Cert, "holds more than one certificate".to_owned()));
        }
        let (_, parsed) = X509Certificate::from_der(&cert_der)
            .map_err(|e| (Which::Cert, format!("not a valid X.509 certificate: {e}")))?;
        if !parsed.is_ca() {
            return Err((Which::Cert, "is not a CA certificate".to_owned()));
        }
        let key = match key_pem {
            None => None,
            Some(pem) => {
                let key = KeyPair::from_pem(pem)
                    .map_err(|e| (Which::Key, format!("not a usable private key: {e}")))?;
                if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
                    return Err((Which::Key, "does not match the CA certificate".to_owned()));
                }
                Some(key)
            }
        };
        Ok(Self {
            cert_der,
            cert_pem: cert_pem.to_owned(),
            key,
        })
    }

    /// SHA-256 of the CA certificate's DER: the pin.
    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        sha256(&self.cert_der)
    }

    /// The CA key in PEM, when this edge holds it.
    pub(crate) fn key_pem(&self) -> Option<String> {
        self.key.as_ref().map(KeyPair::serialize_pem)
    }

    /// Whether this edge holds the CA key (and so issues certificates).
    pub(crate) fn has_key(&self) -> bool {
        self.key.is_some()
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, IssueError> {
        let key = self.key.as_ref().ok_or(IssueError::NoCaKey)?;
        Ok(Issuer::from_ca_cert_der(&self.cert_der, key)?)
    }

    /// Issues the peering certificate of edge `edge_id`: a URI SAN naming the edge id and
    /// both TLS usages (it serves the peering listener and dials peers with it), no DNS
    /// name, so it is no server certificate for connectors or clients.
    pub(crate) fn issue_peer(&self, edge_id: uuid::Uuid) -> Result<Issued, IssueError> {
        let sans = vec![SanType::URI(peer_edge_uri(edge_id).try_into()?)];
        let usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let label = format!("zt edge {edge_id}");
        self.issue_leaf(&label, sans, usages, PEER_VALIDITY, ServerNames::default())
    }

    /// Issues a server certificate for `names`.
    pub(crate) fn issue_server(
        &self,
        names: &ServerNames,
        label: &str,
    ) -> Result<Issued, IssueError> {
        self.issue_server_valid_for(names, label, LEAF_VALIDITY)
    }

    /// Issues a server certificate valid from now (backdated) for `validity`.
    pub(crate) fn issue_server_valid_for(
        &self,
        names: &ServerNames,
        label: &str,
        validity: Duration,
    ) -> Result<Issued, IssueError> {
        let names = names.clone().normalized();
        if names.is_empty() {
            return Err(IssueError::NoNames);
        }
        let sans = names
            .dns
            .iter()
            .map(|d| Ok(SanType::DnsName(d.clone().try_into()?)))
            .chain(names.ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
            .collect::<Result<_, rcgen::Error>>()?;
        let usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue_leaf(label, sans, usages, validity, names)
    }

    /// Issues a leaf under this CA with a new key: `label` as its common name, `sans` as its
    /// subject alternative names, `usages` as its extended key usages, valid from now
    /// (backdated) for `validity`. `names` is what the edge records it as certifying.
    fn issue_leaf(
        &self,
        label: &str,
        sans: Vec<SanType>,
        usages: Vec<ExtendedKeyUsagePurpose>,
        validity: Duration,
        names: ServerNames,
    ) -> Result<Issued, IssueError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, label);
        dn.push(DnType::OrganizationName, "zt");
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages;
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - BACKDATE;
        params.not_after = now + validity;
        params.serial_number = Some(random_serial()?);
        let cert = params.signed_by(&key, &self.issuer()?)?;
        let chain_pem = format!("{}{}", cert.pem(), self.cert_pem);
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok(Issued {
            chain_pem,
            key_pem: key.serialize_pem(),
            leaf: LeafInfo {
                chain: vec![cert.der().clone(), self.cert_der.clone()],
                key: key_der,
                names,
                not_after: Timestamp::from_offset_date_time(params.not_after),
            },
        })
    }

    /// Loads a server certificate chain and key, checking that the leaf was issued by this
    /// CA and that the key belongs to it.
    pub(crate) fn load_server(
        &self,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<LeafInfo, (Which, String)> {
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| (Which::Cert, format!("not a PEM certificate chain: {e}")))?;
        let Some(leaf_der) = chain.first() else {
            return Err((Which::Cert, "holds no certificate".to_owned()));
        };
        let (_, leaf) = X509Certificate::from_der(leaf_der)
            .map_err(|e| (Which::Cert, format!("not a valid X.509 certificate: {e}")))?;
        let (_, ca) = X509Certificate::from_der(&self.cert_der)
            .map_err(|e| (Which::Cert, format!("the CA no longer parses: {e}")))?;
        if leaf.issuer().as_raw() != ca.subject().as_raw()
            || leaf.verify_signature(Some(ca.public_key())).is_err()
        {
            return Err((Which::Cert, "was not issued by this edge's CA".to_owned()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| (Which::Key, format!("not a PEM private key: {e}")))?;
        let pair = KeyPair::try_from(&key)
            .map_err(|e| (Which::Key, format!("not a usable private key: {e}")))?;
        if leaf.public_key().subject_public_key.data.as_ref() != pair.public_key_raw() {
            return Err((Which::Key, "does not match the certificate".to_owned()));
        }
        let mut names = ServerNames::default();
        if let Ok(Some(san)) = leaf.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => names.dns.push((*d).to_owned()),
                    GeneralName::IPAddress(raw) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*raw) {
                            names.ips.push(IpAddr::from(v4));
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*raw) {
                            names.ips.push(IpAddr::from(v6));
                        }
                    }
                    _ => {}
                }
            }
        }
        let not_after = Timestamp::from_unix_seconds(leaf.validity().not_after.timestamp())
            .ok_or_else(|| (Which::Cert, "has an out-of-range expiry".to_owned()))?;
        Ok(LeafInfo {
            chain,
            key,
            names: names.normalized(),
            not_after,
        })
    }
}

/// How long a peering certificate is valid: the CA's lifetime would do, but a bounded one
/// limits what a stolen edge key is worth. A joined edge gets a new one by joining again.
pub(crate) const PEER_VALIDITY: Duration = Duration::days(397);

/// The URI SAN that names an edge in its peering certificate.
pub(crate) fn peer_edge_uri(edge_id: uuid::Uuid) -> String {
    format!("{PEER_URI_PREFIX}{edge_id}")
}

const PEER_URI_PREFIX: &str = "urn:zt:edge:";

/// The edge id a peering certificate (DER) names: exactly one `urn:zt:edge:<id>` URI SAN,
/// and the client-authentication usage. A server certificate of an edge, or any other
/// certificate of the CA, names none and is refused. The chain is not checked here (TLS
/// did that against the CA).
pub(crate) fn peer_edge_id(leaf_der: &[u8]) -> Result<uuid::Uuid, String> {
    let (_, leaf) = X509Certificate::from_der(leaf_der)
        .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
    let mut ids = Vec::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                if let Some(id) = uri.strip_prefix(PEER_URI_PREFIX) {
                    let id = uuid::Uuid::try_parse(id)
                        .map_err(|_| format!("its edge URI {uri:?} holds no edge id"))?;
                    ids.push(id);
                }
            }
        }
    }
    let client_auth = matches!(leaf.extended_key_usage(), Ok(Some(eku)) if eku.value.client_auth);
    match ids.as_slice() {
        [] => Err(
            "it names no edge (no urn:zt:edge: URI): not an edge's peering certificate".to_owned(),
        ),
        [_] if !client_auth => Err("it lacks the client-authentication usage".to_owned()),
        [id] => Ok(*id),
        _ => Err("it names more than one edge".to_owned()),
    }
}

/// Which of a certificate's two files a load error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    Cert,
    Key,
}

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lowercase hex of the pin.
pub(crate) fn fingerprint_hex(ca: &Ca) -> String {
    hex::encode(&ca.fingerprint())
}
