//! User tokens across instances sharing Redis (UT-05).
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokenkeeper::user::{
    SessionKey, UserTokenManager, UserTokenParams, UserTokenStore as _, UserTokens,
};
use tokenkeeper::ClientConfig;
use tokenkeeper_redis::{
    Encryption, RedisLease, RedisOptions, RedisTokenCache, RedisUserTokenStore,
};
use tokenkeeper_testing::{TestClient, TestServer};

mod common;
use common::OwnRedis;

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A test server with the `web` client.
async fn web_server() -> Arc<TestServer> {
    Arc::new(
        TestServer::builder()
            .client(TestClient::new("web", "web-secret"))
            .start()
            .await,
    )
}

fn instance(server: &TestServer, prefix: &str) -> UserTokenManager {
    // Each instance: its own connection, lock table and flights.
    let redis = RedisTokenCache::new(
        &redis_url(),
        RedisOptions {
            prefix: prefix.to_owned(),
            encryption: Some(Encryption::new("k1", &[9; 32]).unwrap()),
            ..RedisOptions::default()
        },
    )
    .unwrap();
    UserTokenManager::builder(ClientConfig::from_issuer(
        server.issuer(),
        "web",
        "web-secret",
    ))
    .store(Arc::new(RedisUserTokenStore::new(&redis)))
    .lease(Arc::new(RedisLease::new(&redis)))
    .build()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ut_05_three_instances_sharing_redis_make_one_refresh() {
    let server = web_server().await;
    server.set_rotate_refresh_tokens(true);
    server.set_latency(Duration::from_millis(100));
    let prefix = format!("tktest-ut-{:x}", fastrand::u64(..));
    let instances: Vec<_> = (0..3).map(|_| instance(&server, &prefix)).collect();
    let session = SessionKey::from_sub_sid("alice", "s-1");
    let refresh = server.issue_refresh_token("web", "alice", Some("openid api"));
    instances[0]
        .replace(
            &session,
            UserTokens {
                refresh_token: Some(refresh.as_str().into()),
                ..UserTokens::default()
            },
        )
        .await
        .unwrap();

    let barrier = Arc::new(tokio::sync::Barrier::new(300));
    let mut tasks = Vec::new();
    for users in &instances {
        for _ in 0..100 {
            let (users, session, barrier) = (users.clone(), session.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                users
                    .get_access_token(&session, &UserTokenParams::default())
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
        server.token_requests("refresh_token"),
        1,
        "one refresh across three instances"
    );
    assert_eq!(values.len(), 1);
    // The waiting instances read the rotated refresh token: it is the live one, and each
    // instance sees it.
    for users in &instances {
        let stored = users.store().get(&session).await.unwrap().unwrap().value;
        let rt = stored.refresh_token.clone().unwrap();
        assert!(server.is_refresh_token_active(rt.secret()));
        assert_ne!(rt.secret(), refresh);
    }
    // A later refresh on another instance uses the rotated token: no invalid_grant.
    let forced = instances[2]
        .get_access_token(&session, &UserTokenParams::default().force_renewal(true))
        .await
        .unwrap();
    assert!(!values.contains(forced.access_token().secret()));
    assert_eq!(server.token_requests("refresh_token"), 2);
}

/// A clock the test moves by hand, shared by instances.
#[derive(Debug, Default)]
struct ManualClock {
    base: tokenkeeper::TokioClock,
    offset_ms: std::sync::atomic::AtomicU64,
}

impl ManualClock {
    fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    }
}

impl tokenkeeper::Clock for ManualClock {
    fn now(&self) -> tokenkeeper::Timestamp {
        self.base.now().saturating_add(Duration::from_millis(
            self.offset_ms.load(std::sync::atomic::Ordering::SeqCst),
        ))
    }
}

fn instance_on(
    server: &TestServer,
    redis: &RedisTokenCache,
    clock: Arc<ManualClock>,
) -> (UserTokenManager, RedisUserTokenStore) {
    let store = RedisUserTokenStore::new(redis);
    let users = UserTokenManager::builder(ClientConfig::from_issuer(
        server.issuer(),
        "web",
        "web-secret",
    ))
    .store(Arc::new(store.clone()))
    .lease(Arc::new(RedisLease::new(redis)))
    .clock(clock)
    .build()
    .unwrap();
    (users, store)
}

fn cache_on(url: &str, prefix: &str) -> RedisTokenCache {
    RedisTokenCache::new(
        url,
        RedisOptions {
            prefix: prefix.to_owned(),
            encryption: Some(Encryption::new("k1", &[9; 32]).unwrap()),
            timeout: Duration::from_millis(300),
            retry_pause: Duration::ZERO,
            plaintext: false,
            replica_ack: None,
        },
    )
    .unwrap()
}

async fn eventually(mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached");
}

/// UT-12: a hit on a valid token is served from memory (it works with Redis gone), and the
/// in-memory tier never returns a token that another instance has already replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ut_12_hits_are_served_from_memory_and_never_stale() {
    let server = web_server().await;
    server.set_rotate_refresh_tokens(true);
    server.set_expires_in(Some(100)); // usable 90 s, refreshed ahead from 75 s
    let mut redis = OwnRedis::start().await;
    let prefix = format!("tktest-ut12-{:x}", fastrand::u64(..));
    let clock = Arc::new(ManualClock::default());
    let (a, a_store) = instance_on(&server, &cache_on(&redis.url(), &prefix), clock.clone());
    let (b, b_store) = instance_on(&server, &cache_on(&redis.url(), &prefix), clock.clone());
    let session = SessionKey::from_sub_sid("alice", "s-1");
    let refresh = server.issue_refresh_token("web", "alice", Some("openid api"));
    a.replace(
        &session,
        UserTokens {
            refresh_token: Some(refresh.as_str().into()),
            ..UserTokens::default()
        },
    )
    .await
    .unwrap();
    let first = a
        .get_access_token(&session, &UserTokenParams::default())
        .await
        .unwrap();
    let on_b = b
        .get_access_token(&session, &UserTokenParams::default())
        .await
        .unwrap();
    assert!(on_b.same_token(&first));
    // The in-memory tiers start to count once their subscribers listen (they drop what they
    // held when they connect); then a read fills them.
    eventually(|| a_store.listening() && b_store.listening()).await;
    for users in [&a, &b] {
        users.store().get(&session).await.unwrap().unwrap();
    }

    // Served from memory: Redis is gone, and the hits still answer.
    redis.kill();
    for users in [&a, &b] {
        for _ in 0..100 {
            let hit = users
                .get_access_token(&session, &UserTokenParams::default())
                .await
                .unwrap();
            assert!(hit.same_token(&first));
        }
    }
    redis.restart().await;
    // The restarted Redis is empty: put the session back through A.
    let stored = b_store.get_local(&session).unwrap();
    let mut put_back = false;
    for _ in 0..100 {
        // The connections come back on their own; the first calls may still fail.
        if a.replace(&session, (*stored.value).clone()).await.is_ok() {
            put_back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(put_back, "Redis is back");

    // Into the refresh window: B refreshes ahead; A must not answer from memory with the
    // token B replaced.
    clock.advance(Duration::from_secs(80));
    let mut replaced = None;
    for _ in 0..500 {
        let _ = b
            .get_access_token(&session, &UserTokenParams::default())
            .await;
        if let Ok(Some(current)) = b.store().get(&session).await {
            let token = current.value.access_tokens.get("").cloned().unwrap();
            if !token.same_token(&first) {
                replaced = Some(token);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let replaced = replaced.expect("B refreshed ahead");
    let on_a = a
        .get_access_token(&session, &UserTokenParams::default())
        .await
        .unwrap();
    assert!(
        on_a.same_token(&replaced),
        "A never hands out the replaced token"
    );
    assert_eq!(server.token_requests("refresh_token"), 2);

    // A forced renewal on B reaches A's memory with the broadcast.
    let forced = b
        .get_access_token(&session, &UserTokenParams::default().force_renewal(true))
        .await
        .unwrap();
    let a_store = a.store().clone();
    let s3 = session.clone();
    eventually(|| {
        a_store.get_local(&s3).is_none_or(|local| {
            local
                .value
                .access_tokens
                .get("")
                .is_some_and(|t| t.same_token(&forced))
        })
    })
    .await;
    let on_a = a
        .get_access_token(&session, &UserTokenParams::default())
        .await
        .unwrap();
    assert!(on_a.same_token(&forced));
}

/// SEC-11: someone who can write to Redis but holds no key cannot put back an older sealed
/// session; an entry that does not open is deleted, so the next login works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_11_sealed_sessions_cannot_be_rolled_back() {
    let server = web_server().await;
    let prefix = format!("tktest-sec11-{:x}", fastrand::u64(..));
    let clock = Arc::new(ManualClock::default());
    let (a, a_store) = instance_on(&server, &cache_on(&redis_url(), &prefix), clock.clone());
    let session = SessionKey::from_sub_sid("alice", "s-1");
    let raw = redis::Client::open(redis_url()).unwrap();
    let mut raw = raw.get_multiplexed_async_connection().await.unwrap();
    // The session's Redis key: the only hash under the test's prefix.
    let key_of = |raw: &mut redis::aio::MultiplexedConnection| {
        let mut raw = raw.clone();
        let pattern = format!("{prefix}:*:ut");
        async move {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut raw)
                .await
                .unwrap();
            keys.into_iter().next()
        }
    };
    let tokens = |rt: &str| UserTokens {
        refresh_token: Some(rt.into()),
        ..UserTokens::default()
    };

    a.replace(&session, tokens("rt-old")).await.unwrap();
    let key = key_of(&mut raw).await.unwrap();
    let (old_ver, old_v): (u64, Vec<u8>) = redis::cmd("HMGET")
        .arg(&key)
        .arg("ver")
        .arg("v")
        .query_async(&mut raw)
        .await
        .unwrap();
    a.replace(&session, tokens("rt-new")).await.unwrap();
    let (new_ver,): (u64,) = redis::cmd("HMGET")
        .arg(&key)
        .arg("ver")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(new_ver > old_ver);

    // The old sealed value under the new version: it does not open, for any instance.
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("v")
        .arg(&old_v)
        .query_async(&mut raw)
        .await
        .unwrap();
    let (fresh, _) = instance_on(&server, &cache_on(&redis_url(), &prefix), clock.clone());
    assert!(fresh.store().get(&session).await.unwrap().is_none());
    assert!(
        key_of(&mut raw).await.is_none(),
        "the unreadable entry was deleted"
    );
    // ... so the next login works.
    fresh.replace(&session, tokens("rt-login")).await.unwrap();
    let back = a_store.get(&session).await.unwrap().unwrap();
    assert_eq!(
        back.value.refresh_token.as_ref().unwrap().secret(),
        "rt-login"
    );

    // The whole older pair put back: refused by an instance that has seen a newer version.
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("ver")
        .arg(old_ver)
        .arg("v")
        .arg(&old_v)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(a_store.get(&session).await.unwrap().is_none());
    assert!(key_of(&mut raw).await.is_none());

    // Garbage: deleted, and the next login works.
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("ver")
        .arg(u64::MAX / 2)
        .arg("v")
        .arg("ut1e:garbage")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(a_store.get(&session).await.unwrap().is_none());
    a.replace(&session, tokens("rt-again")).await.unwrap();
    let back = a.store().get(&session).await.unwrap().unwrap();
    assert_eq!(
        back.value.refresh_token.as_ref().unwrap().secret(),
        "rt-again"
    );
}

/// SEC-12 for Redis: a session whose refresh token's expiry is known expires with it (and its
/// access tokens), not after the 14-day session TTL.
#[tokio::test]
async fn sec_12_redis_sessions_expire_with_their_refresh_token() {
    let prefix = format!("tktest-sec12-{:x}", fastrand::u64(..));
    let cache = cache_on(&redis_url(), &prefix);
    let store = RedisUserTokenStore::new(&cache);
    let session = SessionKey::from_sub_sid("alice", "s-1");
    let now = tokenkeeper::Clock::now(&tokenkeeper::TokioClock::new());
    let tokens = UserTokens {
        refresh_token: Some("rt".into()),
        refresh_expires_at: Some(now.saturating_add(Duration::from_secs(120))),
        ..UserTokens::default()
    };
    store.store(&session, Arc::new(tokens), None).await.unwrap();
    let raw = redis::Client::open(redis_url()).unwrap();
    let mut raw = raw.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*:ut"))
        .query_async(&mut raw)
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(
        (1..=120_000).contains(&ttl),
        "expires with the refresh token: {ttl} ms"
    );
    let back = store.get(&session).await.unwrap().unwrap();
    assert_eq!(
        back.value.refresh_expires_at,
        Some(now.saturating_add(Duration::from_secs(120)))
    );
}
