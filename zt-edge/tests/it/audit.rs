//! The audit log: lines read back parse, carry the right fields, stay one per event, bound
//! peer-supplied text, and reveal no secret.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use serde_json::Value;
use uuid::Uuid;
use zt_creds::TunnelSecret;
use zt_edge::{
    AuditError, AuditEvent, AuditLog, AuthRefusal, CloseReason, ConnectorKind, FlowAction,
    FlowProtocol, FlowRecord, PeerRole, PolicyPhase, Timestamp, MAX_CLAIMED_ID_LEN,
};

fn flow() -> FlowRecord {
    let mut r = FlowRecord::new(
        "192.0.2.10:51000".parse().unwrap(),
        "[2001:db8::101]:443".parse().unwrap(),
        FlowProtocol::Tcp,
        CloseReason::Completed,
    );
    r.identity_email = Some("ada@example.com".into());
    r.device_id = Some(Uuid::new_v4());
    r.vnet = Some(Uuid::new_v4());
    r.phase = Some(PolicyPhase::Http);
    r.rule_id = Some(Uuid::new_v4());
    r.rule_name = Some("do not inspect k8s".into());
    r.action = Some(FlowAction::Off);
    r.tunnel_id = Some(Uuid::new_v4());
    r.connector_id = Some(Uuid::new_v4());
    r.connector_kind = Some(ConnectorKind::Cloudflared);
    r.connector_version = Some("2023.7.3".into());
    r.bytes_up = 1234;
    r.bytes_down = 10 << 20;
    r.duration_ms = 4321;
    r
}

fn lines(path: &std::path::Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn flow_and_refusal_lines_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let f = flow();
    log.record_flow(&f).unwrap();
    let refusal = AuthRefusal::new(
        "198.51.100.7".parse().unwrap(),
        PeerRole::Connector,
        Some("8e343b13-a087-48ea-825f-9783931ff2a5"),
        "proof mismatch",
    );
    log.record_auth_refusal(&refusal).unwrap();
    drop(log);

    let v = lines(&path);
    assert_eq!(v.len(), 2);
    let line = &v[0];
    assert_eq!(line["type"], "flow");
    assert_eq!(line["time"], f.time.to_string());
    assert!(Timestamp::parse_rfc3339(line["time"].as_str().unwrap()).is_some());
    assert!(line["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(line["identity_email"], "ada@example.com");
    assert_eq!(line["device_id"], f.device_id.unwrap().to_string());
    assert_eq!(line["source"], "192.0.2.10:51000");
    assert_eq!(line["destination"], "[2001:db8::101]:443");
    assert_eq!(line["vnet"], f.vnet.unwrap().to_string());
    assert_eq!(line["protocol"], "tcp");
    assert_eq!(line["phase"], "http");
    assert_eq!(line["rule_id"], f.rule_id.unwrap().to_string());
    assert_eq!(line["rule_name"], "do not inspect k8s");
    assert_eq!(line["action"], "off");
    assert_eq!(line["tunnel_id"], f.tunnel_id.unwrap().to_string());
    assert_eq!(line["connector_id"], f.connector_id.unwrap().to_string());
    assert_eq!(line["connector_kind"], "cloudflared");
    assert_eq!(line["connector_version"], "2023.7.3");
    assert_eq!(line["bytes_up"], 1234);
    assert_eq!(line["bytes_down"], 10 << 20);
    assert_eq!(line["duration_ms"], 4321);
    assert_eq!(line["close_reason"], "completed");

    let line = &v[1];
    assert_eq!(line["type"], "auth_refusal");
    assert_eq!(line["source"], "198.51.100.7");
    assert_eq!(line["role"], "connector");
    assert_eq!(line["claimed_id"], "8e343b13-a087-48ea-825f-9783931ff2a5");
    assert_eq!(line["reason"], "proof mismatch");

    // Lines decode back into the typed events.
    let text = fs::read_to_string(&path).unwrap();
    let events: Vec<AuditEvent> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0], AuditEvent::Flow(f));
    assert_eq!(events[1], AuditEvent::AuthRefusal(refusal));
}

