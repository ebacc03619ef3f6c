//! Service tokens: list (never a secret), create (the credentials are returned once),
//! revoke (refused at once; live sessions end).

use serde::Deserialize;
use serde_json::{json, Value};
use zt_creds::{CaFingerprint, DeviceAuth, DeviceCredentials, TunnelSecret};

use super::users::{check_edge_address, checked_groups};
use super::{created, ok, ApiRequest, Ctx, Reply};
use crate::admin::error::ApiError;
use crate::store::ServiceToken;
use crate::timestamp::Timestamp;

/// The longest lifetime a token may be given: ten years.
const MAX_LIFETIME_SECS: u64 = 10 * 366 * 86_400;

pub(super) fn list(ctx: &Ctx) -> Reply {
    let read = ctx.state.db().read()?;
    let mut tokens = read.list::<ServiceToken>()?;
    tokens.sort_by(|a, b| a.name.cmp(&b.name));
    let now = Timestamp::now();
    ok(json!(tokens
        .iter()
        .map(|t| {
            let mut v = json!(t.info());
            v["state"] = json!(if t.revoked {
                "revoked"
            } else if t.is_live(now) {
                "active"
            } else {
                "expired"
            });
            v
        })
        .collect::<Vec<_>>()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    name: String,
    #[serde(default)]
    groups: Vec<String>,
    /// Lifetime in seconds; none: until revoked.
    #[serde(default)]
    expires_in_secs: Option<u64>,
    /// Edge addresses for the credentials; the edge's own when empty.
    #[serde(default)]
    edge: Vec<String>,
}

pub(super) fn create(ctx: &Ctx, req: &ApiRequest) -> Reply {
    let body: CreateToken = req.json()?;
    let edge = if body.edge.is_empty() {
        ctx.edge_addresses.clone()
    } else {
        body.edge.clone()
    };
    if edge.is_empty() {
        return Err(ApiError::bad_request(
            "missing_edge_address",
            "this edge does not know its public address; give the address pipelines reach it at (`--edge HOST:PORT`)",
        ));
    }
    for a in &edge {
        check_edge_address(a)?;
    }
    let groups = checked_groups(&body.groups)?;
    let expires_at = match body.expires_in_secs {
        None => None,
        Some(0) => {
            return Err(ApiError::bad_request(
                "invalid_expiry",
                "expires_in_secs must be positive",
            ))
        }
        Some(s) if s > MAX_LIFETIME_SECS => {
            return Err(ApiError::bad_request(
                "invalid_expiry",
                format!("expires_in_secs {s} is more than ten years"),
            ))
        }
        Some(s) => Timestamp::from_unix_seconds(Timestamp::now().unix_seconds() + s as i64),
    };
    let ca_fingerprint: CaFingerprint =
        ctx.state.ca_fingerprint().parse().map_err(|e| {
            ApiError::internal(format!("the edge's CA fingerprint is unusable: {e}"))
        })?;
    let secret = TunnelSecret::generate();
    let token = ServiceToken::new(body.name.trim(), groups, &secret, expires_at);
    let (vnet, _) = ctx.state.db().update(|txn| {
        txn.put(&token)?;
        Ok::<_, ApiError>(txn.default_vnet()?.map(|v| v.id))
    })?;
    tracing::info!(token = %token.name, id = %token.id, "service token created");
    let credentials = DeviceCredentials {
        device_id: token.id,
        user_email: String::new(),
        auth: DeviceAuth::Secret(secret),
        edge,
        ca_fingerprint,
        default_vnet: vnet,
        identity_provider: None,
        service_token: Some(token.name.clone()),
    };
    // The only time the token's secret leaves the edge.
    let credentials: Value = serde_json::from_str(&credentials.to_json())
        .map_err(|e| ApiError::internal(format!("cannot encode the credentials: {e}")))?;
    created(json!({ "token": token.info(), "credentials": credentials }))
}

fn find(ctx: &Ctx, key: &str) -> Result<ServiceToken, ApiError> {
    let read = ctx.state.db().read()?;
    read.list::<ServiceToken>()?
        .into_iter()
        .find(|t| t.name.eq_ignore_ascii_case(key) || t.id.to_string() == key)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no service token {key:?} (by name or id; `zt token list` shows them)"
            ))
        })
}

pub(super) fn revoke(ctx: &Ctx, key: &str) -> Reply {
    let found = find(ctx, key)?;
    let (token, _) = ctx.state.db().update(|txn| {
        let mut t = txn.get::<ServiceToken>(found.id)?.ok_or_else(|| {
            ApiError::not_found(format!("service token {key:?} was removed meanwhile"))
        })?;
        t.revoked = true;
        txn.put(&t)?;
        Ok::<_, ApiError>(t)
    })?;
    tracing::info!(token = %token.name, id = %token.id, "service token revoked");
    ok(json!(token.info()))
}
