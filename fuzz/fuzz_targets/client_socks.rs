//! The SOCKS5 greeting and request decoders on arbitrary bytes: never panic, never claim
//! more bytes than given, and a decoded request re-encoded decodes to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zt_client::socks::{Greeting, Request, TargetAddr, MAX_GREETING_LEN, MAX_REQUEST_LEN};

fn encode(r: &Request, command: u8) -> Vec<u8> {
    let mut out = vec![5, command, 0];
    match &r.target {
        TargetAddr::Ip(std::net::SocketAddr::V4(a)) => {
            out.push(1);
            out.extend_from_slice(&a.ip().octets());
        }
        TargetAddr::Ip(std::net::SocketAddr::V6(a)) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
        }
        TargetAddr::Name(n, _) => {
            out.push(3);
            out.push(n.len() as u8);
            out.extend_from_slice(n.as_bytes());
        }
        _ => return out,
    }
    let port = match &r.target {
        TargetAddr::Ip(a) => a.port(),
        TargetAddr::Name(_, p) => *p,
        _ => 0,
    };
    out.extend_from_slice(&port.to_be_bytes());
    out
}

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((g, used))) = Greeting::decode(data) {
        assert!(used <= data.len() && used <= MAX_GREETING_LEN);
        assert_eq!(g.methods.len() + 2, used);
    }
    if let Ok(Some((r, used))) = Request::decode(data) {
        assert!(used <= data.len() && used <= MAX_REQUEST_LEN);
        // Names that are address literals decode as addresses, so compare decoded forms.
        let again = encode(&r, data[1]);
        let (r2, used2) = Request::decode(&again).unwrap().unwrap();
        assert_eq!(r2, r);
        assert_eq!(used2, again.len());
    }
    // Feeding the bytes one at a time never yields an error the whole input would not.
    for n in 0..data.len().min(MAX_REQUEST_LEN) {
        if Request::decode(&data[..n]).is_err() {
            assert!(Request::decode(data).is_err());
            break;
        }
    }
});
