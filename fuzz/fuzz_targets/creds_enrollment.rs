//! Fuzzes the enrollment string parser (`zt login ENROLLMENT`): no input may panic, and a
//! string that parses encodes to one that parses to the same value.
//!
//! The first byte picks the layer: odd means the rest is the string itself; even means the
//! rest is the JSON inside, encoded here so the fuzzer reaches the field checks.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use zt_creds::{Enrollment, ENROLLMENT_PREFIX};

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
        format!(
            "{ENROLLMENT_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rest)
        )
    };
    if let Ok(e) = Enrollment::parse(&text) {
        let again = Enrollment::parse(&e.encode())
            .unwrap_or_else(|err| panic!("an encoded enrollment does not parse: {err}"));
        assert_eq!(again, e);
    }
});
