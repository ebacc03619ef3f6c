//! A small test edge built directly on zt-proto's `EdgeListener`: it knows one device, and
//! serves that device's flows by dialing a real origin on loopback (or refusing them with
//! a chosen status). It records posture reports and can push routes, send go-away and
//! restart on the same port with the same certificates.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use uuid::Uuid;
use zt_creds::{AuthKey, CaFingerprint, DeviceCredentials, TunnelSecret};
use zt_proto::*;

pub struct Pki {
    pub ca_der: Vec<u8>,
    pub chain_pem: String,
    pub key_pem: String,
}

/// A CA and a server certificate for the loopback names, as the real edge issues by default.
pub fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    Pki {
        ca_der: ca.der().to_vec(),
        chain_pem: format!("{}{}", cert.pem(), ca.pem()),
        key_pem: key.serialize_pem(),
    }
}

pub fn settings() -> TransportSettings {
    let mut s = TransportSettings::default();
    // Small socket buffers: the tests move little data, and CI machines have low rmem_max.
    s.socket_receive_buffer = 256 * 1024;
    s.socket_send_buffer = 256 * 1024;
    s
}

/// How the test edge answers the next flows.
#[derive(Clone, Debug)]
pub enum Answer {
    /// Dial the header's destination (TCP or UDP) and splice.
    Dial,
    /// Refuse with this status.
    Refuse(FlowStatus),
}

struct OneDevice(Uuid, AuthKey);

impl Authenticator for OneDevice {
    fn auth_key(&self, claim: &Claim) -> Option<AuthKey> {
        match claim {
            Claim::Client(c) if c.device_id == self.0 => Some(self.1.clone()),
            _ => None,
        }
    }
}

