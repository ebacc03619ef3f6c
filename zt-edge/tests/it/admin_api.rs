//! The admin API over real HTTP on loopback, against a state directory in a temporary
//! directory: the happy paths of every resource and the refusals an operator meets.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;
use zt_creds::{CaFingerprint, DeviceCredentials, TunnelCredentials};
use zt_edge::{
    AdminError, AdminServer, ConnectionSummary, ConnectorKind, Device, EdgeState, LiveView,
    NoLiveView, Timestamp, Tunnel, ADMIN_ADDR_FILE, MAX_ADMIN_BODY,
};

/// A live view with connections set by the test.
#[derive(Default)]
struct FakeLive(Mutex<Vec<(Uuid, ConnectionSummary)>>);

impl LiveView for FakeLive {
    fn tunnel_connections(&self, tunnel_id: Uuid) -> Vec<ConnectionSummary> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t == tunnel_id)
            .map(|(_, c)| c.clone())
            .collect()
    }
}

struct Api {
    _dir: tempfile::TempDir,
    state: Arc<EdgeState>,
    server: AdminServer,
    token: String,
}

impl Api {
    async fn start(live: Arc<dyn LiveView>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(
            EdgeState::open_or_init(
                dir.path().join("edge"),
                &crate::common::state_options(&dir.path().join("edge")),
            )
            .unwrap(),
        );
        let server = AdminServer::bind("127.0.0.1:0".parse().unwrap(), state.clone(), live)
            .await
            .unwrap();
        let token = state.admin_token().expose().to_owned();
        Self {
            _dir: dir,
            state,
            server,
            token,
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("PUT", path, Some(body)).await
    }

    async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("PATCH", path, Some(body)).await
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        request(
            self.server.local_addr(),
            method,
            path,
            Some(&self.token),
            body.as_bytes(),
        )
        .await
    }
}

/// One HTTP/1.1 request on a fresh connection; returns the status and the JSON body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    // A server may answer before reading a body it refuses; ignore a reset on write.
    let _ = stream.write_all(body).await;
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let value = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap()
    };
    (status, value)
}

/// The stored tunnel a credentials file (as JSON) names, and the secret the file holds.
fn stored_tunnel(api: &Api, creds: &Value) -> (Tunnel, zt_creds::TunnelSecret) {
    let creds = TunnelCredentials::from_json(creds.to_string().as_bytes()).unwrap();
    let stored = api
        .state
        .db()
        .read()
        .unwrap()
        .get::<Tunnel>(creds.tunnel_id)
        .unwrap()
        .unwrap_or_else(|| panic!("tunnel {} is not stored", creds.tunnel_id));
    (stored, creds.secret)
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("")
}

#[tokio::test]
async fn requests_without_the_right_token_are_refused_and_the_address_is_published() {
    let api = Api::start(Arc::new(NoLiveView)).await;
    let addr = api.server.local_addr();
    let (status, body) = request(addr, "GET", "/v1/account", None, b"").await;
    assert_eq!(status, 401);
    assert_eq!(code(&body), "unauthorized");
    let (status, _) = request(addr, "GET", "/v1/account", Some("not-the-token"), b"").await;
    assert_eq!(status, 401);
    // Nothing was created by an unauthenticated write.
    let (status, _) = request(
        addr,
        "POST",
        "/v1/tunnels",
        Some("wrong"),
        br#"{"name":"x"}"#,
    )
    .await;
    assert_eq!(status, 401);
    assert!(api
        .state
        .db()
        .read()
        .unwrap()
        .list::<Tunnel>()
        .unwrap()
        .is_empty());

    let (status, body) = api.call("GET", "/v1/account", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["account_tag"], api.state.account_tag());
    assert_eq!(body["ca_fingerprint"], api.state.ca_fingerprint());
    assert_eq!(body["default_vnet"]["name"], "default");

    let path = api.state.dir().join(ADMIN_ADDR_FILE);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap().trim(),
        addr.to_string()
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let (status, body) = api.call("GET", "/v1/nothing", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = api.call("PUT", "/v1/tunnels", None).await;
    assert_eq!(status, 405);
    api.server.shutdown().await;
}

#[tokio::test]
async fn a_non_loopback_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(
        EdgeState::open_or_init(dir.path(), &crate::common::state_options(dir.path())).unwrap(),
    );
    let err = AdminServer::bind("0.0.0.0:0".parse().unwrap(), state, Arc::new(NoLiveView))
        .await
        .unwrap_err();
    assert!(matches!(err, AdminError::NotLoopback { .. }), "{err}");
}

