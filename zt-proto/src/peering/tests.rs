use super::*;
use crate::flow::{FlowStatusCode, Protocol};
use proptest::prelude::*;

fn tunnel() -> Uuid {
    Uuid::parse_str("6ff42ae2-765d-4adf-8112-31c55c1551ef").unwrap()
}

fn edge() -> Uuid {
    Uuid::parse_str("e0e1e2e3-e4e5-4e6e-8e7e-8e9eaebecede").unwrap()
}

fn open() -> PeerFlowOpen {
    PeerFlowOpen {
        tunnel_id: tunnel(),
        from_edge: edge(),
        flow: FlowHeader {
            flow_id: 1,
            protocol: Protocol::Tcp,
            dest: "198.51.100.101:443".parse().unwrap(),
            metadata: vec![("trace".into(), "abc".into())],
        },
    }
}

fn connector() -> PeerConnectorInfo {
    PeerConnectorInfo {
        connector_id: Uuid::parse_str("1e2f3a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b").unwrap(),
        conn_index: 2,
        kind: PeerConnectorKind::Cloudflared,
        transport: "http2".into(),
        first_fin_ends: true,
    }
}

fn wire_of(f: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>) -> Vec<u8> {
    let mut out = BytesMut::new();
    f(&mut out).unwrap();
    out.to_vec()
}

fn open_wire(o: &PeerFlowOpen) -> Vec<u8> {
    wire_of(|out| o.encode(out))
}

fn answer_wire(a: &PeerFlowAnswer) -> Vec<u8> {
    wire_of(|out| a.encode(out))
}

fn decode_open(bytes: &[u8]) -> Result<Option<PeerFlowOpen>, PeerDecodeError> {
    PeerFlowOpen::decode(&mut &bytes[..])
}

fn decode_answer(bytes: &[u8]) -> Result<Option<PeerFlowAnswer>, PeerDecodeError> {
    PeerFlowAnswer::decode(&mut &bytes[..])
}

#[test]
fn an_open_round_trips_and_leaves_the_flow_data_in_the_buffer() {
    let mut wire = BytesMut::new();
    open().encode(&mut wire).unwrap();
    let len = wire.len();
    // The embedded header is the flow header's own encoding, byte for byte.
    let mut header = BytesMut::new();
    open().flow.encode(&mut header).unwrap();
    assert_eq!(&wire[PEER_FRAME_PREFIX_LEN + OPEN_FIXED_LEN..], &header[..]);
    assert_eq!(len, PEER_FRAME_PREFIX_LEN + OPEN_FIXED_LEN + header.len());
    wire.extend_from_slice(b"GET / HTTP/1.1\r\n");
    let mut buf = wire.freeze();
    assert_eq!(PeerFlowOpen::decode(&mut buf).unwrap(), Some(open()));
    assert_eq!(&buf[..], b"GET / HTTP/1.1\r\n");
}

#[test]
fn answers_round_trip_ok_and_refused() {
    for answer in [
        PeerFlowAnswer::ok(connector()),
        PeerFlowAnswer::ok(PeerConnectorInfo {
            kind: PeerConnectorKind::Zt,
            transport: String::new(),
            first_fin_ends: false,
            ..connector()
        }),
        PeerFlowAnswer::refused(FlowStatus::denied("block-ssh")),
        PeerFlowAnswer::refused(FlowStatus::new(FlowStatusCode::Other(999), "later")),
    ] {
        let mut wire = BytesMut::new();
        answer.encode(&mut wire).unwrap();
        wire.extend_from_slice(b"flow bytes");
        let mut buf = wire.freeze();
        assert_eq!(PeerFlowAnswer::decode(&mut buf).unwrap(), Some(answer));
        assert_eq!(&buf[..], b"flow bytes");
    }
}

#[test]
fn the_largest_answer_fits_its_bound() {
    let answer = PeerFlowAnswer {
        status: FlowStatus::new(FlowStatusCode::Ok, "d".repeat(MAX_TEXT_LEN)),
        connector: Some(PeerConnectorInfo {
            transport: "t".repeat(MAX_PEER_TRANSPORT_LEN),
            ..connector()
        }),
    };
    let wire = answer_wire(&answer);
    assert_eq!(wire.len(), PEER_FRAME_PREFIX_LEN + MAX_PEER_ANSWER_LEN);
    assert_eq!(decode_answer(&wire).unwrap(), Some(answer));
}

