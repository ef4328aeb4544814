//! EN-01: the BFF's modules form layers — no module imports one that imports it back
//! (the proxy, the management endpoints, the WebSocket relay and the state once did).
#![allow(missing_docs)]

#[test]
fn en_01_bff_modules_have_no_import_circle() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    tokenkeeper_testing::layout::assert_no_import_circle(&dir, 10);
}
