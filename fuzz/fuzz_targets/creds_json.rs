//! Fuzzes the credentials JSON parsers (tunnel and device): no input may panic, and
//! whatever parses must write back to a document that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zt_creds::{DeviceCredentials, TunnelCredentials};

fuzz_target!(|data: &[u8]| {
    if let Ok(creds) = TunnelCredentials::from_json(data) {
        let json = creds.to_json();
        let again = TunnelCredentials::from_json(json.as_bytes())
            .unwrap_or_else(|e| panic!("written credentials do not parse: {e}"));
        assert_eq!(again, creds);
        assert_eq!(again.to_json(), json);
    }
    if let Ok(device) = DeviceCredentials::from_json(data) {
        let json = device.to_json();
        let again = DeviceCredentials::from_json(json.as_bytes())
            .unwrap_or_else(|e| panic!("written device credentials do not parse: {e}"));
        assert_eq!(again, device);
        assert_eq!(again.to_json(), json);
    }
});