#[test]
fn an_oversized_length_is_refused_from_the_prefix_alone() {
    let err = decode_open(&u32::MAX.to_be_bytes()).unwrap_err();
    assert_eq!(
        err,
        PeerDecodeError::TooLong {
            frame: "peer flow open",
            len: u32::MAX as usize,
            limit: PeerFlowOpen::max_len(&Limits::default()),
        }
    );
    assert_eq!(err.offset(), 0);
    // "GET " as a length: an HTTP request on a peering stream is refused at once.
    assert!(matches!(
        decode_answer(b"GET "),
        Err(PeerDecodeError::TooLong { .. })
    ));
    // The bound follows the configured header limit.
    let small = Limits {
        max_header_len: 16,
        ..Limits::default()
    };
    assert!(matches!(
        PeerFlowOpen::decode_with(&mut &open_wire(&open())[..], &small),
        Err(PeerDecodeError::TooLong { limit: 53, .. })
    ));
}

#[test]
fn a_wrong_version_is_refused_from_its_byte_alone() {
    let mut wire = open_wire(&open());
    wire[4] = 2;
    let err = decode_open(&wire[..5]).unwrap_err();
    assert_eq!(
        err,
        PeerDecodeError::UnknownVersion {
            frame: "peer flow open",
            version: 2
        }
    );
    assert_eq!(err.offset(), 4);
    assert_eq!(decode_open(&wire), Err(err));
}

