//! Fuzzes the OpenID Connect discovery document parser: no input may panic, and whatever
//! parses names the expected issuer and only `https://` endpoints.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zt_oidc::Discovery;

const ISSUER: &str = "https://idp.test";

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = Discovery::parse(data, ISSUER) {
        assert_eq!(d.issuer, ISSUER);
        for url in [&d.authorization_endpoint, &d.token_endpoint, &d.jwks_uri]
            .into_iter()
            .chain(d.userinfo_endpoint.iter())
            .chain(d.device_authorization_endpoint.iter())
        {
            assert!(url.starts_with("https://"), "{url}");
        }
    }
});
