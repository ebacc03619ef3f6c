//! `zt tunnel --config FILE run`, the real binary, against an edge listener on 127.0.0.1:
//! it registers its HA connections, `/ready` turns 200, and SIGTERM drains (the edge is
//! told) and exits 0. The edge's CA and certificate come from a real edge state directory.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use zt_creds::{ExistingFile, TunnelCredentials, TunnelSecret};
use zt_proto::VerifyKey;
use zt_proto::{Authenticator, Claim, EdgeEvent, EdgeListener, EdgePeer, TransportSettings};

struct OneTunnel {
    creds: TunnelCredentials,
}

impl Authenticator for OneTunnel {
    fn verify_key(&self, claim: &Claim) -> Option<VerifyKey> {
        match claim {
            Claim::Connector(c)
                if c.tunnel_id == self.creds.tunnel_id
                    && c.account_tag == self.creds.account_tag =>
            {
                Some(VerifyKey::Shared(self.creds.secret.derive_auth_key()))
            }
            _ => None,
        }
    }
}

#[derive(Debug)]
enum Note {
    Registered(u8),
    Unregistered(u8),
}

async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, out.split("\r\n\r\n").nth(1)?.to_owned()))
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut text);
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_run_registers_reports_ready_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let state =
        zt_edge::EdgeState::open_or_init(dir.path().join("edge"), &Default::default()).unwrap();
    let server = state.server_identity();
    let identity = zt_proto::ServerIdentity::from_der(
        server.cert_chain().iter().map(|c| c.to_vec()).collect(),
        server.private_key().secret_der().to_vec(),
    )
    .unwrap();
    let mut settings = TransportSettings::default();
    settings.socket_receive_buffer = 256 * 1024;
    settings.socket_send_buffer = 256 * 1024;
    let listener = Arc::new(
        EdgeListener::bind(
            "127.0.0.1:0".parse().unwrap(),
            &identity,
            "edge-1",
            settings,
        )
        .unwrap(),
    );
    let edge_addr = listener.local_addr().unwrap();

    let creds = TunnelCredentials {
        account_tag: state.account_tag().to_owned(),
        tunnel_id: "8e343b13-a087-48ea-825f-9783931ff2a5".parse().unwrap(),
        tunnel_name: Some("k8s_zero_trust_tunnel".into()),
        secret: TunnelSecret::generate(),
        endpoint: None,
    };
    let creds_path = dir.path().join("creds.json");
    creds.write(&creds_path, ExistingFile::Refuse).unwrap();

    let auth = Arc::new(OneTunnel { creds });
    let (tx, mut notes) = mpsc::unbounded_channel();
    let l = listener.clone();
    tokio::spawn(async move {
        while let Some(incoming) = l.accept().await {
            let auth = auth.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Ok(EdgePeer::Connector(link)) = incoming.register(&*auth).await {
                    let index = link.claim().conn_index;
                    let _ = tx.send(Note::Registered(index));
                    while let Some(ev) = link.next_event().await {
                        if let EdgeEvent::Unregister(_) = ev {
                            let _ = tx.send(Note::Unregistered(index));
                        }
                    }
                }
            });
        }
    });

    let metrics: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // The seed's config, plus where the self-hosted edge is and how to trust it.
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "tunnel: 8e343b13-a087-48ea-825f-9783931ff2a5\n\
             credentials-file: {}\n\
             metrics: {metrics}\n\
             warp-routing:\n    enabled: true\n\
             edge: {edge_addr}\n\
             cacert: {}\n\
             ha-connections: 2\n\
             grace-period: 10s\n",
            creds_path.display(),
            state.ca_pem_path().display(),
        ),
    )
    .unwrap();

    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_zt"))
        .args(["tunnel", "--config"])
        .arg(&config)
        .arg("run")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // /ready: 200 with both connections.
    let ready = loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("zt exited early with {status}:\n{}", stderr_of(&mut child));
        }
        if let Some((200, body)) = get(metrics, "/ready").await {
            if body.contains("\"readyConnections\":2") {
                break body;
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!(
                "/ready never reported 2 connections:\n{}",
                stderr_of(&mut child)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("ready after {:?}: {ready}", started.elapsed());
    let mut registered = Vec::new();
    while registered.len() < 2 {
        if let Some(Note::Registered(i)) = notes.recv().await {
            registered.push(i);
        }
    }
    registered.sort_unstable();
    assert_eq!(registered, [0, 1]);
    assert_eq!(get(metrics, "/healthcheck").await.unwrap().0, 200);

    // SIGTERM: the edge is told on both connections, and the process exits 0.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut told = Vec::new();
    while told.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(30), notes.recv()).await {
            Ok(Some(Note::Unregistered(i))) => told.push(i),
            Ok(Some(_)) => {}
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the edge was not told about the drain:\n{}",
                    stderr_of(&mut child)
                );
            }
        }
    }
    let stop = Instant::now();
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if stop.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("zt did not exit after SIGTERM:\n{}", stderr_of(&mut child));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let log = stderr_of(&mut child);
    eprintln!("exited after {:?} with {exit}", stop.elapsed());
    assert_eq!(exit.code(), Some(0), "{log}");
    assert!(log.contains("registered with the edge"), "{log}");
    listener.close(zt_proto::CloseCode::NO_ERROR, "");
}
