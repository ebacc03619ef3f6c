//! Fuzzes the parser of the request `zt login`'s loopback port receives (the provider's
//! redirect, or whatever else connects): no input may panic, and a code that is accepted
//! is never empty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zt_client::login::{parse_callback, Callback};

fuzz_target!(|data: &[u8]| {
    if let Ok(Callback::Code { code, .. }) = parse_callback(data, "/callback") {
        assert!(!code.is_empty());
    }
});
