use super::read::{TOP_KEYS, WARP_KEYS};
use super::*;
use zt_diag::suggest;

const SEED: &str = "\
tunnel: 8e343b13-a087-48ea-825f-9783931ff2a5
credentials-file: /opt/zt/creds/creds.json
metrics: 0.0.0.0:8081
warp-routing:
    enabled: true
";

fn parse(text: &str) -> Result<ConnectorConfig, ConfigError> {
    ConnectorConfig::parse(text, "/etc/zt/config.yaml")
}

fn invalid(text: &str) -> (String, Option<usize>, Option<usize>, String) {
    match parse(text) {
        Err(ConfigError::Invalid {
            key,
            line,
            column,
            reason,
            ..
        }) => (key, line, column, reason),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn seed_config_loads_with_defaults() {
    let c = parse(SEED).unwrap();
    assert_eq!(
        c.tunnel,
        Some(TunnelRef::Id(
            "8e343b13-a087-48ea-825f-9783931ff2a5".parse().unwrap()
        ))
    );
    assert_eq!(
        c.credentials_file.as_deref(),
        Some(Path::new("/opt/zt/creds/creds.json"))
    );
    assert_eq!(c.metrics, Some("0.0.0.0:8081".parse().unwrap()));
    assert!(c.warp_routing.enabled);
    assert_eq!(c.warp_routing.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(c.warp_routing.tcp_keep_alive, Some(DEFAULT_TCP_KEEPALIVE));
    assert_eq!(c.warp_routing.max_active_flows, None);
    assert_eq!(c.grace_period, Duration::from_secs(30));
    assert_eq!(c.ha_connections, 4);
    assert_eq!(c.protocol, EdgeProtocol::Auto);
    assert_eq!(c.credentials_permissions, PermissionMode::Default);
    assert!(c
        .allowed_destinations
        .allows("198.51.100.101".parse().unwrap()));
    assert!(c.edge.is_empty());
    assert!(c.token.is_none());
}

fn sample_token() -> TunnelToken {
    TunnelToken::from_credentials(zt_creds::TunnelCredentials {
        account_tag: "0123456789abcdef0123456789abcdef".into(),
        tunnel_id: "8e343b13-a087-48ea-825f-9783931ff2a5".parse().unwrap(),
        tunnel_name: None,
        secret: zt_creds::TunnelSecret::generate(),
        endpoint: None,
    })
}

#[test]
fn every_key() {
    let token = sample_token();
    let text = format!(
        "\
tunnel: k8s_zero_trust_tunnel
token: {}
metrics: localhost:2000
warp-routing:
  enabled: false
  connectTimeout: 1m30s
  tcpKeepAlive: 0
  maxActiveFlows: 5000
protocol: quic
grace-period: 45s
ha-connections: 2
edge: [edge-a.example.com:7844, '[2001:db8::1]:7844']
cacert: /etc/zt/edge-ca.pem
edge-ca-fingerprint: AB:CD:ab:cd:ab:cd:ab:cd:ab:cd:ab:cd:ab:cd:ab:cd:ab:cd:ab:cd:ab:cd:ab:cd:ab:cd:ab:cd:ab:cd:ab:cd
credentials-permissions: lenient
zt-allowed-destinations:
  - 198.51.100.101/32
  - 2001:db8::101
",
        &*token.encode()
    );
    let c = parse(&text).unwrap();
    assert_eq!(
        c.tunnel,
        Some(TunnelRef::Name("k8s_zero_trust_tunnel".into()))
    );
    assert_eq!(c.token.as_ref(), Some(&token));
    assert_eq!(c.metrics, Some("127.0.0.1:2000".parse().unwrap()));
    assert!(!c.warp_routing.enabled);
    assert_eq!(c.warp_routing.connect_timeout, Duration::from_secs(90));
    assert_eq!(c.warp_routing.tcp_keep_alive, None);
    assert_eq!(c.warp_routing.max_active_flows, NonZeroU64::new(5000));
    assert_eq!(c.grace_period, Duration::from_secs(45));
    assert_eq!(c.ha_connections, 2);
    assert_eq!(c.edge.len(), 2);
    assert_eq!(c.edge[0].to_string(), "edge-a.example.com:7844");
    assert_eq!(c.edge[1].to_string(), "[2001:db8::1]:7844");
    assert_eq!(c.cacert.as_deref(), Some(Path::new("/etc/zt/edge-ca.pem")));
    assert_eq!(
        c.edge_ca_fingerprint.map(|f| f.to_string()),
        Some("abcd".repeat(16))
    );
    assert_eq!(c.credentials_permissions, PermissionMode::Lenient);
    assert!(c
        .allowed_destinations
        .allows("198.51.100.101".parse().unwrap()));
    assert!(c
        .allowed_destinations
        .allows("2001:db8::101".parse().unwrap()));
    assert!(!c
        .allowed_destinations
        .allows("169.254.169.254".parse().unwrap()));
    // The token never shows in Debug output of the whole configuration.
    assert!(!format!("{c:?}").contains("c2VjcmV0LXRva2Vu"));
}

#[test]
fn single_allowed_destination_may_be_a_scalar() {
    let c = parse("zt-allowed-destinations: 10.0.0.0/8\n").unwrap();
    assert!(c.allowed_destinations.allows("10.1.2.3".parse().unwrap()));
    assert!(!c.allowed_destinations.allows("11.1.2.3".parse().unwrap()));
}

#[test]
fn single_edge_and_integer_durations() {
    let c = parse("edge: 127.0.0.1:7844\ngrace-period: 10\nwarp-routing:\n  connectTimeout: 3\n")
        .unwrap();
    assert_eq!(c.edge.len(), 1);
    assert_eq!(
        c.edge[0].socket_addr(),
        Some("127.0.0.1:7844".parse().unwrap())
    );
    assert_eq!(c.grace_period, Duration::from_secs(10));
    assert_eq!(c.warp_routing.connect_timeout, Duration::from_secs(3));
}

#[test]
fn empty_and_null_documents_are_defaults() {
    assert_eq!(parse("").unwrap(), ConnectorConfig::default());
    assert_eq!(
        parse("# nothing\n---\n").unwrap(),
        ConnectorConfig::default()
    );
    assert_eq!(parse("~\n").unwrap(), ConnectorConfig::default());
    assert_eq!(
        parse("warp-routing:\n").unwrap(),
        ConnectorConfig::default()
    );
}

#[test]
fn cloudflared_keys_are_accepted() {
    let text = "\
tunnel: 8e343b13-a087-48ea-825f-9783931ff2a5
loglevel: debug
no-autoupdate: true
retries: 5
ingress:
  - hostname: app.example.com
    service: http://localhost:8000
  - service: http_status:404
originRequest:
  connectTimeout: 10s
some-future-key: 1
protocol: http2
";
    let c = parse(text).unwrap();
    assert_eq!(c.protocol, EdgeProtocol::Tcp);
    assert!(c.tunnel.is_some());
}

#[test]
fn bad_duration_names_key_line_and_column() {
    let (key, line, column, reason) =
        invalid("tunnel: t\nwarp-routing:\n  enabled: true\n  connectTimeout: 30x\n");
    assert_eq!(key, "warp-routing.connectTimeout");
    assert_eq!((line, column), (Some(4), Some(19)));
    assert!(reason.contains("unknown unit `x`"), "{reason}");
    let err = parse("tunnel: t\nwarp-routing:\n  enabled: true\n  connectTimeout: 30x\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("/etc/zt/config.yaml:4:19: `warp-routing.connectTimeout`: unknown unit"),
        "{err}"
    );
}

#[test]
fn bad_values_are_refused_where_they_stand() {
    let (key, line, _, reason) = invalid("metrics: 0.0.0.0\n");
    assert_eq!((key.as_str(), line), ("metrics", Some(1)));
    assert!(reason.contains("invalid listen address"), "{reason}");

    let (key, line, _, reason) = invalid("tunnel: x\nha-connections: 0\n");
    assert_eq!((key.as_str(), line), ("ha-connections", Some(2)));
    assert!(reason.contains("out of range"), "{reason}");
    assert!(matches!(
        invalid("ha-connections: 17\n").0.as_str(),
        "ha-connections"
    ));
    assert!(matches!(
        invalid("ha-connections: four\n").0.as_str(),
        "ha-connections"
    ));

    let (key, line, _, _) = invalid("edge:\n  - a.example.com:7844\n  - b.example.com\n");
    assert_eq!((key.as_str(), line), ("edge[1]", Some(3)));

    let (key, _, _, reason) = invalid("credentials-permissions: loose\n");
    assert_eq!(key, "credentials-permissions");
    assert!(reason.contains("strict, default or lenient"), "{reason}");

    let (key, _, _, _) = invalid("protocol: h2mux\n");
    assert_eq!(key, "protocol");
    let (key, _, _, _) = invalid("edge-ca-fingerprint: abcd\n");
    assert_eq!(key, "edge-ca-fingerprint");
    let (key, _, _, _) = invalid("zt-allowed-destinations: []\n");
    assert_eq!(key, "zt-allowed-destinations");
    let (key, line, _, _) = invalid("zt-allowed-destinations:\n  - 10.0.0.0/8\n  - 10.0.0.0/40\n");
    assert_eq!(
        (key.as_str(), line),
        ("zt-allowed-destinations[1]", Some(3))
    );
    let (key, _, _, _) = invalid("warp-routing:\n  connectTimeout: 0s\n");
    assert_eq!(key, "warp-routing.connectTimeout");
    let (key, _, _, _) = invalid("warp-routing:\n  enabled: maybe\n");
    assert_eq!(key, "warp-routing.enabled");
    let (_, line, column, reason) = invalid("tunnel: a\nmetrics: :1\ntunnel: b\n");
    assert_eq!(reason, "duplicate key `tunnel`");
    assert_eq!((line, column), (Some(3), Some(1)));
    let (key, line, _, reason) = invalid("warp-routing:\n  maxActiveFlows: -1\n");
    assert_eq!(
        (key.as_str(), line),
        ("warp-routing.maxActiveFlows", Some(2))
    );
    assert!(reason.contains("negative"), "{reason}");
}

#[test]
fn syntax_and_shape_errors() {
    let (key, line, _, _) = invalid("tunnel: [unclosed\n");
    assert_eq!(key, "tunnel");
    assert!(line.is_some());
    let (key, _, _, reason) = invalid("- a\n- b\n");
    assert_eq!(key, "");
    assert!(reason.contains("mapping of connector settings"), "{reason}");
    let (key, line, _, _) = invalid("a: b\n  c: d\n");
    assert_eq!((key.as_str(), line), ("", Some(2)));
}

#[test]
fn misspelt_keys_get_a_suggestion() {
    let cases = [
        ("ha-conections: 2\n", "ha-connections", "ha-conections", 1),
        (
            "tunnel: x\nha_connections: 2\n",
            "ha-connections",
            "ha_connections",
            2,
        ),
        (
            "warp-routing:\n  connect-timeout: 5s\n",
            "connectTimeout",
            "warp-routing.connect-timeout",
            2,
        ),
        (
            "credential-file: /x\n",
            "credentials-file",
            "credential-file",
            1,
        ),
        ("Tunnel: x\n", "tunnel", "Tunnel", 1),
    ];
    for (text, want, key_path, want_line) in cases {
        match parse(text) {
            Err(ConfigError::UnknownKey {
                key,
                suggestion,
                line,
                ..
            }) => {
                assert_eq!(suggestion, want, "{text}");
                assert_eq!(key, key_path);
                assert_eq!(line, Some(want_line), "{text}");
            }
            other => panic!("{text}: expected UnknownKey, got {other:?}"),
        }
    }
    let msg = parse("ha-conections: 2\n").unwrap_err().to_string();
    assert_eq!(
        msg,
        "/etc/zt/config.yaml:1:1: unknown key `ha-conections` (did you mean `ha-connections`?)"
    );
}

#[test]
fn damaged_token_is_refused_at_its_line_without_quoting_it() {
    let (key, line, _, reason) = invalid("tunnel: x\ntoken: c2VjcmV0LXRva2Vu\n");
    assert_eq!(key, "token");
    assert_eq!(line, Some(2));
    assert!(!reason.contains("c2VjcmV0"), "{reason}");
}

#[test]
fn overrides_replace_file_values() {
    let mut c = parse(SEED).unwrap();
    c.apply(
        ConfigOverrides::default()
            .metrics("127.0.0.1:9000".parse().unwrap())
            .grace_period(Duration::from_secs(5))
            .ha_connections(2)
            .edge(vec!["127.0.0.1:7844".parse().unwrap()])
            .credentials_permissions(PermissionMode::Strict)
            .token(sample_token()),
    )
    .unwrap();
    assert_eq!(c.metrics, Some("127.0.0.1:9000".parse().unwrap()));
    assert_eq!(c.grace_period, Duration::from_secs(5));
    assert_eq!(c.ha_connections, 2);
    assert_eq!(c.edge.len(), 1);
    assert_eq!(c.credentials_permissions, PermissionMode::Strict);
    // Untouched settings keep the file's values.
    assert!(c.tunnel.is_some());
    assert!(c.warp_routing.enabled);
    assert_eq!(
        c.apply(ConfigOverrides::default().ha_connections(0)),
        Err(OverrideError::HaConnections(0))
    );
    assert_eq!(c.ha_connections, 2);
}

#[test]
fn load_reads_files_and_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, SEED).unwrap();
    let c = ConnectorConfig::load(&path).unwrap();
    assert!(c.warp_routing.enabled);

    let missing = dir.path().join("nope.yaml");
    let err = ConnectorConfig::load(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("nope.yaml"), "{err}");

    let big = dir.path().join("big.yaml");
    std::fs::write(&big, vec![b'#'; (MAX_CONFIG_BYTES + 1) as usize]).unwrap();
    assert!(matches!(
        ConnectorConfig::load(&big),
        Err(ConfigError::TooLarge { .. })
    ));

    std::fs::write(&path, "grace-period: soon\n").unwrap();
    let err = ConnectorConfig::load(&path).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}:1:15: `grace-period`: ", path.display())),
        "{err}"
    );
}

