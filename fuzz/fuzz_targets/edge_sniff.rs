//! Fuzzes the edge's reading of a flow's first bytes (the TLS ClientHello's SNI, the HTTP
//! `Host`), which any client reaches with the bytes it sends: no input may panic, a host is
//! a bounded, normalised DNS name, and the verdict cannot depend on how the bytes were
//! split: whenever a prefix already decides, it decides what the whole input does (else a
//! client could steer the host policy sees by cutting its writes short).
#![no_main]
use libfuzzer_sys::fuzz_target;
use zt_edge::fuzzing::sniff;

fuzz_target!(|data: &[u8]| {
    let whole = sniff(data);
    if let Some((_, Some(host))) = &whole {
        assert!(!host.is_empty() && host.len() <= 253, "host {host:?}");
        assert!(
            host.bytes().all(|b| b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'.' | b'-' | b'_')),
            "host {host:?}"
        );
    }
    // Every prefix for short inputs; 64 evenly spaced ones for long ones.
    let step = (data.len() / 64).max(1);
    for cut in (0..data.len()).step_by(step) {
        if let Some(part) = sniff(&data[..cut]) {
            assert_eq!(
                Some(&part),
                whole.as_ref(),
                "the first {cut} bytes decide {part:?}, the whole input {whole:?}"
            );
        }
    }
});
