//! The configuration file against a real store: located errors for hostile files (with the
//! memory their parse took, measured as the peak resident size of a child process that
//! parses only them),
//! record versions, plan and apply (all or nothing, refused when a planned resource
//! changed, not when another did), drift and export.

use std::path::Path;

use zt_edge::config::{self, Action, ApplyError, ConfigFile, PlanOptions};
use zt_edge::{Db, RedbStore, Rule, StoreError, Tunnel, User};

const SEED: &str = include_str!("../../../examples/config/seed.yaml");

fn db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
    let db = Db::new(std::sync::Arc::new(store));
    // Every edge has a default virtual network; the state layer makes it at first start.
    db.update(|t| {
        let mut v = zt_edge::VirtualNetwork::new("default");
        v.is_default = true;
        t.put(&v)
    })
    .unwrap();
    (dir, db)
}

fn parse(text: &str) -> Result<ConfigFile, config::ConfigError> {
    config::parse(Path::new("zt.yaml"), text)
}

const TAG: &str = "0123456789abcdef0123456789abcdef";

fn no_connectors(_: uuid::Uuid) -> usize {
    0
}

fn apply(db: &Db, file: &ConfigFile, options: PlanOptions) -> Result<config::Outcome, ApplyError> {
    let plan = config::plan(db, file, options, &no_connectors).unwrap();
    config::apply(db, file, options, &plan.expected(), &no_connectors, TAG)
}

#[test]
fn versions_start_at_one_and_move_only_with_their_record() {
    let (_d, db) = db();
    let rule = Rule::new("r", 1, "allow", vec!["l4".into()]);
    let other = Rule::new("o", 2, "allow", vec!["l4".into()]);
    db.update(|t| {
        t.put(&rule)?;
        t.put(&other)
    })
    .unwrap();
    db.update(|t| t.put(&rule)).unwrap();
    let r = db.read().unwrap();
    assert_eq!(r.get::<Rule>(rule.id).unwrap().unwrap().version, 2);
    assert_eq!(r.get::<Rule>(other.id).unwrap().unwrap().version, 1);
    // A record written before versions existed reads as version 0.
    let json = serde_json::json!({
        "id": uuid::Uuid::new_v4(), "email": "old@example.com", "groups": [],
        "created_at": "2026-01-01T00:00:00Z",
    });
    if let Ok(u) = serde_json::from_value::<User>(json) {
        assert_eq!(u.version, 0);
    }
}

