//! The secret never shows: not in any `Debug` or `Display`, not in any error (with its
//! sources), not in any log line — including errors and logs produced while reading
//! documents and files that contain the secret in every wrong place.
#![cfg(unix)]

use std::fmt::Debug;

use crate::common::{capture_logs, chain, chmod};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use zt_creds::{
    CaFingerprint, DeviceCredentials, ExistingFile, PermissionMode, TunnelCredentials,
    TunnelSecret, TunnelToken,
};

/// Printable bytes, so that a raw copy inside a string would be found.
const PRINTABLE: &[u8; 32] = b"ZT-CANARY-raw-bytes-0123456789!?";
/// Binary bytes, whose base64 holds `+` and `/`, so URL-safe base64 differs from it.
const BINARY: [u8; 32] = [
    0xfb, 0xff, 0xbf, 0x00, 0x01, 0xfe, 0xef, 0x3e, 0x3f, 0xf8, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60,
    0x70, 0x80, 0x90, 0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0, 0x0f, 0x1f, 0x2f, 0x3f, 0x4f, 0x5f, 0x6f,
];

/// Every spelling of the secret that must never appear.
fn spellings(secret: &[u8]) -> Vec<String> {
    let mut out = vec![
        STANDARD.encode(secret),
        STANDARD_NO_PAD.encode(secret),
        URL_SAFE.encode(secret),
        URL_SAFE_NO_PAD.encode(secret),
        secret.iter().map(|b| format!("{b:02x}")).collect(),
        secret.iter().map(|b| format!("{b:02X}")).collect(),
        format!("{secret:?}"),
    ];
    if let Ok(raw) = std::str::from_utf8(secret) {
        out.push(raw.to_owned());
    }
    out
}

/// Fails if `text` contains any spelling of the secret, or any 12-character run of one
/// (a prefix or a fragment is a leak too).
fn assert_clean(secret: &[u8], what: &str, text: &str) {
    for spelling in spellings(secret) {
        let chars: Vec<char> = spelling.chars().collect();
        for window in chars.windows(12) {
            let fragment: String = window.iter().collect();
            assert!(
                !text.contains(&fragment),
                "{what} leaks a fragment {fragment:?} of the secret: {text}"
            );
        }
    }
}

fn all_forms<T: Debug + std::fmt::Display>(v: &T) -> String {
    format!("{v:?}\n{v}\n{v:#?}")
}

