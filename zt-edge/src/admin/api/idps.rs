//! Identity providers: list (never the client secret), add, remove, and the enrollment
//! string engineers give `zt login`.

use serde::Deserialize;
use serde_json::json;
use zt_creds::Enrollment;

use super::{created, ok, ApiRequest, Ctx, Reply};
use crate::admin::error::ApiError;
use crate::store::{IdentityProvider, DEFAULT_GROUPS_CLAIM, DEFAULT_SESSION_LENGTH};

pub(super) fn list(ctx: &Ctx) -> Reply {
    let read = ctx.state.db().read()?;
    let mut idps = read.list::<IdentityProvider>()?;
    idps.sort_by(|a, b| a.name.cmp(&b.name));
    ok(json!(idps
        .iter()
        .map(IdentityProvider::info)
        .collect::<Vec<_>>()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddIdp {
    name: String,
    issuer: String,
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    groups_claim: Option<String>,
    #[serde(default)]
    allowed_domains: Vec<String>,
    #[serde(default)]
    session_length_secs: Option<u64>,
    #[serde(default)]
    ca_pem: Option<String>,
}

pub(super) fn add(ctx: &Ctx, req: &ApiRequest) -> Reply {
    let body: AddIdp = req.json()?;
    let mut idp = IdentityProvider::new(body.name.trim(), body.issuer.trim(), body.client_id);
    idp.client_secret = body.client_secret.filter(|s| !s.is_empty());
    if let Some(scopes) = body.scopes {
        idp.scopes = scopes;
    }
    idp.groups_claim = body
        .groups_claim
        .unwrap_or_else(|| DEFAULT_GROUPS_CLAIM.to_owned());
    idp.allowed_domains = body
        .allowed_domains
        .iter()
        .map(|d| d.trim().trim_start_matches('@').to_lowercase())
        .collect();
    idp.session_length_secs = body
        .session_length_secs
        .unwrap_or(DEFAULT_SESSION_LENGTH.as_secs());
    if let Some(pem) = &body.ca_pem {
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(ApiError::bad_request(
                "invalid_ca",
                "ca_pem holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            ));
        }
    }
    idp.ca_pem = body.ca_pem;
    let (idp, _) = ctx.state.db().update(|txn| {
        txn.put(&idp)?;
        Ok::<_, ApiError>(idp.clone())
    })?;
    tracing::info!(idp = %idp.name, issuer = %idp.issuer, "identity provider added");
    created(json!(idp.info()))
}

fn find(ctx: &Ctx, key: &str) -> Result<IdentityProvider, ApiError> {
    let read = ctx.state.db().read()?;
    read.list::<IdentityProvider>()?
        .into_iter()
        .find(|p| p.name.eq_ignore_ascii_case(key) || p.id.to_string() == key)
        .ok_or_else(|| ApiError::not_found(format!("no identity provider {key:?}")))
}

pub(super) fn remove(ctx: &Ctx, key: &str) -> Reply {
    let idp = find(ctx, key)?;
    let (signed_in, _) = ctx.state.db().update(|txn| {
        txn.delete::<IdentityProvider>(idp.id)?;
        // Their sign-ins came through it: the edge stops accepting them (see the
        // runtime's snapshot), so their live sessions end now.
        let signed_in = txn
            .list::<crate::store::Device>()?
            .iter()
            .filter(|d| !d.revoked && d.login.as_ref().is_some_and(|l| l.provider_id == idp.id))
            .count();
        Ok::<_, ApiError>(signed_in)
    })?;
    tracing::info!(idp = %idp.name, devices = signed_in, "identity provider removed; its devices' sessions end");
    let mut v = json!(idp.info());
    v["devices_signed_out"] = json!(signed_in);
    ok(v)
}

pub(super) fn enrollment(ctx: &Ctx, key: &str) -> Reply {
    let idp = find(ctx, key)?;
    let Some(fingerprint) = ctx.state.ca_fingerprint().parse().ok() else {
        return Err(ApiError::internal(
            "the edge's CA fingerprint does not parse",
        ));
    };
    let enrollment = Enrollment {
        edge: ctx.edge_addresses.clone(),
        ca_fingerprint: fingerprint,
        idp: Some(idp.name.clone()),
    };
    ok(json!({ "idp": idp.name, "enrollment": enrollment.encode(), "edge": ctx.edge_addresses }))
}
