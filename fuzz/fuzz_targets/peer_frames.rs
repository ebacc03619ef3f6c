//! The edge-to-edge peering messages (zt-proto's PeerFlowOpen and PeerFlowAnswer) on
//! arbitrary bytes: never panic; "need more" takes nothing; a decoded message takes no more
//! bytes than given and re-encodes to exactly the bytes it took; a prefix of the input never
//! errs where the whole would not (and errs the same way); and a prefix of a decoded message
//! is "need more".
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use zt_proto::{PeerDecodeError, PeerFlowAnswer, PeerFlowOpen};

/// Decodes `data` with `decode`; on success checks the round trip and that every proper
/// prefix of the message is "need more".
fn check<T: std::fmt::Debug + PartialEq>(
    data: &[u8],
    decode: impl Fn(&[u8]) -> (Result<Option<T>, PeerDecodeError>, usize),
    encode: impl Fn(&T, &mut BytesMut),
) {
    let (whole, taken) = decode(data);
    match &whole {
        Ok(Some(message)) => {
            assert!(taken <= data.len());
            let mut again = BytesMut::new();
            encode(message, &mut again);
            assert_eq!(
                &again[..],
                &data[..taken],
                "a message re-encodes to its bytes"
            );
            for n in (0..taken).step_by((taken / 64).max(1)) {
                assert!(
                    matches!(decode(&data[..n]).0, Ok(None)),
                    "a prefix of {n} bytes of a message is not 'need more'"
                );
            }
        }
        Ok(None) => assert_eq!(taken, 0, "'need more' takes nothing"),
        Err(_) => assert!(taken <= data.len()),
    }
    for n in 0..data.len().min(64) {
        if let Err(e) = decode(&data[..n]).0 {
            assert_eq!(whole, Err(e), "a prefix erred where the whole did not");
            break;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(
        data,
        |d| {
            let mut buf = d;
            let r = PeerFlowOpen::decode(&mut buf);
            (r, d.len() - buf.len())
        },
        |m, out| m.encode(out).expect("a decoded open re-encodes"),
    );
    check(
        data,
        |d| {
            let mut buf = d;
            let r = PeerFlowAnswer::decode(&mut buf);
            (r, d.len() - buf.len())
        },
        |m, out| m.encode(out).expect("a decoded answer re-encodes"),
    );
});
