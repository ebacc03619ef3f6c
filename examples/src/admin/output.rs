//! Printing: aligned tables for people, the admin API's JSON (pretty) for scripts, and
//! the small accessors that show a missing JSON value as `-`.

use std::fmt::Write as _;

use serde_json::Value;

pub(super) fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// Prints rows under a header, columns padded to their widest cell.
pub(super) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let _ = write!(s, "{c:<w$}  ", w = widths[i]);
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for r in rows {
        line(r.clone());
    }
}

pub(super) fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

pub(super) fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// `4xedge-a, 2xedge-b`: connections counted per edge name, as cloudflared shows them.
pub(super) fn connections_summary(conns: &Value) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for c in arr(conns) {
        let name = s(&c["edge_name"]);
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, k)) => *k += 1,
            None => counts.push((name, 1)),
        }
    }
    counts
        .iter()
        .map(|(n, k)| format!("{k}x{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn route_rows(routes: &Value) -> Vec<Vec<String>> {
    arr(routes)
        .iter()
        .map(|r| {
            vec![
                s(&r["id"]),
                s(&r["network"]),
                s(&r["vnet_name"]),
                s(&r["tunnel_name"]),
                s(&r["comment"]),
                s(&r["created_at"]),
            ]
        })
        .collect()
}

pub(super) const ROUTE_HEADER: [&str; 6] =
    ["ID", "NETWORK", "VNET", "TUNNEL", "COMMENT", "CREATED"];

pub(super) fn print_routes(routes: &Value) {
    print_table(&ROUTE_HEADER, &route_rows(routes));
}
