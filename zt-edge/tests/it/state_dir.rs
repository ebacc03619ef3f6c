//! The state directory: creation, restart persistence, file modes, rotation, and refusal of
//! damaged or incomplete state. TLS checks use real rustls handshakes over loopback TCP.

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use zt_edge::{
    EdgeState, OpenDbError, ServerIdentity, ServerNames, StateError, StateOptions, Tunnel,
    CLOUDFLARED_H2_SERVER_NAME, CLOUDFLARED_SERVER_NAME, DEFAULT_VNET_NAME,
};

const STATE_FILES: [&str; 7] = [
    "edge.json",
    "ca.pem",
    "ca.key",
    "server.pem",
    "server.key",
    "admin-token",
    "state.redb",
];

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Serves one TLS handshake with `identity` on loopback and connects to it as a client that
/// trusts only `ca_pem`, asking for `name`. Returns the chain the client saw, or the
/// client's error.
fn handshake(
    identity: &ServerIdentity,
    ca_pem: &str,
    name: &str,
) -> Result<Vec<CertificateDer<'static>>, rustls::Error> {
    use rustls_pki_types::pem::PemObject;
    let server_config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(identity.cert_chain().to_vec(), identity.private_key())
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        let conn = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let mut buf = [0u8; 5];
        // The client's failure closes the socket; either outcome ends the thread.
        if tls.read_exact(&mut buf).is_ok() {
            let _ = tls.write_all(&buf);
        }
    });
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(client_config), server_name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
    let result = (|| {
        tls.write_all(b"hello")?;
        let mut echo = [0u8; 5];
        tls.read_exact(&mut echo)?;
        assert_eq!(&echo, b"hello");
        Ok::<_, std::io::Error>(())
    })();
    let outcome = match result {
        Ok(()) => Ok(tls.conn.peer_certificates().unwrap().to_vec()),
        Err(e) => Err(e
            .into_inner()
            .and_then(|inner| inner.downcast::<rustls::Error>().ok())
            .map(|b| *b)
            .unwrap_or(rustls::Error::General("i/o".into()))),
    };
    drop(tls);
    server.join().unwrap();
    outcome
}

#[test]
fn first_start_creates_private_files_and_a_working_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("edge");
    let state = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap();

    assert_eq!(mode(&dir), 0o700);
    for f in STATE_FILES {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    let tag = state.account_tag();
    assert_eq!(tag.len(), 32);
    assert!(tag
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_eq!(state.ca_fingerprint(), sha256_hex(state.ca_cert_der()));
    assert_eq!(
        fs::read_to_string(state.ca_pem_path()).unwrap(),
        state.ca_pem()
    );
    let token = fs::read_to_string(state.admin_token_path()).unwrap();
    assert!(state.admin_token().verify(token.trim_end()));
    assert!(!state.admin_token().verify("not the token"));
    assert!(!format!("{:?}", state.admin_token()).contains(token.trim_end()));
    assert!(!format!("{state:?}").contains(token.trim_end()));

    // The CA's subject names the account.
    let ca = x509_parser::parse_x509_certificate(state.ca_cert_der())
        .unwrap()
        .1;
    assert!(ca
        .subject()
        .to_string()
        .contains(&format!("zt edge CA {}", &tag[..8])));

    let identity = state.server_identity();
    let names = identity.names();
    assert!(names.dns.contains(&"localhost".to_owned()));
    assert!(names.ips.contains(&IpAddr::from([127, 0, 0, 1])));
    assert!(names.ips.contains(&"::1".parse::<IpAddr>().unwrap()));
    for name in ["localhost", "127.0.0.1", "::1"] {
        let chain = handshake(&identity, state.ca_pem(), name).unwrap();
        // The pin: SHA-256 of the CA in the chain the client received.
        assert_eq!(sha256_hex(chain.last().unwrap()), state.ca_fingerprint());
    }
    // A name the certificate does not carry is refused by the client.
    assert!(handshake(&identity, state.ca_pem(), "elsewhere.example").is_err());

    let db = state.db();
    let vnet = db.read().unwrap().default_vnet().unwrap().unwrap();
    assert_eq!(vnet.name, DEFAULT_VNET_NAME);
}

#[test]
fn state_survives_restart_and_rotation_keeps_the_pin() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("edge");
    let (tag, fingerprint, leaf, token, tunnel_id) = {
        let state = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap();
        let secret = zt_creds::TunnelSecret::generate();
        let tunnel = Tunnel::new("prod", state.account_tag(), &secret);
        state.db().update(|t| t.put(&tunnel)).unwrap();
        (
            state.account_tag().to_owned(),
            state.ca_fingerprint().to_owned(),
            state.server_identity().cert_chain()[0].clone(),
            state.admin_token().expose().to_owned(),
            tunnel.id,
        )
    };

    let state = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap();
    assert_eq!(state.account_tag(), tag);
    assert_eq!(state.ca_fingerprint(), fingerprint);
    assert_eq!(state.server_identity().cert_chain()[0], leaf);
    assert_eq!(state.admin_token().expose(), token);
    let tunnel: Tunnel = state.db().read().unwrap().get(tunnel_id).unwrap().unwrap();
    assert_eq!(tunnel.name, "prod");

    let rotated = state.rotate_server_cert().unwrap();
    assert_ne!(rotated.cert_chain()[0], leaf);
    assert_eq!(state.ca_fingerprint(), fingerprint);
    handshake(&rotated, state.ca_pem(), "localhost").unwrap();
    drop(state);

    let state = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap();
    assert_eq!(state.ca_fingerprint(), fingerprint);
    assert_eq!(
        state.server_identity().cert_chain()[0],
        rotated.cert_chain()[0]
    );
}

