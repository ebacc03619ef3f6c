//! `GET /v1/account`: what connectors and clients need to trust and reach this edge.

use serde_json::json;

use super::lookup::find_vnet;
use super::{ok, Ctx, Reply};

pub(super) fn show(ctx: &Ctx) -> Reply {
    let read = ctx.state.db().read()?;
    let vnet = find_vnet(&read, None)?;
    ok(json!({
        "account_tag": ctx.state.account_tag(),
        "ca_fingerprint": ctx.state.ca_fingerprint(),
        "ca_pem_path": ctx.state.ca_pem_path(),
        // Public: what cloudflared's --cacert and zt-connector's --cacert point at.
        "ca_pem": ctx.state.ca_pem(),
        "default_vnet": { "id": vnet.id, "name": vnet.name },
        "edge": ctx.edge_addresses,
    }))
}