#[test]
fn the_seed_applies_then_plans_no_change_and_exports_the_same_resources() {
    let (_d, db) = db();
    let file = parse(SEED).unwrap();
    let plan = config::plan(&db, &file, PlanOptions::default(), &no_connectors).unwrap();
    let creates: Vec<&str> = plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Create)
        .map(|c| c.resource.as_str())
        .collect();
    assert_eq!(
        creates,
        [
            "tunnel/k8s_zero_trust_tunnel",
            "list/Kubernetes API IPs",
            "user/alice@example.com",
            "route/default/198.51.100.101/32",
            "route/default/2001:db8::101/128",
            "rule/Don't inspect Kubernetes API",
            "rule/k8s-admins reach the Kubernetes API",
        ]
    );
    let outcome = apply(&db, &file, PlanOptions::default()).unwrap();
    assert_eq!(outcome.credentials.len(), 1);
    assert_eq!(outcome.credentials[0].0, "k8s_zero_trust_tunnel");
    let again = config::plan(&db, &file, PlanOptions::default(), &no_connectors).unwrap();
    assert!(again.is_empty(), "{:?}", again.changes);
    let rev = db.revision();
    // Re-applying is a no-op.
    let outcome = apply(&db, &file, PlanOptions::default()).unwrap();
    assert!(outcome.changes.is_empty());
    assert!(outcome.credentials.is_empty());
    assert_eq!(
        db.read().unwrap().list::<Tunnel>().unwrap().len(),
        1,
        "no second tunnel"
    );
    assert_eq!(db.revision(), rev, "a no-op apply commits nothing");

    let mut exported = config::export(&db).unwrap();
    let mut want = file.clone();
    want.tests.clear();
    // The export names the default network the file left implicit.
    assert_eq!(exported.vnets.len(), 1);
    assert!(exported.vnets[0].default);
    exported.vnets.clear();
    assert_eq!(exported.tunnels, want.tunnels);
    assert_eq!(exported.routes, want.routes);
    assert_eq!(exported.lists, want.lists);
    assert_eq!(exported.users, want.users);
    let mut got_rules = exported.rules.clone();
    got_rules.sort_by(|a, b| a.name.cmp(&b.name));
    let mut want_rules = want.rules.clone();
    want_rules.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(got_rules, want_rules);
    // And the export, written as YAML and read back, plans no change.
    let text = config::to_yaml(&config::export(&db).unwrap());
    let back = parse(&text).unwrap();
    assert!(
        config::plan(&db, &back, PlanOptions::default(), &no_connectors)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn an_edited_comment_is_exactly_one_update() {
    let (_d, db) = db();
    let file = parse(SEED).unwrap();
    apply(&db, &file, PlanOptions::default()).unwrap();
    let edited = parse(&SEED.replace(
        "comment: Kubernetes API Server (IPv4)",
        "comment: Kubernetes API Server (IPv4, prod)",
    ))
    .unwrap();
    let plan = config::plan(&db, &edited, PlanOptions::default(), &no_connectors).unwrap();
    assert_eq!(plan.changes.len(), 1, "{:?}", plan.changes);
    let c = &plan.changes[0];
    assert_eq!(c.resource, "route/default/198.51.100.101/32");
    assert_eq!(c.action, Action::Update);
    assert_eq!(c.fields.len(), 1);
    assert_eq!(c.fields[0].field, "comment");
    assert_eq!(c.fields[0].after, "Kubernetes API Server (IPv4, prod)");
    assert_eq!(c.version, Some(1));
    apply(&db, &edited, PlanOptions::default()).unwrap();
    let route = db
        .read()
        .unwrap()
        .list::<zt_edge::Route>()
        .unwrap()
        .into_iter()
        .find(|r| r.network.to_string() == "198.51.100.101/32")
        .unwrap();
    assert_eq!(route.comment, "Kubernetes API Server (IPv4, prod)");
    assert_eq!(route.version, 2);
}

#[test]
fn a_concurrent_change_to_a_planned_resource_fails_the_apply_and_nothing_is_written() {
    let (_d, db) = db();
    let file = parse(SEED).unwrap();
    apply(&db, &file, PlanOptions::default()).unwrap();
    let edited = parse(
        &SEED
            .replace("precedence: 1000\n", "precedence: 1010\n")
            .replace("comment: Kubernetes API Server (IPv6)", "comment: v6"),
    )
    .unwrap();
    let plan = config::plan(&db, &edited, PlanOptions::default(), &no_connectors).unwrap();
    assert_eq!(plan.changes.len(), 2);
    // Another admin changes the rule the plan updates.
    let rule_name = "k8s-admins reach the Kubernetes API";
    db.update(|t| {
        let mut r = t.rule_by_name(rule_name)?.unwrap();
        r.description = "edited by hand".into();
        t.put(&r)
    })
    .unwrap();
    let before = config::export(&db).unwrap();
    let err = config::apply(
        &db,
        &edited,
        PlanOptions::default(),
        &plan.expected(),
        &no_connectors,
        TAG,
    )
    .unwrap_err();
    println!("refused: {err}");
    match &err {
        ApplyError::Changed {
            resource,
            planned,
            now,
        } => {
            assert_eq!(resource, &format!("rule/{rule_name}"));
            assert_eq!((*planned, *now), (Some(1), Some(2)));
        }
        other => panic!("expected Changed, got {other:?}"),
    }
    assert!(err.to_string().contains("nothing was applied"));
    // Not half-applied: the route's comment did not change either.
    assert_eq!(config::export(&db).unwrap(), before);

    // A change to a resource the plan does not touch does not block it.
    let plan = config::plan(&db, &edited, PlanOptions::default(), &no_connectors).unwrap();
    db.update(|t| {
        let mut r = Rule::new("someone else's", 5000, "block", vec!["l4".into()]);
        r.traffic = Some("net.dst.port == 25".into());
        t.put(&r)
    })
    .unwrap();
    config::apply(
        &db,
        &edited,
        PlanOptions::default(),
        &plan.expected(),
        &no_connectors,
        TAG,
    )
    .unwrap();
    let r = db.read().unwrap();
    assert_eq!(r.rule_by_name(rule_name).unwrap().unwrap().precedence, 1010);
    // The hand edit of the description is overwritten only because this plan was made
    // after it, and showed it.
    assert_eq!(
        r.rule_by_name(rule_name).unwrap().unwrap().description,
        "kubectl from the k8s-admins group to the API servers"
    );
    assert!(r.rule_by_name("someone else's").unwrap().is_some());
}

#[test]
fn a_rule_that_does_not_compile_refuses_the_whole_apply() {
    let (_d, db) = db();
    // The reader refuses such a file with the line; the edge must refuse it too when a
    // caller sends it straight to the API.
    let mut bad = parse(SEED).unwrap();
    bad.rules[1].traffic = Some("net.dst.prot == 443".into());
    let err = apply(&db, &bad, PlanOptions::default()).unwrap_err();
    println!("refused: {err}");
    assert!(
        err.to_string().contains("did you mean `net.dst.port`?"),
        "{err}"
    );
    assert!(err.to_string().contains("nothing was applied"), "{err}");
    let r = db.read().unwrap();
    assert!(r.list::<Tunnel>().unwrap().is_empty());
    assert!(r.list::<Rule>().unwrap().is_empty());
    assert!(r.list::<zt_edge::List>().unwrap().is_empty());
}

#[test]
fn prune_deletes_what_the_file_dropped_and_spares_users_it_never_managed() {
    let (_d, db) = db();
    let file = parse(SEED).unwrap();
    apply(&db, &file, PlanOptions::default()).unwrap();
    let bob = User::new("bob@example.com", vec!["sre".into()]);
    db.update(|t| t.put(&bob)).unwrap();
    // The file drops the IPv6 route, the "off" rule and alice.
    let mut smaller = file.clone();
    smaller
        .routes
        .retain(|r| r.network.to_string() != "2001:db8::101/128");
    smaller
        .rules
        .retain(|r| r.name != "Don't inspect Kubernetes API");
    smaller.users.clear();
    smaller.tests.clear();
    let kept = config::plan(&db, &smaller, PlanOptions::default(), &no_connectors).unwrap();
    assert!(kept.is_empty());
    assert_eq!(kept.unmanaged.len(), 3, "{:?}", kept.unmanaged);
    let prune = PlanOptions {
        prune: true,
        force: false,
    };
    let plan = config::plan(&db, &smaller, prune, &no_connectors).unwrap();
    let mut deleted: Vec<&str> = plan.changes.iter().map(|c| c.resource.as_str()).collect();
    deleted.sort_unstable();
    assert_eq!(
        deleted,
        [
            "route/default/2001:db8::101/128",
            "rule/Don't inspect Kubernetes API",
            "user/alice@example.com",
        ]
    );
    assert!(plan.changes.iter().all(|c| c.action == Action::Delete));
    apply(&db, &smaller, prune).unwrap();
    let r = db.read().unwrap();
    assert!(r.user_by_email("bob@example.com").unwrap().is_some());
    assert!(r.user_by_email("alice@example.com").unwrap().is_none());
    assert_eq!(r.list::<zt_edge::Route>().unwrap().len(), 1);
}

#[test]
fn a_tunnel_with_live_connectors_is_pruned_only_with_force() {
    let (_d, db) = db();
    let file = parse(SEED).unwrap();
    apply(&db, &file, PlanOptions::default()).unwrap();
    let empty = parse("version: 1\n").unwrap();
    let two = |_: uuid::Uuid| 2usize;
    let prune = PlanOptions {
        prune: true,
        force: false,
    };
    let plan = config::plan(&db, &empty, prune, &two).unwrap();
    let t = plan
        .changes
        .iter()
        .find(|c| c.resource == "tunnel/k8s_zero_trust_tunnel")
        .unwrap();
    assert!(t.blocked.as_deref().unwrap().contains("--force"));
    let err = config::apply(&db, &empty, prune, &plan.expected(), &two, TAG).unwrap_err();
    println!("refused: {err}");
    assert!(matches!(err, ApplyError::Blocked { .. }), "{err:?}");
    assert_eq!(db.read().unwrap().list::<Rule>().unwrap().len(), 2);
    let force = PlanOptions {
        prune: true,
        force: true,
    };
    let plan = config::plan(&db, &empty, force, &two).unwrap();
    config::apply(&db, &empty, force, &plan.expected(), &two, TAG).unwrap();
    let r = db.read().unwrap();
    assert!(r.tunnel_by_name("k8s_zero_trust_tunnel").unwrap().is_none());
    assert!(r.list::<Rule>().unwrap().is_empty());
}

#[test]
fn drift_names_each_resource_changed_outside_the_file() {
    let (_d, db) = db();
    assert!(config::drift(&db).unwrap().is_none());
    let file = parse(SEED).unwrap();
    apply(&db, &file, PlanOptions::default()).unwrap();
    let (applied, drift) = config::drift(&db).unwrap().unwrap();
    assert_eq!(applied.file_hash, config::file_hash(&file));
    assert!(drift.is_empty(), "{drift:?}");
    db.update(|t| {
        let mut r = t.rule_by_name("Don't inspect Kubernetes API")?.unwrap();
        r.enabled = false;
        t.put(&r)?;
        let mut extra = Rule::new("added by hand", 7, "allow", vec!["l4".into()]);
        extra.traffic = Some("net.dst.port == 8443".into());
        t.put(&extra)?;
        // A user added with `zt user add` is not drift.
        t.put(&User::new("carol@example.com", vec![]))
    })
    .unwrap();
    let (_, drift) = config::drift(&db).unwrap().unwrap();
    let got: Vec<(String, String)> = drift
        .iter()
        .map(|d| (d.resource.clone(), d.what.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "rule/Don't inspect Kubernetes API".to_owned(),
                "changed".to_owned()
            ),
            ("rule/added by hand".to_owned(), "created".to_owned()),
        ]
    );
}

