//! Property test: random sequences of admin operations applied to [`Db`] and to a naive
//! model written independently here (plain maps and linear scans). Every operation must
//! succeed or fail the same way in both, and the stored records must equal the model's
//! after each step — on the in-memory backend with many cases, and on redb with fewer
//! (each redb commit waits for the disk).

use std::collections::BTreeMap;
use std::sync::Arc;

use ipnet::IpNet;
use proptest::prelude::*;
use uuid::Uuid;
use zt_creds::AuthKey;
use zt_edge::{Db, RedbStore, Route, StoreError, Timestamp, Tunnel, VirtualNetwork};

const TAG: &str = "0123456789abcdef0123456789abcdef";
const NAMES: [&str; 3] = ["a", "b", "c"];
const NETS: [&str; 3] = ["10.0.0.0/8", "10.0.0.0/16", "2001:db8::/32"];

#[derive(Debug, Clone)]
enum Op {
    PutTunnel {
        slot: usize,
        name: usize,
        deleted: bool,
    },
    DeleteTunnel {
        slot: usize,
    },
    PutVnet {
        slot: usize,
        name: usize,
        default: bool,
    },
    DeleteVnet {
        slot: usize,
    },
    SetDefault {
        slot: usize,
    },
    PutRoute {
        slot: usize,
        net: usize,
        vnet: usize,
        tunnel: usize,
    },
    DeleteRoute {
        slot: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..4usize, 0..3usize, proptest::bool::weighted(0.2))
            .prop_map(|(slot, name, deleted)| Op::PutTunnel { slot, name, deleted }),
        1 => (0..4usize).prop_map(|slot| Op::DeleteTunnel { slot }),
        2 => (0..3usize, 0..3usize, proptest::bool::weighted(0.3))
            .prop_map(|(slot, name, default)| Op::PutVnet { slot, name, default }),
        1 => (0..3usize).prop_map(|slot| Op::DeleteVnet { slot }),
        1 => (0..3usize).prop_map(|slot| Op::SetDefault { slot }),
        4 => (0..6usize, 0..3usize, 0..3usize, 0..4usize)
            .prop_map(|(slot, net, vnet, tunnel)| Op::PutRoute { slot, net, vnet, tunnel }),
        1 => (0..6usize).prop_map(|slot| Op::DeleteRoute { slot }),
    ]
}

/// How an operation ended, compared between the store and the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Conflict,
    Dangling,
    InUse,
    NotFound,
    Invalid,
}

fn outcome(r: Result<(), StoreError>) -> Outcome {
    match r {
        Ok(()) => Outcome::Ok,
        Err(StoreError::Conflict { .. }) => Outcome::Conflict,
        Err(StoreError::Dangling { .. }) => Outcome::Dangling,
        Err(StoreError::InUse { .. }) => Outcome::InUse,
        Err(StoreError::NotFound { .. }) => Outcome::NotFound,
        Err(StoreError::Invalid { .. }) => Outcome::Invalid,
        Err(other) => panic!("unexpected error {other}"),
    }
}

/// Fixed ids per slot, and a fixed creation time, so records compare exactly.
struct Ids {
    tunnels: [Uuid; 4],
    vnets: [Uuid; 3],
    routes: [Uuid; 6],
    time: Timestamp,
}

impl Ids {
    fn new() -> Self {
        Self {
            tunnels: std::array::from_fn(|_| Uuid::new_v4()),
            vnets: std::array::from_fn(|_| Uuid::new_v4()),
            routes: std::array::from_fn(|_| Uuid::new_v4()),
            time: Timestamp::from_unix_seconds(1_800_000_000).unwrap(),
        }
    }
}

#[derive(Default)]
struct Model {
    tunnels: BTreeMap<Uuid, Tunnel>,
    vnets: BTreeMap<Uuid, VirtualNetwork>,
    routes: BTreeMap<Uuid, Route>,
}

impl Model {
    fn route_uses(&self, f: impl Fn(&Route) -> bool) -> bool {
        self.routes.values().any(f)
    }

