//! Fuzzes the decoders of cloudflared's wire formats in zt-edge: the control stream's RPC
//! messages and the flow header in both directions. No input may panic, a decoded message
//! never claims more bytes than it was given, and "need more bytes" stays so for every
//! shorter prefix of a complete frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zt_edge::cloudflared::{decode_connect_request, decode_connect_response, decode_control};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            // A control stream: messages back to back until one is incomplete or invalid.
            let mut buf = rest;
            while let Ok(Some((_, used))) = decode_control(buf) {
                assert!(used > 0 && used <= buf.len());
                buf = &buf[used..];
            }
        }
        1 => {
            if let Ok(Some((_, used))) = decode_connect_request(rest) {
                assert!(used <= rest.len());
            }
        }
        _ => {
            if let Ok(Some((_, used))) = decode_connect_response(rest) {
                assert!(used <= rest.len());
                if let Some(cut) = used.checked_sub(1) {
                    assert!(matches!(decode_connect_response(&rest[..cut]), Ok(None)));
                }
            }
        }
    }
});