#[test]
fn an_empty_message_is_refused_without_reading_the_next_byte() {
    // The byte after an empty message (here a valid version byte) is not part of it.
    for decoded in [
        decode_open(&[0, 0, 0, 0, 1]).map(|_| ()),
        decode_answer(&[0, 0, 0, 0, 1]).map(|_| ()),
        decode_open(&[0, 0, 0, 0]).map(|_| ()),
    ] {
        let err = decoded.unwrap_err();
        assert!(
            matches!(
                err,
                PeerDecodeError::Truncated {
                    field: "version",
                    offset: 4,
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn decode_errors_name_the_field_and_its_offset() {
    // The embedded header: its version byte is at 37 + 4.
    let mut wire = open_wire(&open());
    wire[41] = 9;
    let err = decode_open(&wire).unwrap_err();
    assert!(
        matches!(
            &err,
            PeerDecodeError::FlowHeader {
                offset: 37,
                source: DecodeError::InvalidValue {
                    field: "version",
                    value: 9,
                    ..
                }
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("at byte 37"), "{err}");

    // An outer length one byte longer than the fields: trailing bytes after the header.
    let mut wire = open_wire(&open());
    let len = u32::from_be_bytes([wire[0], wire[1], wire[2], wire[3]]) + 1;
    wire[..4].copy_from_slice(&len.to_be_bytes());
    let end = wire.len();
    wire.push(0);
    assert_eq!(
        decode_open(&wire),
        Err(PeerDecodeError::TrailingBytes {
            frame: "peer flow open",
            offset: end,
            extra: 1
        })
    );

    // An outer length that cuts the embedded header.
    let mut wire = open_wire(&open());
    let len = u32::from_be_bytes([wire[0], wire[1], wire[2], wire[3]]) - 1;
    wire[..4].copy_from_slice(&len.to_be_bytes());
    wire.pop();
    assert_eq!(
        decode_open(&wire),
        Err(PeerDecodeError::Truncated {
            frame: "peer flow open",
            field: "flow header",
            offset: 37
        })
    );

    // Answer fields: flag at 9 (after an empty-detail status), id 10, index 26, kind 27,
    // transport length 28, text 29, flags after the text.
    let ok = answer_wire(&PeerFlowAnswer::ok(connector()));
    let mut bad_kind = ok.clone();
    bad_kind[27] = 7;
    assert_eq!(
        decode_answer(&bad_kind),
        Err(PeerDecodeError::InvalidValue {
            frame: "peer flow answer",
            field: "connector kind",
            offset: 27,
            value: 7
        })
    );
    let mut bad_flags = ok.clone();
    *bad_flags.last_mut().unwrap() = 0x81;
    assert_eq!(
        decode_answer(&bad_flags).unwrap_err().offset(),
        ok.len() - 1
    );
    let mut bad_text = ok.clone();
    bad_text[30] = b' ';
    assert_eq!(
        decode_answer(&bad_text),
        Err(PeerDecodeError::NotAscii {
            frame: "peer flow answer",
            field: "connector transport",
            offset: 29
        })
    );
    let mut long_text = ok.clone();
    long_text[28] = 17;
    assert!(matches!(
        decode_answer(&long_text),
        Err(PeerDecodeError::InvalidValue { offset: 28, .. })
    ));
    let mut bad_flag = ok.clone();
    bad_flag[9] = 2;
    assert!(matches!(
        decode_answer(&bad_flag),
        Err(PeerDecodeError::InvalidValue {
            field: "connector",
            offset: 9,
            value: 2,
            ..
        })
    ));
}

#[test]
fn the_connector_is_present_exactly_when_the_status_is_ok() {
    // Encoding refuses both contradictions and writes nothing.
    let mut out = BytesMut::from(&b"before"[..]);
    let ok_without = PeerFlowAnswer {
        status: FlowStatus::ok(),
        connector: None,
    };
    assert!(matches!(
        ok_without.encode(&mut out),
        Err(EncodeError::Invalid {
            field: "connector",
            ..
        })
    ));
    let refusal_with = PeerFlowAnswer {
        status: FlowStatus::denied("r"),
        connector: Some(connector()),
    };
    assert!(refusal_with.encode(&mut out).is_err());
    assert_eq!(&out[..], b"before");

    // Decoding refuses them too, naming the flag's offset.
    let mut wire = answer_wire(&PeerFlowAnswer::refused(FlowStatus::new(
        FlowStatusCode::NoConnector,
        "",
    )));
    wire[5..7].copy_from_slice(&0u16.to_be_bytes()); // the code becomes ok
    assert_eq!(
        decode_answer(&wire),
        Err(PeerDecodeError::Inconsistent {
            frame: "peer flow answer",
            field: "connector",
            offset: 9,
            rule: "must be present when the status is ok"
        })
    );
    let mut wire = answer_wire(&PeerFlowAnswer::ok(connector()));
    wire[5..7].copy_from_slice(&9u16.to_be_bytes());
    assert!(matches!(
        decode_answer(&wire),
        Err(PeerDecodeError::Inconsistent { offset: 9, .. })
    ));
}

#[test]
fn encoding_refuses_a_transport_label_that_would_not_decode() {
    for (transport, field_rule) in [
        ("a-very-long-transport", "connector transport"),
        ("quic ", "connector transport"),
        ("h\u{e9}", "connector transport"),
    ] {
        let answer = PeerFlowAnswer::ok(PeerConnectorInfo {
            transport: transport.into(),
            ..connector()
        });
        let mut out = BytesMut::new();
        let err = answer.encode(&mut out).unwrap_err();
        assert!(
            matches!(
                err,
                EncodeError::TooLong { field, .. } | EncodeError::Invalid { field, .. }
                    if field == field_rule
            ),
            "{transport:?}: {err}"
        );
        assert!(out.is_empty());
    }
    // A detail over the status limit is the status' own error.
    let answer = PeerFlowAnswer::refused(FlowStatus::denied("x".repeat(MAX_TEXT_LEN + 1)));
    assert!(matches!(
        answer.encode(&mut BytesMut::new()),
        Err(EncodeError::TooLong {
            frame: "flow status",
            ..
        })
    ));
}

#[test]
fn an_open_with_a_header_over_its_limit_is_not_encoded() {
    let mut o = open();
    o.flow.metadata = vec![(
        "k".into(),
        "v".repeat(crate::limits::DEFAULT_MAX_HEADER_LEN),
    )];
    let mut out = BytesMut::from(&b"x"[..]);
    assert!(matches!(
        o.encode(&mut out),
        Err(EncodeError::TooLong { .. })
    ));
    assert_eq!(&out[..], b"x");
}

#[test]
fn the_edge_uri_has_one_spelling() {
    let id = edge();
    let uri = peer_edge_uri(id);
    assert_eq!(uri, "urn:zt:edge:e0e1e2e3-e4e5-4e6e-8e7e-8e9eaebecede");
    assert_eq!(peer_edge_from_uri(&uri), Some(id));
    for other in [
        "urn:zt:edge:E0E1E2E3-E4E5-4E6E-8E7E-8E9EAEBECEDE",
        "urn:zt:edge:e0e1e2e3e4e54e6e8e7e8e9eaebecede",
        "urn:zt:edge:{e0e1e2e3-e4e5-4e6e-8e7e-8e9eaebecede}",
        "urn:zt:client:e0e1e2e3-e4e5-4e6e-8e7e-8e9eaebecede",
        "urn:zt:edge:",
        "",
    ] {
        assert_eq!(peer_edge_from_uri(other), None, "{other}");
    }
}

#[test]
fn wants_reads_the_prefix_then_exactly_the_body() {
    let wire = open_wire(&open());
    assert_eq!(wants(&[]), 4);
    assert_eq!(wants(&wire[..3]), 1);
    assert_eq!(wants(&wire[..4]), wire.len() - 4);
    assert_eq!(wants(&wire[..20]), wire.len() - 20);
    assert_eq!(wants(&wire), 0);
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!(".{{0,{max}}}"))
        .unwrap()
        .prop_filter("byte length", move |s| s.len() <= max)
}

fn any_open() -> impl Strategy<Value = PeerFlowOpen> {
    let dest = (any::<[u8; 16]>(), any::<bool>(), any::<u16>()).prop_map(|(ip, v4, port)| {
        let ip: std::net::IpAddr = if v4 {
            [ip[0], ip[1], ip[2], ip[3]].into()
        } else {
            ip.into()
        };
        std::net::SocketAddr::new(ip, port)
    });
    (
        uuid(),
        uuid(),
        any::<u64>(),
        any::<bool>(),
        dest,
        proptest::collection::vec(("[a-z-]{0,20}", text(40)), 0..5),
    )
        .prop_map(
            |(tunnel_id, from_edge, flow_id, udp, dest, metadata)| PeerFlowOpen {
                tunnel_id,
                from_edge,
                flow: FlowHeader {
                    flow_id,
                    protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
                    dest,
                    metadata,
                },
            },
        )
}

fn any_answer() -> impl Strategy<Value = PeerFlowAnswer> {
    let info = (
        uuid(),
        any::<u8>(),
        any::<bool>(),
        "[!-~]{0,16}",
        any::<bool>(),
    )
        .prop_map(
            |(connector_id, conn_index, cf, transport, first_fin_ends)| PeerConnectorInfo {
                connector_id,
                conn_index,
                kind: if cf {
                    PeerConnectorKind::Cloudflared
                } else {
                    PeerConnectorKind::Zt
                },
                transport,
                first_fin_ends,
            },
        );
    prop_oneof![
        info.prop_map(PeerFlowAnswer::ok),
        (1u16..=u16::MAX, text(100)).prop_map(|(code, detail)| PeerFlowAnswer::refused(
            FlowStatus::new(FlowStatusCode::from_u16(code), detail)
        )),
    ]
}

/// Decodes `data` as both messages; every success re-encodes to exactly the bytes it took.
fn check_any(data: &[u8]) {
    let mut buf = data;
    if let Ok(Some(open)) = PeerFlowOpen::decode(&mut buf) {
        let taken = data.len() - buf.len();
        assert_eq!(open_wire(&open), &data[..taken]);
    }
    let mut buf = data;
    if let Ok(Some(answer)) = PeerFlowAnswer::decode(&mut buf) {
        let taken = data.len() - buf.len();
        assert_eq!(answer_wire(&answer), &data[..taken]);
    }
}

/// Every proper prefix of a message is "need more", and then the whole decodes.
fn check_prefixes<T: PartialEq + std::fmt::Debug>(
    wire: &[u8],
    decode: impl Fn(&[u8]) -> Result<Option<T>, PeerDecodeError>,
) -> Option<T> {
    for n in 0..wire.len() {
        assert_eq!(decode(&wire[..n]), Ok(None), "prefix of {n} bytes");
    }
    decode(wire).unwrap()
}

proptest! {
    #[test]
    fn every_open_round_trips_and_its_prefixes_need_more(open in any_open()) {
        let wire = open_wire(&open);
        prop_assert_eq!(check_prefixes(&wire, decode_open), Some(open));
    }

    #[test]
    fn every_answer_round_trips_and_its_prefixes_need_more(answer in any_answer()) {
        let wire = answer_wire(&answer);
        prop_assert_eq!(check_prefixes(&wire, decode_answer), Some(answer));
    }

    /// Arbitrary bytes decode to a message, an error or "need more", never a panic; an
    /// error on a prefix is the error on the whole.
    #[test]
    fn arbitrary_bytes_decide_without_panicking(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        check_any(&data);
        for n in 0..data.len() {
            if let Err(e) = decode_open(&data[..n]) {
                prop_assert_eq!(decode_open(&data), Err(e));
                break;
            }
        }
        for n in 0..data.len() {
            if let Err(e) = decode_answer(&data[..n]) {
                prop_assert_eq!(decode_answer(&data), Err(e));
                break;
            }
        }
    }

    /// Valid messages with one byte changed, cut or extended: the same, and the changed
    /// message never panics the decoders.
    #[test]
    fn mutated_messages_decide_without_panicking(
        open in any_open(),
        answer in any_answer(),
        at in any::<usize>(),
        byte in any::<u8>(),
        cut in any::<usize>(),
    ) {
        for wire in [open_wire(&open), answer_wire(&answer)] {
            let mut changed = wire.clone();
            let i = at % changed.len();
            changed[i] = byte;
            check_any(&changed);
            check_any(&changed[..cut % (changed.len() + 1)]);
            changed.push(byte);
            check_any(&changed);
        }
    }
}