    fn apply(&mut self, ids: &Ids, op: &Op) -> Outcome {
        match *op {
            Op::PutTunnel {
                slot,
                name,
                deleted,
            } => {
                let t = tunnel(ids, slot, name, deleted);
                let was_live = self
                    .tunnels
                    .get(&t.id)
                    .is_some_and(|o| o.deleted_at.is_none());
                if was_live && deleted && self.route_uses(|r| r.tunnel_id == t.id) {
                    return Outcome::InUse;
                }
                if !deleted
                    && self
                        .tunnels
                        .values()
                        .any(|o| o.id != t.id && o.deleted_at.is_none() && o.name == t.name)
                {
                    return Outcome::Conflict;
                }
                self.tunnels.insert(t.id, t);
                Outcome::Ok
            }
            Op::DeleteTunnel { slot } => {
                let id = ids.tunnels[slot];
                if !self.tunnels.contains_key(&id) {
                    return Outcome::NotFound;
                }
                if self.route_uses(|r| r.tunnel_id == id) {
                    return Outcome::InUse;
                }
                self.tunnels.remove(&id);
                Outcome::Ok
            }
            Op::PutVnet {
                slot,
                name,
                default,
            } => {
                let v = vnet(ids, slot, name, default);
                let clash = self
                    .vnets
                    .values()
                    .any(|o| o.id != v.id && (o.name == v.name || (default && o.is_default)));
                if clash {
                    return Outcome::Conflict;
                }
                self.vnets.insert(v.id, v);
                Outcome::Ok
            }
            Op::DeleteVnet { slot } => {
                let id = ids.vnets[slot];
                let Some(v) = self.vnets.get(&id) else {
                    return Outcome::NotFound;
                };
                if v.is_default {
                    return Outcome::Invalid;
                }
                if self.route_uses(|r| r.vnet == id) {
                    return Outcome::InUse;
                }
                self.vnets.remove(&id);
                Outcome::Ok
            }
            Op::SetDefault { slot } => {
                let id = ids.vnets[slot];
                if !self.vnets.contains_key(&id) {
                    return Outcome::NotFound;
                }
                for v in self.vnets.values_mut() {
                    v.is_default = v.id == id;
                }
                Outcome::Ok
            }
            Op::PutRoute {
                slot,
                net,
                vnet,
                tunnel,
            } => {
                let r = route(ids, slot, net, vnet, tunnel);
                if !self.vnets.contains_key(&r.vnet) {
                    return Outcome::Dangling;
                }
                let live_tunnel = self
                    .tunnels
                    .get(&r.tunnel_id)
                    .is_some_and(|t| t.deleted_at.is_none());
                if !live_tunnel {
                    return Outcome::Dangling;
                }
                if self
                    .routes
                    .values()
                    .any(|o| o.id != r.id && o.vnet == r.vnet && o.network == r.network)
                {
                    return Outcome::Conflict;
                }
                self.routes.insert(r.id, r);
                Outcome::Ok
            }
            Op::DeleteRoute { slot } => {
                if self.routes.remove(&ids.routes[slot]).is_some() {
                    Outcome::Ok
                } else {
                    Outcome::NotFound
                }
            }
        }
    }
}

/// Records as the model keeps them: the model does not track versions (the store's own
/// tests and the configuration tests do), so they compare with the version cleared.
fn unversioned<R: zt_edge::Record + VersionClear>(records: Vec<R>) -> Vec<R> {
    records.into_iter().map(VersionClear::cleared).collect()
}

trait VersionClear {
    fn cleared(self) -> Self;
}

macro_rules! version_clear {
    ($($t:ty),*) => {$(
        impl VersionClear for $t {
            fn cleared(mut self) -> Self {
                self.version = 0;
                self
            }
        }
    )*};
}
version_clear!(Tunnel, VirtualNetwork, Route);

fn tunnel(ids: &Ids, slot: usize, name: usize, deleted: bool) -> Tunnel {
    Tunnel {
        version: 0,
        id: ids.tunnels[slot],
        name: NAMES[name].to_owned(),
        account_tag: TAG.to_owned(),
        auth_key: AuthKey::from_bytes([u8::try_from(slot).unwrap(); 32]),
        cloudflared_secret_sha256: None,
        created_at: ids.time,
        deleted_at: deleted.then_some(ids.time),
    }
}

