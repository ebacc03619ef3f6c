//! The route table's admin operations, bad inputs and serialisation.

use std::net::IpAddr;

use ipnet::IpNet;
use uuid::Uuid;
use zt_routes::{
    parse_network, AddRouteError, DeleteRouteError, DeleteVnetError, ExplainError, NewRoute,
    ParseNetworkError, Route, RouteTable, SetDefaultVnetError, SharedRoutes, VnetNameError,
    DEFAULT_VNET_ID, DEFAULT_VNET_NAME,
};

fn net(s: &str) -> IpNet {
    parse_network(s).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn parse_accepts_what_people_type() {
    let good = [
        ("198.51.100.101", "198.51.100.101/32"),
        ("198.51.100.101/32", "198.51.100.101/32"),
        ("  198.51.100.0/24\n", "198.51.100.0/24"),
        ("198.51.100.0 / 24", "198.51.100.0/24"),
        ("2001:DB8::101/128", "2001:db8::101/128"),
        ("2001:db8::101", "2001:db8::101/128"),
        ("2001:Db8::/32", "2001:db8::/32"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("::/0", "::/0"),
        ("::ffff:198.51.100.1", "::ffff:198.51.100.1/128"),
        // Host bits are kept for the caller to judge.
        ("10.0.0.1/8", "10.0.0.1/8"),
    ];
    for (input, want) in good {
        assert_eq!(parse_network(input).unwrap().to_string(), want, "{input:?}");
    }
}

#[test]
fn parse_rejects_the_rest_naming_input_and_reason() {
    use ParseNetworkError::*;
    type Expect = fn(&ParseNetworkError) -> bool;
    let bad: &[(&str, Expect, &str)] = &[
        ("", |e| matches!(e, Empty), "empty network"),
        ("   ", |e| matches!(e, Empty), "empty network"),
        (
            "198.51.100",
            |e| matches!(e, BadAddress { .. }),
            "`198.51.100`: `198.51.100` is not an IPv4 or IPv6 address",
        ),
        (
            "198.51.100.256",
            |e| matches!(e, BadAddress { .. }),
            "`198.51.100.256`",
        ),
        (
            "010.0.0.1",
            |e| matches!(e, BadAddress { .. }),
            "`010.0.0.1`",
        ),
        (
            "example.com",
            |e| matches!(e, BadAddress { .. }),
            "not an IPv4 or IPv6 address",
        ),
        (
            "2001:db8:::1",
            |e| matches!(e, BadAddress { .. }),
            "`2001:db8:::1`",
        ),
        (
            "[2001:db8::1]",
            |e| matches!(e, BadAddress { .. }),
            "`[2001:db8::1]`",
        ),
        ("fe80::1%eth0", |e| matches!(e, Zone { .. }), "zone"),
        (
            "10.0.0.0/",
            |e| matches!(e, MissingPrefixLength { .. }),
            "`10.0.0.0/`: missing prefix length",
        ),
        (
            "10.0.0.0/33",
            |e| matches!(e, BadPrefixLength { max: 32, .. }),
            "prefix length `33` is not a whole number from 0 to 32",
        ),
        (
            "2001:db8::/129",
            |e| matches!(e, BadPrefixLength { max: 128, .. }),
            "from 0 to 128",
        ),
        (
            "10.0.0.0/+8",
            |e| matches!(e, BadPrefixLength { .. }),
            "`+8`",
        ),
        (
            "10.0.0.0/-1",
            |e| matches!(e, BadPrefixLength { .. }),
            "`-1`",
        ),
        (
            "10.0.0.0/8/8",
            |e| matches!(e, BadPrefixLength { .. }),
            "`8/8`",
        ),
        (
            "10.0.0.0/0008",
            |e| matches!(e, BadPrefixLength { .. }),
            "`0008`",
        ),
        (
            "10.0.0.0/1e1",
            |e| matches!(e, BadPrefixLength { .. }),
            "`1e1`",
        ),
        ("/24", |e| matches!(e, BadAddress { .. }), "`` is not"),
    ];
    for (input, is_expected, message) in bad {
        let err = parse_network(input).unwrap_err();
        assert!(is_expected(&err), "{input:?} gave {err:?}");
        assert!(err.to_string().contains(message), "{input:?}: {err}");
    }
}

#[test]
fn add_refuses_bad_routes_with_useful_errors() {
    let mut table = RouteTable::new();
    let tunnel = Uuid::new_v4();
    let first = table
        .add(NewRoute::new(net("10.0.0.0/8"), tunnel))
        .unwrap()
        .id;

    let err = table
        .add(NewRoute::new(net("10.0.0.1/8"), tunnel))
        .unwrap_err();
    assert_eq!(
        err,
        AddRouteError::HostBitsSet {
            network: net("10.0.0.1/8"),
            canonical: net("10.0.0.0/8")
        }
    );
    assert_eq!(
        err.to_string(),
        "10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?"
    );

    let err = table
        .add(NewRoute::new(net("2001:db8::1/32"), tunnel))
        .unwrap_err();
    assert!(
        err.to_string().contains("did you mean 2001:db8::/32?"),
        "{err}"
    );

    let other = Uuid::new_v4();
    let err = table
        .add(NewRoute::new(net("10.0.0.0/8"), other))
        .unwrap_err();
    assert_eq!(
        err,
        AddRouteError::Duplicate {
            network: net("10.0.0.0/8"),
            vnet: DEFAULT_VNET_ID,
            existing: first,
            tunnel_id: tunnel
        }
    );
    assert!(err.to_string().contains(&first.to_string()), "{err}");

    let nowhere = Uuid::new_v4();
    let err = table
        .add(NewRoute::new(net("10.0.0.0/8"), tunnel).in_vnet(nowhere))
        .unwrap_err();
    assert_eq!(err, AddRouteError::UnknownVnet { vnet: nowhere });

    // The same network in another virtual network is fine.
    let blue = table.add_vnet("blue", "").unwrap().id;
    table
        .add(NewRoute::new(net("10.0.0.0/8"), other).in_vnet(blue))
        .unwrap();

    let copy = table.get(first).unwrap().clone();
    let err = table
        .insert(Route {
            network: net("11.0.0.0/8"),
            ..copy
        })
        .unwrap_err();
    assert_eq!(err, AddRouteError::DuplicateId { id: first });
    assert_eq!(table.len(), 2);
}

#[test]
fn delete_by_id_and_by_network_and_its_bad_inputs() {
    let mut table = RouteTable::new();
    let tunnel = Uuid::new_v4();
    let a = table
        .add(NewRoute::new(net("10.0.0.0/8"), tunnel))
        .unwrap()
        .id;
    let b = table
        .add(NewRoute::new(net("10.1.0.0/16"), tunnel))
        .unwrap()
        .id;

    let unknown = Uuid::new_v4();
    assert_eq!(
        table.delete(unknown).unwrap_err(),
        DeleteRouteError::UnknownRoute { id: unknown }
    );
    assert_eq!(
        table.delete_network(None, net("10.1.0.1/16")).unwrap_err(),
        DeleteRouteError::HostBitsSet {
            network: net("10.1.0.1/16"),
            canonical: net("10.1.0.0/16")
        }
    );
    assert_eq!(
        table.delete_network(None, net("10.2.0.0/16")).unwrap_err(),
        DeleteRouteError::NoRouteForNetwork {
            network: net("10.2.0.0/16"),
            vnet: DEFAULT_VNET_ID
        }
    );
    assert_eq!(
        table
            .delete_network(Some(unknown), net("10.1.0.0/16"))
            .unwrap_err(),
        DeleteRouteError::UnknownVnet { vnet: unknown }
    );

    assert_eq!(table.lookup(DEFAULT_VNET_ID, ip("10.1.2.3")).unwrap().id, b);
    assert_eq!(
        table.delete_network(None, net("10.1.0.0/16")).unwrap().id,
        b
    );
    assert_eq!(table.lookup(DEFAULT_VNET_ID, ip("10.1.2.3")).unwrap().id, a);
    assert_eq!(table.delete(a).unwrap().id, a);
    assert!(table.lookup(DEFAULT_VNET_ID, ip("10.1.2.3")).is_none());
    assert_eq!(
        table.delete(a).unwrap_err(),
        DeleteRouteError::UnknownRoute { id: a }
    );
    assert!(table.is_empty());
}

#[test]
fn explain_names_the_match_and_the_shorter_routes() {
    let mut table = RouteTable::new();
    let (t1, t2) = (Uuid::new_v4(), Uuid::new_v4());
    let wide = table
        .add(NewRoute::new(net("198.51.0.0/16"), t1))
        .unwrap()
        .id;
    let host = table
        .add(NewRoute::new(net("198.51.100.101/32"), t2).with_comment("k8s api"))
        .unwrap()
        .id;
    table
        .add(NewRoute::new(net("198.51.200.0/24"), t1))
        .unwrap();

    let e = table.explain(None, ip("198.51.100.101")).unwrap();
    assert_eq!(e.matched.as_ref().map(|r| r.id), Some(host));
    assert_eq!(
        e.also_covering.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![wide]
    );
    let text = e.to_string();
    assert!(
        text.contains("route 198.51.100.101/32") && text.contains("also covered by 198.51.0.0/16"),
        "{text}"
    );

    let e = table.explain(None, ip("203.0.113.1")).unwrap();
    assert!(e.matched.is_none() && e.also_covering.is_empty());
    assert!(e.to_string().ends_with("no route"), "{e}");

    let unknown = Uuid::new_v4();
    assert_eq!(
        table
            .explain(Some(unknown), ip("198.51.100.101"))
            .unwrap_err(),
        ExplainError::UnknownVnet { vnet: unknown }
    );
}

#[test]
fn virtual_networks_separate_overlapping_ranges() {
    let mut table = RouteTable::new();
    assert_eq!(table.default_vnet(), DEFAULT_VNET_ID);
    assert_eq!(table.vnet(DEFAULT_VNET_ID).unwrap().name, DEFAULT_VNET_NAME);

    let (east, west) = (Uuid::new_v4(), Uuid::new_v4());
    let staging = table.add_vnet(" staging ", "second cluster").unwrap().id;
    assert_eq!(table.vnet(staging).unwrap().name, "staging");
    table.add(NewRoute::new(net("10.0.0.0/8"), east)).unwrap();
    table
        .add(NewRoute::new(net("10.0.0.0/8"), west).in_vnet(staging))
        .unwrap();

    let snap = table.snapshot();
    assert_eq!(
        snap.lookup(DEFAULT_VNET_ID, ip("10.9.9.9"))
            .unwrap()
            .tunnel_id,
        east
    );
    assert_eq!(
        snap.lookup(staging, ip("10.9.9.9")).unwrap().tunnel_id,
        west
    );
    assert!(snap.lookup(Uuid::new_v4(), ip("10.9.9.9")).is_none());

    // Names: empty and taken are refused, for add and rename.
    assert_eq!(table.add_vnet("  ", "").unwrap_err(), VnetNameError::Empty);
    assert_eq!(
        table.add_vnet("staging", "").unwrap_err(),
        VnetNameError::Taken {
            name: "staging".into(),
            existing: staging
        }
    );
    assert_eq!(
        table.rename_vnet(staging, DEFAULT_VNET_NAME).unwrap_err(),
        VnetNameError::Taken {
            name: DEFAULT_VNET_NAME.into(),
            existing: DEFAULT_VNET_ID
        }
    );
    table.rename_vnet(staging, "staging").unwrap();
    table.rename_vnet(staging, "stage").unwrap();
    assert_eq!(table.vnet_by_name("stage").unwrap().id, staging);
    let nowhere = Uuid::new_v4();
    assert_eq!(
        table.rename_vnet(nowhere, "x").unwrap_err(),
        VnetNameError::UnknownVnet { vnet: nowhere }
    );

    // Delete: refused while in use and while default.
    let err = table.delete_vnet(staging).unwrap_err();
    assert_eq!(
        err,
        DeleteVnetError::InUse {
            vnet: staging,
            name: "stage".into(),
            routes: 1
        }
    );
    assert!(err.to_string().contains("still has 1 route(s)"), "{err}");
    table
        .delete_network(Some(staging), net("10.0.0.0/8"))
        .unwrap();
    table.set_default_vnet(staging).unwrap();
    assert!(matches!(
        table.delete_vnet(staging).unwrap_err(),
        DeleteVnetError::IsDefault { .. }
    ));
    assert_eq!(
        table.set_default_vnet(nowhere).unwrap_err(),
        SetDefaultVnetError::UnknownVnet { vnet: nowhere }
    );
    // Routes without a vnet now land in the new default.
    table.add(NewRoute::new(net("10.0.0.0/8"), west)).unwrap();
    assert_eq!(
        table
            .snapshot()
            .lookup_default(ip("10.1.1.1"))
            .unwrap()
            .tunnel_id,
        west
    );
    table.set_default_vnet(DEFAULT_VNET_ID).unwrap();
    table
        .delete_network(Some(staging), net("10.0.0.0/8"))
        .unwrap();
    assert_eq!(table.delete_vnet(staging).unwrap().id, staging);
    assert_eq!(
        table.delete_vnet(staging).unwrap_err(),
        DeleteVnetError::UnknownVnet { vnet: staging }
    );
    assert_eq!(table.vnets().count(), 1);
}

#[test]
fn serde_round_trip_and_refusals() {
    let mut table = RouteTable::new();
    let blue = table.add_vnet("blue", "b").unwrap().id;
    let tunnel = Uuid::new_v4();
    table
        .add(NewRoute::new(net("198.51.100.101/32"), tunnel).with_comment("api"))
        .unwrap();
    table
        .add(NewRoute::new(net("2001:db8::101/128"), tunnel).in_vnet(blue))
        .unwrap();
    let json = serde_json::to_string(&table).unwrap();
    let back: RouteTable = serde_json::from_str(&json).unwrap();
    assert_eq!(back, table);
    assert_eq!(
        back.lookup(blue, ip("2001:db8::101")).unwrap().tunnel_id,
        tunnel
    );

    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["routes"][0]["network"] = "198.51.100.101/24".into();
    let err = serde_json::from_value::<RouteTable>(value)
        .unwrap_err()
        .to_string();
    assert!(err.contains("did you mean 198.51.100.0/24"), "{err}");

    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["default_vnet"] = Uuid::new_v4().to_string().into();
    let err = serde_json::from_value::<RouteTable>(value)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not among the virtual networks"), "{err}");

    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["vnets"][1]["name"] = DEFAULT_VNET_NAME.into();
    let err = serde_json::from_value::<RouteTable>(value)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is already used"), "{err}");

    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let route = value["routes"][0].clone();
    value["routes"].as_array_mut().unwrap().push(route);
    let err = serde_json::from_value::<RouteTable>(value)
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");

    let set: zt_routes::PrefixSet = [net("10.0.0.0/8"), net("2001:db8::/32")]
        .into_iter()
        .collect();
    let json = serde_json::to_string(&set).unwrap();
    assert_eq!(json, r#"["10.0.0.0/8","2001:db8::/32"]"#);
    assert_eq!(
        serde_json::from_str::<zt_routes::PrefixSet>(&json).unwrap(),
        set
    );
}

#[test]
fn readers_keep_their_snapshot_while_a_new_one_is_published() {
    let mut table = RouteTable::new();
    let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
    let id = table.add(NewRoute::new(net("10.0.0.0/8"), old)).unwrap().id;
    let shared = std::sync::Arc::new(SharedRoutes::new(table.snapshot()));

    let held = shared.load_full();
    table.delete(id).unwrap();
    table.add(NewRoute::new(net("10.0.0.0/8"), new)).unwrap();

    // Readers on other threads run while the writer publishes; each sees a whole snapshot.
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let mut seen = std::collections::HashSet::new();
                for _ in 0..2_000 {
                    let snap = shared.load();
                    seen.insert(snap.lookup_default(ip("10.1.2.3")).unwrap().tunnel_id);
                }
                seen
            })
        })
        .collect();
    shared.publish(&table);
    for r in readers {
        let seen = r.join().unwrap();
        assert!(seen.iter().all(|t| *t == old || *t == new), "{seen:?}");
    }
    assert_eq!(held.lookup_default(ip("10.1.2.3")).unwrap().tunnel_id, old);
    assert_eq!(
        shared
            .load()
            .lookup_default(ip("10.1.2.3"))
            .unwrap()
            .tunnel_id,
        new
    );
}