#[test]
fn new_server_names_reissue_under_the_same_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("edge");
    let first = ServerNames {
        dns: vec!["edge-a.example".into()],
        ips: vec![IpAddr::from([127, 0, 0, 7])],
    };
    let state = EdgeState::open_or_init(
        &dir,
        &StateOptions::default().with_server_names(first.clone()),
    )
    .unwrap();
    let fingerprint = state.ca_fingerprint().to_owned();
    let leaf = state.server_identity().cert_chain()[0].clone();
    handshake(&state.server_identity(), state.ca_pem(), "edge-a.example").unwrap();
    assert!(handshake(&state.server_identity(), state.ca_pem(), "localhost").is_err());
    drop(state);

    // Same names: nothing reissued.
    let state =
        EdgeState::open_or_init(&dir, &StateOptions::default().with_server_names(first)).unwrap();
    assert_eq!(state.server_identity().cert_chain()[0], leaf);
    drop(state);

    let second = ServerNames {
        dns: vec!["edge-b.example".into()],
        ips: vec![],
    };
    let state =
        EdgeState::open_or_init(&dir, &StateOptions::default().with_server_names(second)).unwrap();
    assert_eq!(state.ca_fingerprint(), fingerprint);
    handshake(&state.server_identity(), state.ca_pem(), "edge-b.example").unwrap();
    assert!(handshake(&state.server_identity(), state.ca_pem(), "edge-a.example").is_err());
}

#[test]
fn cloudflared_certificate_is_issued_once_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("edge");
    let state = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap();
    let cf = state.cloudflared_identity().unwrap();
    let mut names = cf.names().dns.clone();
    names.sort();
    assert_eq!(
        names,
        vec![
            CLOUDFLARED_H2_SERVER_NAME.to_owned(),
            CLOUDFLARED_SERVER_NAME.to_owned()
        ]
    );
    assert_eq!(
        state.cloudflared_identity().unwrap().cert_chain()[0],
        cf.cert_chain()[0]
    );
    handshake(&cf, state.ca_pem(), CLOUDFLARED_SERVER_NAME).unwrap();
    handshake(&cf, state.ca_pem(), CLOUDFLARED_H2_SERVER_NAME).unwrap();
    assert_eq!(mode(&dir.join("cloudflared.pem")), 0o600);
    assert_eq!(mode(&dir.join("cloudflared.key")), 0o600);
    drop(state);

    let state = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap();
    assert_eq!(
        state.cloudflared_identity().unwrap().cert_chain()[0],
        cf.cert_chain()[0]
    );
}

