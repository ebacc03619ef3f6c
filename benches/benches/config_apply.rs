//! Configuration as code: plan and apply of a file of 1,000 rules and 10 lists of 1,000
//! IP items (10,000 items), on the embedded store in a temporary directory, against
//! baselines measured in the same run. Figures and commands: BENCHMARKS.md.
//!
//! - **parse** — reading and checking the YAML file alone (zt-diag, serde, the file's own
//!   checks, the list items through zt-policy): what `zt policy test` pays before anything;
//! - **compile** — compiling the file's 1,000 rules against its lists, which every apply
//!   does once (and which the admin API does on every single rule change);
//! - **plan/create-all** — the plan against an edge with none of it;
//! - **plan/no-change** — the plan against an edge that has all of it (`zt plan` in CI);
//! - **apply/create-all** — the apply, one transaction (with its fsync) on a fresh store;
//! - **apply/one-update** — the apply of one edited rule on a store that has the rest;
//! - printed after the criterion groups: the same 1,010 records written one transaction
//!   per record (what a script calling the admin API one create at a time makes the store
//!   do, without the HTTP and the per-call policy compile), and every ratio.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BatchSize, Criterion};
use zt_edge::config::{self, ConfigFile, PlanOptions};
use zt_edge::{Db, List, ListKind, RedbStore, Rule};

const LISTS: usize = 10;
const ITEMS: usize = 1_000;
const RULES: usize = 1_000;
const TAG: &str = "0123456789abcdef0123456789abcdef";

/// The file: 10 IP lists of 1,000 /32s each, 1,000 l4 rules each naming one list by slug
/// with a port and an identity condition, as a team's file would.
fn file_text() -> String {
    let mut t = String::from("version: 1\nlists:\n");
    for k in 0..LISTS {
        t.push_str(&format!(
            "  - name: servers {k}\n    slug: servers_{k}\n    type: IP\n    items:\n"
        ));
        for i in 0..ITEMS {
            t.push_str(&format!("      - 10.{k}.{}.{}/32\n", i / 256, i % 256));
        }
    }
    t.push_str("rules:\n");
    for r in 0..RULES {
        let action = if r % 10 == 9 { "block" } else { "allow" };
        t.push_str(&format!(
            "  - name: rule {r}\n    precedence: {}\n    action: {action}\n    filters: [l4]\n    traffic: net.dst.ip in $servers_{} and net.dst.port == {}\n    identity: any(identity.groups[*] == \"team-{}\")\n",
            100 + r,
            r % LISTS,
            1000 + r,
            r % 50
        ));
    }
    t
}

fn fresh_db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
    let db = Db::new(Arc::new(store));
    db.update(|t| {
        let mut v = zt_edge::VirtualNetwork::new("default");
        v.is_default = true;
        t.put(&v)
    })
    .unwrap();
    (dir, db)
}

fn none(_: uuid::Uuid) -> usize {
    0
}

fn apply(db: &Db, file: &ConfigFile) {
    let plan = config::plan(db, file, PlanOptions::default(), &none).unwrap();
    config::apply(
        db,
        file,
        PlanOptions::default(),
        &plan.expected(),
        &none,
        TAG,
    )
    .unwrap();
}

fn parse(text: &str) -> ConfigFile {
    config::parse(Path::new("bench.yaml"), text).unwrap()
}

fn compile(file: &ConfigFile) {
    // The offline policy tests compile the file's policy exactly as an apply checks it.
    let mut f = file.clone();
    f.tests.clear();
    black_box(config::run_policy_tests(&f).unwrap());
}

fn edited(text: &str) -> ConfigFile {
    parse(&text.replace(
        "  - name: rule 500\n    precedence: 600\n",
        "  - name: rule 500\n    precedence: 99999\n",
    ))
}

fn bench(c: &mut Criterion) {
    let text = file_text();
    let file = parse(&text);
    let mut g = c.benchmark_group("config");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("parse", |b| b.iter(|| black_box(parse(&text))));
    g.bench_function("compile", |b| b.iter(|| compile(&file)));
    let (_d0, empty) = fresh_db();
    g.bench_function("plan/create-all", |b| {
        b.iter(|| black_box(config::plan(&empty, &file, PlanOptions::default(), &none).unwrap()))
    });
    let (_d1, full) = fresh_db();
    apply(&full, &file);
    g.bench_function("plan/no-change", |b| {
        b.iter(|| {
            let p = config::plan(&full, &file, PlanOptions::default(), &none).unwrap();
            assert!(p.is_empty());
        })
    });
    g.bench_function("apply/create-all", |b| {
        b.iter_batched(
            fresh_db,
            |(_d, db)| apply(&db, &file),
            BatchSize::PerIteration,
        )
    });
    let one = edited(&text);
    let other = file.clone();
    let mut flip = false;
    g.bench_function("apply/one-update", |b| {
        b.iter(|| {
            flip = !flip;
            apply(&full, if flip { &one } else { &other });
        })
    });
    g.finish();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(n: usize, mut f: impl FnMut()) -> Duration {
    median(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

/// The summary with the one-record-per-transaction baseline and the ratios.
fn summary() {
    let text = file_text();
    let file = parse(&text);
    let parse_t = time(5, || {
        black_box(parse(&text));
    });
    let compile_t = time(5, || compile(&file));
    let (_d, empty) = fresh_db();
    let plan_all = time(5, || {
        black_box(config::plan(&empty, &file, PlanOptions::default(), &none).unwrap());
    });
    let apply_all = time(3, || {
        let (_d, db) = fresh_db();
        apply(&db, &file);
    });
    let (_d2, full) = fresh_db();
    apply(&full, &file);
    let plan_none = time(5, || {
        black_box(config::plan(&full, &file, PlanOptions::default(), &none).unwrap());
    });
    // Baseline: the same records, one transaction (one fsync) each.
    let (_d3, db) = fresh_db();
    let t = Instant::now();
    for l in &file.lists {
        let mut list = List::new(&l.name, ListKind::Ip, l.items.clone());
        list.slug = l.slug.clone();
        db.update(|txn| txn.put(&list)).unwrap();
    }
    for r in &file.rules {
        let mut rule = Rule::new(&r.name, r.precedence, &r.action, r.filters.clone());
        rule.traffic = r.traffic.clone();
        rule.identity = r.identity.clone();
        db.update(|txn| txn.put(&rule)).unwrap();
    }
    let one_by_one = t.elapsed();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "MEASURED config_apply ({RULES} rules, {} list items, {} bytes of YAML): parse {:.1} ms, \
         compile {:.1} ms, plan/create-all {:.1} ms, apply/create-all {:.1} ms, plan/no-change \
         {:.1} ms; one record per transaction (1,010 commits) {:.1} ms",
        LISTS * ITEMS,
        text.len(),
        ms(parse_t),
        ms(compile_t),
        ms(plan_all),
        ms(apply_all),
        ms(plan_none),
        ms(one_by_one)
    );
    println!(
        "MEASURED config_apply ratios: apply/parse {:.2}, apply/compile {:.2}, plan-no-change/parse {:.2}, \
         one-by-one/apply {:.1}",
        apply_all.as_secs_f64() / parse_t.as_secs_f64(),
        apply_all.as_secs_f64() / compile_t.as_secs_f64(),
        plan_none.as_secs_f64() / parse_t.as_secs_f64(),
        one_by_one.as_secs_f64() / apply_all.as_secs_f64()
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and needs no figures.
    if std::env::args().any(|a| a == "--bench") {
        summary();
    }
}
