//! The real `zt client … socks` binary against a stand-in edge (zt-proto's `EdgeListener`
//! over QUIC on 127.0.0.1, from zt-testkit): the test does the SOCKS5 handshake itself, and the bytes reach a
//! real TCP origin and come back; SIGTERM then stops the client with exit status 0.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zt_creds::ExistingFile;
use zt_testkit::data::{random_bytes, sha256};
use zt_testkit::origin::Origin;
use zt_testkit::socks;
use zt_testkit::stand_in::ClientEdge;
use zt_testkit::within;

/// Kills the child if the test fails before it exits.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zt_client_socks_carries_a_connect_through_the_edge() {
    let edge = ClientEdge::start();
    let origin = Origin::echo("127.0.0.1:0");
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("device.json");
    edge.credentials()
        .write(&creds, ExistingFile::Refuse)
        .unwrap();

    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_zt"))
        .args(["--log", "info", "client", "--credentials"])
        .arg(&creds)
        .args(["socks", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Child(child);
    let stderr = child.0.stderr.take().unwrap();

    // The client logs the address it listens on, in words; read it from there.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("zt client: {line}");
            if let Some(rest) = line.split("SOCKS5 proxy listening on ").nth(1) {
                let addr = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let _ = tx.send(addr);
            }
        }
    });
    let proxy: SocketAddr = tokio::task::spawn_blocking(move || {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("zt client did not report its SOCKS5 address within 30 s")
    })
    .await
    .unwrap()
    .parse()
    .unwrap();
    eprintln!("zt client listening after {:?}", started.elapsed());

    let (mut s, code) = socks::connect(proxy, &socks::encode(origin.addr)).await;
    assert_eq!(code, 0, "CONNECT succeeded");

    let data = random_bytes(100 * 1024);
    s.write_all(&data).await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    within("echo", s.read_to_end(&mut back)).await.unwrap();
    assert_eq!(sha256(&back), sha256(&data));

    // SIGTERM stops it cleanly.
    let pid = child.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "zt client did not exit within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert!(status.success(), "exit status {status:?}");
}
