//! Fuzzes the tunnel token parser: no input may panic, and a token that parses must
//! encode to one that parses to the same value.
//!
//! The first byte picks the layer: odd means the rest is the token text itself; even means
//! the rest is the JSON payload, base64-encoded here so that the fuzzer reaches the JSON
//! and field checks without having to discover base64 first.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use zt_creds::TunnelToken;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = if selector % 2 == 1 {
        match std::str::from_utf8(rest) {
            Ok(s) => s.to_owned(),
            Err(_) => return,
        }
    } else {
        base64::engine::general_purpose::STANDARD.encode(rest)
    };
    if let Ok(token) = TunnelToken::parse(&text) {
        let encoded = token.encode();
        let again = TunnelToken::parse(&encoded)
            .unwrap_or_else(|e| panic!("an encoded token does not parse: {e}"));
        assert_eq!(again, token);
        assert_eq!(again.encode(), encoded);
    }
});
