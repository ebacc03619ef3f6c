//! `parse_network` on arbitrary text: never panics, and what it accepts prints back to
//! text that parses to the same network.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zt_routes::parse_network;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_network(text) {
        Ok(net) => {
            assert_eq!(parse_network(&net.to_string()), Ok(net));
            let trunc = net.trunc();
            assert!(trunc.contains(&net.addr()));
        }
        Err(e) => {
            // Every error but "empty" shows the input it refused.
            let shown = e.to_string();
            assert!(
                shown.starts_with("empty") || shown.contains(text.trim()),
                "{shown}"
            );
        }
    }
});