#[test]
fn suggestions_are_conservative() {
    assert_eq!(suggest("ingress", TOP_KEYS), None);
    assert_eq!(suggest("loglevel", TOP_KEYS), None);
    assert_eq!(suggest("tag", TOP_KEYS), None);
    assert_eq!(suggest("edges", TOP_KEYS), None);
    assert_eq!(suggest("metric", TOP_KEYS), Some("metrics"));
    assert_eq!(suggest("maxactiveflows", WARP_KEYS), Some("maxActiveFlows"));
}

/// Runs `f` with a subscriber that writes formatted events into a string.
fn capture_logs(f: impl FnOnce()) -> String {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = buf.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn ignored_keys_are_named_in_one_warning() {
    let logs = capture_logs(|| {
        parse("tunnel: t\nloglevel: info\ningress: []\nno-autoupdate: true\nprotocol: auto\nmystery: 1\nwarp-routing:\n  extra: 2\n")
            .unwrap();
    });
    let lines: Vec<&str> = logs.lines().collect();
    let cloudflared: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("ignoring cloudflared settings"))
        .collect();
    assert_eq!(cloudflared.len(), 1, "{logs}");
    assert!(
        cloudflared[0].contains("keys=loglevel, ingress, no-autoupdate"),
        "{logs}"
    );
    assert!(cloudflared[0].contains("/etc/zt/config.yaml"), "{logs}");
    let unknown: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("ignoring unknown settings"))
        .collect();
    assert_eq!(unknown.len(), 1, "{logs}");
    assert!(
        unknown[0].contains("keys=mystery, warp-routing.extra"),
        "{logs}"
    );
    // `protocol` is honoured now (auto, quic, tcp, http2 = tcp): no warning about it.
    assert!(!logs.contains("protocol"), "{logs}");
    // A plain zt configuration logs nothing.
    assert_eq!(capture_logs(|| drop(parse(SEED).unwrap())), "");
}