#[tokio::test]
async fn an_oversized_body_gets_413() {
    let api = Api::start(Arc::new(NoLiveView)).await;
    let big = vec![b' '; MAX_ADMIN_BODY + 1];
    let (status, body) = request(
        api.server.local_addr(),
        "POST",
        "/v1/lists",
        Some(&api.token),
        &big,
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(code(&body), "body_too_large");
    let (status, body) = api.call("POST", "/v1/tunnels", None).await;
    assert_eq!(status, 400);
    assert_eq!(code(&body), "bad_json");
}

#[tokio::test]
async fn tunnels_are_created_listed_with_connections_and_soft_deleted() {
    let live = Arc::new(FakeLive::default());
    let api = Api::start(live.clone()).await;
    let (status, body) = api
        .post("/v1/tunnels", json!({"name": "prod-cluster"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let creds = TunnelCredentials::from_json(body["credentials"].to_string().as_bytes()).unwrap();
    assert_eq!(creds.account_tag, api.state.account_tag());
    assert_eq!(creds.tunnel_name.as_deref(), Some("prod-cluster"));
    let id = creds.tunnel_id;
    assert_eq!(body["tunnel"]["id"], id.to_string());
    assert_eq!(body["tunnel"]["accepts_cloudflared"], false);

    // The edge keeps only the derived key; the key matches the secret handed out.
    let stored: Tunnel = api.state.db().read().unwrap().get(id).unwrap().unwrap();
    assert_eq!(stored.auth_key, creds.secret.derive_auth_key());
    assert!(stored.cloudflared_secret_sha256.is_none());

    let (status, body) = api
        .post(
            "/v1/tunnels",
            json!({"name": "cf", "allow_cloudflared": true}),
        )
        .await;
    assert_eq!(status, 201);
    let cf = TunnelCredentials::from_json(body["credentials"].to_string().as_bytes()).unwrap();
    let stored: Tunnel = api
        .state
        .db()
        .read()
        .unwrap()
        .get(cf.tunnel_id)
        .unwrap()
        .unwrap();
    assert!(stored
        .cloudflared_secret_sha256
        .unwrap()
        .matches(cf.secret.expose_bytes()));

    let (status, body) = api
        .post("/v1/tunnels", json!({"name": "prod-cluster"}))
        .await;
    assert_eq!(status, 409);
    assert!(message(&body).contains(&id.to_string()), "{body}");

    for i in 0..4u8 {
        live.0.lock().unwrap().push((
            id,
            ConnectionSummary::new(
                Uuid::new_v4(),
                Uuid::new_v4(),
                i,
                "edge-a".into(),
                "127.0.0.1:5000".parse().unwrap(),
                ConnectorKind::Zt,
                "test".into(),
                Timestamp::now(),
                0,
                false,
                true,
            ),
        ));
    }
    let (status, body) = api.call("GET", "/v1/tunnels", None).await;
    assert_eq!(status, 200);
    let list = body.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let prod = list.iter().find(|t| t["name"] == "prod-cluster").unwrap();
    assert_eq!(prod["connections"].as_array().unwrap().len(), 4);
    assert_eq!(prod["connections"][0]["edge_name"], "edge-a");
    // No verifier leaves the edge.
    assert!(prod.get("auth_key").is_none());

    let (status, _) = api
        .post(
            "/v1/routes",
            json!({"network": "198.51.100.0/24", "tunnel": "prod-cluster"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = api.call("GET", "/v1/tunnels/prod-cluster", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["routes"][0]["network"], "198.51.100.0/24");

    let (status, body) = api.call("DELETE", &format!("/v1/tunnels/{id}"), None).await;
    assert_eq!(status, 409);
    assert_eq!(code(&body), "in_use");
    assert!(message(&body).contains("198.51.100.0/24"), "{body}");

    let (status, _) = api
        .call("DELETE", "/v1/routes?route=198.51.100.0%2F24", None)
        .await;
    assert_eq!(status, 200);
    let (status, body) = api.call("DELETE", "/v1/tunnels/prod-cluster", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["deleted_at"].is_string());
    let (_, body) = api.call("GET", "/v1/tunnels", None).await;
    assert_eq!(body.as_array().unwrap().len(), 1);
    let (_, body) = api
        .call("GET", "/v1/tunnels?include_deleted=true", None)
        .await;
    assert_eq!(body.as_array().unwrap().len(), 2);
    let (status, _) = api.call("GET", "/v1/tunnels/prod-cluster", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn routes_are_validated_explained_and_deleted() {
    let api = Api::start(Arc::new(NoLiveView)).await;
    let (_, t) = api.post("/v1/tunnels", json!({"name": "k8s"})).await;
    let tunnel_id = t["tunnel"]["id"].as_str().unwrap().to_owned();

    let (status, body) = api
        .post(
            "/v1/routes",
            json!({"network": "10.0.0.0/8", "tunnel": tunnel_id, "comment": "all"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let wide = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["tunnel_name"], "k8s");
    assert_eq!(body["vnet_name"], "default");
    let (status, body) = api
        .post(
            "/v1/routes",
            json!({"network": "10.1.0.0/16", "tunnel": "k8s"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let narrow = body["id"].as_str().unwrap().to_owned();

    let (status, body) = api
        .post(
            "/v1/routes",
            json!({"network": "10.1.2.3/16", "tunnel": "k8s"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(code(&body), "host_bits_set");
    assert!(
        message(&body).contains("did you mean 10.1.0.0/16"),
        "{body}"
    );
    assert_eq!(body["error"]["detail"]["canonical"], "10.1.0.0/16");

    let (status, body) = api
        .post(
            "/v1/routes",
            json!({"network": "10.1.0.0/16", "tunnel": "k8s"}),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(code(&body), "duplicate_route");
    assert!(message(&body).contains(&narrow), "{body}");
    assert_eq!(body["error"]["detail"]["existing"]["id"], narrow.as_str());

    let (status, body) = api
        .post(
            "/v1/routes",
            json!({"network": "192.0.2.0/24", "tunnel": "nope"}),
        )
        .await;
    assert_eq!(status, 404);
    assert!(message(&body).contains("nope"));
    let (status, body) = api
        .post(
            "/v1/routes",
            json!({"network": "10.0.0.0/33", "tunnel": "k8s"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(code(&body), "invalid_network");

    // The same prefix in another virtual network is a different route.
    let (status, _) = api.post("/v1/vnets", json!({"name": "staging"})).await;
    assert_eq!(status, 201);
    let (status, _) = api
        .post(
            "/v1/routes",
            json!({"network": "10.1.0.0/16", "tunnel": "k8s", "vnet": "staging"}),
        )
        .await;
    assert_eq!(status, 201);
    let (_, body) = api.call("GET", "/v1/routes?vnet=staging", None).await;
    assert_eq!(body.as_array().unwrap().len(), 1);
    let (_, body) = api.call("GET", "/v1/routes?tunnel=k8s", None).await;
    assert_eq!(body.as_array().unwrap().len(), 3);

    let (status, body) = api.call("GET", "/v1/routes/ip/10.1.2.3", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["matched"]["id"], narrow.as_str());
    assert_eq!(body["also_covering"][0]["id"], wide.as_str());
    let (_, body) = api.call("GET", "/v1/routes/ip/10.200.0.1", None).await;
    assert_eq!(body["matched"]["id"], wide.as_str());
    assert!(body["also_covering"].as_array().unwrap().is_empty());
    let (_, body) = api.call("GET", "/v1/routes/ip/192.0.2.1", None).await;
    assert!(body["matched"].is_null());
    let (status, _) = api.call("GET", "/v1/routes/ip/not-an-ip", None).await;
    assert_eq!(status, 400);

    let (status, body) = api
        .call(
            "DELETE",
            "/v1/routes?route=10.1.0.0%2F16&vnet=staging",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["vnet_name"], "staging");
    let (status, body) = api
        .call("DELETE", "/v1/routes?route=10.1.0.1%2F16", None)
        .await;
    assert_eq!(status, 400);
    assert!(message(&body).contains("10.1.0.0/16"));
    let (status, _) = api
        .call("DELETE", &format!("/v1/routes?route={narrow}"), None)
        .await;
    assert_eq!(status, 200);
    let (_, body) = api.call("GET", "/v1/routes/ip/10.1.2.3", None).await;
    assert_eq!(body["matched"]["id"], wide.as_str());
    let (status, _) = api
        .call("DELETE", &format!("/v1/routes?route={narrow}"), None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn virtual_networks_are_renamed_made_default_and_deleted_only_when_unused() {
    let api = Api::start(Arc::new(NoLiveView)).await;
    api.post("/v1/tunnels", json!({"name": "t"})).await;
    let (status, body) = api
        .post("/v1/vnets", json!({"name": "lab", "comment": "test"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = api.post("/v1/vnets", json!({"name": "lab"})).await;
    assert_eq!(status, 409);
    let (status, body) = api.patch("/v1/vnets/lab", json!({"name": "lab2"})).await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "lab2");
    api.post(
        "/v1/routes",
        json!({"network": "192.0.2.0/24", "tunnel": "t", "vnet": "lab2"}),
    )
    .await;
    let (status, body) = api.call("DELETE", "/v1/vnets/lab2", None).await;
    assert_eq!(status, 409);
    assert!(message(&body).contains("192.0.2.0/24"), "{body}");

    let (status, body) = api.patch("/v1/vnets/lab2", json!({"default": true})).await;
    assert_eq!(status, 200);
    assert_eq!(body["is_default"], true);
    let (_, body) = api.call("GET", "/v1/vnets", None).await;
    let vnets = body.as_array().unwrap();
    assert_eq!(vnets.len(), 2);
    let old = vnets.iter().find(|v| v["name"] == "default").unwrap();
    assert_eq!(old["is_default"], false);
    assert_eq!(
        vnets.iter().find(|v| v["name"] == "lab2").unwrap()["routes"],
        1
    );
    // Routes without a vnet now land in the new default.
    let (_, body) = api.call("GET", "/v1/routes/ip/192.0.2.9", None).await;
    assert_eq!(body["vnet_name"], "lab2");
    assert_eq!(body["matched"]["network"], "192.0.2.0/24");
    let (status, body) = api.call("DELETE", "/v1/vnets/lab2", None).await;
    assert_eq!(status, 409);
    assert_eq!(code(&body), "is_default");
    let (status, _) = api.call("DELETE", "/v1/vnets/default", None).await;
    assert_eq!(status, 200);
    let (status, _) = api.call("DELETE", "/v1/vnets/default", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn lists_and_rules_are_checked_by_compiling_the_policy() {
    let api = Api::start(Arc::new(NoLiveView)).await;
    let (status, body) = api
        .post(
            "/v1/lists",
            json!({"name": "Kubernetes API IPs", "slug": "k8s_api", "type": "IP",
                        "items": ["198.51.100.101", "2001:db8::101/128"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let list_id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["type"], "IP");

    let (status, body) = api
        .post(
            "/v1/lists",
            json!({"name": "bad", "type": "IP", "items": ["10.0.0.1/8"]}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(message(&body).contains("10.0.0.0/8"), "{body}");
    let (status, body) = api
        .post(
            "/v1/lists",
            json!({"name": "bad", "slug": "Bad Slug", "type": "DOMAIN"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = api
        .post("/v1/lists", json!({"name": "x", "type": "COLOURS"}))
        .await;
    assert_eq!(status, 400);

    let (status, body) = api
        .post("/v1/rules", json!({"name": "allow k8s", "precedence": 10, "action": "allow",
                        "filters": ["l4"], "traffic": "net.dst.ip in $k8s_api and net.dst.port == 443"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api
        .post(
            "/v1/rules",
            json!({"name": "broken", "precedence": 20, "action": "block",
                        "filters": ["l4"], "traffic": "net.dst.port == == 22"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(code(&body), "invalid_expression");
    let diagnostic = body["error"]["detail"]["diagnostic"].as_str().unwrap();
    assert!(diagnostic.contains('^'), "{diagnostic}");
    assert!(diagnostic.contains("net.dst.port == == 22"), "{diagnostic}");
    assert!(message(&body).contains('^'));
    let (status, body) = api
        .post(
            "/v1/rules",
            json!({"name": "unknown list", "precedence": 20, "action": "block",
                        "filters": ["l4"], "traffic": "net.dst.ip in $nope"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(message(&body).contains("$nope"), "{body}");
    let (status, body) = api
        .post(
            "/v1/rules",
            json!({"name": "same precedence", "precedence": 10, "action": "block",
                        "filters": ["l4"]}),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(code(&body), "duplicate_precedence");
    assert!(message(&body).contains("allow k8s"));
    let (status, _) = api
        .post(
            "/v1/rules",
            json!({"name": "off", "precedence": 5, "action": "off", "filters": ["l4"]}),
        )
        .await;
    assert_eq!(status, 400);

    let (status, body) = api
        .patch(
            "/v1/rules/allow%20k8s",
            json!({"precedence": 30, "enabled": false}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["precedence"], 30);
    assert_eq!(body["enabled"], false);
    let (status, body) = api
        .patch("/v1/rules/allow%20k8s", json!({"traffic": "net.dst.ip in"}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(code(&body), "invalid_expression");
    let (_, body) = api.call("GET", "/v1/rules", None).await;
    assert_eq!(body.as_array().unwrap().len(), 1);
    assert_eq!(body[0]["precedence"], 30);

    // The list is in use: deleting it would break the rule.
    let (status, body) = api
        .call("DELETE", &format!("/v1/lists/{list_id}"), None)
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(message(&body).contains("allow k8s"), "{body}");
    let (status, body) = api
        .patch(
            "/v1/lists/k8s_api",
            json!({"add": ["198.51.100.102"], "remove": ["198.51.100.101"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["items"],
        json!(["2001:db8::101/128", "198.51.100.102"])
    );
    let (status, _) = api
        .patch("/v1/lists/k8s_api", json!({"add": ["not-an-ip"]}))
        .await;
    assert_eq!(status, 400);
    let (status, body) = api
        .call("GET", "/v1/lists/Kubernetes%20API%20IPs", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["items"].as_array().unwrap().len(), 2);

    let (status, _) = api.call("DELETE", "/v1/rules/allow%20k8s", None).await;
    assert_eq!(status, 200);
    let (status, _) = api.call("DELETE", "/v1/lists/k8s_api", None).await;
    assert_eq!(status, 200);
    let (_, body) = api.call("GET", "/v1/lists", None).await;
    assert!(body.as_array().unwrap().is_empty());
}

#[tokio::test]
async fn users_get_device_credentials_once_and_removal_revokes_devices() {
    let api = Api::start(Arc::new(NoLiveView)).await;
    let (status, body) = api
        .post(
            "/v1/users",
            json!({"email": "ana@example.com", "groups": ["sre", "dev"]}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(code(&body), "missing_edge_address");

    let (status, body) = api
        .post(
            "/v1/users",
            json!({"email": "ana@example.com", "groups": ["sre", "dev"],
                        "edge": ["127.0.0.1:7844"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let creds = DeviceCredentials::from_json(body["credentials"].to_string().as_bytes()).unwrap();
    assert_eq!(creds.user_email, "ana@example.com");
    assert_eq!(creds.edge, vec!["127.0.0.1:7844".to_owned()]);
    assert_eq!(
        creds.ca_fingerprint,
        api.state.ca_fingerprint().parse::<CaFingerprint>().unwrap()
    );
    let read = api.state.db().read().unwrap();
    assert_eq!(
        creds.default_vnet,
        read.default_vnet().unwrap().map(|v| v.id)
    );
    let device: Device = read.get(creds.device_id).unwrap().unwrap();
    assert_eq!(
        device.auth_key,
        Some(
            creds
                .secret()
                .expect("a device with a secret")
                .derive_auth_key()
        )
    );
    drop(read);

    let (status, _) = api
        .post(
            "/v1/users",
            json!({"email": "ANA@example.com", "edge": ["127.0.0.1:7844"]}),
        )
        .await;
    assert_eq!(status, 409);
    let (status, body) = api
        .post(
            "/v1/users",
            json!({"email": "bob@example.com", "edge": ["no-port"]}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(code(&body), "invalid_edge_address");

    let (_, body) = api.call("GET", "/v1/users", None).await;
    assert_eq!(body[0]["groups"], json!(["sre", "dev"]));
    assert_eq!(body[0]["devices"][0]["id"], creds.device_id.to_string());
    assert!(body[0]["devices"][0].get("auth_key").is_none());

    let (status, body) = api.call("DELETE", "/v1/users/ana@example.com", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked_devices"][0], creds.device_id.to_string());
    let read = api.state.db().read().unwrap();
    assert!(read.get::<Device>(creds.device_id).unwrap().is_none());
    let (_, body) = api.call("GET", "/v1/users", None).await;
    assert!(body.as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_stored_list_the_policy_cannot_use_blocks_rule_changes_as_it_blocks_reloads() {
    let api = Api::start(Arc::new(NoLiveView)).await;
    // URL lists can only come from outside the admin API; the API refuses to make them.
    let (status, _) = api
        .post("/v1/lists", json!({"name": "urls", "type": "URL"}))
        .await;
    assert_eq!(status, 400);
    let list = zt_edge::List::new("urls", zt_edge::ListKind::Url, vec![]);
    api.state
        .db()
        .update(|txn| txn.put(&list).map(|_| ()))
        .unwrap();
    let (status, body) = api
        .post(
            "/v1/rules",
            json!({"name": "r", "precedence": 1, "action": "allow"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(code(&body), "invalid_list");
    assert!(message(&body).contains("urls"), "{body}");
}

#[tokio::test]
async fn a_tunnel_opts_in_to_cloudflared_only_with_its_own_credentials() {
    let api = Api::start(Arc::new(NoLiveView)).await;
    let (status, created) = api.post("/v1/tunnels", json!({ "name": "legacy" })).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["tunnel"]["accepts_cloudflared"], false);
    let creds = created["credentials"].clone();
    let (_, other) = api.post("/v1/tunnels", json!({ "name": "other" })).await;

    // Without credentials, or with another tunnel's, the opt-in is refused.
    let (status, v) = api
        .put("/v1/tunnels/legacy/cloudflared", json!({ "enabled": true }))
        .await;
    assert_eq!((status, code(&v)), (400, "credentials_required"), "{v}");
    let (status, v) = api
        .put(
            "/v1/tunnels/legacy/cloudflared",
            json!({ "enabled": true, "credentials": other["credentials"] }),
        )
        .await;
    assert_eq!((status, code(&v)), (400, "credentials_mismatch"), "{v}");
    let mut forged = creds.clone();
    forged["TunnelSecret"] = other["credentials"]["TunnelSecret"].clone();
    let (status, v) = api
        .put(
            "/v1/tunnels/legacy/cloudflared",
            json!({ "enabled": true, "credentials": forged }),
        )
        .await;
    assert_eq!((status, code(&v)), (400, "credentials_mismatch"), "{v}");
    // Nothing of the secret comes back in the refusal.
    assert!(!v
        .to_string()
        .contains(creds["TunnelSecret"].as_str().unwrap()));

    let (status, v) = api
        .put(
            "/v1/tunnels/legacy/cloudflared",
            json!({ "enabled": true, "credentials": creds }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["accepts_cloudflared"], true);
    let (stored, secret) = stored_tunnel(&api, &creds);
    assert!(stored
        .cloudflared_secret_sha256
        .unwrap()
        .matches(secret.expose_bytes()));

    let (status, v) = api
        .put(
            "/v1/tunnels/legacy/cloudflared",
            json!({ "enabled": false }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["accepts_cloudflared"], false);

    // The CA certificate is published for --cacert.
    let (_, account) = api.call("GET", "/v1/account", None).await;
    assert_eq!(account["ca_pem"], api.state.ca_pem());
}

#[tokio::test]
async fn an_existing_tunnel_is_imported_from_its_credentials_with_its_id_account_and_secret() {
    let api = Api::start(Arc::new(NoLiveView)).await;
    // A credentials file made elsewhere (by Cloudflare, say): another account tag.
    let creds = json!({
        "AccountTag": "0123456789abcdef0123456789abcdef",
        "TunnelSecret": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "TunnelID": "8e343b13-a087-48ea-825f-9783931ff2a5",
        "TunnelName": "k8s_zero_trust_tunnel",
    });
    let (status, created) = api
        .post(
            "/v1/tunnels",
            json!({ "name": "imported", "credentials": creds }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["tunnel"]["id"], creds["TunnelID"]);
    assert_eq!(created["tunnel"]["account_tag"], creds["AccountTag"]);
    assert_eq!(created["tunnel"]["accepts_cloudflared"], false);
    let (stored, secret) = stored_tunnel(&api, &creds);
    assert_eq!(stored.auth_key, secret.derive_auth_key());
    assert_ne!(stored.account_tag, api.state.account_tag());

    // The same id cannot be imported twice, even under another name, nor after deletion.
    let (status, v) = api
        .post(
            "/v1/tunnels",
            json!({ "name": "again", "credentials": creds }),
        )
        .await;
    assert_eq!((status, code(&v)), (409, "conflict"), "{v}");
    assert!(
        message(&v).contains("8e343b13-a087-48ea-825f-9783931ff2a5"),
        "{v}"
    );
    let (status, v) = api.call("DELETE", "/v1/tunnels/imported", None).await;
    assert!(status < 300, "{status} {v}");
    let (status, v) = api
        .post(
            "/v1/tunnels",
            json!({ "name": "imported", "credentials": creds }),
        )
        .await;
    assert_eq!((status, code(&v)), (409, "conflict"), "{v}");
    assert!(message(&v).contains("deleted"), "{v}");

    // Files that are not credentials, or carry an account tag the edge cannot store, are
    // refused by name, and nothing of the secret comes back.
    let mut bad_tag = creds.clone();
    bad_tag["AccountTag"] = json!("NOT-HEX");
    bad_tag["TunnelID"] = json!(Uuid::new_v4().to_string());
    let (status, v) = api
        .post(
            "/v1/tunnels",
            json!({ "name": "bad-tag", "credentials": bad_tag }),
        )
        .await;
    assert_eq!((status, code(&v)), (400, "invalid_credentials"), "{v}");
    assert!(message(&v).contains("AccountTag"), "{v}");
    assert!(!v.to_string().contains("AAECAwQF"), "{v}");
    let (status, v) = api
        .post("/v1/tunnels", json!({ "name": "no-secret", "credentials": { "AccountTag": "0123456789abcdef0123456789abcdef", "TunnelID": Uuid::new_v4().to_string() } }))
        .await;
    assert_eq!((status, code(&v)), (400, "invalid_credentials"), "{v}");
    assert!(message(&v).contains("TunnelSecret"), "{v}");
}
