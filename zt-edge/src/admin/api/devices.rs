//! Devices across users: list (never a key), revoke one (refused at once; its live
//! sessions and flows end with close reason `revoked`; the user's other devices go on).

use serde_json::json;

use super::lookup::as_id;
use super::{ok, ApiRequest, Ctx, Reply};
use crate::admin::error::ApiError;
use crate::store::{Device, User};

pub(super) fn list(ctx: &Ctx, req: &ApiRequest) -> Reply {
    let read = ctx.state.db().read()?;
    let users = read.list::<User>()?;
    let wanted = req.query("user").map(str::to_lowercase);
    let mut devices: Vec<_> = read
        .list::<Device>()?
        .into_iter()
        .filter_map(|d| {
            let user = users.iter().find(|u| u.id == d.user_id)?;
            if let Some(w) = &wanted {
                if user.email.to_lowercase() != *w && user.id.to_string() != *w {
                    return None;
                }
            }
            let mut v = json!(d.info());
            v["user_email"] = json!(user.email);
            Some((user.email.clone(), d.created_at, v))
        })
        .collect();
    devices.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    ok(json!(devices.into_iter().map(|d| d.2).collect::<Vec<_>>()))
}

pub(super) fn revoke(ctx: &Ctx, key: &str) -> Reply {
    let Some(id) = as_id(key) else {
        return Err(ApiError::bad_request(
            "invalid_device_id",
            format!("{key:?} is not a device id (`zt device list` shows them)"),
        ));
    };
    let (device, _) = ctx.state.db().update(|txn| {
        let mut d = txn.get::<Device>(id)?.ok_or_else(|| {
            ApiError::not_found(format!("no device {id} (`zt device list` shows them)"))
        })?;
        d.revoked = true;
        txn.put(&d)?;
        Ok::<_, ApiError>(d)
    })?;
    tracing::info!(device = %device.id, user = %device.user_id, "device revoked");
    ok(json!(device.info()))
}
