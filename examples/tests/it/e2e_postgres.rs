//! `zt edge` on PostgreSQL, through the real binary: a password in the store URL is
//! refused; `zt edge migrate` moves a running-by-hand edge's state directory into a
//! database and the edge, restarted on it, serves the same connector and client; a second
//! edge process on the same database sees the first one's admin changes. Each test prints a
//! SKIP line and passes when PostgreSQL is not installed.

use std::time::Instant;

use zt_testkit::postgres::PgServer;

use crate::support::*;

#[test]
fn a_password_in_the_store_url_is_refused_without_echoing_it() {
    let out = zt()
        .args([
            "edge",
            "run",
            "--store",
            "postgres://zt:s3cret-pw@127.0.0.1:1/zt",
            "--state-dir",
        ])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--store-password-file"), "{stderr}");
    assert!(
        !stderr.contains("s3cret-pw"),
        "the password was echoed: {stderr}"
    );
}

#[test]
fn a_migrated_edge_serves_its_connector_and_client_and_a_second_edge_follows() {
    let Some(pg) = PgServer::shared("a_migrated_edge_serves_its_connector_and_client") else {
        return;
    };
    let url = pg.database();
    let origin = Origin::hello("127.0.0.2:0");
    let mut edge = Edge::start();
    let (creds, device) = edge.api_zt_via_list();
    let mut old = edge.proc.take().unwrap();
    old.signal("TERM");
    assert!(old.wait_exit().success());
    let redb = edge.path("state.redb");
    let before = std::fs::read(&redb).unwrap();

    let started = Instant::now();
    let out = zt()
        .args(["edge", "migrate", "--from"])
        .arg(edge.dir.path())
        .args(["--to", &url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "zt edge migrate: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("zt edge migrate took {:?}:\n{stdout}", started.elapsed());
    assert!(stdout.contains("checked them"), "{stdout}");
    assert_eq!(std::fs::read(&redb).unwrap(), before, "the source changed");
    // Migrating again into the populated database is refused.
    let again = zt()
        .args(["edge", "migrate", "--from"])
        .arg(edge.dir.path())
        .args(["--to", &url])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("empty database"));

    // The same state directory (CA, admin token), the records from PostgreSQL.
    edge.run_with(&["--store", &url]);
    let connector = Connector::start(&edge, "api-zt", &creds, "connector", 2);
    connector.wait_ready(2);
    let (_client, forward) = client_forward(&device, origin.addr);
    hello_through(forward, "on the migrated database").unwrap();

    // A second edge process on the same database (its own state directory, the same
    // secrets key) sees what the first one's admin API writes.
    let key = edge.path("secrets.key");
    let key_arg = key.to_str().unwrap().to_owned();
    let second = Edge::start_with(&["--store", &url, "--secrets-key-file", &key_arg]);
    let listed = second.admin(&["tunnel", "list", "--output", "json"]);
    assert!(listed.contains("api-zt"), "{listed}");
    let started = Instant::now();
    edge.tunnel("made-on-the-first");
    let seen = eventually("the second edge lists the new tunnel", || {
        second
            .admin(&["tunnel", "list", "--output", "json"])
            .contains("made-on-the-first")
            .then(|| started.elapsed())
    });
    println!("a tunnel created on one edge process was listed by the other after {seen:?} (including two zt admin processes)");
}
