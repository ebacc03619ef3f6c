//! Property tests: every frame survives encode → decode unchanged, whatever its contents and
//! however the bytes are split; and decoders never panic on arbitrary input.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use ipnet::IpNet;
use proptest::prelude::*;
use uuid::Uuid;
use zt_proto::*;

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!(".{{0,{max}}}"))
        .unwrap()
        .prop_filter("byte length", move |s| s.len() <= max)
}

fn short() -> impl Strategy<Value = String> {
    text(60)
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from)
    ]
}

fn net() -> impl Strategy<Value = IpNet> {
    (ip(), any::<u8>()).prop_map(|(ip, p)| {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        IpNet::new(ip, p % (max + 1)).unwrap()
    })
}

fn millis() -> impl Strategy<Value = Duration> {
    any::<u32>().prop_map(|ms| Duration::from_millis(u64::from(ms)))
}

fn claim() -> impl Strategy<Value = Claim> {
    prop_oneof![
        (uuid(), short(), uuid(), any::<u8>()).prop_map(|(t, a, c, i)| Claim::Connector(
            ConnectorClaim {
                tunnel_id: t,
                account_tag: a,
                connector_id: c,
                conn_index: i
            }
        )),
        (uuid(), short()).prop_map(|(d, v)| Claim::Client(ClientClaim {
            device_id: d,
            vnet: v
        })),
    ]
}

fn control_frame() -> impl Strategy<Value = ControlFrame> {
    prop_oneof![
        (
            any::<u16>(),
            claim(),
            text(200),
            prop::collection::vec(short(), 0..=MAX_FEATURES),
            any::<[u8; 32]>()
        )
            .prop_map(
                |(v, claim, sw, features, proof)| ControlFrame::Register(Register {
                    protocol_version: v,
                    claim,
                    software_version: sw,
                    features,
                    proof: zt_proto::Proof::Mac(proof)
                })
            ),
        (uuid(), short(), any::<u16>()).prop_map(|(c, e, v)| ControlFrame::Registered(
            Registered {
                connection_id: c,
                edge_name: e,
                protocol_version: v
            }
        )),
        (
            any::<u16>(),
            prop_oneof![
                Just(RetryAdvice::Never),
                Just(RetryAdvice::Backoff),
                millis().prop_map(RetryAdvice::After)
            ],
            text(300)
        )
            .prop_map(
                |(c, retry, message)| ControlFrame::RegisterError(RegisterError {
                    code: RegisterErrorCode::from_u16(c),
                    retry,
                    message
                })
            ),
        (millis(), text(100))
            .prop_map(|(drain, reason)| ControlFrame::GoAway(GoAway { drain, reason })),
        millis().prop_map(|grace| ControlFrame::Unregister(Unregister { grace })),
        any::<u64>().prop_map(ControlFrame::Ping),
        any::<u64>().prop_map(ControlFrame::Pong),
        (any::<u64>(), short(), prop::collection::vec(net(), 0..50)).prop_map(
            |(generation, vnet, routes)| {
                ControlFrame::RoutePush(RoutePush {
                    generation,
                    vnet,
                    routes,
                })
            }
        ),
        prop::collection::vec((short(), any::<bool>()), 0..40).prop_map(|c| {
            ControlFrame::PostureReport(PostureReport {
                checks: c
                    .into_iter()
                    .map(|(name, passed)| PostureCheck { name, passed })
                    .collect(),
            })
        }),
        (any::<u64>(), prop::collection::vec(short(), 0..=64)).prop_map(|(generation, edges)| {
            ControlFrame::EdgeList(zt_proto::EdgeList { generation, edges })
        }),
        (0x80u8..=0xff, prop::collection::vec(any::<u8>(), 0..200)).prop_map(|(ty, p)| {
            ControlFrame::Extension {
                ty,
                payload: Bytes::from(p),
            }
        }),
    ]
}

fn header() -> impl Strategy<Value = FlowHeader> {
    (
        any::<u64>(),
        prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp)],
        ip(),
        any::<u16>(),
        prop::collection::vec((short(), text(100)), 0..=DEFAULT_MAX_METADATA_ENTRIES),
    )
        .prop_map(|(flow_id, protocol, ip, port, metadata)| FlowHeader {
            flow_id,
            protocol,
            dest: SocketAddr::new(ip, port),
            metadata,
        })
}

