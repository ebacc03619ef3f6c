//! Property tests: whatever is written reads back equal, and reading back and writing
//! again gives the same bytes; arbitrary input never panics a parser.

use proptest::prelude::*;
use uuid::Uuid;
use zt_creds::{CaFingerprint, DeviceCredentials, TunnelCredentials, TunnelSecret, TunnelToken};

/// Any string, control characters and non-ASCII included (they exercise escaping).
fn text(min: usize, max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), min..max).prop_map(String::from_iter)
}

fn secret() -> impl Strategy<Value = TunnelSecret> {
    proptest::collection::vec(any::<u8>(), 32..=128)
        .prop_map(|b| TunnelSecret::from_vec(b).unwrap())
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<[u8; 16]>().prop_map(Uuid::from_bytes)
}

fn edge_address() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<[u8; 4]>(), 1..=u16::MAX)
            .prop_map(|(ip, port)| format!("{}:{port}", std::net::Ipv4Addr::from(ip))),
        (any::<[u8; 16]>(), 1..=u16::MAX)
            .prop_map(|(ip, port)| format!("[{}]:{port}", std::net::Ipv6Addr::from(ip))),
        ("[a-z0-9-]{1,20}(\\.[a-z0-9-]{1,20}){0,3}", 1..=u16::MAX)
            .prop_map(|(host, port)| format!("{host}:{port}")),
    ]
}

fn credentials() -> impl Strategy<Value = TunnelCredentials> {
    (
        text(1, 40),
        uuid(),
        proptest::option::of(text(0, 40)),
        secret(),
        proptest::option::of(text(1, 20)),
    )
        .prop_map(|(account_tag, tunnel_id, tunnel_name, secret, endpoint)| {
            TunnelCredentials {
                account_tag,
                tunnel_id,
                tunnel_name,
                secret,
                endpoint,
            }
        })
}

fn token() -> impl Strategy<Value = TunnelToken> {
    (
        text(1, 40),
        uuid(),
        secret(),
        proptest::option::of(text(1, 20)),
        proptest::collection::vec(edge_address(), 0..5),
        proptest::option::of(any::<[u8; 32]>().prop_map(CaFingerprint::from_bytes)),
    )
        .prop_map(
            |(account_tag, tunnel_id, secret, endpoint, edge, ca_fingerprint)| TunnelToken {
                account_tag,
                tunnel_id,
                secret,
                endpoint,
                edge,
                ca_fingerprint,
            },
        )
}

fn device() -> impl Strategy<Value = DeviceCredentials> {
    (
        uuid(),
        // A domain never holds `@`; the local part may (quoted, in real addresses).
        (
            text(1, 20),
            text(1, 20).prop_filter("no @ in a domain", |d| !d.contains('@')),
        )
            .prop_map(|(l, d)| format!("{l}@{d}")),
        secret(),
        proptest::collection::vec(edge_address(), 1..5),
        any::<[u8; 32]>().prop_map(CaFingerprint::from_bytes),
        proptest::option::of(uuid()),
    )
        .prop_map(
            |(device_id, user_email, secret, edge, ca_fingerprint, default_vnet)| {
                DeviceCredentials {
                    device_id,
                    user_email,
                    auth: zt_creds::DeviceAuth::Secret(secret),
                    edge,
                    ca_fingerprint,
                    default_vnet,
                    identity_provider: None,
                    service_token: None,
                }
            },
        )
}

proptest! {
    #[test]
    fn credentials_round_trip(c in credentials()) {
        let json = c.to_json();
        let back = TunnelCredentials::from_json(json.as_bytes()).unwrap();
        prop_assert_eq!(&back, &c);
        prop_assert_eq!(&back.to_json(), &json);
        // Key order is part of the format.
        let order: Vec<usize> = ["\"AccountTag\":", "\"TunnelSecret\":", "\"TunnelID\":"]
            .iter()
            .map(|k| json.find(k).unwrap())
            .collect();
        prop_assert!(order.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn tokens_round_trip(t in token()) {
        let encoded = t.encode();
        let back = TunnelToken::parse(&encoded).unwrap();
        prop_assert_eq!(&back, &t);
        prop_assert_eq!(&back.encode(), &encoded);
    }

    #[test]
    fn device_credentials_round_trip(d in device()) {
        let json = d.to_json();
        let back = DeviceCredentials::from_json(json.as_bytes()).unwrap();
        prop_assert_eq!(&back, &d);
        prop_assert_eq!(&back.to_json(), &json);
    }

    #[test]
    fn service_token_credentials_round_trip(d in device(), name in text(1, 40)) {
        // A token's credentials carry its name and no user.
        let t = DeviceCredentials { user_email: String::new(), service_token: Some(name), ..d };
        let json = t.to_json();
        prop_assert!(!json.contains("\"UserEmail\""));
        let back = DeviceCredentials::from_json(json.as_bytes()).unwrap();
        prop_assert_eq!(&back, &t);
        prop_assert_eq!(&back.to_json(), &json);
    }

    #[test]
    fn credentials_written_by_serde_json_are_read(c in credentials()) {
        // An independent writer (what jq or a script would produce) reads back the same.
        use base64::Engine as _;
        let mut map = serde_json::Map::new();
        map.insert("AccountTag".into(), c.account_tag.clone().into());
        map.insert("TunnelSecret".into(), base64::engine::general_purpose::STANDARD.encode(c.secret.expose_bytes()).into());
        map.insert("TunnelID".into(), c.tunnel_id.to_string().into());
        if let Some(name) = &c.tunnel_name {
            map.insert("TunnelName".into(), name.clone().into());
        }
        if let Some(e) = &c.endpoint {
            map.insert("Endpoint".into(), e.clone().into());
        }
        let json = serde_json::to_string_pretty(&map).unwrap();
        prop_assert_eq!(TunnelCredentials::from_json(json.as_bytes()).unwrap(), c);
    }

    #[test]
    fn arbitrary_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), s in ".{0,256}") {
        let _ = TunnelCredentials::from_json(&bytes);
        let _ = DeviceCredentials::from_json(&bytes);
        let _ = TunnelToken::parse(&s);
        use base64::Engine as _;
        let _ = TunnelToken::parse(&base64::engine::general_purpose::STANDARD.encode(&bytes));
    }
}
