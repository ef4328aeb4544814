//! A check that a crate's modules form layers: no module imports one that imports it back.
//! It reads the `crate::` paths of every source file in `src/` (comments aside; names
//! re-exported at the crate root resolved to their module) and panics on a circle, naming it.
//! The BFF and the proxy engine test themselves with it (EN-01).

use std::collections::{BTreeMap, BTreeSet};

fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.trim_start().starts_with("//"))
}

/// `crate::x` and `crate::X` paths of `text`.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in code_lines(text) {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + 7..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
        // `use crate::{a, b}` is not used in this crate; a group would show up as `{`.
    }
    out
}

/// Panics, naming the circle, if the modules in `dir` (a crate's `src/`, one file per module)
/// import each other in a circle; or if fewer than `min_modules` were read.
///
/// # Panics
/// On a circle, an unreadable directory, or too few modules.
#[allow(clippy::unwrap_used)]
pub fn assert_no_import_circle(dir: &std::path::Path, min_modules: usize) {
    let lib = std::fs::read_to_string(dir.join("lib.rs")).unwrap();
    // Root re-exports: `pub use module::{A, B};` / `pub use module::A;`.
    let mut exported: BTreeMap<String, String> = BTreeMap::new();
    for line in code_lines(&lib) {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, names)) = rest.trim_end_matches(';').split_once("::") else {
            continue;
        };
        for name in names.trim_matches(|c| c == '{' || c == '}').split(',') {
            exported.insert(name.trim().to_owned(), module.to_owned());
        }
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let module = path.file_stem().unwrap().to_string_lossy().into_owned();
        if module == "lib" || path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let uses = crate_paths(&text)
            .into_iter()
            .map(|name| exported.get(&name).cloned().unwrap_or(name))
            .filter(|target| *target != module)
            .collect();
        graph.insert(module, uses);
    }
    assert!(graph.len() >= min_modules, "read the modules: {graph:?}");
    // Depth-first search for a back edge.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(node) {
            return;
        }
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_owned());
            panic!("import circle: {}", circle.join(" → "));
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if graph.contains_key(next) {
                visit(next, graph, path, done);
            }
        }
        path.pop();
        done.insert(node.to_owned());
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done);
    }
}
