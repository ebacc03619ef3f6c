//! Shared set-up for the loopback tests: a CA and server certificate made here with rcgen,
//! an edge listener on 127.0.0.1, an authenticator that records refusals, and helpers to
//! connect connectors and clients.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use uuid::Uuid;
use zt_creds::{AuthKey, CaFingerprint, TunnelSecret};
use zt_proto::*;

pub const SERVER_NAME: &str = "zt-edge.test";
pub const ACCOUNT: &str = "5ab4e9dfbd435d24068829fda0077963";

pub struct Pki {
    pub ca_der: Vec<u8>,
    pub chain_pem: String,
    pub key_pem: String,
}

/// A CA and a server certificate for [`SERVER_NAME`] signed by it.
pub fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec![SERVER_NAME.to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    Pki {
        ca_der: ca.der().to_vec(),
        chain_pem: format!("{}{}", cert.pem(), ca.pem()),
        key_pem: key.serialize_pem(),
    }
}

#[derive(Default)]
pub struct TestAuth {
    pub keys: Mutex<HashMap<Uuid, AuthKey>>,
    pub refusals: Mutex<Vec<(SocketAddr, RefusalReason)>>,
    /// Refuse with rate_limited once this many refusals were recorded from one address.
    pub rate_limit_after: Option<usize>,
}

impl Authenticator for TestAuth {
    fn admit(&self, source: SocketAddr) -> Admission {
        match self.rate_limit_after {
            Some(n)
                if self
                    .refusals
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(a, _)| *a == source)
                    .count()
                    >= n =>
            {
                Admission::RateLimited
            }
            _ => Admission::Admit,
        }
    }

    fn auth_key(&self, claim: &Claim) -> Option<AuthKey> {
        let keys = self.keys.lock().unwrap();
        match claim {
            Claim::Connector(c) if c.account_tag == ACCOUNT => keys.get(&c.tunnel_id).cloned(),
            Claim::Client(c) => keys.get(&c.device_id).cloned(),
            _ => None,
        }
    }

    fn refused(&self, source: SocketAddr, _claim: Option<&Claim>, reason: RefusalReason) {
        self.refusals.lock().unwrap().push((source, reason));
    }
}

pub struct Edge {
    pub listener: Arc<EdgeListener>,
    pub addr: SocketAddr,
    pub auth: Arc<TestAuth>,
    pub pki: Pki,
    pub peers: tokio::sync::mpsc::UnboundedReceiver<Result<EdgePeer, String>>,
}

pub fn test_settings() -> TransportSettings {
    let mut s = TransportSettings::default();
    // Small socket buffers: the tests move little data, and CI machines have low rmem_max.
    s.socket_receive_buffer = 256 * 1024;
    s.socket_send_buffer = 256 * 1024;
    s
}

/// Starts an edge whose accept loop registers every incoming peer with `auth` and hands
/// the results to `peers`.
pub fn edge_with(auth: TestAuth, settings: TransportSettings) -> Edge {
    let pki = pki();
    let identity =
        ServerIdentity::from_pem(pki.chain_pem.as_bytes(), pki.key_pem.as_bytes()).unwrap();
    let listener = Arc::new(
        EdgeListener::bind(
            "127.0.0.1:0".parse().unwrap(),
            &identity,
            "edge-test",
            settings,
        )
        .unwrap(),
    );
    let addr = listener.local_addr().unwrap();
    let auth = Arc::new(auth);
    let (tx, peers) = tokio::sync::mpsc::unbounded_channel();
    let l = listener.clone();
    let a = auth.clone();
    tokio::spawn(async move {
        while let Some(incoming) = l.accept().await {
            let tx = tx.clone();
            let a = a.clone();
            tokio::spawn(async move {
                let r = incoming.register(&*a).await.map_err(|e| e.to_string());
                let _ = tx.send(r);
            });
        }
    });
    Edge {
        listener,
        addr,
        auth,
        pki,
        peers,
    }
}

pub fn edge() -> Edge {
    edge_with(TestAuth::default(), test_settings())
}

pub struct Tunnel {
    pub id: Uuid,
    pub secret: TunnelSecret,
}

impl Edge {
    pub fn add_identity(&self) -> Tunnel {
        let t = Tunnel {
            id: Uuid::new_v4(),
            secret: TunnelSecret::generate(),
        };
        self.auth
            .keys
            .lock()
            .unwrap()
            .insert(t.id, t.secret.derive_auth_key());
        t
    }