/// Peak resident set size of this process (`VmHWM`), in KiB.
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn hostile_cases() -> Vec<(&'static str, String, &'static str, Option<usize>)> {
    let base = "version: 1\ntunnels:\n  - name: prod\n";
    let mut deep = String::from("version: 1\nrules: ");
    deep.push_str(&"[".repeat(10_000));
    // Billion laughs: nine levels of nine aliases each (9^9 strings if expanded), written
    // where the schema reads values, so the reader must meet the aliases.
    let mut bomb = String::from(
        "version: 1\nusers:\n  - email: a0@example.com\n    groups: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        bomb.push_str(&format!(
            "  - email: a{i}@example.com\n    groups: &a{i} [{}]\n",
            [prev.as_str(); 9].join(",")
        ));
    }
    let mut oversized =
        String::from("version: 1\nlists:\n  - name: big\n    type: IP\n    items:\n");
    for i in 0..(config::MAX_LIST_ITEMS + 1) {
        oversized.push_str(&format!(
            "      - 10.{}.{}.{}/32\n",
            i >> 16,
            (i >> 8) & 255,
            i & 255
        ));
    }
    vec![
        (
            "unknown field",
            format!("{base}routes:\n  - network: 10.0.0.0/8\n    tunnel: prod\n    coment: typo\n"),
            "unknown field `coment`",
            Some(7),
        ),
        (
            "duplicate names",
            format!("{base}  - name: prod\n"),
            "name `prod` is used twice",
            Some(4),
        ),
        (
            "dangling tunnel name",
            format!("{base}routes:\n  - network: 10.0.0.0/8\n    tunnel: prdo\n"),
            "no tunnel named `prdo` in `tunnels`; did you mean `prod`?",
            Some(6),
        ),
        (
            "dangling slug",
            format!(
                "{base}lists:\n  - name: ips\n    slug: ips\n    type: IP\n    items: [10.0.0.1]\nrules:\n  - name: r\n    precedence: 1\n    action: allow\n    filters: [l4]\n    traffic: net.dst.ip in $isp\n"
            ),
            "`$isp` names no list slug in `lists`; did you mean `ips`?",
            Some(14),
        ),
        (
            "bad CIDR",
            format!("{base}routes:\n  - network: 10.0.0.300/8\n    tunnel: prod\n"),
            "10.0.0.300/8",
            Some(5),
        ),
        (
            "host bits",
            format!("{base}routes:\n  - network: 10.0.0.1/8\n    tunnel: prod\n"),
            "host bits set; routes name a network, so write 10.0.0.0/8",
            Some(5),
        ),
        (
            "bad list item",
            format!("{base}lists:\n  - name: ips\n    type: IP\n    items: [10.0.0.1, not-an-ip]\n"),
            "not-an-ip",
            Some(7),
        ),
        (
            "bad expression",
            format!(
                "{base}lists:\n  - name: ips\n    slug: ips\n    type: IP\n    items: [10.0.0.1]\nrules:\n  - name: r\n    precedence: 1\n    action: allow\n    filters: [l4]\n    traffic: net.dst.ip in $ips and net.dst.prot == 443\n"
            ),
            "unknown field `net.dst.prot`; did you mean `net.dst.port`? (rule `r`, l4 filter)",
            Some(14),
        ),
        (
            "duplicate precedence",
            format!(
                "{base}rules:\n  - name: a\n    precedence: 1\n    action: allow\n    filters: [l4]\n  - name: b\n    precedence: 1\n    action: block\n    filters: [l4]\n"
            ),
            "rules `a` and `b` both have precedence 1 in the l4 filter",
            Some(9),
        ),
        ("oversized list", oversized, "over the limit of 20000 per list", Some(3)),
        ("deep nesting", deep, "over the limit of 16", None),
        ("alias bomb", bomb, "invalid type: sequence, expected a string", Some(4)),
        ("wrong version", "version: 2\n".into(), "format version 2 is not known", Some(1)),
    ]
}

