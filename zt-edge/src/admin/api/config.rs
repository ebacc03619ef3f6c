//! Configuration as code: plan, apply, drift and export of a whole file (see
//! [`crate::config`]). The body is the resolved file as JSON (lists from `items_file`
//! inline), checked again here with the same rules the CLI used: the edge trusts nothing
//! it did not check itself.

use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{ok, ApiRequest, Ctx, Reply};
use crate::admin::error::ApiError;
use crate::config::{self, ApplyError, ConfigFile, Expected, PlanOptions};
use crate::store::ServiceToken;
use zt_creds::{CaFingerprint, DeviceAuth, DeviceCredentials};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanBody {
    file: ConfigFile,
    #[serde(default)]
    options: PlanOptions,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyBody {
    file: ConfigFile,
    #[serde(default)]
    options: PlanOptions,
    /// The resources and versions of the plan the caller showed.
    expected: Vec<Expected>,
}

fn checked(file: &ConfigFile) -> Result<(), ApiError> {
    config::check_json(file).map_err(|e| {
        ApiError::bad_request("invalid_config", e.to_string())
            .with_detail(json!({ "key": e.key, "reason": e.reason }))
    })
}

fn live_count(ctx: &Ctx) -> impl Fn(Uuid) -> usize + '_ {
    move |id| ctx.live.tunnel_connections(id).len()
}

pub(super) fn plan(ctx: &Ctx, req: &ApiRequest) -> Reply {
    let body: PlanBody = req.json()?;
    checked(&body.file)?;
    let count = live_count(ctx);
    let plan = config::plan(ctx.state.db(), &body.file, body.options, &count)?;
    let drift = config::drift(ctx.state.db())?;
    let mut v = json!(plan);
    v["expected"] = json!(plan.expected());
    v["last_applied"] = match drift {
        None => Value::Null,
        Some((applied, drift)) => json!({
            "file_hash": applied.file_hash,
            "applied_at": applied.applied_at,
            "drift": drift,
        }),
    };
    ok(v)
}

pub(super) fn apply(ctx: &Ctx, req: &ApiRequest) -> Reply {
    let body: ApplyBody = req.json()?;
    checked(&body.file)?;
    // A token the apply creates leaves in a credentials file naming the edge's addresses.
    if !body.file.service_tokens.is_empty() && ctx.edge_addresses.is_empty() {
        let known: Vec<String> = ctx
            .state
            .db()
            .read()
            .and_then(|t| t.list::<ServiceToken>())?
            .into_iter()
            .map(|t| t.name.to_lowercase())
            .collect();
        if let Some(new) = body
            .file
            .service_tokens
            .iter()
            .find(|t| !known.contains(&t.name.to_lowercase()))
        {
            return Err(ApiError::bad_request(
                "missing_edge_address",
                format!(
                    "the file creates the service token `{}`, whose credentials name the edge's \
                     address, and this edge does not know it: start it with --advertise HOST:PORT",
                    new.name
                ),
            ));
        }
    }
    let count = live_count(ctx);
    let outcome = config::apply(
        ctx.state.db(),
        &body.file,
        body.options,
        &body.expected,
        &count,
        ctx.state.account_tag(),
    )
    .map_err(|e| {
        let message = e.to_string();
        match e {
            ApplyError::Changed {
                resource,
                planned,
                now,
            } => ApiError::conflict("changed_since_plan", message).with_detail(
                json!({ "resource": resource, "planned_version": planned, "version": now }),
            ),
            ApplyError::ChangedOutsidePlan { resource, now } => {
                ApiError::conflict("changed_since_plan", message)
                    .with_detail(json!({ "resource": resource, "version": now }))
            }
            ApplyError::Blocked { resource, .. } => {
                ApiError::conflict("blocked", message).with_detail(json!({ "resource": resource }))
            }
            ApplyError::Invalid {
                resource, detail, ..
            } => ApiError::bad_request("invalid_config", message)
                .with_detail(json!({ "resource": resource, "detail": detail })),
            ApplyError::Store { resource, source } => {
                let inner = ApiError::from(source);
                ApiError::new(inner.status, inner.code, message)
                    .with_detail(json!({ "resource": resource, "detail": inner.detail }))
            }
        }
    })?;
    tracing::info!(changes = outcome.changes.len(), "configuration applied");
    let mut credentials = Vec::new();
    for (name, creds) in &outcome.credentials {
        // The only time a created tunnel's secret leaves the edge.
        let c: Value = serde_json::from_str(&creds.to_json())
            .map_err(|e| ApiError::internal(format!("cannot encode the credentials: {e}")))?;
        credentials.push(json!({ "tunnel": name, "credentials": c }));
    }
    if !outcome.tokens.is_empty() {
        let ca_fingerprint: CaFingerprint = ctx.state.ca_fingerprint().parse().map_err(|e| {
            ApiError::internal(format!("the edge's CA fingerprint is unusable: {e}"))
        })?;
        let vnet = ctx.state.db().read()?.default_vnet()?.map(|v| v.id);
        for (name, id, secret) in &outcome.tokens {
            let creds = DeviceCredentials {
                device_id: *id,
                user_email: String::new(),
                auth: DeviceAuth::Secret(secret.clone()),
                edge: ctx.edge_addresses.clone(),
                ca_fingerprint,
                default_vnet: vnet,
                identity_provider: None,
                service_token: Some(name.clone()),
            };
            // The only time a created token's secret leaves the edge.
            let c: Value = serde_json::from_str(&creds.to_json())
                .map_err(|e| ApiError::internal(format!("cannot encode the credentials: {e}")))?;
            credentials.push(json!({ "service_token": name, "credentials": c }));
        }
    }
    ok(json!({
        "changes": outcome.changes,
        "credentials": credentials,
        "revision": outcome.revision,
    }))
}

pub(super) fn drift(ctx: &Ctx) -> Reply {
    match config::drift(ctx.state.db())? {
        None => ok(json!({ "last_applied": null, "drift": [] })),
        Some((applied, drift)) => ok(json!({
            "last_applied": { "file_hash": applied.file_hash, "applied_at": applied.applied_at },
            "drift": drift,
        })),
    }
}

pub(super) fn export(ctx: &Ctx) -> Reply {
    ok(json!(config::export(ctx.state.db())?))
}
