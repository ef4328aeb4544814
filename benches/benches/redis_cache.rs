//! The Redis backends: an L1 hit (two-tier cache) against the in-memory cache, an L2 read from
//! Redis, and a cold fill through the lease.
//!
//! Run: `cargo bench -p tokenkeeper-benches --bench redis_cache` (Redis at `REDIS_URL`, default
//! `redis://127.0.0.1:6379`).
#![allow(missing_docs, clippy::unwrap_used)]

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, Waker};

use divan::Bencher;
use tokenkeeper::{
    ClientConfig, ClientCredentialsTokenManager, InMemoryTokenCache, TokenCache, TokenRequestParams,
};
use tokenkeeper_redis::{Encryption, RedisLease, RedisOptions, RedisTokenCache, TwoTierTokenCache};
use tokenkeeper_testing::{TestClient, TestServer};

fn main() {
    divan::main();
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    in_memory: ClientCredentialsTokenManager,
    two_tier: ClientCredentialsTokenManager,
    l2: RedisTokenCache,
    l2_sealed: RedisTokenCache,
    _server: TestServer,
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (in_memory, two_tier, l2, l2_sealed, server) = runtime.block_on(async {
        let server = TestServer::builder()
            .fixed_signing_key()
            .client(TestClient::new("bench", "secret"))
            .start()
            .await;
        let prefix = format!("tkbench-{:x}", fastrand_u64());
        let l2 = RedisTokenCache::new(
            &redis_url(),
            RedisOptions {
                prefix: prefix.clone(),
                ..RedisOptions::plaintext()
            },
        )
        .unwrap();
        let l2_sealed = RedisTokenCache::new(
            &redis_url(),
            RedisOptions {
                prefix: format!("{prefix}-sealed"),
                encryption: Some(Encryption::new("k1", &[7; 32]).unwrap()),
                ..RedisOptions::default()
            },
        )
        .unwrap();
        let build = |cache: Arc<dyn TokenCache>, lease: Option<RedisLease>| {
            let mut b = ClientCredentialsTokenManager::builder()
                .client(
                    "api",
                    ClientConfig::new(server.token_endpoint(), "bench", "secret"),
                )
                .transport(server.transport())
                .cache(cache);
            if let Some(lease) = lease {
                b = b.lease(Arc::new(lease));
            }
            b.build().unwrap()
        };
        let in_memory = build(Arc::new(InMemoryTokenCache::new()), None);
        let two_tier = build(
            Arc::new(TwoTierTokenCache::new(l2.clone())),
            Some(RedisLease::new(&l2)),
        );
        let params = TokenRequestParams::default();
        let token = two_tier.get_token("api", &params).await.unwrap();
        in_memory.get_token("api", &params).await.unwrap();
        let key = two_tier.cache_key("api", &params).unwrap();
        l2_sealed.put(&key, token).await.unwrap();
        (in_memory, two_tier, l2, l2_sealed, server)
    });
    Fixture {
        runtime,
        in_memory,
        two_tier,
        l2,
        l2_sealed,
        _server: server,
    }
});

fn fastrand_u64() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

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

#[divan::bench(sample_count = 200, sample_size = 2000)]
fn hit_in_memory(bencher: Bencher<'_, '_>) {
    let f = &*FIXTURE;
    let params = TokenRequestParams::default();
    bencher.bench_local(|| ready(f.in_memory.get_token(divan::black_box("api"), &params)).unwrap());
}

#[divan::bench(sample_count = 200, sample_size = 2000)]
fn hit_two_tier_l1(bencher: Bencher<'_, '_>) {
    let f = &*FIXTURE;
    let params = TokenRequestParams::default();
    bencher.bench_local(|| ready(f.two_tier.get_token(divan::black_box("api"), &params)).unwrap());
}

#[divan::bench(sample_count = 100, sample_size = 20)]
fn l2_read(bencher: Bencher<'_, '_>) {
    let f = &*FIXTURE;
    let key = f
        .two_tier
        .cache_key("api", &TokenRequestParams::default())
        .unwrap();
    bencher.bench_local(|| f.runtime.block_on(f.l2.get(&key)).unwrap().unwrap());
}

#[divan::bench(sample_count = 100, sample_size = 20)]
fn l2_read_encrypted(bencher: Bencher<'_, '_>) {
    let f = &*FIXTURE;
    let key = f
        .two_tier
        .cache_key("api", &TokenRequestParams::default())
        .unwrap();
    bencher.bench_local(|| f.runtime.block_on(f.l2_sealed.get(&key)).unwrap().unwrap());
}

/// Invalidate, then `get_token`: lease taken, cache re-read, token fetched (in-process test
/// server, ES256 signing included), stored in both tiers, lease released.
#[divan::bench(sample_count = 50, sample_size = 10)]
fn cold_fill_with_lease(bencher: Bencher<'_, '_>) {
    let f = &*FIXTURE;
    let params = TokenRequestParams::default();
    bencher.bench_local(|| {
        f.runtime.block_on(async {
            let token = f.two_tier.get_token("api", &params).await.unwrap();
            f.two_tier.invalidate("api", &params, &token).await.unwrap();
            f.two_tier.get_token("api", &params).await.unwrap()
        })
    });
}
