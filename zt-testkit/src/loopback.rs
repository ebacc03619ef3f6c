//! The real edge runtime on loopback, with zt connectors and clients made straight from
//! zt-proto (so a test controls every registration, every flow answer and every timing).
//!
//! The pieces, in the order a test uses them:
//!
//! - [`test_config`]: an edge on 127.0.0.1 with no admin API, quick to shut down.
//! - [`provision`]: a tunnel, a user with a device, routes through the tunnel and rules,
//!   written in one transaction that the edge has applied when it returns ([`update`]
//!   writes any other change the same way).
//! - [`connect_connector`] and [`serve_flows`]: a connector connection that registers, then
//!   dials every flow's destination and splices it with half-close, as zt-connector does.
//! - [`connect_client`], [`open`], [`round_trip`]: a client session and flows through it to
//!   the hashing origins of [`crate::origin`].
//! - [`Loopback`]: all of the above at once, for the many tests whose set-up is just "one
//!   connector serving, one client connected".

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;
use zt_creds::TunnelSecret;
use zt_edge::{
    Device, Edge, EdgeConfig, EdgeHandle, Revision, Route, Rule, SecretSha256, Tunnel, User,
    WriteTxn,
};
use zt_proto::{
    ClientClaim, ClientConnection, ClientRegistration, ConnectError, ConnectorClaim,
    ConnectorConnection, ConnectorRegistration, EdgeTrust, FlowResponder, FlowStatus,
    FlowStatusCode, FlowStream, OpenError, PeerEndpoint, ProofKey, Protocol, TransportSettings,
};

use crate::origin::assert_hash_answer;
use crate::{wait_for, WAIT};

/// The software version the connectors of [`connect_connector`] report.
pub const CONNECTOR_VERSION: &str = "test-connector 1";

/// The software version the clients of [`connect_client`] report.
pub const CLIENT_VERSION: &str = "test-client 1";

/// An edge keeping its state in `dir`, listening on 127.0.0.1 (any port), named
/// `test-edge`, with no admin API and a 2 s shutdown grace; its records on PostgreSQL with
/// `ZT_TEST_STORE=postgres` ([`crate::postgres::env_store`]).
pub fn test_config(dir: &Path) -> EdgeConfig {
    let mut c = EdgeConfig::new(dir);
    c.store = crate::postgres::env_store("test edge on PostgreSQL", dir);
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.admin = None;
    c.edge_name = "test-edge".into();
    c.shutdown_grace = Duration::from_secs(2);
    c
}

/// Applies a change to the edge's database and waits until the edge uses it.
pub async fn update(edge: &EdgeHandle, f: impl FnOnce(&mut WriteTxn<'_>)) -> Revision {
    let mut f = Some(f);
    let ((), rev) = edge
        .state()
        .db()
        .update(|txn| {
            if let Some(f) = f.take() {
                f(txn);
            }
            Ok::<_, zt_edge::StoreError>(())
        })
        .unwrap();
    tokio::time::timeout(WAIT, edge.wait_applied(rev))
        .await
        .expect("the edge did not apply the change in time");
    rev
}

/// What [`provision`] writes.
#[derive(Debug, Clone)]
pub struct Provision<'a> {
    /// The tunnel's name.
    pub tunnel: &'a str,
    /// Whether the tunnel accepts cloudflared connectors (with its own secret).
    pub cloudflared: bool,
    /// The user's email.
    pub email: &'a str,
    /// The user's groups.
    pub groups: &'a [&'a str],
    /// Networks routed through the tunnel in the default virtual network.
    pub routes: &'a [&'a str],
    /// Rules.
    pub rules: Vec<Rule>,
}

impl<'a> Provision<'a> {
    /// Tunnel `prod`, user `alice@example.com` in group `sre`, and `routes` and `rules`.
    pub fn new(routes: &'a [&'a str], rules: Vec<Rule>) -> Self {
        Provision {
            tunnel: "prod",
            cloudflared: false,
            email: "alice@example.com",
            groups: &["sre"],
            routes,
            rules,
        }
    }
}

/// The records [`provision`] wrote, with the secrets only the peers know.
#[derive(Debug, Clone)]
pub struct Provisioned {
    /// The tunnel.
    pub tunnel: Tunnel,
    /// Its secret, for connectors.
    pub secret: TunnelSecret,
    /// The user's device.
    pub device: Device,
    /// The device's secret, for clients.
    pub device_secret: TunnelSecret,
    /// The default virtual network, where the routes are.
    pub vnet: Uuid,
}

