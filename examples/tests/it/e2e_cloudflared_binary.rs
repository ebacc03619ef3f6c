//! The unmodified cloudflared binary against `zt edge run`, over both of its transports:
//! `--protocol http2` (TLS over TCP, cloudflared as the HTTP/2 server) and `quic`, set up
//! exactly as `zt tunnel cloudflared --protocol …` prints it. A hash-checked flow and
//! kubectl to the mutual-TLS stand-in through it; refusals for a bad secret and a tunnel
//! that has not opted in; draining on SIGTERM; and `--protocol auto` in a namespace whose
//! UDP is dropped, which must end registered over HTTP/2.
//!
//! The binary is `../shared/interop/cloudflared-2026.8.2/cloudflared` relative to the
//! project root, or the file `ZT_CLOUDFLARED` names; each test says loudly that it was
//! skipped when there is none.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::e2e_kubectl_path::{
    api_server, assert_version, get_version, kubeconfig, kubectl_version,
};
use crate::support::netns::{drop_udp, have, ip, Netns};
use crate::support::*;
use zt_testkit::data::{pattern, sha256};
use zt_testkit::origin::framed_hashing_origin;
use zt_testkit::pki::KubePki;

/// The cloudflared binary, or `None` (after saying so) when there is none.
fn cloudflared_binary(test: &str) -> Option<PathBuf> {
    let path = match std::env::var_os("ZT_CLOUDFLARED") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/interop/cloudflared-2026.8.2/cloudflared"),
    };
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "SKIPPED: {test}: no cloudflared binary at {} (set ZT_CLOUDFLARED to one)",
            path.display()
        );
        None
    }
}

/// An edge with tunnel `legacy` opted in to cloudflared, the route `127.0.0.3/32` through
/// it, a rule allowing it, a device, and the command line `zt tunnel cloudflared` prints.
struct Site {
    edge: Edge,
    creds: PathBuf,
    device: PathBuf,
    command: Vec<String>,
}

fn site(edge: Edge, protocol: &str, route: &str) -> Site {
    let creds = edge.path("legacy.json");
    edge.admin(&[
        "tunnel",
        "create",
        "legacy",
        "--credentials-file",
        creds.to_str().unwrap(),
        "--allow-cloudflared",
    ]);
    edge.admin(&["route", "ip", "add", route, "legacy"]);
    edge.rule(
        "Allow legacy",
        100,
        "allow",
        "l4",
        &format!("net.dst.ip == {}", route.trim_end_matches("/32")),
    );
    let device = edge.user("bob@example.com", "sre");
    let ca = edge.path("edge-ca.pem");
    let out = edge.admin(&[
        "tunnel",
        "cloudflared",
        "legacy",
        "--ca-file",
        ca.to_str().unwrap(),
        "--credentials-file",
        creds.to_str().unwrap(),
        "--protocol",
        protocol,
    ]);
    println!("printed: {}", out.trim());
    let command: Vec<String> = out.split_whitespace().map(str::to_owned).collect();
    assert_eq!(command[0], "cloudflared", "{out}");
    let p = command.iter().position(|w| w == "--protocol").unwrap();
    assert_eq!(command[p + 1], protocol, "{out}");
    Site {
        edge,
        creds,
        device,
        command,
    }
}

/// The printed command line, run with `binary`: its `--protocol` set to `protocol`, its
/// credentials file `creds`, its metrics on a free port, `$HOME` in the edge's directory.
fn cloudflared_command(
    binary: &Path,
    site: &Site,
    protocol: &str,
    creds: &Path,
    netns: Option<&str>,
) -> Command {
    let mut words = site.command[1..].to_vec();
    let p = words.iter().position(|w| w == "--protocol").unwrap();
    words[p + 1] = protocol.to_owned();
    let run = words.iter().position(|w| w == "run").unwrap();
    // Several cloudflareds run at once in this suite: no fixed metrics port.
    words.splice(run..run, ["--metrics".to_owned(), "127.0.0.1:0".to_owned()]);
    let c = words
        .iter()
        .position(|w| w == "--credentials-file")
        .unwrap();
    words[c + 1] = creds.display().to_string();
    let home = site.edge.path("cloudflared-home");
    std::fs::create_dir_all(&home).unwrap();
    let args: Vec<&str> = words.iter().map(String::as_str).collect();
    let mut cmd = match netns {
        Some(ns) => Netns::exec(ns, binary, &args),
        None => {
            let mut cmd = Command::new(binary);
            cmd.args(&args);
            cmd
        }
    };
    cmd.env("HOME", &home).current_dir(site.edge.dir.path());
    cmd
}