/// The child of [`hostile_files_get_located_errors_in_bounded_memory`]: parses each
/// hostile file and prints the growth of this process's peak resident size.
#[test]
#[ignore = "run by hostile_files_get_located_errors_in_bounded_memory in a process of its own"]
fn hostile_files_child() {
    let start = vm_hwm_kib();
    for (what, text, needle, line) in hostile_cases() {
        let before = vm_hwm_kib();
        let result = parse(&text);
        let after = vm_hwm_kib();
        let err = result.unwrap_err();
        let report = err.report();
        println!(
            "MEASURED hostile file `{what}` ({} bytes): refused; peak RSS {} KiB -> {} KiB\n{report}\n",
            text.len(),
            before,
            after
        );
        assert!(report.starts_with("zt.yaml"), "{report}");
        assert!(report.contains(needle), "{what}: {report}");
        if let Some(line) = line {
            assert_eq!(err.location.line, Some(line), "{what}: {report}");
            assert!(err.excerpt.is_some(), "{what}: no underline in {report}");
        }
    }
    println!("PEAK-GROWTH-KIB {}", vm_hwm_kib().saturating_sub(start));
}

#[test]
fn hostile_files_get_located_errors_in_bounded_memory() {
    let child_test = format!(
        "{}::hostile_files_child",
        module_path!().split_once("::").map_or("", |(_, m)| m)
    );
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &child_test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let growth: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PEAK-GROWTH-KIB "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the child printed its peak growth");
    println!("MEASURED hostile files: peak resident size grew by {growth} KiB over all cases");
    // Bounded: every hostile file together costs less than 64 MiB of peak memory.
    assert!(growth < 64 * 1024, "peak grew by {growth} KiB");
}

