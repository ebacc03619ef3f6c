//! The PostgreSQL backend against a real server (zt-testkit's, one per test binary, a fresh
//! database per test): secrets sealed at rest, the schema's version rules, two edges racing
//! for one tunnel name, the change feed across edges and across a cut connection, a
//! database restart under load, and `zt edge migrate`'s copy from a state directory. Each
//! test prints a SKIP line and passes when PostgreSQL is not installed.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use zt_creds::TunnelSecret;
use zt_edge::{
    copy_store, BackendError, Db, Edge, EdgeState, EphemeralTable, OpenPostgresError,
    PostgresOptions, PostgresStore, RedbStore, SchemaError, StateOptions, Store, StoreError, Table,
    Tunnel, FEED_APPLICATION_NAME, SCHEMA_VERSION,
};
use zt_testkit::loopback::{
    allow_all, connect_client, connect_connector, endpoint, open, provision, round_trip,
    serve_flows, test_config, Provision,
};
use zt_testkit::origin::hashing_origin;
use zt_testkit::postgres::PgServer;

const TAG: &str = "0123456789abcdef0123456789abcdef";

/// Bound for waiting on something that should take milliseconds; reached only by a bug.
const PATIENCE: Duration = Duration::from_secs(30);

/// Options for `url`, with a secrets key in `dir`.
pub(crate) fn options(url: &str, dir: &std::path::Path) -> PostgresOptions {
    PostgresOptions::new(url, dir.join("secrets.key"))
}

