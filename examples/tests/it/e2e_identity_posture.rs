//! Rules on who asks, from what device, and for how long: a real `zt edge run` with rules
//! made by `zt rule create --identity/--device-posture`, a real connector process, and two
//! users' clients embedded in the test (`zt_client`, so the edge's typed answer is read
//! directly). A group rule lets only the SRE in; a posture rule only the device that reports
//! an encrypted disk; a `session.age_seconds` rule cuts a session that has lived too long.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zt_client::{Client, ClientOptions, PostureSpec};
use zt_creds::{DeviceCredentials, PermissionMode};

async fn connect(device: &Path, posture: Vec<PostureSpec>) -> Client {
    let creds = DeviceCredentials::load(device, PermissionMode::Default).unwrap();
    Client::connect(
        &creds,
        ClientOptions {
            posture,
            ..ClientOptions::default()
        },
    )
    .await
    .unwrap()
}

/// `Ok` when the flow carried `hello <msg>`, else the edge's answer in words.
async fn hello(client: &Client, dest: SocketAddr, msg: &str) -> Result<(), String> {
    let mut s = client.dial(dest).await.map_err(|e| e.to_string())?;
    s.write_all(msg.as_bytes()).await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, format!("hello {msg}").as_bytes());
    Ok(())
}

#[test]
fn identity_posture_and_session_age_decide_flows() {
    let api = Origin::hello("127.0.0.2:0");
    let secrets = Origin::hello("127.0.0.3:0");
    let short = Origin::hello("127.0.0.4:0");
    let edge = Edge::start();
    let creds = edge.tunnel("private");
    edge.admin(&["route", "ip", "add", "127.0.0.0/29", "private"]);
    let rule = |name: &str, precedence: &str, action: &str, traffic: &str, extra: &[&str]| {
        let mut args = vec![
            "rule",
            "create",
            name,
            "--precedence",
            precedence,
            "--action",
            action,
            "--filter",
            "l4",
            "--traffic",
            traffic,
        ];
        args.extend_from_slice(extra);
        edge.admin(&args);
    };
    rule(
        "Sessions older than 2 s",
        "10",
        "block",
        "net.dst.ip == 127.0.0.4 and session.age_seconds > 2",
        &[],
    );
    rule(
        "SRE to the API",
        "100",
        "allow",
        "net.dst.ip == 127.0.0.2",
        &["--identity", "any(identity.groups[*] == \"sre\")"],
    );
    rule(
        "Encrypted disks only",
        "110",
        "allow",
        "net.dst.ip == 127.0.0.3",
        &["--device-posture", "device.posture.disk_encrypted"],
    );
    rule(
        "Short sessions",
        "120",
        "allow",
        "net.dst.ip == 127.0.0.4",
        &[],
    );
    let alice = edge.user("alice@example.com", "sre");
    let bob = edge.user("bob@example.com", "dev");
    let connector = Connector::start(&edge, "private", &creds, "connector", 2);
    connector.wait_ready(2);

    let marker = edge.path("disk-encrypted");
    std::fs::write(&marker, b"yes").unwrap();
    let encrypted =
        PostureSpec::parse(&format!("file:disk_encrypted={}", marker.display())).unwrap();

    let rt = crate::support::runtime(2);
    rt.block_on(async {
        let started = Instant::now();
        let alice = connect(&alice, vec![encrypted]).await;
        let bob = connect(&bob, Vec::new()).await;

        // Identity: the group rule lets the SRE in; the other user meets the default block.
        hello(&alice, api.addr, "alice").await.unwrap();
        let e = hello(&bob, api.addr, "bob").await.unwrap_err();
        eprintln!("bob to the API: {e}");
        assert!(e.contains("denied by rule (l4 default: block)"), "{e}");

        // Posture: only the device reporting disk_encrypted.
        hello(&alice, secrets.addr, "posture").await.unwrap();
        let e = hello(&bob, secrets.addr, "posture").await.unwrap_err();
        eprintln!("bob without the posture check: {e}");
        assert!(e.contains("denied"), "{e}");

        // Session age: allowed while young, cut by the block rule once older than 2 s.
        hello(&alice, short.addr, "young").await.unwrap();
        let cut = eventually_async(|| async {
            match hello(&alice, short.addr, "old").await {
                Err(denied) => Ok(denied),
                Ok(()) => Err("the flow is still allowed".to_owned()),
            }
        })
        .await;
        eprintln!(
            "MEASURED session age rule: first denied flow {:?} after the session started: {cut}",
            started.elapsed()
        );
        assert!(
            cut.contains("denied by rule Sessions older than 2 s"),
            "{cut}"
        );
        alice.shutdown();
        bob.shutdown();
    });
}
