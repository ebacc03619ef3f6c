//! The typed store: uniqueness, references, transactions, revisions and change
//! notification — run against the redb backend and against a small in-memory backend written
//! here, which shows the [`Store`] trait is all a new backend has to provide.

use std::sync::Arc;

use crate::common::MemStore;
use ipnet::IpNet;
use uuid::Uuid;
use zt_creds::TunnelSecret;
use zt_edge::{
    Db, Device, List, ListKind, RecordKind, RedbStore, Route, Rule, StoreError, Table, Tunnel,
    User, VirtualNetwork,
};

const TAG: &str = "0123456789abcdef0123456789abcdef";

/// Runs `check` on a fresh redb-backed, a fresh memory-backed and (where PostgreSQL is
/// installed) a fresh PostgreSQL-backed [`Db`].
fn on_both(check: impl Fn(&Db)) {
    let tmp = tempfile::tempdir().unwrap();
    let redb = Db::new(Arc::new(
        RedbStore::open(&tmp.path().join("s.redb")).unwrap(),
    ));
    check(&redb);
    check(&Db::new(Arc::new(MemStore::new())));
    if let Some(pg) = zt_testkit::postgres::PgServer::shared("store suite on PostgreSQL") {
        let (_, store) = crate::postgres::fresh(pg, tmp.path());
        check(&Db::new(Arc::new(store)));
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// A default vnet and a tunnel, committed.
fn seed(db: &Db) -> (VirtualNetwork, Tunnel) {
    let mut vnet = VirtualNetwork::new("default");
    vnet.is_default = true;
    let tunnel = Tunnel::new("prod", TAG, &TunnelSecret::generate());
    db.update(|t| {
        t.put(&vnet)?;
        t.put(&tunnel)
    })
    .unwrap();
    (vnet, tunnel)
}

#[test]
fn tunnel_names_are_unique_among_live_tunnels() {
    on_both(|db| {
        let (_, mut first) = seed(db);
        let second = Tunnel::new("prod", TAG, &TunnelSecret::generate());
        let err = db.update(|t| t.put(&second)).unwrap_err();
        match err {
            StoreError::Conflict {
                kind,
                field,
                value,
                existing,
            } => {
                assert_eq!(
                    (kind, field, value.as_str(), existing),
                    (RecordKind::Tunnel, "name", "prod", first.id)
                );
            }
            other => panic!("{other:?}"),
        }
        // Renaming in place keeps the tunnel's own entry consistent.
        first.name = "prod-eu".into();
        db.update(|t| t.put(&first)).unwrap();
        db.update(|t| t.put(&second)).unwrap();
        let r = db.read().unwrap();
        assert_eq!(r.tunnel_by_name("prod").unwrap().unwrap().id, second.id);
        assert_eq!(r.tunnel_by_name("prod-eu").unwrap().unwrap().id, first.id);
        drop(r);
        // A deleted tunnel frees its name.
        first.deleted_at = Some(zt_edge::Timestamp::now());
        db.update(|t| t.put(&first)).unwrap();
        let third = Tunnel::new("prod-eu", TAG, &TunnelSecret::generate());
        db.update(|t| t.put(&third)).unwrap();
        assert_eq!(db.read().unwrap().list::<Tunnel>().unwrap().len(), 3);
    });
}

#[test]
fn routes_are_unique_per_vnet_and_reference_live_records() {
    on_both(|db| {
        let (vnet, tunnel) = seed(db);
        let other = VirtualNetwork::new("staging");
        db.update(|t| t.put(&other)).unwrap();

        let route = Route::new(net("10.0.0.0/8"), vnet.id, tunnel.id);
        db.update(|t| t.put(&route)).unwrap();
        let dup = Route::new(net("10.0.0.0/8"), vnet.id, tunnel.id);
        let err = db.update(|t| t.put(&dup)).unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { kind: RecordKind::Route, existing, .. } if existing == route.id),
            "{err:?}"
        );
        assert!(err.to_string().contains("10.0.0.0/8"), "{err}");
        // The same prefix in another virtual network is a different route.
        db.update(|t| t.put(&Route::new(net("10.0.0.0/8"), other.id, tunnel.id)))
            .unwrap();
        // IPv6 works the same way.
        db.update(|t| t.put(&Route::new(net("2001:db8::/64"), vnet.id, tunnel.id)))
            .unwrap();
        let found = db
            .read()
            .unwrap()
            .route_by_network(vnet.id, net("10.0.0.0/8"))
            .unwrap()
            .unwrap();
        assert_eq!(found.id, route.id);

        let missing = Uuid::new_v4();
        let err = db
            .update(|t| t.put(&Route::new(net("192.0.2.0/24"), vnet.id, missing)))
            .unwrap_err();
        match err {
            StoreError::Dangling {
                field,
                target_kind,
                target,
                ..
            } => {
                assert_eq!(
                    (field, target_kind, target),
                    ("tunnel_id", RecordKind::Tunnel, missing)
                );
            }
            other => panic!("{other:?}"),
        }
        let err = db
            .update(|t| t.put(&Route::new(net("192.0.2.0/24"), missing, tunnel.id)))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Dangling { field: "vnet", .. }),
            "{err:?}"
        );

        // A tunnel with routes can be neither removed nor soft-deleted.
        let err = db.update(|t| t.delete::<Tunnel>(tunnel.id)).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::InUse {
                    by_kind: RecordKind::Route,
                    ..
                }
            ),
            "{err:?}"
        );
        let mut deleted = tunnel.clone();
        deleted.deleted_at = Some(zt_edge::Timestamp::now());
        let err = db.update(|t| t.put(&deleted)).unwrap_err();
        assert!(matches!(err, StoreError::InUse { .. }), "{err:?}");
        let err = db
            .update(|t| t.delete::<VirtualNetwork>(other.id))
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::InUse {
                    kind: RecordKind::VirtualNetwork,
                    ..
                }
            ),
            "{err:?}"
        );

        // Removing every route first, in the same transaction, lets the tunnel go.
        db.update(|t| {
            for r in t.list::<Route>()? {
                t.delete::<Route>(r.id)?;
            }
            t.put(&deleted)
        })
        .unwrap();
        // Routes may not point at a deleted tunnel.
        let err = db
            .update(|t| t.put(&Route::new(net("10.0.0.0/8"), vnet.id, tunnel.id)))
            .unwrap_err();
        assert!(matches!(err, StoreError::Dangling { .. }), "{err:?}");
        let err = db.update(|t| t.delete::<Route>(route.id)).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::NotFound {
                    kind: RecordKind::Route,
                    ..
                }
            ),
            "{err:?}"
        );
    });
}

