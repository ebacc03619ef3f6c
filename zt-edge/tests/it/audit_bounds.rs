//! The audit log's bounds: size rotation (files, modes, whole lines, order, failures,
//! external rotation) and the coalescing of repeated refusals (counts add up, the first
//! refusal of each source is written at once).

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use zt_edge::{
    AuditError, AuditLimits, AuditLog, AuthRefusal, CloseReason, FlowProtocol, FlowRecord,
    PeerRole, RefusalLogged,
};

/// A flow line numbered `seq` (in `bytes_up`), about 450 bytes long.
fn flow(seq: u64) -> FlowRecord {
    let mut r = FlowRecord::new(
        "192.0.2.10:51000".parse().unwrap(),
        "[2001:db8::101]:443".parse().unwrap(),
        FlowProtocol::Tcp,
        CloseReason::Completed,
    );
    r.bytes_up = seq;
    r
}

fn lines(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not a whole line: {e}"))
        })
        .collect()
}

fn limits(max_bytes: u64, keep: u32) -> AuditLimits {
    let mut l = AuditLimits::default();
    l.max_bytes = max_bytes;
    l.keep = keep;
    l
}

/// Every line of the log, oldest file first.
fn all_lines(log: &AuditLog, keep: u32) -> Vec<Value> {
    let mut out = Vec::new();
    for n in (1..=keep).rev() {
        out.extend(lines(&log.rotated_path(n)));
    }
    out.extend(lines(log.path()));
    out
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn rotation_keeps_whole_lines_in_order_and_a_bounded_number_of_files() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("audit.jsonl");
    let max = 4096;
    let line_len = serde_json::to_vec(&zt_edge::AuditEvent::Flow(flow(100)))
        .unwrap()
        .len()
        + 1;

    // Enough files to keep everything: a reader sees every line, in order.
    let log = AuditLog::open_with_limits(&path, limits(max, 50)).unwrap();
    for seq in 0..100 {
        log.record_flow(&flow(seq)).unwrap();
    }
    log.flush().unwrap();
    let seqs: Vec<u64> = all_lines(&log, 50)
        .iter()
        .map(|l| l["bytes_up"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (0..100).collect::<Vec<_>>());
    let files = (1..=50).filter(|&n| log.rotated_path(n).exists()).count();
    let per_file = max as usize / line_len;
    eprintln!("MEASURED rotation: {line_len}-byte lines, {per_file} per {max}-byte file, {files} rotated files for 100 lines");
    assert_eq!(files, 100_usize.div_ceil(per_file) - 1);
    for n in 1..=files as u32 {
        let p = log.rotated_path(n);
        let size = fs::metadata(&p).unwrap().len();
        assert!(size <= max, "{} has {size} bytes, over {max}", p.display());
        assert!(
            size + line_len as u64 > max,
            "{} rotated early at {size} bytes",
            p.display()
        );
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    assert_eq!(mode(&path), 0o600);
    drop(log);

    // Few files: the oldest lines go, the newest stay, still in order.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("audit.jsonl");
    let log = AuditLog::open_with_limits(&path, limits(max, 2)).unwrap();
    for seq in 0..100 {
        log.record_flow(&flow(seq)).unwrap();
    }
    log.flush().unwrap();
    assert!(log.rotated_path(2).exists());
    assert!(
        !log.rotated_path(3).exists(),
        "more than 2 rotated files kept"
    );
    let seqs: Vec<u64> = all_lines(&log, 2)
        .iter()
        .map(|l| l["bytes_up"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs.last(), Some(&99));
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "a gap or a reordering: {seqs:?}"
    );
    let total: u64 = [path.clone(), log.rotated_path(1), log.rotated_path(2)]
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        total <= 3 * max,
        "{total} bytes on disk, over (keep + 1) × max"
    );
}

#[test]
fn a_line_longer_than_the_limit_is_written_whole_in_a_file_of_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("audit.jsonl");
    let log = AuditLog::open_with_limits(&path, limits(100, 3)).unwrap();
    for seq in 0..3 {
        log.record_flow(&flow(seq)).unwrap();
    }
    log.flush().unwrap();
    for (n, seq) in [(2, 0), (1, 1)] {
        let l = lines(&log.rotated_path(n));
        assert_eq!(l.len(), 1);
        assert_eq!(l[0]["bytes_up"], seq);
    }
    assert_eq!(lines(&path)[0]["bytes_up"], 2);
}

