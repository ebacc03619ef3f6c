//! The test PKI of a Kubernetes API server: a CA, the server's certificate (name
//! `kubernetes` and the given addresses) and a client certificate for `alice@example.com`,
//! each fresh per call.

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};

/// The certificates and keys of one [`KubePki::new`].
pub struct KubePki {
    pub ca: Certificate,
    pub server: Certificate,
    pub server_key: KeyPair,
    pub client: Certificate,
    pub client_key: KeyPair,
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, cn);
    d
}

impl KubePki {
    /// A CA named `ca_name`; the API server's certificate for `kubernetes` and each of
    /// `server_ips`; the client certificate of `alice@example.com`.
    pub fn new(ca_name: &str, server_ips: &[&str]) -> KubePki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.distinguished_name = dn(ca_name);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_ca_cert_der(ca_cert.der(), &ca_key).unwrap();

        let server_key = KeyPair::generate().unwrap();
        let mut server = CertificateParams::default();
        server.distinguished_name = dn("kube-apiserver");
        server.subject_alt_names = vec![SanType::DnsName("kubernetes".try_into().unwrap())];
        for ip in server_ips {
            let ip = ip.parse().unwrap_or_else(|e| panic!("{ip:?}: {e}"));
            server.subject_alt_names.push(SanType::IpAddress(ip));
        }
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &issuer).unwrap();

        let client_key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::default();
        client.distinguished_name = dn("alice@example.com");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client.signed_by(&client_key, &issuer).unwrap();

        KubePki {
            ca: ca_cert,
            server: server_cert,
            server_key,
            client: client_cert,
            client_key,
        }
    }
}
