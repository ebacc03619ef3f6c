//! Fuzzes zt-proto's decoders (control frames, flow header, flow status, datagram): no input
//! may panic, "need more" must consume nothing, and whatever decodes must re-encode to the
//! exact bytes it came from (the encoding is canonical).
#![no_main]

use bytes::{Buf, Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use zt_proto::{ControlFrame, Datagram, FlowHeader, FlowStatus, Limits};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let limits = Limits::default();
    match selector % 4 {
        0 => {
            // A control stream: frames back to back.
            let mut buf = Bytes::copy_from_slice(rest);
            loop {
                let before = buf.clone();
                match ControlFrame::decode(&mut buf) {
                    Ok(Some(frame)) => {
                        let used = before.len() - buf.len();
                        let mut again = BytesMut::new();
                        frame
                            .encode(&mut again)
                            .unwrap_or_else(|e| panic!("decoded frame does not encode: {e}"));
                        assert_eq!(&again[..], &before[..used], "encoding is not canonical");
                    }
                    Ok(None) => {
                        assert_eq!(buf.len(), before.len(), "a partial decode consumed bytes");
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        1 => {
            let mut buf = Bytes::copy_from_slice(rest);
            match FlowHeader::decode_with(&mut buf, &limits) {
                Ok(Some(h)) => {
                    let used = rest.len() - buf.remaining();
                    let mut again = BytesMut::new();
                    h.encode_with(&mut again, &limits).unwrap();
                    assert_eq!(&again[..], &rest[..used]);
                }
                Ok(None) => assert_eq!(buf.remaining(), rest.len()),
                Err(_) => {}
            }
        }
        2 => {
            let mut buf = Bytes::copy_from_slice(rest);
            if let Ok(Some(s)) = FlowStatus::decode(&mut buf) {
                let used = rest.len() - buf.remaining();
                let mut again = BytesMut::new();
                s.encode(&mut again).unwrap();
                assert_eq!(&again[..], &rest[..used]);
            }
        }
        _ => {
            if let Ok(d) = Datagram::decode(Bytes::copy_from_slice(rest), &limits) {
                let mut again = BytesMut::new();
                d.encode(&mut again, &limits).unwrap();
                // A varint may be encoded longer than needed; the payload must match.
                assert_eq!(&again[again.len() - d.payload.len()..], &d.payload[..]);
                assert!(again.len() <= rest.len());
            }
        }
    }
});