/// Opens, applies `damage`, reopens, and returns the error; then undoes the damage and
/// checks that the state opens with the same pin, so a refusal never re-initialised.
fn refusal(damage: impl FnOnce(&Path), undo: impl FnOnce(&Path)) -> StateError {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("edge");
    let fingerprint = EdgeState::open_or_init(&dir, &StateOptions::default())
        .unwrap()
        .ca_fingerprint()
        .to_owned();
    damage(&dir);
    let err = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap_err();
    undo(&dir);
    let state = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap();
    assert_eq!(state.ca_fingerprint(), fingerprint);
    err
}

/// Replaces a file's content, returning a closure that restores it.
fn replace(file: &'static str, content: &'static [u8]) -> (impl FnOnce(&Path), impl FnOnce(&Path)) {
    let saved = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s1 = saved.clone();
    (
        move |dir: &Path| {
            *s1.lock().unwrap() = fs::read(dir.join(file)).unwrap();
            fs::write(dir.join(file), content).unwrap();
        },
        move |dir: &Path| fs::write(dir.join(file), &*saved.lock().unwrap()).unwrap(),
    )
}

fn assert_corrupt(err: StateError, file: &str, reason_part: &str) {
    let text = err.to_string();
    match err {
        StateError::Corrupt { path, reason } => {
            assert_eq!(path.file_name().unwrap(), file, "{text}");
            assert!(reason.contains(reason_part), "{text}");
        }
        other => panic!("expected Corrupt for {file}, got {other:?}"),
    }
}

