//! Bare quinn client endpoints, for tests that speak a protocol by hand (the control stream
//! byte by byte, cloudflared's ALPN, an impostor's view) instead of through zt-proto's
//! `PeerEndpoint`.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use zt_proto::{Exporter, EXPORTER_CONTEXT, EXPORTER_LABEL, EXPORTER_LEN};

/// A QUIC client configuration over `provider`: TLS 1.3 only, trusting only `roots`,
/// offering only `alpn`, no client certificate, quinn's default transport.
pub fn client_config(
    roots: &[CertificateDer<'static>],
    alpn: &[u8],
    provider: rustls::crypto::CryptoProvider,
) -> quinn::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ))
}

/// A client endpoint on 127.0.0.1 whose default configuration is `config`.
pub fn endpoint_with(config: quinn::ClientConfig) -> quinn::Endpoint {
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(config);
    ep
}

/// A client endpoint on 127.0.0.1 offering only `alpn` over TLS 1.3 (ring), trusting only
/// the CA certificate `ca_der`.
pub fn client_endpoint(ca_der: &[u8], alpn: &[u8]) -> quinn::Endpoint {
    endpoint_with(client_config(
        &[CertificateDer::from(ca_der.to_vec())],
        alpn,
        rustls::crypto::ring::default_provider(),
    ))
}

/// The TLS exporter value of `conn` that both ends derive zt's proofs from.
pub fn exporter_of(conn: &quinn::Connection) -> Exporter {
    let mut e = [0u8; EXPORTER_LEN];
    conn.export_keying_material(&mut e, EXPORTER_LABEL, EXPORTER_CONTEXT)
        .unwrap();
    e
}
