//! Virtual networks: list (with their route counts), add, rename or make default, delete.
//!
//! The default network cannot be deleted, nor one that routes still use; making one the
//! default is how another stops being it.

use serde::Deserialize;
use serde_json::json;

use super::lookup::{find_vnet, refuse_if_routed};
use super::{created, ok, ApiRequest, Ctx, Reply};
use crate::admin::error::ApiError;
use crate::store::{Route, VirtualNetwork};

pub(super) fn list(ctx: &Ctx) -> Reply {
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

pub(super) fn add(ctx: &Ctx, req: &ApiRequest) -> Reply {
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

pub(super) fn update(ctx: &Ctx, req: &ApiRequest, key: &str) -> Reply {
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

pub(super) fn delete(ctx: &Ctx, key: &str) -> Reply {
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
        refuse_if_routed(
            txn,
            &format!("virtual network `{}` still has", vnet.name),
            |r| r.vnet == vnet.id,
        )?;
        txn.delete::<VirtualNetwork>(vnet.id)?;
        Ok::<_, ApiError>(vnet)
    })?;
    ok(json!(vnet))
}
