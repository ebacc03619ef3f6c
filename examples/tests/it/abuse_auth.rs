//! Who gets in, against the real `zt edge run` process: the authentication matrix (only the
//! valid identity registers; every refusal is the same bytes and the same close on the
//! wire; each is audited), malformed credential files refused at load before any packet
//! leaves, an impostor edge that receives no application byte and no proof from the real
//! connector and client binaries, and a proof replayed from another connection.
//!
//! The library-level versions of these checks are in `zt-proto/tests/it/registration.rs`
//! (refusal matrix, replay, other CA, pin) and `zt-creds/tests/it/bad_inputs.rs` (each bad
//! field); these run the real binaries and read the real audit log.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::abuse::*;
use crate::support::*;
use base64::Engine as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use uuid::Uuid;
use zt_creds::{DeviceCredentials, PermissionMode, TunnelCredentials, TunnelSecret};
use zt_proto::{
    Claim, ClientClaim, ConnectorClaim, ControlFrame, ProofKey, RegisterErrorCode, RetryAdvice,
    REFUSED_MESSAGE,
};
use zt_testkit::data::sha256_hex;
use zt_testkit::pki::{Ca, Leaf};

fn connector_claim(creds: &TunnelCredentials) -> Claim {
    Claim::Connector(ConnectorClaim {
        tunnel_id: creds.tunnel_id,
        account_tag: creds.account_tag.clone(),
        connector_id: Uuid::new_v4(),
        conn_index: 0,
    })
}

fn client_claim(device: &DeviceCredentials) -> Claim {
    Claim::Client(ClientClaim {
        device_id: device.device_id,
        vnet: String::new(),
    })
}

/// One registration attempt on a fresh raw connection from 127.0.0.1.
async fn attempt(edge: &Edge, claim: Claim, key: &zt_creds::AuthKey) -> WireAnswer {
    let ep = raw_endpoint(edge, "127.0.0.1:0".parse().unwrap());
    let conn = ep.connect(edge.listen, EDGE_NAME).unwrap().await.unwrap();
    let register = signed_register(claim, key, &exporter_of(&conn));
    let answer = send_register(&conn, register).await;
    conn.close(0u32.into(), b"done");
    answer
}

