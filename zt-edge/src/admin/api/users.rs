//! Users and their devices: list, add (with one device, whose credentials are returned
//! once), remove (which revokes every device of the user).

use serde::Deserialize;
use serde_json::{json, Value};
use zt_creds::{CaFingerprint, DeviceAuth, DeviceCredentials, TunnelSecret};

use super::lookup::find_user;
use super::{created, ok, ApiRequest, Ctx, Reply};
use crate::admin::error::ApiError;
use crate::store::{Device, User};

pub(super) fn list(ctx: &Ctx) -> Reply {
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

pub(super) fn check_edge_address(a: &str) -> Result<(), ApiError> {
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

pub(super) fn add(ctx: &Ctx, req: &ApiRequest) -> Reply {
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
    let groups = checked_groups(&body.groups)?;
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
        auth: DeviceAuth::Secret(secret),
        edge,
        ca_fingerprint,
        default_vnet: vnet,
        identity_provider: None,
        service_token: None,
    };
    // The only time the device secret leaves the edge.
    let credentials: Value = serde_json::from_str(&credentials.to_json())
        .map_err(|e| ApiError::internal(format!("cannot encode the credentials: {e}")))?;
    created(json!({ "user": user, "device": device.info(), "credentials": credentials }))
}

pub(super) fn remove(ctx: &Ctx, key: &str) -> Reply {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateUser {
    groups: Vec<String>,
}

/// Sets a user's groups in place; the user keeps its id and devices, so its sessions and
/// credentials stay valid.
pub(super) fn update(ctx: &Ctx, req: &ApiRequest, key: &str) -> Reply {
    let body: UpdateUser = req.json()?;
    let groups = checked_groups(&body.groups)?;
    let (user, _) = ctx.state.db().update(|txn| {
        let mut user = find_user(txn, key)?;
        user.groups = groups.clone();
        txn.put(&user)?;
        Ok::<_, ApiError>(txn.get::<User>(user.id)?.unwrap_or(user))
    })?;
    tracing::info!(user = %user.email, "user updated");
    ok(json!(user))
}

/// The groups of a request, trimmed and without repeats; an empty name or one with control
/// characters is refused.
pub(super) fn checked_groups(given: &[String]) -> Result<Vec<String>, ApiError> {
    let mut groups: Vec<String> = Vec::new();
    for g in given {
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
    Ok(groups)
}
