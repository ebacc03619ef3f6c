//! Edges: the members sharing this state (`zt edge list`), joining a new one (`zt edge
//! join`, on the edge that holds the CA key) and removing one (`zt edge remove`).

use serde::Deserialize;
use serde_json::{json, Value};

use super::{created, ok, ApiRequest, Ctx, Reply};
use crate::admin::error::ApiError;
use crate::pki::ServerNames;
use crate::store::EdgeMember;

/// Every member, with what presence knows of it; edges present without a member row (a
/// removed edge still running) are listed too, marked so.
pub(super) fn list(ctx: &Ctx) -> Reply {
    let read = ctx.state.db().read()?;
    let mut members = read.list::<EdgeMember>()?;
    drop(read);
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let present = ctx.live.edges();
    let mut out: Vec<Value> = members
        .iter()
        .map(|m| {
            let live = present.iter().find(|p| p.edge_id == m.id);
            json!({
                "id": m.id,
                "name": m.name,
                "member": true,
                "joined_at": m.created_at,
                "presence": live,
            })
        })
        .collect();
    for p in present
        .iter()
        .filter(|p| !members.iter().any(|m| m.id == p.edge_id))
    {
        out.push(json!({
            "id": p.edge_id,
            "name": p.name,
            "member": false,
            "presence": p,
        }));
    }
    ok(json!(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Join {
    name: String,
    /// Names for the new edge's server certificate (what connectors and clients dial).
    #[serde(default)]
    dns: Vec<String>,
    #[serde(default)]
    ips: Vec<std::net::IpAddr>,
}

/// Makes a new edge's state directory (returned once, its files hex-encoded) and records
/// its member row, in that order of checks: a refused name issues nothing.
pub(super) fn join(ctx: &Ctx, req: &ApiRequest) -> Reply {
    let body: Join = req.json()?;
    if !ctx.state.holds_ca_key() {
        return Err(ApiError::conflict(
            "no_ca_key",
            "this edge holds no CA key (it joined with `zt edge join` itself): run the join \
             against the edge that holds it",
        ));
    }
    let names = ServerNames {
        dns: body.dns,
        ips: body.ips,
    };
    if names.dns.is_empty() && names.ips.is_empty() {
        return Err(ApiError::bad_request(
            "missing_server_name",
            "give the names connectors and clients reach the new edge at (`--server-name`)",
        ));
    }
    let name = body.name.trim().to_owned();
    let probe = EdgeMember::new(uuid::Uuid::nil(), name.clone(), [0; 32]);
    if let Err(reason) = crate::store::check_record(&probe) {
        return Err(ApiError::bad_request("invalid_edge", reason));
    }
    let secrets_key = match &ctx.secrets_key_file {
        Some(path) if path.exists() => Some(
            std::fs::read(path)
                .map_err(|e| ApiError::internal(format!("cannot read {}: {e}", path.display())))?,
        ),
        _ => None,
    };
    let bundle = ctx
        .state
        .join_bundle(&names, secrets_key.as_deref())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let member = EdgeMember::new(bundle.edge_id, name, bundle.peer_cert_sha256);
    ctx.state.db().update(|txn| txn.put(&member))?;
    tracing::info!(edge = %member.name, edge_id = %member.id, "edge joined");
    // The only time these keys leave this edge.
    let files: serde_json::Map<String, Value> = bundle
        .files
        .iter()
        .map(|(n, c)| (n.clone(), json!(crate::hex::encode(c))))
        .collect();
    created(json!({ "edge": member, "files": files }))
}

/// Removes a member: peers stop accepting it at once (their next revision).
pub(super) fn remove(ctx: &Ctx, key: &str) -> Reply {
    let (removed, _) = ctx.state.db().update(|txn| {
        let found = txn
            .list::<EdgeMember>()?
            .into_iter()
            .find(|m| m.name.eq_ignore_ascii_case(key) || m.id.to_string() == key)
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "no edge {key:?} (by name or id; `zt edge list` shows them)"
                ))
            })?;
        txn.delete::<EdgeMember>(found.id)?;
        Ok::<_, ApiError>(found)
    })?;
    tracing::info!(edge = %removed.name, edge_id = %removed.id, "edge removed");
    ok(json!(removed))
}