fn error_forms(e: &(dyn std::error::Error + 'static)) -> String {
    format!("{e:?}\n{e:#?}\n{}", chain(e))
}

/// Documents that hold the secret in a wrong or broken place, each of which must fail.
fn bad_documents(secret: &[u8]) -> Vec<String> {
    let b64 = STANDARD.encode(secret);
    let url = URL_SAFE.encode(secret);
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let half = &b64[..b64.len() / 2];
    let rest = &b64[b64.len() / 2..];
    let acct = r#""AccountTag":"0123456789abcdef0123456789abcdef""#;
    let id = r#""TunnelID":"8e343b13-a087-48ea-825f-9783931ff2a5""#;
    let mut long = secret.to_vec();
    long.extend_from_slice(secret);
    long.extend_from_slice(secret);
    long.extend_from_slice(secret);
    long.extend_from_slice(secret);
    let mut docs = vec![
        // In the wrong field.
        format!(r#"{{{acct},"TunnelSecret":"{b64}","TunnelID":"{b64}"}}"#),
        format!(r#"{{"AccountTag":["{b64}"],"TunnelSecret":"{b64}",{id}}}"#),
        format!(r#"{{{acct},"TunnelSecret":"{b64}","TunnelID":"{hex}"}}"#),
        format!(r#"{{{acct},"TunnelSecret":"{b64}",{id},"TunnelName":["{b64}"]}}"#),
        // Broken encodings of it.
        format!(r#"{{{acct},"TunnelSecret":"{b64}!",{id}}}"#),
        format!(
            r#"{{{acct},"TunnelSecret":"{}",{id}}}"#,
            STANDARD.encode(&secret[..31])
        ),
        format!(
            r#"{{{acct},"TunnelSecret":"{}",{id}}}"#,
            STANDARD.encode(&long[..129])
        ),
        format!(r#"{{{acct},"TunnelSecret":["{b64}"],{id}}}"#),
        // Broken JSON around it.
        format!(r#"{{{acct},"TunnelSecret":"{b64}"#),
        format!(r#"{{{acct},"TunnelSecret":"{half}\q{rest}",{id}}}"#),
        format!("{{{acct},\"TunnelSecret\":\"{half}\n{rest}\",{id}}}"),
        format!(r#"{{{acct},"TunnelSecret":"{b64}" {id}}}"#),
        format!(r#"["{b64}"]"#),
        format!(r#""{b64}""#),
        format!(r#"{{{acct},"TunnelSecret":"{b64}",{id}}} "{b64}""#),
        // Valid secret, other field missing.
        format!(r#"{{"TunnelSecret":"{b64}",{id}}}"#),
        format!(r#"{{{acct},"TunnelSecret":"{b64}"}}"#),
    ];
    // URL-safe base64 is refused only where it differs from the standard alphabet.
    if url != b64 {
        docs.push(format!(r#"{{{acct},"TunnelSecret":"{url}",{id}}}"#));
    }
    docs
}

fn check_secret(secret_bytes: &[u8]) {
    let secret = TunnelSecret::from_bytes(secret_bytes).unwrap();
    let clean = |what: &str, text: &str| assert_clean(secret_bytes, what, text);
    let b64 = STANDARD.encode(secret_bytes);

    // The values themselves.
    clean("TunnelSecret", &all_forms(&secret));
    clean("AuthKey", &all_forms(&secret.derive_auth_key()));
    let creds = TunnelCredentials {
        account_tag: "0123456789abcdef0123456789abcdef".into(),
        tunnel_id: uuid::Uuid::from_bytes([3; 16]),
        tunnel_name: Some("tunnel".into()),
        secret: secret.clone(),
        endpoint: Some("fed".into()),
    };
    clean("TunnelCredentials", &format!("{creds:?}\n{creds:#?}"));
    let token = TunnelToken {
        edge: vec!["edge.example.com:7844".into()],
        ca_fingerprint: Some(CaFingerprint::of_der(b"ca")),
        ..TunnelToken::from_credentials(creds.clone())
    };
    clean("TunnelToken", &format!("{token:?}\n{token:#?}"));
    let device = DeviceCredentials {
        device_id: uuid::Uuid::from_bytes([4; 16]),
        user_email: "engineer@example.com".into(),
        auth: zt_creds::DeviceAuth::Secret(secret.clone()),
        edge: vec!["edge.example.com:7844".into()],
        ca_fingerprint: CaFingerprint::of_der(b"ca"),
        default_vnet: None,
        identity_provider: None,
        service_token: None,
    };
    clean("DeviceCredentials", &format!("{device:?}\n{device:#?}"));
    // The serialised forms do hold it (they are meant to); make sure the check can fail.
    assert!(creds.to_json().contains(&b64));

    let dir = tempfile::tempdir().unwrap();
    let (_, log) = capture_logs(|| {
        for (i, doc) in bad_documents(secret_bytes).iter().enumerate() {
            let what = format!("credentials document {i}");
            let e = TunnelCredentials::from_json(doc.as_bytes()).unwrap_err();
            clean(&what, &error_forms(&e));

            // The same document as a token payload, as device credentials, and as a file.
            let token = STANDARD.encode(
                doc.replace("AccountTag", "a")
                    .replace("TunnelSecret", "s")
                    .replace("TunnelID", "t"),
            );
            // (A token has no TunnelName, so the document with a bad one is a good token.)
            if let Err(e) = TunnelToken::parse(&token) {
                clean(&format!("token {i}"), &error_forms(&e));
            }
            let e = DeviceCredentials::from_json(
                doc.replace("TunnelSecret", "DeviceSecret").as_bytes(),
            )
            .unwrap_err();
            clean(&format!("device document {i}"), &error_forms(&e));

            let path = dir.path().join(format!("bad-{i}.json"));
            std::fs::write(&path, doc).unwrap();
            chmod(&path, 0o600);
            let e = TunnelCredentials::load(&path, PermissionMode::Strict).unwrap_err();
            clean(&format!("file {i}"), &error_forms(&e));
        }

        // Tokens broken at the base64 level, and too long, made of the secret.
        for token in [
            format!("{b64}!"),
            b64.repeat(400),
            URL_SAFE.encode(secret_bytes),
        ] {
            if let Err(e) = TunnelToken::parse(&token) {
                clean("token", &error_forms(&e));
            }
        }

        // A good file refused for its mode, and good documents with the secret in an
        // unknown key or after a BOM: these log but must not log the secret.
        let path = dir.path().join("world.json");
        creds.write(&path, ExistingFile::Refuse).unwrap();
        chmod(&path, 0o644);
        let e = TunnelCredentials::load(&path, PermissionMode::Default).unwrap_err();
        clean("permission error", &error_forms(&e));
        assert!(TunnelCredentials::load(&path, PermissionMode::Lenient).is_ok());
        let e = creds.write(&path, ExistingFile::Refuse).unwrap_err();
        clean("write error", &error_forms(&e));
        let e = creds
            .write(dir.path().join("no/such/dir.json"), ExistingFile::Refuse)
            .unwrap_err();
        clean("write error", &error_forms(&e));

        let mut extra = creds
            .to_json()
            .replace('}', &format!(r#","Extra":"{b64}","More":["{b64}"]}}"#));
        extra.insert(0, '\u{feff}');
        assert!(TunnelCredentials::from_json(extra.as_bytes()).is_ok());
    });
    assert!(
        log.contains("ignoring unknown key") && log.contains("byte-order mark"),
        "{log}"
    );
    clean("log", &log);
}

#[test]
fn a_printable_secret_never_shows() {
    check_secret(PRINTABLE);
}

#[test]
fn a_binary_secret_never_shows() {
    check_secret(&BINARY);
}

#[test]
fn the_checker_finds_leaks() {
    // Guard against a checker that can never fail.
    let b64 = STANDARD.encode(PRINTABLE);
    let hex: String = BINARY.iter().map(|b| format!("{b:02x}")).collect();
    let probes: [(&[u8], String); 4] = [
        (PRINTABLE, format!("x{b64}y")),
        (PRINTABLE, b64[3..20].to_owned()),
        (PRINTABLE, "ZT-CANARY-raw-bytes".to_owned()),
        (&BINARY, hex[10..30].to_owned()),
    ];
    for (secret, leaked) in probes {
        let caught = std::panic::catch_unwind(|| assert_clean(secret, "probe", &leaked));
        assert!(caught.is_err(), "not caught: {leaked}");
    }
}