/// Starts cloudflared and waits for its registration line, which must name `protocol`;
/// returns the process and the time from its start to that line.
fn registered(name: &str, cmd: Command, protocol: &str) -> (Proc, Duration) {
    let t = Instant::now();
    let p = Proc::from_command(name, cmd);
    let line = p.wait_for_any(&["Registered tunnel connection", "Initiating shutdown"]);
    let took = t.elapsed();
    assert!(
        line.contains(&format!("protocol={protocol}")),
        "{name} did not register over {protocol}: {line}\n{}",
        p.output()
    );
    (p, took)
}

/// One round trip of `n` bytes through an echo flow.
fn round_trip(s: &mut TcpStream, n: usize) -> Duration {
    let msg = vec![0x5a; n];
    let mut back = vec![0; n];
    let t = Instant::now();
    s.write_all(&msg).unwrap();
    s.read_exact(&mut back).unwrap();
    let took = t.elapsed();
    assert_eq!(back, msg);
    took
}

/// The median and 99th percentile of `n` round trips of 64 bytes on one flow.
fn rtt(forward: SocketAddr, n: usize) -> (Duration, Duration) {
    let mut s = TcpStream::connect(forward).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_nodelay(true).unwrap();
    round_trip(&mut s, 64);
    let mut times: Vec<Duration> = (0..n).map(|_| round_trip(&mut s, 64)).collect();
    times.sort();
    (times[n / 2], times[n * 99 / 100])
}

fn hash_checked_flow(forward: SocketAddr, how: &str) {
    let payload = pattern(500_000);
    let t = Instant::now();
    let mut s = TcpStream::connect(forward).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(&(payload.len() as u64).to_be_bytes()).unwrap();
    s.write_all(&payload).unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    println!(
        "MEASURED 500 kB up / 200 kB down through the real cloudflared over {how}: {:?}",
        t.elapsed()
    );
    assert_eq!(back.len(), 32 + 200_000);
    assert_eq!(&back[..32], &sha256(&payload)[..], "the bytes that went up");
    assert_eq!(
        &back[32..],
        &pattern(200_000)[..],
        "the bytes that came down"
    );
}

