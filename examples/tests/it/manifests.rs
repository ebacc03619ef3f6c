//! The Kubernetes manifests in `deploy/kubernetes/` agree with the connector that runs them.
//!
//! No cluster is reachable here, so this test checks what a cluster would: the ConfigMap's
//! `config.yaml` loads with the connector's own parser; the Deployment's args point at it;
//! the metrics port, probes, credentials path and file mode match the config and the
//! connector's defaults; the drain fits in the termination grace period; and a credentials
//! file with the mode the Secret volume produces loads under the configured permission mode.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_norway::Value;
use zt_connector::ConnectorConfig;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

fn load(name: &str) -> (String, Value) {
    let path = deploy_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value: Value =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (text, value)
}

fn get<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = v;
    for key in path {
        cur = cur
            .get(*key)
            .unwrap_or_else(|| panic!("missing `{}` (at `{key}`)", path.join(".")));
    }
    cur
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("`{}` is not a string", path.join(".")))
}

fn n(v: &Value, path: &[&str]) -> i64 {
    get(v, path)
        .as_i64()
        .unwrap_or_else(|| panic!("`{}` is not an integer", path.join(".")))
}

fn find<'a>(list: &'a Value, key: &str, name: &str) -> &'a Value {
    list.as_sequence()
        .unwrap()
        .iter()
        .find(|item| item.get(key).and_then(Value::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no item with {key} = {name}"))
}

struct Manifests {
    config_map: Value,
    deployment: Value,
    deployment_text: String,
    pdb: Value,
    config: ConnectorConfig,
    config_text: String,
}

fn manifests() -> Manifests {
    let (_, config_map) = load("configmap.yaml");
    let (deployment_text, deployment) = load("deployment.yaml");
    let (_, pdb) = load("pdb.yaml");
    let config_text = s(&config_map, &["data", "config.yaml"]).to_owned();
    let config = ConnectorConfig::parse(&config_text, "deploy/kubernetes/configmap.yaml")
        .unwrap_or_else(|e| panic!("the ConfigMap's config.yaml does not load: {e}"));
    Manifests {
        config_map,
        deployment,
        deployment_text,
        pdb,
        config,
        config_text,
    }
}

fn pod_spec(m: &Manifests) -> &Value {
    get(&m.deployment, &["spec", "template", "spec"])
}

fn container(m: &Manifests) -> &Value {
    find(get(pod_spec(m), &["containers"]), "name", "tunnel")
}

fn mount_path<'a>(m: &'a Manifests, volume: &str) -> &'a str {
    s(
        find(get(container(m), &["volumeMounts"]), "name", volume),
        &["mountPath"],
    )
}

#[test]
fn deployment_runs_the_configmap_config_with_cloudflared_args() {
    let m = manifests();
    let args: Vec<&str> = get(container(&m), &["args"])
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_path = format!("{}/config.yaml", mount_path(&m, "config"));
    assert_eq!(args, ["tunnel", "--config", config_path.as_str(), "run"]);

    // The config volume is the ConfigMap this directory ships.
    let volumes = get(pod_spec(&m), &["volumes"]);
    let config_volume = find(volumes, "name", "config");
    assert_eq!(
        s(config_volume, &["configMap", "name"]),
        s(&m.config_map, &["metadata", "name"])
    );
    assert_eq!(
        s(&m.config_map, &["metadata", "namespace"]),
        s(&m.deployment, &["metadata", "namespace"])
    );

    // The seed's keys are there and mean what the seed meant.
    assert!(m.config.warp_routing.enabled);
    assert!(m.config.tunnel.is_some());
    assert!(
        !m.config.edge.is_empty(),
        "the connector needs an edge address"
    );
    assert!(
        m.config.edge_ca_fingerprint.is_some() || m.config.cacert.is_some(),
        "the connector needs a way to trust the edge"
    );
}

#[test]
fn metrics_port_and_probes_match_the_config() {
    let m = manifests();
    let metrics = m.config.metrics.expect("config.yaml sets `metrics`");
    let port = find(get(container(&m), &["ports"]), "name", "http-metrics");
    assert_eq!(n(port, &["containerPort"]), i64::from(metrics.port()));
    assert!(
        metrics.ip().is_unspecified(),
        "the kubelet probes the pod IP, so metrics must listen on all addresses, not {metrics}"
    );

    let readiness = get(container(&m), &["readinessProbe", "httpGet"]);
    assert_eq!(s(readiness, &["path"]), "/ready");
    assert_eq!(s(readiness, &["port"]), "http-metrics");
    // Liveness on /healthcheck, not /ready: an edge outage must not restart every replica.
    let liveness = get(container(&m), &["livenessProbe", "httpGet"]);
    assert_eq!(s(liveness, &["path"]), "/healthcheck");
    assert_eq!(s(liveness, &["port"]), "http-metrics");
}