#[test]
fn at_most_one_default_vnet() {
    on_both(|db| {
        let (vnet, _) = seed(db);
        let mut second = VirtualNetwork::new("second");
        second.is_default = true;
        let err = db.update(|t| t.put(&second)).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Conflict {
                    field: "is_default",
                    ..
                }
            ),
            "{err:?}"
        );
        second.is_default = false;
        db.update(|t| t.put(&second)).unwrap();
        db.update(|t| t.set_default_vnet(second.id)).unwrap();
        let r = db.read().unwrap();
        assert_eq!(r.default_vnet().unwrap().unwrap().id, second.id);
        assert!(
            !r.get::<VirtualNetwork>(vnet.id)
                .unwrap()
                .unwrap()
                .is_default
        );
        drop(r);
        let err = db
            .update(|t| t.delete::<VirtualNetwork>(second.id))
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
        db.update(|t| t.delete::<VirtualNetwork>(vnet.id)).unwrap();
        let err = db
            .update(|t| t.put(&VirtualNetwork::new("second")))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { field: "name", .. }),
            "{err:?}"
        );
    });
}

#[test]
fn lists_rules_users_devices() {
    on_both(|db| {
        let mut ips = List::new("cluster ips", ListKind::Ip, vec!["198.51.100.0/24".into()]);
        ips.slug = Some("cluster_ips".into());
        let mut same_slug = List::new("other", ListKind::Domain, vec![]);
        same_slug.slug = Some("cluster_ips".into());
        db.update(|t| t.put(&ips)).unwrap();
        let err = db.update(|t| t.put(&same_slug)).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Conflict {
                    kind: RecordKind::List,
                    field: "slug",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            db.read()
                .unwrap()
                .list_by_slug("cluster_ips")
                .unwrap()
                .unwrap(),
            List { version: 1, ..ips }
        );

        let mut rule = Rule::new("allow k8s", 10, "allow", vec!["l4".into()]);
        rule.traffic = Some("net.dst.ip in $cluster_ips".into());
        db.update(|t| t.put(&rule)).unwrap();
        let err = db
            .update(|t| t.put(&Rule::new("allow k8s", 20, "block", vec![])))
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Conflict {
                    kind: RecordKind::Rule,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            db.read()
                .unwrap()
                .rule_by_name("allow k8s")
                .unwrap()
                .unwrap(),
            Rule { version: 1, ..rule }
        );

        let user = User::new("Ada@Example.com", vec!["sre".into()]);
        db.update(|t| t.put(&user)).unwrap();
        let err = db
            .update(|t| t.put(&User::new("ada@example.COM", vec![])))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { field: "email", .. }),
            "{err:?}"
        );
        assert_eq!(
            db.read()
                .unwrap()
                .user_by_email("ADA@example.com")
                .unwrap()
                .unwrap()
                .id,
            user.id
        );
        let err = db
            .update(|t| t.put(&User::new("not-an-email", vec![])))
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Invalid {
                    kind: RecordKind::User,
                    ..
                }
            ),
            "{err:?}"
        );

        let device = Device::new(user.id, "laptop", &TunnelSecret::generate());
        db.update(|t| t.put(&device)).unwrap();
        let err = db
            .update(|t| t.put(&Device::new(Uuid::new_v4(), "x", &TunnelSecret::generate())))
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Dangling {
                    field: "user_id",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = db.update(|t| t.delete::<User>(user.id)).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::InUse {
                    by_kind: RecordKind::Device,
                    ..
                }
            ),
            "{err:?}"
        );
        db.update(|t| {
            t.delete::<Device>(device.id)?;
            t.delete::<User>(user.id)
        })
        .unwrap();
        assert!(db
            .read()
            .unwrap()
            .user_by_email("ada@example.com")
            .unwrap()
            .is_none());
    });
}

