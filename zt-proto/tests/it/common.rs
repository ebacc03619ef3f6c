//! Shared set-up for the loopback tests: an edge listener on 127.0.0.1 presenting a test
//! certificate for [`SERVER_NAME`], an authenticator that records refusals, and helpers to
//! connect connectors and clients.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use std::time::Duration;

use uuid::Uuid;
use zt_creds::{AuthKey, TunnelSecret};
use zt_proto::VerifyKey;
use zt_proto::*;
pub use zt_testkit::data::{random_bytes, sha256};
use zt_testkit::pki::Leaf;
pub use zt_testkit::quic::{client_endpoint as quic_client, exporter_of};
pub use zt_testkit::stand_in::test_settings;

pub const SERVER_NAME: &str = "zt-edge.test";
pub const ACCOUNT: &str = "5ab4e9dfbd435d24068829fda0077963";

/// A CA and a server certificate for [`SERVER_NAME`] signed by it.
pub fn pki() -> Leaf {
    zt_testkit::pki::server(&[SERVER_NAME])
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

    fn verify_key(&self, claim: &Claim) -> Option<VerifyKey> {
        let keys = self.keys.lock().unwrap();
        match claim {
            Claim::Connector(c) if c.account_tag == ACCOUNT => {
                keys.get(&c.tunnel_id).cloned().map(VerifyKey::Shared)
            }
            Claim::Client(c) => keys.get(&c.device_id).cloned().map(VerifyKey::Shared),
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
    pub pki: Leaf,
    pub peers: tokio::sync::mpsc::UnboundedReceiver<Result<EdgePeer, String>>,
    /// The TLS-over-TCP listener's address, when the edge has one; peers then connect
    /// over TCP.
    pub tcp: Option<SocketAddr>,
}

/// Starts an edge whose accept loop registers every incoming peer with `auth` and hands
/// the results to `peers`.
pub fn edge_with(auth: TestAuth, settings: TransportSettings) -> Edge {
    let pki = pki();
    let listener = Arc::new(
        EdgeListener::bind(
            "127.0.0.1:0".parse().unwrap(),
            &pki.identity(),
            "edge-test",
            settings,
        )
        .unwrap(),
    );
    let addr = listener.local_addr().unwrap();
    let auth = Arc::new(auth);
    let peers = accept_peers(listener.clone(), auth.clone());
    Edge {
        listener,
        addr,
        auth,
        pki,
        peers,
        tcp: None,
    }
}

/// An edge that also listens for zt/1 over TLS on TCP, on the QUIC port number, and whose
/// helpers connect peers over TCP.
pub async fn tcp_edge_with(auth: TestAuth, settings: TransportSettings) -> Edge {
    let pki = pki();
    let auth = Arc::new(auth);
    for _ in 0..20 {
        let listener = Arc::new(
            EdgeListener::bind(
                "127.0.0.1:0".parse().unwrap(),
                &pki.identity(),
                "edge-test",
                settings.clone(),
            )
            .unwrap(),
        );
        let addr = listener.local_addr().unwrap();
        // The same port number may be taken for TCP by someone else: try another.
        let Ok(tcp) =
            EdgeTcpListener::bind(addr, &pki.identity(), "edge-test", settings.clone()).await
        else {
            continue;
        };
        let quic_peers = accept_peers(listener.clone(), auth.clone());
        let tcp_peers = accept_tcp_peers(tcp, auth.clone());
        return Edge {
            listener,
            addr,
            auth,
            pki,
            peers: merge(quic_peers, tcp_peers),
            tcp: Some(addr),
        };
    }
    panic!("no port free for both UDP and TCP");
}

pub async fn tcp_edge() -> Edge {
    tcp_edge_with(TestAuth::default(), test_settings()).await
}

fn merge(
    mut a: tokio::sync::mpsc::UnboundedReceiver<Result<EdgePeer, String>>,
    mut b: tokio::sync::mpsc::UnboundedReceiver<Result<EdgePeer, String>>,
) -> tokio::sync::mpsc::UnboundedReceiver<Result<EdgePeer, String>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let r = tokio::select! {
                Some(r) = a.recv() => r,
                Some(r) = b.recv() => r,
                else => return,
            };
            if tx.send(r).is_err() {
                return;
            }
        }
    });
    rx
}

/// Registers every peer the TCP listener accepts with `auth`.
pub fn accept_tcp_peers(
    listener: EdgeTcpListener,
    auth: Arc<TestAuth>,
) -> tokio::sync::mpsc::UnboundedReceiver<Result<EdgePeer, String>> {
    let (tx, peers) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(incoming) = listener.accept().await {
            let tx = tx.clone();
            let auth = auth.clone();
            tokio::spawn(async move {
                let r = match incoming.register(&*auth).await {
                    Ok(TcpPeer::Zt(p)) => Ok(p),
                    Ok(_) => Err("not zt/1".to_owned()),
                    Err(e) => Err(e.to_string()),
                };
                let _ = tx.send(r);
            });
        }
    });
    peers
}

