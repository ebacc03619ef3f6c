//! The control machines against each other, in memory.

use std::time::{Duration, Instant};

use uuid::Uuid;
use zt_creds::AuthKey;

use super::*;
use crate::auth::Exporter;
use crate::frame::*;

const NOW_OFFSET: Duration = Duration::from_secs(5);

fn connector_claim() -> ConnectorClaim {
    ConnectorClaim {
        tunnel_id: Uuid::from_u128(0x6ff4_2ae2_765d_4adf_8112_31c5_5c15_51ef),
        account_tag: "5ab4e9dfbd435d24068829fda0077963".into(),
        connector_id: Uuid::from_u128(7),
        conn_index: 0,
    }
}

use crate::auth::{ProofKey, VerifyKey};

fn key() -> AuthKey {
    AuthKey::from_bytes([0x42; 32])
}

struct Pair {
    peer: ConnectorControl,
    edge: EdgeControl,
}

impl Pair {
    fn new(peer_exporter: Exporter, edge_exporter: Exporter, now: Instant) -> Self {
        let peer = ConnectorControl::new(
            connector_claim(),
            "zt test",
            vec!["half-close".into()],
            &ProofKey::Shared(key()),
            &peer_exporter,
            now,
            NOW_OFFSET,
            Limits::default(),
        )
        .unwrap();
        let edge = EdgeControl::new(
            edge_exporter,
            Uuid::from_u128(99),
            "edge-test",
            now,
            NOW_OFFSET,
            Limits::default(),
        );
        Self { peer, edge }
    }

    /// Moves every pending byte both ways, one byte at a time, so every decoder sees
    /// every possible split of a frame.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(b) = self.peer.poll_transmit() {
                for byte in b.iter() {
                    self.edge.handle_input(&[*byte]).unwrap();
                }
                moved = true;
            }
            while let Some(b) = self.edge.poll_transmit() {
                for byte in b.iter() {
                    self.peer.handle_input(&[*byte]).unwrap();
                }
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }
}

#[test]
fn registration_is_accepted_with_the_right_key_and_exporter() {
    let now = Instant::now();
    let mut p = Pair::new([1; 32], [1; 32], now);
    p.pump();
    assert_eq!(
        p.edge.poll_event(),
        Some(EdgeEvent::AuthRequired(Claim::Connector(connector_claim())))
    );
    p.edge.authenticate(Some(&VerifyKey::Shared(key())));
    assert!(matches!(
        p.edge.poll_event(),
        Some(EdgeEvent::Registered { claim: Claim::Connector(c), ref software_version, ref features })
            if c == connector_claim() && software_version == "zt test" && features == &["half-close".to_owned()]
    ));
    p.pump();
    match p.peer.poll_event() {
        Some(PeerEvent::Registered(r)) => {
            assert_eq!(r.connection_id, Uuid::from_u128(99));
            assert_eq!(r.edge_name, "edge-test");
        }
        other => panic!("expected registered, got {other:?}"),
    }
    assert!(p.peer.is_registered() && p.edge.is_registered());
    assert_eq!(p.peer.poll_timeout(), None);
    assert_eq!(p.edge.poll_timeout(), None);
}

fn refusal_bytes(p: &mut Pair) -> Bytes {
    let b = p.edge.poll_transmit().unwrap();
    p.peer.handle_input(&b).unwrap();
    b
}

