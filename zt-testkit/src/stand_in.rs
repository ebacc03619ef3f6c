//! A stand-in edge for testing a client without the real edge: built straight on zt-proto's
//! `EdgeListener`, it knows one device and serves that device's flows by dialing a real
//! origin on loopback (or refusing them with a chosen status), as a connector behind the
//! edge would. It records posture reports and registrations, can push routes and send
//! go-away through the links it holds, and restarts on the same port with the same
//! certificates.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use uuid::Uuid;
use zt_creds::{AuthKey, DeviceCredentials, TunnelSecret};
use zt_proto::{
    Authenticator, Claim, ClientClaim, ClientLink, CloseCode, EdgeEvent, EdgeListener, EdgePeer,
    EndpointError, FlowHeader, FlowResponder, FlowStatus, FlowStream, PostureReport, Protocol,
    ResetCode, TransportSettings, VerifyKey,
};

use crate::pki::Leaf;

/// Transport settings for test peers and stand-in edges: small socket buffers, since the
/// tests move little data and CI machines have a low `rmem_max`.
pub fn test_settings() -> TransportSettings {
    let mut s = TransportSettings::default();
    s.socket_receive_buffer = 256 * 1024;
    s.socket_send_buffer = 256 * 1024;
    s
}

/// Options for a [`zt_client::Client`] under test: the small buffers of [`test_settings`].
pub fn client_options() -> zt_client::ClientOptions {
    let mut o = zt_client::ClientOptions::default();
    o.transport.socket_receive_buffer = 256 * 1024;
    o.transport.socket_send_buffer = 256 * 1024;
    o
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
    fn verify_key(&self, claim: &Claim) -> Option<VerifyKey> {
        match claim {
            Claim::Client(c) if c.device_id == self.0 => Some(VerifyKey::Shared(self.1.clone())),
            _ => None,
        }
    }
}

/// The stand-in edge for one device; see the module docs.
pub struct ClientEdge {
    /// Where it listens (UDP).
    pub addr: SocketAddr,
    /// Its CA and server certificate (for `localhost`, 127.0.0.1 and ::1).
    pub pki: Leaf,
    /// The device it knows.
    pub device: Uuid,
    secret: TunnelSecret,
    /// How it answers the next flows.
    pub answer: Arc<Mutex<Answer>>,
    /// The posture reports the device sent, in order.
    pub posture: mpsc::UnboundedReceiver<PostureReport>,
    posture_tx: mpsc::UnboundedSender<PostureReport>,
    /// The client links registered so far, latest last.
    pub links: Arc<Mutex<Vec<Arc<ClientLink>>>>,
    /// The vnet each registration claimed.
    pub claims: Arc<Mutex<Vec<ClientClaim>>>,
    listener: Option<Arc<EdgeListener>>,
    task: tokio::task::JoinHandle<()>,
}

impl ClientEdge {
    /// Starts on a free port of 127.0.0.1 with a fresh identity and device.
    pub fn start() -> Self {
        let pki = crate::pki::server(&["localhost", "127.0.0.1", "::1"]);
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
            auth: zt_creds::DeviceAuth::Secret(self.secret.clone()),
            edge: vec![self.addr.to_string()],
            ca_fingerprint: self.pki.ca_fingerprint(),
            default_vnet: None,
            identity_provider: None,
            service_token: None,
        }
    }

    /// Sets how the next flows are answered.
    pub fn set_answer(&self, a: Answer) {
        *self.answer.lock().unwrap() = a;
    }

    /// The latest registered link, if any.
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

    /// Stops: closes every connection, as a process exit would, and frees the port.
    pub async fn stop(&mut self) {
        self.task.abort();
        self.links.lock().unwrap().clear();
        if let Some(l) = self.listener.take() {
            l.close(CloseCode::GOING_AWAY, "edge restarting");
            let _ = tokio::time::timeout(Duration::from_secs(5), l.wait_idle()).await;
        }
    }
}

impl Drop for ClientEdge {
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
    pki: &Leaf,
    device: Uuid,
    secret: &TunnelSecret,
    answer: Arc<Mutex<Answer>>,
    posture: mpsc::UnboundedSender<PostureReport>,
    links: Arc<Mutex<Vec<Arc<ClientLink>>>>,
    claims: Arc<Mutex<Vec<ClientClaim>>>,
) -> Result<(Arc<EdgeListener>, tokio::task::JoinHandle<()>), EndpointError> {
    let listener = Arc::new(EdgeListener::bind(
        addr,
        &pki.identity(),
        "edge-test",
        test_settings(),
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
        Protocol::Udp => crate::loopback::relay_udp(header.dest, responder).await,
        _ => {
            if let Some((flow, tcp)) = crate::loopback::dial_tcp(header.dest, responder).await {
                splice(tcp, flow).await;
            }
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
