//! Fuzzes the JWKS parser: no input may panic, and every kept key has a kid at most once in
//! the list of kids.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zt_oidc::Jwks;

fuzz_target!(|data: &[u8]| {
    if let Ok(keys) = Jwks::parse(data) {
        assert!(keys.kids().len() <= keys.len());
        assert!(keys.len() <= 64);
    }
});