/// A store on a fresh database of the shared server.
pub(crate) fn fresh(pg: &PgServer, dir: &std::path::Path) -> (String, PostgresStore) {
    let url = pg.database();
    let store = PostgresStore::open(&options(&url, dir)).unwrap();
    (url, store)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn proof_keys_and_verifiers_are_sealed_at_rest() {
    let Some(pg) = PgServer::shared("proof_keys_and_verifiers_are_sealed_at_rest") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (url, store) = fresh(pg, tmp.path());
    let db = Db::new(Arc::new(store));
    let tunnel = Tunnel::new("sealed-tunnel", TAG, &TunnelSecret::generate());
    db.update(|t| t.put(&tunnel)).unwrap();
    let key_hex: String = tunnel
        .auth_key
        .expose_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let name = PgServer::db_name(&url);
    let stored = pg.sql(
        name,
        "SELECT encode(v, 'hex') FROM zt_kv WHERE tbl = 'tunnels'",
    );
    let stored = stored.trim();
    assert!(stored.starts_with("01"), "sealed format byte: {stored}");
    assert!(
        !stored.contains(&key_hex),
        "the proof key is stored in the clear"
    );
    let name_hex: String = "sealed-tunnel"
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!stored.contains(&name_hex));
    // Read back through the store: the same record, at its first version.
    assert_eq!(
        db.read().unwrap().get::<Tunnel>(tunnel.id).unwrap(),
        Some(Tunnel {
            version: 1,
            ..tunnel.clone()
        })
    );
    let mode = std::fs::metadata(tmp.path().join("secrets.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    assert_eq!(mode.len(), 32);

    // Another key file: refused at open, naming the fix.
    let other = tempfile::tempdir().unwrap();
    let err = PostgresStore::open(&options(&url, other.path())).unwrap_err();
    assert!(
        matches!(err, OpenPostgresError::KeyMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("same key file"), "{err}");

    // A value moved onto another record does not open.
    let second = Tunnel::new("second", TAG, &TunnelSecret::generate());
    db.update(|t| t.put(&second)).unwrap();
    pg.sql(
        name,
        &format!(
            "UPDATE zt_kv SET v = (SELECT v FROM zt_kv WHERE tbl = 'tunnels' AND k = '\\x{}') \
             WHERE tbl = 'tunnels' AND k = '\\x{}'",
            tunnel.id.simple(),
            second.id.simple()
        ),
    );
    let err = db.read().unwrap().get::<Tunnel>(second.id).unwrap_err();
    assert!(
        matches!(err, StoreError::Backend(BackendError::Corrupted { .. })),
        "{err}"
    );
    assert!(err.to_string().contains(&second.id.to_string()), "{err}");
}

#[test]
fn a_schema_more_than_one_version_ahead_is_refused() {
    let Some(pg) = PgServer::shared("a_schema_more_than_one_version_ahead_is_refused") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (url, store) = fresh(pg, tmp.path());
    drop(store);
    let name = PgServer::db_name(&url);
    assert_eq!(
        pg.sql(name, "SELECT version FROM zt_schema").trim(),
        SCHEMA_VERSION.to_string()
    );
    // One ahead (a newer edge expanded the schema during a rolling upgrade): accepted.
    pg.sql(
        name,
        &format!("UPDATE zt_schema SET version = {}", SCHEMA_VERSION + 1),
    );
    PostgresStore::open(&options(&url, tmp.path())).expect("one version ahead opens");
    // Two ahead: refused, and nothing changed.
    pg.sql(
        name,
        &format!("UPDATE zt_schema SET version = {}", SCHEMA_VERSION + 2),
    );
    let err = PostgresStore::open(&options(&url, tmp.path())).unwrap_err();
    match &err {
        OpenPostgresError::Schema {
            source: SchemaError::TooNew { found, supported },
            ..
        } => {
            assert_eq!((*found, *supported), (SCHEMA_VERSION + 2, SCHEMA_VERSION));
        }
        other => panic!("expected TooNew, got {other}"),
    }
    assert!(format!("{:#}", anyhow_chain(&err)).contains("upgrade this edge"));
    // An empty database with migrations off: refused, pointing at migrate-schema.
    let empty = pg.database();
    let mut opts = options(&empty, tmp.path());
    opts.migrate = false;
    let err = PostgresStore::open(&opts).unwrap_err();
    assert!(
        anyhow_chain(&err).contains("zt edge migrate-schema"),
        "{}",
        anyhow_chain(&err)
    );
    let status = PostgresStore::migrate_schema(&opts).unwrap();
    assert_eq!((status.before, status.after), (0, SCHEMA_VERSION));
    PostgresStore::open(&opts).expect("migrated schema opens");
}

fn anyhow_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[test]
fn two_edges_racing_for_one_tunnel_name_one_wins() {
    let Some(pg) = PgServer::shared("two_edges_racing_for_one_tunnel_name_one_wins") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (url, a) = fresh(pg, tmp.path());
    let b = PostgresStore::open(&options(&url, tmp.path())).unwrap();
    let dbs = [Db::new(Arc::new(a)), Db::new(Arc::new(b))];
    for round in 0..10 {
        let name = format!("race-{round}");
        let barrier = Arc::new(Barrier::new(2));
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = dbs
                .iter()
                .map(|db| {
                    let (barrier, name) = (barrier.clone(), name.clone());
                    s.spawn(move || {
                        let tunnel = Tunnel::new(name, TAG, &TunnelSecret::generate());
                        barrier.wait();
                        db.update(|t| t.put(&tunnel)).map(|_| tunnel.id)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let loser = results.iter().find_map(|r| r.as_ref().err()).unwrap();
        match loser {
            StoreError::Conflict {
                field, existing, ..
            } => {
                assert_eq!(*field, "name");
                assert_eq!(existing, winners[0]);
            }
            other => panic!("round {round}: expected a conflict, got {other}"),
        }
        let stored = dbs[1]
            .read()
            .unwrap()
            .tunnel_by_name(&name)
            .unwrap()
            .unwrap();
        assert_eq!(&stored.id, winners[0]);
    }
}

#[test]
fn a_commit_by_one_edge_reaches_another() {
    let Some(pg) = PgServer::shared("a_commit_by_one_edge_reaches_another") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (url, a) = fresh(pg, tmp.path());
    let b = PostgresStore::open(&options(&url, tmp.path())).unwrap();
    let (a, b) = (Db::new(Arc::new(a)), Db::new(Arc::new(b)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut times = Vec::new();
    for i in 0..20 {
        let mut rx = b.subscribe();
        let start = Instant::now();
        let ((), rev) = a
            .update(|t| {
                t.put(&Tunnel::new(
                    format!("t{i}"),
                    TAG,
                    &TunnelSecret::generate(),
                ))
            })
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(PATIENCE, rx.wait_for(|r| *r >= rev))
                .await
                .expect("the other edge sees the commit")
                .unwrap();
        });
        times.push(start.elapsed());
        assert!(b
            .read()
            .unwrap()
            .tunnel_by_name(&format!("t{i}"))
            .unwrap()
            .is_some());
    }
    times.sort();
    println!(
        "change propagation between two edges on PostgreSQL (commit + NOTIFY + LISTEN): \
         median {:?}, max {:?} over {} commits",
        times[times.len() / 2],
        times[times.len() - 1],
        times.len()
    );
}

#[test]
fn the_feed_catches_up_after_its_connection_is_cut() {
    let Some(pg) = PgServer::shared("the_feed_catches_up_after_its_connection_is_cut") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (url, listener) = fresh(pg, tmp.path());
    let writer = Db::new(Arc::new(
        PostgresStore::open(&options(&url, tmp.path())).unwrap(),
    ));
    let listener = Db::new(Arc::new(listener));
    let name = PgServer::db_name(&url).to_owned();
    let mut rx = listener.subscribe();
    let seen = Arc::new(std::sync::Mutex::new(vec![*rx.borrow_and_update()]));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = seen.clone();
    let watcher = std::thread::spawn(move || {
        rt.block_on(async move {
            while rx.changed().await.is_ok() {
                let r = *rx.borrow_and_update();
                s.lock().unwrap().push(r);
            }
        })
    });
    let mut expected = Vec::new();
    for cut in 0..3 {
        let killed = pg.sql(
            &name,
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = '{FEED_APPLICATION_NAME}' AND datname = '{name}'"
            ),
        );
        assert_ne!(killed.trim(), "0", "cut {cut}: no feed connection to cut");
        // Written while the listener's feed is away: only its catch-up read can see them.
        for i in 0..10 {
            let t = Tunnel::new(format!("cut{cut}-{i}"), TAG, &TunnelSecret::generate());
            writer.update(|txn| txn.put(&t)).unwrap();
            expected.push(t.id);
        }
        let target = writer.revision();
        wait_for("the listener to catch up", || listener.revision() >= target);
        let reconnected = pg.sql(
            &name,
            &format!(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = '{FEED_APPLICATION_NAME}' AND datname = '{name}'"
            ),
        );
        assert_ne!(reconnected.trim(), "0", "the feed reconnected");
    }
    let tunnels: Vec<_> = listener.read().unwrap().list::<Tunnel>().unwrap();
    for id in &expected {
        assert!(tunnels.iter().any(|t| t.id == *id), "tunnel {id} missing");
    }
    drop(listener);
    watcher.join().unwrap();
    let seen = seen.lock().unwrap();
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "every revision once, in order: {seen:?}"
    );
    assert_eq!(*seen.last().unwrap(), writer.revision());
}

#[test]
fn unrevisioned_rows_never_move_the_revision() {
    let Some(pg) = PgServer::shared("unrevisioned_rows_never_move_the_revision") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (url, a) = fresh(pg, tmp.path());
    let b = PostgresStore::open(&options(&url, tmp.path())).unwrap();
    let mut changes = b.subscribe_ephemeral();
    let before = (a.subscribe().borrow().get(), b.subscribe().borrow().get());
    a.ephemeral_put(EphemeralTable::Presence, b"tunnel-1/edge-a", b"heartbeat 1")
        .unwrap();
    a.ephemeral_put(EphemeralTable::Presence, b"tunnel-1/edge-a", b"heartbeat 2")
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for _ in 0..2 {
        let change = rt
            .block_on(async { tokio::time::timeout(PATIENCE, changes.recv()).await })
            .unwrap()
            .unwrap();
        assert_eq!(change.table, EphemeralTable::Presence);
        assert_eq!(change.key, b"tunnel-1/edge-a");
    }
    assert_eq!(
        b.ephemeral_scan(EphemeralTable::Presence).unwrap(),
        vec![(b"tunnel-1/edge-a".to_vec(), b"heartbeat 2".to_vec())]
    );
    assert!(b
        .ephemeral_remove(EphemeralTable::Presence, b"tunnel-1/edge-a")
        .unwrap());
    assert!(b
        .ephemeral_scan(EphemeralTable::Presence)
        .unwrap()
        .is_empty());
    let after = (a.subscribe().borrow().get(), b.subscribe().borrow().get());
    assert_eq!(before, after, "ephemeral writes moved the revision");
    let r = a.begin_read().unwrap();
    assert_eq!(r.revision().get(), before.0);
    assert!(r.scan(Table::Tunnels).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_under_load_spares_flows_and_fails_writes_cleanly() {
    let Some(pg) = PgServer::start(
        "a_database_restart_under_load_spares_flows_and_fails_writes_cleanly",
        false,
    ) else {
        return;
    };
    let url = pg.database();
    let tmp = tempfile::tempdir().unwrap();
    let opts = options(&url, tmp.path());
    let store: Arc<dyn Store> = tokio::task::spawn_blocking(move || {
        Arc::new(PostgresStore::open(&opts).unwrap()) as Arc<dyn Store>
    })
    .await
    .unwrap();
    let s = store.clone();
    let lb = zt_testkit::loopback::Loopback::start(
        move |c| c.store = Some(s),
        &["127.0.0.0/8"],
        vec![allow_all()],
    )
    .await;
    let origin = hashing_origin("127.0.0.1:0", 100_000);
    // A flow opened before the outage and used during it.
    let existing = lb.open(origin.addr).await.unwrap();
    let db = lb.edge.state().db().clone();

    pg.stop();
    let t = Tunnel::new("during-outage", TAG, &TunnelSecret::generate());
    let (d, t2) = (db.clone(), t.clone());
    let err = tokio::task::spawn_blocking(move || d.update(|txn| txn.put(&t2)))
        .await
        .unwrap()
        .unwrap_err();
    let msg = anyhow_chain(&err);
    println!("admin write during the outage: {msg}");
    assert!(msg.contains("postgres storage"), "{msg}");
    round_trip(existing, b"during the outage", 100_000).await;
    // New flows open too (the data path reads no database).
    for _ in 0..5 {
        round_trip(lb.open(origin.addr).await.unwrap(), b"during", 100_000).await;
    }
    pg.resume();
    let d = db.clone();
    let found = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        loop {
            // A pooled connection's first use after the restart may still fail.
            match d.read().and_then(|r| r.tunnel_by_name("during-outage")) {
                Ok(found) => break found,
                Err(e) if start.elapsed() < PATIENCE => {
                    println!("after the restart: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("database did not come back: {e}"),
            }
        }
    })
    .await
    .unwrap();
    assert!(found.is_none(), "the failed write left something behind");
    let d = db.clone();
    let ((), rev) = tokio::task::spawn_blocking(move || d.update(|txn| txn.put(&t)))
        .await
        .unwrap()
        .expect("the same write works once the database is back");
    assert!(rev.get() > 0);
    round_trip(lb.open(origin.addr).await.unwrap(), b"after", 100_000).await;
    lb.edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_state_directory_serves_connectors_and_clients() {
    let Some(pg) = PgServer::shared("a_migrated_state_directory_serves_connectors_and_clients")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("edge");
    // A populated state directory, as the README's run-by-hand edge leaves it.
    let edge = Edge::start(test_config(&state)).await.unwrap();
    let records = provision(&edge, Provision::new(&["127.0.0.0/8"], vec![allow_all()])).await;
    edge.shutdown().await;
    let redb_path = state.join("state.redb");
    let before = std::fs::read(&redb_path).unwrap();

    let url = pg.database();
    let opts = options(&url, &state);
    let (report, pg_store) = tokio::task::spawn_blocking({
        let redb_path = redb_path.clone();
        move || {
            let source = RedbStore::open(&redb_path).unwrap();
            let dest = PostgresStore::open(&opts).unwrap();
            let report = copy_store(&source, &dest).unwrap();
            // A second copy into the now populated database is refused.
            let again = copy_store(&source, &dest).unwrap_err();
            assert!(again.to_string().contains("empty database"), "{again}");
            (report, dest)
        }
    })
    .await
    .unwrap();
    println!("migrated {} entries: {:?}", report.total(), report.tables);
    assert!(report.total() >= 6, "{report:?}");
    assert_eq!(
        std::fs::read(&redb_path).unwrap(),
        before,
        "the source was changed"
    );

    let mut config = test_config(&state);
    config.store = Some(Arc::new(pg_store));
    let edge = Edge::start(config).await.unwrap();
    let ep = endpoint(&edge);
    let connector = Arc::new(connect_connector(&edge, &ep, &records, 0).await.unwrap());
    serve_flows(connector);
    let client = connect_client(&edge, &ep, records.device.id, &records.device_secret)
        .await
        .unwrap();
    let origin = hashing_origin("127.0.0.1:0", 1000);
    round_trip(open(&client, origin.addr).await.unwrap(), b"hello", 1000).await;
    edge.shutdown().await;
}

#[test]
fn tls_to_the_database_verifies_the_server_certificate() {
    let ca = zt_testkit::pki::Ca::new("database CA");
    let leaf = ca.server(&["localhost", "127.0.0.1"]);
    let Some(pg) = PgServer::start_tls(
        "tls_to_the_database_verifies_the_server_certificate",
        &leaf.chain_pem(),
        &leaf.key_pem(),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ca_file = tmp.path().join("db-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let url = pg.database();
    for (i, url) in [url.clone(), url.replace("127.0.0.1", "localhost")]
        .into_iter()
        .enumerate()
    {
        let mut opts = options(&url, tmp.path());
        opts.ca_file = Some(ca_file.clone());
        let store = PostgresStore::open(&opts).unwrap();
        let db = Db::new(Arc::new(store));
        db.update(|t| {
            t.put(&Tunnel::new(
                format!("over-tls-{i}"),
                TAG,
                &TunnelSecret::generate(),
            ))
        })
        .unwrap();
        // Every connection of the edge's is encrypted.
        let plain = pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name LIKE 'zt-edge%' AND NOT s.ssl",
        );
        let tls = pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name LIKE 'zt-edge%' AND s.ssl",
        );
        assert_eq!(plain.trim(), "0");
        assert_ne!(tls.trim(), "0");
    }
    // A server whose certificate another CA signed is refused.
    let other = zt_testkit::pki::Ca::new("another CA");
    let other_file = tmp.path().join("other-ca.pem");
    std::fs::write(&other_file, other.pem()).unwrap();
    let mut opts = options(&url, tmp.path());
    opts.ca_file = Some(other_file);
    let err = PostgresStore::open(&opts).unwrap_err();
    let msg = anyhow_chain(&err);
    println!("with the wrong CA: {msg}");
    assert!(msg.contains("cannot connect to the database"), "{msg}");
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");
}

#[test]
fn a_state_directory_of_a_postgresql_edge_started_without_the_store_says_so() {
    let Some(pg) = PgServer::shared(
        "a_state_directory_of_a_postgresql_edge_started_without_the_store_says_so",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("edge");
    let (_, store) = fresh(pg, tmp.path());
    let store: Arc<dyn Store> = Arc::new(store);
    let state =
        EdgeState::open_or_init(&dir, &StateOptions::default().with_store(store.clone())).unwrap();
    assert!(state.db().read().unwrap().default_vnet().unwrap().is_some());
    assert!(
        !dir.join("state.redb").exists(),
        "no redb file beside a PostgreSQL store"
    );
    drop(state);
    // Restarted on the same database: the same records, no second default network.
    let state = EdgeState::open_or_init(&dir, &StateOptions::default().with_store(store)).unwrap();
    assert_eq!(
        state
            .db()
            .read()
            .unwrap()
            .list::<zt_edge::VirtualNetwork>()
            .unwrap()
            .len(),
        1
    );
    drop(state);
    let err = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap_err();
    let msg = anyhow_chain(&err);
    assert!(msg.contains("start it with --store"), "{msg}");
}
