//! Fuzzes the PostgreSQL backend's reading of notifications: any role that can connect to
//! the database can `NOTIFY` on the edge's channels, so payloads are untrusted. No input may
//! panic; what is understood is canonical (re-encoding it gives the payload back) and reads
//! the same again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use zt_edge::fuzzing::notification;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first byte picks the channel, the rest is the payload.
    let (channel, payload) = match text.split_at_checked(1) {
        Some(("c", rest)) => ("zt_config", rest),
        Some(("e", rest)) => ("zt_ephemeral", rest),
        Some((_, rest)) => ("other", rest),
        None => return,
    };
    if let Ok(encoded) = notification(channel, payload) {
        assert_eq!(encoded, payload, "not canonical");
        assert_eq!(notification(channel, &encoded), Ok(encoded.clone()));
    }
});
