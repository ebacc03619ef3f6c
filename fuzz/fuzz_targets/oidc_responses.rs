//! Fuzzes the parsers of the IdP's token, device-authorization and error responses: no input
//! may panic, device lifetimes and intervals stay within their caps, and OAuth error fields
//! stay bounded and free of control characters.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use zt_oidc::fuzzing::{oauth_error, parse_device, parse_tokens};

fuzz_target!(|data: &[u8]| {
    let _ = parse_tokens(data);
    if let Ok(d) = parse_device(data) {
        assert!(d.expires_in <= Duration::from_secs(3600));
        assert!(d.interval >= Duration::from_secs(1) && d.interval <= Duration::from_secs(300));
        assert!(d.verification_uri.starts_with("https://"));
    }
    let (error, description) = oauth_error(data);
    for text in error.iter().chain(description.iter()) {
        assert!(text.chars().count() <= 201);
        assert!(!text.chars().any(char::is_control));
    }
});