pub struct TestEdge {
    pub addr: SocketAddr,
    pub pki: Pki,
    pub device: Uuid,
    secret: TunnelSecret,
    pub answer: Arc<Mutex<Answer>>,
    pub posture: mpsc::UnboundedReceiver<PostureReport>,
    posture_tx: mpsc::UnboundedSender<PostureReport>,
    /// The client links registered so far, latest last.
    pub links: Arc<Mutex<Vec<Arc<ClientLink>>>>,
    /// The vnet each registration claimed.
    pub claims: Arc<Mutex<Vec<ClientClaim>>>,
    listener: Option<Arc<EdgeListener>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestEdge {
    pub fn start() -> Self {
        let pki = pki();
        let device = Uuid::new_v4();
        let secret = TunnelSecret::generate();
        let (posture_tx, posture) = mpsc::unbounded_channel();
        let answer = Arc::new(Mutex::new(Answer::Dial));
        let links = Arc::new(Mutex::new(Vec::new()));
        let claims = Arc::new(Mutex::new(Vec::new()));
        let (listener, task) = serve(
            "127.0.0.1:0".parse().unwrap(),
            &pki,
            device,
            &secret,
            answer.clone(),
            posture_tx.clone(),
            links.clone(),
            claims.clone(),
        )
        .unwrap();
        Self {
            addr: listener.local_addr().unwrap(),
            listener: Some(listener),
            pki,
            device,
            secret,
            answer,
            posture,
            posture_tx,
            links,
            claims,
            task,
        }
    }

    /// Device credentials for this edge: its address, the CA pin, the device secret.
    pub fn credentials(&self) -> DeviceCredentials {
        DeviceCredentials {
            device_id: self.device,
            user_email: "dev@example.com".into(),
            secret: self.secret.clone(),
            edge: vec![self.addr.to_string()],
            ca_fingerprint: CaFingerprint::of_der(&self.pki.ca_der),
            default_vnet: None,
        }
    }

    pub fn set_answer(&self, a: Answer) {
        *self.answer.lock().unwrap() = a;
    }

    pub fn latest_link(&self) -> Option<Arc<ClientLink>> {
        self.links.lock().unwrap().last().cloned()
    }

    /// The latest registered link, once there is one (the edge records it just after the
    /// client sees `registered`).
    pub async fn wait_link(&self) -> Arc<ClientLink> {
        loop {
            if let Some(l) = self.latest_link() {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the edge (closing every connection, as a process exit would) and starts it
    /// again on the same port with the same certificates.
    pub async fn restart(&mut self) {
        self.stop().await;
        // The old socket closes once the last task holding the old endpoint has ended;
        // retry the bind briefly, as a restarted process finds the port free at once.
        let mut tries = 0;
        let (listener, task) = loop {
            match serve(
                self.addr,
                &self.pki,
                self.device,
                &self.secret,
                self.answer.clone(),
                self.posture_tx.clone(),
                self.links.clone(),
                self.claims.clone(),
            ) {
                Ok(r) => break r,
                Err(e) if tries < 400 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(e) => panic!("cannot rebind the test edge on {}: {e}", self.addr),
            }
        };
        self.listener = Some(listener);
        self.task = task;
    }

    pub async fn stop(&mut self) {
        self.task.abort();
        self.links.lock().unwrap().clear();
        if let Some(l) = self.listener.take() {
            l.close(CloseCode::GOING_AWAY, "edge restarting");
            let _ = tokio::time::timeout(Duration::from_secs(5), l.wait_idle()).await;
        }
    }
}

impl Drop for TestEdge {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(l) = &self.listener {
            l.close(CloseCode::NO_ERROR, "test over");
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn serve(
    addr: SocketAddr,
    pki: &Pki,
    device: Uuid,
    secret: &TunnelSecret,
    answer: Arc<Mutex<Answer>>,
    posture: mpsc::UnboundedSender<PostureReport>,
    links: Arc<Mutex<Vec<Arc<ClientLink>>>>,
    claims: Arc<Mutex<Vec<ClientClaim>>>,
) -> Result<(Arc<EdgeListener>, tokio::task::JoinHandle<()>), EndpointError> {
    let identity =
        ServerIdentity::from_pem(pki.chain_pem.as_bytes(), pki.key_pem.as_bytes()).unwrap();
    let listener = Arc::new(EdgeListener::bind(
        addr,
        &identity,
        "edge-test",
        settings(),
    )?);
    let auth = Arc::new(OneDevice(device, secret.derive_auth_key()));
    let l = listener.clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Some(incoming) = l.accept().await {
            let auth = auth.clone();
            let answer = answer.clone();
            let posture = posture.clone();
            let links = links.clone();
            let claims = claims.clone();
            conns.spawn(async move {
                let Ok(EdgePeer::Client(link)) = incoming.register(&*auth).await else {
                    return;
                };
                claims.lock().unwrap().push(link.claim().clone());
                let link = Arc::new(link);
                links.lock().unwrap().push(link.clone());
                let events = link.clone();
                tokio::spawn(async move {
                    while let Some(ev) = events.next_event().await {
                        if let EdgeEvent::Posture(p) = ev {
                            let _ = posture.send(p);
                        }
                    }
                });
                while let Some((header, responder)) = link.accept_flow().await {
                    let a = answer.lock().unwrap().clone();
                    tokio::spawn(serve_flow(header, responder, a));
                }
            });
        }
    });
    Ok((listener, task))
}

async fn serve_flow(header: FlowHeader, responder: FlowResponder, answer: Answer) {
    if let Answer::Refuse(status) = answer {
        let _ = responder.reject(status).await;
        return;
    }
    match header.protocol {
        Protocol::Udp => {
            let Ok(sock) = UdpSocket::bind("127.0.0.1:0").await else {
                return;
            };
            if sock.connect(header.dest).await.is_err() {
                let _ = responder
                    .reject(FlowStatus::new(FlowStatusCode::Unreachable, ""))
                    .await;
                return;
            }
            let Ok(mut flow) = responder.accept_udp().await else {
                return;
            };
            let mut buf = vec![0u8; 2048];
            loop {
                tokio::select! {
                    p = flow.recv() => match p {
                        Some(p) => { let _ = sock.send(&p).await; }
                        None => return,
                    },
                    n = sock.recv(&mut buf) => match n {
                        Ok(n) => { let _ = flow.send(bytes::Bytes::copy_from_slice(&buf[..n])); }
                        Err(_) => return,
                    },
                }
            }
        }
        _ => {
            let tcp = match TcpStream::connect(header.dest).await {
                Ok(t) => t,
                Err(_) => {
                    let _ = responder
                        .reject(FlowStatus::new(FlowStatusCode::ConnectRefused, ""))
                        .await;
                    return;
                }
            };
            let Ok(flow) = responder.accept().await else {
                return;
            };
            splice(tcp, flow).await;
        }
    }
}

/// Both directions with half-close (EOF on one side becomes shutdown on the other) and
/// resets mapped (a TCP reset from the origin resets the flow; a flow reset closes the
/// origin connection with an RST).
async fn splice(tcp: TcpStream, flow: FlowStream) {
    let (mut tr, mut tw) = tcp.into_split();
    let (mut fs, mut fr) = flow.into_split();
    let reset = {
        let up = async {
            tokio::io::copy(&mut fr, &mut tw).await?;
            tw.shutdown().await
        };
        let down = async {
            tokio::io::copy(&mut tr, &mut fs).await?;
            fs.shutdown().await
        };
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            tokio::select! {
                r = &mut up, if !up_done => {
                    if r.is_err() { break true; }
                    up_done = true;
                }
                r = &mut down, if !down_done => {
                    if r.is_err() { break true; }
                    down_done = true;
                }
            }
            if up_done && down_done {
                break false;
            }
        }
    };
    if reset {
        fs.reset(ResetCode::CONNECTION_RESET);
        fr.stop(ResetCode::CONNECTION_RESET);
        if let Ok(tcp) = tr.reunite(tw) {
            let _ = tcp.set_zero_linger();
        }
    }
}

/// An origin that accepts one connection, reads `expect` bytes, then resets it (RST).
pub async fn resetting_origin(expect: usize) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        if let Ok((mut s, _)) = l.accept().await {
            let mut buf = vec![0u8; expect];
            let _ = s.read_exact(&mut buf).await;
            let _ = s.set_zero_linger();
        }
    });
    addr
}

