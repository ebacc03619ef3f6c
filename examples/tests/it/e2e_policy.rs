//! Policy decides real flows: a real `zt edge run` with rules made by the admin commands, a
//! real connector process, and `zt_client` embedded in the test (so the test reads the
//! typed answer the edge gave). An allowed flow carries bytes; a blocked one fails with
//! `denied by rule <name>`; an unrouted one with `no route`; a routed flow no rule allows
//! hits the default block; the seed's `off` rule lets a server-speaks-first origin talk at
//! once, where a flow the http phase inspects waits for its first-bytes read. The audit
//! log gets exactly one line per flow.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zt_client::{Client, ClientOptions};
use zt_creds::{DeviceCredentials, PermissionMode};

const BANNER: &[u8] = b"220 private.example ESMTP ready\r\n";

/// An origin that speaks first: it writes its banner, then echoes one read and closes.
fn banner_origin(bind: &str) -> Origin {
    Origin::spawn(bind, |mut s| {
        let _ = s.write_all(BANNER);
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).unwrap_or(0);
        let _ = s.write_all(&buf[..n]);
    })
}

/// Reads the banner of a server-speaks-first flow without writing anything first.
async fn read_banner(client: &Client, dest: SocketAddr) -> Duration {
    let t = Instant::now();
    let mut s = client.dial(dest).await.unwrap();
    let mut got = vec![0u8; BANNER.len()];
    tokio::time::timeout(DEADLINE, s.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    let took = t.elapsed();
    assert_eq!(got, BANNER);
    s.write_all(b"QUIT\r\n").await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"QUIT\r\n");
    took
}

#[test]
fn policy_decides_real_flows_and_audits_each_once() {
    let allowed = Origin::hello("127.0.0.2:0");
    let banner_off = banner_origin("127.0.0.2:0");
    let banner_inspected = banner_origin("127.0.0.5:0");
    let blocked = Origin::hello("127.0.0.3:0");
    let unlisted = Origin::hello("127.0.0.4:0");

    let edge = Edge::start();
    let creds = edge.tunnel("private");
    edge.admin(&["route", "ip", "add", "127.0.0.0/29", "private"]);
    let k8s = edge.ip_list("Kubernetes API IPs", &["127.0.0.2/32"]);
    let apps = edge.ip_list("Apps", &["127.0.0.2/32", "127.0.0.5/32", "127.0.0.9/32"]);
    edge.rule(
        "Block database",
        50,
        "block",
        "l4",
        "net.dst.ip == 127.0.0.3",
    );
    edge.rule(
        "Allow apps",
        100,
        "allow",
        "l4",
        &format!("net.dst.ip in {apps}"),
    );
    edge.rule(
        "Don't inspect Kubernetes API",
        10000,
        "off",
        "http",
        &format!("any(http.conn.dst_ip[*] in {k8s})"),
    );
    // An http rule that reads the first bytes, so that flows the `off` rule does not
    // match are inspected.
    edge.rule(
        "Block by host",
        200,
        "block",
        "http",
        "http.request.host == \"blocked.example\"",
    );
    let device = edge.user("alice@example.com", "sre");
    let connector = Connector::start(&edge, "private", &creds, "connector", 2);
    connector.wait_ready(2);

    let rt = crate::support::runtime(2);
    rt.block_on(async {
        let creds = DeviceCredentials::load(&device, PermissionMode::Default).unwrap();
        let client = Arc::new(
            Client::connect(&creds, ClientOptions::default())
                .await
                .unwrap(),
        );

        // 1. Allowed.
        let mut s = client.dial(allowed.addr).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"hello ping");
        drop(s);

        // 2. Blocked by a rule, named in the answer.
        let e = client.dial(blocked.addr).await.unwrap_err().to_string();
        eprintln!("blocked: {e}");
        assert!(e.contains("denied by rule Block database"), "{e}");

        // 3. Allowed by l4 (policy runs before the route lookup), but no route.
        let e = client.dial(nowhere_addr()).await.unwrap_err().to_string();
        eprintln!("unrouted: {e}");
        assert!(e.contains("no route"), "{e}");

        // 4. Routed, but no rule allows it: the l4 default blocks.
        let e = client.dial(unlisted.addr).await.unwrap_err().to_string();
        eprintln!("default: {e}");
        assert!(e.contains("denied"), "{e}");

        // 5. The `off` rule: the banner arrives with no first-bytes wait.
        let off = read_banner(&client, banner_off.addr).await;
        // 6. The same protocol on an inspected address waits for the bounded read.
        let inspected = read_banner(&client, banner_inspected.addr).await;
        eprintln!(
            "MEASURED server-speaks-first banner: {off:?} under the `off` rule, {inspected:?} \
             when the http phase inspects the flow"
        );
        client.shutdown();
    });

    // One audit line per flow: six flows, six lines.
    let lines = eventually("six flow lines in the audit log", || {
        let lines = edge.flow_audit_lines();
        (lines.len() >= 6).then_some(lines)
    });
    // Give a duplicate line time to show up, if there were one.
    std::thread::sleep(Duration::from_millis(500));
    let lines = if edge.flow_audit_lines().len() == lines.len() {
        lines
    } else {
        edge.flow_audit_lines()
    };
    for l in &lines {
        eprintln!("audit: {l}");
    }
    assert_eq!(lines.len(), 6, "one audit line per flow");
    let dests: Vec<String> = lines
        .iter()
        .map(|l| l["destination"].as_str().unwrap_or_default().to_owned())
        .collect();
    for addr in [
        allowed.addr,
        blocked.addr,
        nowhere_addr(),
        unlisted.addr,
        banner_off.addr,
        banner_inspected.addr,
    ] {
        assert_eq!(
            dests.iter().filter(|d| **d == addr.to_string()).count(),
            1,
            "one line for {addr}: {dests:?}"
        );
    }
    let rule_of = |addr: SocketAddr| {
        lines
            .iter()
            .find(|l| l["destination"] == addr.to_string())
            .map(|l| l["rule_name"].as_str().unwrap_or_default().to_owned())
            .unwrap()
    };
    assert_eq!(rule_of(blocked.addr), "Block database");
    assert_eq!(rule_of(banner_off.addr), "Don't inspect Kubernetes API");
}

fn nowhere_addr() -> SocketAddr {
    "127.0.0.9:7".parse().unwrap()
}
