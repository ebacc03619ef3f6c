//! The TCP transport's session-stream framing (datagrams and the close, one reliable byte
//! stream) on arbitrary bytes: never panics, never claims more bytes than given, a decoded
//! frame re-encodes to the bytes it came from, and a stream of frames decodes the same
//! whatever the split.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use zt_proto::{SessionFrame, MAX_CLOSE_REASON, MAX_SESSION_DATAGRAM, SESSION_FRAME_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    // Decode a run of frames from the whole input.
    let mut at = 0;
    let mut frames = Vec::new();
    while let Ok(Some((f, used))) = SessionFrame::decode(&data[at..]) {
        assert!(used >= SESSION_FRAME_HEADER_LEN && at + used <= data.len());
        match &f {
            SessionFrame::Datagram(d) => assert!(d.len() <= MAX_SESSION_DATAGRAM),
            SessionFrame::Close { reason, .. } => assert!(reason.len() <= MAX_CLOSE_REASON),
        }
        let mut again = BytesMut::new();
        f.encode(&mut again);
        assert_eq!(&again[..], &data[at..at + used]);
        frames.push(f);
        at += used;
    }
    // A prefix never errs where the whole would not, and yields the same first frame.
    let first = SessionFrame::decode(data);
    for n in 0..data.len().min(64) {
        match SessionFrame::decode(&data[..n]) {
            Ok(Some(f)) => assert_eq!(Ok(Some(f)), first),
            Ok(None) => {}
            Err(_) => assert!(first.is_err()),
        }
    }
});
