//! DPoP proof creation, per algorithm (the signature dominates).
//!
//! Run: `cargo bench -p tokenkeeper-benches --bench dpop`
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::LazyLock;

use divan::Bencher;
use tokenkeeper::dpop::{DpopAlgorithm, DpopKey, ProofRequest};
use tokenkeeper::Timestamp;

fn main() {
    divan::main();
}

static URL: LazyLock<url::Url> =
    LazyLock::new(|| "https://api.example.com/orders?page=2".parse().unwrap());

#[divan::bench(args = ["ES256", "ES384", "EdDSA", "PS256", "RS256"], sample_count = 100, sample_size = 20)]
fn proof(bencher: Bencher<'_, '_>, alg: &str) {
    let key = DpopKey::generate(DpopAlgorithm::parse(alg).unwrap()).unwrap();
    let now = Timestamp::from_millis(1_767_000_000_000);
    let request = ProofRequest {
        method: "GET",
        url: &URL,
        access_token: Some("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ3b3JrZXIifQ.c2lnbmF0dXJl"),
        nonce: Some("server-nonce"),
    };
    bencher.bench_local(|| key.proof(&request, now).unwrap());
}
