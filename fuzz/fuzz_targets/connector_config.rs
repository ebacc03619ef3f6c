//! Fuzzes the connector's `config.yaml` reader and the value parsers the command line
//! shares with it: no input may panic, and every error must format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zt_connector::{parse_duration, ConnectorConfig, EdgeAddr, EdgeProtocol, TunnelRef};
use zt_creds::{CaFingerprint, PermissionMode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ConnectorConfig::parse(text, "fuzz.yaml") {
        Ok(config) => {
            let _ = format!("{config:?}");
            assert!((1..=zt_connector::MAX_HA_CONNECTIONS).contains(&config.ha_connections));
            assert!(!config.warp_routing.connect_timeout.is_zero());
        }
        Err(err) => {
            let _ = err.to_string();
        }
    }
    if let Ok(d) = parse_duration(text) {
        let _ = d.as_nanos();
    }
    if let Ok(edge) = text.parse::<EdgeAddr>() {
        // What the parser accepts, its Display must give back in a form it accepts again.
        let again: EdgeAddr = edge.to_string().parse().expect("edge address round-trips");
        assert_eq!(again, edge);
    }
    if let Ok(fp) = text.parse::<CaFingerprint>() {
        assert_eq!(fp.to_string().parse::<CaFingerprint>().ok(), Some(fp));
    }
    let _ = text.parse::<TunnelRef>();
    let _ = text.parse::<EdgeProtocol>();
    let _ = text.parse::<PermissionMode>();
});
