//! The shape of the codebase, checked so that it stays as docs/ARCHITECTURE.md describes it:
//! no import circle between the top-level modules (and the layering rules the guide names),
//! no source file over 600 lines, and no `ProxyHttp` phase method over 40 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Top-level module → the top-level modules it refers to (`crate::x`), comments left out.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in files {
        let rel = path.strip_prefix(SRC).expect("under src");
        let first = rel.components().next().expect("a component");
        let top = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if matches!(top.as_str(), "bin" | "main" | "lib") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read source");
        let uses = graph.entry(top.clone()).or_default();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let name: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != top {
                    uses.insert(name);
                }
            }
        }
    }
    graph
}

/// A cycle through `start`, if any.
fn cycle_from(
    graph: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    let current = path.last().cloned().unwrap_or_else(|| start.to_string());
    for next in graph.get(&current).into_iter().flatten() {
        if next == start {
            let mut c = path.clone();
            c.push(next.clone());
            return Some(c);
        }
        if !path.contains(next) {
            path.push(next.clone());
            if let Some(c) = cycle_from(graph, start, path) {
                return Some(c);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn no_import_circle_between_modules() {
    let graph = module_graph();
    assert!(graph.len() > 10, "{graph:?}");
    for module in graph.keys() {
        let mut path = vec![module.clone()];
        if let Some(c) = cycle_from(&graph, module, &mut path) {
            panic!("import circle: {}", c.join(" → "));
        }
    }
    let uses = |m: &str| graph.get(m).cloned().unwrap_or_default();
    // The leaves import nothing from the crate.
    for leaf in ["wire", "canonical", "dns", "fetch", "openapi"] {
        assert!(uses(leaf).is_empty(), "{leaf} imports {:?}", uses(leaf));
    }
    // The configuration imports only the leaves; pools never see the snapshot; metrics render
    // what they are handed.
    assert!(
        uses("config")
            .iter()
            .all(|m| m == "wire" || m == "canonical" || m == "dns" || m == "openapi"),
        "config imports {:?}",
        uses("config")
    );
    assert!(!uses("upstream").contains("gateway"));
    assert!(!uses("observe").contains("gateway"));
    for low in ["config", "router", "upstream", "policy", "cache", "observe"] {
        for high in ["proxy", "server", "admin", "front", "reload"] {
            assert!(!uses(low).contains(high), "{low} imports {high}");
        }
    }
}

#[test]
fn no_source_file_over_600_lines() {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|p| {
            let n = std::fs::read_to_string(p).ok()?.lines().count();
            (n > 600).then(|| format!("{} ({n} lines)", p.display()))
        })
        .collect();
    assert!(long.is_empty(), "{long:?}");
}

#[test]
fn proxy_phases_are_short() {
    let text = std::fs::read_to_string(format!("{SRC}/proxy/mod.rs")).expect("read proxy");
    let start = text
        .find("impl ProxyHttp for Tollgate")
        .expect("the ProxyHttp impl");
    let mut phases = Vec::new();
    let mut current: Option<(String, usize)> = None;
    for line in text[start..].lines() {
        if let Some((name, n)) = &mut current {
            *n += 1;
            if line == "    }" {
                phases.push((name.clone(), *n));
                current = None;
            }
        } else if let Some(rest) = line
            .strip_prefix("    fn ")
            .or_else(|| line.strip_prefix("    async fn "))
        {
            let name: String = rest.chars().take_while(|c| *c != '(').collect();
            if line.trim_end().ends_with('}') {
                phases.push((name, 1));
            } else {
                current = Some((name, 1));
            }
        }
    }
    assert!(phases.len() >= 15, "{phases:?}");
    let long: Vec<_> = phases.iter().filter(|(_, n)| *n > 40).collect();
    assert!(long.is_empty(), "phases over 40 lines: {long:?}");
}
