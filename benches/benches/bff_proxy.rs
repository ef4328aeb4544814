//! The BFF's proxy: latency it adds at fixed loads, saturated throughput as a ratio to a plain
//! reverse proxy on the same HTTP stack (same axum server, same reqwest client, bodies streamed
//! the same way, no session or token work) and to calling the API directly, all in one run;
//! and memory per server-side session.
//!
//! Run: `cargo bench -p tokenkeeper-benches --bench bff_proxy`
//! Environment: `TK_RATES` (fixed loads, default `1000,5000`), `TK_SECONDS` (per fixed load,
//! default 5), `TK_PAIRS` (saturated rounds, default 20), `TK_SLICE_MS` (default 250),
//! `TK_CONCURRENCY` (saturated, default 32), `TK_SESSIONS` (memory figure, default 100,000),
//! `TK_PLAIN_FORWARDED=1` (the plain proxy sends `X-Forwarded-For/-Proto/-Host` too, as the BFF
//! does and as reverse proxies are usually configured to), `TK_UPSTREAM` (the BFF's route goes
//! there), `TK_SERVE=1` (keep serving, logged in, for an outside load tool: `benches/nginx.sh`).
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

mod support;

/// The allocator `tokenkeeper bff` runs with (the CLI's default feature `mimalloc`): this
/// bench stands in for it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use support::{env, median_iqr, rss_bytes};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::response::IntoResponse;
use axum::Router;
use tokenkeeper::ClientConfig;
use tokenkeeper_axum::{Oidc, OidcConfig};
use tokenkeeper_bff::{ApiRoute, Bff, BffOptions, BffSession, BffSessionStore, RouteToken};
use tokenkeeper_testing::{TestClient, TestServer};

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// The plain reverse proxy: what the BFF does to a request, minus the anti-forgery check, the
/// session and the token.
async fn plain_proxy(upstream: String, authorization: Arc<std::sync::OnceLock<String>>) -> String {
    let client = reqwest::Client::new();
    let forwarded = std::env::var_os("TK_PLAIN_FORWARDED").is_some();
    let app = Router::new().fallback(move |request: Request| {
        let (client, upstream, authorization) =
            (client.clone(), upstream.clone(), authorization.clone());
        async move {
            let (parts, _body) = request.into_parts();
            let rest = parts.uri.path().strip_prefix("/api").unwrap_or_default();
            let mut headers = parts.headers.clone();
            for name in ["host", "cookie", "connection", "x-csrf"] {
                headers.remove(name);
            }
            // `TK_PLAIN_AUTH=1`: a static header as long as the BFF's `Authorization`, to tell
            // the cost of the token's bytes from the cost of getting it.
            if let Some(value) = authorization.get() {
                headers.insert("authorization", value.parse().unwrap());
            }
            // `TK_PLAIN_FORWARDED=1`: the `X-Forwarded-For/-Proto/-Host` a reverse proxy is
            // usually configured to send (nginx: `proxy_set_header X-Forwarded-For
            // $proxy_add_x_forwarded_for;` …), as the BFF sends them (SEC-16).
            if forwarded {
                headers.insert("x-forwarded-for", "127.0.0.1".parse().unwrap());
                headers.insert("x-forwarded-proto", "http".parse().unwrap());
                headers.insert("x-forwarded-host", "127.0.0.1:8080".parse().unwrap());
            }
            // GETs without a body, as the benchmark sends (the BFF sends those without one too).
            let response = client
                .request(parts.method, format!("{upstream}/up{rest}"))
                .headers(headers)
                .send()
                .await
                .unwrap();
            let mut out = axum::response::Response::builder().status(response.status());
            for (k, v) in response.headers() {
                if k != "connection" && k != "transfer-encoding" {
                    out = out.header(k, v);
                }
            }
            out.body(axum::body::Body::from_stream(response.bytes_stream()))
                .unwrap()
        }
    });
    serve(app).await
}

