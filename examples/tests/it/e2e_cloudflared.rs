//! The operator's path for cloudflared connectors, through the real binaries: `zt edge run`,
//! `zt tunnel create --allow-cloudflared`, `zt tunnel cloudflared` (which writes the CA file
//! and prints the command line), then a connector speaking cloudflared's protocol started
//! with exactly the `--edge`, `--cacert` and `--credentials-file` that command line names,
//! serving a flow from `zt client forward` to a real TCP origin.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Instant;

use crate::support::*;
use rustls::pki_types::pem::PemObject;
use zt_creds::{PermissionMode, TunnelCredentials};
use zt_testkit::cloudflared::{self, Registration};
use zt_testkit::data::{pattern, sha256};
use zt_testkit::origin::framed_hashing_origin;

/// What the printed cloudflared command line names.
struct CommandLine {
    edge: SocketAddr,
    cacert: PathBuf,
    credentials: PathBuf,
    tunnel: String,
}

fn parse(line: &str) -> CommandLine {
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        &words[..3],
        ["cloudflared", "tunnel", "--no-autoupdate"],
        "{line}"
    );
    let after = |flag: &str| {
        let i = words.iter().position(|w| *w == flag).unwrap_or_else(|| {
            panic!("{flag} missing from {line}");
        });
        words[i + 1]
    };
    let run = words.iter().position(|w| *w == "run").unwrap();
    // Tunnel-level flags before `run`, run's own after it.
    assert!(words.iter().position(|w| *w == "--edge").unwrap() < run);
    assert!(
        words
            .iter()
            .position(|w| *w == "--credentials-file")
            .unwrap()
            > run
    );
    assert_eq!(after("--protocol"), "quic", "the default transport");
    CommandLine {
        edge: after("--edge").parse().unwrap(),
        cacert: after("--cacert").into(),
        credentials: after("--credentials-file").into(),
        tunnel: words.last().unwrap().to_string(),
    }
}

/// Runs the test connector on its own thread (capnp-rpc wants a `LocalSet`) until
/// `stop` is dropped; reports the registration and the served-flows counter.
fn start_connector(
    cmd: &CommandLine,
) -> (
    Registration,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    mpsc::Sender<()>,
) {
    let ca_pem = std::fs::read(&cmd.cacert).unwrap();
    let ca_der = rustls::pki_types::CertificateDer::from_pem_slice(&ca_pem)
        .unwrap()
        .to_vec();
    let creds = TunnelCredentials::load(&cmd.credentials, PermissionMode::Strict).unwrap();
    assert_eq!(creds.tunnel_id.to_string(), cmd.tunnel);
    let creds = cloudflared::Creds {
        account_tag: creds.account_tag.clone(),
        tunnel_id: creds.tunnel_id,
        secret: creds.secret.expose_bytes().to_vec(),
    };
    let edge = cmd.edge;
    let (report, reported) = mpsc::channel();
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            let conn = cloudflared::connect(edge, &ca_der, &creds, 0).await;
            report
                .send((conn.registration.clone(), conn.served.clone()))
                .unwrap();
            // Serve until the test is done.
            let _ = tokio::task::spawn_blocking(move || stopped.recv()).await;
            drop(conn);
        });
    });
    let (registration, served) = reported.recv_timeout(DEADLINE).unwrap();
    (registration, served, stop)
}

#[test]
fn cloudflared_set_up_by_the_admin_commands_serves_a_flow() {
    // Framed: no half-close needed, as cloudflared has none.
    let origin = framed_hashing_origin("127.0.0.3:0", 200_000);
    let edge = Edge::start();
    let creds = edge.path("legacy.json");
    edge.admin(&[
        "tunnel",
        "create",
        "legacy",
        "--credentials-file",
        creds.to_str().unwrap(),
        "--allow-cloudflared",
    ]);
    edge.admin(&["route", "ip", "add", "127.0.0.3/32", "legacy"]);
    edge.rule(
        "Allow legacy",
        100,
        "allow",
        "l4",
        "net.dst.ip == 127.0.0.3",
    );
    let device = edge.user("bob@example.com", "sre");

    let ca_file = edge.path("edge-ca.pem");
    let out = edge.admin(&[
        "tunnel",
        "cloudflared",
        "legacy",
        "--ca-file",
        ca_file.to_str().unwrap(),
        "--credentials-file",
        creds.to_str().unwrap(),
    ]);
    println!("printed: {}", out.trim());
    let cmd = parse(out.trim());
    assert_eq!(cmd.edge, edge.listen, "the edge's advertised address");
    assert_eq!(cmd.cacert, ca_file);

    let t = Instant::now();
    let (registration, served, _stop) = start_connector(&cmd);
    println!(
        "MEASURED cloudflared-protocol registration with the real edge: {:?}",
        t.elapsed()
    );
    assert!(
        matches!(registration, Registration::Connected { .. }),
        "{registration:?}"
    );
    let info = edge.admin(&["tunnel", "info", "legacy"]);
    assert!(info.contains("cloudflared DEV"), "{info}");

    let (_client, forward) = client_forward(&device, origin.addr);
    let payload = pattern(500_000);
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(forward).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(&(payload.len() as u64).to_be_bytes()).unwrap();
    s.write_all(&payload).unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    println!(
        "MEASURED 500 kB up / 200 kB down through zt client, zt edge and a cloudflared-protocol connector: {:?}",
        t.elapsed()
    );
    assert_eq!(back.len(), 32 + 200_000);
    assert_eq!(&back[..32], &sha256(&payload)[..]);
    assert_eq!(&back[32..], &pattern(200_000)[..]);
    assert_eq!(served.load(Ordering::SeqCst), 1);

    let line = eventually("the flow's audit line", || {
        edge.flow_audit_lines()
            .into_iter()
            .find(|l| l["connector_kind"] == "cloudflared")
    });
    assert_eq!(line["connector_version"], "cloudflared DEV");
    assert_eq!(line["half_close"], "not_supported_by_cloudflared");
    assert_eq!(line["bytes_down"], 32 + 200_000);
}