#[test]
fn transactions_are_all_or_nothing_and_revisions_count_commits() {
    on_both(|db| {
        let start = db.revision();
        let (vnet, tunnel) = seed(db);
        assert_eq!(db.revision().get(), start.get() + 1);

        // A failing step discards the steps before it.
        let before = db.read().unwrap().list::<Route>().unwrap().len();
        let err = db
            .update(|t| {
                t.put(&Route::new(net("10.1.0.0/16"), vnet.id, tunnel.id))?;
                t.put(&Route::new(net("10.2.0.0/16"), vnet.id, tunnel.id))?;
                t.put(&Route::new(net("10.1.0.0/16"), vnet.id, tunnel.id))
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }));
        assert_eq!(db.read().unwrap().list::<Route>().unwrap().len(), before);
        assert_eq!(db.revision().get(), start.get() + 1);

        // A dropped transaction leaves nothing behind either.
        {
            let mut t = db.write().unwrap();
            t.put(&Route::new(net("10.3.0.0/16"), vnet.id, tunnel.id))
                .unwrap();
            assert_eq!(
                t.list::<Route>().unwrap().len(),
                before + 1,
                "a transaction reads its own writes"
            );
        }
        assert_eq!(db.read().unwrap().list::<Route>().unwrap().len(), before);

        // A commit with no change does not move the revision.
        let (_, rev) = db.update(|t| t.list::<Route>()).unwrap();
        assert_eq!(rev.get(), start.get() + 1);

        // Readers keep their snapshot while a writer commits.
        let snapshot = db.read().unwrap();
        let mut rx = db.subscribe();
        rx.borrow_and_update();
        let (_, rev) = db
            .update(|t| t.put(&Route::new(net("10.4.0.0/16"), vnet.id, tunnel.id)))
            .unwrap();
        assert_eq!(rev.get(), start.get() + 2);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), rev);
        assert_eq!(snapshot.list::<Route>().unwrap().len(), before);
        assert_eq!(snapshot.revision().get(), start.get() + 1);
        assert_eq!(db.read().unwrap().revision(), rev);
    });
}