pub fn tcp_dialer(trust: &EdgeTrust) -> TcpDialer {
    TcpDialer::new(trust, test_settings()).unwrap()
}

/// Registers every peer `listener` accepts with `auth`, handing the outcomes to the
/// returned receiver.
pub fn accept_peers(
    listener: Arc<EdgeListener>,
    auth: Arc<TestAuth>,
) -> tokio::sync::mpsc::UnboundedReceiver<Result<EdgePeer, String>> {
    let (tx, peers) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(incoming) = listener.accept().await {
            let tx = tx.clone();
            let auth = auth.clone();
            tokio::spawn(async move {
                let r = incoming.register(&*auth).await.map_err(|e| e.to_string());
                let _ = tx.send(r);
            });
        }
    });
    peers
}

/// The next registration outcome, within 20 s.
pub async fn next_peer(
    peers: &mut tokio::sync::mpsc::UnboundedReceiver<Result<EdgePeer, String>>,
) -> Result<EdgePeer, String> {
    tokio::time::timeout(Duration::from_secs(20), peers.recv())
        .await
        .expect("no peer registration outcome within 20 s")
        .unwrap()
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
        self.pki.trust()
    }

    pub fn pin(&self) -> EdgeTrust {
        EdgeTrust::fingerprint(self.pki.ca_fingerprint())
    }

    pub async fn next_peer(&mut self) -> Result<EdgePeer, String> {
        next_peer(&mut self.peers).await
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

/// Connection 0 of a connector of `tunnel`, from `ep` to `addr` by the server name `name`.
pub async fn connect_tunnel(
    ep: &PeerEndpoint,
    addr: SocketAddr,
    name: &str,
    tunnel: &Tunnel,
) -> Result<ConnectorConnection, ConnectError> {
    ep.connect_connector(
        addr,
        name,
        connector_registration(tunnel.id, 0),
        &tunnel.secret.derive_auth_key(),
    )
    .await
}

/// A client session of the device `device`, from `ep` to `addr` by the server name `name`.
pub async fn connect_device(
    ep: &PeerEndpoint,
    addr: SocketAddr,
    name: &str,
    device: &Tunnel,
) -> Result<ClientConnection, ConnectError> {
    ep.connect_client(
        addr,
        name,
        client_registration(device.id),
        &zt_proto::ProofKey::Shared(device.secret.derive_auth_key()),
    )
    .await
}

/// A registered client connection and the edge's link to it.
pub async fn client_pair(edge: &mut Edge) -> (PeerEndpoint, ClientConnection, ClientLink) {
    client_pair_with(edge, test_settings()).await
}

/// [`client_pair`], the client's endpoint (or TCP dialer) built with `settings`.
pub async fn client_pair_with(
    edge: &mut Edge,
    settings: TransportSettings,
) -> (PeerEndpoint, ClientConnection, ClientLink) {
    let device = edge.add_identity();
    let ep = PeerEndpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        &edge.trust(),
        settings.clone(),
    )
    .unwrap();
    let conn = match edge.tcp {
        Some(at) => TcpDialer::new(&edge.trust(), settings)
            .unwrap()
            .connect_client(
                at,
                SERVER_NAME,
                None,
                client_registration(device.id),
                &zt_proto::ProofKey::Shared(device.secret.derive_auth_key()),
            )
            .await
            .unwrap(),
        None => connect_device(&ep, edge.addr, SERVER_NAME, &device)
            .await
            .unwrap(),
    };
    let EdgePeer::Client(link) = edge.next_peer().await.unwrap() else {
        panic!("expected a client link")
    };
    (ep, conn, link)
}

/// A registered connector connection and the edge's link to it.
pub async fn connector_pair(edge: &mut Edge) -> (PeerEndpoint, ConnectorConnection, ConnectorLink) {
    let tunnel = edge.add_identity();
    let ep = peer_endpoint(&edge.trust());
    let conn = match edge.tcp {
        Some(at) => tcp_dialer(&edge.trust())
            .connect_connector(
                at,
                SERVER_NAME,
                None,
                connector_registration(tunnel.id, 0),
                &tunnel.secret.derive_auth_key(),
            )
            .await
            .unwrap(),
        None => connect_tunnel(&ep, edge.addr, SERVER_NAME, &tunnel)
            .await
            .unwrap(),
    };
    let EdgePeer::Connector(link) = edge.next_peer().await.unwrap() else {
        panic!("expected a connector link")
    };
    (ep, conn, link)
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
    let ep = quic_client(&edge.pki.ca_der(), alpn);
    ep.connect(edge.addr, SERVER_NAME).unwrap().await
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
