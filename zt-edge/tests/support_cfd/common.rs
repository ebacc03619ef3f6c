//! What the cloudflared tests share whether or not they speak through capnp-rpc: a QUIC
//! client set up as cloudflared sets one up, and a zt client on the same edge.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use zt_creds::TunnelSecret;
use zt_edge::EdgeHandle;
use zt_proto::{
    ClientClaim, ClientConnection, ClientRegistration, EdgeTrust, PeerEndpoint, TransportSettings,
};

/// The server name cloudflared dials its edge with.
pub const SERVER_NAME: &str = "quic.cftunnel.com";

/// How long any one step of these tests may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// A QUIC client endpoint as cloudflared sets one up, over `provider`: ALPN `argotunnel`,
/// the edge CA `ca_der` trusted as `--cacert` does, no client certificate, TLS 1.3, a 5 s
/// idle timeout with 1 s keep-alives.
pub fn argotunnel_endpoint(
    ca_der: &[u8],
    provider: rustls::crypto::CryptoProvider,
) -> quinn::Endpoint {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der.to_vec().into()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"argotunnel".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(Duration::from_secs(5).try_into().unwrap()))
        .keep_alive_interval(Some(Duration::from_secs(1)));
    config.transport_config(Arc::new(transport));
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(config);
    ep
}

/// A zt peer endpoint on loopback trusting `edge`'s CA.
pub fn zt_endpoint(edge: &EdgeHandle) -> PeerEndpoint {
    PeerEndpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        &EdgeTrust::ca_der(edge.state().ca_cert_der().to_vec()),
        TransportSettings::default(),
    )
    .unwrap()
}

/// A zt client of `device_id` (whose secret is `device_secret`) registered at `edge`.
pub async fn zt_client(
    edge: &EdgeHandle,
    ep: &PeerEndpoint,
    device_id: uuid::Uuid,
    device_secret: &TunnelSecret,
    software_version: &str,
) -> ClientConnection {
    let reg = ClientRegistration {
        claim: ClientClaim {
            device_id,
            vnet: String::new(),
        },
        software_version: software_version.into(),
        features: vec![],
    };
    ep.connect_client(
        edge.local_addr(),
        "localhost",
        reg,
        &device_secret.derive_auth_key(),
    )
    .await
    .unwrap()
}

/// Waits until `f` holds, for at most [`WAIT`]; panics naming `what` otherwise.
pub async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not reached in {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
