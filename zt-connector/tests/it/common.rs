//! A small edge for the connector's tests, built straight on zt-proto's `EdgeListener`: it
//! knows one tunnel's auth key, records every registration, refusal and unregister, and
//! lets a test open flows toward the connector over the links it holds. It presents a test
//! certificate for `localhost` and 127.0.0.1.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use uuid::Uuid;
use zt_creds::{AuthKey, TunnelCredentials, TunnelSecret};
use zt_proto::VerifyKey;
use zt_proto::*;
pub use zt_testkit::data::{payload, sha256};
use zt_testkit::pki::Leaf;
pub use zt_testkit::stand_in::test_settings;

pub const ACCOUNT: &str = "5ab4e9dfbd435d24068829fda0077963";

/// A CA and a server certificate for `localhost` and 127.0.0.1 signed by it.
pub fn pki() -> Leaf {
    zt_testkit::pki::server(&["localhost", "127.0.0.1"])
}

/// A tunnel: what the edge stores and what the connector's credentials hold.
pub struct Tunnel {
    pub id: Uuid,
    pub secret: TunnelSecret,
}

impl Tunnel {
    pub fn new() -> Self {
        Self {
            id: Uuid::new_v4(),
            secret: TunnelSecret::generate(),
        }
    }

    pub fn credentials(&self) -> TunnelCredentials {
        TunnelCredentials {
            account_tag: ACCOUNT.into(),
            tunnel_id: self.id,
            tunnel_name: Some("test".into()),
            secret: self.secret.clone(),
            endpoint: None,
        }
    }
}

struct Auth {
    tunnel: Uuid,
    key: AuthKey,
}

impl Authenticator for Auth {
    fn verify_key(&self, claim: &Claim) -> Option<VerifyKey> {
        match claim {
            Claim::Connector(c) if c.tunnel_id == self.tunnel && c.account_tag == ACCOUNT => {
                Some(VerifyKey::Shared(self.key.clone()))
            }
            _ => None,
        }
    }
}

/// What the edge saw.
#[derive(Debug)]
pub enum Note {
    Registered {
        conn_index: u8,
        connector_id: Uuid,
        version: String,
    },
    Refused(String),
    Unregistered {
        conn_index: u8,
        grace: Duration,
    },
}

pub struct TestEdge {
    pub addr: SocketAddr,
    pub pki: Leaf,
    listener: Arc<EdgeListener>,
    /// Every registered link, newest last.
    pub links: Arc<Mutex<Vec<Arc<ConnectorLink>>>>,
    pub notes: mpsc::UnboundedReceiver<Note>,
    accept: tokio::task::JoinHandle<()>,
}

impl TestEdge {
    pub async fn start(tunnel: &Tunnel) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), tunnel, pki()).await
    }

    /// Starts on `addr`, retrying the bind for a while: after a previous edge on the same
    /// port closed, its socket may take a moment to be released.
    pub async fn start_on(addr: SocketAddr, tunnel: &Tunnel, pki: Leaf) -> Self {
        let identity = pki.identity();
        let deadline = Instant::now() + Duration::from_secs(20);
        let listener = loop {
            match EdgeListener::bind(addr, &identity, "test-edge", test_settings()) {
                Ok(l) => break Arc::new(l),
                Err(e) if Instant::now() < deadline => {
                    eprintln!("edge bind on {addr} failed ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("edge cannot bind {addr}: {e}"),
            }
        };
        let addr = listener.local_addr().unwrap();
        let auth = Arc::new(Auth {
            tunnel: tunnel.id,
            key: tunnel.secret.derive_auth_key(),
        });
        let links = Arc::new(Mutex::new(Vec::new()));
        let (tx, notes) = mpsc::unbounded_channel();
        let l = listener.clone();
        let all = links.clone();
        let accept = tokio::spawn(async move {
            while let Some(incoming) = l.accept().await {
                let auth = auth.clone();
                let tx = tx.clone();
                let all = all.clone();
                tokio::spawn(async move {
                    match incoming.register(&*auth).await {
                        Ok(EdgePeer::Connector(link)) => {
                            let link = Arc::new(link);
                            let claim = link.claim().clone();
                            // Stored before it is announced, so a test that saw the
                            // note finds the link.
                            all.lock().unwrap().push(link.clone());
                            let _ = tx.send(Note::Registered {
                                conn_index: claim.conn_index,
                                connector_id: claim.connector_id,
                                version: link.software().0.to_owned(),
                            });
                            while let Some(ev) = link.next_event().await {
                                if let EdgeEvent::Unregister(u) = ev {
                                    let _ = tx.send(Note::Unregistered {
                                        conn_index: claim.conn_index,
                                        grace: u.grace,
                                    });
                                }
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let _ = tx.send(Note::Refused(e.to_string()));
                        }
                    }
                });
            }
        });
        Self {
            addr,
            pki,
            listener,
            links,
            notes,
            accept,
        }
    }

    /// The next note, within a generous deadline.
    pub async fn next_note(&mut self) -> Note {
        tokio::time::timeout(Duration::from_secs(30), self.notes.recv())
            .await
            .expect("no edge event within 30 s")
            .expect("edge note channel closed")
    }

    /// Waits for `n` registrations and returns their connection indexes, sorted.
    pub async fn registrations(&mut self, n: usize) -> Vec<u8> {
        let mut idx = Vec::new();
        while idx.len() < n {
            if let Note::Registered { conn_index, .. } = self.next_note().await {
                idx.push(conn_index);
            }
        }
        idx.sort_unstable();
        idx
    }

    /// The newest link that is not draining.
    pub fn link(&self) -> Arc<ConnectorLink> {
        self.links
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|l| !l.is_draining())
            .cloned()
            .expect("a registered link")
    }

    /// Stops the edge: closes every connection and frees the port.
    pub async fn stop(self) {
        self.accept.abort();
        self.listener
            .close(CloseCode::GOING_AWAY, "test edge stopping");
        self.links.lock().unwrap().clear();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.listener.wait_idle()).await;
    }
}

/// A free UDP port on 127.0.0.1 (bound then released).
pub fn free_udp_addr() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

/// A connector configuration for an edge at `edge`, pinned to `pki`'s CA, metrics on a
/// free loopback port.
pub fn config_yaml(
    edge: SocketAddr,
    pki: &Leaf,
    ha: u8,
    extra: &str,
) -> zt_connector::ConnectorConfig {
    let text = format!(
        "metrics: 127.0.0.1:0\nha-connections: {ha}\nedge: {edge}\nedge-ca-fingerprint: {}\ngrace-period: 20s\n{extra}",
        pki.ca_fingerprint()
    );
    zt_connector::ConnectorConfig::parse(&text, "test-config.yaml").unwrap()
}

/// GET `path` on the metrics server: (status code, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (code, body)
}

/// Polls `/ready` until `want` holds for (status, readyConnections), within 30 s.
pub async fn wait_ready(addr: SocketAddr, want: impl Fn(u16, u64) -> bool) -> (u16, u64) {
    let start = Instant::now();
    loop {
        let (code, body) = http_get(addr, "/ready").await;
        let n = ready_connections(&body);
        if want(code, n) {
            eprintln!(
                "/ready = {code} with {n} connections after {:?}",
                start.elapsed()
            );
            return (code, n);
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "/ready never reached the expected state; last {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn ready_connections(body: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["readyConnections"].as_u64().unwrap()
}