#[tokio::test]
async fn subscribers_wake_on_commit_from_another_thread() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::new(Arc::new(
        RedbStore::open(&tmp.path().join("s.redb")).unwrap(),
    ));
    let mut rx = db.subscribe();
    let writer = db.clone();
    let handle = std::thread::spawn(move || {
        let mut vnet = VirtualNetwork::new("default");
        vnet.is_default = true;
        writer.update(|t| t.put(&vnet)).unwrap().1
    });
    rx.changed().await.unwrap();
    let seen = *rx.borrow();
    assert_eq!(seen, handle.join().unwrap());
}

#[test]
fn the_database_file_holds_no_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s.redb");
    let secret = TunnelSecret::generate();
    {
        let db = Db::new(Arc::new(RedbStore::open(&path).unwrap()));
        let mut tunnel = Tunnel::new("t", TAG, &secret);
        tunnel.cloudflared_secret_sha256 = Some(zt_edge::SecretSha256::of(&secret));
        let user = User::new("u@example.com", vec![]);
        let device = Device::new(user.id, "d", &secret);
        db.update(|t| {
            t.put(&tunnel)?;
            t.put(&user)?;
            t.put(&device)
        })
        .unwrap();
        let stored: Tunnel = db.read().unwrap().get(tunnel.id).unwrap().unwrap();
        assert_eq!(stored.auth_key, secret.derive_auth_key());
    }
    let bytes = std::fs::read(&path).unwrap();
    let raw = secret.expose_bytes();
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        !bytes.windows(raw.len()).any(|w| w == raw),
        "raw secret bytes in the database"
    );
    assert!(
        !bytes.windows(hex.len()).any(|w| w == hex.as_bytes()),
        "hex secret in the database"
    );
}

#[test]
fn refresh_tokens_are_sealed_at_rest_and_open_only_with_the_key() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let key_path = tmp.path().join("secrets.key");
    let key = zt_edge::SecretsKey::load_or_create(&key_path).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key_path), 0o600, "the secrets key file");
    let token = format!("refresh-{}", Uuid::new_v4().simple());
    let path = tmp.path().join("s.redb");
    let user = User::new("u@example.com", vec![]);
    let mut device = Device::new(user.id, "d", &TunnelSecret::generate());
    device.set_refresh_token(&key, Some(&token)).unwrap();
    assert!(
        !format!("{device:?}").contains(&token),
        "Debug shows the token"
    );
    let info = serde_json::to_string(&device.info()).unwrap();
    assert!(
        !info.contains("refresh"),
        "the device's info carries its token: {info}"
    );
    {
        let db = Db::new(Arc::new(RedbStore::open(&path).unwrap()));
        db.update(|t| {
            t.put(&user)?;
            t.put(&device)
        })
        .unwrap();
        let stored: Device = db.read().unwrap().get(device.id).unwrap().unwrap();
        assert_eq!(
            stored.refresh_token(&key).unwrap().as_deref(),
            Some(token.as_str())
        );
    }
    assert_eq!(mode(&path), 0o600, "the database file");
    let bytes = std::fs::read(&path).unwrap();
    assert!(
        !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
        "the refresh token is in the database file in the clear"
    );
    // Another key, or the sealed value moved to another device, does not open it.
    let other = zt_edge::SecretsKey::from_bytes(&[9; zt_edge::SECRETS_KEY_LEN]);
    assert_eq!(device.refresh_token(&other), Err(zt_edge::SealError));
    let mut moved = Device::new(user.id, "other", &TunnelSecret::generate());
    moved.refresh_token = device.refresh_token.clone();
    assert_eq!(moved.refresh_token(&key), Err(zt_edge::SealError));
    // The same on every backend: the sealed value round-trips through each.
    on_both(|db| {
        let user = User::new("v@example.com", vec![]);
        let mut d = Device::new(user.id, "d", &TunnelSecret::generate());
        d.set_refresh_token(&key, Some(&token)).unwrap();
        db.update(|t| {
            t.put(&user)?;
            t.put(&d)
        })
        .unwrap();
        let stored: Device = db.read().unwrap().get(d.id).unwrap().unwrap();
        assert_eq!(
            stored.refresh_token(&key).unwrap().as_deref(),
            Some(token.as_str())
        );
        d.set_refresh_token(&key, None).unwrap();
        assert_eq!(d.refresh_token(&key), Ok(None));
    });
}

