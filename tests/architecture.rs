//! The shape docs/ARCHITECTURE.md describes, checked on the source: the top-level modules
//! form no cycle, the SQLite driver is named only inside the audit store, and the upstream
//! client only by the backend and the pipeline (whose private routes hold every one).
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing, reason = "test code")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// The top-level module a file belongs to: `audit/sqlite.rs` → `audit`, `trace.rs` → `trace`.
fn module_of(rel: &str) -> String {
    rel.split('/').next().unwrap().trim_end_matches(".rs").to_string()
}

/// Which top-level modules each one names through `crate::…`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let path = regex::Regex::new(r"crate::([a-z_]+)").unwrap();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in sources() {
        let from = module_of(&rel);
        if from == "lib" || from == "main" {
            continue;
        }
        let to = edges.entry(from.clone()).or_default();
        for m in path.captures_iter(&text) {
            if m[1] != from {
                to.insert(m[1].to_string());
            }
        }
    }
    edges
}

/// A cycle through `start`, if there is one.
fn cycle_from(edges: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn visit(
        edges: &BTreeMap<String, BTreeSet<String>>,
        at: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in edges.get(at).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if visit(edges, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    visit(edges, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn the_top_level_modules_form_no_cycle() {
    let edges = graph();
    assert!(edges.len() > 15, "{edges:?}");
    // Not vacuous: the graph has the edges the architecture names.
    assert!(edges["pipeline"].contains("audit") && edges["server"].contains("pipeline"));
    for module in edges.keys() {
        if let Some(cycle) = cycle_from(&edges, module) {
            panic!("module cycle: {}", cycle.join(" → "));
        }
    }
    // And the leaves stay leaves.
    for leaf in ["identity", "decision", "canonical", "secret"] {
        let names: Vec<&String> = edges[leaf].iter().filter(|m| *m != "decision").collect();
        assert!(names.is_empty(), "`{leaf}` should be a leaf but names {names:?}");
    }
}

#[test]
fn the_store_drivers_and_the_upstream_client_stay_where_they_belong() {
    for (rel, text) in sources() {
        for driver in ["rusqlite", "tokio_postgres", "deadpool_postgres"] {
            if text.contains(driver) {
                assert!(rel.starts_with("audit/"), "`{rel}` names {driver}: only the audit store may");
            }
        }
        // And the PostgreSQL store's SQL stays in its own module.
        if text.contains("tokio_postgres") {
            assert!(
                rel.starts_with("audit/postgres/"),
                "`{rel}` names tokio_postgres outside audit/postgres/"
            );
        }
        if text.contains("UpstreamClient") {
            assert!(
                rel.starts_with("backend/") || rel.starts_with("pipeline/"),
                "`{rel}` names UpstreamClient: only the backend and the pipeline may"
            );
        }
    }
}

#[test]
fn a_cycle_would_be_found() {
    let mut edges = BTreeMap::new();
    edges.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    edges.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    edges.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycle_from(&edges, "a").unwrap(), ["a", "b", "c", "a"]);
    edges.get_mut("c").unwrap().clear();
    assert!(cycle_from(&edges, "a").is_none());
}
