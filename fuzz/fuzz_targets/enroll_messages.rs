//! Fuzzes the enrollment exchange's framing and messages (what a laptop sends the edge
//! before it has any credential): no input may panic, the decoder never holds more than
//! its bound, and a message that parses encodes to one that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zt_proto::{parse_message, EnrollDecoder, MAX_ENROLL_MESSAGE_LEN};

fuzz_target!(|data: &[u8]| {
    // As a stream, cut where the first byte says.
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(rest.len());
    let mut d = EnrollDecoder::new();
    for chunk in [&rest[..cut], &rest[cut..]] {
        if d.push(chunk).is_err() {
            return;
        }
        while let Ok(Some(m)) = d.next_message() {
            let wire = m.encode().expect("a parsed message encodes");
            assert!(wire.len() <= 4 + MAX_ENROLL_MESSAGE_LEN);
            let again = parse_message(&wire[4..]).expect("an encoded message parses");
            assert_eq!(again, m);
        }
    }
    // As one message body.
    if let Ok(m) = parse_message(rest) {
        let wire = m.encode().expect("a parsed message encodes");
        assert_eq!(parse_message(&wire[4..]).expect("re-parses"), m);
    }
});
