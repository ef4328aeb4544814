//! Middleware overhead: throughput through `TokenMiddleware` as a ratio to the same reqwest
//! client sending a static `Authorization` header, to the same loopback API, in the same run.
//!
//! Run: `cargo bench -p tokenkeeper-benches --bench middleware_overhead`
//!
//! The machine is shared and noisy, so the variants run in short alternating slices
//! (A B C D, D C B A, …) and each round gives one ratio per variant against the baseline; the
//! reported figure is the median of those ratios, with the interquartile range. Four variants,
//! all on one `reqwest::Client`:
//! - baseline: plain reqwest, static header;
//! - a `reqwest_middleware::ClientWithMiddleware` with no middleware, static header;
//! - the floor: the same with the cheapest possible header-attaching middleware (a static value,
//!   no cache lookup, no look at the response) — what any reqwest middleware costs at least;
//! - `TokenMiddleware` (token cached).
//!
//! It runs twice: with 1 connection (sequential keep-alive requests: what one request pays) and
//! with 16 concurrent connections (both cores saturated: what the machine's throughput pays).
//! Environment: `TK_PAIRS` (rounds, default 60), `TK_SLICE_MS` (default 250), `TK_CONCURRENCY`
//! (run only this concurrency), `TK_ONLY=base|empty|floor|mw` (one variant alone for 8 s, for a
//! profiler), with `TK_COUNT=N` (N sequential requests on one thread, for callgrind; see
//! `benches/instructions.sh`).
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

mod support;
use support::{env, median_iqr};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager, TokenRequestParams};
use tokenkeeper_testing::{TestClient, TestServer};

#[derive(Clone)]
enum Variant {
    Static(reqwest::Client, reqwest::header::HeaderValue),
    Middleware(reqwest_middleware::ClientWithMiddleware),
    EmptyStack(
        reqwest_middleware::ClientWithMiddleware,
        reqwest::header::HeaderValue,
    ),
    /// The floor for any reqwest middleware that attaches a header: `StaticHeader` below.
    Floor(reqwest_middleware::ClientWithMiddleware),
}

/// The cheapest middleware that attaches an `Authorization` header: a static value, no cache
/// lookup, no look at the response (so no 401 retry), no future of its own.
struct StaticHeader(reqwest::header::HeaderValue);

impl reqwest_middleware::Middleware for StaticHeader {
    fn handle<'a, 'b, 'c, 'd>(
        &'a self,
        mut req: reqwest::Request,
        extensions: &'b mut http::Extensions,
        next: reqwest_middleware::Next<'c>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = reqwest_middleware::Result<reqwest::Response>>
                + Send
                + 'd,
        >,
    >
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        req.headers_mut()
            .insert(reqwest::header::AUTHORIZATION, self.0.clone());
        next.run(req, extensions)
    }
}

async fn send(variant: &Variant, url: &str) -> reqwest::Response {
    match variant {
        Variant::Static(client, header) => client
            .get(url)
            .header(reqwest::header::AUTHORIZATION, header.clone())
            .send()
            .await
            .unwrap(),
        Variant::Middleware(client) | Variant::Floor(client) => {
            client.get(url).send().await.unwrap()
        }
        Variant::EmptyStack(client, header) => client
            .get(url)
            .header(reqwest::header::AUTHORIZATION, header.clone())
            .send()
            .await
            .unwrap(),
    }
}

