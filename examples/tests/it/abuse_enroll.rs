//! The enrollment exchange (`zt login`'s ALPN `zt-enroll/1`) against hostile laptops, on a
//! real `zt edge run` over real QUIC: a possession signature made with another key, garbage,
//! an oversized length prefix, a wrong version, a hello that never comes; each is refused
//! with its own clear word, and the failures spend the same per-source budget as failed
//! registrations, so once it is spent this source can neither enroll nor register.
//! Nothing here needs an identity provider: every case is refused before one is asked.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use zt_creds::DeviceKey;
use zt_proto::{
    from_hex, possession_message, to_hex, EdgeTrust, EnrollDecoder, EnrollFlow, EnrollMessage,
    PeerEndpoint, TransportSettings, CHALLENGE_LEN, ENROLL_VERSION,
};

use crate::support::abuse::*;
use crate::support::*;

struct Raw {
    _ep: PeerEndpoint,
    conn: zt_proto::EnrollmentConnection,
    send: zt_proto::FlowSendStream,
    recv: zt_proto::FlowRecvStream,
    decoder: EnrollDecoder,
}

impl Raw {
    async fn open(edge: &Edge) -> Raw {
        let pem = std::fs::read(edge.path("ca.pem")).unwrap();
        let trust = EdgeTrust::ca_pem(&pem).unwrap();
        let ep = PeerEndpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            &trust,
            TransportSettings::default(),
        )
        .unwrap();
        let conn = ep
            .connect_enrollment(edge.listen, "localhost")
            .await
            .expect("the enrollment handshake");
        let (send, recv) = conn.open_stream().await.unwrap();
        Raw {
            _ep: ep,
            conn,
            send,
            recv,
            decoder: EnrollDecoder::new(),
        }
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        let _ = self.send.write_all(bytes).await;
    }

    async fn send(&mut self, m: &EnrollMessage) {
        let bytes = m.encode().unwrap();
        self.send_bytes(&bytes).await;
    }

    /// The next message, or `None` when the edge ends the stream.
    async fn next(&mut self) -> Option<EnrollMessage> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(m) = self.decoder.next_message().unwrap() {
                return Some(m);
            }
            let n = tokio::time::timeout(DEADLINE, self.recv.read(&mut buf))
                .await
                .expect("the edge answers in time")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.decoder.push(&buf[..n]).unwrap();
        }
    }

    async fn failure(&mut self) -> (String, String) {
        match self.next().await {
            Some(EnrollMessage::Failed { code, message }) => (code, message),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

fn hello(key: &DeviceKey) -> EnrollMessage {
    EnrollMessage::Hello {
        version: ENROLL_VERSION,
        flow: EnrollFlow::DeviceCode,
        idp: None,
        public_key: key.public_key().to_hex(),
        device_name: "abuse".into(),
        redirect_uri: None,
        code_challenge: None,
        device_id: None,
    }
}

#[test]
fn hostile_enrollments_are_refused_and_spend_the_registration_budget() {
    let rt = runtime(2);
    let edge = Edge::start();
    let (_creds, device) = edge.api_zt();
    rt.block_on(async {
        // A possession signature by another key than the hello's.
        let mut raw = Raw::open(&edge).await;
        let key = DeviceKey::generate();
        raw.send(&hello(&key)).await;
        let Some(EnrollMessage::Challenge { challenge }) = raw.next().await else {
            panic!("expected a challenge")
        };
        let challenge = from_hex::<CHALLENGE_LEN>(&challenge).unwrap();
        let exporter = raw.conn.exporter().unwrap();
        let other = DeviceKey::generate();
        let sig = other.sign(&possession_message(
            &exporter,
            &challenge,
            &key.public_key().0,
        ));
        raw.send(&EnrollMessage::Possession {
            signature: to_hex(&sig),
        })
        .await;
        let (code, message) = raw.failure().await;
        assert_eq!(code, "possession", "{message}");

        // The right key, but the signature made for another connection's exporter.
        let mut raw = Raw::open(&edge).await;
        raw.send(&hello(&key)).await;
        let Some(EnrollMessage::Challenge { challenge }) = raw.next().await else {
            panic!("expected a challenge")
        };
        let challenge = from_hex::<CHALLENGE_LEN>(&challenge).unwrap();
        let sig = key.sign(&possession_message(
            &[0u8; 32],
            &challenge,
            &key.public_key().0,
        ));
        raw.send(&EnrollMessage::Possession {
            signature: to_hex(&sig),
        })
        .await;
        assert_eq!(raw.failure().await.0, "possession");

        // Garbage, an oversized length prefix, an unknown version, a message out of turn.
        let mut raw = Raw::open(&edge).await;
        raw.send_bytes(b"\x00\x00\x00\x05hello").await;
        let (code, message) = raw.failure().await;
        assert_eq!(code, "malformed");
        assert!(message.contains("byte"), "{message}");
        let mut raw = Raw::open(&edge).await;
        raw.send_bytes(&u32::MAX.to_be_bytes()).await;
        let (code, message) = raw.failure().await;
        assert_eq!(code, "malformed");
        assert!(message.contains("at most"), "{message}");
        let mut raw = Raw::open(&edge).await;
        let mut h = hello(&key);
        if let EnrollMessage::Hello { version, .. } = &mut h {
            *version = 99;
        }
        raw.send(&h).await;
        assert_eq!(raw.failure().await.0, "unsupported_version");
        let mut raw = Raw::open(&edge).await;
        raw.send(&EnrollMessage::Possession {
            signature: "00".into(),
        })
        .await;
        assert_eq!(raw.failure().await.0, "malformed");

        // A hello that never completes (half a length prefix): the edge gives up at its
        // registration timeout; a laptop that opens no stream at all is closed then too.
        let mut raw = Raw::open(&edge).await;
        raw.send_bytes(&[0, 0]).await;
        let t = Instant::now();
        let (code, _) = raw.failure().await;
        assert_eq!(code, "timeout");
        eprintln!("a half-sent hello was refused after {:?}", t.elapsed());
        let silent = Raw::open(&edge).await;
        let t = Instant::now();
        let closed = tokio::time::timeout(DEADLINE, silent.conn.closed()).await;
        assert!(closed.is_ok(), "a silent laptop must be closed");
        eprintln!("a silent laptop was closed after {:?}", t.elapsed());

        // Spend what is left of this source's budget, then neither an enrollment nor a
        // registration from it gets in; the valid device's registration is refused as
        // rate-limited, not as a bad proof.
        let mut limited = false;
        for _ in 0..30 {
            let mut raw = Raw::open(&edge).await;
            raw.send_bytes(b"\x00\x00\x00\x01x").await;
            if raw.failure().await.0 == "rate_limited" {
                limited = true;
                break;
            }
        }
        assert!(limited, "the budget never ran out");
        let mut raw = Raw::open(&edge).await;
        raw.send(&hello(&key)).await;
        assert_eq!(raw.failure().await.0, "rate_limited");
    });
    // The valid device's registration from the same source: refused as rate-limited,
    // not as a bad proof.
    let creds =
        zt_creds::DeviceCredentials::load(&device, zt_creds::PermissionMode::Default).unwrap();
    let answer = rt.block_on(async {
        let ep = raw_endpoint(&edge, "127.0.0.1:0".parse().unwrap());
        let conn = ep.connect(edge.listen, "localhost").unwrap().await.unwrap();
        let claim = zt_proto::Claim::Client(zt_proto::ClientClaim {
            device_id: creds.device_id,
            vnet: String::new(),
        });
        let key = creds.secret().unwrap().derive_auth_key();
        send_register(&conn, signed_register(claim, &key, &exporter_of(&conn))).await
    });
    match &answer.frame {
        zt_proto::ControlFrame::RegisterError(e) => {
            assert_eq!(e.code, zt_proto::RegisterErrorCode::RateLimited, "{e:?}")
        }
        other => panic!("expected a rate-limited refusal, got {other:?}"),
    }
    let _ = Duration::ZERO;
}
