//! The admin API's operations, one function per endpoint, over the [`Db`](crate::Db).
//!
//! Every write runs in one transaction that first reads what it checks against, so two
//! concurrent admin calls cannot both pass a check that only one of them may pass. Changes
//! are checked with the crates that will use them: route prefixes with zt-routes (the
//! table the edge loads), list items, rules and expressions by compiling the whole policy
//! with zt-policy. Records go out through `info()` views: no verifier ever leaves the edge.
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/v1/account` | account tag, CA fingerprint, PEM and its path, default vnet |
//! | GET, POST | `/v1/tunnels` | list (with live connections); create (returns credentials once) |
//! | GET, DELETE | `/v1/tunnels/{id or name}` | info; soft delete |
//! | PUT | `/v1/tunnels/{id or name}/cloudflared` | accept cloudflared connectors (with the credentials) or stop |
//! | GET, POST, DELETE | `/v1/routes` | show (`?vnet=&tunnel=`); add; delete (`?route=ID or CIDR&vnet=`) |
//! | GET | `/v1/routes/ip/{ip}` | the matching route and the shorter ones covering it (`?vnet=`) |
//! | GET, POST | `/v1/vnets` | list; add |
//! | PATCH, DELETE | `/v1/vnets/{id or name}` | rename, comment, make default; delete |
//! | GET, POST | `/v1/lists`, `/v1/rules` | list; create |
//! | GET, PATCH, DELETE | `/v1/lists/{key}`, `/v1/rules/{key}` | show; update; delete |
//! | GET, POST | `/v1/users` | list; add (returns the device credentials once) |
//! | DELETE | `/v1/users/{id or email}` | remove the user and revoke its devices |

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use hyper::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;
use zt_creds::{CaFingerprint, DeviceCredentials, TunnelCredentials, TunnelSecret};
use zt_policy::ListType;
use zt_routes::{AddRouteError, RouteTable};

use super::error::ApiError;
use super::policy::{check_policy, list_kind, list_type, parse_action, parse_filter};
use crate::live::LiveView;
use crate::state::EdgeState;
use crate::store::{
    Device, List, ReadTxn, Route, Rule, SecretSha256, StoreError, Tunnel, User, VirtualNetwork,
    WriteTxn,
};
use crate::timestamp::Timestamp;

/// What every operation can reach.
pub(crate) struct Ctx {
    pub(crate) state: Arc<EdgeState>,
    pub(crate) live: Arc<dyn LiveView>,
    /// Edge addresses put in device credentials when the caller names none.
    pub(crate) edge_addresses: Vec<String>,
}

/// A request, decoded from HTTP: path segments and query values are percent-decoded.
pub(crate) struct ApiRequest {
    pub(crate) method: Method,
    pub(crate) segments: Vec<String>,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) body: bytes::Bytes,
}

impl ApiRequest {
    fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if self.body.is_empty() {
            return Err(ApiError::bad_request(
                "bad_json",
                "this request needs a JSON body",
            ));
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            ApiError::bad_request("bad_json", format!("the request body is not valid: {e}"))
        })
    }
}

/// The reply to a request that succeeded.
pub(crate) type Reply = Result<(StatusCode, Value), ApiError>;

fn ok(v: Value) -> Reply {
    Ok((StatusCode::OK, v))
}

fn created(v: Value) -> Reply {
    Ok((StatusCode::CREATED, v))
}

/// Runs one request. Blocking: call it off the async runtime.
pub(crate) fn handle(ctx: &Ctx, req: &ApiRequest) -> Reply {
    let segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let m = &req.method;
    match segs.as_slice() {
        ["v1", "account"] if m == Method::GET => account(ctx),
        ["v1", "tunnels"] if m == Method::GET => tunnel_list(ctx, req),
        ["v1", "tunnels"] if m == Method::POST => tunnel_create(ctx, req),
        ["v1", "tunnels", key] if m == Method::GET => tunnel_info(ctx, key),
        ["v1", "tunnels", key] if m == Method::DELETE => tunnel_delete(ctx, key),
        ["v1", "tunnels", key, "cloudflared"] if m == Method::PUT => {
            tunnel_cloudflared(ctx, req, key)
        }
        ["v1", "routes"] if m == Method::GET => route_show(ctx, req),
        ["v1", "routes"] if m == Method::POST => route_add(ctx, req),
        ["v1", "routes"] if m == Method::DELETE => route_delete(ctx, req),
        ["v1", "routes", "ip", ip] if m == Method::GET => route_get(ctx, req, ip),
        ["v1", "vnets"] if m == Method::GET => vnet_list(ctx),
        ["v1", "vnets"] if m == Method::POST => vnet_add(ctx, req),
        ["v1", "vnets", key] if m == Method::PATCH => vnet_update(ctx, req, key),
        ["v1", "vnets", key] if m == Method::DELETE => vnet_delete(ctx, key),
        ["v1", "lists"] if m == Method::GET => list_all(ctx),
        ["v1", "lists"] if m == Method::POST => list_create(ctx, req),
        ["v1", "lists", key] if m == Method::GET => list_show(ctx, key),
        ["v1", "lists", key] if m == Method::PATCH => list_update(ctx, req, key),
        ["v1", "lists", key] if m == Method::DELETE => list_delete(ctx, key),
        ["v1", "rules"] if m == Method::GET => rule_all(ctx),
        ["v1", "rules"] if m == Method::POST => rule_create(ctx, req),
        ["v1", "rules", key] if m == Method::GET => rule_show(ctx, key),
        ["v1", "rules", key] if m == Method::PATCH => rule_update(ctx, req, key),
        ["v1", "rules", key] if m == Method::DELETE => rule_delete(ctx, key),
        ["v1", "users"] if m == Method::GET => user_list(ctx),
        ["v1", "users"] if m == Method::POST => user_add(ctx, req),
        ["v1", "users", key] if m == Method::DELETE => user_remove(ctx, key),
        ["v1", "account" | "tunnels" | "routes" | "vnets" | "lists" | "rules" | "users", ..] => {
            Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{m} is not supported on /{}", req.segments.join("/")),
            ))
        }
        _ => Err(ApiError::not_found(format!(
            "no such endpoint: /{}",
            req.segments.join("/")
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Lookups by id or by name, on either kind of transaction.

/// The read methods both transaction kinds have, so lookups are written once.
trait Lookup {
    fn get_tunnel(&self, id: Uuid) -> Result<Option<Tunnel>, StoreError>;
    fn tunnel_named(&self, name: &str) -> Result<Option<Tunnel>, StoreError>;
    fn get_vnet(&self, id: Uuid) -> Result<Option<VirtualNetwork>, StoreError>;
    fn vnet_named(&self, name: &str) -> Result<Option<VirtualNetwork>, StoreError>;
    fn the_default_vnet(&self) -> Result<Option<VirtualNetwork>, StoreError>;
    fn get_list(&self, id: Uuid) -> Result<Option<List>, StoreError>;
    fn list_named(&self, name: &str) -> Result<Option<List>, StoreError>;
    fn list_slugged(&self, slug: &str) -> Result<Option<List>, StoreError>;
    fn get_rule(&self, id: Uuid) -> Result<Option<Rule>, StoreError>;
    fn rule_named(&self, name: &str) -> Result<Option<Rule>, StoreError>;
    fn get_user(&self, id: Uuid) -> Result<Option<User>, StoreError>;
    fn user_emailed(&self, email: &str) -> Result<Option<User>, StoreError>;
    fn all_tunnels(&self) -> Result<Vec<Tunnel>, StoreError>;
    fn all_vnets(&self) -> Result<Vec<VirtualNetwork>, StoreError>;
}

macro_rules! impl_lookup {
    ($t:ty) => {
        impl Lookup for $t {
            fn get_tunnel(&self, id: Uuid) -> Result<Option<Tunnel>, StoreError> {
                self.get(id)
            }
            fn tunnel_named(&self, name: &str) -> Result<Option<Tunnel>, StoreError> {
                self.tunnel_by_name(name)
            }
            fn get_vnet(&self, id: Uuid) -> Result<Option<VirtualNetwork>, StoreError> {
                self.get(id)
            }
            fn vnet_named(&self, name: &str) -> Result<Option<VirtualNetwork>, StoreError> {
                self.vnet_by_name(name)
            }
            fn the_default_vnet(&self) -> Result<Option<VirtualNetwork>, StoreError> {
                self.default_vnet()
            }
            fn get_list(&self, id: Uuid) -> Result<Option<List>, StoreError> {
                self.get(id)
            }
            fn list_named(&self, name: &str) -> Result<Option<List>, StoreError> {
                self.list_by_name(name)
            }
            fn list_slugged(&self, slug: &str) -> Result<Option<List>, StoreError> {
                self.list_by_slug(slug)
            }
            fn get_rule(&self, id: Uuid) -> Result<Option<Rule>, StoreError> {
                self.get(id)
            }
            fn rule_named(&self, name: &str) -> Result<Option<Rule>, StoreError> {
                self.rule_by_name(name)
            }
            fn get_user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
                self.get(id)
            }
            fn user_emailed(&self, email: &str) -> Result<Option<User>, StoreError> {
                self.user_by_email(email)
            }
            fn all_tunnels(&self) -> Result<Vec<Tunnel>, StoreError> {
                self.list()
            }
            fn all_vnets(&self) -> Result<Vec<VirtualNetwork>, StoreError> {
                self.list()
            }
        }
    };
}

impl_lookup!(ReadTxn<'_>);
impl_lookup!(WriteTxn<'_>);

/// An id in either UUID form (with or without dashes, as rules write list ids).
fn as_id(key: &str) -> Option<Uuid> {
    Uuid::try_parse(key).ok()
}

/// A live tunnel by id or name.
fn find_tunnel(t: &impl Lookup, key: &str) -> Result<Tunnel, ApiError> {
    let found = match as_id(key) {
        Some(id) => t.get_tunnel(id)?.filter(Tunnel::is_active),
        None => None,
    };
    let found = match found {
        Some(f) => Some(f),
        None => t.tunnel_named(key)?,
    };
    found.ok_or_else(|| {
        ApiError::not_found(format!(
            "no tunnel with id or name `{key}`; `zt tunnel list` shows the tunnels"
        ))
        .with_detail(json!({ "kind": "tunnel", "key": key }))
    })
}

/// A virtual network by id or name; `None` means the default one.
fn find_vnet(t: &impl Lookup, key: Option<&str>) -> Result<VirtualNetwork, ApiError> {
    let Some(key) = key else {
        return t.the_default_vnet()?.ok_or_else(|| {
            ApiError::internal("the state has no default virtual network; make one the default")
        });
    };
    let found = match as_id(key) {
        Some(id) => t.get_vnet(id)?,
        None => None,
    };
    let found = match found {
        Some(f) => Some(f),
        None => t.vnet_named(key)?,
    };
    found.ok_or_else(|| {
        ApiError::not_found(format!(
            "no virtual network with id or name `{key}`; `zt vnet list` shows them"
        ))
        .with_detail(json!({ "kind": "virtual network", "key": key }))
    })
}

fn find_list(t: &impl Lookup, key: &str) -> Result<List, ApiError> {
    let key_trim = key.strip_prefix('$').unwrap_or(key);
    let mut found = match as_id(key_trim) {
        Some(id) => t.get_list(id)?,
        None => None,
    };
    if found.is_none() {
        found = t.list_named(key)?;
    }
    if found.is_none() {
        found = t.list_slugged(key_trim)?;
    }
    found.ok_or_else(|| {
        ApiError::not_found(format!(
            "no list with id, name or slug `{key}`; `zt list show` shows them"
        ))
        .with_detail(json!({ "kind": "list", "key": key }))
    })
}

fn find_rule(t: &impl Lookup, key: &str) -> Result<Rule, ApiError> {
    find_by_id_or(
        key,
        |id| t.get_rule(id),
        || t.rule_named(key),
        "rule",
        "name",
        "zt rule list",
    )
}

fn find_user(t: &impl Lookup, key: &str) -> Result<User, ApiError> {
    find_by_id_or(
        key,
        |id| t.get_user(id),
        || t.user_emailed(key),
        "user",
        "email",
        "zt user list",
    )
}

/// Looks a record up by id when `key` is one, else by its other key; the not-found error
/// names what was tried and the command that lists them.
fn find_by_id_or<T>(
    key: &str,
    by_id: impl FnOnce(Uuid) -> Result<Option<T>, StoreError>,
    by_other: impl FnOnce() -> Result<Option<T>, StoreError>,
    kind: &str,
    other: &str,
    list_command: &str,
) -> Result<T, ApiError> {
    let found = match as_id(key) {
        Some(id) => by_id(id)?,
        None => None,
    };
    let found = match found {
        Some(f) => Some(f),
        None => by_other()?,
    };
    found.ok_or_else(|| {
        ApiError::not_found(format!(
            "no {kind} with id or {other} `{key}`; `{list_command}` shows them"
        ))
        .with_detail(json!({ "kind": kind, "key": key }))
    })
}

/// Names by id, to show routes with their tunnel and network names.
struct Names {
    tunnels: HashMap<Uuid, String>,
    vnets: HashMap<Uuid, String>,
}

impl Names {
    fn load(t: &impl Lookup) -> Result<Self, ApiError> {
        Ok(Self {
            tunnels: t
                .all_tunnels()?
                .into_iter()
                .map(|x| (x.id, x.name))
                .collect(),
            vnets: t.all_vnets()?.into_iter().map(|x| (x.id, x.name)).collect(),
        })
    }

    fn route(&self, r: &Route) -> Value {
        json!({
            "id": r.id,
            "network": r.network.to_string(),
            "vnet": r.vnet,
            "vnet_name": self.vnets.get(&r.vnet),
            "tunnel_id": r.tunnel_id,
            "tunnel_name": self.tunnels.get(&r.tunnel_id),
            "comment": r.comment,
            "created_at": r.created_at,
        })
    }

    fn describe(&self, r: &Route) -> String {
        format!(
            "{} in virtual network {} (route {}, tunnel {})",
            r.network,
            self.vnets.get(&r.vnet).map_or("?", String::as_str),
            r.id,
            self.tunnels.get(&r.tunnel_id).map_or("?", String::as_str),
        )
    }
}

/// The route table zt-routes would build from these records: the edge's own checks
/// (host bits, duplicates) and its longest-prefix answers, not a re-implementation.
fn route_table(vnets: &[VirtualNetwork], routes: &[Route]) -> Result<RouteTable, ApiError> {
    let default = vnets
        .iter()
        .find(|v| v.is_default)
        .map(|v| v.id)
        .ok_or_else(|| ApiError::internal("the state has no default virtual network"))?;
    let secs = |t: Timestamp| u64::try_from(t.unix_seconds()).unwrap_or(0);
    let data = json!({
        "default_vnet": default,
        "vnets": vnets.iter().map(|v| json!({
            "id": v.id, "name": v.name, "comment": v.comment, "created_at": secs(v.created_at),
        })).collect::<Vec<_>>(),
        "routes": routes.iter().map(|r| json!({
            "id": r.id, "network": r.network, "vnet": r.vnet, "tunnel_id": r.tunnel_id,
            "comment": r.comment, "created_at": secs(r.created_at),
        })).collect::<Vec<_>>(),
    });
    serde_json::from_value(data)
        .map_err(|e| ApiError::internal(format!("the stored routes do not form a table: {e}")))
}

// ---------------------------------------------------------------------------------------
// Account.

fn account(ctx: &Ctx) -> Reply {
    let read = ctx.state.db().read()?;
    let vnet = find_vnet(&read, None)?;
    ok(json!({
        "account_tag": ctx.state.account_tag(),
        "ca_fingerprint": ctx.state.ca_fingerprint(),
        "ca_pem_path": ctx.state.ca_pem_path(),
        // Public: what cloudflared's --cacert and zt-connector's --cacert point at.
        "ca_pem": ctx.state.ca_pem(),
        "default_vnet": { "id": vnet.id, "name": vnet.name },
        "edge": ctx.edge_addresses,
    }))
}

// ---------------------------------------------------------------------------------------
// Tunnels.

fn tunnel_view(ctx: &Ctx, t: &Tunnel) -> Value {
    let mut v = json!(t.info());
    v["connections"] = json!(ctx.live.tunnel_connections(t.id));
    v
}

fn tunnel_list(ctx: &Ctx, req: &ApiRequest) -> Reply {
    let include_deleted = req.query("include_deleted") == Some("true");
    let read = ctx.state.db().read()?;
    let mut tunnels: Vec<Tunnel> = read
        .list::<Tunnel>()?
        .into_iter()
        .filter(|t| include_deleted || t.is_active())
        .collect();
    tunnels.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
    ok(json!(tunnels
        .iter()
        .map(|t| tunnel_view(ctx, t))
        .collect::<Vec<_>>()))
}

fn tunnel_info(ctx: &Ctx, key: &str) -> Reply {
    let read = ctx.state.db().read()?;
    let tunnel = find_tunnel(&read, key)?;
    let names = Names::load(&read)?;
    let routes: Vec<Value> = read
        .list::<Route>()?
        .iter()
        .filter(|r| r.tunnel_id == tunnel.id)
        .map(|r| names.route(r))
        .collect();
    let mut v = tunnel_view(ctx, &tunnel);
    v["routes"] = json!(routes);
    ok(v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTunnel {
    name: String,
    #[serde(default)]
    allow_cloudflared: bool,
    /// An existing tunnel's credentials (cloudflared's JSON) to import: the tunnel keeps
    /// their id, account tag and secret, so connectors already holding the file (a team
    /// moving from Cloudflare) keep working unchanged. Without them a new tunnel is made.
    #[serde(default)]
    credentials: Option<Value>,
}

fn tunnel_create(ctx: &Ctx, req: &ApiRequest) -> Reply {
    let body: CreateTunnel = req.json()?;
    let name = body.name.trim().to_owned();
    let (secret, imported_id, account_tag) = match &body.credentials {
        None => (
            TunnelSecret::generate(),
            None,
            ctx.state.account_tag().to_owned(),
        ),
        Some(creds) => {
            let creds =
                TunnelCredentials::from_json(creds.to_string().as_bytes()).map_err(|e| {
                    ApiError::bad_request("invalid_credentials", format!("credentials: {e}"))
                })?;
            if !crate::hex::is_lower_hex(&creds.account_tag, 32) {
                return Err(ApiError::bad_request(
                    "invalid_credentials",
                    "credentials: field `AccountTag` is not 32 lowercase hex digits",
                ));
            }
            (creds.secret, Some(creds.tunnel_id), creds.account_tag)
        }
    };
    let mut tunnel = Tunnel::new(&name, account_tag, &secret);
    if let Some(id) = imported_id {
        tunnel.id = id;
    }
    if body.allow_cloudflared {
        tunnel.cloudflared_secret_sha256 = Some(SecretSha256::of(&secret));
    }
    ctx.state
        .db()
        .update(|txn| {
            // An imported id may already be taken (imported twice, or a deleted tunnel
            // whose record is kept for the audit trail).
            if let Some(existing) = txn.get::<Tunnel>(tunnel.id)? {
                return Err(ApiError::conflict(
                    "conflict",
                    format!(
                        "a tunnel with id {} already exists (`{}`{}); it cannot be imported again",
                        existing.id,
                        existing.name,
                        if existing.is_active() { "" } else { ", deleted" }
                    ),
                )
                .with_detail(json!({ "kind": "tunnel", "existing": existing.id })));
            }
            if let Some(existing) = txn.tunnel_by_name(&name)? {
                return Err(ApiError::conflict(
                    "conflict",
                    format!(
                        "a tunnel named `{name}` already exists ({}); pick another name or delete it first",
                        existing.id
                    ),
                )
                .with_detail(json!({ "kind": "tunnel", "existing": existing.id })));
            }
            txn.put(&tunnel)?;
            Ok(())
        })?;
    tracing::info!(tunnel = %tunnel.id, name = %tunnel.name, imported = imported_id.is_some(), "tunnel created");
    let credentials = TunnelCredentials {
        account_tag: tunnel.account_tag.clone(),
        tunnel_id: tunnel.id,
        tunnel_name: Some(tunnel.name.clone()),
        secret,
        endpoint: None,
    };
    // The only time the secret leaves the edge: the caller writes it to a file or a token.
    let credentials: Value = serde_json::from_str(&credentials.to_json())
        .map_err(|e| ApiError::internal(format!("cannot encode the credentials: {e}")))?;
    created(json!({ "tunnel": tunnel.info(), "credentials": credentials }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloudflaredOptIn {
    enabled: bool,
    /// The tunnel's credentials (cloudflared's JSON), required to opt in: the edge keeps only
    /// a key derived from the secret, so it needs the secret once to store its SHA-256.
    #[serde(default)]
    credentials: Option<Value>,
}

/// Turns acceptance of cloudflared connectors on (with the tunnel's credentials, checked
/// against the stored key) or off for one tunnel. Connections already registered stay until
/// they reconnect.
fn tunnel_cloudflared(ctx: &Ctx, req: &ApiRequest, key: &str) -> Reply {
    let body: CloudflaredOptIn = req.json()?;
    let digest = match (body.enabled, &body.credentials) {
        (false, _) => None,
        (true, None) => {
            return Err(ApiError::bad_request(
                "credentials_required",
                "opting in to cloudflared needs the tunnel's credentials (the edge keeps only a                  key derived from the secret); give --credentials-file",
            ))
        }
        (true, Some(creds)) => {
            let creds = TunnelCredentials::from_json(creds.to_string().as_bytes()).map_err(
                |e| ApiError::bad_request("invalid_credentials", format!("credentials: {e}")),
            )?;
            Some(creds)
        }
    };
    let (tunnel, _) = ctx.state.db().update(|txn| {
        let mut tunnel = find_tunnel(txn, key)?;
        tunnel.cloudflared_secret_sha256 = match &digest {
            None => None,
            Some(creds) => {
                // AuthKey's comparison is constant-time.
                if creds.tunnel_id != tunnel.id
                    || creds.secret.derive_auth_key() != tunnel.auth_key
                {
                    return Err(ApiError::bad_request(
                        "credentials_mismatch",
                        format!(
                            "the credentials are not those of tunnel `{}` ({}): wrong tunnel id or secret",
                            tunnel.name, tunnel.id
                        ),
                    ));
                }
                Some(SecretSha256::of(&creds.secret))
            }
        };
        txn.put(&tunnel)?;
        Ok::<_, ApiError>(tunnel)
    })?;
    tracing::info!(tunnel = %tunnel.id, name = %tunnel.name, accepts_cloudflared = body.enabled, "tunnel cloudflared setting changed");
    ok(tunnel_view(ctx, &tunnel))
}

fn tunnel_delete(ctx: &Ctx, key: &str) -> Reply {
    let (tunnel, _) = ctx.state.db().update(|txn| {
        let mut tunnel = find_tunnel(txn, key)?;
        let using: Vec<Route> = txn
            .list::<Route>()?
            .into_iter()
            .filter(|r| r.tunnel_id == tunnel.id)
            .collect();
        if !using.is_empty() {
            let names = Names::load(txn)?;
            let list: Vec<String> = using.iter().map(|r| names.describe(r)).collect();
            return Err(ApiError::conflict(
                "in_use",
                format!(
                    "tunnel `{}` still serves {} route(s): {}; delete them first with `zt route ip delete`",
                    tunnel.name,
                    using.len(),
                    list.join(", ")
                ),
            )
            .with_detail(json!({
                "routes": using.iter().map(|r| names.route(r)).collect::<Vec<_>>()
            })));
        }
        tunnel.deleted_at = Some(Timestamp::now());
        txn.put(&tunnel)?;
        Ok::<_, ApiError>(tunnel)
    })?;
    tracing::info!(tunnel = %tunnel.id, name = %tunnel.name, "tunnel deleted");
    ok(json!(tunnel.info()))
}

// ---------------------------------------------------------------------------------------
// Routes.

fn route_show(ctx: &Ctx, req: &ApiRequest) -> Reply {
    let read = ctx.state.db().read()?;
    let vnet = match req.query("vnet") {
        Some(v) => Some(find_vnet(&read, Some(v))?.id),
        None => None,
    };
    let tunnel = match req.query("tunnel") {
        Some(t) => Some(find_tunnel(&read, t)?.id),
        None => None,
    };
    let names = Names::load(&read)?;
    let mut routes: Vec<Route> = read
        .list::<Route>()?
        .into_iter()
        .filter(|r| vnet.is_none_or(|v| r.vnet == v) && tunnel.is_none_or(|t| r.tunnel_id == t))
        .collect();
    routes.sort_by(|a, b| {
        (names.vnets.get(&a.vnet), a.network).cmp(&(names.vnets.get(&b.vnet), b.network))
    });
    ok(json!(routes
        .iter()
        .map(|r| names.route(r))
        .collect::<Vec<_>>()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddRoute {
    network: String,
    tunnel: String,
    #[serde(default)]
    vnet: Option<String>,
    #[serde(default)]
    comment: String,
}

fn route_add(ctx: &Ctx, req: &ApiRequest) -> Reply {
    let body: AddRoute = req.json()?;
    let network = zt_routes::parse_network(&body.network)
        .map_err(|e| ApiError::bad_request("invalid_network", e.to_string()))?;
    let (value, _) = ctx.state.db().update(|txn| {
        let tunnel = find_tunnel(txn, &body.tunnel)?;
        let vnet = find_vnet(txn, body.vnet.as_deref())?;
        let vnets = txn.list::<VirtualNetwork>()?;
        let routes = txn.list::<Route>()?;
        let mut table = route_table(&vnets, &routes)?;
        let mut route = Route::new(network, vnet.id, tunnel.id);
        route.comment = body.comment.clone();
        let candidate = zt_routes::Route {
            id: route.id,
            network,
            vnet: vnet.id,
            tunnel_id: tunnel.id,
            comment: route.comment.clone(),
            created_at: 0,
        };
        if let Err(e) = table.insert(candidate) {
            let names = Names::load(txn)?;
            return Err(match e {
                AddRouteError::HostBitsSet { network, canonical } => ApiError::bad_request(
                    "host_bits_set",
                    format!("{e}; routes name a network, so write {canonical}"),
                )
                .with_detail(json!({ "network": network.to_string(), "canonical": canonical.to_string() })),
                AddRouteError::Duplicate { existing, .. } => {
                    let existing = routes.iter().find(|r| r.id == existing);
                    let message = match existing {
                        Some(r) => format!(
                            "{network} is already routed: {}; delete that route first or use another virtual network",
                            names.describe(r)
                        ),
                        None => e.to_string(),
                    };
                    ApiError::conflict("duplicate_route", message)
                        .with_detail(json!({ "existing": existing.map(|r| names.route(r)) }))
                }
                other => ApiError::bad_request("invalid_route", other.to_string()),
            });
        }
        txn.put(&route)?;
        let names = Names::load(txn)?;
        Ok::<_, ApiError>(names.route(&route))
    })?;
    tracing::info!(network = %network, "route added");
    created(value)
}

fn route_delete(ctx: &Ctx, req: &ApiRequest) -> Reply {
    let Some(key) = req.query("route") else {
        return Err(ApiError::bad_request(
            "missing_parameter",
            "name the route to delete: ?route=ID or ?route=CIDR (with &vnet=NAME outside the default virtual network)",
        ));
    };
    let (value, _) = ctx.state.db().update(|txn| {
        let route = match as_id(key) {
            Some(id) => txn.get::<Route>(id)?.ok_or_else(|| {
                ApiError::not_found(format!("no route with id {id}; `zt route ip show` lists them"))
            })?,
            None => {
                let network = zt_routes::parse_network(key)
                    .map_err(|e| ApiError::bad_request("invalid_network", e.to_string()))?;
                if network.trunc() != network {
                    return Err(ApiError::bad_request(
                        "host_bits_set",
                        format!("{network} has host bits set; did you mean {}?", network.trunc()),
                    )
                    .with_detail(json!({ "network": network.to_string(), "canonical": network.trunc().to_string() })));
                }
                let vnet = find_vnet(txn, req.query("vnet"))?;
                txn.route_by_network(vnet.id, network)?.ok_or_else(|| {
                    ApiError::not_found(format!(
                        "no route for {network} in virtual network {}; `zt route ip show` lists them",
                        vnet.name
                    ))
                })?
            }
        };
        let names = Names::load(txn)?;
        txn.delete::<Route>(route.id)?;
        Ok::<_, ApiError>(names.route(&route))
    })?;
    tracing::info!(route = %value["id"], "route deleted");
    ok(value)
}

fn route_get(ctx: &Ctx, req: &ApiRequest, ip: &str) -> Reply {
    let addr: IpAddr = ip.trim().parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_address",
            format!("`{ip}` is not an IPv4 or IPv6 address"),
        )
    })?;
    let read = ctx.state.db().read()?;
    let vnet = find_vnet(&read, req.query("vnet"))?;
    let vnets = read.list::<VirtualNetwork>()?;
    let routes = read.list::<Route>()?;
    let table = route_table(&vnets, &routes)?;
    let explanation = table
        .explain(Some(vnet.id), addr)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let names = Names::load(&read)?;
    let by_id: HashMap<Uuid, &Route> = routes.iter().map(|r| (r.id, r)).collect();
    let view = |r: &zt_routes::Route| by_id.get(&r.id).map(|r| names.route(r));
    ok(json!({
        "address": addr.to_string(),
        "vnet": vnet.id,
        "vnet_name": vnet.name,
        "matched": explanation.matched.as_ref().and_then(view),
        "also_covering": explanation.also_covering.iter().filter_map(view).collect::<Vec<_>>(),
    }))
}

// ---------------------------------------------------------------------------------------
// Virtual networks.

fn vnet_list(ctx: &Ctx) -> Reply {
    let read = ctx.state.db().read()?;
    let routes = read.list::<Route>()?;
    let mut vnets = read.list::<VirtualNetwork>()?;
    vnets.sort_by(|a, b| a.name.cmp(&b.name));
    ok(json!(vnets
        .iter()
        .map(|v| {
            let mut j = json!(v);
            j["routes"] = json!(routes.iter().filter(|r| r.vnet == v.id).count());
            j
        })
        .collect::<Vec<_>>()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddVnet {
    name: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    default: bool,
}

fn vnet_add(ctx: &Ctx, req: &ApiRequest) -> Reply {
    let body: AddVnet = req.json()?;
    let mut vnet = VirtualNetwork::new(body.name.trim());
    vnet.comment = body.comment;
    let (vnet, _) = ctx.state.db().update(|txn| {
        txn.put(&vnet)?;
        if body.default {
            txn.set_default_vnet(vnet.id)?;
        }
        Ok::<_, ApiError>(txn.get::<VirtualNetwork>(vnet.id)?.unwrap_or(vnet.clone()))
    })?;
    created(json!(vnet))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateVnet {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    comment: Option<String>,
    /// Only `true` means something: a network stops being the default when another is made it.
    #[serde(default)]
    default: bool,
}

fn vnet_update(ctx: &Ctx, req: &ApiRequest, key: &str) -> Reply {
    let body: UpdateVnet = req.json()?;
    let (vnet, _) = ctx.state.db().update(|txn| {
        let mut vnet = find_vnet(txn, Some(key))?;
        if let Some(name) = &body.name {
            vnet.name = name.trim().to_owned();
        }
        if let Some(comment) = &body.comment {
            vnet.comment = comment.clone();
        }
        txn.put(&vnet)?;
        if body.default {
            txn.set_default_vnet(vnet.id)?;
        }
        Ok::<_, ApiError>(txn.get::<VirtualNetwork>(vnet.id)?.unwrap_or(vnet))
    })?;
    ok(json!(vnet))
}

fn vnet_delete(ctx: &Ctx, key: &str) -> Reply {
    let (vnet, _) = ctx.state.db().update(|txn| {
        let vnet = find_vnet(txn, Some(key))?;
        if vnet.is_default {
            return Err(ApiError::conflict(
                "is_default",
                format!(
                    "virtual network `{}` is the default; make another one the default first (`zt vnet default NAME`)",
                    vnet.name
                ),
            ));
        }
        let using: Vec<Route> = txn
            .list::<Route>()?
            .into_iter()
            .filter(|r| r.vnet == vnet.id)
            .collect();
        if !using.is_empty() {
            let names = Names::load(txn)?;
            let list: Vec<String> = using.iter().map(|r| names.describe(r)).collect();
            return Err(ApiError::conflict(
                "in_use",
                format!(
                    "virtual network `{}` still has {} route(s): {}; delete them first with `zt route ip delete`",
                    vnet.name,
                    using.len(),
                    list.join(", ")
                ),
            )
            .with_detail(json!({ "routes": using.iter().map(|r| names.route(r)).collect::<Vec<_>>() })));
        }
        txn.delete::<VirtualNetwork>(vnet.id)?;
        Ok::<_, ApiError>(vnet)
    })?;
    ok(json!(vnet))
}

// ---------------------------------------------------------------------------------------
// Lists.

fn list_view(l: &List) -> Value {
    json!({
        "id": l.id,
        "name": l.name,
        "slug": l.slug,
        "type": list_type(l.kind).map_or_else(|| format!("{:?}", l.kind).to_uppercase(), |t| t.to_string()),
        "reference": format!("${}", l.id.simple()),
        "items": l.items,
        "description": l.description,
    })
}

fn list_all(ctx: &Ctx) -> Reply {
    let read = ctx.state.db().read()?;
    let mut lists = read.list::<List>()?;
    lists.sort_by(|a, b| a.name.cmp(&b.name));
    ok(json!(lists.iter().map(list_view).collect::<Vec<_>>()))
}

fn list_show(ctx: &Ctx, key: &str) -> Reply {
    let read = ctx.state.db().read()?;
    ok(list_view(&find_list(&read, key)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateList {
    name: String,
    #[serde(default)]
    slug: Option<String>,
    #[serde(rename = "type")]
    list_type: String,
    #[serde(default)]
    items: Vec<String>,
    #[serde(default)]
    description: String,
}

fn parse_list_type(s: &str) -> Result<ListType, ApiError> {
    match s.to_ascii_uppercase().as_str() {
        "IP" => Ok(ListType::Ip),
        "DOMAIN" => Ok(ListType::Domain),
        "EMAIL" => Ok(ListType::Email),
        "DEVICE" | "SERIAL" => Ok(ListType::Device),
        _ => Err(ApiError::bad_request(
            "invalid_list",
            format!("unknown list type `{s}`; use IP, DOMAIN, EMAIL or DEVICE"),
        )),
    }
}

/// Checks one list on its own (slug, every item) with zt-policy's rules.
fn check_list(list: &List) -> Result<(), ApiError> {
    if let Some(p) = super::policy::policy_list(list) {
        p.validate()
            .map_err(|e| ApiError::bad_request("invalid_list", e.to_string()))?;
    }
    Ok(())
}

/// Writes `list` (or removes `deleted`) after checking that every rule still compiles.
fn write_list(txn: &mut WriteTxn<'_>, list: Option<&List>, deleted: Option<Uuid>) -> Reply {
    if let Some(list) = list {
        check_list(list)?;
        txn.put(list)?;
    }
    if let Some(id) = deleted {
        txn.delete::<List>(id)?;
    }
    let lists = txn.list::<List>()?;
    let rules = txn.list::<Rule>()?;
    check_policy(&lists, &rules).map_err(|mut e| {
        if e.code == "invalid_expression" {
            // The rule was fine before; what changed is the list it refers to.
            e.status = StatusCode::CONFLICT;
            e.code = "in_use";
            e.message = format!(
                "this change would break a rule that refers to the list: {}",
                e.message
            );
        }
        e
    })?;
    ok(Value::Null)
}

fn list_create(ctx: &Ctx, req: &ApiRequest) -> Reply {
    let body: CreateList = req.json()?;
    let t = parse_list_type(&body.list_type)?;
    let mut list = List::new(body.name.trim(), list_kind(t), body.items);
    list.slug = body.slug.filter(|s| !s.is_empty());
    list.description = body.description;
    ctx.state
        .db()
        .update(|txn| write_list(txn, Some(&list), None))?;
    created(list_view(&list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateList {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    slug: Option<String>,
    #[serde(default)]
    description: Option<String>,
    /// Replaces every item.
    #[serde(default)]
    items: Option<Vec<String>>,
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

fn list_update(ctx: &Ctx, req: &ApiRequest, key: &str) -> Reply {
    let body: UpdateList = req.json()?;
    let (list, _) = ctx.state.db().update(|txn| {
        let mut list = find_list(txn, key)?;
        if let Some(name) = &body.name {
            list.name = name.trim().to_owned();
        }
        if let Some(slug) = &body.slug {
            list.slug = Some(slug.clone()).filter(|s| !s.is_empty());
        }
        if let Some(d) = &body.description {
            list.description = d.clone();
        }
        if let Some(items) = &body.items {
            list.items = items.clone();
        }
        for item in &body.remove {
            let before = list.items.len();
            list.items.retain(|i| i.trim() != item.trim());
            if list.items.len() == before {
                return Err(ApiError::not_found(format!(
                    "list `{}` has no item `{item}`",
                    list.name
                )));
            }
        }
        for item in &body.add {
            if !list.items.iter().any(|i| i.trim() == item.trim()) {
                list.items.push(item.clone());
            }
        }
        write_list(txn, Some(&list), None)?;
        Ok::<_, ApiError>(list)
    })?;
    ok(list_view(&list))
}

fn list_delete(ctx: &Ctx, key: &str) -> Reply {
    let (list, _) = ctx.state.db().update(|txn| {
        let list = find_list(txn, key)?;
        write_list(txn, None, Some(list.id))?;
        Ok::<_, ApiError>(list)
    })?;
    ok(list_view(&list))
}

// ---------------------------------------------------------------------------------------
// Rules.

fn rule_view(r: &Rule) -> Value {
    json!(r)
}

fn rule_all(ctx: &Ctx) -> Reply {
    let read = ctx.state.db().read()?;
    let mut rules = read.list::<Rule>()?;
    rules.sort_by(|a, b| a.precedence.cmp(&b.precedence).then(a.name.cmp(&b.name)));
    ok(json!(rules.iter().map(rule_view).collect::<Vec<_>>()))
}

fn rule_show(ctx: &Ctx, key: &str) -> Reply {
    let read = ctx.state.db().read()?;
    ok(rule_view(&find_rule(&read, key)?))
}

/// The fields of a rule; on update every one is optional and absent means unchanged
/// (an empty expression string clears it).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFields {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    precedence: Option<u32>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    filters: Option<Vec<String>>,
    #[serde(default)]
    traffic: Option<String>,
    #[serde(default)]
    identity: Option<String>,
    #[serde(default)]
    device_posture: Option<String>,
}

impl RuleFields {
    fn apply(&self, rule: &mut Rule) -> Result<(), ApiError> {
        if let Some(n) = &self.name {
            rule.name = n.trim().to_owned();
        }
        if let Some(d) = &self.description {
            rule.description = d.clone();
        }
        if let Some(p) = self.precedence {
            rule.precedence = i64::from(p);
        }
        if let Some(a) = &self.action {
            let a = a.trim().to_ascii_lowercase();
            if parse_action(&a).is_none() {
                return Err(ApiError::bad_request(
                    "invalid_rule",
                    format!("unknown action `{a}`; use allow, block or off"),
                ));
            }
            rule.action = a;
        }
        if let Some(e) = self.enabled {
            rule.enabled = e;
        }
        if let Some(fs) = &self.filters {
            let mut out = Vec::new();
            for f in fs {
                let f = f.trim().to_ascii_lowercase();
                if parse_filter(&f).is_none() {
                    return Err(ApiError::bad_request(
                        "invalid_rule",
                        format!("unknown filter `{f}`; use l4, http or dns"),
                    ));
                }
                out.push(f);
            }
            rule.filters = out;
        }
        let set = |slot: &mut Option<String>, v: &Option<String>| {
            if let Some(v) = v {
                *slot = Some(v.clone()).filter(|s| !s.trim().is_empty());
            }
        };
        set(&mut rule.traffic, &self.traffic);
        set(&mut rule.identity, &self.identity);
        set(&mut rule.device_posture, &self.device_posture);
        Ok(())
    }
}

/// Writes `rule` (or removes `deleted`) after compiling the rule set it would leave.
fn write_rule(txn: &mut WriteTxn<'_>, rule: &Rule) -> Result<(), ApiError> {
    let lists = txn.list::<List>()?;
    let mut rules: Vec<Rule> = txn
        .list::<Rule>()?
        .into_iter()
        .filter(|r| r.id != rule.id)
        .collect();
    rules.push(rule.clone());
    check_policy(&lists, &rules)?;
    txn.put(rule)?;
    Ok(())
}

fn rule_create(ctx: &Ctx, req: &ApiRequest) -> Reply {
    let body: RuleFields = req.json()?;
    let (Some(name), Some(precedence), Some(action)) = (&body.name, body.precedence, &body.action)
    else {
        return Err(ApiError::bad_request(
            "missing_field",
            "a new rule needs a name, a precedence and an action",
        ));
    };
    let mut rule = Rule::new(
        name.trim(),
        i64::from(precedence),
        action.clone(),
        vec!["l4".to_owned()],
    );
    body.apply(&mut rule)?;
    ctx.state.db().update(|txn| write_rule(txn, &rule))?;
    tracing::info!(rule = %rule.name, "rule created");
    created(rule_view(&rule))
}

fn rule_update(ctx: &Ctx, req: &ApiRequest, key: &str) -> Reply {
    let body: RuleFields = req.json()?;
    let (rule, _) = ctx.state.db().update(|txn| {
        let mut rule = find_rule(txn, key)?;
        body.apply(&mut rule)?;
        write_rule(txn, &rule)?;
        Ok::<_, ApiError>(rule)
    })?;
    ok(rule_view(&rule))
}

fn rule_delete(ctx: &Ctx, key: &str) -> Reply {
    let (rule, _) = ctx.state.db().update(|txn| {
        let rule = find_rule(txn, key)?;
        txn.delete::<Rule>(rule.id)?;
        Ok::<_, ApiError>(rule)
    })?;
    ok(rule_view(&rule))
}

// ---------------------------------------------------------------------------------------
// Users and devices.

fn user_list(ctx: &Ctx) -> Reply {
    let read = ctx.state.db().read()?;
    let devices = read.list::<Device>()?;
    let mut users = read.list::<User>()?;
    users.sort_by(|a, b| a.email.cmp(&b.email));
    ok(json!(users
        .iter()
        .map(|u| {
            let mut v = json!(u);
            v["devices"] = json!(devices
                .iter()
                .filter(|d| d.user_id == u.id)
                .map(Device::info)
                .collect::<Vec<_>>());
            v
        })
        .collect::<Vec<_>>()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddUser {
    email: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    device_name: Option<String>,
    /// Edge addresses for the device credentials; the edge's own when empty.
    #[serde(default)]
    edge: Vec<String>,
}

fn check_edge_address(a: &str) -> Result<(), ApiError> {
    let ok = matches!(a.rsplit_once(':'), Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_edge_address",
            format!("edge address `{a}` is not HOST:PORT"),
        ))
    }
}

fn user_add(ctx: &Ctx, req: &ApiRequest) -> Reply {
    let body: AddUser = req.json()?;
    let edge = if body.edge.is_empty() {
        ctx.edge_addresses.clone()
    } else {
        body.edge.clone()
    };
    if edge.is_empty() {
        return Err(ApiError::bad_request(
            "missing_edge_address",
            "this edge does not know its public address; give the address clients reach it at (`--edge HOST:PORT`)",
        ));
    }
    for a in &edge {
        check_edge_address(a)?;
    }
    let mut groups = Vec::new();
    for g in &body.groups {
        let g = g.trim();
        if g.is_empty() || g.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "invalid_group",
                format!("group name {g:?} is empty or has control characters"),
            ));
        }
        if !groups.iter().any(|x| x == g) {
            groups.push(g.to_owned());
        }
    }
    let ca_fingerprint: CaFingerprint =
        ctx.state.ca_fingerprint().parse().map_err(|e| {
            ApiError::internal(format!("the edge's CA fingerprint is unusable: {e}"))
        })?;
    let user = User::new(body.email.trim(), groups);
    let secret = TunnelSecret::generate();
    let device = Device::new(
        user.id,
        body.device_name.clone().unwrap_or_default(),
        &secret,
    );
    let (vnet, _) = ctx.state.db().update(|txn| {
        if let Some(existing) = txn.user_by_email(&user.email)? {
            return Err(ApiError::conflict(
                "conflict",
                format!(
                    "user {} already exists ({}); remove it first to issue new credentials",
                    existing.email, existing.id
                ),
            ));
        }
        txn.put(&user)?;
        txn.put(&device)?;
        Ok::<_, ApiError>(txn.default_vnet()?.map(|v| v.id))
    })?;
    tracing::info!(user = %user.email, device = %device.id, "user added");
    let credentials = DeviceCredentials {
        device_id: device.id,
        user_email: user.email.clone(),
        secret,
        edge,
        ca_fingerprint,
        default_vnet: vnet,
    };
    // The only time the device secret leaves the edge.
    let credentials: Value = serde_json::from_str(&credentials.to_json())
        .map_err(|e| ApiError::internal(format!("cannot encode the credentials: {e}")))?;
    created(json!({ "user": user, "device": device.info(), "credentials": credentials }))
}

fn user_remove(ctx: &Ctx, key: &str) -> Reply {
    let ((user, devices), _) = ctx.state.db().update(|txn| {
        let user = find_user(txn, key)?;
        let devices: Vec<Device> = txn
            .list::<Device>()?
            .into_iter()
            .filter(|d| d.user_id == user.id)
            .collect();
        // Deleting the device records is the revocation: authentication looks them up.
        for d in &devices {
            txn.delete::<Device>(d.id)?;
        }
        txn.delete::<User>(user.id)?;
        Ok::<_, ApiError>((user, devices))
    })?;
    tracing::info!(user = %user.email, devices = devices.len(), "user removed");
    ok(json!({
        "user": user,
        "revoked_devices": devices.iter().map(|d| d.id).collect::<Vec<_>>(),
    }))
}
