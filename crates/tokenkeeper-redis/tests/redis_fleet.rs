//! Against real Redis (`REDIS_URL`, default `redis://127.0.0.1:6379`): several instances, an
//! outage, encryption.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokenkeeper::{
    ClientConfig, ClientCredentialsTokenManager, LifetimePolicy, TokenCache, TokenRequestParams,
};
use tokenkeeper_redis::{Encryption, RedisLease, RedisOptions, RedisTokenCache, TwoTierTokenCache};
use tokenkeeper_testing::{TestClient, TestServer};

mod common;
use common::OwnRedis;

const CC: &str = "client_credentials";

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn options() -> RedisOptions {
    RedisOptions {
        prefix: format!("tktest-{:x}", fastrand::u64(..)),
        ..RedisOptions::plaintext()
    }
}

async fn token_server() -> Arc<TestServer> {
    Arc::new(
        TestServer::builder()
            .client(TestClient::new("worker", "secret"))
            .start()
            .await,
    )
}

fn manager(
    server: &TestServer,
    cache: Arc<dyn TokenCache>,
    lease: Option<RedisLease>,
) -> ClientCredentialsTokenManager {
    let mut builder = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::new(server.token_endpoint(), "worker", "secret"),
        )
        .cache(cache);
    if let Some(lease) = lease {
        builder = builder.lease(Arc::new(lease));
    }
    builder.build().unwrap()
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs_four_instances_with_500_callers_each_make_one_token_request() {
    let server = token_server().await;
    server.set_latency(Duration::from_millis(150));
    let options = options();
    let mut managers = Vec::new();
    for _ in 0..4 {
        // Each instance: its own connection, its own L1, its own flights.
        let redis = RedisTokenCache::new(
            &redis_url(),
            RedisOptions {
                prefix: options.prefix.clone(),
                ..RedisOptions::plaintext()
            },
        )
        .unwrap();
        let cache = Arc::new(TwoTierTokenCache::new(redis.clone()));
        managers.push(manager(&server, cache, Some(RedisLease::new(&redis))));
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(2000));
    let mut tasks = Vec::new();
    for tokens in &managers {
        for _ in 0..500 {
            let tokens = tokens.clone();
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                tokens
                    .get_token("api", &TokenRequestParams::default())
                    .await
            }));
        }
    }
    let mut values = HashSet::new();
    for task in tasks {
        values.insert(
            task.await
                .unwrap()
                .unwrap()
                .access_token()
                .secret()
                .to_owned(),
        );
    }
    assert_eq!(
        server.token_requests(CC),
        1,
        "one token request across four instances"
    );
    assert_eq!(values.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs_two_tier_broadcasts_invalidations_to_other_instances() {
    let server = token_server().await;
    let options = options();
    let a = TwoTierTokenCache::new(
        RedisTokenCache::new(
            &redis_url(),
            RedisOptions {
                prefix: options.prefix.clone(),
                ..RedisOptions::plaintext()
            },
        )
        .unwrap(),
    );
    let b = TwoTierTokenCache::new(
        RedisTokenCache::new(
            &redis_url(),
            RedisOptions {
                prefix: options.prefix.clone(),
                ..RedisOptions::plaintext()
            },
        )
        .unwrap(),
    );
    let ma = manager(&server, Arc::new(a.clone()), None);
    let mb = manager(&server, Arc::new(b.clone()), None);
    let key = ma.cache_key("api", &TokenRequestParams::default()).unwrap();
    // Let both subscribers connect (a connect clears L1, so fill after that).
    for cache in [&a, &b] {
        cache.start();
        for _ in 0..500 {
            if cache.subscriptions() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(cache.subscriptions(), 1, "subscribed");
    }
    let token = ma
        .get_token("api", &TokenRequestParams::default())
        .await
        .unwrap();
    let from_b = mb
        .get_token("api", &TokenRequestParams::default())
        .await
        .unwrap();
    assert!(from_b.same_token(&token), "B read A's token from Redis");
    assert_eq!(server.token_requests(CC), 1);
    assert!(b.l1().get_sync(&key).is_some());

    assert!(ma
        .invalidate("api", &TokenRequestParams::default(), &token)
        .await
        .unwrap());
    let mut dropped = false;
    for _ in 0..200 {
        if b.l1().get_sync(&key).is_none() {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(dropped, "B dropped its L1 copy on A's broadcast");
    let fresh = mb
        .get_token("api", &TokenRequestParams::default())
        .await
        .unwrap();
    assert!(!fresh.same_token(&token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs_encryption_round_trips_and_tampered_entries_are_misses() {
    let server = token_server().await;
    let options = options();
    let prefix = options.prefix.clone();
    let sealed = |enc: Encryption| {
        RedisTokenCache::new(
            &redis_url(),
            RedisOptions {
                prefix: prefix.clone(),
                encryption: Some(enc),
                ..RedisOptions::default()
            },
        )
        .unwrap()
    };
    let cache = sealed(Encryption::new("k1", &[1; 32]).unwrap());
    let tokens = manager(&server, Arc::new(cache.clone()), None);
    let token = tokens
        .get_token("api", &TokenRequestParams::default())
        .await
        .unwrap();
    let key = tokens
        .cache_key("api", &TokenRequestParams::default())
        .unwrap();
    let redis_key = cache.redis_key(&key);

    let mut conn = raw(&redis_url()).await;
    let stored: Vec<u8> = redis::cmd("HGET")
        .arg(&redis_key)
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap();
    let secret = token.access_token().secret().as_bytes();
    assert!(
        !stored.windows(secret.len()).any(|w| w == secret),
        "no token in the clear"
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&redis_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0, "the entry expires with the token");

    // Another instance with the same key reads it; after rotation the old key still opens it.
    let other = manager(
        &server,
        Arc::new(sealed(Encryption::new("k1", &[1; 32]).unwrap())),
        None,
    );
    assert!(other
        .get_token("api", &TokenRequestParams::default())
        .await
        .unwrap()
        .same_token(&token));
    let rotated = sealed(
        Encryption::new("k2", &[2; 32])
            .unwrap()
            .accept("k1", &[1; 32])
            .unwrap(),
    );
    assert!(rotated.get(&key).await.unwrap().unwrap().same_token(&token));
    assert_eq!(server.token_requests(CC), 1);

    // Tamper with the entry: a miss, and the entry is deleted.
    let mut tampered = stored.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let _: i64 = redis::cmd("HSET")
        .arg(&redis_key)
        .arg("v")
        .arg(tampered)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(cache.get(&key).await.unwrap().is_none());
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&redis_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0, "a tampered entry is deleted");

    // An entry of another format version is a miss, not an error.
    let _: i64 = redis::cmd("HSET")
        .arg(&redis_key)
        .arg("v")
        .arg("tk9:{}")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(cache.get(&key).await.unwrap().is_none());
}

/// Runs `workers` loops of `get_token` for `duration`; returns (calls, failures).
async fn load(tokens: &ClientCredentialsTokenManager, duration: Duration) -> (u64, u64) {
    let calls = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (tokens, calls, failures) = (tokens.clone(), calls.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            while tokio::time::Instant::now() < deadline {
                calls.fetch_add(1, Ordering::Relaxed);
                if tokens
                    .get_token("api", &TokenRequestParams::default())
                    .await
                    .is_err()
                {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (
        calls.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs_01_redis_outage_mid_run_loses_no_request_and_recovers() {
    let mut redis = OwnRedis::start().await;
    let server = token_server().await;
    server.set_expires_in(Some(1)); // a new token every ~0.5 s: fills happen during the outage
    let l2 = RedisTokenCache::new(
        &redis.url(),
        RedisOptions {
            timeout: Duration::from_millis(100),
            retry_pause: Duration::from_millis(200),
            ..options()
        },
    )
    .unwrap();
    let cache = TwoTierTokenCache::new(l2.clone());
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::new(server.token_endpoint(), "worker", "secret"),
        )
        .cache(Arc::new(cache.clone()))
        .lease(Arc::new(RedisLease::new(&l2)))
        .lifetime_policy(LifetimePolicy {
            skew: Duration::from_millis(100),
            ..LifetimePolicy::default()
        })
        .build()
        .unwrap();
    let key = tokens
        .cache_key("api", &TokenRequestParams::default())
        .unwrap();

    let (calls_before, failed_before) = load(&tokens, Duration::from_millis(800)).await;
    assert!(!l2.is_down());

    // Slow Redis: the server stalls for a second; calls time out, requests carry on.
    let url = redis.url();
    let stall = tokio::spawn(async move {
        let mut conn = raw(&url).await;
        let r: redis::RedisResult<String> = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg("1")
            .query_async(&mut conn)
            .await;
        // The client may give up before the server wakes up; a refusal would be a test bug.
        if let Err(e) = &r {
            assert!(e.is_timeout(), "DEBUG SLEEP: {e}");
        }
    });
    let (calls_slow, failed_slow) = load(&tokens, Duration::from_millis(1200)).await;
    stall.await.unwrap();
    assert!(calls_slow > 0);
    assert_eq!(failed_slow, 0, "a slow Redis fails no request");
    assert_eq!(l2.outages(), 1, "the stall counted as one outage");
    // Let the cache see Redis again before the next outage.
    for _ in 0..40 {
        load(&tokens, Duration::from_millis(100)).await;
        if !l2.is_down() {
            break;
        }
    }
    assert!(!l2.is_down());

    redis.kill();
    let requests_before_outage = server.token_requests(CC);
    let (calls_during, failed_during) = load(&tokens, Duration::from_millis(1500)).await;
    assert!(
        server.token_requests(CC) > requests_before_outage,
        "tokens were fetched during the outage"
    );
    assert!(l2.is_down());
    redis.restart().await;

    // Redis is back: after the retry pause the shared cache is written again.
    let mut conn = raw(&redis.url()).await;
    let mut l2_in_use = false;
    let mut calls_after = 0;
    let mut failed_after = 0;
    for _ in 0..40 {
        let (c, f) = load(&tokens, Duration::from_millis(250)).await;
        calls_after += c;
        failed_after += f;
        let exists: i64 = redis::cmd("EXISTS")
            .arg(l2.redis_key(&key))
            .query_async(&mut conn)
            .await
            .unwrap();
        if exists == 1 && !l2.is_down() {
            l2_in_use = true;
            break;
        }
    }
    assert!(calls_before > 0 && calls_during > 0 && calls_after > 0);
    assert_eq!(
        failed_before + failed_during + failed_after,
        0,
        "no request failed"
    );
    assert!(
        l2_in_use,
        "L2 is written again after the restart, without a restart of ours"
    );
    assert_eq!(
        l2.outages(),
        2,
        "the stall and the outage, each counted (and logged) once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs_lease_is_exclusive_renewed_and_released_only_by_its_owner() {
    use tokenkeeper::{CacheKey, Lease};
    let cache = RedisTokenCache::new(&redis_url(), options()).unwrap();
    let lease = RedisLease::new(&cache);
    let key = CacheKey::from_canonical("cc&client=lease-test");
    let lease_key = cache.redis_key(&key).replace(":tok", ":lease");
    let mut conn = raw(&redis_url()).await;

    let ttl = Duration::from_millis(300);
    let held = lease
        .try_acquire(&key, ttl)
        .await
        .unwrap()
        .expect("free lease");
    assert!(
        lease.try_acquire(&key, ttl).await.unwrap().is_none(),
        "exclusive"
    );

    // Renewal: stretch the TTL by hand; the holder's renewal brings it back to `ttl`.
    let _: i64 = redis::cmd("PEXPIRE")
        .arg(&lease_key)
        .arg(600_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut renewed = false;
    for _ in 0..150 {
        let pttl: i64 = redis::cmd("PTTL")
            .arg(&lease_key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if (0..=300).contains(&pttl) {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(renewed, "the holder renews its lease while it runs");

    held.release().await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&lease_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0, "released");

    // A holder whose lease expired and was taken over does not release the new owner's lease.
    let stale = lease
        .try_acquire(&key, Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    let _: String = redis::cmd("SET")
        .arg(&lease_key)
        .arg("someone-else")
        .query_async(&mut conn)
        .await
        .unwrap();
    stale.release().await;
    let owner: Option<String> = redis::cmd("GET")
        .arg(&lease_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(owner.as_deref(), Some("someone-else"));
    let _: i64 = redis::cmd("DEL")
        .arg(&lease_key)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs_lease_held_by_a_dead_instance_falls_back_to_a_local_fill() {
    let server = token_server().await;
    let cache = RedisTokenCache::new(&redis_url(), options()).unwrap();
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::new(server.token_endpoint(), "worker", "secret"),
        )
        .cache(Arc::new(TwoTierTokenCache::new(cache.clone())))
        .lease(Arc::new(RedisLease::new(&cache)))
        .lease_options(tokenkeeper::LeaseOptions {
            wait: Duration::from_millis(300),
            ..tokenkeeper::LeaseOptions::default()
        })
        .build()
        .unwrap();
    let key = tokens
        .cache_key("api", &TokenRequestParams::default())
        .unwrap();
    let lease_key = cache.redis_key(&key).replace(":tok", ":lease");
    let mut conn = raw(&redis_url()).await;
    // A lease left by an instance that died mid-fetch (it would expire after its TTL).
    let _: String = redis::cmd("SET")
        .arg(&lease_key)
        .arg("dead-owner")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let token = tokens
        .get_token("api", &TokenRequestParams::default())
        .await
        .unwrap();
    assert!(server
        .verify_access_token(token.access_token().secret())
        .is_ok());
    assert_eq!(
        server.token_requests(CC),
        1,
        "fetched locally after the wait"
    );
    let _: i64 = redis::cmd("DEL")
        .arg(&lease_key)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// A Redis that does not answer in time is reported (and logged) as a timeout, not as an I/O
/// error: whether it never answers at all, or stalls on a connection already open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_that_does_not_answer_is_reported_as_a_timeout() {
    let options = || RedisOptions {
        retry_pause: Duration::ZERO,
        timeout: Duration::from_millis(200),
        ..RedisOptions::plaintext()
    };
    let key = tokenkeeper::CacheKey::from_canonical("cc&client=silent");
    let is_timeout = |error: tokenkeeper::CacheError| {
        let message = error.to_string();
        assert!(message.contains("timeout"), "{message}");
        assert!(!message.contains("io error"), "{message}");
    };

    // Accepts connections, reads what is sent, never writes back.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let silent = RedisTokenCache::new(&format!("redis://127.0.0.1:{port}"), options()).unwrap();
    is_timeout(silent.get(&key).await.unwrap_err());

    // A connected Redis that stalls (DEBUG SLEEP) past the timeout.
    let redis = OwnRedis::start().await;
    let cache = RedisTokenCache::new(&redis.url(), options()).unwrap();
    assert!(cache.get(&key).await.unwrap().is_none(), "connected");
    let url = redis.url();
    let sleeper = tokio::spawn(async move {
        let client = redis::Client::open(url).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let _: redis::RedisResult<String> = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg("1")
            .query_async(&mut c)
            .await;
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    is_timeout(cache.get(&key).await.unwrap_err());
    sleeper.await.unwrap();
}

/// The caches and stores can be built outside a tokio runtime (at program start, in a
/// `LazyLock`): nothing is spawned until first use.
#[test]
fn caches_and_stores_are_built_without_a_runtime() {
    let redis = RedisTokenCache::new("redis://127.0.0.1:6379", RedisOptions::plaintext()).unwrap();
    let _cache = TwoTierTokenCache::new(redis.clone());
    let _users = tokenkeeper_redis::RedisUserTokenStore::new(&redis);
    let _lease = RedisLease::new(&redis);
    let _replays = tokenkeeper_redis::RedisLoginReplayStore::new(&redis);
}

/// SEC-11 for cached tokens: an older sealed token put back in Redis (by someone who can write
/// to it but holds no key) is refused and deleted by an instance that saw a newer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_11_an_older_sealed_token_cannot_be_put_back() {
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let cache = RedisTokenCache::new(
        &redis_url,
        RedisOptions {
            prefix: format!("tktest-sec11t-{:x}", fastrand::u64(..)),
            encryption: Some(Encryption::new("k1", &[5; 32]).unwrap()),
            ..RedisOptions::default()
        },
    )
    .unwrap();
    let key = tokenkeeper::CacheKey::from_canonical("cc&client=rollback");
    let now = tokenkeeper::Clock::now(&tokenkeeper::TokioClock::new());
    let token = |secret: &str, issued_ms: u64| {
        Arc::new(
            tokenkeeper::CachedToken::new(
                tokenkeeper::AccessToken::new(secret),
                tokenkeeper::TokenType::Bearer,
                None,
                tokenkeeper::Timestamp::from_millis(now.as_millis() - issued_ms),
                now.saturating_add(Duration::from_secs(600)),
                now.saturating_add(Duration::from_secs(900)),
            )
            .unwrap(),
        )
    };
    let redis_key = cache.redis_key(&key);
    let raw = redis::Client::open(redis_url).unwrap();
    let mut raw = raw.get_multiplexed_async_connection().await.unwrap();

    cache.put(&key, token("old-token", 2000)).await.unwrap();
    let (old_v, old_fp): (Vec<u8>, String) = redis::cmd("HMGET")
        .arg(&redis_key)
        .arg("v")
        .arg("fp")
        .query_async(&mut raw)
        .await
        .unwrap();
    cache.put(&key, token("new-token", 1000)).await.unwrap();
    let read = cache.get(&key).await.unwrap().unwrap();
    assert_eq!(read.access_token().secret(), "new-token");

    // Put the older sealed entry back.
    let _: () = redis::cmd("HSET")
        .arg(&redis_key)
        .arg("v")
        .arg(&old_v)
        .arg("fp")
        .arg(&old_fp)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(cache.get(&key).await.unwrap().is_none(), "refused");
    let exists: bool = redis::cmd("EXISTS")
        .arg(&redis_key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(!exists, "and deleted");
}
