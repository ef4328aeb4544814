//! `get_token` on a cache hit.
//!
//! Run: `cargo bench -p tokenkeeper-benches --bench cache_hit`
//!
//! - `hit_1_key`: one cached token;
//! - `hit_100k_keys`: the same lookup with 100,000 other tokens cached;
//! - `hit_hot_key` with 1 and 2 threads: both threads hit one key at once;
//! - `hit_with_params`: a hit for per-request parameters (the key is built per call);
//! - `hit_exchanged`: a hit for an exchanged token (RFC 8693), as an API calling downstream on
//!   each request's behalf does it: the exchange parameters built from the subject token and
//!   the key (with the subject's keyed hash) computed per call;
//! - first, printed: memory per cached token (`TK_TOKENS`, default 1,000,000).
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

mod support;
use support::rss_bytes;

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, Waker};

use divan::Bencher;
use tokenkeeper::{
    AccessToken, CachedToken, ClientConfig, ClientCredentialsTokenManager, Clock, TokenExchange,
    TokenRequestParams, TokenType, TokioClock,
};
use tokenkeeper_testing::{TestClient, TestServer};

fn main() {
    memory_per_token();
    divan::main();
}

/// Memory per cached token: `TK_TOKENS` (default 1,000,000) JWT-sized tokens (800 bytes), each
/// under its own key, in an `InMemoryTokenCache`; RSS growth per token, less the token and key
/// bytes.
fn memory_per_token() {
    let n: usize = std::env::var("TK_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let clock = TokioClock::new();
    let now = clock.now();
    let cache = tokenkeeper::InMemoryTokenCache::new();
    let key = |i: usize| format!("cc&client=api&scope=&x=tenant&v={i:0>7}");
    let before = rss_bytes();
    for i in 0..n {
        let token = CachedToken::new(
            AccessToken::new(format!("eyJ{i:0>797}")),
            TokenType::Bearer,
            None,
            now,
            now.saturating_add(std::time::Duration::from_secs(3000)),
            now.saturating_add(std::time::Duration::from_secs(3570)),
        )
        .unwrap();
        cache.put_sync(
            &tokenkeeper::CacheKey::from_canonical(key(i)),
            Arc::new(token),
        );
    }
    let after = rss_bytes();
    let per_token = (after - before) as f64 / n as f64;
    let payload = (800 + key(0).len()) as f64;
    println!(
        "memory: {n} cached tokens → {per_token:.0} bytes per token; token bytes 800 + key bytes {}; \
         overhead {:.0} bytes per token",
        key(0).len(),
        per_token - payload
    );
    assert_eq!(cache.len(), n);
}

struct Fixture {
    // Keeps the server (and the in-process transport) alive.
    _runtime: tokio::runtime::Runtime,
    tokens: ClientCredentialsTokenManager,
    /// A subject token (a 400-byte-odd JWT the server issued) whose exchange is cached.
    subject: String,
    _server: TestServer,
}

fn fixture(extra_keys: usize) -> Fixture {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (tokens, subject, server) = runtime.block_on(async {
        let server = TestServer::builder()
            .fixed_signing_key()
            .client(TestClient::new("bench", "secret"))
            .start()
            .await;
        let tokens = ClientCredentialsTokenManager::builder()
            .client(
                "api",
                ClientConfig::new(server.token_endpoint(), "bench", "secret"),
            )
            .transport(server.transport())
            .build()
            .unwrap();
        let token = tokens
            .get_token("api", &TokenRequestParams::default())
            .await
            .unwrap();
        let clock = TokioClock::new();
        for i in 0..extra_keys {
            let params = TokenRequestParams::new().extra("tenant", i.to_string());
            let key = tokens.cache_key("api", &params).unwrap();
            let now = clock.now();
            let cached = CachedToken::new(
                AccessToken::new(format!("{}-{i}", token.access_token().secret())),
                TokenType::Bearer,
                None,
                now,
                token.refresh_at(),
                token.expires_at(),
            )
            .unwrap();
            tokens.cache().put(&key, Arc::new(cached)).await.unwrap();
        }
        let subject = token.access_token().secret().to_owned();
        tokens.get_token("api", &exchange(&subject)).await.unwrap();
        (tokens, subject, server)
    });
    Fixture {
        _runtime: runtime,
        tokens,
        subject,
        _server: server,
    }
}

/// The parameters of an exchange of `subject` for the billing API.
fn exchange(subject: &str) -> TokenRequestParams {
    TokenRequestParams::new().exchange(TokenExchange::access_token(subject).audience("billing"))
}

static ONE: LazyLock<Fixture> = LazyLock::new(|| fixture(0));
static MANY: LazyLock<Fixture> = LazyLock::new(|| fixture(100_000));

/// Polls a future that is ready at once (a cache hit never waits).
#[inline]
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a cache hit must not wait"),
    }
}

// No runtime context is entered: a hit needs none (only a refresh-ahead would spawn a task,
// and the cached tokens live for an hour).
fn bench_hit(bencher: Bencher<'_, '_>, fixture: &'static Fixture) {
    let params = TokenRequestParams::default();
    bencher
        .bench_local(|| ready(fixture.tokens.get_token(divan::black_box("api"), &params)).unwrap());
}

#[divan::bench(sample_count = 200, sample_size = 2000)]
fn hit_1_key(bencher: Bencher<'_, '_>) {
    bench_hit(bencher, &ONE);
}

#[divan::bench(sample_count = 200, sample_size = 2000)]
fn hit_100k_keys(bencher: Bencher<'_, '_>) {
    assert!(MANY
        .tokens
        .cache_key("api", &TokenRequestParams::default())
        .is_ok());
    bench_hit(bencher, &MANY);
}

#[divan::bench(threads = [1, 2], sample_count = 200, sample_size = 2000)]
fn hit_hot_key(bencher: Bencher<'_, '_>) {
    let fixture: &'static Fixture = &ONE;
    let params = TokenRequestParams::default();
    bencher.bench(|| ready(fixture.tokens.get_token(divan::black_box("api"), &params)).unwrap());
}

#[divan::bench(sample_count = 200, sample_size = 2000)]
fn hit_with_params(bencher: Bencher<'_, '_>) {
    let fixture: &'static Fixture = &MANY;
    let params = TokenRequestParams::new().extra("tenant", "42");
    bencher.bench_local(|| {
        let fut = fixture.tokens.get_token(divan::black_box("api"), &params);
        let mut fut = std::pin::pin!(fut);
        loop {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                break out.unwrap();
            }
        }
    });
}

#[divan::bench(sample_count = 200, sample_size = 2000)]
fn hit_exchanged(bencher: Bencher<'_, '_>) {
    let fixture: &'static Fixture = &MANY;
    let subject = fixture.subject.as_str();
    bencher.bench_local(|| {
        let params = exchange(divan::black_box(subject));
        ready(fixture.tokens.get_token(divan::black_box("api"), &params)).unwrap()
    });
}
