//! A test connector that speaks cloudflared's protocol: QUIC with ALPN `argotunnel` and
//! server name `quic.cftunnel.com`, trusting the edge's CA as `--cacert` makes cloudflared
//! do; Cap'n Proto RPC (capnp-rpc, a different implementation from the edge's codec) on its
//! first stream to `RegistrationServer`; and flow streams served as cloudflared serves
//! them: preamble + `ConnectRequest` in, a TCP dial, preamble + `ConnectResponse` out, then
//! bytes both ways until the first end of either side, which ends the whole flow.
//!
//! capnp-rpc is single-threaded: [`connect`] must run inside a `LocalSet`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{twoparty, RpcSystem};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use zt_edge::cloudflared::quic_metadata_capnp::{
    connect_request, connect_response, ConnectionType,
};
use zt_edge::cloudflared::tunnelrpc_capnp::{connection_response, registration_server};

/// The server name cloudflared dials its edge with.
pub const SERVER_NAME: &str = "quic.cftunnel.com";
const SIGNATURE: [u8; 6] = [0x0A, 0x36, 0xCD, 0x12, 0xA1, 0x3E];
const VERSION: [u8; 2] = *b"01";

/// A QUIC client endpoint as cloudflared sets one up, over `provider`: ALPN `argotunnel`,
/// the edge CA `ca_der` trusted as `--cacert` does, no client certificate, TLS 1.3, a 5 s
/// idle timeout with 1 s keep-alives.
pub fn argotunnel_endpoint(
    ca_der: &[u8],
    provider: rustls::crypto::CryptoProvider,
) -> quinn::Endpoint {
    let mut config = crate::quic::client_config(
        &[ca_der.to_vec().into()],
        zt_proto::ALPN_ARGOTUNNEL,
        provider,
    );
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(Duration::from_secs(5).try_into().unwrap()))
        .keep_alive_interval(Some(Duration::from_secs(1)));
    config.transport_config(Arc::new(transport));
    crate::quic::endpoint_with(config)
}
/// What a cloudflared credentials file holds.
#[derive(Clone)]
pub struct Creds {
    /// `AccountTag`.
    pub account_tag: String,
    /// `TunnelID`.
    pub tunnel_id: Uuid,
    /// `TunnelSecret`, decoded.
    pub secret: Vec<u8>,
}

/// The edge's answer to `registerConnection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// Registered: the connection's id and the edge's location name.
    Connected {
        /// The connection id the edge gave.
        uuid: Uuid,
        /// The edge's name.
        location: String,
    },
    /// Refused.
    Error {
        /// The edge's reason.
        cause: String,
        /// Whether cloudflared should try again.
        should_retry: bool,
    },
}

/// One registered (or refused) connection of the test connector.
pub struct CfdConnection {
    /// The QUIC connection.
    pub conn: quinn::Connection,
    rpc: registration_server::Client,
    /// The edge's answer to `registerConnection`.
    pub registration: Registration,
    /// Flows this connection served (answered with an empty error).
    pub served: Arc<AtomicUsize>,
    _endpoint: quinn::Endpoint,
}

/// Connects and calls `registerConnection`; must run inside a `LocalSet` (capnp-rpc is
/// single-threaded). Flows are served from the moment the connection is up.
pub async fn connect(
    edge: SocketAddr,
    ca_der: &[u8],
    creds: &Creds,
    conn_index: u8,
) -> CfdConnection {
    // cloudflared's QUIC settings: 5 s idle timeout, 1 s keep-alives, datagrams on.
    let ep = argotunnel_endpoint(ca_der, rustls::crypto::ring::default_provider());
    let conn = ep.connect(edge, SERVER_NAME).unwrap().await.unwrap();
    let (send, recv) = conn.open_bi().await.unwrap();
    let network = twoparty::VatNetwork::new(recv, send, Side::Client, Default::default());
    let mut system = RpcSystem::new(Box::new(network), None);
    let rpc: registration_server::Client = system.bootstrap(Side::Server);
    tokio::task::spawn_local(system);

    let served = Arc::new(AtomicUsize::new(0));
    serve_flows(conn.clone(), served.clone());

    let mut req = rpc.register_connection_request();
    {
        let mut p = req.get();
        let mut auth = p.reborrow().init_auth();
        auth.set_account_tag(creds.account_tag.as_str());
        auth.set_tunnel_secret(&creds.secret);
        p.set_tunnel_id(creds.tunnel_id.as_bytes());
        p.set_conn_index(conn_index);
        let mut options = p.init_options();
        let mut client = options.reborrow().init_client();
        client.set_client_id(Uuid::new_v4().as_bytes());
        let mut features = client.reborrow().init_features(2);
        features.set(0, "serialized_headers");
        features.set(1, "support_datagram_v2");
        client.set_version("DEV");
        client.set_arch("linux_amd64");
        options.set_replace_existing(false);
        options.set_num_previous_attempts(0);
    }
    let reply = tokio::time::timeout(Duration::from_secs(20), req.send().promise)
        .await
        .expect("no registerConnection answer within 20 s")
        .unwrap();
    let result = reply.get().unwrap().get_result().unwrap();
    let registration = match result.get_result().which().unwrap() {
        connection_response::result::ConnectionDetails(d) => {
            let d = d.unwrap();
            Registration::Connected {
                uuid: Uuid::from_slice(d.get_uuid().unwrap()).unwrap(),
                location: d.get_location_name().unwrap().to_string().unwrap(),
            }
        }
        connection_response::result::Error(e) => {
            let e = e.unwrap();
            Registration::Error {
                cause: e.get_cause().unwrap().to_string().unwrap(),
                should_retry: e.get_should_retry(),
            }
        }
    };
    CfdConnection {
        conn,
        rpc,
        registration,
        served,
        _endpoint: ep,
    }
}