    pub fn trust(&self) -> EdgeTrust {
        EdgeTrust::ca_der(self.pki.ca_der.clone())
    }

    pub fn pin(&self) -> EdgeTrust {
        EdgeTrust::fingerprint(CaFingerprint::of_der(&self.pki.ca_der))
    }

    pub async fn next_peer(&mut self) -> Result<EdgePeer, String> {
        tokio::time::timeout(Duration::from_secs(20), self.peers.recv())
            .await
            .expect("no peer registration outcome within 20 s")
            .unwrap()
    }
}

pub fn peer_endpoint(trust: &EdgeTrust) -> PeerEndpoint {
    PeerEndpoint::bind("127.0.0.1:0".parse().unwrap(), trust, test_settings()).unwrap()
}

pub fn connector_registration(tunnel: Uuid, index: u8) -> ConnectorRegistration {
    ConnectorRegistration {
        claim: ConnectorClaim {
            tunnel_id: tunnel,
            account_tag: ACCOUNT.into(),
            connector_id: Uuid::new_v4(),
            conn_index: index,
        },
        software_version: "zt test".into(),
        features: vec!["half-close".into()],
    }
}

pub fn client_registration(device: Uuid) -> ClientRegistration {
    ClientRegistration {
        claim: ClientClaim {
            device_id: device,
            vnet: String::new(),
        },
        software_version: "zt test".into(),
        features: vec![],
    }
}

/// A registered client connection and the edge's link to it.
pub async fn client_pair(edge: &mut Edge) -> (PeerEndpoint, ClientConnection, ClientLink) {
    let device = edge.add_identity();
    let ep = peer_endpoint(&edge.trust());
    let conn = ep
        .connect_client(
            edge.addr,
            SERVER_NAME,
            client_registration(device.id),
            &device.secret.derive_auth_key(),
        )
        .await
        .unwrap();
    let EdgePeer::Client(link) = edge.next_peer().await.unwrap() else {
        panic!("expected a client link")
    };
    (ep, conn, link)
}

/// A registered connector connection and the edge's link to it.
pub async fn connector_pair(edge: &mut Edge) -> (PeerEndpoint, ConnectorConnection, ConnectorLink) {
    let tunnel = edge.add_identity();
    let ep = peer_endpoint(&edge.trust());
    let conn = ep
        .connect_connector(
            edge.addr,
            SERVER_NAME,
            connector_registration(tunnel.id, 0),
            &tunnel.secret.derive_auth_key(),
        )
        .await
        .unwrap();
    let EdgePeer::Connector(link) = edge.next_peer().await.unwrap() else {
        panic!("expected a connector link")
    };
    (ep, conn, link)
}

pub fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut v).unwrap();
    v
}

/// A raw QUIC connection that trusts the test CA, to speak the control stream by hand.
pub async fn raw_connection(edge: &Edge) -> quinn::Connection {
    raw_connection_with_alpn(edge, ALPN_ZT1).await.unwrap()
}

/// A raw QUIC connection offering only `alpn`.
pub async fn raw_connection_with_alpn(
    edge: &Edge,
    alpn: &[u8],
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let ep = quic_client(&edge.pki.ca_der, alpn);
    ep.connect(edge.addr, SERVER_NAME).unwrap().await
}

/// A bare quinn client endpoint on loopback offering only `alpn` over TLS 1.3, trusting
/// only `ca_der`.
pub fn quic_client(ca_der: &[u8], alpn: &[u8]) -> quinn::Endpoint {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der.to_vec().into()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let cfg = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ));
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(cfg);
    ep
}

pub fn exporter_of(conn: &quinn::Connection) -> Exporter {
    let mut e = [0u8; EXPORTER_LEN];
    conn.export_keying_material(&mut e, EXPORTER_LABEL, EXPORTER_CONTEXT)
        .unwrap();
    e
}

pub async fn send_register_and_read_answer(
    conn: &quinn::Connection,
    register: Register,
) -> ControlFrame {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut wire = BytesMut::new();
    ControlFrame::Register(register).encode(&mut wire).unwrap();
    send.write_all(&wire).await.unwrap();
    let mut buf = BytesMut::new();
    loop {
        if let Some(f) = ControlFrame::decode(&mut buf).unwrap() {
            return f;
        }
        let chunk = recv
            .read_chunk(4096, true)
            .await
            .unwrap()
            .expect("answer before FIN");
        buf.extend_from_slice(&chunk.bytes);
    }
}
