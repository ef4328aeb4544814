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
