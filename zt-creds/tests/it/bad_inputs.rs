//! Every kind of bad input, each with the exact error it must produce: documents (file and
//! token payloads), tokens, and files (size, type, permissions).
#![cfg(unix)]

use std::path::Path;

use crate::common::{capture_logs, chmod, CLOUDFLARED_JSON};
use base64::Engine as _;
use zt_creds::{
    DeviceCredentials, FingerprintError, LoadError, ParseError, PermissionMode, SecretLengthError,
    TokenError, TunnelCredentials, TunnelToken, MAX_CREDENTIALS_FILE_LEN, MAX_TOKEN_LEN,
};

const ACCT: &str = r#""AccountTag":"0123456789abcdef0123456789abcdef""#;
const SECRET: &str = r#""TunnelSecret":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=""#;
const ID: &str = r#""TunnelID":"8e343b13-a087-48ea-825f-9783931ff2a5""#;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn obj(fields: &[&str]) -> String {
    format!("{{{}}}", fields.join(","))
}

/// (what, document, expected error)
fn credential_cases() -> Vec<(&'static str, String, ParseError)> {
    use ParseError::*;
    let secret_field = |s: String| format!(r#""TunnelSecret":{s}"#);
    vec![
        ("empty file", String::new(), Empty),
        ("only whitespace", " \n\t\r\n".into(), Empty),
        ("a BOM and nothing else", "\u{feff}".into(), Empty),
        (
            "not JSON",
            "AccountTag: x".into(),
            Syntax {
                line: 1,
                column: 1,
                reason: "expected value".into(),
            },
        ),
        (
            "two BOMs",
            format!("\u{feff}\u{feff}{CLOUDFLARED_JSON}"),
            Syntax {
                line: 1,
                column: 1,
                reason: "expected value".into(),
            },
        ),
        (
            "missing comma on line 3",
            format!("{{\n  {ACCT},\n  {SECRET}\n  {ID}\n}}"),
            Syntax {
                line: 4,
                column: 3,
                reason: "expected `,` or `}`".into(),
            },
        ),
        (
            "truncated",
            format!("{{{ACCT},{SECRET}"),
            Syntax {
                line: 1,
                column: 110,
                reason: "EOF while parsing an object".into(),
            },
        ),
        (
            "trailing garbage",
            format!("{CLOUDFLARED_JSON} x"),
            Syntax {
                line: 1,
                column: 200,
                reason: "trailing characters".into(),
            },
        ),
        (
            "an array",
            format!("[{CLOUDFLARED_JSON}]"),
            NotAnObject { found: "an array" },
        ),
        (
            "a string",
            r#""{}""#.into(),
            NotAnObject { found: "a string" },
        ),
        ("null", "null".into(), NotAnObject { found: "null" }),
        (
            "missing AccountTag",
            obj(&[SECRET, ID]),
            MissingField {
                field: "AccountTag",
            },
        ),
        (
            "missing TunnelSecret",
            obj(&[ACCT, ID]),
            MissingField {
                field: "TunnelSecret",
            },
        ),
        (
            "missing TunnelID",
            obj(&[ACCT, SECRET]),
            MissingField { field: "TunnelID" },
        ),
        (
            "empty object",
            "{}".into(),
            MissingField {
                field: "AccountTag",
            },
        ),
        (
            "AccountTag a number",
            obj(&[r#""AccountTag":42"#, SECRET, ID]),
            WrongType {
                field: "AccountTag",
                expected: "a string",
                found: "a number",
            },
        ),
        (
            "AccountTag null",
            obj(&[r#""AccountTag":null"#, SECRET, ID]),
            WrongType {
                field: "AccountTag",
                expected: "a string",
                found: "null",
            },
        ),
        (
            "AccountTag empty",
            obj(&[r#""AccountTag":"""#, SECRET, ID]),
            EmptyField {
                field: "AccountTag",
            },
        ),
        (
            "TunnelSecret an array of bytes",
            obj(&[ACCT, r#""TunnelSecret":[0,1,2]"#, ID]),
            WrongType {
                field: "TunnelSecret",
                expected: "a base64 string",
                found: "an array",
            },
        ),
        (
            "TunnelID a number",
            obj(&[ACCT, SECRET, r#""TunnelID":123"#]),
            WrongType {
                field: "TunnelID",
                expected: "a UUID string",
                found: "a number",
            },
        ),
        (
            "TunnelName an object",
            obj(&[ACCT, SECRET, ID, r#""TunnelName":{}"#]),
            WrongType {
                field: "TunnelName",
                expected: "a string",
                found: "an object",
            },
        ),
        (
            "Endpoint a boolean",
            obj(&[ACCT, SECRET, ID, r#""Endpoint":true"#]),
            WrongType {
                field: "Endpoint",
                expected: "a string",
                found: "a boolean",
            },
        ),
        (
            "TunnelID not a UUID",
            obj(&[ACCT, SECRET, r#""TunnelID":"k8s_zero_trust_tunnel""#]),
            NotUuid { field: "TunnelID" },
        ),
        (
            "TunnelID one digit short",
            obj(&[
                ACCT,
                SECRET,
                r#""TunnelID":"8e343b13-a087-48ea-825f-9783931ff2a""#,
            ]),
            NotUuid { field: "TunnelID" },
        ),
        (
            "secret not base64",
            obj(&[ACCT, &secret_field(r#""not base64 at all!""#.into()), ID]),
            NotBase64 {
                field: "TunnelSecret",
                url_safe_chars: false,
            },
        ),
        (
            "secret in URL-safe base64",
            obj(&[
                ACCT,
                &secret_field(format!(
                    "\"{}\"",
                    base64::engine::general_purpose::URL_SAFE.encode([0xfb; 32])
                )),
                ID,
            ]),
            NotBase64 {
                field: "TunnelSecret",
                url_safe_chars: true,
            },
        ),
        (
            "31-byte secret",
            obj(&[ACCT, &secret_field(format!("\"{}\"", b64(&[7; 31]))), ID]),
            SecretLength {
                field: "TunnelSecret",
                source: SecretLengthError { found: 31 },
            },
        ),
        (
            "129-byte secret",
            obj(&[ACCT, &secret_field(format!("\"{}\"", b64(&[7; 129]))), ID]),
            SecretLength {
                field: "TunnelSecret",
                source: SecretLengthError { found: 129 },
            },
        ),
        (
            "empty secret",
            obj(&[ACCT, &secret_field(r#""""#.into()), ID]),
            SecretLength {
                field: "TunnelSecret",
                source: SecretLengthError { found: 0 },
            },
        ),
    ]
}

#[test]
fn bad_credential_documents_give_their_exact_error() {
    for (what, doc, expected) in credential_cases() {
        let got = TunnelCredentials::from_json(doc.as_bytes()).unwrap_err();
        assert_eq!(got, expected, "{what}");
    }
}

#[test]
fn bad_credential_files_give_their_exact_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (what, doc, expected)) in credential_cases().into_iter().enumerate() {
        let path = dir.path().join(format!("case-{i}.json"));
        std::fs::write(&path, &doc).unwrap();
        chmod(&path, 0o600);
        match TunnelCredentials::load(&path, PermissionMode::Default) {
            Err(LoadError::Parse { path: p, source }) => {
                assert_eq!(p, path, "{what}");
                assert_eq!(source, expected, "{what}");
                let message = LoadError::Parse { path: p, source }.to_string();
                assert!(
                    message.starts_with(&path.display().to_string()),
                    "{message}"
                );
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn error_messages_name_the_field_and_position() {
    let e = TunnelCredentials::from_json(obj(&[ACCT, ID]).as_bytes()).unwrap_err();
    assert_eq!(e.to_string(), "field `TunnelSecret` is missing");
    let e = TunnelCredentials::from_json(b"{\n\"AccountTag\" \"x\"}").unwrap_err();
    assert_eq!(
        e.to_string(),
        "not valid JSON at line 2, column 14: expected `:`"
    );
    let e = TunnelCredentials::from_json(
        obj(&[ACCT, &format!(r#""TunnelSecret":"{}""#, b64(&[1; 31])), ID]).as_bytes(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "field `TunnelSecret`: secret is 31 bytes long; it must be 32 to 128 bytes"
    );
}

#[test]
fn bad_tokens_give_their_exact_error() {
    use ParseError::*;
    let token = |json: &str| b64(json.as_bytes());
    let a = r#""a":"0123456789abcdef0123456789abcdef""#;
    let s = r#""s":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=""#;
    let t = r#""t":"8e343b13-a087-48ea-825f-9783931ff2a5""#;
    let cases: Vec<(&str, String, TokenError)> = vec![
        ("empty", String::new(), TokenError::Empty),
        ("whitespace", " \n".into(), TokenError::Empty),
        (
            "too long",
            "A".repeat(MAX_TOKEN_LEN + 4),
            TokenError::TooLong {
                len: MAX_TOKEN_LEN + 4,
            },
        ),
        ("not base64", "eyJh!!".into(), TokenError::NotBase64),
        (
            "a credentials file, not a token",
            CLOUDFLARED_JSON.into(),
            TokenError::NotBase64,
        ),
        (
            "base64 of not-JSON",
            token("hello"),
            TokenError::Payload(Syntax {
                line: 1,
                column: 1,
                reason: "expected value".into(),
            }),
        ),
        (
            "base64 of an array",
            token("[]"),
            TokenError::Payload(NotAnObject { found: "an array" }),
        ),
        (
            "missing a",
            token(&obj(&[s, t])),
            TokenError::Payload(MissingField { field: "a" }),
        ),
        (
            "missing s",
            token(&obj(&[a, t])),
            TokenError::Payload(MissingField { field: "s" }),
        ),
        (
            "missing t",
            token(&obj(&[a, s])),
            TokenError::Payload(MissingField { field: "t" }),
        ),
        (
            "t not a UUID",
            token(&obj(&[a, s, r#""t":"tunnel""#])),
            TokenError::Payload(NotUuid { field: "t" }),
        ),
        (
            "s of 31 bytes",
            token(&obj(&[a, &format!(r#""s":"{}""#, b64(&[3; 31])), t])),
            TokenError::Payload(SecretLength {
                field: "s",
                source: SecretLengthError { found: 31 },
            }),
        ),
        (
            "s not base64",
            token(&obj(&[a, r#""s":"%%%""#, t])),
            TokenError::Payload(NotBase64 {
                field: "s",
                url_safe_chars: false,
            }),
        ),
        (
            "zt_edge a string",
            token(&obj(&[a, s, t, r#""zt_edge":"edge:7844""#])),
            TokenError::Payload(WrongType {
                field: "zt_edge",
                expected: "a list of \"host:port\" strings",
                found: "a string",
            }),
        ),
        (
            "zt_edge item without a port",
            token(&obj(&[a, s, t, r#""zt_edge":["edge:7844","edge"]"#])),
            TokenError::Payload(BadEdgeAddress {
                field: "zt_edge",
                index: 1,
                reason: "the address has no port (expected host:port)",
            }),
        ),
        (
            "zt_ca too short",
            token(&obj(&[a, s, t, r#""zt_ca":"abcd""#])),
            TokenError::Payload(NotFingerprint {
                field: "zt_ca",
                source: FingerprintError::WrongLength { found: 4 },
            }),
        ),
    ];
    for (what, input, expected) in cases {
        assert_eq!(TunnelToken::parse(&input).unwrap_err(), expected, "{what}");
    }
}

#[test]
fn bad_device_credentials_give_their_exact_error() {
    use ParseError::*;
    let id = r#""DeviceID":"3d0f6b2a-8c1e-4f5a-9b7d-2e4c6a8f0b1d""#;
    let email = r#""UserEmail":"engineer@example.com""#;
    let secret = r#""DeviceSecret":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=""#;
    let edge = r#""Edge":["edge.example.com:7844"]"#;
    let fp = format!(r#""EdgeCAFingerprint":"{}""#, "ab".repeat(32));
    let fp = fp.as_str();
    let cases: Vec<(&str, String, ParseError)> = vec![
        (
            "valid but for a bad vnet",
            obj(&[
                id,
                email,
                secret,
                edge,
                fp,
                r#""DefaultVirtualNetwork":"x""#,
            ]),
            NotUuid {
                field: "DefaultVirtualNetwork",
            },
        ),
        (
            "missing DeviceID",
            obj(&[email, secret, edge, fp]),
            MissingField { field: "DeviceID" },
        ),
        (
            "missing UserEmail",
            obj(&[id, secret, edge, fp]),
            MissingField { field: "UserEmail" },
        ),
        (
            "neither DeviceSecret nor DevicePrivateKey",
            obj(&[id, email, edge, fp]),
            OneOf {
                first: "DeviceSecret",
                second: "DevicePrivateKey",
                found: "neither is",
            },
        ),
        (
            "missing Edge",
            obj(&[id, email, secret, fp]),
            MissingField { field: "Edge" },
        ),
        (
            "missing EdgeCAFingerprint",
            obj(&[id, email, secret, edge]),
            MissingField {
                field: "EdgeCAFingerprint",
            },
        ),
        (
            "email without @",
            obj(&[id, r#""UserEmail":"engineer""#, secret, edge, fp]),
            NotEmail { field: "UserEmail" },
        ),
        (
            "email with an empty domain",
            obj(&[id, r#""UserEmail":"engineer@""#, secret, edge, fp]),
            NotEmail { field: "UserEmail" },
        ),
        (
            "email with an empty local part",
            obj(&[id, r#""UserEmail":"@example.com""#, secret, edge, fp]),
            NotEmail { field: "UserEmail" },
        ),
        (
            "empty edge list",
            obj(&[id, email, secret, r#""Edge":[]"#, fp]),
            EmptyList { field: "Edge" },
        ),
        (
            "edge list of numbers",
            obj(&[id, email, secret, r#""Edge":[7844]"#, fp]),
            WrongType {
                field: "Edge",
                expected: "a list of \"host:port\" strings",
                found: "a list holding a non-string",
            },
        ),
        (
            "unbracketed IPv6 edge",
            obj(&[id, email, secret, r#""Edge":["2001:db8::1:7844"]"#, fp]),
            BadEdgeAddress {
                field: "Edge",
                index: 0,
                reason: "an IPv6 address must be in brackets, as in [2001:db8::1]:7844",
            },
        ),
        (
            "fingerprint not hex",
            obj(&[
                id,
                email,
                secret,
                edge,
                &format!(r#""EdgeCAFingerprint":"{}""#, "zz".repeat(32)),
            ]),
            NotFingerprint {
                field: "EdgeCAFingerprint",
                source: FingerprintError::NotHex { position: 0 },
            },
        ),
        (
            "secret of 129 bytes",
            obj(&[
                id,
                email,
                &format!(r#""DeviceSecret":"{}""#, b64(&[1; 129])),
                edge,
                fp,
            ]),
            SecretLength {
                field: "DeviceSecret",
                source: SecretLengthError { found: 129 },
            },
        ),
    ];
    for (what, doc, expected) in cases {
        assert_eq!(
            DeviceCredentials::from_json(doc.as_bytes()).unwrap_err(),
            expected,
            "{what}"
        );
    }
}

fn write_valid(path: &Path, mode: u32) {
    std::fs::write(path, CLOUDFLARED_JSON).unwrap();
    chmod(path, mode);
}

#[test]
fn missing_files_directories_and_dangling_symlinks_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    match TunnelCredentials::load(&missing, PermissionMode::Default) {
        Err(LoadError::NotFound { path }) => assert_eq!(path, missing),
        other => panic!("{other:?}"),
    }

    let sub = dir.path().join("creds.json");
    std::fs::create_dir(&sub).unwrap();
    let e = TunnelCredentials::load(&sub, PermissionMode::Default).unwrap_err();
    assert!(
        matches!(&e, LoadError::Directory { path } if *path == sub),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!("{}: is a directory, not a credentials file", sub.display())
    );

    let link = dir.path().join("dangling.json");
    std::os::unix::fs::symlink("..data/tunnel.json", &link).unwrap();
    let e = TunnelCredentials::load(&link, PermissionMode::Default).unwrap_err();
    match &e {
        LoadError::DanglingSymlink { path, target } => {
            assert_eq!(*path, link);
            assert_eq!(target, Path::new("..data/tunnel.json"));
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("which does not exist"), "{e}");

    let socket_path = dir.path().join("socket.json");
    let _socket = std::os::unix::net::UnixListener::bind(&socket_path).unwrap();
    let e = TunnelCredentials::load(&socket_path, PermissionMode::Lenient).unwrap_err();
    assert!(
        matches!(&e, LoadError::NotRegularFile { path } if *path == socket_path),
        "{e:?}"
    );
}

#[test]
fn files_over_one_mebibyte_are_refused_and_the_limit_itself_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let at_limit = dir.path().join("at-limit.json");
    // The limit is on size alone: a file of exactly 1 MiB is read (and then found empty).
    let mut doc = CLOUDFLARED_JSON.as_bytes().to_vec();
    doc.resize(MAX_CREDENTIALS_FILE_LEN as usize, b' ');
    std::fs::write(&at_limit, &doc).unwrap();
    chmod(&at_limit, 0o600);
    assert!(TunnelCredentials::load(&at_limit, PermissionMode::Default).is_ok());

    let over = dir.path().join("over.json");
    doc.push(b' ');
    std::fs::write(&over, &doc).unwrap();
    chmod(&over, 0o600);
    match TunnelCredentials::load(&over, PermissionMode::Default) {
        Err(LoadError::TooLarge { path, size }) => {
            assert_eq!(path, over);
            assert_eq!(size, MAX_CREDENTIALS_FILE_LEN + 1);
        }
        other => panic!("{other:?}"),
    }
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Loads,
    LoadsWithWarning,
    OthersRefused,
    GroupRefused,
}

#[test]
fn permission_modes_are_enforced_per_policy() {
    use Outcome::*;
    use PermissionMode::*;
    let table: &[(u32, [Outcome; 3])] = &[
        // mode      Strict          Default           Lenient
        (0o600, [Loads, Loads, Loads]),
        (0o400, [Loads, Loads, Loads]),
        (0o640, [GroupRefused, LoadsWithWarning, LoadsWithWarning]),
        (0o440, [GroupRefused, LoadsWithWarning, LoadsWithWarning]),
        (0o660, [GroupRefused, LoadsWithWarning, LoadsWithWarning]),
        (0o604, [OthersRefused, OthersRefused, LoadsWithWarning]),
        (0o644, [OthersRefused, OthersRefused, LoadsWithWarning]),
        (0o666, [OthersRefused, OthersRefused, LoadsWithWarning]),
        (0o601, [OthersRefused, OthersRefused, LoadsWithWarning]),
        (0o602, [OthersRefused, OthersRefused, LoadsWithWarning]),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (mode, outcomes) in table {
        let path = dir.path().join(format!("tunnel-{mode:o}.json"));
        write_valid(&path, *mode);
        for (policy, expected) in [Strict, Default, Lenient].into_iter().zip(outcomes) {
            let (result, log) = capture_logs(|| TunnelCredentials::load(&path, policy));
            let got = match result {
                Ok(_) if log.contains("WARN") => LoadsWithWarning,
                Ok(_) => Loads,
                Err(LoadError::OthersCanAccess { path: p, mode: m }) => {
                    assert_eq!((&p, m), (&path, *mode));
                    OthersRefused
                }
                Err(LoadError::GroupCanAccess { path: p, mode: m }) => {
                    assert_eq!((&p, m), (&path, *mode));
                    GroupRefused
                }
                Err(e) => panic!("{mode:o} {policy}: {e}"),
            };
            assert_eq!(
                &got, expected,
                "mode {mode:04o}, policy {policy}, log {log}"
            );
            if got == LoadsWithWarning {
                assert!(log.contains(&format!("mode={mode:04o}")), "{log}");
            }
        }
    }
}

#[test]
fn the_refusal_says_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tunnel.json");
    write_valid(&path, 0o644);
    let e = TunnelCredentials::load(&path, PermissionMode::Default).unwrap_err();
    let p = path.display();
    assert_eq!(
        e.to_string(),
        format!(
            "{p}: has mode 0644, which gives other users access to it; fix it with `chmod 600 {p}`. \
             For a Kubernetes Secret volume, set `defaultMode: 0440` on the volume together \
             with the pod's `fsGroup`, or set `credentials-permissions: lenient`"
        )
    );
    // And the fix works.
    chmod(&path, 0o600);
    assert!(TunnelCredentials::load(&path, PermissionMode::Default).is_ok());

    write_valid(&path, 0o440);
    let e = TunnelCredentials::load(&path, PermissionMode::Strict).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("mode 0440") && text.contains(&format!("`chmod 600 {p}`")),
        "{text}"
    );
}

/// A Kubernetes Secret volume with `defaultMode: 0440`: the key is a symlink through
/// `..data` into a timestamped directory. The default policy loads it, with a warning.
#[test]
fn a_kubernetes_secret_volume_layout_loads() {
    let dir = tempfile::tempdir().unwrap();
    let stamped = dir.path().join("..2026_11_28_17_00_00.123456789");
    std::fs::create_dir(&stamped).unwrap();
    write_valid(&stamped.join("credentials.json"), 0o440);
    std::os::unix::fs::symlink("..2026_11_28_17_00_00.123456789", dir.path().join("..data"))
        .unwrap();
    let key = dir.path().join("credentials.json");
    std::os::unix::fs::symlink("..data/credentials.json", &key).unwrap();

    let (loaded, log) = capture_logs(|| TunnelCredentials::load(&key, PermissionMode::Default));
    assert_eq!(loaded.unwrap().to_json().as_str(), CLOUDFLARED_JSON);
    assert!(log.contains("WARN") && log.contains("mode=0440"), "{log}");
}

#[test]
fn permission_mode_parses_its_config_values() {
    assert_eq!(
        "strict".parse::<PermissionMode>().unwrap(),
        PermissionMode::Strict
    );
    assert_eq!(
        "default".parse::<PermissionMode>().unwrap(),
        PermissionMode::Default
    );
    assert_eq!(
        "lenient".parse::<PermissionMode>().unwrap(),
        PermissionMode::Lenient
    );
    assert_eq!(PermissionMode::default(), PermissionMode::Default);
    let e = "Lenient".parse::<PermissionMode>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "credentials-permissions is \"Lenient\"; expected strict, default or lenient"
    );
    let from_json: PermissionMode = serde_json::from_str("\"lenient\"").unwrap();
    assert_eq!(from_json, PermissionMode::Lenient);
    assert!(serde_json::from_str::<PermissionMode>("\"loose\"").is_err());
}
