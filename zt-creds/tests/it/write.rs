//! Atomic writes: mode 0600, no overwriting unless asked, nothing left behind on failure.
#![cfg(unix)]

use std::sync::{Arc, Barrier};

use crate::common::{chmod, list_dir, mode_of, CLOUDFLARED_JSON};
use zt_creds::{
    write_private_file, DeviceCredentials, ExistingFile, PermissionMode, TunnelCredentials,
    WriteError,
};

fn creds() -> TunnelCredentials {
    TunnelCredentials::from_json(CLOUDFLARED_JSON.as_bytes()).unwrap()
}

#[test]
fn written_files_have_mode_0600_and_exact_contents() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tunnel.json");
    creds().write(&path, ExistingFile::Refuse).unwrap();
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), CLOUDFLARED_JSON);
    assert_eq!(list_dir(dir.path()), ["tunnel.json"]);
    assert_eq!(
        TunnelCredentials::load(&path, PermissionMode::Strict).unwrap(),
        creds()
    );
}

#[test]
fn an_existing_file_is_never_overwritten_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tunnel.json");
    std::fs::write(&path, "precious").unwrap();
    match creds().write(&path, ExistingFile::Refuse) {
        Err(WriteError::AlreadyExists { path: p }) => assert_eq!(p, path),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    assert_eq!(list_dir(dir.path()), ["tunnel.json"]);

    // A dangling symlink counts as existing: writing through it could land anywhere.
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink("nowhere.json", &link).unwrap();
    assert!(matches!(
        creds().write(&link, ExistingFile::Refuse),
        Err(WriteError::AlreadyExists { .. })
    ));
    assert!(!dir.path().join("nowhere.json").exists());
}

#[test]
fn overwriting_when_asked_replaces_contents_and_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tunnel.json");
    std::fs::write(&path, "old").unwrap();
    chmod(&path, 0o644);
    creds().write(&path, ExistingFile::Replace).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), CLOUDFLARED_JSON);
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(list_dir(dir.path()), ["tunnel.json"]);
}

#[test]
fn failures_leave_no_temporary_file_behind() {
    let dir = tempfile::tempdir().unwrap();
    // Replacing a non-empty directory fails at the rename, after the temporary file was
    // written and synced.
    let target = dir.path().join("creds.json");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("inside"), "x").unwrap();
    match creds().write(&target, ExistingFile::Replace) {
        Err(WriteError::Io { path, step, .. }) => {
            assert_eq!(path, target);
            assert_eq!(step, "rename the temporary file into place");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(list_dir(dir.path()), ["creds.json"]);

    // A missing directory fails at the first step and names the path.
    let nowhere = dir.path().join("missing-dir").join("creds.json");
    let e = creds().write(&nowhere, ExistingFile::Refuse).unwrap_err();
    assert!(
        matches!(&e, WriteError::Io { path, step: "create a temporary file in its directory", .. } if *path == nowhere),
        "{e:?}"
    );
    assert!(e.to_string().starts_with(&nowhere.display().to_string()));

    // A path that names no file.
    assert!(matches!(
        write_private_file("/".as_ref(), b"x", ExistingFile::Replace),
        Err(WriteError::NotAFilePath { .. })
    ));
    assert_eq!(list_dir(dir.path()), ["creds.json"]);
}

#[test]
fn concurrent_writers_never_overwrite_each_other() {
    // Several writers race for one name without overwrite: exactly one wins, the file
    // holds the winner's bytes whole, and no temporary file remains.
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(dir.path().join("race.json"));
        let barrier = Arc::new(Barrier::new(4));
        let handles: Vec<_> = (0..4u8)
            .map(|i| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let contents = vec![b'a' + i; 4096];
                    barrier.wait();
                    (
                        i,
                        write_private_file(&path, &contents, ExistingFile::Refuse),
                    )
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<u8> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        for (_, r) in &results {
            if let Err(e) = r {
                assert!(matches!(e, WriteError::AlreadyExists { .. }), "{e:?}");
            }
        }
        assert_eq!(
            std::fs::read(&*path).unwrap(),
            vec![b'a' + winners[0]; 4096]
        );
        assert_eq!(list_dir(dir.path()), ["race.json"]);
    }
}

#[test]
fn device_credentials_write_and_load_like_tunnel_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.json");
    let device = DeviceCredentials {
        device_id: uuid::Uuid::from_bytes([1; 16]),
        user_email: "engineer@example.com".into(),
        auth: zt_creds::DeviceAuth::Secret(zt_creds::TunnelSecret::generate()),
        edge: vec!["[::1]:7844".into()],
        ca_fingerprint: zt_creds::CaFingerprint::of_der(b"ca"),
        default_vnet: None,
        identity_provider: None,
        service_token: None,
    };
    device.write(&path, ExistingFile::Refuse).unwrap();
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(
        DeviceCredentials::load(&path, PermissionMode::Strict).unwrap(),
        device
    );
    chmod(&path, 0o644);
    assert!(matches!(
        DeviceCredentials::load(&path, PermissionMode::Default),
        Err(zt_creds::LoadError::OthersCanAccess { mode: 0o644, .. })
    ));
}