#[test]
fn a_file_over_the_size_limit_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.yaml");
    let text = format!("version: 1\n#{}\n", "x".repeat(config::MAX_FILE_BYTES));
    std::fs::write(&path, text).unwrap();
    let err = config::load(&path).unwrap_err();
    println!("{}", err.report());
    assert!(
        err.to_string()
            .contains("larger than the limit of 1048576 bytes"),
        "{err}"
    );
}

#[test]
fn lists_from_a_file_are_read_relative_to_the_config_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ips.txt"),
        "# API servers\n198.51.100.101/32\n\n2001:db8::101/128  # v6\n",
    )
    .unwrap();
    let path = dir.path().join("zt.yaml");
    std::fs::write(
        &path,
        "version: 1\nlists:\n  - name: ips\n    type: IP\n    items_file: ips.txt\n",
    )
    .unwrap();
    let file = config::load(&path).unwrap();
    assert_eq!(
        file.lists[0].items,
        ["198.51.100.101/32", "2001:db8::101/128"]
    );
    assert_eq!(file.lists[0].items_file, None);
    std::fs::write(dir.path().join("ips.txt"), "10.0.0.1\nnope\n").unwrap();
    let err = config::load(&path).unwrap_err();
    println!("{}", err.report());
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn policy_tests_name_the_case_the_decision_and_the_rule() {
    let file = parse(SEED).unwrap();
    let results = config::run_policy_tests(&file).unwrap();
    assert_eq!(results.len(), 4);
    assert!(results.iter().all(|r| r.passed), "{results:?}");
    assert_eq!(
        results[0].rule.as_deref(),
        Some("k8s-admins reach the Kubernetes API")
    );
    assert_eq!(results[0].http.as_deref(), Some("off"));
    let failing = parse(&SEED.replace(
        "    destination: 198.51.100.101:22\n    expect: block",
        "    destination: 198.51.100.101:22\n    expect: allow",
    ))
    .unwrap();
    let results = config::run_policy_tests(&failing).unwrap();
    let bad: Vec<_> = results.iter().filter(|r| !r.passed).collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(
        bad[0].name,
        "alice cannot reach another port of the API server"
    );
    assert_eq!(bad[0].decision, "block");
    assert_eq!(bad[0].rule, None);
    assert_eq!(
        bad[0].mismatch.as_deref(),
        Some("expected allow, got block")
    );
}

