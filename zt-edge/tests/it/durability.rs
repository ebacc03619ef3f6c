//! Kill -9 at random moments while a child process commits transactions; after each kill
//! the database must open, hold every transaction the child reported as committed, hold
//! each transaction whole (never part of one), and have a revision that counts exactly the
//! committed transactions.
//!
//! The child is this test binary run again with `CHILD_ENV` set, executing only the ignored
//! test `durability_child_writer` (named exactly, so no other test of the binary runs in
//! the child).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::Ipv6Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use ipnet::{IpNet, Ipv6Net};
use zt_creds::TunnelSecret;
use zt_edge::{Db, RedbStore, Route, Tunnel, VirtualNetwork};

const CHILD_ENV: &str = "ZT_EDGE_DURABILITY_DB";
const TAG: &str = "0123456789abcdef0123456789abcdef";
/// Revision after the parent's setup transaction; writer transaction `s` makes `BASE + s + 1`.
const BASE: u64 = 1;
const ROUTES_PER_TXN: u16 = 3;
const ROUNDS: u32 = 8;
/// Deadline for the child to commit its first transaction; generous for a loaded machine.
const FIRST_COMMIT_DEADLINE: Duration = Duration::from_secs(120);

fn route_net(seq: u64, i: u16) -> IpNet {
    let hi = u16::try_from(seq >> 16).unwrap();
    let lo = u16::try_from(seq & 0xffff).unwrap();
    IpNet::V6(Ipv6Net::new(Ipv6Addr::new(0xfd00, 0, 0, 0, hi, lo, i, 0), 112).unwrap())
}

/// Transaction `seq` creates tunnel `t-seq` with its routes, and every fourth one also
/// deletes an earlier tunnel with its routes: several records change together.
fn deleted_by(seq: u64) -> Option<u64> {
    (seq % 4 == 3).then(|| seq - 2)
}

#[test]
#[ignore = "the child side of committed_transactions_survive_kill_9; runs only when spawned by it"]
fn durability_child_writer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let db = Db::new(Arc::new(RedbStore::open(Path::new(&path)).unwrap()));
    let vnet = db.read().unwrap().default_vnet().unwrap().unwrap();
    // Padding makes each transaction span several pages, so kills land inside page writes.
    let padding = "x".repeat(2048);
    loop {
        let seq = db.revision().get() - BASE;
        db.update(|t| {
            let tunnel = Tunnel::new(format!("t-{seq}"), TAG, &TunnelSecret::generate());
            t.put(&tunnel)?;
            for i in 0..ROUTES_PER_TXN {
                let mut route = Route::new(route_net(seq, i), vnet.id, tunnel.id);
                route.comment = format!("seq {seq} route {i} {padding}");
                t.put(&route)?;
            }
            if let Some(victim) = deleted_by(seq) {
                let old = t.tunnel_by_name(&format!("t-{victim}"))?.unwrap();
                for route in t.list::<Route>()? {
                    if route.tunnel_id == old.id {
                        t.delete::<Route>(route.id)?;
                    }
                }
                t.delete::<Tunnel>(old.id)?;
            }
            Ok::<_, zt_edge::StoreError>(())
        })
        .unwrap();
        println!("committed {seq}");
    }
}

/// Checks the whole state and returns how many writer transactions it holds.
fn check_state(path: &Path) -> u64 {
    let db = Db::new(Arc::new(
        RedbStore::open(path).expect("database opens after kill -9"),
    ));
    let r = db.read().unwrap();
    let committed = r.revision().get() - BASE;
    let mut expected: BTreeSet<u64> = (0..committed).collect();
    for seq in 0..committed {
        if let Some(victim) = deleted_by(seq) {
            expected.remove(&victim);
        }
    }
    let tunnels = r.list::<Tunnel>().unwrap();
    let names: BTreeSet<String> = tunnels.iter().map(|t| t.name.clone()).collect();
    let want: BTreeSet<String> = expected.iter().map(|s| format!("t-{s}")).collect();
    assert_eq!(names, want, "tunnels after {committed} transactions");
    let routes = r.list::<Route>().unwrap();
    assert_eq!(routes.len(), expected.len() * usize::from(ROUTES_PER_TXN));
    for seq in &expected {
        let tunnel = r.tunnel_by_name(&format!("t-{seq}")).unwrap().unwrap();
        for i in 0..ROUTES_PER_TXN {
            let route = r
                .route_by_network(r.default_vnet().unwrap().unwrap().id, route_net(*seq, i))
                .unwrap()
                .unwrap_or_else(|| panic!("route {i} of transaction {seq} missing"));
            assert_eq!(route.tunnel_id, tunnel.id, "route {i} of transaction {seq}");
            assert!(route.comment.starts_with(&format!("seq {seq} route {i} ")));
        }
    }
    committed
}

/// A small generator for kill delays; the seed is printed so a failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn committed_transactions_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state.redb");
    {
        let db = Db::new(Arc::new(RedbStore::open(&path).unwrap()));
        let mut vnet = VirtualNetwork::new("default");
        vnet.is_default = true;
        let (_, rev) = db.update(|t| t.put(&vnet)).unwrap();
        assert_eq!(rev.get(), BASE);
    }
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("kill schedule seed {seed}");
    let mut rng = Lcg(seed);
    let exe = std::env::current_exe().unwrap();
    // The child test's name as the test harness knows it: its path without the crate.
    let child_test = format!(
        "{}::durability_child_writer",
        module_path!().split_once("::").map_or("", |(_, m)| m)
    );
    let mut committed_before = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                &child_test,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(seq) = line.strip_prefix("committed ") {
                    if tx.send(seq.parse::<u64>().unwrap()).is_err() {
                        break;
                    }
                }
            }
        });
        // Odd rounds kill at a random moment from the start (which may fall inside the
        // open and its crash recovery); even rounds wait for a first commit, then kill.
        let started = Instant::now();
        if round % 2 == 0 {
            let first = rx.recv_timeout(FIRST_COMMIT_DEADLINE);
            assert!(
                first.is_ok(),
                "round {round}: no commit within {FIRST_COMMIT_DEADLINE:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(rng.below(150)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "the child was killed, not finished");
        reader.join().unwrap();
        let acked: Vec<u64> = rx.try_iter().collect();
        let committed = check_state(&path);
        println!(
            "round {round}: killed after {:?}, {} commits acknowledged this round, {committed} in the database",
            started.elapsed(),
            acked.len() + usize::from(round % 2 == 0)
        );
        if let Some(last) = acked.iter().max() {
            assert!(
                committed > *last,
                "acknowledged commit {last} lost (database holds {committed})"
            );
        }
        assert!(committed >= committed_before, "revision went backwards");
        committed_before = committed;
    }
    assert!(committed_before > 0);
}
