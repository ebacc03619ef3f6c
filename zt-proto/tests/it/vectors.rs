//! The worked examples in docs/PROTOCOL.md are test vectors: each decodes to the value
//! described next to it and re-encodes to the same bytes.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use uuid::Uuid;
use zt_creds::AuthKey;
use zt_proto::*;

const DOC: &str = include_str!("../../../docs/PROTOCOL.md");

fn key() -> AuthKey {
    AuthKey::from_bytes([0x42; 32])
}

const EXPORTER: Exporter = [0xa5; 32];

/// The documented device key: the Ed25519 key whose 32-byte seed is `07 07 … 07`, as a
/// PKCS#8 v1 document.
fn device_key() -> zt_creds::DeviceKey {
    let mut pkcs8 = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    pkcs8.extend_from_slice(&[0x07; 32]);
    zt_creds::DeviceKey::from_pkcs8(&pkcs8).unwrap()
}

enum Expected {
    Control(ControlFrame),
    Header(FlowHeader),
    Status(FlowStatus),
    Datagram(Datagram),
    PeerOpen(PeerFlowOpen),
    PeerAnswer(PeerFlowAnswer),
}

fn tunnel_id() -> Uuid {
    Uuid::parse_str("6ff42ae2-765d-4adf-8112-31c55c1551ef").unwrap()
}

fn expected() -> Vec<(&'static str, Expected)> {
    let mut register = Register {
        protocol_version: 1,
        claim: Claim::Connector(ConnectorClaim {
            tunnel_id: tunnel_id(),
            account_tag: "5ab4e9dfbd435d24068829fda0077963".into(),
            connector_id: Uuid::parse_str("1e2f3a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b").unwrap(),
            conn_index: 2,
        }),
        software_version: "zt 0.1.0".into(),
        features: vec!["half-close".into()],
        proof: zt_proto::Proof::EMPTY,
    };
    sign_register(&mut register, &zt_proto::ProofKey::Shared(key()), &EXPORTER).unwrap();
    let mut client_register = Register {
        protocol_version: 1,
        claim: Claim::Client(ClientClaim {
            device_id: Uuid::parse_str("0f0e0d0c-0b0a-4908-8706-050403020100").unwrap(),
            vnet: "".into(),
        }),
        software_version: "zt 0.1.0".into(),
        features: vec![],
        proof: zt_proto::Proof::EMPTY,
    };
    sign_register(
        &mut client_register,
        &zt_proto::ProofKey::Shared(key()),
        &EXPORTER,
    )
    .unwrap();
    let mut signed_register = client_register.clone();
    signed_register.software_version = "zt 0.2.0".into();
    sign_register(
        &mut signed_register,
        &zt_proto::ProofKey::Device(device_key()),
        &EXPORTER,
    )
    .unwrap();
    use Expected::*;
    vec![
        (
            "register-connector",
            Control(ControlFrame::Register(register)),
        ),
        (
            "register-client",
            Control(ControlFrame::Register(client_register)),
        ),
        (
            "register-client-signed",
            Control(ControlFrame::Register(signed_register)),
        ),
        (
            "registered",
            Control(ControlFrame::Registered(Registered {
                connection_id: Uuid::parse_str("a0a1a2a3-b0b1-4c0c-9d0d-e0e1e2e3e4e5").unwrap(),
                edge_name: "edge-1".into(),
                protocol_version: 1,
            })),
        ),
        (
            "register-error",
            Control(ControlFrame::RegisterError(RegisterError {
                code: RegisterErrorCode::Unauthorized,
                retry: RetryAdvice::Never,
                message: REFUSED_MESSAGE.into(),
            })),
        ),
        (
            "register-error-rate-limited",
            Control(ControlFrame::RegisterError(RegisterError {
                code: RegisterErrorCode::RateLimited,
                retry: RetryAdvice::After(Duration::from_secs(10)),
                message: "slow down".into(),
            })),
        ),
        (
            "go-away",
            Control(ControlFrame::GoAway(GoAway {
                drain: Duration::from_secs(30),
                reason: "restart".into(),
            })),
        ),
        (
            "unregister",
            Control(ControlFrame::Unregister(Unregister {
                grace: Duration::from_secs(30),
            })),
        ),
        ("ping", Control(ControlFrame::Ping(0x0102_0304_0506_0708))),
        ("pong", Control(ControlFrame::Pong(0x0102_0304_0506_0708))),
        (
            "route-push",
            Control(ControlFrame::RoutePush(RoutePush {
                generation: 7,
                vnet: "default".into(),
                routes: vec![
                    "198.51.100.0/24".parse().unwrap(),
                    "2001:db8::/64".parse().unwrap(),
                ],
            })),
        ),
        (
            "posture-report",
            Control(ControlFrame::PostureReport(PostureReport {
                checks: vec![
                    PostureCheck {
                        name: "disk-encrypted".into(),
                        passed: true,
                    },
                    PostureCheck {
                        name: "os-updated".into(),
                        passed: false,
                    },
                ],
            })),
        ),
        (
            "flow-header-tcp",
            Header(FlowHeader {
                flow_id: 1,
                protocol: Protocol::Tcp,
                dest: "198.51.100.101:443".parse().unwrap(),
                metadata: vec![("trace".into(), "abc".into())],
            }),
        ),
        (
            "flow-header-udp-v6",
            Header(FlowHeader {
                flow_id: 2,
                protocol: Protocol::Udp,
                dest: "[2001:db8::53]:53".parse().unwrap(),
                metadata: vec![],
            }),
        ),
        ("flow-status-ok", Status(FlowStatus::ok())),
        (
            "flow-status-denied",
            Status(FlowStatus::denied("block-ssh")),
        ),
        (
            "datagram",
            Datagram(zt_proto::Datagram {
                flow_id: 2,
                payload: Bytes::from_static(b"\x12\x34dns"),
            }),
        ),
        (
            "peer-flow-open",
            PeerOpen(PeerFlowOpen {
                tunnel_id: tunnel_id(),
                from_edge: Uuid::parse_str("5e1f0a2b-3c4d-4e5f-8a6b-7c8d9e0f1a2b").unwrap(),
                flow: FlowHeader {
                    flow_id: 1,
                    protocol: Protocol::Tcp,
                    dest: "198.51.100.101:443".parse().unwrap(),
                    metadata: vec![("trace".into(), "abc".into())],
                },
            }),
        ),
        (
            "peer-flow-answer-ok",
            PeerAnswer(PeerFlowAnswer::ok(PeerConnectorInfo {
                connector_id: Uuid::parse_str("1e2f3a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b").unwrap(),
                conn_index: 2,
                kind: PeerConnectorKind::Cloudflared,
                transport: "http2".into(),
                first_fin_ends: true,
            })),
        ),
        (
            "peer-flow-answer-refused",
            PeerAnswer(PeerFlowAnswer::refused(FlowStatus::new(
                FlowStatusCode::Draining,
                "restart",
            ))),
        ),
    ]
}