fn vnet(ids: &Ids, slot: usize, name: usize, default: bool) -> VirtualNetwork {
    VirtualNetwork {
        version: 0,
        id: ids.vnets[slot],
        name: NAMES[name].to_owned(),
        comment: String::new(),
        is_default: default,
        created_at: ids.time,
    }
}

fn route(ids: &Ids, slot: usize, net: usize, vnet: usize, tunnel: usize) -> Route {
    Route {
        version: 0,
        id: ids.routes[slot],
        network: NETS[net].parse::<IpNet>().unwrap(),
        vnet: ids.vnets[vnet],
        tunnel_id: ids.tunnels[tunnel],
        comment: String::new(),
        created_at: ids.time,
    }
}

fn run(db: &Db, ops: &[Op]) -> Result<(), TestCaseError> {
    let ids = Ids::new();
    let mut model = Model::default();
    for (step, op) in ops.iter().enumerate() {
        let got = outcome(
            db.update(|t| match *op {
                Op::PutTunnel {
                    slot,
                    name,
                    deleted,
                } => t.put(&tunnel(&ids, slot, name, deleted)),
                Op::DeleteTunnel { slot } => t.delete::<Tunnel>(ids.tunnels[slot]).map(drop),
                Op::PutVnet {
                    slot,
                    name,
                    default,
                } => t.put(&vnet(&ids, slot, name, default)),
                Op::DeleteVnet { slot } => t.delete::<VirtualNetwork>(ids.vnets[slot]).map(drop),
                Op::SetDefault { slot } => t.set_default_vnet(ids.vnets[slot]),
                Op::PutRoute {
                    slot,
                    net,
                    vnet,
                    tunnel,
                } => t.put(&route(&ids, slot, net, vnet, tunnel)),
                Op::DeleteRoute { slot } => t.delete::<Route>(ids.routes[slot]).map(drop),
            })
            .map(drop),
        );
        let want = model.apply(&ids, op);
        prop_assert_eq!(got, want, "step {} {:?}", step, op);

        let r = db.read().unwrap();
        prop_assert_eq!(
            unversioned(r.list::<Tunnel>().unwrap()),
            model.tunnels.values().cloned().collect::<Vec<_>>()
        );
        prop_assert_eq!(
            unversioned(r.list::<VirtualNetwork>().unwrap()),
            model.vnets.values().cloned().collect::<Vec<_>>()
        );
        prop_assert_eq!(
            unversioned(r.list::<Route>().unwrap()),
            model.routes.values().cloned().collect::<Vec<_>>()
        );
        // The indexes answer exactly what a scan of the model answers.
        for name in NAMES {
            let live = model
                .tunnels
                .values()
                .find(|t| t.deleted_at.is_none() && t.name == name);
            prop_assert_eq!(
                r.tunnel_by_name(name).unwrap().map(|t| t.id),
                live.map(|t| t.id)
            );
            let v = model.vnets.values().find(|v| v.name == name);
            prop_assert_eq!(r.vnet_by_name(name).unwrap().map(|v| v.id), v.map(|v| v.id));
        }
        let default = model.vnets.values().find(|v| v.is_default).map(|v| v.id);
        prop_assert_eq!(r.default_vnet().unwrap().map(|v| v.id), default);
        for route in model.routes.values() {
            let found = r.route_by_network(route.vnet, route.network).unwrap();
            prop_assert_eq!(found.map(|f| f.id), Some(route.id));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn memory_backend_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(&Db::new(Arc::new(crate::common::MemStore::new())), &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn redb_backend_matches_the_model(ops in proptest::collection::vec(op(), 1..30)) {
        let tmp = tempfile::tempdir().unwrap();
        let db = Db::new(Arc::new(RedbStore::open(&tmp.path().join("m.redb")).unwrap()));
        run(&db, &ops)?;
    }
}