impl CfdConnection {
    /// `updateLocalConfiguration`, as cloudflared calls it on connection 0.
    pub async fn update_configuration(&self, json: &[u8]) {
        let mut req = self.rpc.update_local_configuration_request();
        req.get().set_config(json);
        req.send().promise.await.unwrap();
    }

    /// `unregisterConnection`, as cloudflared calls it when it drains.
    pub async fn unregister(&self) {
        self.rpc
            .unregister_connection_request()
            .send()
            .promise
            .await
            .unwrap();
    }
}

fn response(error: &str) -> Vec<u8> {
    let mut msg = capnp::message::Builder::new_default();
    let mut root = msg.init_root::<connect_response::Builder<'_>>();
    root.set_error(error);
    root.init_metadata(0);
    let mut out = Vec::new();
    out.extend_from_slice(&SIGNATURE);
    out.extend_from_slice(&VERSION);
    capnp::serialize::write_message(&mut out, &msg).unwrap();
    out
}

/// Reads the preamble and `ConnectRequest`: the destination and the bytes after it.
async fn read_request(recv: &mut quinn::RecvStream) -> (SocketAddr, Vec<u8>) {
    let mut buf = Vec::new();
    loop {
        if buf.len() >= 8 {
            assert_eq!(buf[..6], SIGNATURE, "flow stream signature");
            assert_eq!(buf[6..8], VERSION, "flow stream version");
            let mut slice = &buf[8..];
            if let Ok(msg) = capnp::serialize::read_message_from_flat_slice(
                &mut slice,
                capnp::message::ReaderOptions::new(),
            ) {
                let rest = slice.to_vec();
                let req: connect_request::Reader<'_> = msg.get_root().unwrap();
                assert!(matches!(req.get_type(), Ok(ConnectionType::Tcp)));
                let meta = req.get_metadata().unwrap();
                assert!(meta
                    .iter()
                    .any(|m| m.get_key().unwrap().to_str().unwrap() == "FlowID"));
                let dest = req.get_dest().unwrap().to_str().unwrap().parse().unwrap();
                return (dest, rest);
            }
        }
        assert!(buf.len() < 64 * 1024, "flow request too large");
        let mut chunk = [0u8; 4096];
        let n = recv
            .read(&mut chunk)
            .await
            .unwrap()
            .expect("no flow request");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn serve_flows(conn: quinn::Connection, served: Arc<AtomicUsize>) {
    tokio::spawn(async move {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let served = served.clone();
            tokio::spawn(async move {
                let (dest, rest) = read_request(&mut recv).await;
                let tcp = match tokio::net::TcpStream::connect(dest).await {
                    Ok(t) => t,
                    Err(e) => {
                        // cloudflared reports the dial error's text.
                        let text = format!("dial tcp {dest}: connect: {e}");
                        send.write_all(&response(&text)).await.unwrap();
                        let _ = send.finish();
                        return;
                    }
                };
                send.write_all(&response("")).await.unwrap();
                served.fetch_add(1, Ordering::SeqCst);
                let (mut tr, mut tw) = tcp.into_split();
                tw.write_all(&rest).await.unwrap();
                // Both ways until either side ends, then close everything, as cloudflared
                // does: no half-close.
                let up = async {
                    let mut buf = vec![0u8; 32 * 1024];
                    while let Ok(Some(n)) = recv.read(&mut buf).await {
                        if tw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let down = async {
                    let mut buf = vec![0u8; 32 * 1024];
                    loop {
                        match tr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if send.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                };
                tokio::select! {
                    _ = up => {}
                    _ = down => {}
                }
                let _ = recv.stop(0u32.into());
                let _ = send.finish();
                let _ = tw.shutdown().await;
            });
        }
    });
}