#[test]
fn only_the_valid_identity_gets_in_and_every_refusal_is_the_same_on_the_wire() {
    let edge = Edge::start();
    let good = edge.tunnel("good");
    let gone = edge.tunnel("gone");
    edge.admin(&["tunnel", "delete", "gone"]);
    let alice = edge.user("alice@example.com", "sre");
    let bob = edge.user("bob@example.com", "dev");
    edge.admin(&["user", "remove", "bob@example.com"]);

    let good = TunnelCredentials::load(&good, PermissionMode::Default).unwrap();
    let gone = TunnelCredentials::load(&gone, PermissionMode::Default).unwrap();
    let alice = DeviceCredentials::load(&alice, PermissionMode::Default).unwrap();
    let bob = DeviceCredentials::load(&bob, PermissionMode::Default).unwrap();
    let good_key = good.secret.derive_auth_key();
    let wrong_key = TunnelSecret::generate().derive_auth_key();
    let stranger = Uuid::new_v4();

    let rt = runtime(2);
    let answers = rt.block_on(async {
        let valid = attempt(&edge, connector_claim(&good), &good_key).await;
        let valid_client = attempt(
            &edge,
            client_claim(&alice),
            &alice
                .secret()
                .expect("a device with a secret")
                .derive_auth_key(),
        )
        .await;
        let mut wrong_id = good.clone();
        wrong_id.tunnel_id = stranger;
        let mut wrong_account = good.clone();
        wrong_account.account_tag = "0123456789abcdef0123456789abcdef".into();
        let refusals = vec![
            (
                "wrong secret",
                good.tunnel_id,
                "proof does not match",
                attempt(&edge, connector_claim(&good), &wrong_key).await,
            ),
            (
                "wrong tunnel id",
                stranger,
                "unknown identity",
                attempt(&edge, connector_claim(&wrong_id), &good_key).await,
            ),
            (
                "wrong account tag",
                good.tunnel_id,
                "unknown identity",
                attempt(&edge, connector_claim(&wrong_account), &good_key).await,
            ),
            (
                "deleted tunnel",
                gone.tunnel_id,
                "unknown identity",
                attempt(
                    &edge,
                    connector_claim(&gone),
                    &gone.secret.derive_auth_key(),
                )
                .await,
            ),
            (
                "removed user",
                bob.device_id,
                "unknown identity",
                attempt(
                    &edge,
                    client_claim(&bob),
                    &bob.secret()
                        .expect("a device with a secret")
                        .derive_auth_key(),
                )
                .await,
            ),
        ];
        (valid, valid_client, refusals)
    });
    let (valid, valid_client, refusals) = answers;
    assert!(valid.registered(), "the valid connector: {:?}", valid.frame);
    assert!(
        valid_client.registered(),
        "the valid client: {:?}",
        valid_client.frame
    );

    // Every refusal: the same frame bytes, the same stream end, the same close.
    let first = &refusals[0].3;
    match &first.frame {
        ControlFrame::RegisterError(e) => {
            assert_eq!(e.code, RegisterErrorCode::Unauthorized);
            assert_eq!(e.retry, RetryAdvice::Never);
            assert_eq!(e.message, REFUSED_MESSAGE);
        }
        other => panic!("wrong secret: expected a refusal, got {other:?}"),
    }
    for (case, _, _, answer) in &refusals {
        assert_eq!(
            answer, first,
            "{case}: the refusal differs on the wire from the wrong-secret one"
        );
        eprintln!(
            "MEASURED refusal on the wire ({case}): control stream {} bytes {:02x?}, close code {} reason {:?}",
            answer.control_bytes.len(),
            answer.control_bytes,
            answer.close.as_ref().unwrap().0,
            String::from_utf8_lossy(&answer.close.as_ref().unwrap().1)
        );
    }

    // Each refusal audited once at the edge, naming what was claimed and why (for the
    // operator only), and counted in the metrics.
    let audited = audit_lines(&edge, "auth_refusal");
    assert_eq!(audited.len(), refusals.len(), "{audited:#?}");
    for (case, claimed, why, _) in &refusals {
        let claimed = claimed.to_string();
        let line = audited
            .iter()
            .find(|l| {
                l["claimed_id"] == claimed.as_str() && l["reason"].as_str().unwrap().contains(why)
            })
            .unwrap_or_else(|| {
                panic!("{case}: no audit line for {claimed} with {why:?}: {audited:#?}")
            });
        assert_eq!(line["source"], "127.0.0.1", "{case}");
    }
    let (_, page) = http_get(edge.metrics, "/metrics").unwrap();
    assert_eq!(metric(&page, "zt_edge_auth_refusals_total"), Some(5.0));
}

#[test]
fn a_refused_connector_and_client_binary_say_so_and_the_edge_audits_them() {
    let edge = Edge::start();
    let good = edge.tunnel("good");
    let device = edge.user("carol@example.com", "dev");
    edge.admin(&["user", "remove", "carol@example.com"]);
    // The right tunnel, a wrong secret: the real connector binary.
    let mut creds = TunnelCredentials::load(&good, PermissionMode::Default).unwrap();
    creds.secret = TunnelSecret::generate();
    let wrong = edge.path("wrong-secret.json");
    creds.write(&wrong, zt_creds::ExistingFile::Refuse).unwrap();
    let connector = Connector::start(&edge, "good", &wrong, "connector-wrong-secret", 2);
    let line = connector.proc.wait_for("the edge refused this connector");
    assert!(line.contains("retrying cannot help"), "{line}");
    // The removed user's client binary.
    let out = client_forward_output(&device);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("refused this device: registration refused: invalid credentials"),
        "{stderr}"
    );
    let audited = eventually("audit lines for both", || {
        let l = audit_lines(&edge, "auth_refusal");
        (l.iter().any(|l| l["role"] == "connector") && l.iter().any(|l| l["role"] == "client"))
            .then_some(l)
    });
    assert!(audited.iter().all(|l| l["source"] == "127.0.0.1"));
    assert!(connector.ready().map(|(s, _)| s) != Some(200));
}