#[test]
fn unreadable_records_are_reported_with_their_key() {
    on_both(|db| {
        let id = Uuid::new_v4();
        {
            // Only a backend bug or a damaged file could do this; the typed layer must say
            // which entry is bad rather than panic.
            let mut w = db.store().begin_write().unwrap();
            w.put(Table::Tunnels, id.as_bytes(), b"{not json").unwrap();
            w.commit().unwrap();
        }
        let err = db.read().unwrap().list::<Tunnel>().unwrap_err();
        match err {
            StoreError::Corrupt { table, key, .. } => {
                assert_eq!(table, "tunnels");
                assert_eq!(key, id.to_string());
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn lost_commit_races_are_retried_on_fresh_state() {
    let mem = Arc::new(MemStore::new());
    let db = Db::new(mem.clone());
    let (vnet, tunnel) = seed(&db);
    mem.contended_commits
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let mut runs = 0;
    let (count, rev) = db
        .update(|t| {
            runs += 1;
            t.put(&Route::new(net("10.9.0.0/16"), vnet.id, tunnel.id))?;
            Ok::<_, StoreError>(t.list::<Route>()?.len())
        })
        .unwrap();
    assert_eq!((runs, count), (3, 1));
    assert_eq!(rev, db.read().unwrap().revision());
    assert_eq!(db.read().unwrap().list::<Route>().unwrap().len(), 1);

    // A backend that keeps losing gives up after MAX_ATTEMPTS with the backend's error.
    mem.contended_commits
        .store(u32::MAX, std::sync::atomic::Ordering::SeqCst);
    let mut runs = 0;
    let err = db
        .update(|t| {
            runs += 1;
            t.put(&Route::new(net("10.10.0.0/16"), vnet.id, tunnel.id))
        })
        .unwrap_err();
    assert_eq!(runs, zt_edge::MAX_ATTEMPTS);
    assert!(
        matches!(
            err,
            StoreError::Backend(zt_edge::BackendError::Contention { .. })
        ),
        "{err:?}"
    );
    assert_eq!(db.read().unwrap().list::<Route>().unwrap().len(), 1);
}

#[test]
fn a_database_from_a_newer_schema_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("future.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let meta: redb::TableDefinition<'_, &str, u64> = redb::TableDefinition::new("meta");
            txn.open_table(meta).unwrap().insert("schema", 99).unwrap();
        }
        txn.commit().unwrap();
    }
    match RedbStore::open(&path).unwrap_err() {
        zt_edge::OpenDbError::Corrupt { path: p, detail } => {
            assert_eq!(p, path);
            assert!(detail.contains("schema version 99"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}
