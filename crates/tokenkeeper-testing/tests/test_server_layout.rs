//! The test server's modules form layers (issue 20): each grant or endpoint in a module of its
//! own, the shared state in `state`, which imports none of them — no import circle.
#![allow(missing_docs)]

#[test]
fn test_server_modules_have_no_import_circle() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    tokenkeeper_testing::layout::assert_no_import_circle(&dir, 25);
}