/// Writes a tunnel, a user with one device (`laptop`), the routes through the tunnel and the
/// rules, in one transaction; returns once the edge has applied it.
pub async fn provision(edge: &EdgeHandle, p: Provision<'_>) -> Provisioned {
    let secret = TunnelSecret::generate();
    let mut tunnel = Tunnel::new(p.tunnel, edge.state().account_tag(), &secret);
    if p.cloudflared {
        tunnel.cloudflared_secret_sha256 = Some(SecretSha256::of(&secret));
    }
    let device_secret = TunnelSecret::generate();
    let user = User::new(p.email, p.groups.iter().map(|g| (*g).to_owned()).collect());
    let device = Device::new(user.id, "laptop", &device_secret);
    let vnet = edge
        .state()
        .db()
        .read()
        .unwrap()
        .default_vnet()
        .unwrap()
        .expect("the edge has a default virtual network")
        .id;
    let (t, d) = (tunnel.clone(), device.clone());
    let routes: Vec<String> = p.routes.iter().map(|r| (*r).to_owned()).collect();
    let rules = p.rules;
    update(edge, move |txn| {
        txn.put(&t).unwrap();
        txn.put(&user).unwrap();
        txn.put(&d).unwrap();
        for r in &routes {
            txn.put(&Route::new(r.parse().unwrap(), vnet, t.id))
                .unwrap();
        }
        for rule in &rules {
            txn.put(rule).unwrap();
        }
    })
    .await;
    Provisioned {
        tunnel,
        secret,
        device,
        device_secret,
        vnet,
    }
}

/// An l4 rule named `name` matching `traffic`.
pub fn l4_rule(name: &str, precedence: i64, action: &str, traffic: &str) -> Rule {
    let mut r = Rule::new(name, precedence, action, vec!["l4".into()]);
    r.traffic = Some(traffic.into());
    r
}

/// `allow loopback`: an l4 rule allowing every flow.
pub fn allow_all() -> Rule {
    l4_rule("allow loopback", 100, "allow", "net.dst.port > 0")
}

/// A zt peer endpoint on 127.0.0.1 trusting the edge's CA, with default settings.
pub fn endpoint(edge: &EdgeHandle) -> PeerEndpoint {
    endpoint_with(edge, TransportSettings::default())
}

/// A zt peer endpoint on 127.0.0.1 trusting the edge's CA.
pub fn endpoint_with(edge: &EdgeHandle, settings: TransportSettings) -> PeerEndpoint {
    PeerEndpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        &EdgeTrust::ca_der(edge.state().ca_cert_der().to_vec()),
        settings,
    )
    .unwrap()
}

/// Connection `index` of a connector of `p`'s tunnel, registered; returns once the edge's
/// registry holds it (the connector hears "registered" just before).
pub async fn connect_connector(
    edge: &EdgeHandle,
    ep: &PeerEndpoint,
    p: &Provisioned,
    index: u8,
) -> Result<ConnectorConnection, ConnectError> {
    let reg = ConnectorRegistration {
        claim: ConnectorClaim {
            tunnel_id: p.tunnel.id,
            account_tag: edge.state().account_tag().into(),
            connector_id: Uuid::new_v4(),
            conn_index: index,
        },
        software_version: CONNECTOR_VERSION.into(),
        features: vec![],
    };
    let conn = ep
        .connect_connector(
            edge.local_addr(),
            "localhost",
            reg,
            &p.secret.derive_auth_key(),
        )
        .await?;
    let id = conn.registered().connection_id;
    let live = edge.live_view();
    let tunnel = p.tunnel.id;
    wait_for("the connector in the edge's registry", || {
        live.tunnel_connections(tunnel)
            .iter()
            .any(|c| c.connection_id == id)
    })
    .await;
    Ok(conn)
}

/// Serves every flow of `conn` as zt-connector does: dials the destination (TCP, or UDP
/// relayed as datagrams) and copies both ways, passing half-closes on; a refused dial is
/// answered `connect_refused`.
pub fn serve_flows(conn: Arc<ConnectorConnection>) {
    tokio::spawn(async move {
        while let Some((header, responder)) = conn.accept_flow().await {
            tokio::spawn(async move {
                if header.protocol == Protocol::Udp {
                    relay_udp(header.dest, responder).await;
                    return;
                }
                if let Some((flow, tcp)) = dial_tcp(header.dest, responder).await {
                    splice(flow, tcp).await;
                }
            });
        }
    });
}

/// Dials `dest` for a TCP flow and accepts the flow, as a connector does; a refused dial is
/// answered `connect_refused` and gives `None`.
pub async fn dial_tcp(
    dest: SocketAddr,
    responder: FlowResponder,
) -> Option<(FlowStream, TcpStream)> {
    match TcpStream::connect(dest).await {
        Ok(tcp) => Some((responder.accept().await.ok()?, tcp)),
        Err(_) => {
            let _ = responder
                .reject(FlowStatus::new(FlowStatusCode::ConnectRefused, ""))
                .await;
            None
        }
    }
}

/// Serves a UDP flow as a connector does: datagrams from the flow go to `dest` from a
/// socket of their own, and that socket's answers come back on the flow, until the flow
/// ends. A destination that cannot be reached is answered `unreachable`.
pub async fn relay_udp(dest: SocketAddr, responder: FlowResponder) {
    let Ok(sock) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
        return;
    };
    if sock.connect(dest).await.is_err() {
        let _ = responder
            .reject(FlowStatus::new(FlowStatusCode::Unreachable, ""))
            .await;
        return;
    }
    let Ok(mut flow) = responder.accept_udp().await else {
        return;
    };
    let mut buf = vec![0u8; 65536];
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

