//! User tokens: the `get_access_token` hit path — with the in-memory store, the Redis store on
//! one node and on a Redis Cluster, and the PostgreSQL store (the shared stores served from
//! their in-memory tiers), in the same run — and memory per stored session.
//!
//! Run: `cargo bench -p tokenkeeper-benches --bench user_tokens`
//! (`TK_SESSIONS` sets the number of sessions of the memory figure; default 1,000,000;
//! `REDIS_URL` the Redis of the Redis-store figure, default `redis://127.0.0.1:6379`; the
//! cluster (3 masters, 3 replicas) and PostgreSQL are started by the bench, from Debian's
//! `redis-server` and `postgresql`).
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

mod support;
use support::rss_bytes;

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, Waker};

use divan::Bencher;
use tokenkeeper::user::{
    InMemoryUserTokenStore, SessionKey, UserTokenManager, UserTokenParams, UserTokens,
};
use tokenkeeper::{AccessToken, CachedToken, ClientConfig, Clock, TokenType, TokioClock};

fn main() {
    memory_per_session();
    divan::main();
}

fn ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a hit must not wait"),
    }
}

/// A JWT-sized access token (~800 bytes) with a scope, and a refresh token (43 bytes), distinct
/// per session.
fn session_tokens(i: usize, clock: &TokioClock) -> UserTokens {
    let now = clock.now();
    let access = format!("eyJ{:0>797}", i);
    let mut tokens = UserTokens {
        refresh_token: Some(format!("rt-{:0>40}", i).into()),
        ..UserTokens::default()
    };
    tokens.access_tokens.insert(
        "",
        Arc::new(
            CachedToken::new(
                AccessToken::new(access),
                TokenType::Bearer,
                Some(tokenkeeper::Scope::parse("openid profile email api:read")),
                now,
                now.saturating_add(std::time::Duration::from_secs(3000)),
                now.saturating_add(std::time::Duration::from_secs(3570)),
            )
            .unwrap(),
        ),
    );
    tokens
}

