//! cloudflared's wire formats against bytes recorded from cloudflared 2023.7.3
//! (tests/data/cloudflared/README.md says how they were made).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use proptest::prelude::*;
use uuid::Uuid;
use zt_edge::cloudflared::{
    decode_connect_request, decode_connect_response, decode_control, encode_bootstrap_return,
    encode_connect_request, encode_connect_response, encode_empty_return, encode_register_return,
    ConnectRequest, ConnectResponse, ConnectionType, ControlMessage, DecodeError,
    RegisterConnection, RegistrationCall, RegistrationReply, ReturnBody,
};

const REGISTER: &[u8] =
    include_bytes!("../data/cloudflared/cloudflared-2023.7.3-register-stream0.bin");
const CONTROL_FROM_CLOUDFLARED: &[u8] =
    include_bytes!("../data/cloudflared/cloudflared-2023.7.3-control.from-cloudflared.bin");
const CONTROL_FROM_EDGE: &[u8] =
    include_bytes!("../data/cloudflared/cloudflared-2023.7.3-control.from-edge.bin");
const DATA_FROM_EDGE: &[u8] =
    include_bytes!("../data/cloudflared/cloudflared-2023.7.3-data.from-edge.bin");
const DATA_FROM_CLOUDFLARED: &[u8] =
    include_bytes!("../data/cloudflared/cloudflared-2023.7.3-data.from-cloudflared.bin");

/// Decodes every message of a control stream, checking that each frame is consumed whole.
fn decode_all(mut bytes: &[u8]) -> Vec<ControlMessage> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (msg, used) = decode_control(bytes).unwrap().expect("complete frame");
        out.push(msg);
        bytes = &bytes[used..];
    }
    out
}

fn register_of(msg: &ControlMessage) -> Option<&RegisterConnection> {
    match msg {
        ControlMessage::Call {
            call: RegistrationCall::Register(reg),
            ..
        } => Some(reg),
        _ => None,
    }
}

fn features(reg: &RegisterConnection) -> BTreeSet<&str> {
    reg.features.iter().map(String::as_str).collect()
}

fn expected_features() -> BTreeSet<&'static str> {
    [
        "allow_remote_config",
        "serialized_headers",
        "support_datagram_v2",
        "support_quic_eof",
        "management_logs",
    ]
    .into_iter()
    .collect()
}

fn check_registration(reg: &RegisterConnection) {
    assert_eq!(reg.account_tag, "0123456789abcdef0123456789abcdef");
    let secret: Vec<u8> = (0u8..32).collect();
    assert_eq!(reg.tunnel_secret.expose_bytes(), &secret[..]);
    assert_eq!(
        reg.tunnel_id,
        "8e343b13-a087-48ea-825f-9783931ff2a5"
            .parse::<Uuid>()
            .unwrap()
    );
    assert_eq!(reg.conn_index, 0);
    assert_eq!(features(reg), expected_features());
    assert_eq!(reg.version, "DEV");
    assert_eq!(reg.arch, "linux_amd64");
    assert_eq!(
        reg.origin_local_ip,
        Some("::ffff:127.0.0.1".parse::<IpAddr>().unwrap())
    );
    assert!(
        !format!("{reg:?}").contains("AAECAwQF"),
        "the secret is never printed"
    );
}

#[test]
fn recorded_registration_call_decodes() {
    let msgs = decode_all(REGISTER);
    assert!(
        matches!(msgs[0], ControlMessage::Bootstrap { .. }),
        "{:?}",
        msgs[0]
    );
    let reg = register_of(&msgs[1]).expect("second message is registerConnection");
    check_registration(reg);
    assert_eq!(
        reg.client_id,
        "159d5cbf-5ff5-4a9f-90da-ee93cc1504be"
            .parse::<Uuid>()
            .unwrap()
    );
    assert!(!reg.replace_existing);
    assert_eq!(msgs.len(), 2);
}

