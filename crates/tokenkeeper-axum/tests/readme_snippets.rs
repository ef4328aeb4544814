//! Every Rust snippet of README.md is compiled: each must appear, unchanged, in
//! `examples/readme.rs` (which the test command builds).
#![allow(clippy::unwrap_used)]

/// The lines of `text` with surrounding whitespace removed (indentation differs between the
/// README and the functions of the example), blank lines dropped.
fn lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn readme_snippets_are_compiled_in_the_readme_example() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("../../README.md")).unwrap();
    let example = std::fs::read_to_string(root.join("examples/readme.rs")).unwrap();
    let example = lines(&example);
    let mut snippets = 0;
    for block in readme.split("```rust\n").skip(1) {
        let snippet = lines(block.split("```").next().unwrap());
        snippets += 1;
        let found = example
            .windows(snippet.len())
            .any(|window| window == snippet.as_slice());
        assert!(
            found,
            "README snippet {snippets} is not in examples/readme.rs (copy it there):\n{}",
            snippet.join("\n")
        );
    }
    assert!(snippets >= 5, "{snippets} snippets found");
}

/// UX-08: the README refers to nothing outside the repository, its machine-to-machine quick
/// start lists every crate its code needs (`tokio` for `main`), and the axum login quick start
/// has a `/` route, so a login (which returns to `/` by default) does not end on a 404.
#[test]
fn ux_08_the_readme_is_self_contained_and_its_quick_starts_run() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("../../README.md")).unwrap();
    for outside in ["../shared", "](../", "DESIGN.md", "CONFORMANCE.md"] {
        assert!(!readme.contains(outside), "the README refers to {outside}");
    }
    // Every relative link names a file of the repository.
    for link in readme.split("](").skip(1) {
        let target = link.split(')').next().unwrap().split('#').next().unwrap();
        if target.is_empty() || target.contains("://") {
            continue;
        }
        assert!(
            root.join("../..").join(target).exists(),
            "the README links to {target}, which is not in the repository"
        );
    }
    let m2m = readme
        .split("## Quick start: machine-to-machine")
        .nth(1)
        .unwrap()
        .split("```rust")
        .next()
        .unwrap();
    assert!(m2m.contains("tokio = "), "{m2m}");
    let axum = readme
        .split("## Quick start: OpenID Connect login in axum")
        .nth(1)
        .unwrap()
        .split("```")
        .nth(1)
        .unwrap();
    assert!(axum.contains(".route(\"/\","), "{axum}");
}
