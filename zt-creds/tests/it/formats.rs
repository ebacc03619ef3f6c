//! The credentials file, token and device credentials formats: exact bytes in and out,
//! every shape cloudflared has written, and the rules for unknown keys and the BOM.

use crate::common::{capture_logs, CLOUDFLARED_JSON};
use base64::Engine as _;
use uuid::Uuid;
use zt_creds::{CaFingerprint, DeviceCredentials, TunnelCredentials, TunnelSecret, TunnelToken};

fn interop_credentials() -> TunnelCredentials {
    TunnelCredentials {
        account_tag: "0123456789abcdef0123456789abcdef".into(),
        tunnel_id: Uuid::parse_str("8e343b13-a087-48ea-825f-9783931ff2a5").unwrap(),
        tunnel_name: Some("k8s_zero_trust_tunnel".into()),
        secret: TunnelSecret::from_vec((0u8..32).collect()).unwrap(),
        endpoint: None,
    }
}

#[test]
fn cloudflared_file_parses_to_the_expected_fields() {
    let parsed = TunnelCredentials::from_json(CLOUDFLARED_JSON.as_bytes()).unwrap();
    assert_eq!(parsed, interop_credentials());
    assert_eq!(
        parsed.secret.expose_bytes(),
        &(0u8..32).collect::<Vec<_>>()[..]
    );
}

#[test]
fn cloudflared_file_round_trips_byte_for_byte_both_ways() {
    // File -> struct -> file.
    let parsed = TunnelCredentials::from_json(CLOUDFLARED_JSON.as_bytes()).unwrap();
    assert_eq!(parsed.to_json().as_str(), CLOUDFLARED_JSON);
    // Struct -> file -> struct.
    let written = interop_credentials().to_json();
    assert_eq!(written.as_str(), CLOUDFLARED_JSON);
    assert_eq!(
        TunnelCredentials::from_json(written.as_bytes()).unwrap(),
        interop_credentials()
    );
}

#[test]
fn every_shape_cloudflared_wrote_is_read() {
    let expected_no_name = TunnelCredentials {
        tunnel_name: None,
        ..interop_credentials()
    };
    // The interop file exactly as shown in the interop notes: multi-line, indented.
    let pretty = r#"{"AccountTag":"0123456789abcdef0123456789abcdef",
     "TunnelSecret":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
     "TunnelID":"8e343b13-a087-48ea-825f-9783931ff2a5",
     "TunnelName":"k8s_zero_trust_tunnel"}
"#;
    assert_eq!(
        TunnelCredentials::from_json(pretty.as_bytes()).unwrap(),
        interop_credentials()
    );
    // `cloudflared tunnel create` (2022+): three keys, no name.
    let created = r#"{"AccountTag":"0123456789abcdef0123456789abcdef","TunnelSecret":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","TunnelID":"8e343b13-a087-48ea-825f-9783931ff2a5"}"#;
    let parsed = TunnelCredentials::from_json(created.as_bytes()).unwrap();
    assert_eq!(parsed, expected_no_name);
    assert_eq!(parsed.to_json().as_str(), created);
    // Newer releases add `Endpoint` (omitted when empty).
    let fed = r#"{"AccountTag":"0123456789abcdef0123456789abcdef","TunnelSecret":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","TunnelID":"8e343b13-a087-48ea-825f-9783931ff2a5","Endpoint":"fed"}"#;
    let parsed = TunnelCredentials::from_json(fed.as_bytes()).unwrap();
    assert_eq!(parsed.endpoint.as_deref(), Some("fed"));
    assert_eq!(parsed.to_json().as_str(), fed);
    // An empty Endpoint is no endpoint.
    let empty_endpoint = created.replace('}', r#","Endpoint":""}"#);
    assert_eq!(
        TunnelCredentials::from_json(empty_endpoint.as_bytes()).unwrap(),
        expected_no_name
    );
    // Keys in any order, null optionals, other UUID spellings and key case (all of which
    // cloudflared's Go decoder accepts).
    let odd = r#"{"tunnelid":"{8E343B13-A087-48EA-825F-9783931FF2A5}","TunnelName":null,
        "tunnelSecret":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","ACCOUNTTAG":"0123456789abcdef0123456789abcdef"}"#;
    assert_eq!(
        TunnelCredentials::from_json(odd.as_bytes()).unwrap(),
        expected_no_name
    );
    let simple = created.replace(
        "8e343b13-a087-48ea-825f-9783931ff2a5",
        "8e343b13a08748ea825f9783931ff2a5",
    );
    assert_eq!(
        TunnelCredentials::from_json(simple.as_bytes()).unwrap(),
        expected_no_name
    );
}