/// A malformed credentials file and what the binary must say about it.
struct BadFile {
    case: &'static str,
    contents: String,
    says: &'static str,
}

fn bad_tunnel_files(good: &serde_json::Value) -> Vec<BadFile> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let with = |field: &str, value: serde_json::Value| {
        let mut v = good.clone();
        v[field] = value;
        v.to_string()
    };
    let without = |field: &str| {
        let mut v = good.clone();
        v.as_object_mut().unwrap().remove(field);
        v.to_string()
    };
    vec![
        BadFile {
            case: "truncated secret (16 bytes)",
            contents: with("TunnelSecret", b64.encode([7u8; 16]).into()),
            says: "field `TunnelSecret`: secret is 16 bytes long; it must be 32 to 128 bytes",
        },
        BadFile {
            case: "oversized secret (4096 bytes)",
            contents: with("TunnelSecret", b64.encode([7u8; 4096]).into()),
            says: "field `TunnelSecret`: secret is 4096 bytes long; it must be 32 to 128 bytes",
        },
        BadFile {
            case: "non-base64 secret",
            contents: with("TunnelSecret", "this is not base64!".into()),
            says: "field `TunnelSecret` is not standard base64",
        },
        BadFile {
            case: "URL-safe base64 secret",
            contents: with("TunnelSecret", "-_-_".repeat(11).into()),
            says: "field `TunnelSecret` is not standard base64",
        },
        BadFile {
            case: "missing TunnelID",
            contents: without("TunnelID"),
            says: "field `TunnelID` is missing",
        },
        BadFile {
            case: "TunnelID not a UUID",
            contents: with("TunnelID", "tunnel-1".into()),
            says: "field `TunnelID`",
        },
        BadFile {
            case: "truncated JSON",
            contents: good.to_string()[..40].to_owned(),
            says: "not valid JSON at line 1, column 40",
        },
        BadFile {
            case: "empty file",
            contents: String::new(),
            says: "empty",
        },
    ]
}

/// Runs `zt` with `args` to completion (it must fail), with a deadline.
fn run_failing(args: &[&str]) -> String {
    let mut child = zt()
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("zt {args:?} still runs after {DEADLINE:?}; it should have refused its input");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    assert!(!status.success(), "zt {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn malformed_credentials_are_refused_at_load_and_never_reach_the_edge() {
    let edge = Edge::start();
    let good_path = edge.tunnel("good");
    let device_path = edge.user("dave@example.com", "dev");
    // A UDP socket stands where the edge would be: any packet a binary sends lands here.
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_nonblocking(true).unwrap();
    let sink_addr = sink.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let good: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&good_path).unwrap()).unwrap();
    for (i, bad) in bad_tunnel_files(&good).iter().enumerate() {
        let file = dir.path().join(format!("tunnel-{i}.json"));
        write_0600(&file, &bad.contents);
        for edge_addr in [sink_addr.as_str(), &edge.listen.to_string()] {
            let stderr = run_failing(&[
                "tunnel",
                "--credentials-file",
                file.to_str().unwrap(),
                "--edge",
                edge_addr,
                "--cacert",
                edge.path("ca.pem").to_str().unwrap(),
                "run",
            ]);
            let error = stderr
                .lines()
                .find(|l| l.starts_with("error:"))
                .unwrap_or("");
            assert!(
                error.contains(file.to_str().unwrap()) && error.contains(bad.says),
                "{}: the connector's error should name {} and say {:?}: {stderr}",
                bad.case,
                file.display(),
                bad.says
            );
            eprintln!("MEASURED {}: {error}", bad.case);
        }
    }
    // The same for the client's device credentials.
    let device: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&device_path).unwrap()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let device_cases = [
        (
            "truncated secret",
            {
                let mut v = device.clone();
                v["DeviceSecret"] = b64.encode([1u8; 20]).into();
                v.to_string()
            },
            "field `DeviceSecret`: secret is 20 bytes long",
        ),
        (
            "non-base64 secret",
            {
                let mut v = device.clone();
                v["DeviceSecret"] = "%%%%".into();
                v.to_string()
            },
            "field `DeviceSecret` is not standard base64",
        ),
        (
            "truncated JSON",
            device.to_string()[..30].to_owned(),
            "not valid JSON",
        ),
    ];
    for (i, (case, contents, says)) in device_cases.iter().enumerate() {
        let file = dir.path().join(format!("device-{i}.json"));
        write_0600(&file, contents);
        let stderr = run_failing(&[
            "client",
            "--credentials",
            file.to_str().unwrap(),
            "--edge",
            &sink_addr,
            "forward",
            "--listen",
            &free_tcp("127.0.0.1").to_string(),
            "--to",
            "127.0.0.2:80",
        ]);
        let error = stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or("");
        assert!(
            error.contains(file.to_str().unwrap()) && error.contains(says),
            "device {case}: the client's error should name the file and say {says:?}: {stderr}"
        );
        eprintln!("MEASURED device {case}: {error}");
    }
    // Nothing reached the edge: not a datagram at the sink, not an audit line or a
    // refusal counted at the real edge.
    let mut buf = [0u8; 2048];
    let stray = sink.recv_from(&mut buf);
    assert!(
        stray.is_err(),
        "a packet reached the stand-in edge: {stray:?}"
    );
    assert!(audit_lines(&edge, "auth_refusal").is_empty());
    let (_, page) = http_get(edge.metrics, "/metrics").unwrap();
    assert_eq!(metric(&page, "zt_edge_auth_refusals_total"), Some(0.0));
    // The sink does see a connector whose credentials load: the check above can fail.
    let probe = Proc::spawn(
        "connector-to-sink",
        &[
            "tunnel",
            "--credentials-file",
            good_path.to_str().unwrap(),
            "--edge",
            &sink_addr,
            "--cacert",
            edge.path("ca.pem").to_str().unwrap(),
            "run",
        ],
        &[],
    );
    eventually("a packet from a connector with good credentials", || {
        sink.recv_from(&mut buf).ok()
    });
    drop(probe);
}