#[test]
fn unmodified_cloudflared_over_http2_serves_flows_and_kubectl_and_drains_on_sigterm() {
    let Some(bin) = cloudflared_binary("unmodified cloudflared over HTTP/2") else {
        return;
    };
    let s = site(Edge::start(), "http2", "127.0.0.3/32");
    let (mut cf, took) = registered(
        "cloudflared-http2",
        cloudflared_command(&bin, &s, "http2", &s.creds, None),
        "http2",
    );
    println!("MEASURED cloudflared --protocol http2: start to registered {took:?}");
    s.edge.proc.as_ref().unwrap().wait_for("protocol=\"http2\"");
    let info = s.edge.admin(&["tunnel", "info", "legacy"]);
    assert!(info.contains("http2"), "{info}");
    assert!(info.contains("cloudflared 2026"), "{info}");

    // A hash-checked flow (framed: cloudflared has no half-close).
    let origin = framed_hashing_origin("127.0.0.3:0", 200_000);
    let (_fwd, forward) = client_forward(&s.device, origin.addr);
    hash_checked_flow(forward, "HTTP/2");
    let line = eventually("the flow's audit line", || {
        s.edge
            .flow_audit_lines()
            .into_iter()
            .find(|l| l["destination"] == origin.addr.to_string())
    });
    assert_eq!(line["connector_kind"], "cloudflared", "{line}");
    assert_eq!(line["connector_transport"], "http2", "{line}");
    assert_eq!(line["bytes_down"], 32 + 200_000, "{line}");

    // A destination nobody listens on: cloudflared answers 502, the client's connection
    // ends at once, and the audit line says the connect failed.
    let closed = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let (_closed_fwd, closed_forward) = client_forward(&s.device, closed_addr);
    let mut c = TcpStream::connect(closed_forward).unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 16];
    assert!(
        matches!(c.read(&mut buf), Ok(0) | Err(_)),
        "no bytes from a closed port"
    );
    let line = eventually("the failed flow's audit line", || {
        s.edge
            .flow_audit_lines()
            .into_iter()
            .find(|l| l["destination"] == closed_addr.to_string())
    });
    println!("a flow to a closed port through cloudflared over HTTP/2: {line}");
    assert_eq!(line["close_reason"], "connect_failed", "{line}");

    // The Kubernetes API stand-in: mutual TLS end to end through the tunnel.
    let pki = KubePki::new("e2e cloudflared http2 CA", &["127.0.0.3"]);
    let api = api_server("127.0.0.3:0", pki.server_config());
    let (_api_fwd, api_forward) = client_forward(&s.device, api.addr);
    let body = get_version(
        TcpStream::connect(api_forward).unwrap(),
        "127.0.0.3",
        pki.client_config(true),
    )
    .unwrap();
    assert_version(&body, "through cloudflared over HTTP/2");
    if have("kubectl") {
        let cfg = kubeconfig(
            s.edge.dir.path(),
            &pki,
            &format!("https://{api_forward}"),
            "    tls-server-name: kubernetes\n",
        );
        kubectl_version(&cfg, "through cloudflared over HTTP/2");
    } else {
        eprintln!("SKIPPED: kubectl not on PATH (the hand-written GET /version ran)");
    }

    // Round trips over HTTP/2, then the same binary over QUIC on the same edge.
    let echo = Origin::echo("127.0.0.3:0");
    let (_echo_fwd, echo_forward) = client_forward(&s.device, echo.addr);
    let (p50, p99) = rtt(echo_forward, 200);
    println!(
        "MEASURED 64-byte round trip through cloudflared over HTTP/2: p50 {p50:?}, p99 {p99:?}"
    );

    // SIGTERM with a second replica beside it: cloudflared unregisters, the edge drains
    // that connection and sends every new flow to the other replica; cloudflared exits
    // cleanly. (cloudflared itself ends the flows it still carries when it exits: it waits
    // for nothing after unregistering.)
    let (_cf2, _) = registered(
        "cloudflared-http2-b",
        cloudflared_command(&bin, &s, "http2", &s.creds, None),
        "http2",
    );
    eventually("two connections", || {
        let info = s.edge.admin(&["tunnel", "info", "legacy"]);
        (info.matches("http2").count() >= 2).then_some(())
    });
    let t = Instant::now();
    cf.signal("TERM");
    s.edge
        .proc
        .as_ref()
        .unwrap()
        .wait_for("draining (unregistered)");
    println!("MEASURED SIGTERM to the edge's drain: {:?}", t.elapsed());
    // Every flow opened after the drain is served, by the other replica.
    for _ in 0..20 {
        let mut flow = TcpStream::connect(echo_forward).unwrap();
        flow.set_read_timeout(Some(DEADLINE)).unwrap();
        round_trip(&mut flow, 1000);
    }
    let status = cf.wait_exit();
    println!("MEASURED SIGTERM to cloudflared's exit: {:?}", t.elapsed());
    assert!(
        status.success(),
        "cloudflared exited {status}: {}",
        cf.output()
    );
    eventually("the drained connection leaves the tunnel", || {
        let info = s.edge.admin(&["tunnel", "info", "legacy"]);
        (info.matches("http2").count() == 1).then_some(())
    });
    drop(_cf2);
    eventually("the second connection leaves the tunnel", || {
        let info = s.edge.admin(&["tunnel", "info", "legacy"]);
        (!info.contains("http2")).then_some(())
    });

    let (_cfq, took_quic) = registered(
        "cloudflared-quic",
        cloudflared_command(&bin, &s, "quic", &s.creds, None),
        "quic",
    );
    println!("MEASURED cloudflared --protocol quic: start to registered {took_quic:?}");
    s.edge.proc.as_ref().unwrap().wait_for("protocol=\"quic\"");
    let (q50, q99) = rtt(echo_forward, 200);
    println!("MEASURED 64-byte round trip through cloudflared over QUIC: p50 {q50:?}, p99 {q99:?}");
    println!(
        "MEASURED same binary, same edge: registration http2 {took:?} / quic {took_quic:?}; \
         round trip p50 http2 {p50:?} / quic {q50:?}"
    );
}