#[test]
fn recorded_control_stream_from_cloudflared_decodes_as_a_sequence_of_calls() {
    let msgs = decode_all(CONTROL_FROM_CLOUDFLARED);
    let calls: Vec<&RegistrationCall> = msgs
        .iter()
        .filter_map(|m| match m {
            ControlMessage::Call { call, .. } => Some(call),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 3, "{msgs:?}");
    let RegistrationCall::Register(reg) = calls[0] else {
        panic!("{:?}", calls[0])
    };
    check_registration(reg);
    assert_eq!(
        reg.client_id,
        "054689f1-ba86-469a-8045-d569f243c196"
            .parse::<Uuid>()
            .unwrap()
    );
    let RegistrationCall::UpdateLocalConfiguration { config } = calls[1] else {
        panic!("{:?}", calls[1])
    };
    let json: serde_json::Value = serde_json::from_slice(config).unwrap();
    assert_eq!(json["warp-routing"]["enabled"], true);
    assert_eq!(json["__configuration_flags"]["protocol"], "quic");
    assert_eq!(json["__configuration_flags"]["metrics"], "127.0.0.1:18081");
    assert_eq!(json["ingress"][0]["service"], "http_status:503");
    assert!(matches!(calls[2], RegistrationCall::Unregister));
    assert!(matches!(msgs[0], ControlMessage::Bootstrap { .. }));
}

fn expected_details() -> RegistrationReply {
    RegistrationReply::Connected {
        uuid: "11111111-2222-3333-4444-555555555555".parse().unwrap(),
        location_name: "zt-test".into(),
        tunnel_is_remotely_managed: false,
    }
}

/// The (answer id, body) of every Return in a stream.
fn returns(msgs: Vec<ControlMessage>) -> Vec<(u32, ReturnBody)> {
    msgs.into_iter()
        .filter_map(|m| match m {
            ControlMessage::Return { answer_id, body } => Some((answer_id, body)),
            _ => None,
        })
        .collect()
}

#[test]
fn recorded_edge_replies_decode_and_ours_match_them() {
    let recorded = returns(decode_all(CONTROL_FROM_EDGE));
    // Bootstrap, registerConnection, updateLocalConfiguration, unregisterConnection.
    let bodies: Vec<&ReturnBody> = recorded.iter().map(|(_, b)| b).collect();
    assert_eq!(
        bodies,
        [
            &ReturnBody::Capability,
            &ReturnBody::Registration(expected_details()),
            &ReturnBody::Empty,
            &ReturnBody::Empty
        ]
    );

    // Answer the recorded calls with our encoder; the result decodes to the same fields.
    let calls = decode_all(CONTROL_FROM_CLOUDFLARED);
    let mut ours = Vec::new();
    for msg in &calls {
        match msg {
            ControlMessage::Bootstrap { question_id } => {
                ours.extend(encode_bootstrap_return(*question_id))
            }
            ControlMessage::Call {
                question_id,
                call: RegistrationCall::Register(_),
            } => ours.extend(encode_register_return(*question_id, &expected_details())),
            ControlMessage::Call { question_id, .. } => {
                ours.extend(encode_empty_return(*question_id))
            }
            _ => {}
        }
    }
    assert_eq!(returns(decode_all(&ours)), recorded);
    // And byte for byte: the same flags and the same (empty) capability tables as the
    // reference edge's go-capnp writes.
    assert_eq!(ours, CONTROL_FROM_EDGE);
}

#[test]
fn registration_error_round_trips() {
    let reply = RegistrationReply::Error {
        cause: "unknown tunnel".into(),
        retry_after: Duration::from_secs(5),
        should_retry: false,
    };
    let bytes = encode_register_return(7, &reply);
    let (msg, used) = decode_control(&bytes).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    let ControlMessage::Return { answer_id, body } = msg else {
        panic!("{msg:?}")
    };
    assert_eq!((answer_id, body), (7, ReturnBody::Registration(reply)));
}

fn recorded_request() -> ConnectRequest {
    ConnectRequest {
        dest: "127.0.0.1:19000".into(),
        connection_type: ConnectionType::Tcp,
        metadata: vec![(
            "FlowID".into(),
            "8a0c1e2f-0000-4000-8000-000000000001".into(),
        )],
    }
}

#[test]
fn connect_request_matches_the_recorded_one() {
    let (recorded, used) = decode_connect_request(DATA_FROM_EDGE).unwrap().unwrap();
    assert_eq!(recorded, recorded_request());
    assert_eq!(&DATA_FROM_EDGE[used..], b"hello through the tunnel\n");

    let ours = encode_connect_request(&recorded_request());
    let (decoded, used) = decode_connect_request(&ours).unwrap().unwrap();
    assert_eq!(decoded, recorded);
    assert_eq!(used, ours.len());
}

#[test]
fn recorded_connect_response_and_payload() {
    let (resp, used) = decode_connect_response(DATA_FROM_CLOUDFLARED)
        .unwrap()
        .unwrap();
    assert_eq!(resp, ConnectResponse::default());
    assert_eq!(
        &DATA_FROM_CLOUDFLARED[used..],
        b"hello through the tunnel\n"
    );

    let ours = encode_connect_response(&ConnectResponse {
        error: "dial tcp 127.0.0.1:1: connection refused".into(),
        metadata: vec![("k".into(), "v".into())],
    });
    let (decoded, _) = decode_connect_response(&ours).unwrap().unwrap();
    assert_eq!(decoded.error, "dial tcp 127.0.0.1:1: connection refused");
}

#[test]
fn every_prefix_needs_more_bytes_never_errors() {
    for bytes in [REGISTER, CONTROL_FROM_CLOUDFLARED, CONTROL_FROM_EDGE] {
        let (_, first) = decode_control(bytes).unwrap().unwrap();
        for cut in 0..first {
            assert!(
                decode_control(&bytes[..cut]).unwrap().is_none(),
                "cut at {cut}"
            );
        }
    }
    let (_, first) = decode_connect_response(DATA_FROM_CLOUDFLARED)
        .unwrap()
        .unwrap();
    for cut in 0..first {
        assert!(decode_connect_response(&DATA_FROM_CLOUDFLARED[..cut])
            .unwrap()
            .is_none());
    }
}

#[test]
fn bad_preamble_and_oversized_frames_are_refused() {
    let mut bytes = DATA_FROM_CLOUDFLARED.to_vec();
    bytes[0] ^= 0xff;
    assert!(matches!(
        decode_connect_response(&bytes),
        Err(DecodeError::BadSignature { .. })
    ));
    let mut bytes = DATA_FROM_CLOUDFLARED.to_vec();
    bytes[7] = b'2';
    assert!(matches!(
        decode_connect_response(&bytes),
        Err(DecodeError::BadVersion { .. })
    ));
    // One segment declared at 1 Mi words.
    let huge = [0, 0, 0, 0, 0, 0, 0x10, 0];
    assert!(matches!(
        decode_control(&huge),
        Err(DecodeError::TooLarge { .. })
    ));
    let many = [200, 0, 0, 0];
    assert!(matches!(
        decode_control(&many),
        Err(DecodeError::TooManySegments { .. })
    ));
}

proptest! {
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_control(&bytes);
        let _ = decode_connect_request(&bytes);
        let _ = decode_connect_response(&bytes);
    }

    #[test]
    fn mutated_recordings_never_panic(idx in 0usize..592, val in any::<u8>()) {
        let mut bytes = REGISTER.to_vec();
        bytes[idx] = val;
        let mut rest: &[u8] = &bytes;
        while let Ok(Some((_, used))) = decode_control(rest) {
            rest = &rest[used..];
        }
        let mut data = DATA_FROM_EDGE.to_vec();
        let i = idx % data.len();
        data[i] = val;
        let _ = decode_connect_request(&data);
    }
}

#[test]
fn an_exception_answer_decodes_with_its_reason() {
    let bytes = zt_edge::cloudflared::encode_exception_return(7, "method not served");
    let msgs = decode_all(&bytes);
    assert_eq!(
        returns(msgs),
        [(7, ReturnBody::Exception("method not served".into()))]
    );
}