fn encode(e: &Expected) -> Vec<u8> {
    let mut out = BytesMut::new();
    match e {
        Expected::Control(f) => f.encode(&mut out).unwrap(),
        Expected::Header(h) => h.encode(&mut out).unwrap(),
        Expected::Status(s) => s.encode(&mut out).unwrap(),
        Expected::Datagram(d) => d.encode(&mut out, &Limits::default()).unwrap(),
        Expected::PeerOpen(o) => o.encode(&mut out).unwrap(),
        Expected::PeerAnswer(a) => a.encode(&mut out).unwrap(),
    }
    out.to_vec()
}

fn hex(bytes: &[u8]) -> String {
    let lines: Vec<String> = bytes
        .chunks(16)
        .map(|c| {
            c.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    lines.join("\n")
}

/// The vectors in the document: `(name, bytes)` from every fenced block that starts with
/// a `# vector: NAME` line.
fn doc_vectors() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut current: Option<(String, Vec<u8>)> = None;
    for line in DOC.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("# vector: ") {
            current = Some((name.trim().to_owned(), Vec::new()));
        } else if line.starts_with("```") {
            if let Some(v) = current.take() {
                out.push(v);
            }
        } else if let Some((_, bytes)) = current.as_mut() {
            let data = line.split('#').next().unwrap_or("");
            for tok in data.split_whitespace() {
                bytes.push(u8::from_str_radix(tok, 16).unwrap());
            }
        }
    }
    out
}

#[test]
fn every_documented_vector_decodes_and_reencodes_byte_for_byte() {
    if std::env::var_os("ZT_PRINT_VECTORS").is_some() {
        for (name, e) in expected() {
            println!("# vector: {name}\n{}\n", hex(&encode(&e)));
        }
    }
    let doc = doc_vectors();
    let expected = expected();
    assert_eq!(
        doc.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        expected.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        "PROTOCOL.md must hold exactly these vectors, in this order"
    );
    for ((name, bytes), (_, e)) in doc.iter().zip(&expected) {
        assert_eq!(
            &encode(e),
            bytes,
            "vector {name}: encoding differs from the document"
        );
        let mut buf = Bytes::from(bytes.clone());
        match e {
            Expected::Control(f) => {
                assert_eq!(
                    &ControlFrame::decode(&mut buf).unwrap().unwrap(),
                    f,
                    "{name}"
                );
                assert!(buf.is_empty());
            }
            Expected::Header(h) => {
                assert_eq!(&FlowHeader::decode(&mut buf).unwrap().unwrap(), h, "{name}");
                assert!(buf.is_empty());
            }
            Expected::Status(s) => {
                assert_eq!(&FlowStatus::decode(&mut buf).unwrap().unwrap(), s, "{name}");
                assert!(buf.is_empty());
            }
            Expected::Datagram(d) => {
                assert_eq!(
                    &zt_proto::Datagram::decode(buf, &Limits::default()).unwrap(),
                    d
                );
            }
            Expected::PeerOpen(o) => {
                assert_eq!(
                    &PeerFlowOpen::decode(&mut buf).unwrap().unwrap(),
                    o,
                    "{name}"
                );
                assert!(buf.is_empty());
            }
            Expected::PeerAnswer(a) => {
                assert_eq!(
                    &PeerFlowAnswer::decode(&mut buf).unwrap().unwrap(),
                    a,
                    "{name}"
                );
                assert!(buf.is_empty());
            }
        }
    }
}

#[test]
fn documented_register_proofs_verify_with_the_documented_key_and_exporter() {
    for (name, bytes) in doc_vectors() {
        if !name.starts_with("register-c") {
            continue;
        }
        let mut buf = Bytes::from(bytes);
        let Some(ControlFrame::Register(r)) = ControlFrame::decode(&mut buf).unwrap() else {
            panic!("{name} is not a register frame");
        };
        let key = if name.ends_with("-signed") {
            zt_proto::VerifyKey::Device(device_key().public_key())
        } else {
            zt_proto::VerifyKey::Shared(key())
        };
        assert!(verify_proof(&key, &EXPORTER, &r), "{name}");
        assert!(
            !verify_proof(&key, &[0x5a; 32], &r),
            "{name} with another exporter"
        );
    }
}
