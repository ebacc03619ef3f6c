//! Routes: show, add, delete, and which route serves an address.
//!
//! Every check is zt-routes' own, on the table the edge would load (host bits, duplicates,
//! longest-prefix answers), so the API never accepts a route the data path would refuse.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;
use zt_routes::{AddRouteError, RouteTable};

use super::lookup::{as_id, find_tunnel, find_vnet, Names};
use super::{created, ok, ApiRequest, Ctx, Reply};
use crate::admin::error::ApiError;
use crate::store::{Route, VirtualNetwork};
use crate::timestamp::Timestamp;

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

pub(super) fn show(ctx: &Ctx, req: &ApiRequest) -> Reply {
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

pub(super) fn add(ctx: &Ctx, req: &ApiRequest) -> Reply {
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

pub(super) fn delete(ctx: &Ctx, req: &ApiRequest) -> Reply {
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

pub(super) fn get(ctx: &Ctx, req: &ApiRequest, ip: &str) -> Reply {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateRoute {
    #[serde(default)]
    tunnel: Option<String>,
    #[serde(default)]
    comment: Option<String>,
}

/// Changes a route's tunnel or comment in place, in one transaction: the route keeps its
/// id and network, and flows to it never see a moment without a route (as a delete and
/// re-add would give them).
pub(super) fn update(ctx: &Ctx, req: &ApiRequest, key: &str) -> Reply {
    let body: UpdateRoute = req.json()?;
    let Some(id) = as_id(key) else {
        return Err(ApiError::bad_request(
            "invalid_id",
            format!("`{key}` is not a route id; `zt route ip show` lists them"),
        ));
    };
    let (value, _) = ctx.state.db().update(|txn| {
        let mut route = txn.get::<Route>(id)?.ok_or_else(|| {
            ApiError::not_found(format!(
                "no route with id {id}; `zt route ip show` lists them"
            ))
        })?;
        if let Some(t) = &body.tunnel {
            route.tunnel_id = find_tunnel(txn, t)?.id;
        }
        if let Some(c) = &body.comment {
            route.comment = c.clone();
        }
        txn.put(&route)?;
        let names = Names::load(txn)?;
        Ok::<_, ApiError>(names.route(&route))
    })?;
    tracing::info!(route = %id, "route updated");
    ok(value)
}