#[test]
fn store_errors_name_the_resource() {
    let (_d, db) = db();
    // A list whose name a live list already has under another slug is a conflict the
    // file cannot see; the store's refusal names the resource.
    db.update(|t| {
        let mut l = zt_edge::List::new("other", zt_edge::ListKind::Ip, vec![]);
        l.slug = Some("k8s_apiserver_ips".into());
        t.put(&l)
    })
    .unwrap();
    let file = parse(SEED).unwrap();
    let err = apply(&db, &file, PlanOptions::default()).unwrap_err();
    println!("refused: {err}");
    assert!(
        matches!(&err, ApplyError::Store { resource, source: StoreError::Conflict { .. } } if resource == "list/Kubernetes API IPs"),
        "{err:?}"
    );
    assert!(db.read().unwrap().list::<Tunnel>().unwrap().is_empty());
}

/// A check of `value` against the subset of JSON Schema that `docs/zt-config.schema.json`
/// uses (type, required, properties, additionalProperties, items, enum, lengths, bounds);
/// the errors name the JSON path. Deliberately small: no validator crate in the workspace.
fn schema_errors(
    schema: &serde_json::Value,
    value: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
) {
    use serde_json::Value as V;
    let ty = schema["type"].as_str().unwrap_or("");
    let ok = match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "boolean" => value.is_boolean(),
        _ => true,
    };
    if !ok {
        out.push(format!("{path}: expected {ty}, found {value}"));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            out.push(format!("{path}: {value} is not one of {allowed:?}"));
        }
    }
    match value {
        V::Object(map) => {
            for r in schema["required"].as_array().into_iter().flatten() {
                if !map.contains_key(r.as_str().unwrap()) {
                    out.push(format!("{path}: missing required {r}"));
                }
            }
            for (k, v) in map {
                match schema["properties"].get(k) {
                    Some(sub) => schema_errors(sub, v, &format!("{path}.{k}"), out),
                    None if schema["additionalProperties"] == V::Bool(false) => {
                        out.push(format!("{path}: property `{k}` is not in the schema"))
                    }
                    None => {}
                }
            }
        }
        V::Array(items) => {
            if let Some(max) = schema["maxItems"].as_u64() {
                if items.len() as u64 > max {
                    out.push(format!(
                        "{path}: {} items, over maxItems {max}",
                        items.len()
                    ));
                }
            }
            for (i, item) in items.iter().enumerate() {
                schema_errors(&schema["items"], item, &format!("{path}[{i}]"), out);
            }
        }
        V::String(s) => {
            let n = s.chars().count() as u64;
            if schema["minLength"].as_u64().is_some_and(|m| n < m) {
                out.push(format!("{path}: shorter than minLength"));
            }
            if schema["maxLength"].as_u64().is_some_and(|m| n > m) {
                out.push(format!("{path}: longer than maxLength"));
            }
        }
        V::Number(num) => {
            if let Some(x) = num.as_f64() {
                if schema["minimum"].as_f64().is_some_and(|m| x < m)
                    || schema["maximum"].as_f64().is_some_and(|m| x > m)
                {
                    out.push(format!("{path}: {x} is out of bounds"));
                }
            }
        }
        _ => {}
    }
}

fn yaml_as_json(text: &str) -> serde_json::Value {
    let v: serde_norway::Value = serde_norway::from_str(text).unwrap();
    serde_json::to_value(v).unwrap()
}