/// Feeds `wire` to `decode` in pieces cut at `cuts`, checking that every prefix short of
/// the whole is "need more" and consumes nothing.
fn decode_in_pieces<T>(
    wire: &[u8],
    cut: usize,
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, DecodeError>,
) -> T {
    let cut = cut % (wire.len() + 1);
    let mut buf = BytesMut::from(&wire[..cut]);
    if cut < wire.len() {
        assert!(decode(&mut buf).unwrap().is_none());
        assert_eq!(buf.len(), cut, "a partial decode consumed bytes");
        buf.extend_from_slice(&wire[cut..]);
    }
    let v = decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn control_frames_round_trip(f in control_frame(), cut in any::<usize>()) {
        let mut wire = BytesMut::new();
        f.encode(&mut wire).unwrap();
        let back = decode_in_pieces(&wire, cut, ControlFrame::decode);
        prop_assert_eq!(back, f);
    }

    #[test]
    fn control_frames_round_trip_across_segmented_buffers(f in control_frame(), cut in any::<usize>()) {
        let mut wire = BytesMut::new();
        f.encode(&mut wire).unwrap();
        let cut = cut % (wire.len() + 1);
        let (a, b) = wire.split_at(cut);
        let mut chain = a.chain(b);
        prop_assert_eq!(ControlFrame::decode(&mut chain).unwrap().unwrap(), f);
        prop_assert_eq!(chain.remaining(), 0);
    }

    #[test]
    fn flow_headers_round_trip(h in header(), cut in any::<usize>()) {
        let mut wire = BytesMut::new();
        h.encode(&mut wire).unwrap();
        prop_assert!(wire.len() <= DEFAULT_MAX_HEADER_LEN + FLOW_HEADER_PREFIX_LEN);
        let back = decode_in_pieces(&wire, cut, FlowHeader::decode);
        prop_assert_eq!(back, h);
    }

    #[test]
    fn flow_statuses_round_trip(code in any::<u16>(), detail in text(300), cut in any::<usize>()) {
        let s = FlowStatus::new(FlowStatusCode::from_u16(code), detail);
        let mut wire = BytesMut::new();
        s.encode(&mut wire).unwrap();
        let back = decode_in_pieces(&wire, cut, FlowStatus::decode);
        prop_assert_eq!(back, s);
    }

    #[test]
    fn datagrams_round_trip(flow_id in 0u64..(1 << 62), payload in prop::collection::vec(any::<u8>(), 0..=DEFAULT_MAX_DATAGRAM_PAYLOAD)) {
        let d = Datagram { flow_id, payload: Bytes::from(payload) };
        let mut wire = BytesMut::new();
        d.encode(&mut wire, &Limits::default()).unwrap();
        prop_assert_eq!(Datagram::decode(wire.freeze(), &Limits::default()).unwrap(), d);
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut b = Bytes::from(data.clone());
        while let Ok(Some(_)) = ControlFrame::decode(&mut b) {}
        let _ = FlowHeader::decode(&mut Bytes::from(data.clone()));
        let _ = FlowStatus::decode(&mut Bytes::from(data.clone()));
        let _ = Datagram::decode(Bytes::from(data), &Limits::default());
    }

    #[test]
    fn codes_map_back_to_their_numbers(c in any::<u16>()) {
        prop_assert_eq!(RegisterErrorCode::from_u16(c).to_u16(), c);
        prop_assert_eq!(FlowStatusCode::from_u16(c).to_u16(), c);
    }
}

#[test]
fn oversized_lengths_are_refused_from_the_prefix_alone() {
    // A 64 KiB flow header: refused from its four length bytes, before any body arrives.
    let mut b = Bytes::from_static(&[0x00, 0x01, 0x00, 0x00]);
    assert_eq!(
        FlowHeader::decode(&mut b),
        Err(DecodeError::TooLong {
            frame: "flow header",
            field: "header",
            len: 65_536,
            limit: 16_384
        })
    );
    // A control frame claiming 1 MiB.
    let mut c = Bytes::from_static(&[0x08, 0x00, 0x10, 0x00, 0x00]);
    assert!(matches!(
        ControlFrame::decode(&mut c),
        Err(DecodeError::TooLong { len: 1_048_576, .. })
    ));
}

#[test]
fn encoders_refuse_what_decoders_would_refuse() {
    let h = FlowHeader {
        flow_id: 1,
        protocol: Protocol::Tcp,
        dest: "127.0.0.1:1".parse().unwrap(),
        metadata: vec![("k".into(), "v".repeat(20_000))],
    };
    let mut out = BytesMut::new();
    assert!(matches!(
        h.encode(&mut out),
        Err(EncodeError::TooLong {
            field: "metadata value",
            ..
        } | EncodeError::TooLong {
            field: "header",
            ..
        })
    ));
    assert!(out.is_empty(), "a refused encode writes nothing");
    let many = FlowHeader {
        metadata: vec![("k".into(), "v".into()); 65],
        ..h
    };
    assert!(matches!(
        many.encode(&mut out),
        Err(EncodeError::TooMany {
            count: 65,
            limit: 64,
            ..
        })
    ));
    let big = Datagram {
        flow_id: 1,
        payload: Bytes::from(vec![0; 1351]),
    };
    assert!(matches!(
        big.encode(&mut out, &Limits::default()),
        Err(EncodeError::TooLong { len: 1351, .. })
    ));
    assert!(out.is_empty());
}

#[test]
fn malformed_bodies_name_the_field() {
    // A route with prefix 33 on an IPv4 address.
    let mut f = BytesMut::new();
    ControlFrame::RoutePush(RoutePush {
        generation: 1,
        vnet: String::new(),
        routes: vec!["10.0.0.0/8".parse().unwrap()],
    })
    .encode(&mut f)
    .unwrap();
    let last = f.len() - 1;
    f[last] = 33;
    assert_eq!(
        ControlFrame::decode(&mut f),
        Err(DecodeError::InvalidValue {
            frame: "route_push",
            field: "route prefix",
            value: 33
        })
    );
    // A flow header with protocol 1 (ICMP).
    let mut h = BytesMut::new();
    FlowHeader {
        flow_id: 1,
        protocol: Protocol::Tcp,
        dest: "127.0.0.1:1".parse().unwrap(),
        metadata: vec![],
    }
    .encode(&mut h)
    .unwrap();
    h[13] = 1;
    assert_eq!(
        FlowHeader::decode(&mut h),
        Err(DecodeError::InvalidValue {
            frame: "flow header",
            field: "protocol",
            value: 1
        })
    );
    // A ping with one extra byte.
    let mut p = Bytes::from_static(&[0x06, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        ControlFrame::decode(&mut p),
        Err(DecodeError::TrailingBytes {
            frame: "ping",
            extra: 1
        })
    );
}