#[test]
fn wrong_key_unknown_claim_and_foreign_exporter_get_identical_answers() {
    let now = Instant::now();
    // Wrong key.
    let mut a = Pair::new([1; 32], [1; 32], now);
    a.pump();
    a.edge.poll_event();
    a.edge
        .authenticate(Some(&VerifyKey::Shared(AuthKey::from_bytes([0x43; 32]))));
    assert_eq!(
        a.edge.poll_event(),
        Some(EdgeEvent::Refused {
            reason: RefusalReason::BadProof,
            claim: Some(Claim::Connector(connector_claim()))
        })
    );
    // No stored key for the claim.
    let mut b = Pair::new([1; 32], [1; 32], now);
    b.pump();
    b.edge.poll_event();
    b.edge.authenticate(None);
    assert!(matches!(
        b.edge.poll_event(),
        Some(EdgeEvent::Refused {
            reason: RefusalReason::UnknownIdentity,
            ..
        })
    ));
    // A proof made for another connection (different exporter).
    let mut c = Pair::new([2; 32], [1; 32], now);
    c.pump();
    c.edge.poll_event();
    c.edge.authenticate(Some(&VerifyKey::Shared(key())));
    assert!(matches!(
        c.edge.poll_event(),
        Some(EdgeEvent::Refused {
            reason: RefusalReason::BadProof,
            ..
        })
    ));
    let (ra, rb, rc) = (
        refusal_bytes(&mut a),
        refusal_bytes(&mut b),
        refusal_bytes(&mut c),
    );
    assert_eq!(ra, rb);
    assert_eq!(ra, rc);
    for p in [&mut a, &mut b, &mut c] {
        assert!(p.edge.is_closed());
        match p.peer.poll_event() {
            Some(PeerEvent::Refused(e)) => {
                assert_eq!(e.code, RegisterErrorCode::Unauthorized);
                assert_eq!(e.retry, RetryAdvice::Never);
                assert_eq!(e.message, REFUSED_MESSAGE);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(!p.peer.is_registered());
    }
}

#[test]
fn an_edited_claim_under_a_valid_proof_is_refused() {
    let now = Instant::now();
    let mut p = Pair::new([1; 32], [1; 32], now);
    let mut bytes = BytesMut::from(&p.peer.poll_transmit().unwrap()[..]);
    // Flip the connection index, the byte just before the software version.
    let Ok(Some(ControlFrame::Register(mut r))) = ControlFrame::decode(&mut bytes.clone()) else {
        panic!("not a register frame")
    };
    if let Claim::Connector(c) = &mut r.claim {
        c.conn_index = 3;
    }
    bytes.clear();
    ControlFrame::Register(r).encode(&mut bytes).unwrap();
    p.edge.handle_input(&bytes).unwrap();
    p.edge.poll_event();
    p.edge.authenticate(Some(&VerifyKey::Shared(key())));
    assert!(matches!(
        p.edge.poll_event(),
        Some(EdgeEvent::Refused {
            reason: RefusalReason::BadProof,
            ..
        })
    ));
}

#[test]
fn version_mismatch_is_refused_without_asking_for_a_key() {
    let now = Instant::now();
    let mut p = Pair::new([1; 32], [1; 32], now);
    let mut wire = BytesMut::from(&p.peer.poll_transmit().unwrap()[..]);
    // protocol_version is the first payload field, right after the 5-byte header.
    wire[5..7].copy_from_slice(&2u16.to_be_bytes());
    p.edge.handle_input(&wire).unwrap();
    assert!(matches!(
        p.edge.poll_event(),
        Some(EdgeEvent::Refused {
            reason: RefusalReason::UnsupportedVersion(2),
            ..
        })
    ));
    p.pump();
    match p.peer.poll_event() {
        Some(PeerEvent::Refused(e)) => {
            assert_eq!(e.code, RegisterErrorCode::UnsupportedVersion);
            assert_eq!(e.retry, RetryAdvice::Never);
        }
        other => panic!("expected refusal, got {other:?}"),
    }
}

#[test]
fn rate_limit_and_draining_refusals_carry_their_retry_advice() {
    let now = Instant::now();
    for (reason, code, retry) in [
        (
            RefusalReason::RateLimited,
            RegisterErrorCode::RateLimited,
            RetryAdvice::After(Duration::from_secs(10)),
        ),
        (
            RefusalReason::Draining,
            RegisterErrorCode::Draining,
            RetryAdvice::Backoff,
        ),
    ] {
        let mut p = Pair::new([1; 32], [1; 32], now);
        p.pump();
        assert!(matches!(
            p.edge.poll_event(),
            Some(EdgeEvent::AuthRequired(_))
        ));
        p.edge.refuse_for(reason);
        assert!(
            matches!(p.edge.poll_event(), Some(EdgeEvent::Refused { reason: r, claim: Some(_) }) if r == reason)
        );
        p.pump();
        assert!(
            matches!(p.peer.poll_event(), Some(PeerEvent::Refused(e)) if e.code == code && e.retry == retry)
        );
    }
}

#[test]
fn an_unencodable_answer_becomes_an_internal_refusal() {
    let now = Instant::now();
    let mut p = Pair::new([1; 32], [1; 32], now);
    p.edge = EdgeControl::new(
        [1; 32],
        Uuid::nil(),
        "e".repeat(300),
        now,
        NOW_OFFSET,
        Limits::default(),
    );
    p.pump();
    p.edge.poll_event();
    p.edge.authenticate(Some(&VerifyKey::Shared(key())));
    assert!(matches!(
        p.edge.poll_event(),
        Some(EdgeEvent::Refused {
            reason: RefusalReason::Internal,
            claim: Some(_)
        })
    ));
    p.pump();
    assert!(matches!(
        p.peer.poll_event(),
        Some(PeerEvent::Refused(e)) if e.code == RegisterErrorCode::Internal && e.retry == RetryAdvice::Backoff
    ));
}

#[test]
fn silence_times_out_on_both_sides() {
    let now = Instant::now();
    let mut p = Pair::new([1; 32], [1; 32], now);
    let _lost = p.peer.poll_transmit();
    assert_eq!(p.edge.poll_timeout(), Some(now + NOW_OFFSET));
    p.edge
        .handle_timeout(now + NOW_OFFSET - Duration::from_millis(1));
    assert_eq!(p.edge.poll_event(), None);
    p.edge.handle_timeout(now + NOW_OFFSET);
    assert!(matches!(
        p.edge.poll_event(),
        Some(EdgeEvent::Refused {
            reason: RefusalReason::Timeout,
            claim: None
        })
    ));
    p.peer.handle_timeout(now + NOW_OFFSET);
    assert_eq!(p.peer.poll_event(), Some(PeerEvent::RegisterTimedOut));
}

#[test]
fn a_first_frame_other_than_register_is_malformed() {
    let now = Instant::now();
    let mut edge = EdgeControl::new(
        [1; 32],
        Uuid::nil(),
        "e",
        now,
        NOW_OFFSET,
        Limits::default(),
    );
    let mut ping = BytesMut::new();
    ControlFrame::Ping(1).encode(&mut ping).unwrap();
    assert!(matches!(
        edge.handle_input(&ping),
        Err(ControlError::Unexpected { frame: "ping", .. })
    ));
    assert!(matches!(
        edge.poll_event(),
        Some(EdgeEvent::Refused {
            reason: RefusalReason::Malformed,
            ..
        })
    ));
    let mut out = edge.poll_transmit().unwrap();
    assert!(matches!(
        ControlFrame::decode(&mut out),
        Ok(Some(ControlFrame::RegisterError(RegisterError {
            code: RegisterErrorCode::Malformed,
            ..
        })))
    ));
}

fn registered_pair(client: bool) -> (Box<dyn PeerLike>, EdgeControl) {
    let now = Instant::now();
    let mut edge = EdgeControl::new(
        [1; 32],
        Uuid::nil(),
        "e",
        now,
        NOW_OFFSET,
        Limits::default(),
    );
    let mut peer: Box<dyn PeerLike> = if client {
        Box::new(
            ClientControl::new(
                ClientClaim {
                    device_id: Uuid::from_u128(5),
                    vnet: String::new(),
                },
                "zt",
                vec![],
                &ProofKey::Shared(key()),
                &[1; 32],
                now,
                NOW_OFFSET,
                Limits::default(),
            )
            .unwrap(),
        )
    } else {
        Box::new(
            ConnectorControl::new(
                connector_claim(),
                "zt",
                vec![],
                &ProofKey::Shared(key()),
                &[1; 32],
                now,
                NOW_OFFSET,
                Limits::default(),
            )
            .unwrap(),
        )
    };
    edge.handle_input(&peer.transmit().unwrap()).unwrap();
    edge.poll_event();
    edge.authenticate(Some(&VerifyKey::Shared(key())));
    edge.poll_event();
    peer.input(&edge.poll_transmit().unwrap()).unwrap();
    assert!(matches!(peer.event(), Some(PeerEvent::Registered(_))));
    (peer, edge)
}

trait PeerLike {
    fn transmit(&mut self) -> Option<Bytes>;
    fn input(&mut self, b: &[u8]) -> Result<(), ControlError>;
    fn event(&mut self) -> Option<PeerEvent>;
    fn ping(&mut self, n: u64) -> Result<(), ControlError>;
}
impl PeerLike for ConnectorControl {
    fn transmit(&mut self) -> Option<Bytes> {
        self.poll_transmit()
    }
    fn input(&mut self, b: &[u8]) -> Result<(), ControlError> {
        self.handle_input(b)
    }
    fn event(&mut self) -> Option<PeerEvent> {
        self.poll_event()
    }
    fn ping(&mut self, n: u64) -> Result<(), ControlError> {
        ConnectorControl::ping(self, n)
    }
}
impl PeerLike for ClientControl {
    fn transmit(&mut self) -> Option<Bytes> {
        self.poll_transmit()
    }
    fn input(&mut self, b: &[u8]) -> Result<(), ControlError> {
        self.handle_input(b)
    }
    fn event(&mut self) -> Option<PeerEvent> {
        self.poll_event()
    }
    fn ping(&mut self, n: u64) -> Result<(), ControlError> {
        ClientControl::ping(self, n)
    }
}

#[test]
fn go_away_and_pings_reach_the_other_side() {
    for client in [false, true] {
        let (mut peer, mut edge) = registered_pair(client);
        edge.go_away(Duration::from_secs(3), "restart").unwrap();
        edge.ping(11).unwrap();
        peer.input(&edge.poll_transmit().unwrap()).unwrap();
        assert_eq!(
            peer.event(),
            Some(PeerEvent::GoAway(GoAway {
                drain: Duration::from_secs(3),
                reason: "restart".into()
            }))
        );
        // The peer answered the edge's ping by itself.
        edge.handle_input(&peer.transmit().unwrap()).unwrap();
        assert_eq!(edge.poll_event(), Some(EdgeEvent::Pong(11)));
        peer.ping(12).unwrap();
        edge.handle_input(&peer.transmit().unwrap()).unwrap();
        peer.input(&edge.poll_transmit().unwrap()).unwrap();
        assert_eq!(peer.event(), Some(PeerEvent::Pong(12)));
    }
}

#[test]
fn unregister_routes_and_posture_go_only_where_they_belong() {
    let now = Instant::now();
    let (_, mut edge) = registered_pair(false);
    assert!(matches!(
        edge.push_routes(RoutePush {
            generation: 1,
            vnet: String::new(),
            routes: vec![]
        }),
        Err(ControlError::Unexpected { .. })
    ));
    let mut conn = ConnectorControl::new(
        connector_claim(),
        "zt",
        vec![],
        &ProofKey::Shared(key()),
        &[1; 32],
        now,
        NOW_OFFSET,
        Limits::default(),
    )
    .unwrap();
    assert!(matches!(
        conn.unregister(Duration::from_secs(1)),
        Err(ControlError::NotRegistered { .. })
    ));

    let (mut client, mut edge) = registered_pair(true);
    let push = RoutePush {
        generation: 4,
        vnet: "default".into(),
        routes: vec!["198.51.100.0/24".parse().unwrap()],
    };
    edge.push_routes(push.clone()).unwrap();
    client.input(&edge.poll_transmit().unwrap()).unwrap();
    assert_eq!(client.event(), Some(PeerEvent::RoutesPushed(push)));
    // A client may not unregister: the edge treats it as a violation.
    let mut unreg = BytesMut::new();
    ControlFrame::Unregister(Unregister {
        grace: Duration::ZERO,
    })
    .encode(&mut unreg)
    .unwrap();
    assert!(matches!(
        edge.handle_input(&unreg),
        Err(ControlError::Unexpected {
            frame: "unregister",
            ..
        })
    ));
}

#[test]
fn connector_unregister_and_client_posture_arrive_as_events() {
    let now = Instant::now();
    let mut edge = EdgeControl::new(
        [1; 32],
        Uuid::nil(),
        "e",
        now,
        NOW_OFFSET,
        Limits::default(),
    );
    let mut conn = ConnectorControl::new(
        connector_claim(),
        "zt",
        vec![],
        &ProofKey::Shared(key()),
        &[1; 32],
        now,
        NOW_OFFSET,
        Limits::default(),
    )
    .unwrap();
    edge.handle_input(&conn.poll_transmit().unwrap()).unwrap();
    edge.poll_event();
    edge.authenticate(Some(&VerifyKey::Shared(key())));
    edge.poll_event();
    conn.handle_input(&edge.poll_transmit().unwrap()).unwrap();
    conn.unregister(Duration::from_secs(30)).unwrap();
    edge.handle_input(&conn.poll_transmit().unwrap()).unwrap();
    assert_eq!(
        edge.poll_event(),
        Some(EdgeEvent::Unregister(Unregister {
            grace: Duration::from_secs(30)
        }))
    );

    let mut edge = EdgeControl::new(
        [1; 32],
        Uuid::nil(),
        "e",
        now,
        NOW_OFFSET,
        Limits::default(),
    );
    let mut client = ClientControl::new(
        ClientClaim {
            device_id: Uuid::from_u128(5),
            vnet: "prod".into(),
        },
        "zt",
        vec![],
        &ProofKey::Shared(key()),
        &[1; 32],
        now,
        NOW_OFFSET,
        Limits::default(),
    )
    .unwrap();
    edge.handle_input(&client.poll_transmit().unwrap()).unwrap();
    assert!(
        matches!(edge.poll_event(), Some(EdgeEvent::AuthRequired(Claim::Client(c))) if c.vnet == "prod")
    );
    edge.authenticate(Some(&VerifyKey::Shared(key())));
    edge.poll_event();
    client.handle_input(&edge.poll_transmit().unwrap()).unwrap();
    let report = PostureReport {
        checks: vec![crate::frame::PostureCheck {
            name: "disk".into(),
            passed: true,
        }],
    };
    client.report_posture(report.clone()).unwrap();
    edge.handle_input(&client.poll_transmit().unwrap()).unwrap();
    assert_eq!(edge.poll_event(), Some(EdgeEvent::Posture(report)));
}

#[test]
fn extension_frames_are_skipped_and_garbage_is_an_error() {
    let (mut peer, mut edge) = registered_pair(false);
    let mut wire = BytesMut::new();
    ControlFrame::Extension {
        ty: 0x90,
        payload: Bytes::from_static(b"later"),
    }
    .encode(&mut wire)
    .unwrap();
    ControlFrame::Ping(3).encode(&mut wire).unwrap();
    edge.handle_input(&wire).unwrap();
    peer.input(&edge.poll_transmit().unwrap()).unwrap();
    // The edge skipped the extension and answered the ping after it.
    assert_eq!(peer.event(), Some(PeerEvent::Pong(3)));
    assert!(matches!(
        peer.input(&[0x30, 0, 0, 0, 0]),
        Err(ControlError::Decode(DecodeError::UnknownFrameType {
            ty: 0x30
        }))
    ));
}