#[test]
fn the_json_schema_accepts_the_example_files_and_every_field_the_format_writes() {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../../docs/zt-config.schema.json")).unwrap();
    let check = |what: &str, v: &serde_json::Value| {
        let mut errors = Vec::new();
        schema_errors(&schema, v, "$", &mut errors);
        assert!(errors.is_empty(), "{what}: {errors:#?}");
    };
    check("examples/config/seed.yaml", &yaml_as_json(SEED));
    // An export writes what the schema describes.
    let (_d, db) = db();
    apply(&db, &parse(SEED).unwrap(), PlanOptions::default()).unwrap();
    let exported = config::to_yaml(&config::export(&db).unwrap());
    check("an export", &yaml_as_json(&exported));
    // Every field the format has, set: the schema names them all.
    let full = yaml_as_json(
        "version: 1
vnets: [{name: v, comment: c, default: true}]
tunnels: [{name: t}]
routes: [{network: 10.0.0.0/8, tunnel: t, vnet: v, comment: c}]
lists: [{name: l, slug: s, type: IP, items: [10.0.0.1], items_file: f.txt, description: d}]
rules: [{name: r, description: d, precedence: 1, action: allow, enabled: true, filters: [l4],
         traffic: 'net.dst.port == 1', identity: 'identity.email == \"a@b.c\"', device_posture: 'device.posture.x'}]
users: [{email: a@b.c, groups: [g]}]
service_tokens: [{name: ci, groups: [g], expires_at: '2027-06-30T00:00:00Z'}]
tests: [{name: n, user: a@b.c, groups: [g], source: 192.0.2.1, destination: '10.0.0.1:1',
         protocol: tcp, host: h, expect: allow, rule: r, http: 'off'}]
",
    );
    let as_file: ConfigFile = serde_json::from_value(full.clone()).unwrap();
    check("every field", &serde_json::to_value(&as_file).unwrap());
    check("every field as written", &full);
    // And the check is not vacuous: a field the format does not have is refused.
    let mut errors = Vec::new();
    schema_errors(
        &schema,
        &yaml_as_json("version: 1\ntunnels: [{name: t, secret: x}]\n"),
        "$",
        &mut errors,
    );
    assert_eq!(
        errors,
        ["$.tunnels[0]: property `secret` is not in the schema"]
    );
}

#[test]
fn brackets_in_expressions_and_text_are_not_nesting() {
    let deep = "[".repeat(40);
    let text = format!(
        "version: 1\nrules:\n  - name: r {deep}\n    description: |\n      {deep}\n      {deep}\n    precedence: 1\n    action: \"off\"\n    filters: [http]\n    traffic: any(http.conn.dst_ip[*] in {{10.0.0.1}})\n"
    );
    let file = parse(&text).unwrap();
    assert_eq!(file.rules[0].description, format!("{deep}\n{deep}\n"));
    // Written out and read back, whatever the writer chose to quote.
    let again = parse(&config::to_yaml(&file)).unwrap();
    assert_eq!(again, file);
}

#[test]
fn identity_providers_plan_apply_export_and_keep_a_secret_set_outside_the_file() {
    let (_d, db) = db();
    let text = "version: 1\nidentity_providers:\n  - name: corp\n    issuer: https://login.example.com\n    client_id: zt\n    allowed_domains: [example.com]\n";
    let file = parse(text).unwrap();
    let plan = config::plan(&db, &file, PlanOptions::default(), &no_connectors).unwrap();
    assert_eq!(plan.changes.len(), 1, "{:?}", plan.changes);
    assert_eq!(plan.changes[0].resource, "idp/corp");
    assert_eq!(plan.changes[0].action, Action::Create);
    apply(&db, &file, PlanOptions::default()).unwrap();
    // A client secret given with `zt idp add` (here: written directly) survives an apply
    // that changes another field, and never shows in the export.
    db.update(|t| {
        let mut p = t.list::<zt_edge::IdentityProvider>()?.remove(0);
        p.client_secret = Some("s3cr3t".into());
        t.put(&p)
    })
    .unwrap();
    let edited = parse(&text.replace("[example.com]", "[example.com, example.org]")).unwrap();
    let plan = config::plan(&db, &edited, PlanOptions::default(), &no_connectors).unwrap();
    assert_eq!(plan.changes.len(), 1, "{:?}", plan.changes);
    assert_eq!(plan.changes[0].action, Action::Update);
    assert_eq!(plan.changes[0].fields[0].field, "allowed_domains");
    apply(&db, &edited, PlanOptions::default()).unwrap();
    let p = db
        .read()
        .unwrap()
        .list::<zt_edge::IdentityProvider>()
        .unwrap()
        .remove(0);
    assert_eq!(p.client_secret.as_deref(), Some("s3cr3t"));
    assert_eq!(p.allowed_domains, ["example.com", "example.org"]);
    let exported = config::export(&db).unwrap();
    let yaml = config::to_yaml(&exported);
    assert!(
        yaml.contains("identity_providers") && !yaml.contains("s3cr3t"),
        "{yaml}"
    );
    assert!(
        config::plan(&db, &edited, PlanOptions::default(), &no_connectors)
            .unwrap()
            .is_empty()
    );
    // An http:// issuer is refused with where it is.
    let err = parse(&text.replace("https://", "http://")).unwrap_err();
    assert!(
        err.report().contains("identity_providers[0]"),
        "{}",
        err.report()
    );
    assert!(err.report().contains("https://"), "{}", err.report());
}