fn memory_per_session() {
    let n: usize = std::env::var("TK_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let clock = TokioClock::new();
    let store = InMemoryUserTokenStore::new().with_capacity(n);
    // Build the values first, so the difference below is the store's own cost plus the values.
    let before = rss_bytes();
    for i in 0..n {
        let key = SessionKey::new(format!("sub=user-{i}&sid=s"));
        store.store_sync(&key, Arc::new(session_tokens(i, &clock)), None);
    }
    let after = rss_bytes();
    let token_bytes = (800 + 43 + "api:read email openid profile".len()) as f64;
    let key_bytes = format!("sub=user-{}&sid=s", n / 2).len() as f64;
    let per_session = (after - before) as f64 / n as f64;
    println!(
        "memory: {n} sessions → {:.0} MiB RSS, {per_session:.0} bytes per session; \
         token and scope bytes {token_bytes:.0} + key bytes {key_bytes:.0}; overhead {:.0} bytes per session",
        (after - before) as f64 / 1048576.0,
        per_session - token_bytes - key_bytes
    );
    assert_eq!(store.len(), n);
}

struct Fixture {
    users: UserTokenManager,
    session: SessionKey,
    /// Keeps the shared store's connection and listener alive.
    _runtime: Option<tokio::runtime::Runtime>,
    /// The servers the bench started (a cluster, a database), stopped when dropped.
    _servers: Option<Box<dyn std::any::Any + Send + Sync>>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn fixture(store: Option<Arc<dyn tokenkeeper::user::UserTokenStore>>) -> Fixture {
    fixture_on(runtime(), store, None)
}

fn fixture_on(
    runtime: tokio::runtime::Runtime,
    store: Option<Arc<dyn tokenkeeper::user::UserTokenStore>>,
    servers: Option<Box<dyn std::any::Any + Send + Sync>>,
) -> Fixture {
    let (users, session) = runtime.block_on(async {
        let builder = UserTokenManager::builder(ClientConfig::new(
            "http://127.0.0.1:9/token",
            "web",
            "secret",
        ));
        let builder = match store {
            Some(store) => builder.store(store),
            None => builder,
        };
        let users = builder.build().unwrap();
        let session = SessionKey::from_sub_sid("alice", "s-1");
        users
            .replace(&session, session_tokens(1, &TokioClock::new()))
            .await
            .unwrap();
        // The first read fills the Redis store's in-memory tier.
        users
            .get_access_token(&session, &UserTokenParams::default())
            .await
            .unwrap();
        (users, session)
    });
    Fixture {
        users,
        session,
        _runtime: Some(runtime),
        _servers: servers,
    }
}

static IN_MEMORY: LazyLock<Fixture> = LazyLock::new(|| fixture(None));

static REDIS: LazyLock<Fixture> = LazyLock::new(|| {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis = tokenkeeper_redis::RedisTokenCache::new(
        &url,
        tokenkeeper_redis::RedisOptions {
            prefix: format!("tk-bench-{}", std::process::id()),
            ..tokenkeeper_redis::RedisOptions::plaintext()
        },
    )
    .unwrap();
    fixture(Some(Arc::new(tokenkeeper_redis::RedisUserTokenStore::new(
        &redis,
    ))))
});

static REDIS_CLUSTER: LazyLock<Fixture> = LazyLock::new(|| {
    let runtime = runtime();
    let cluster = runtime.block_on(tokenkeeper_testing::redis_servers::OwnCluster::start());
    let redis = tokenkeeper_redis::RedisTokenCache::connect(
        tokenkeeper_redis::RedisTopology::cluster(cluster.urls()),
        tokenkeeper_redis::RedisOptions {
            prefix: format!("tk-bench-{}", std::process::id()),
            ..tokenkeeper_redis::RedisOptions::plaintext()
        },
    )
    .unwrap();
    let store = Arc::new(tokenkeeper_redis::RedisUserTokenStore::new(&redis));
    fixture_on(runtime, Some(store), Some(Box::new(cluster)))
});

static POSTGRES: LazyLock<Fixture> = LazyLock::new(|| {
    let runtime = runtime();
    let postgres = runtime.block_on(tokenkeeper_testing::postgres_server::OwnPostgres::start());
    let db = tokenkeeper_postgres::PostgresDatabase::new(
        &postgres.url(),
        tokenkeeper_postgres::PostgresOptions::plaintext(),
    )
    .unwrap();
    let store = Arc::new(tokenkeeper_postgres::PostgresUserTokenStore::new(&db));
    fixture_on(runtime, Some(store), Some(Box::new(postgres)))
});

/// A hit with the in-memory store.
#[divan::bench(sample_count = 200, sample_size = 2000)]
fn user_hit(bencher: Bencher<'_, '_>) {
    let f = &*IN_MEMORY;
    let params = UserTokenParams::default();
    bencher.bench_local(|| ready(f.users.get_access_token(&f.session, &params)).unwrap());
}

/// A hit with the Redis store: served from its in-memory tier (UT-12).
#[divan::bench(sample_count = 200, sample_size = 2000)]
fn user_hit_redis_store(bencher: Bencher<'_, '_>) {
    let f = &*REDIS;
    let params = UserTokenParams::default();
    bencher.bench_local(|| ready(f.users.get_access_token(&f.session, &params)).unwrap());
}

/// A hit with the Redis store on a Redis Cluster: served from its in-memory tier (FL-01).
#[divan::bench(sample_count = 200, sample_size = 2000)]
fn user_hit_redis_cluster_store(bencher: Bencher<'_, '_>) {
    let f = &*REDIS_CLUSTER;
    let params = UserTokenParams::default();
    bencher.bench_local(|| ready(f.users.get_access_token(&f.session, &params)).unwrap());
}

/// A hit with the PostgreSQL store: served from its in-memory tier, kept fresh by
/// LISTEN/NOTIFY (FL-05).
#[divan::bench(sample_count = 200, sample_size = 2000)]
fn user_hit_postgres_store(bencher: Bencher<'_, '_>) {
    let f = &*POSTGRES;
    let params = UserTokenParams::default();
    bencher.bench_local(|| ready(f.users.get_access_token(&f.session, &params)).unwrap());
}
