//! Keeps the runtime's modules free of import cycles: each module's `use` of a sibling
//! (`super::x`, `crate::runtime::x`) is an edge, and the graph must have no cycle. The
//! parent module (`runtime/mod.rs`) may use every child; no child may use it back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, as (module path like `flow::open`, source).
fn modules(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|e| e.map(|e| e.path()).unwrap_or_default())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(base, &path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let rel = path.strip_prefix(base).unwrap_or(&path).with_extension("");
                let mut parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if parts.last().is_some_and(|p| p == "mod") {
                    parts.pop();
                }
                let source = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                out.insert(parts.join("::"), source);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The module a path used from `module` names: the longest known module prefix.
fn target(module: &str, path: &str, known: &BTreeMap<String, String>) -> Option<String> {
    let mut parts: Vec<&str> = path.split("::").collect();
    let mut at: Vec<&str> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").collect()
    };
    match parts.first() {
        Some(&"crate") => {
            if parts.get(1) != Some(&"runtime") {
                return None;
            }
            at.clear();
            parts.drain(..2);
        }
        // `self::x` in module `m` names `m::x`.
        Some(&"self") => {
            parts.remove(0);
        }
        // `super` from module `a::b` (file `a/b.rs` or `a/b/mod.rs`) is `a`.
        Some(&"super") => {
            while parts.first() == Some(&"super") {
                at.pop();
                parts.remove(0);
            }
        }
        _ => return None,
    }
    let full: Vec<&str> = at.into_iter().chain(parts).collect();
    (1..=full.len())
        .rev()
        .map(|n| full[..n].join("::"))
        .find(|m| known.contains_key(m))
        .or_else(|| Some(String::new()))
}

/// The paths starting with `crate::runtime`, `super` or `self` in `code`.
fn paths(code: &str) -> Vec<String> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    for start in ["crate::runtime::", "super::", "self::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(start) {
            let begin = from + at;
            let boundary = begin == 0
                || !(bytes[begin - 1].is_ascii_alphanumeric()
                    || bytes[begin - 1] == b'_'
                    || bytes[begin - 1] == b':');
            let end = code[begin..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |n| begin + n);
            if boundary {
                out.push(code[begin..end].trim_end_matches(':').to_owned());
            }
            from = end.max(begin + 1);
        }
    }
    out
}

#[test]
fn the_runtime_modules_have_no_import_cycle() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/runtime");
    let known = modules(&dir);
    assert!(known.len() > 10, "found only {:?}", known.keys());
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, source) in &known {
        // This file spells the paths it looks for.
        if module == "layering" {
            continue;
        }
        // Inline test modules (at the end of a file) use `super::*` of their own file.
        let code = source.split("#[cfg(test)]").next().unwrap_or_default();
        let code: String = code
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for used in paths(&code) {
            let Some(t) = target(module, &used, &known) else {
                continue;
            };
            // The parent's uses of its children, and a module's of its own items or its
            // children, are not edges between siblings.
            if module.is_empty() || &t == module || t.starts_with(&format!("{module}::")) {
                continue;
            }
            edges.entry(module.clone()).or_default().insert(t);
        }
    }
    for (child, uses) in &edges {
        assert!(
            !uses.contains(""),
            "runtime::{child} uses the parent module runtime/mod.rs, which uses it"
        );
    }
    // Depth-first search for a back edge.
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(i) = stack.iter().position(|s| s == n) {
            panic!("import cycle: {} -> {n}", stack[i..].join(" -> "));
        }
        if done.contains(n) {
            return;
        }
        stack.push(n.to_owned());
        for d in edges.get(n).into_iter().flatten() {
            visit(d, edges, stack, done);
        }
        stack.pop();
        done.insert(n.to_owned());
    }
    let mut done = BTreeSet::new();
    for m in known.keys() {
        visit(m, &edges, &mut Vec::new(), &mut done);
    }
    println!(
        "runtime modules: {}, imports between them: {}",
        known.len(),
        edges.values().map(BTreeSet::len).sum::<usize>()
    );
}
