//! DPoP through the middleware: throughput with a DPoP-bound token (a fresh proof per request)
//! as a ratio to the same middleware with a Bearer token, same loopback API, same run; and the
//! bytes a DPoP-bound token adds to the cache.
//!
//! Run: `cargo bench -p tokenkeeper-benches --bench dpop_middleware`
//!
//! The API answers `ok` without checking the proof (what is measured is the client's cost).
//! Variants run in alternating slices (A B C, C B A, …); each round gives one ratio per variant
//! against Bearer; the figure is the median with its interquartile range. Environment:
//! `TK_PAIRS` (rounds, default 40), `TK_SLICE_MS` (default 250), `TK_CONCURRENCY` (default: 1
//! and 16).
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

mod support;
use support::{env, median_iqr};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokenkeeper::dpop::{DpopAlgorithm, DpopKey};
use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager, TokenRequestParams};
use tokenkeeper_testing::{TestClient, TestServer};

async fn run_for(
    client: &reqwest_middleware::ClientWithMiddleware,
    url: &str,
    concurrency: u64,
    duration: Duration,
) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, count) = (client.clone(), url.to_owned(), count.clone());
        tasks.push(tokio::spawn(async move {
            while tokio::time::Instant::now() < deadline {
                let response = client.get(&url).send().await.unwrap();
                assert!(response.status().is_success());
                let _ = response.bytes().await.unwrap();
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / duration.as_secs_f64()
}

fn main() {
    let pairs = env("TK_PAIRS", 40);
    let slice = Duration::from_millis(env("TK_SLICE_MS", 250));
    let concurrencies = match std::env::var("TK_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(c) => vec![c],
        None => vec![1, 16],
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = TestServer::builder()
            .fixed_signing_key()
            .client(TestClient::new("bench", "secret"))
            .start()
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/items", listener.local_addr().unwrap());
        let app = axum::Router::new().route("/items", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let es256 = Arc::new(DpopKey::generate(DpopAlgorithm::ES256).unwrap());
        let eddsa = Arc::new(DpopKey::generate(DpopAlgorithm::EdDSA).unwrap());
        let config = || ClientConfig::new(server.token_endpoint(), "bench", "secret");
        let tokens = ClientCredentialsTokenManager::builder()
            .client("bearer", config())
            .client("es256", config().dpop(es256.clone()).require_dpop(true))
            .client("eddsa", config().dpop(eddsa.clone()).require_dpop(true))
            .build()
            .unwrap();
        let params = TokenRequestParams::default();
        let bearer = tokens.get_token("bearer", &params).await.unwrap();
        let bound = tokens.get_token("es256", &params).await.unwrap();
        tokens.get_token("eddsa", &params).await.unwrap();

        // Bytes a DPoP-bound token adds to a cache entry: its key carries the thumbprint, its
        // header value says `DPoP` rather than `Bearer`; the entry itself is the same type.
        let key_of = |name: &str| tokens.cache_key(name, &params).unwrap();
        let key_bytes = key_of("es256").as_str().len() as i64 - key_of("bearer").as_str().len() as i64;
        let name_bytes = "es256".len() as i64 - "bearer".len() as i64;
        let header_bytes = bound.authorization_header().len() as i64
            - bound.access_token().secret().len() as i64
            - (bearer.authorization_header().len() as i64 - bearer.access_token().secret().len() as i64);
        println!(
            "bytes added per cached DPoP token: {} (cache key: +{} for `&jkt=<thumbprint>`; Authorization header: {:+}); CachedToken is {} bytes either way",
            key_bytes - name_bytes + header_bytes,
            key_bytes - name_bytes,
            header_bytes,
            std::mem::size_of::<tokenkeeper::CachedToken>(),
        );
        println!();

        let client = reqwest::Client::new();
        let with = |name: &str| {
            reqwest_middleware::ClientBuilder::new(client.clone())
                .with(tokens.middleware(name).unwrap())
                .build()
        };
        let variants = [with("bearer"), with("es256"), with("eddsa")];
        let names = [
            "`TokenMiddleware`, Bearer token (baseline)",
            "`TokenMiddleware`, DPoP token, ES256 proof per request",
            "`TokenMiddleware`, DPoP token, EdDSA proof per request",
        ];
        for concurrency in concurrencies {
            for v in &variants {
                run_for(v, &url, concurrency, Duration::from_millis(500)).await;
            }
            let mut throughput = vec![Vec::new(); variants.len()];
            let mut ratios = vec![Vec::new(); variants.len()];
            for round in 0..pairs {
                let mut results = vec![0.0; variants.len()];
                let order: Vec<usize> = if round % 2 == 0 {
                    (0..variants.len()).collect()
                } else {
                    (0..variants.len()).rev().collect()
                };
                for i in order {
                    results[i] = run_for(&variants[i], &url, concurrency, slice).await;
                }
                for (i, r) in results.iter().enumerate() {
                    throughput[i].push(*r);
                    ratios[i].push(r / results[0]);
                }
            }
            println!(
                "concurrency {concurrency}: {pairs} rounds of {} ms slices; token requests made: {}",
                slice.as_millis(),
                server.token_requests("client_credentials")
            );
            println!();
            println!("| variant | median req/s | ratio to Bearer: median (IQR) |");
            println!("|---|---|---|");
            for i in 0..variants.len() {
                let (t, _, _) = median_iqr(&throughput[i]);
                let (r, q1, q3) = median_iqr(&ratios[i]);
                println!("| {} | {t:.0} | {r:.3} ({q1:.3} – {q3:.3}) |", names[i]);
            }
            println!();
        }
    });
}