#[test]
fn damaged_files_are_refused_by_name() {
    let (d, u) = replace("ca.pem", b"garbage\n");
    assert_corrupt(refusal(d, u), "ca.pem", "no certificate");
    let (d, u) = replace(
        "ca.key",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    assert_corrupt(refusal(d, u), "ca.key", "private key");
    let (d, u) = replace("server.pem", b"");
    assert_corrupt(refusal(d, u), "server.pem", "no certificate");
    let (d, u) = replace("admin-token", b"short\n");
    assert_corrupt(refusal(d, u), "admin-token", "64 lowercase hex");
    let (d, u) = replace("edge.json", b"{\"format\":1");
    assert_corrupt(refusal(d, u), "edge.json", "EOF");
    let (d, u) = replace("edge.json", b"{\"format\":9,\"account_tag\":\"00000000000000000000000000000000\",\"created_at\":\"2026-01-01T00:00:00Z\"}");
    assert_corrupt(refusal(d, u), "edge.json", "format 9");

    let (d, u) = replace(
        "state.redb",
        b"this is not a database at all, but it is long enough to look like one maybe",
    );
    match refusal(d, u) {
        StateError::Database(OpenDbError::Corrupt { path, .. }) => {
            assert_eq!(path.file_name().unwrap(), "state.redb")
        }
        other => panic!("expected a corrupt database, got {other:?}"),
    }
}

#[test]
fn keys_that_do_not_match_are_refused() {
    // Another edge's CA key in place of this one's.
    let other = tempfile::tempdir().unwrap();
    EdgeState::open_or_init(other.path().join("e"), &StateOptions::default()).unwrap();
    let other_ca_key = fs::read(other.path().join("e/ca.key")).unwrap();
    let other_server = fs::read(other.path().join("e/server.pem")).unwrap();
    let saved = Arc::new(std::sync::Mutex::new(Vec::new()));

    let (s1, s2) = (saved.clone(), saved.clone());
    let key = other_ca_key.clone();
    let err = refusal(
        move |dir| {
            *s1.lock().unwrap() = fs::read(dir.join("ca.key")).unwrap();
            fs::write(dir.join("ca.key"), &key).unwrap();
        },
        move |dir| fs::write(dir.join("ca.key"), &*s2.lock().unwrap()).unwrap(),
    );
    assert_corrupt(err, "ca.key", "does not match");

    let (s1, s2) = (saved.clone(), saved.clone());
    let err = refusal(
        move |dir| {
            *s1.lock().unwrap() = fs::read(dir.join("server.pem")).unwrap();
            fs::write(dir.join("server.pem"), &other_server).unwrap();
        },
        move |dir| fs::write(dir.join("server.pem"), &*s2.lock().unwrap()).unwrap(),
    );
    assert_corrupt(err, "server.pem", "not issued by this edge's CA");

    // This edge's own server key swapped for its CA key: right CA, wrong key.
    let (s1, s2) = (saved.clone(), saved);
    let err = refusal(
        move |dir| {
            *s1.lock().unwrap() = fs::read(dir.join("server.key")).unwrap();
            fs::copy(dir.join("ca.key"), dir.join("server.key")).unwrap();
        },
        move |dir| fs::write(dir.join("server.key"), &*s2.lock().unwrap()).unwrap(),
    );
    assert_corrupt(err, "server.key", "does not match");
}

#[test]
fn loose_permissions_are_refused() {
    for (file, loose) in [
        ("ca.key", 0o644),
        ("admin-token", 0o640),
        ("state.redb", 0o604),
    ] {
        let err = refusal(
            |dir| fs::set_permissions(dir.join(file), fs::Permissions::from_mode(loose)).unwrap(),
            |dir| fs::set_permissions(dir.join(file), fs::Permissions::from_mode(0o600)).unwrap(),
        );
        match err {
            StateError::Permissions {
                path,
                mode,
                expected,
            } => {
                assert_eq!(path.file_name().unwrap(), file);
                assert_eq!(mode, loose);
                assert_eq!(expected, 0o600);
            }
            other => panic!("expected Permissions for {file}, got {other:?}"),
        }
    }
    let err = refusal(
        |dir| fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap(),
        |dir| fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap(),
    );
    assert!(
        matches!(
            err,
            StateError::Permissions {
                mode: 0o755,
                expected: 0o700,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("chmod 700"), "{err}");
}

#[test]
fn incomplete_directories_are_refused_not_reinitialised() {
    // A file missing from an initialised directory.
    let saved = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (s1, s2) = (saved.clone(), saved);
    let err = refusal(
        move |dir| {
            *s1.lock().unwrap() = fs::read(dir.join("server.key")).unwrap();
            fs::remove_file(dir.join("server.key")).unwrap();
        },
        move |dir| {
            fs::write(dir.join("server.key"), &*s2.lock().unwrap()).unwrap();
            fs::set_permissions(dir.join("server.key"), fs::Permissions::from_mode(0o600)).unwrap();
        },
    );
    assert!(matches!(err, StateError::Incomplete { .. }), "{err:?}");
    assert!(err.to_string().contains("server.key"), "{err}");

    // The marker lost: the CA is still there, so no new one may be made.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("edge");
    let ca = EdgeState::open_or_init(&dir, &StateOptions::default())
        .unwrap()
        .ca_pem()
        .to_owned();
    fs::remove_file(dir.join("edge.json")).unwrap();
    let err = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap_err();
    assert!(matches!(err, StateError::Incomplete { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("edge.json") && text.contains("ca.pem"),
        "{text}"
    );
    assert_eq!(fs::read_to_string(dir.join("ca.pem")).unwrap(), ca);
}

#[test]
fn a_second_edge_on_the_same_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("edge");
    let _first = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap();
    let err = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap_err();
    assert!(
        matches!(err, StateError::Database(OpenDbError::Locked { .. })),
        "{err:?}"
    );
}

#[test]
fn an_empty_existing_directory_is_initialised_and_tightened() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mount");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap();
    assert_eq!(mode(&dir), 0o700);
}

#[test]
fn a_server_certificate_needs_at_least_one_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("edge");
    let err = EdgeState::open_or_init(
        &dir,
        &StateOptions::default().with_server_names(ServerNames::default()),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            StateError::Issue {
                what: "the server certificate",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("no DNS name or IP address"),
        "{err}"
    );
    // The failed first start left files behind; the next start says so instead of
    // creating a second CA.
    let err = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap_err();
    assert!(matches!(err, StateError::Incomplete { .. }), "{err:?}");
}

#[test]
fn concurrent_rotations_leave_a_matching_certificate_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("edge");
    let state = Arc::new(EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let state = state.clone();
            std::thread::spawn(move || {
                for _ in 0..3 {
                    state.rotate_server_cert().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let current = state.server_identity().cert_chain()[0].clone();
    drop(state);
    // The files on disk are the last pair issued, and they belong together (the load checks
    // that the key matches the certificate).
    let state = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap();
    assert_eq!(state.server_identity().cert_chain()[0], current);
    handshake(&state.server_identity(), state.ca_pem(), "localhost").unwrap();
    // No temporary file was left behind.
    let leftovers: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
