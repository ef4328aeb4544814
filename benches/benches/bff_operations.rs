//! Operating the BFF (issue 18's benchmarks): how long a Prometheus `/metrics` scrape takes with
//! 100,000 sessions in the store, and how many requests a reload under load drops.
//!
//! Run: `cargo bench -p tokenkeeper-benches --bench bff_operations`
//! Environment: `TK_SESSIONS` (default 100,000), `TK_SCRAPES` (default 50), `TK_SECONDS` (the
//! reload run, default 10), `TK_CONCURRENCY` (callers during the reloads, default 32),
//! `TK_RELOAD_MS` (between reloads, default 100).
//!
//! The host is built from a configuration file as `tokenkeeper bff` builds it
//! (`host::build`), served on the per-core server; the reloads are `Host::reload`, what SIGHUP
//! and the file watch call. Each reload switches among three files: frontend `a` alone; `a`
//! and a new frontend `b`; and `a` changed (its route's timeout) with `b` — so `a` is kept,
//! then rebuilt, while callers use it.
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

mod support;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::env;
use tokenkeeper_bff::config::{BffConfig, Validated};
use tokenkeeper_bff::BffSession;
use tokenkeeper_testing::{TestClient, TestServer};

fn file(port: u16, issuer: &str, api: &str, with_b: bool, timeout: u64) -> Validated {
    let mut text = format!(
        r#"
[bff]
listen = "127.0.0.1:{port}"
insecure_cookies = true
workers = 2

[[frontends]]
name = "a"
public_url = "http://127.0.0.1:{port}"

[frontends.oidc]
issuer = "{issuer}"
client_id = "a"
client_secret = "a-secret"

[[frontends.routes]]
path = "/api"
upstream = "{api}"
timeout_secs = {timeout}
"#
    );
    if with_b {
        text.push_str(&format!(
            r#"
[[frontends]]
name = "b"
public_url = "http://b.localhost:{port}"

[frontends.oidc]
issuer = "{issuer}"
client_id = "b"
client_secret = "b-secret"
"#
        ));
    }
    BffConfig::parse(&text)
        .unwrap()
        .validate(&text, &|_| None)
        .unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    tokenkeeper_proxy::ops::install_prometheus().unwrap();
    let bound = tokenkeeper_proxy::server::Bound::bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
    let port = bound.local_addr().port();
    let public = format!("http://127.0.0.1:{port}");
    let idp = TestServer::builder()
        .client(TestClient::new("a", "a-secret").redirect_uri(&format!("{public}/bff/callback")))
        .client(
            TestClient::new("b", "b-secret")
                .redirect_uri(&format!("http://b.localhost:{port}/bff/callback")),
        )
        .start()
        .await;
    idp.set_login(Some("alice"));
    let api = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(|| async { "ok" });
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    };
    let issuer = idp.issuer();
    let configs = [
        file(port, issuer, &api, false, 30),
        file(port, issuer, &api, true, 30),
        file(port, issuer, &api, true, 31),
    ];
    let host = Arc::new(tokenkeeper_bff::host::build(&configs[0]).unwrap());
    let options = tokenkeeper_proxy::server::ServerOptions {
        workers: 2,
        ..Default::default()
    };
    let _server = bound
        .serve(Arc::new(host.handler().clone()), &options)
        .unwrap();

    // Log in once; a few proxied requests, so that the per-route series exist.
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let login = browser
        .get(format!("{public}/bff/login?returnUrl=/"))
        .send()
        .await
        .unwrap();
    assert!(login.status().is_success());
    for _ in 0..10 {
        let response = browser
            .get(format!("{public}/api/x"))
            .header("x-csrf", "1")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    // The /metrics scrape, with this many sessions in the store.
    let sessions = env("TK_SESSIONS", 100_000) as usize;
    let store = host
        .handler()
        .current()
        .get("a")
        .unwrap()
        .bff()
        .sessions()
        .clone();
    let now = tokenkeeper::Timestamp::from_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    );
    for i in 0..sessions {
        let mut session = BffSession::new(
            tokenkeeper::random_token(32).unwrap(),
            format!("user-{i}"),
            format!("sid-{i}"),
        );
        session.created_at = now.as_millis();
        session.expires_at = now.as_millis() + 3_600_000;
        store.put(session).await.unwrap();
    }
    let ops_bound =
        tokenkeeper_proxy::server::Bound::bind("127.0.0.1:0".parse().unwrap(), 1).unwrap();
    let ops_url = format!("http://{}/metrics", ops_bound.local_addr());
    let ops = tokenkeeper_proxy::ops::Ops::new(host.handler().readiness());
    let _ops = ops_bound
        .serve(
            Arc::new(ops),
            &tokenkeeper_proxy::server::ServerOptions {
                workers: 1,
                ..Default::default()
            },
        )
        .unwrap();
    let scraper = reqwest::Client::new();
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..env("TK_SCRAPES", 50) {
        let started = Instant::now();
        let body = scraper
            .get(&ops_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        times.push(started.elapsed());
        bytes = body.len();
    }
    times.sort();
    println!(
        "metrics scrape with {sessions} sessions: median {:.2} ms, p90 {:.2} ms, max {:.2} ms ({} scrapes, {bytes} bytes)",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() * 9 / 10].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        times.len(),
    );

    // Reloads under load, with a session of their own (the 100,000 above filled the in-memory
    // store to its bound, and the oldest made way).
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let login = browser
        .get(format!("{public}/bff/login?returnUrl=/"))
        .send()
        .await
        .unwrap();
    assert!(login.status().is_success());
    let seconds = env("TK_SECONDS", 10);
    let concurrency = env("TK_CONCURRENCY", 32) as usize;
    let every = Duration::from_millis(env("TK_RELOAD_MS", 100));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut callers = Vec::new();
    for _ in 0..concurrency {
        let (browser, stop, ok, failed, public) = (
            browser.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
            public.clone(),
        );
        callers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let answer = browser
                    .get(format!("{public}/api/x"))
                    .header("x-csrf", "1")
                    .send()
                    .await;
                match answer {
                    Ok(response) if response.status() == 200 => {
                        let _ = response.bytes().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(response) => {
                        eprintln!("failed: {}", response.status());
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        eprintln!("failed: {error}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    let mut reloads = 0usize;
    let mut rebuilt = 0usize;
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(every).await;
        reloads += 1;
        let done = host.reload(&configs[reloads % configs.len()]).unwrap();
        rebuilt += done.changed.len();
    }
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    println!(
        "reloads under load: {reloads} reloads ({rebuilt} frontend rebuilds) in {seconds} s, {concurrency} callers: {} requests answered 200, {} failed",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
}