#[test]
fn zero_max_bytes_never_rotates() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("audit.jsonl");
    let log = AuditLog::open_with_limits(&path, limits(0, 3)).unwrap();
    for seq in 0..50 {
        log.record_flow(&flow(seq)).unwrap();
    }
    log.flush().unwrap();
    assert_eq!(lines(&path).len(), 50);
    assert!(!log.rotated_path(1).exists());
}

#[test]
fn a_failed_rotation_is_reported_and_loses_no_line() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("audit.jsonl");
    // `.1` is a non-empty directory: renaming the log onto it fails.
    let blocker = tmp.path().join("audit.jsonl.1");
    fs::create_dir(&blocker).unwrap();
    fs::write(blocker.join("x"), b"x").unwrap();
    let log = AuditLog::open_with_limits(&path, limits(1000, 1)).unwrap();
    let mut errors = Vec::new();
    for seq in 0..10 {
        if let Err(e) = log.record_flow(&flow(seq)) {
            errors.push(e);
        }
    }
    log.flush().unwrap();
    // Reported once (retried a minute later, not at every line), and named.
    assert_eq!(errors.len(), 1, "{errors:?}");
    match &errors[0] {
        AuditError::Rotate { from, to, .. } => {
            assert_eq!(from, &path);
            assert_eq!(to, &blocker);
            eprintln!("rotation error as reported: {}", errors[0]);
        }
        other => panic!("unexpected error {other:?}"),
    }
    let seqs: Vec<u64> = lines(&path)
        .iter()
        .map(|l| l["bytes_up"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (0..10).collect::<Vec<_>>());
}

#[test]
fn an_external_rotation_is_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("audit.jsonl");
    let moved = tmp.path().join("audit.jsonl.old");
    let log = AuditLog::open_with_limits(&path, limits(0, 1)).unwrap();
    log.record_flow(&flow(0)).unwrap();
    log.flush().unwrap();
    // logrotate without copytruncate: rename; the edge reopens at its next flush.
    fs::rename(&path, &moved).unwrap();
    log.record_flow(&flow(1)).unwrap();
    log.flush().unwrap();
    log.record_flow(&flow(2)).unwrap();
    log.flush().unwrap();
    let old: Vec<u64> = lines(&moved)
        .iter()
        .map(|l| l["bytes_up"].as_u64().unwrap())
        .collect();
    let new: Vec<u64> = lines(&path)
        .iter()
        .map(|l| l["bytes_up"].as_u64().unwrap())
        .collect();
    assert_eq!((old, new), (vec![0, 1], vec![2]));
    assert_eq!(mode(&path), 0o600);

    // copytruncate: the file is emptied in place; O_APPEND writes at its new end, and
    // the size count follows the real size instead of rotating early.
    let log = AuditLog::open_with_limits(&path, limits(2000, 2)).unwrap();
    for seq in 0..3 {
        log.record_flow(&flow(seq)).unwrap();
    }
    log.flush().unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    for seq in 3..6 {
        log.record_flow(&flow(seq)).unwrap();
    }
    log.flush().unwrap();
    assert!(
        !log.rotated_path(1).exists(),
        "rotated although the file was truncated"
    );
    let seqs: Vec<u64> = lines(&path)
        .iter()
        .map(|l| l["bytes_up"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![3, 4, 5]);
}

fn refusal(source: &str, reason: &str) -> AuthRefusal {
    AuthRefusal::new(
        source.parse::<IpAddr>().unwrap(),
        PeerRole::Connector,
        Some("0b7c8e2e-5a9f-4a4e-9d55-6b1f0c2b8a11"),
        reason,
    )
}

fn refusal_lines(path: &Path) -> Vec<Value> {
    lines(path)
        .into_iter()
        .filter(|l| l["type"] == "auth_refusal")
        .collect()
}

fn counts_from(lines: &[Value], source: &str) -> Vec<u64> {
    lines
        .iter()
        .filter(|l| l["source"] == source)
        .map(|l| l["count"].as_u64().unwrap())
        .collect()
}

