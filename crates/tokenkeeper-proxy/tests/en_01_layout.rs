//! EN-01: the proxy engine's modules form layers, as the crate docs draw them — no module
//! imports one that imports it back (the body types and the upstream pool, the server and its
//! connections once did).
#![allow(missing_docs)]

#[test]
fn en_01_engine_modules_have_no_import_circle() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    tokenkeeper_testing::layout::assert_no_import_circle(&dir, 12);
}
