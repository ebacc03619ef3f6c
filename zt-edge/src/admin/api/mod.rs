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
//! | PATCH, DELETE | `/v1/users/{id or email}` | set groups; remove the user and revoke its devices |
//! | PATCH | `/v1/routes/{id}` | change a route's tunnel or comment |
//! | GET | `/v1/devices` | every device with its user's email (`?user=EMAIL or ID`) |
//! | POST | `/v1/devices/{id}/revoke` | revoke one device: refused at once, its live flows end |
//! | GET, POST | `/v1/tokens` | service tokens (never a secret); create (returns credentials once) |
//! | POST | `/v1/tokens/{id or name}/revoke` | revoke a token: refused at once, its live flows end |
//! | GET, POST | `/v1/idps` | identity providers (never a client secret); add |
//! | DELETE | `/v1/idps/{id or name}` | remove a provider |
//! | GET | `/v1/idps/{id or name}/enrollment` | the enrollment string for `zt login` |
//! | POST | `/v1/config/plan` | the plan of a configuration file (`{file, options}`) |
//! | POST | `/v1/config/apply` | apply it in one transaction (`{file, options, expected}`) |
//! | GET | `/v1/config/drift` | changes made outside the file since the last apply |
//! | GET | `/v1/config/export` | the live state in the file's format |
//! | GET, POST | `/v1/edges` | members with their presence; join a new edge (its state directory, once) |
//! | DELETE | `/v1/edges/{id or name}` | remove a member: peers stop accepting it |
//!
//! The routing table is [`handle`], the one place that maps a method and a path to an
//! operation; the operations live in one module per resource (`account`, `tunnels`,
//! `routes`, `vnets`, `lists`, `rules`, `users`, `devices`, `tokens`, `idps`), and the lookups by id or name they share
//! (with the not-found errors that say which command lists the records) in `lookup`.

mod account;
mod config;
mod devices;
mod edges;
mod idps;
mod lists;
mod lookup;
mod routes;
mod rules;
mod tokens;
mod tunnels;
mod users;
mod vnets;

use std::sync::Arc;

use hyper::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;
use crate::live::LiveView;
use crate::state::EdgeState;

/// What every operation can reach.
pub(crate) struct Ctx {
    pub(crate) state: Arc<EdgeState>,
    pub(crate) live: Arc<dyn LiveView>,
    /// Edge addresses put in device credentials when the caller names none.
    pub(crate) edge_addresses: Vec<String>,
    /// The key sealing secrets in a shared store, handed to joining edges.
    pub(crate) secrets_key_file: Option<std::path::PathBuf>,
    /// The revision the running edge applies, when there is one: a change is answered once
    /// it applies here, so a device added is accepted by this edge the moment the command
    /// returns.
    pub(crate) applied: Option<tokio::sync::watch::Receiver<crate::store::Revision>>,
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
        ["v1", "account"] if m == Method::GET => account::show(ctx),
        ["v1", "tunnels"] if m == Method::GET => tunnels::list(ctx, req),
        ["v1", "tunnels"] if m == Method::POST => tunnels::create(ctx, req),
        ["v1", "tunnels", key] if m == Method::GET => tunnels::info(ctx, key),
        ["v1", "tunnels", key] if m == Method::DELETE => tunnels::delete(ctx, key),
        ["v1", "tunnels", key, "cloudflared"] if m == Method::PUT => {
            tunnels::cloudflared(ctx, req, key)
        }
        ["v1", "routes"] if m == Method::GET => routes::show(ctx, req),
        ["v1", "routes"] if m == Method::POST => routes::add(ctx, req),
        ["v1", "routes"] if m == Method::DELETE => routes::delete(ctx, req),
        ["v1", "routes", "ip", ip] if m == Method::GET => routes::get(ctx, req, ip),
        ["v1", "vnets"] if m == Method::GET => vnets::list(ctx),
        ["v1", "vnets"] if m == Method::POST => vnets::add(ctx, req),
        ["v1", "vnets", key] if m == Method::PATCH => vnets::update(ctx, req, key),
        ["v1", "vnets", key] if m == Method::DELETE => vnets::delete(ctx, key),
        ["v1", "lists"] if m == Method::GET => lists::all(ctx),
        ["v1", "lists"] if m == Method::POST => lists::create(ctx, req),
        ["v1", "lists", key] if m == Method::GET => lists::show(ctx, key),
        ["v1", "lists", key] if m == Method::PATCH => lists::update(ctx, req, key),
        ["v1", "lists", key] if m == Method::DELETE => lists::delete(ctx, key),
        ["v1", "rules"] if m == Method::GET => rules::all(ctx),
        ["v1", "rules"] if m == Method::POST => rules::create(ctx, req),
        ["v1", "rules", key] if m == Method::GET => rules::show(ctx, key),
        ["v1", "rules", key] if m == Method::PATCH => rules::update(ctx, req, key),
        ["v1", "rules", key] if m == Method::DELETE => rules::delete(ctx, key),
        ["v1", "users"] if m == Method::GET => users::list(ctx),
        ["v1", "users"] if m == Method::POST => users::add(ctx, req),
        ["v1", "users", key] if m == Method::DELETE => users::remove(ctx, key),
        ["v1", "users", key] if m == Method::PATCH => users::update(ctx, req, key),
        ["v1", "routes", id] if m == Method::PATCH => routes::update(ctx, req, id),
        ["v1", "devices"] if m == Method::GET => devices::list(ctx, req),
        ["v1", "devices", key, "revoke"] if m == Method::POST => devices::revoke(ctx, key),
        ["v1", "tokens"] if m == Method::GET => tokens::list(ctx),
        ["v1", "tokens"] if m == Method::POST => tokens::create(ctx, req),
        ["v1", "tokens", key, "revoke"] if m == Method::POST => tokens::revoke(ctx, key),
        ["v1", "idps"] if m == Method::GET => idps::list(ctx),
        ["v1", "idps"] if m == Method::POST => idps::add(ctx, req),
        ["v1", "idps", key] if m == Method::DELETE => idps::remove(ctx, key),
        ["v1", "idps", key, "enrollment"] if m == Method::GET => idps::enrollment(ctx, key),
        ["v1", "config", "plan"] if m == Method::POST => config::plan(ctx, req),
        ["v1", "config", "apply"] if m == Method::POST => config::apply(ctx, req),
        ["v1", "config", "drift"] if m == Method::GET => config::drift(ctx),
        ["v1", "config", "export"] if m == Method::GET => config::export(ctx),
        ["v1", "edges"] if m == Method::GET => edges::list(ctx),
        ["v1", "edges"] if m == Method::POST => edges::join(ctx, req),
        ["v1", "edges", key] if m == Method::DELETE => edges::remove(ctx, key),
        ["v1", "account" | "tunnels" | "routes" | "vnets" | "lists" | "rules" | "users" | "idps"
        | "devices" | "tokens" | "config" | "edges", ..] => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{m} is not supported on /{}", req.segments.join("/")),
        )),
        _ => Err(ApiError::not_found(format!(
            "no such endpoint: /{}",
            req.segments.join("/")
        ))),
    }
}
