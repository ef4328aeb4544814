//! `get_token` on a cache hit.
//!
//! Run: `cargo bench -p tokenkeeper-benches --bench cache_hit`
//!
//! - `hit_1_key`: one cached token;
//! - `hit_100k_keys`: the same lookup with 100,000 other tokens cached;
//! - `hit_hot_key` with 1 and 2 threads: both threads hit one key at once;
//! - `hit_with_params`: a hit for per-request parameters (the key is built per call).
#![allow(missing_docs, clippy::unwrap_used)]

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, Waker};

use divan::Bencher;
use tokenkeeper::{
    AccessToken, CachedToken, ClientConfig, ClientCredentialsTokenManager, Clock,
    TokenRequestParams, TokenType, TokioClock,
};
use tokenkeeper_testing::{TestClient, TestServer};

fn main() {
    divan::main();
}

struct Fixture {
    // Keeps the server (and the in-process transport) alive.
    _runtime: tokio::runtime::Runtime,
    tokens: ClientCredentialsTokenManager,
    _server: TestServer,
}

fn fixture(extra_keys: usize) -> Fixture {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (tokens, server) = runtime.block_on(async {
        let server = TestServer::builder()
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
        (tokens, server)
    });
    Fixture {
        _runtime: runtime,
        tokens,
        _server: server,
    }
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