#[test]
fn unknown_keys_are_ignored_and_named_in_a_warning() {
    let with_extra =
        CLOUDFLARED_JSON.replace('}', r#","CreatedAt":"2023-07-03","Extra":{"x":[1,2]}}"#);
    let (parsed, log) = capture_logs(|| TunnelCredentials::from_json(with_extra.as_bytes()));
    assert_eq!(parsed.unwrap(), interop_credentials());
    assert!(log.contains("WARN"), "{log}");
    assert!(log.contains("key=\"CreatedAt\""), "{log}");
    assert!(log.contains("key=\"Extra\""), "{log}");
    assert!(log.contains("ignoring unknown key"), "{log}");
    // Known keys produce no warning.
    let (_, log) = capture_logs(|| TunnelCredentials::from_json(CLOUDFLARED_JSON.as_bytes()));
    assert_eq!(log, "");
}

#[test]
fn a_leading_utf8_bom_is_skipped_with_a_warning() {
    let mut with_bom = b"\xEF\xBB\xBF".to_vec();
    with_bom.extend_from_slice(CLOUDFLARED_JSON.as_bytes());
    let (parsed, log) = capture_logs(|| TunnelCredentials::from_json(&with_bom));
    assert_eq!(parsed.unwrap(), interop_credentials());
    assert!(
        log.contains("WARN") && log.contains("byte-order mark"),
        "{log}"
    );
}

#[test]
fn secrets_longer_than_32_bytes_and_unpadded_base64_are_read() {
    let long = TunnelSecret::from_vec(vec![0xa5; 128]).unwrap();
    let creds = TunnelCredentials {
        secret: long.clone(),
        ..interop_credentials()
    };
    assert_eq!(
        TunnelCredentials::from_json(creds.to_json().as_bytes())
            .unwrap()
            .secret,
        long
    );
    let unpadded = CLOUDFLARED_JSON.replace("Hh8=", "Hh8");
    assert_eq!(
        TunnelCredentials::from_json(unpadded.as_bytes()).unwrap(),
        interop_credentials()
    );
}

#[test]
fn a_token_from_a_file_configures_the_same_tunnel() {
    let creds = interop_credentials();
    let token = TunnelToken::from_credentials(creds.clone());
    let encoded = token.encode();
    // Exactly cloudflared's payload: {"a","s","t"} in Go's struct order.
    let json = base64::engine::general_purpose::STANDARD
        .decode(encoded.as_bytes())
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&json).unwrap(),
        r#"{"a":"0123456789abcdef0123456789abcdef","s":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","t":"8e343b13-a087-48ea-825f-9783931ff2a5"}"#
    );
    let back = TunnelToken::parse(&format!("  {}\n", encoded.as_str())).unwrap();
    assert_eq!(back, token);
    // Wrapped at 76 columns with CRLF, as `base64` (without -w0) and some editors leave it.
    let wrapped: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    assert!(wrapped.len() > 1);
    assert_eq!(TunnelToken::parse(&wrapped.join("\r\n")).unwrap(), token);
    assert_eq!(
        back.credentials(),
        TunnelCredentials {
            tunnel_name: None,
            ..creds
        }
    );
}

#[test]
fn a_token_carries_the_edge_and_its_ca() {
    let ca = CaFingerprint::of_der(b"edge CA certificate");
    let token = TunnelToken {
        edge: vec!["edge.example.com:7844".into(), "[2001:db8::1]:7844".into()],
        ca_fingerprint: Some(ca),
        ..TunnelToken::from_credentials(interop_credentials())
    };
    let back = TunnelToken::parse(&token.encode()).unwrap();
    assert_eq!(back.edge, token.edge);
    assert_eq!(back.ca_fingerprint, Some(ca));
    assert_eq!(back, token);
}

fn device() -> DeviceCredentials {
    DeviceCredentials {
        device_id: Uuid::parse_str("3d0f6b2a-8c1e-4f5a-9b7d-2e4c6a8f0b1d").unwrap(),
        user_email: "engineer@example.com".into(),
        auth: zt_creds::DeviceAuth::Secret(TunnelSecret::from_vec((100u8..132).collect()).unwrap()),
        edge: vec!["edge.example.com:7844".into(), "198.51.100.7:7844".into()],
        ca_fingerprint: CaFingerprint::from_bytes([0x5c; 32]),
        default_vnet: Some(Uuid::from_bytes([9; 16])),
        identity_provider: None,
        service_token: None,
    }
}

#[test]
fn device_credentials_have_a_fixed_shape_and_round_trip() {
    let d = device();
    let json = d.to_json();
    let expected = format!(
        r#"{{"DeviceID":"3d0f6b2a-8c1e-4f5a-9b7d-2e4c6a8f0b1d","UserEmail":"engineer@example.com","DeviceSecret":"{}","Edge":["edge.example.com:7844","198.51.100.7:7844"],"EdgeCAFingerprint":"{}","DefaultVirtualNetwork":"09090909-0909-0909-0909-090909090909"}}"#,
        base64::engine::general_purpose::STANDARD.encode((100u8..132).collect::<Vec<_>>()),
        "5c".repeat(32)
    );
    assert_eq!(json.as_str(), expected);
    let back = DeviceCredentials::from_json(json.as_bytes()).unwrap();
    assert_eq!(back, d);
    assert_eq!(back.to_json().as_str(), expected);

    let no_vnet = DeviceCredentials {
        default_vnet: None,
        ..device()
    };
    let json = no_vnet.to_json();
    assert!(!json.contains("DefaultVirtualNetwork"));
    assert_eq!(
        DeviceCredentials::from_json(json.as_bytes()).unwrap(),
        no_vnet
    );
}