#[test]
fn rollout_shape_and_limits_are_the_seeds() {
    let m = manifests();
    assert_eq!(n(&m.deployment, &["spec", "replicas"]), 3);
    let rolling = get(&m.deployment, &["spec", "strategy", "rollingUpdate"]);
    assert_eq!(n(rolling, &["maxSurge"]), 0);
    assert_eq!(n(rolling, &["maxUnavailable"]), 1);
    let limits = get(container(&m), &["resources", "limits"]);
    assert_eq!(s(limits, &["cpu"]), "1");
    assert_eq!(s(limits, &["memory"]), "100Mi");

    // The PodDisruptionBudget selects the Deployment's pods.
    let labels = get(&m.deployment, &["spec", "template", "metadata", "labels"]);
    let selector = get(&m.pdb, &["spec", "selector", "matchLabels"]);
    for (k, v) in selector.as_mapping().unwrap() {
        assert_eq!(labels.get(k.as_str().unwrap()), Some(v), "PDB label {k:?}");
    }
    assert_eq!(n(&m.pdb, &["spec", "maxUnavailable"]), 1);
}

#[test]
fn drain_fits_in_the_termination_grace_period() {
    let m = manifests();
    let termination = n(pod_spec(&m), &["terminationGracePeriodSeconds"]);
    let grace = m.config.grace_period;
    assert!(
        Duration::from_secs(termination as u64) > grace + Duration::from_secs(5),
        "terminationGracePeriodSeconds ({termination}s) must exceed grace-period ({grace:?}) with room to exit"
    );
}

/// Kubernetes reads `defaultMode: 0440` as YAML 1.1 octal; read the scalar as it does.
fn default_mode(text: &str) -> u32 {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("defaultMode:"))
        .expect("the creds volume sets defaultMode");
    let raw = line
        .split(':')
        .nth(1)
        .unwrap()
        .split('#')
        .next()
        .unwrap()
        .trim();
    if let Some(octal) = raw.strip_prefix("0o").or_else(|| raw.strip_prefix('0')) {
        u32::from_str_radix(octal, 8).unwrap()
    } else {
        raw.parse().unwrap()
    }
}

#[test]
fn credentials_volume_mode_loads_under_the_configured_permissions() {
    let m = manifests();
    let creds_path = m
        .config
        .credentials_file
        .clone()
        .expect("config.yaml sets credentials-file");
    let mount = mount_path(&m, "creds");
    assert!(
        creds_path.starts_with(mount),
        "credentials-file {} is not under the Secret's mount {mount}",
        creds_path.display()
    );
    let creds_volume = find(get(pod_spec(&m), &["volumes"]), "name", "creds");
    assert_eq!(s(creds_volume, &["secret", "secretName"]), "tunnel-creds");
    let mode = default_mode(&m.deployment_text);
    assert_eq!(mode, 0o440, "the Secret volume's files must be 0440");
    let security = get(pod_spec(&m), &["securityContext"]);
    assert!(
        n(security, &["fsGroup"]) > 0,
        "fsGroup makes the 0440 files readable"
    );
    assert_eq!(get(security, &["runAsNonRoot"]).as_bool(), Some(true));

    // A credentials file with that mode loads under the config's permission mode.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("creds.json");
    let creds = zt_creds::TunnelCredentials {
        account_tag: "0123456789abcdef0123456789abcdef".into(),
        tunnel_id: uuid::Uuid::new_v4(),
        tunnel_name: Some("k8s_zero_trust_tunnel".into()),
        secret: zt_creds::TunnelSecret::generate(),
        endpoint: None,
    };
    creds.write(&file, zt_creds::ExistingFile::Refuse).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
    let loaded = zt_creds::TunnelCredentials::load(&file, m.config.credentials_permissions)
        .unwrap_or_else(|e| panic!("a 0440 credentials file must load: {e}"));
    assert_eq!(loaded.tunnel_id, creds.tunnel_id);

    // And the 0644 default of a Secret volume is refused with advice naming the fix.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = zt_creds::TunnelCredentials::load(&file, m.config.credentials_permissions)
        .expect_err("a world-readable credentials file must be refused")
        .to_string();
    assert!(err.contains("defaultMode"), "{err}");
    assert!(err.contains("lenient"), "{err}");
}

#[test]
fn image_runs_as_the_manifests_user() {
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Dockerfile"))
            .unwrap();
    let m = manifests();
    let uid = n(get(pod_spec(&m), &["securityContext"]), &["runAsUser"]);
    assert!(
        dockerfile
            .lines()
            .any(|l| l.trim() == format!("USER {uid}:{uid}")),
        "the Dockerfile's USER must be {uid}"
    );
    assert!(dockerfile.contains("--bin zt"));
    assert!(!m.config_text.is_empty());
}

#[test]
fn kustomize_renders_when_kubectl_is_present() {
    let Ok(out) = Command::new("kubectl")
        .arg("kustomize")
        .arg(deploy_dir())
        .output()
    else {
        println!("SKIPPED: kubectl not on PATH; the manifests were checked without rendering them");
        return;
    };
    assert!(
        out.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8_lossy(&out.stdout);
    for kind in [
        "Namespace",
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
    ] {
        assert!(
            rendered.contains(&format!("kind: {kind}")),
            "{kind} missing"
        );
    }
    // kubectl reads the octal mode as Kubernetes does.
    assert!(rendered.contains("defaultMode: 288"), "{rendered}");
}