#[test]
fn service_tokens_plan_apply_export_and_are_revoked_when_the_file_drops_them() {
    let (_d, db) = db();
    let text = "version: 1\nservice_tokens:\n  - name: ci-deploy\n    groups: [ci]\n    expires_at: 2027-06-30T00:00:00Z\n";
    let file = parse(text).unwrap();
    let plan = config::plan(&db, &file, PlanOptions::default(), &no_connectors).unwrap();
    assert_eq!(plan.changes.len(), 1, "{:?}", plan.changes);
    assert_eq!(plan.changes[0].resource, "token/ci-deploy");
    assert_eq!(plan.changes[0].action, Action::Create);
    let outcome = apply(&db, &file, PlanOptions::default()).unwrap();
    // The secret leaves once, with the apply's outcome; the record keeps only its key.
    assert_eq!(outcome.tokens.len(), 1);
    let (name, id, secret) = &outcome.tokens[0];
    assert_eq!(name, "ci-deploy");
    let stored: zt_edge::ServiceToken = db.read().unwrap().get(*id).unwrap().unwrap();
    assert_eq!(stored.auth_key, secret.derive_auth_key());
    assert_eq!(stored.groups, ["ci"]);
    assert_eq!(
        stored.expires_at.map(|t| t.to_string()).as_deref(),
        Some("2027-06-30T00:00:00.000Z")
    );
    // The same file again: no change, however the time is spelled.
    let respelled =
        parse(&text.replace("2027-06-30T00:00:00Z", "2027-06-30T02:00:00+02:00")).unwrap();
    assert!(
        config::plan(&db, &respelled, PlanOptions::default(), &no_connectors)
            .unwrap()
            .is_empty()
    );
    // New groups are one update of the same token (its credentials stay good).
    let edited = parse(&text.replace("[ci]", "[ci, deploy]")).unwrap();
    let plan = config::plan(&db, &edited, PlanOptions::default(), &no_connectors).unwrap();
    assert_eq!(plan.changes.len(), 1, "{:?}", plan.changes);
    assert_eq!(plan.changes[0].action, Action::Update);
    assert_eq!(plan.changes[0].fields[0].field, "groups");
    assert!(apply(&db, &edited, PlanOptions::default())
        .unwrap()
        .tokens
        .is_empty());
    let stored: zt_edge::ServiceToken = db.read().unwrap().get(*id).unwrap().unwrap();
    assert_eq!(stored.groups, ["ci", "deploy"]);
    // The export says it, without its key.
    let yaml = config::to_yaml(&config::export(&db).unwrap());
    let key_hex: String = stored
        .auth_key
        .expose_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        yaml.contains("ci-deploy") && !yaml.contains(&key_hex),
        "{yaml}"
    );
    assert!(config::plan(
        &db,
        &parse(&yaml).unwrap(),
        PlanOptions::default(),
        &no_connectors
    )
    .unwrap()
    .is_empty());
    // Dropped from the file: unmanaged without --prune, revoked with it.
    let empty = parse("version: 1\n").unwrap();
    let plan = config::plan(&db, &empty, PlanOptions::default(), &no_connectors).unwrap();
    assert!(plan.changes.is_empty());
    assert!(
        plan.unmanaged.contains(&"token/ci-deploy".to_owned()),
        "{:?}",
        plan.unmanaged
    );
    let prune = PlanOptions {
        prune: true,
        ..PlanOptions::default()
    };
    apply(&db, &empty, prune).unwrap();
    let stored: zt_edge::ServiceToken = db.read().unwrap().get(*id).unwrap().unwrap();
    assert!(stored.revoked, "a dropped token is revoked");
    // A revoked name stays taken: naming it again is blocked, with the reason.
    let plan = config::plan(&db, &file, PlanOptions::default(), &no_connectors).unwrap();
    assert_eq!(plan.changes.len(), 1, "{:?}", plan.changes);
    assert!(
        plan.changes[0]
            .blocked
            .as_deref()
            .is_some_and(|b| b.contains("revoked")),
        "{:?}",
        plan.changes[0]
    );
    // Bad input is refused with where it is.
    for (bad, says) in [
        (
            text.replace("2027-06-30T00:00:00Z", "in 30 days"),
            "service_tokens[0].expires_at",
        ),
        (text.replace("ci-deploy", "two words"), "service_tokens[0]"),
        (
            format!("{text}  - name: CI-DEPLOY\n"),
            "service_tokens[1].name",
        ),
    ] {
        let err = parse(&bad).unwrap_err();
        assert!(err.report().contains(says), "{}", err.report());
    }
}