// ---------------------------------------------------------------------------------------
// The impostor edge.

/// What a QUIC server that pretends to be the edge saw.
#[derive(Default)]
struct Seen {
    /// Connection attempts (Initial packets that became an incoming connection).
    attempts: AtomicUsize,
    /// Handshakes the peer completed (it sent its Finished: it accepted the certificate).
    handshakes: AtomicUsize,
    /// Streams and datagrams the peer opened or sent.
    streams: AtomicUsize,
    /// Application bytes received on them.
    bytes: AtomicUsize,
    /// How the handshakes ended.
    errors: Mutex<Vec<String>>,
}

/// A QUIC server on loopback offering ALPN `zt/1` with `chain` and `key`.
fn impostor(
    rt: &tokio::runtime::Runtime,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> (SocketAddr, Arc<Seen>) {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    tls.alpn_protocols = vec![zt_proto::ALPN_ZT1.to_vec()];
    let cfg = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap(),
    ));
    let seen = Arc::new(Seen::default());
    let _guard = rt.enter();
    let ep = quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = ep.local_addr().unwrap();
    let s = seen.clone();
    rt.spawn(async move {
        while let Some(incoming) = ep.accept().await {
            s.attempts.fetch_add(1, Ordering::SeqCst);
            let s = s.clone();
            tokio::spawn(async move {
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        s.errors.lock().unwrap().push(e.to_string());
                        return;
                    }
                };
                s.handshakes.fetch_add(1, Ordering::SeqCst);
                loop {
                    tokio::select! {
                        bi = conn.accept_bi() => {
                            let Ok((_, mut recv)) = bi else { break };
                            s.streams.fetch_add(1, Ordering::SeqCst);
                            if let Ok(data) = recv.read_to_end(1 << 20).await {
                                s.bytes.fetch_add(data.len(), Ordering::SeqCst);
                            }
                        }
                        uni = conn.accept_uni() => {
                            let Ok(mut recv) = uni else { break };
                            s.streams.fetch_add(1, Ordering::SeqCst);
                            if let Ok(data) = recv.read_to_end(1 << 20).await {
                                s.bytes.fetch_add(data.len(), Ordering::SeqCst);
                            }
                        }
                        d = conn.read_datagram() => {
                            let Ok(d) = d else { break };
                            s.streams.fetch_add(1, Ordering::SeqCst);
                            s.bytes.fetch_add(d.len(), Ordering::SeqCst);
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// What a server presenting `leaf` sends: its chain (the certificate, then its CA's) and
/// its key.
fn presented(leaf: &Leaf) -> Presented {
    (leaf.chain_der(), leaf.key_der())
}

#[test]
fn an_impostor_edge_gets_no_application_byte_and_no_proof() {
    let edge = Edge::start();
    let creds = edge.tunnel("t");
    let device = edge.user("erin@example.com", "dev");
    let ca_pem = edge.path("ca.pem");
    let edge_ca = Ca::from_pem(
        &std::fs::read_to_string(&ca_pem).unwrap(),
        &std::fs::read_to_string(edge.path("ca.key")).unwrap(),
    );
    let edge_pin = sha256_hex(edge_ca.der());
    let other_ca = Ca::new("another CA");

    // Self-signed: a leaf that is its own issuer.
    let self_signed = {
        let leaf = Leaf::self_signed(&["127.0.0.1"]);
        (vec![leaf.der().clone()], leaf.key_der())
    };
    // Signed by the edge's own CA, for another name.
    let wrong_name = presented(&edge_ca.server(&["impostor.example"]));
    // Another CA, for the right name.
    let other = presented(&other_ca.server(&["127.0.0.1"]));

    /// How the peer trusts the edge.
    enum Trust<'a> {
        CaFile(&'a Path),
        Pin(&'a str),
    }
    let cases: Vec<(&str, Presented, Trust<'_>)> = vec![
        (
            "self-signed certificate",
            self_signed,
            Trust::CaFile(&ca_pem),
        ),
        (
            "the edge CA's certificate for another name",
            wrong_name.clone_key(),
            Trust::CaFile(&ca_pem),
        ),
        (
            "the right name from another CA",
            other.clone_key(),
            Trust::CaFile(&ca_pem),
        ),
        (
            "another CA against the pinned fingerprint",
            other.clone_key(),
            Trust::Pin(&edge_pin),
        ),
        (
            "the edge CA's certificate for another name, pinned",
            wrong_name.clone_key(),
            Trust::Pin(&edge_pin),
        ),
    ];

    let rt = runtime(1);
    for (case, (chain, key), trust) in cases {
        // The connector binary.
        let (addr, seen) = impostor(&rt, chain.clone(), key.clone_key());
        let mut args: Vec<String> = vec![
            "tunnel".into(),
            "--credentials-file".into(),
            creds.to_str().unwrap().into(),
            "--edge".into(),
            addr.to_string(),
            "--ha-connections".into(),
            "1".into(),
        ];
        match trust {
            Trust::CaFile(p) => args.extend(["--cacert".into(), p.to_str().unwrap().into()]),
            Trust::Pin(p) => args.extend(["--edge-ca-fingerprint".into(), p.into()]),
        }
        args.push("run".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let connector = Proc::spawn("connector-vs-impostor", &args, &[]);
        // Two attempts: the connector tried, failed, and tried again after its backoff.
        eventually(&format!("{case}: two connector attempts"), || {
            (seen.attempts.load(Ordering::SeqCst) >= 2).then_some(())
        });
        let said = connector.wait_for("TLS handshake with the edge");
        drop(connector);
        check_nothing_sent(case, "connector", &seen);
        assert!(
            said.contains("certificate"),
            "{case}: the connector should say the certificate is the problem: {said}"
        );

        // The client binary: device credentials pin the edge's CA; `--edge-ca` trusts the
        // CA file instead.
        let (addr, seen) = impostor(&rt, chain, key);
        let mut args: Vec<String> = vec![
            "client".into(),
            "--credentials".into(),
            device.to_str().unwrap().into(),
            "--edge".into(),
            addr.to_string(),
        ];
        if let Trust::CaFile(p) = trust {
            args.extend(["--edge-ca".into(), p.to_str().unwrap().into()]);
        }
        args.extend([
            "forward".into(),
            "--listen".into(),
            free_tcp("127.0.0.1").to_string(),
            "--to".into(),
            "127.0.0.2:80".into(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let client = Proc::spawn("client-vs-impostor", &args, &[]);
        eventually(&format!("{case}: a client attempt"), || {
            (seen.attempts.load(Ordering::SeqCst) >= 1 && !seen.errors.lock().unwrap().is_empty())
                .then_some(())
        });
        // Give a client that wrongly accepted the certificate time to register.
        std::thread::sleep(Duration::from_millis(300));
        drop(client);
        check_nothing_sent(case, "client", &seen);
    }
}

fn check_nothing_sent(case: &str, who: &str, seen: &Seen) {
    let errors = seen.errors.lock().unwrap().clone();
    eprintln!(
        "MEASURED impostor ({case}, {who}): {} attempts, {} handshakes completed, {} streams, {} bytes; the peer ended them with {:?}",
        seen.attempts.load(Ordering::SeqCst),
        seen.handshakes.load(Ordering::SeqCst),
        seen.streams.load(Ordering::SeqCst),
        seen.bytes.load(Ordering::SeqCst),
        errors.first()
    );
    assert_eq!(
        seen.handshakes.load(Ordering::SeqCst),
        0,
        "{case}: the {who} completed the handshake"
    );
    assert_eq!(
        seen.streams.load(Ordering::SeqCst),
        0,
        "{case}: the {who} opened a stream"
    );
    assert_eq!(
        seen.bytes.load(Ordering::SeqCst),
        0,
        "{case}: the {who} sent application bytes"
    );
    assert!(!errors.is_empty(), "{case}: no handshake ended");
}

/// A certificate chain and its key, as a server presents them.
type Presented = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

trait CloneKey {
    fn clone_key(&self) -> Self;
}

impl CloneKey for Presented {
    fn clone_key(&self) -> Self {
        (self.0.clone(), self.1.clone_key())
    }
}

#[test]
fn a_proof_replayed_on_another_connection_is_refused_by_the_edge() {
    let edge = Edge::start();
    let creds = edge.tunnel("t");
    let creds = TunnelCredentials::load(&creds, PermissionMode::Default).unwrap();
    let key = creds.secret.derive_auth_key();
    let rt = runtime(2);
    let (replayed, original) = rt.block_on(async {
        let ep = raw_endpoint(&edge, "127.0.0.1:0".parse().unwrap());
        let first = ep.connect(edge.listen, EDGE_NAME).unwrap().await.unwrap();
        let second = ep.connect(edge.listen, EDGE_NAME).unwrap().await.unwrap();
        assert_ne!(exporter_of(&first), exporter_of(&second));
        // The proof made for the first connection, captured and sent on the second.
        let register = signed_register(connector_claim(&creds), &key, &exporter_of(&first));
        let replayed = send_register(&second, register.clone()).await;
        // The same frame where it belongs: accepted, so the refusal was the replay alone.
        let original = send_register(&first, register).await;
        (replayed, original)
    });
    assert!(
        matches!(&replayed.frame, ControlFrame::RegisterError(e) if e.code == RegisterErrorCode::Unauthorized),
        "{:?}",
        replayed.frame
    );
    assert!(original.registered(), "{:?}", original.frame);
    let audited = audit_lines(&edge, "auth_refusal");
    assert_eq!(audited.len(), 1, "{audited:#?}");
    assert_eq!(audited[0]["claimed_id"], creds.tunnel_id.to_string());
    assert_eq!(audited[0]["reason"], "proof does not match the stored key");
}

/// The same matrix over the edge's TLS-over-TCP listener (same port number as QUIC): only
/// the valid identities register, every refusal is the same answer (unauthorized, never
/// retry, the one message), and each is audited.
#[test]
fn the_authentication_matrix_over_tcp_gives_the_same_answers() {
    let edge = Edge::start();
    let good = edge.tunnel("good");
    let gone = edge.tunnel("gone");
    edge.admin(&["tunnel", "delete", "gone"]);
    let alice = edge.user("alice@example.com", "sre");
    let bob = edge.user("bob@example.com", "dev");
    edge.admin(&["user", "remove", "bob@example.com"]);
    let good = TunnelCredentials::load(&good, PermissionMode::Default).unwrap();
    let gone = TunnelCredentials::load(&gone, PermissionMode::Default).unwrap();
    let alice = DeviceCredentials::load(&alice, PermissionMode::Default).unwrap();
    let bob = DeviceCredentials::load(&bob, PermissionMode::Default).unwrap();
    let ca = std::fs::read(edge.path("ca.pem")).unwrap();
    let dialer = zt_proto::TcpDialer::new(
        &zt_proto::EdgeTrust::ca_file_contents(&ca).unwrap(),
        zt_proto::TransportSettings::default(),
    )
    .unwrap();
    let at = edge.listen;
    let connector = |creds: &TunnelCredentials| zt_proto::ConnectorRegistration {
        claim: ConnectorClaim {
            tunnel_id: creds.tunnel_id,
            account_tag: creds.account_tag.clone(),
            connector_id: Uuid::new_v4(),
            conn_index: 0,
        },
        software_version: "test".into(),
        features: vec![],
    };
    let client = |device: &DeviceCredentials| zt_proto::ClientRegistration {
        claim: ClientClaim {
            device_id: device.device_id,
            vnet: String::new(),
        },
        software_version: "test".into(),
        features: vec![],
    };
    let rt = runtime(2);
    rt.block_on(async {
        let c = dialer
            .connect_connector(
                at,
                EDGE_NAME,
                None,
                connector(&good),
                &good.secret.derive_auth_key(),
            )
            .await
            .unwrap();
        assert_eq!(c.transport_word(), "tcp");
        let u = dialer
            .connect_client(
                at,
                EDGE_NAME,
                None,
                client(&alice),
                &ProofKey::Shared(alice.secret().unwrap().derive_auth_key()),
            )
            .await
            .unwrap();
        assert_eq!(u.transport_word(), "tcp");
        let mut wrong_id = good.clone();
        wrong_id.tunnel_id = Uuid::new_v4();
        let mut wrong_account = good.clone();
        wrong_account.account_tag = "0123456789abcdef0123456789abcdef".into();
        let wrong_key = TunnelSecret::generate().derive_auth_key();
        let refusals = vec![
            (
                "wrong secret",
                dialer
                    .connect_connector(at, EDGE_NAME, None, connector(&good), &wrong_key)
                    .await,
            ),
            (
                "wrong tunnel id",
                dialer
                    .connect_connector(
                        at,
                        EDGE_NAME,
                        None,
                        connector(&wrong_id),
                        &good.secret.derive_auth_key(),
                    )
                    .await,
            ),
            (
                "wrong account tag",
                dialer
                    .connect_connector(
                        at,
                        EDGE_NAME,
                        None,
                        connector(&wrong_account),
                        &good.secret.derive_auth_key(),
                    )
                    .await,
            ),
            (
                "deleted tunnel",
                dialer
                    .connect_connector(
                        at,
                        EDGE_NAME,
                        None,
                        connector(&gone),
                        &gone.secret.derive_auth_key(),
                    )
                    .await,
            ),
        ];
        let removed = dialer
            .connect_client(
                at,
                EDGE_NAME,
                None,
                client(&bob),
                &ProofKey::Shared(bob.secret().unwrap().derive_auth_key()),
            )
            .await;
        let mut answers = Vec::new();
        for (case, r) in refusals {
            match r {
                Err(zt_proto::ConnectError::Refused(e)) => answers.push((case, e)),
                other => panic!("{case}: expected a refusal, got {:?}", other.map(|_| ())),
            }
        }
        match removed {
            Err(zt_proto::ConnectError::Refused(e)) => answers.push(("removed user", e)),
            other => panic!(
                "removed user: expected a refusal, got {:?}",
                other.map(|_| ())
            ),
        }
        for (case, e) in &answers {
            assert_eq!(e.code, RegisterErrorCode::Unauthorized, "{case}");
            assert_eq!(e.retry, RetryAdvice::Never, "{case}");
            assert_eq!(e.message, REFUSED_MESSAGE, "{case}");
        }
        drop((c, u));
    });
    let audited = audit_lines(&edge, "auth_refusal");
    assert_eq!(audited.len(), 5, "{audited:#?}");
    assert!(
        audited.iter().all(|l| l["source"] == "127.0.0.1"),
        "{audited:#?}"
    );
}