#[test]
fn reopening_appends_and_flush_makes_lines_visible() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    log.record_flow(&flow()).unwrap();
    log.flush().unwrap();
    // Visible to a reader without closing the log.
    assert_eq!(lines(&path).len(), 1);
    log.record_flow(&flow()).unwrap();
    log.sync().unwrap();
    assert_eq!(lines(&path).len(), 2);
    drop(log);
    let log = AuditLog::open(&path).unwrap();
    // A refusal is flushed at once.
    log.record_auth_refusal(&AuthRefusal::new(
        "::1".parse().unwrap(),
        PeerRole::Client,
        None,
        "unknown device",
    ))
    .unwrap();
    let v = lines(&path);
    assert_eq!(v.len(), 3);
    assert_eq!(v[2]["claimed_id"], Value::Null);
    assert_eq!(v[2]["role"], "client");
}

#[test]
fn peer_text_is_bounded_and_kept_on_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    // A hostile claimed id: long, multi-byte, with newlines and a fake JSON line.
    let hostile = format!("é\n{{\"type\":\"flow\"}}\n{}", "é".repeat(500));
    log.record_auth_refusal(&AuthRefusal::new(
        "192.0.2.1".parse().unwrap(),
        PeerRole::Client,
        Some(&hostile),
        "bad proof",
    ))
    .unwrap();
    drop(log);
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 1);
    let v: Value = serde_json::from_str(text.trim_end()).unwrap();
    let kept = v["claimed_id"].as_str().unwrap();
    assert!(kept.len() <= MAX_CLAIMED_ID_LEN);
    assert!(
        kept.len() >= MAX_CLAIMED_ID_LEN - 1,
        "cut at a character boundary, not shorter"
    );
    assert!(hostile.starts_with(kept));
}

#[test]
fn no_secret_reaches_the_log() {
    // The records have no secret fields; this checks the end-to-end shape: a refusal for a
    // tunnel whose secret is known writes neither the secret nor its derived key.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    let secret = TunnelSecret::generate();
    let key = secret.derive_auth_key();
    let tunnel_id = Uuid::new_v4().to_string();
    log.record_auth_refusal(&AuthRefusal::new(
        "192.0.2.1".parse().unwrap(),
        PeerRole::Connector,
        Some(&tunnel_id),
        format!("proof mismatch for tunnel {tunnel_id} (key {key:?}, secret {secret})"),
    ))
    .unwrap();
    drop(log);
    let text = fs::read_to_string(&path).unwrap();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert!(!text.contains(&hex(secret.expose_bytes())));
    assert!(!text.contains(&hex(key.expose_bytes())));
    assert!(text.contains("[redacted]"));
    let allowed = [
        "type",
        "time",
        "source",
        "role",
        "claimed_id",
        "reason",
        "count",
        "since",
    ];
    let v: Value = serde_json::from_str(text.trim_end()).unwrap();
    for k in v.as_object().unwrap().keys() {
        assert!(allowed.contains(&k.as_str()), "unexpected field {k}");
    }
}

#[test]
fn a_world_readable_log_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("audit.jsonl");
    fs::write(&path, b"").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    match AuditLog::open(&path).unwrap_err() {
        AuditError::Permissions { path: p, mode } => {
            assert_eq!(p, path);
            assert_eq!(mode, 0o644);
        }
        other => panic!("{other:?}"),
    }
    // Group-readable (for a log shipper) is accepted.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    AuditLog::open(&path).unwrap();
}

#[test]
fn lines_from_many_threads_never_interleave() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("audit.jsonl");
    let log = std::sync::Arc::new(AuditLog::open(&path).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let log = log.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    log.record_flow(&flow()).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(log);
    let v = lines(&path);
    assert_eq!(v.len(), 800);
    assert!(v
        .iter()
        .all(|l| l["type"] == "flow" && l["bytes_up"] == 1234));
}