#[test]
fn unmodified_cloudflared_over_http2_is_refused_with_a_bad_secret_and_without_opt_in() {
    let Some(bin) = cloudflared_binary("cloudflared HTTP/2 refusals") else {
        return;
    };
    let s = site(Edge::start(), "http2", "127.0.0.3/32");
    let edge_log = s.edge.proc.as_ref().unwrap();

    // The tunnel's own credentials file with another secret.
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&s.creds).unwrap()).unwrap();
    json["TunnelSecret"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
    let bad = s.edge.path("bad-secret.json");
    write_0600(&bad, &json.to_string());
    let mut cf = Proc::from_command(
        "cloudflared-bad-secret",
        cloudflared_command(&bin, &s, "http2", &bad, None),
    );
    let status = cf.wait_exit();
    let out = cf.output();
    assert!(!status.success(), "{out}");
    assert!(out.contains("tunnel credentials refused"), "{out}");
    assert!(!out.contains("Registered tunnel connection"), "{out}");
    edge_log.wait_for("tunnel secret does not match");

    // A tunnel created without --allow-cloudflared: its credentials are refused alike.
    let plain = s.edge.tunnel("plain");
    let mut cf = Proc::from_command(
        "cloudflared-not-opted-in",
        cloudflared_command(&bin, &s, "http2", &plain, None),
    );
    let status = cf.wait_exit();
    let out = cf.output();
    assert!(!status.success(), "{out}");
    assert!(out.contains("tunnel credentials refused"), "{out}");
    let info = s.edge.admin(&["tunnel", "info", "plain"]);
    assert!(!info.contains("cloudflared 2026"), "{info}");
}

/// cloudflared with `--protocol auto` inside a namespace whose UDP is dropped: QUIC fails,
/// it falls back to HTTP/2 and serves a flow. Printed: the time from its start to the
/// registration.
#[test]
fn unmodified_cloudflared_auto_falls_back_to_http2_when_udp_is_dropped() {
    let Some(bin) = cloudflared_binary("cloudflared --protocol auto without UDP") else {
        return;
    };
    if let Some(why) = crate::support::netns::unavailable() {
        eprintln!(
            "SKIPPED: cloudflared --protocol auto without UDP needs network namespaces: {why}"
        );
        return;
    }
    if !have("nft") {
        eprintln!(
            "SKIPPED: cloudflared --protocol auto without UDP needs nft (apt-get install nftables)"
        );
        return;
    }
    let pid = std::process::id();
    let cluster = format!("cfaC{pid}");
    let (root_end, ns_end) = (format!("cfa{pid}a"), format!("cfa{pid}b"));
    let mut ns = Netns::new();
    ns.add(&cluster);
    ns.veth(
        &root_end,
        "198.18.3.1/30",
        &cluster,
        &ns_end,
        "198.18.3.2/30",
    );
    ip(&[
        "-n",
        &cluster,
        "route",
        "add",
        "default",
        "via",
        "198.18.3.1",
    ]);
    drop_udp(&cluster, true);

    let edge = Edge::start_on("198.18.3.1");
    let s = site(edge, "auto", "198.18.3.1/32");
    let (_cf, took) = registered(
        "cloudflared-auto",
        cloudflared_command(&bin, &s, "auto", &s.creds, Some(&cluster)),
        "http2",
    );
    println!(
        "MEASURED cloudflared --protocol auto with UDP dropped: start to registered over HTTP/2 {took:?}"
    );
    // The origin in the root namespace, reached from cloudflared's namespace.
    let echo = Origin::echo("198.18.3.1:0");
    let (_fwd, forward) = client_forward(&s.device, echo.addr);
    let mut flow = TcpStream::connect(forward).unwrap();
    flow.set_read_timeout(Some(DEADLINE)).unwrap();
    round_trip(&mut flow, 10_000);
    let info = s.edge.admin(&["tunnel", "info", "legacy"]);
    assert!(info.contains("http2"), "{info}");
}
