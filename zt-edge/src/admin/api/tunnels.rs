//! Tunnels: list (with their live connections), info (with their routes), create or
//! import (the only time a secret leaves the edge), the cloudflared opt-in, soft delete.
//!
//! A tunnel is soft-deleted (its record stays for the audit trail), and deleting one that
//! still serves routes is refused with the routes named.

use serde::Deserialize;
use serde_json::{json, Value};
use zt_creds::{TunnelCredentials, TunnelSecret};

use super::lookup::{find_tunnel, refuse_if_routed, Names};
use super::{created, ok, ApiRequest, Ctx, Reply};
use crate::admin::error::ApiError;
use crate::store::{Route, SecretSha256, Tunnel};
use crate::timestamp::Timestamp;

fn tunnel_view(ctx: &Ctx, t: &Tunnel) -> Value {
    let mut v = json!(t.info());
    v["connections"] = json!(ctx.live.tunnel_connections(t.id));
    v
}

pub(super) fn list(ctx: &Ctx, req: &ApiRequest) -> Reply {
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

pub(super) fn info(ctx: &Ctx, key: &str) -> Reply {
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

pub(super) fn create(ctx: &Ctx, req: &ApiRequest) -> Reply {
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
pub(super) fn cloudflared(ctx: &Ctx, req: &ApiRequest, key: &str) -> Reply {
    let body: CloudflaredOptIn = req.json()?;
    let digest = match (body.enabled, &body.credentials) {
        (false, _) => None,
        (true, None) => {
            return Err(ApiError::bad_request(
                "credentials_required",
                "opting in to cloudflared needs the tunnel's credentials (the edge keeps only a key derived from the secret); give --credentials-file",
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

pub(super) fn delete(ctx: &Ctx, key: &str) -> Reply {
    let (tunnel, _) = ctx.state.db().update(|txn| {
        let mut tunnel = find_tunnel(txn, key)?;
        refuse_if_routed(
            txn,
            &format!("tunnel `{}` still serves", tunnel.name),
            |r| r.tunnel_id == tunnel.id,
        )?;
        tunnel.deleted_at = Some(Timestamp::now());
        txn.put(&tunnel)?;
        Ok::<_, ApiError>(tunnel)
    })?;
    tracing::info!(tunnel = %tunnel.id, name = %tunnel.name, "tunnel deleted");
    ok(json!(tunnel.info()))
}