#[test]
fn repeated_refusals_from_one_source_share_a_line_and_every_one_is_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("audit.jsonl");
    let mut l = AuditLimits::default();
    l.refusal_interval = Duration::from_secs(3600);
    let log = AuditLog::open_with_limits(&path, l).unwrap();

    // The first is written (and flushed) at once, the next 999 only counted.
    assert_eq!(
        log.record_auth_refusal(&refusal("192.0.2.1", "bad proof"))
            .unwrap(),
        RefusalLogged::Written
    );
    assert_eq!(refusal_lines(&path).len(), 1);
    for _ in 1..1000 {
        assert_eq!(
            log.record_auth_refusal(&refusal("192.0.2.1", "bad proof"))
                .unwrap(),
            RefusalLogged::Coalesced
        );
    }
    // Another source, and another reason from the same source, get their line at once.
    log.record_auth_refusal(&refusal("192.0.2.2", "bad proof"))
        .unwrap();
    log.record_auth_refusal(&refusal("192.0.2.1", "rate-limited"))
        .unwrap();
    let now = refusal_lines(&path);
    assert_eq!(counts_from(&now, "192.0.2.1"), vec![1, 1]);
    assert_eq!(counts_from(&now, "192.0.2.2"), vec![1]);
    // An IPv6 /64 is one source.
    log.record_auth_refusal(&refusal("2001:db8:1:2::1", "bad proof"))
        .unwrap();
    assert_eq!(
        log.record_auth_refusal(&refusal("2001:db8:1:2::ffff", "bad proof"))
            .unwrap(),
        RefusalLogged::Coalesced
    );

    // Closing writes what was still counted: nothing goes uncounted.
    drop(log);
    let all = refusal_lines(&path);
    let from_1: u64 = counts_from(&all, "192.0.2.1").iter().sum();
    assert_eq!(from_1, 1001);
    let summary = all
        .iter()
        .find(|l| l["count"] == 999)
        .expect("a line standing for the 999 repeats");
    assert_eq!(summary["reason"], "bad proof");
    assert!(summary["since"].is_string(), "{summary}");
    assert_eq!(all.len(), 6, "{all:?}");
    let total: u64 = all.iter().map(|l| l["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 1004);
}

#[test]
fn a_summing_up_line_is_written_once_the_interval_has_passed() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("audit.jsonl");
    let mut l = AuditLimits::default();
    l.refusal_interval = Duration::from_millis(200);
    let log = AuditLog::open_with_limits(&path, l).unwrap();
    for _ in 0..10 {
        log.record_auth_refusal(&refusal("198.51.100.7", "bad proof"))
            .unwrap();
    }
    assert_eq!(refusal_lines(&path).len(), 1);
    // The runtime flushes every second; here, once the interval has surely passed.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(log.flush().unwrap(), 9);
    let lines_now = refusal_lines(&path);
    assert_eq!(counts_from(&lines_now, "198.51.100.7"), vec![1, 9]);
    // Nothing pending: a later flush writes nothing more.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(log.flush().unwrap(), 0);
    for _ in 0..5 {
        log.record_auth_refusal(&refusal("198.51.100.7", "bad proof"))
            .unwrap();
    }
    drop(log);
    let counts = counts_from(&refusal_lines(&path), "198.51.100.7");
    assert_eq!(counts.iter().sum::<u64>(), 15, "{counts:?}");
    assert!(counts.len() <= 4, "{counts:?}");
}

#[test]
fn the_coalescing_table_is_bounded_and_evicting_loses_no_count() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("audit.jsonl");
    let mut l = AuditLimits::default();
    l.refusal_interval = Duration::from_secs(3600);
    l.refusal_sources = 4;
    let log = AuditLog::open_with_limits(&path, l).unwrap();
    for _ in 0..10 {
        log.record_auth_refusal(&refusal("203.0.113.1", "bad proof"))
            .unwrap();
    }
    // Three more sources fill the table; a fifth evicts the least recently seen, whose 9
    // counted repeats get their line there and then.
    for i in 2..=5 {
        log.record_auth_refusal(&refusal(&format!("203.0.113.{i}"), "bad proof"))
            .unwrap();
    }
    assert_eq!(
        counts_from(&refusal_lines(&path), "203.0.113.1"),
        vec![1, 9]
    );
    // Round-robin over more sources than the table holds: every refusal still counted.
    for _ in 0..5 {
        for i in 10..30 {
            log.record_auth_refusal(&refusal(&format!("203.0.113.{i}"), "bad proof"))
                .unwrap();
        }
    }
    drop(log);
    let all = refusal_lines(&path);
    let total: u64 = all.iter().map(|l| l["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 10 + 4 + 100);
}
