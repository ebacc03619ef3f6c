//! Fuzzes the flow-open exchange (zt-proto's FlowAcceptor and FlowOpener) with arbitrary
//! bytes in arbitrary pieces. No input may panic; a machine never takes more bytes than it
//! was given; a decided header or status re-encodes to exactly the
//! bytes taken; and feeding the same bytes whole decides the same way.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use zt_proto::{FlowAcceptor, FlowHeader, FlowOpener, FlowStatus, Limits, Protocol};

/// Splits `data` by the fuzzer's length bytes: each piece starts with its length.
fn pieces(mut r: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((&n, tail)) = r.split_first() {
        let n = usize::from(n).min(tail.len());
        out.push(&tail[..n]);
        r = &tail[n..];
    }
    out
}

/// Runs the acceptor over the pieces; returns the decision and the bytes taken.
fn accept(pieces: &[&[u8]]) -> (Option<Result<FlowHeader, ()>>, Vec<u8>) {
    let mut m = FlowAcceptor::new(Limits::default());
    let mut taken = Vec::new();
    for p in pieces {
        match m.handle_input(p) {
            Ok(n) => {
                assert!(n <= p.len(), "took {n} of {}", p.len());
                taken.extend_from_slice(&p[..n]);
                if let Some(h) = m.poll_header() {
                    assert_eq!(m.wants(), 0);
                    return (Some(Ok(h)), taken);
                }
            }
            Err(e) => {
                // The answer to a bad header always fits a status.
                let mut wire = BytesMut::new();
                FlowAcceptor::bad_header_status(&e)
                    .encode(&mut wire)
                    .expect("the bad-header answer encodes");
                return (Some(Err(())), taken);
            }
        }
    }
    (None, taken)
}

fn open(pieces: &[&[u8]]) -> (Option<Result<FlowStatus, ()>>, Vec<u8>) {
    let header = FlowHeader {
        flow_id: 1,
        protocol: Protocol::Tcp,
        dest: "198.51.100.101:443".parse().unwrap(),
        metadata: vec![],
    };
    let mut m = FlowOpener::new(&header, &Limits::default()).unwrap();
    assert!(m.poll_transmit().is_some());
    let mut taken = Vec::new();
    for p in pieces {
        match m.handle_input(p) {
            Ok(n) => {
                assert!(n <= p.len());
                taken.extend_from_slice(&p[..n]);
                if let Some(s) = m.poll_status() {
                    return (Some(Ok(s)), taken);
                }
            }
            Err(_) => return (Some(Err(())), taken),
        }
    }
    (None, taken)
}

fuzz_target!(|data: &[u8]| {
    let split = pieces(data);
    let whole: Vec<u8> = split.concat();

    let (decided, taken) = accept(&split);
    if let Some(Ok(h)) = &decided {
        let mut again = BytesMut::new();
        h.encode(&mut again).expect("a decoded header re-encodes");
        assert_eq!(
            &again[..],
            &taken[..],
            "a header is exactly the bytes taken"
        );
    }
    let (whole_decided, _) = accept(&[&whole]);
    if decided.is_some() {
        assert_eq!(
            decided, whole_decided,
            "the split changed the header's decision"
        );
    }

    let (decided, taken) = open(&split);
    if let Some(Ok(s)) = &decided {
        let mut again = BytesMut::new();
        s.encode(&mut again).expect("a decoded status re-encodes");
        // The code may be one this version does not name; compare the length only then.
        assert_eq!(again.len(), taken.len());
    }
    let (whole_decided, _) = open(&[&whole]);
    if decided.is_some() {
        assert_eq!(
            decided, whole_decided,
            "the split changed the status's decision"
        );
    }
});