async fn run_for(variant: &Variant, url: &str, concurrency: u64, duration: Duration) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let variant = variant.clone();
        let url = url.to_owned();
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            while tokio::time::Instant::now() < deadline {
                let response = send(&variant, &url).await;
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

async fn run_count(variant: &Variant, url: &str, count: u64) {
    for _ in 0..count {
        let response = send(variant, url).await;
        assert!(response.status().is_success());
        let _ = response.bytes().await.unwrap();
    }
}

/// Marks the start of the measured requests (callgrind `--dump-before=*measure_begin*`). The
/// two markers differ in body, so that the linker cannot fold them into one function.
#[inline(never)]
fn measure_begin() -> u64 {
    std::hint::black_box(0x5eed_0001)
}

/// Marks their end.
#[inline(never)]
fn measure_end() -> u64 {
    std::hint::black_box(0x5eed_0002) ^ 0xff
}

fn main() {
    let pairs = env("TK_PAIRS", 60);
    let slice = Duration::from_millis(env("TK_SLICE_MS", 250));
    let concurrencies = match std::env::var("TK_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(c) => vec![c],
        None => vec![1, 16],
    };
    // Counting instructions (TK_COUNT) wants a deterministic schedule: one thread.
    let runtime = if std::env::var_os("TK_COUNT").is_some() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
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

        let tokens = ClientCredentialsTokenManager::builder()
            .client("api", ClientConfig::new(server.token_endpoint(), "bench", "secret"))
            .build()
            .unwrap();
        let token = tokens.get_token("api", &TokenRequestParams::default()).await.unwrap();
        let header = token.authorization_header().clone();
        let client = reqwest::Client::new();
        let baseline = Variant::Static(client.clone(), header.clone());
        let middleware = Variant::Middleware(
            reqwest_middleware::ClientBuilder::new(client.clone())
                .with(tokens.middleware("api").unwrap())
                .build(),
        );
        let empty = Variant::EmptyStack(
            reqwest_middleware::ClientBuilder::new(client.clone()).build(),
            header.clone(),
        );
        let floor = Variant::Floor(
            reqwest_middleware::ClientBuilder::new(client.clone())
                .with(StaticHeader(header))
                .build(),
        );
        let concurrency = concurrencies[concurrencies.len() - 1];
        if let Ok(only) = std::env::var("TK_ONLY") {
            let v = match only.as_str() {
                "mw" => &middleware,
                "empty" => &empty,
                "floor" => &floor,
                _ => &baseline,
            };
            if let Some(count) = std::env::var("TK_COUNT").ok().and_then(|c| c.parse::<u64>().ok()) {
                // A fixed number of sequential requests, between two markers at which callgrind
                // dumps its counters (`--dump-before`): the middle dump holds exactly these
                // requests, and none of the start-up work (whose entropy gathering varies from
                // run to run by more than the differences measured).
                run_count(v, &url, 200).await;
                std::hint::black_box(measure_begin());
                run_count(v, &url, count).await;
                std::hint::black_box(measure_end());
                println!("{only}: {count} requests");
                return;
            }
            let r = run_for(v, &url, concurrency, Duration::from_secs(8)).await;
            println!("{only}: {r:.0} req/s");
            return;
        }
        // Baseline first; the others in the order they add cost.
        let variants = [&baseline, &empty, &floor, &middleware];
        let names = [
            "reqwest + static `Authorization` header (baseline)",
            "reqwest-middleware, no middleware, static header",
            "reqwest-middleware + a static-header middleware (the floor)",
            "reqwest-middleware + `TokenMiddleware`",
        ];
        for concurrency in concurrencies {
            // Warm up connections and caches.
            for v in variants {
                run_for(v, &url, concurrency, Duration::from_millis(500)).await;
            }
            let mut throughput = vec![Vec::new(); variants.len()];
            let mut ratios = vec![Vec::new(); variants.len()];
            for round in 0..pairs {
                // A B C D, then D C B A: each variant sits before and after the others equally
                // often, and each round gives one ratio per variant against the baseline.
                let mut results = vec![0.0; variants.len()];
                let order: Vec<usize> = if round % 2 == 0 {
                    (0..variants.len()).collect()
                } else {
                    (0..variants.len()).rev().collect()
                };
                for i in order {
                    results[i] = run_for(variants[i], &url, concurrency, slice).await;
                }
                for (i, r) in results.iter().enumerate() {
                    throughput[i].push(*r);
                    ratios[i].push(r / results[0]);
                }
            }
            println!("concurrency {concurrency}: {pairs} rounds of {} ms slices; token requests made: {}", slice.as_millis(), server.token_requests("client_credentials"));
            println!();
            println!("| variant | median req/s | ratio to baseline: median (IQR) |");
            println!("|---|---|---|");
            for i in 0..variants.len() {
                let (t, _, _) = median_iqr(&throughput[i]);
                let (r, q1, q3) = median_iqr(&ratios[i]);
                println!("| {} | {t:.0} | {r:.4} ({q1:.4} – {q3:.4}) |", names[i]);
            }
            println!();
        }
    });
}
