//! Fuzzes the configuration-as-code file reader (`zt plan|apply -f`, `zt policy test`) and
//! the offline policy tests it feeds: no input may panic, every error must format with its
//! underlined excerpt, and a file the reader accepts must be accepted again once written
//! back out (what `zt export` relies on).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use zt_edge::config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse(Path::new("fuzz.yaml"), text) {
        Ok(file) => {
            let _ = config::file_hash(&file);
            let _ = config::check_json(&file);
            let again = config::to_yaml(&file);
            let back = config::parse(Path::new("again.yaml"), &again)
                .expect("a file the reader accepted reads again once written out");
            assert_eq!(config::file_hash(&back), config::file_hash(&file));
            if let Ok(results) = config::run_policy_tests(&file) {
                assert_eq!(results.len(), file.tests.len());
            }
        }
        Err(err) => {
            let _ = err.report();
        }
    }
});