/// Copies an accepted flow and a TCP connection both ways, passing each side's end on as
/// a half-close, until both directions have ended.
pub async fn splice(flow: FlowStream, tcp: TcpStream) {
    let (mut fr, mut fw) = tokio::io::split(flow);
    let (mut tr, mut tw) = tcp.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut fr, &mut tw).await;
        let _ = tw.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut tr, &mut fw).await;
        let _ = fw.shutdown().await;
    };
    tokio::join!(up, down);
}

/// A client session of `device` (whose secret is `secret`) at the edge.
pub async fn connect_client(
    edge: &EdgeHandle,
    ep: &PeerEndpoint,
    device: Uuid,
    secret: &TunnelSecret,
) -> Result<ClientConnection, ConnectError> {
    let reg = ClientRegistration {
        claim: ClientClaim {
            device_id: device,
            vnet: String::new(),
        },
        software_version: CLIENT_VERSION.into(),
        features: vec![],
    };
    ep.connect_client(
        edge.local_addr(),
        "localhost",
        reg,
        &ProofKey::Shared(secret.derive_auth_key()),
    )
    .await
}

/// Opens a TCP flow to `dest`.
pub async fn open(client: &ClientConnection, dest: SocketAddr) -> Result<FlowStream, OpenError> {
    client.open_flow(dest, Protocol::Tcp, vec![]).await
}

/// Sends `payload` on `flow`, half-closes, reads the answer of a
/// [`hashing_origin`](crate::origin::hashing_origin) with `reply_len` and checks it.
pub async fn round_trip(mut flow: FlowStream, payload: &[u8], reply_len: usize) {
    flow.write_all(payload).await.unwrap();
    flow.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, flow.read_to_end(&mut back))
        .await
        .expect("the flow did not end")
        .unwrap();
    assert_hash_answer(&back, payload, reply_len);
}

/// The status a flow was refused with; panics if it was not refused.
pub fn refused<T: std::fmt::Debug>(r: Result<T, OpenError>) -> FlowStatus {
    match r {
        Err(OpenError::Refused(status)) => status,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The edge's audit lines of type `kind` (`flow`, `auth_refusal`, …), in order.
pub fn audit_lines(edge: &EdgeHandle, kind: &str) -> Vec<serde_json::Value> {
    read_audit_lines(&edge.state().audit_log_path(), kind)
}

/// The lines of type `kind` of the audit log at `path`, in order; none when there is no
/// log yet.
pub fn read_audit_lines(path: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("audit line {l:?} is not JSON: {e}"))
        })
        .filter(|v| v["type"] == kind)
        .collect()
}

/// An edge with everything one flow needs: the records of [`Provision::new`], a connector
/// connection serving flows ([`serve_flows`]) and a client session, all from one peer
/// endpoint.
pub struct Loopback {
    /// The edge.
    pub edge: EdgeHandle,
    /// What was provisioned.
    pub records: Provisioned,
    /// The endpoint of the connector and the client.
    pub endpoint: PeerEndpoint,
    /// Connection 0 of the connector.
    pub connector: Arc<ConnectorConnection>,
    /// The client session of the device.
    pub client: ClientConnection,
    _dir: tempfile::TempDir,
}

impl Loopback {
    /// Starts an edge of [`test_config`] (changed by `configure`) on a fresh state
    /// directory, with `routes` and `rules`, a connector serving flows and a client.
    pub async fn start(
        configure: impl FnOnce(&mut EdgeConfig),
        routes: &[&str],
        rules: Vec<Rule>,
    ) -> Loopback {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        configure(&mut config);
        let edge = Edge::start(config).await.unwrap();
        let records = provision(&edge, Provision::new(routes, rules)).await;
        let endpoint = endpoint(&edge);
        let connector = Arc::new(
            connect_connector(&edge, &endpoint, &records, 0)
                .await
                .unwrap(),
        );
        serve_flows(connector.clone());
        let client = connect_client(&edge, &endpoint, records.device.id, &records.device_secret)
            .await
            .unwrap();
        Loopback {
            edge,
            records,
            endpoint,
            connector,
            client,
            _dir: dir,
        }
    }

    /// Opens a TCP flow from the client to `dest`.
    pub async fn open(&self, dest: SocketAddr) -> Result<FlowStream, OpenError> {
        open(&self.client, dest).await
    }

    /// Another client session of the same device.
    pub async fn connect_client(&self) -> Result<ClientConnection, ConnectError> {
        connect_client(
            &self.edge,
            &self.endpoint,
            self.records.device.id,
            &self.records.device_secret,
        )
        .await
    }

    /// The edge's audit lines of type `kind`.
    pub fn audit_lines(&self, kind: &str) -> Vec<serde_json::Value> {
        audit_lines(&self.edge, kind)
    }
}