/// Latencies of requests sent at a fixed rate (an open loop: each request starts on schedule,
/// whether or not the earlier ones have finished).
async fn fixed_load(
    client: &reqwest::Client,
    url: &str,
    cookie: &str,
    rate: u64,
    seconds: u64,
) -> Vec<Duration> {
    let total = rate * seconds;
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let (client, url, cookie) = (client.clone(), url.to_owned(), cookie.to_owned());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let response = client
                .get(&url)
                .header("x-csrf", "1")
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            let _ = response.bytes().await.unwrap();
            sent.elapsed()
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for task in tasks {
        latencies.push(task.await.unwrap());
    }
    latencies.sort();
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn saturated(
    client: &reqwest::Client,
    url: &str,
    cookie: &str,
    concurrency: u64,
    slice: Duration,
) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + slice;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, cookie, count) = (
            client.clone(),
            url.to_owned(),
            cookie.to_owned(),
            count.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while tokio::time::Instant::now() < deadline {
                let response = client
                    .get(&url)
                    .header("x-csrf", "1")
                    .header("cookie", &cookie)
                    .send()
                    .await
                    .unwrap();
                let _ = response.bytes().await.unwrap();
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / slice.as_secs_f64()
}

/// RSS growth per session: `n` sessions (an ID token and claims of a usual size) in the
/// in-memory session store, and the same with each session's user tokens.
async fn memory_per_session(n: usize) {
    let store = tokenkeeper_bff::InMemoryBffSessionStore::new().with_capacity(n + 1);
    let before = rss_bytes();
    for i in 0..n {
        let mut claims = serde_json::Map::new();
        for (k, v) in [
            ("iss", "https://idp.example.com".to_owned()),
            ("sub", format!("user-{i:08}")),
            ("aud", "spa".to_owned()),
            ("name", format!("User Number {i}")),
            ("email", format!("user{i}@example.com")),
            ("sid", format!("sid-{i:016x}")),
        ] {
            claims.insert(k.into(), serde_json::Value::String(v));
        }
        claims.insert("iat".into(), 1_767_000_000u64.into());
        claims.insert("exp".into(), 1_767_000_300u64.into());
        store
            .put({
                let mut session = BffSession::new(
                    format!("{i:0>43}"),
                    format!("user-{i:08}"),
                    format!("sid-{i:016x}"),
                );
                session.claims = claims;
                session.id_token = format!("eyJ{:0>797}", i);
                session.expires_at = u64::MAX;
                session
            })
            .await
            .unwrap();
    }
    let after = rss_bytes();
    println!(
        "memory per server-side session (session record with an 800-byte ID token and 8 claims, {n} sessions): {} bytes",
        (after.saturating_sub(before)) / n as u64
    );
    std::hint::black_box(&store);
}

/// Marks the start of the counted requests (callgrind `--dump-before=*measure_begin*`).
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
    // `TK_COUNT=N TK_ONLY=direct|plain|bff`: N sequential requests to one target between two
    // markers, on one thread, for callgrind (instructions per request).
    let count = std::env::var("TK_COUNT")
        .ok()
        .and_then(|c| c.parse::<u64>().ok());
    let runtime = if count.is_some() {
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
        if count.is_none() && std::env::var_os("TK_SERVE").is_none() {
            memory_per_session(env("TK_SESSIONS", 100_000) as usize).await;
        }

        // The upstream API, the plain proxy, and the BFF with a logged-in session.
        let seen = Arc::new(AtomicU64::new(0));
        let upstream = serve(Router::new().fallback({
            let seen = seen.clone();
            move |headers: axum::http::HeaderMap| async move {
                let length = headers.get("authorization").map_or(0, |v| v.len());
                seen.store(length as u64, Ordering::Relaxed);
                "ok".into_response()
            }
        }))
        .await;
        // `TK_UPSTREAM=http://…`: the BFF's route goes to that upstream instead (an nginx
        // answering `return 200`, for `benches/nginx.sh`).
        let upstream = std::env::var("TK_UPSTREAM").unwrap_or(upstream);
        let plain_authorization = Arc::new(std::sync::OnceLock::new());
        let plain = plain_proxy(upstream.clone(), plain_authorization.clone()).await;
        // As `tokenkeeper bff` serves it: the per-core server (a runtime, a listener and
        // upstream pools per worker).
        let server_options = tokenkeeper_proxy::server::ServerOptions {
            workers: env("TK_WORKERS", 2) as usize,
            ..Default::default()
        };
        let bound = tokenkeeper_proxy::server::Bound::bind(
            "127.0.0.1:0".parse().unwrap(),
            server_options.workers,
        )
        .unwrap();
        let bff_url = format!("http://{}", bound.local_addr());
        let redirect = format!("{bff_url}/bff/callback");
        let idp = TestServer::builder()
            .fixed_signing_key()
            .client(TestClient::new("spa", "secret").redirect_uri(&redirect))
            .start()
            .await;
        idp.set_login(Some("alice"));
        let mut config = OidcConfig::new(idp.issuer(), "spa", "secret", redirect);
        config.insecure_cookies = true;
        let users = tokenkeeper::user::UserTokenManager::builder(ClientConfig::from_issuer(idp.issuer(), "spa", "secret"))
            .build()
            .unwrap();
        // TK_ROUTE_TOKEN=none: the same route without session or token (what the proxy
        // itself costs); =client: a client-credentials token instead of the user's.
        let route_token = match std::env::var("TK_ROUTE_TOKEN").as_deref() {
            Ok("none") => RouteToken::None,
            Ok("client") => RouteToken::Client,
            _ => RouteToken::User,
        };
        let clients = (route_token == RouteToken::Client).then(|| {
            tokenkeeper::ClientCredentialsTokenManager::builder()
                .client("bff", ClientConfig::from_issuer(idp.issuer(), "spa", "secret"))
                .build()
                .unwrap()
        });
        let bff = Bff::with_store(
            Oidc::new(config, users).unwrap(),
            BffOptions {
                insecure_cookies: true,
                workers: server_options.workers,
                ..BffOptions::default()
            }
            .route(ApiRoute::new("/api", format!("{upstream}/up").parse().unwrap()).token(route_token)),
            Arc::new(tokenkeeper_bff::InMemoryBffSessionStore::new()),
            clients,
        )
        .unwrap();
        // TK_FRONTENDS=1: served as `tokenkeeper bff` serves a file with one frontend (through
        // the frontends' handler, which matches nothing); =2: with a second frontend, each
        // answering its own host (BF-17's matching on every request).
        let _server = match std::env::var("TK_FRONTENDS").as_deref() {
            Ok(count @ ("1" | "2")) => {
                let mut list = Vec::new();
                if count == "2" {
                    let other = Bff::new(
                        bff.oidc().clone(),
                        BffOptions {
                            insecure_cookies: true,
                            name: "other".into(),
                            cookie_name: "other".into(),
                            ..BffOptions::default()
                        },
                    )
                    .unwrap();
                    list.push(tokenkeeper_bff::Frontend::new(other, Router::new()).hosts(["other.example"]));
                    list.push(tokenkeeper_bff::Frontend::new(bff.clone(), Router::new()).hosts(["127.0.0.1"]));
                } else {
                    list.push(tokenkeeper_bff::Frontend::new(bff.clone(), Router::new()));
                }
                let handler = tokenkeeper_bff::FrontendsHandler::new(tokenkeeper_bff::Frontends::new(list).unwrap());
                bound.serve(Arc::new(handler), &server_options).unwrap()
            }
            _ => bound
                .serve(Arc::new(bff.handler(Router::new())), &server_options)
                .unwrap(),
        };
        // Log in once; keep the session cookie.
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let login = reqwest::Client::builder().cookie_provider(jar.clone()).build().unwrap();
        let page = login.get(format!("{bff_url}/bff/login?returnUrl=/")).send().await.unwrap();
        assert!(page.status().is_success());
        let cookie = {
            use reqwest::cookie::CookieStore as _;
            jar.cookies(&bff_url.parse().unwrap()).unwrap().to_str().unwrap().to_owned()
        };
        // `TK_SERVE=1`: keep the BFF serving, logged in, for an outside load tool
        // (`benches/nginx.sh` drives it and nginx with wrk); print what the tool needs.
        if std::env::var_os("TK_SERVE").is_some() {
            println!("bff {bff_url}/api/items");
            println!("cookie {cookie}");
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
            std::future::pending::<()>().await;
        }
        let client = reqwest::Client::new();
        let targets = [
            ("direct to the API", format!("{upstream}/up/items")),
            ("plain reverse proxy", format!("{plain}/api/items")),
            ("BFF (session, user token, anti-forgery)", format!("{bff_url}/api/items")),
        ];
        if let Some(count) = count {
            let only = std::env::var("TK_ONLY").unwrap_or_else(|_| "bff".into());
            let url = match only.as_str() {
                "direct" => &targets[0].1,
                "plain" => &targets[1].1,
                _ => &targets[2].1,
            };
            let send = || async {
                let response = client
                    .get(url)
                    .header("x-csrf", "1")
                    .header("cookie", &cookie)
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
                let _ = response.bytes().await.unwrap();
            };
            for _ in 0..200 {
                send().await;
            }
            std::hint::black_box(measure_begin());
            for _ in 0..count {
                send().await;
            }
            std::hint::black_box(measure_end());
            println!("{only}: {count} requests");
            return;
        }
        for (_, url) in &targets {
            saturated(&client, url, &cookie, 8, Duration::from_millis(300)).await;
        }
        let token_header = seen.load(Ordering::Relaxed) as usize;
        if std::env::var_os("TK_PLAIN_AUTH").is_some() {
            let value = format!("Bearer {}", "x".repeat(token_header.saturating_sub(7)));
            let _ = plain_authorization.set(value);
            println!("plain proxy sends a static {token_header}-byte Authorization header");
        }
        // `TK_SATURATE=direct|plain|bff`: one target only, saturated for `TK_SECONDS`, under
        // the same two workers (for `perf record` / `strace -c -f` of one target).
        if let Ok(only) = std::env::var("TK_SATURATE") {
            let index = match only.as_str() {
                "direct" => 0,
                "plain" => 1,
                _ => 2,
            };
            let seconds = Duration::from_secs(env("TK_SECONDS", 5));
            let concurrency = env("TK_CONCURRENCY", 32);
            let rate = saturated(&client, &targets[index].1, &cookie, concurrency, seconds).await;
            println!("{only}: {rate:.0} req/s for {} s, {concurrency} connections", seconds.as_secs());
            return;
        }

        // Fixed loads: latency percentiles of each target at the same rate.
        let rates: Vec<u64> = std::env::var("TK_RATES")
            .unwrap_or_else(|_| "1000,5000".into())
            .split(',')
            .filter_map(|r| r.trim().parse().ok())
            .collect();
        let seconds = env("TK_SECONDS", 5);
        for rate in rates {
            println!("fixed load {rate} requests/s for {seconds} s:");
            println!();
            println!("| target | p50 | p99 |");
            println!("|---|---|---|");
            let mut results = Vec::new();
            for (name, url) in &targets {
                let latencies = fixed_load(&client, url, &cookie, rate, seconds).await;
                let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
                println!("| {name} | {:.3} ms | {:.3} ms |", p50.as_secs_f64() * 1e3, p99.as_secs_f64() * 1e3);
                results.push((p50, p99));
            }
            let added = |i: usize| {
                (
                    results[i].0.as_secs_f64() * 1e3 - results[0].0.as_secs_f64() * 1e3,
                    results[i].1.as_secs_f64() * 1e3 - results[0].1.as_secs_f64() * 1e3,
                )
            };
            let (bff50, bff99) = added(2);
            let (plain50, plain99) = added(1);
            println!();
            println!("added by the BFF over direct: p50 {bff50:+.3} ms, p99 {bff99:+.3} ms (plain proxy: p50 {plain50:+.3} ms, p99 {plain99:+.3} ms)");
            println!();
        }

        // Saturated throughput, alternating slices, ratios per round.
        let pairs = env("TK_PAIRS", 20);
        let slice = Duration::from_millis(env("TK_SLICE_MS", 250));
        let concurrency = env("TK_CONCURRENCY", 32);
        let mut throughput = vec![Vec::new(); targets.len()];
        let mut to_plain = Vec::new();
        let mut to_direct = Vec::new();
        for round in 0..pairs {
            let order: Vec<usize> = if round % 2 == 0 { vec![0, 1, 2] } else { vec![2, 1, 0] };
            let mut results = [0.0; 3];
            for i in order {
                results[i] = saturated(&client, &targets[i].1, &cookie, concurrency, slice).await;
            }
            for (i, r) in results.iter().enumerate() {
                throughput[i].push(*r);
            }
            to_plain.push(results[2] / results[1]);
            to_direct.push(results[2] / results[0]);
        }
        println!("saturated, {concurrency} connections, {pairs} rounds of {} ms slices:", slice.as_millis());
        println!();
        println!("| target | median req/s |");
        println!("|---|---|");
        for (i, (name, _)) in targets.iter().enumerate() {
            println!("| {name} | {:.0} |", median_iqr(&throughput[i]).0);
        }
        let (r, q1, q3) = median_iqr(&to_plain);
        println!();
        println!("BFF / plain reverse proxy: {r:.3} (IQR {q1:.3} – {q3:.3})");
        let (r, q1, q3) = median_iqr(&to_direct);
        println!("BFF / direct: {r:.3} (IQR {q1:.3} – {q3:.3})");
        println!("token requests made: {}", idp.total_token_requests());
    });
}