/// An origin that greets its one connection with `!` and reports how it ended:
/// `Ok(bytes)` at EOF, or the read error's kind.
pub async fn watching_origin() -> (
    SocketAddr,
    tokio::sync::oneshot::Receiver<Result<usize, std::io::ErrorKind>>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(b"!").await;
            let mut got = Vec::new();
            let r = s.read_to_end(&mut got).await.map_err(|e| e.kind());
            let _ = tx.send(r);
        }
    });
    (addr, rx)
}

/// An origin that reads until EOF, then answers the SHA-256 of what it read followed by
/// `reply_len` bytes of a known pattern.
pub async fn origin(bind: &str, reply_len: usize) -> SocketAddr {
    let l = tokio::net::TcpListener::bind(bind).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                if s.read_to_end(&mut got).await.is_err() {
                    return;
                }
                let _ = s.write_all(&sha256(&got)).await;
                let _ = s.write_all(&pattern(reply_len)).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// An origin that echoes each connection's bytes as they come.
pub async fn echo_origin(bind: &str) -> SocketAddr {
    let l = tokio::net::TcpListener::bind(bind).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
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

/// Client options for tests: small socket buffers.
pub fn client_options() -> zt_client::ClientOptions {
    let mut o = zt_client::ClientOptions::default();
    o.transport.socket_receive_buffer = 256 * 1024;
    o.transport.socket_send_buffer = 256 * 1024;
    o
}

/// Waits for `fut` with a generous deadline; panics naming `what` if it never comes.
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within 30 s"))
}
