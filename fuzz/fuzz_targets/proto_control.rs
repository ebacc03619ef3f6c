//! Fuzzes zt-proto's control-stream state machines with arbitrary bytes in arbitrary
//! pieces: the edge's (accepting) and the connector's and client's (registering). No input
//! may panic, and every byte a machine hands out must decode as valid frames.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;
use zt_creds::{AuthKey, DeviceKey};
use zt_proto::{
    ClientClaim, ClientControl, ConnectorClaim, ConnectorControl, ControlFrame, EdgeControl,
    EdgeEvent, Limits, ProofKey, VerifyKey,
};

/// One device key for the whole run, so inputs replay the same way within it.
fn device_key() -> &'static DeviceKey {
    static KEY: OnceLock<DeviceKey> = OnceLock::new();
    KEY.get_or_init(DeviceKey::generate)
}

fn check_output(out: Option<Bytes>) {
    if let Some(mut b) = out {
        while !b.is_empty() {
            match ControlFrame::decode(&mut b) {
                Ok(Some(_)) => {}
                other => panic!("a machine produced invalid output: {other:?}"),
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // Bit 0x40 picks the proof kind: a shared-secret HMAC or a device's Ed25519 signature.
    let (key, verify): (ProofKey, VerifyKey) = if mode & 0x40 == 0 {
        let k = AuthKey::from_bytes([0x42; 32]);
        (k.clone().into(), k.into())
    } else {
        let k = device_key();
        (
            ProofKey::Device(k.clone()),
            VerifyKey::Device(k.public_key()),
        )
    };
    let exporter = [0xa5; 32];
    let now = Instant::now();
    let timeout = Duration::from_secs(5);
    // Pieces: each starts with a length byte, so the fuzzer controls how frames are split.
    let mut pieces = Vec::new();
    let mut r = rest;
    while let Some((&n, tail)) = r.split_first() {
        let n = usize::from(n).min(tail.len());
        pieces.push(&tail[..n]);
        r = &tail[n..];
    }
    match mode % 3 {
        0 => {
            let mut edge = EdgeControl::new(
                exporter,
                Uuid::nil(),
                "edge",
                now,
                timeout,
                Limits::default(),
            );
            for p in pieces {
                let result = edge.handle_input(p);
                while let Some(ev) = edge.poll_event() {
                    if let EdgeEvent::AuthRequired(_) = ev {
                        edge.authenticate(if mode & 0x80 == 0 {
                            Some(&verify)
                        } else {
                            None
                        });
                    }
                }
                check_output(edge.poll_transmit());
                if result.is_err() {
                    break;
                }
                let _ = edge.go_away(Duration::from_secs(1), "fuzz");
                check_output(edge.poll_transmit());
            }
            edge.handle_timeout(now + timeout);
            check_output(edge.poll_transmit());
        }
        1 => {
            let claim = ConnectorClaim {
                tunnel_id: Uuid::nil(),
                account_tag: "a".into(),
                connector_id: Uuid::nil(),
                conn_index: 0,
            };
            let Ok(mut m) = ConnectorControl::new(
                claim,
                "f",
                vec![],
                &key,
                &exporter,
                now,
                timeout,
                Limits::default(),
            ) else {
                return;
            };
            check_output(m.poll_transmit());
            for p in pieces {
                let result = m.handle_input(p);
                while m.poll_event().is_some() {}
                let _ = m.unregister(Duration::from_secs(1));
                check_output(m.poll_transmit());
                if result.is_err() {
                    break;
                }
            }
        }
        _ => {
            let claim = ClientClaim {
                device_id: Uuid::nil(),
                vnet: String::new(),
            };
            let Ok(mut m) = ClientControl::new(
                claim,
                "f",
                vec![],
                &key,
                &exporter,
                now,
                timeout,
                Limits::default(),
            ) else {
                return;
            };
            check_output(m.poll_transmit());
            for p in pieces {
                let result = m.handle_input(p);
                while m.poll_event().is_some() {}
                let _ = m.ping(1);
                check_output(m.poll_transmit());
                if result.is_err() {
                    break;
                }
            }
        }
    }
});
