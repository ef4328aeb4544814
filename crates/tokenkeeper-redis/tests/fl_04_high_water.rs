//! FL-04: a fresh instance refuses a session entry older than the newest version the fleet
//! wrote (its high-water mark, kept under a hash tag of its own) — on one node and on a real
//! Redis Cluster. The entry is rolled back as a stale replica or a restored key would: the
//! older (version, sealed value) pair is put back. The fresh instance neither hands out the
//! replaced access token nor presents the spent refresh token; a logged-out session put back
//! is refused too (its mark stays as a tombstone).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use base64::Engine as _;
use sha2::Digest as _;
use tokenkeeper::user::{
    SessionKey, UserTokenManager, UserTokenParams, UserTokenStore as _, UserTokens,
};
use tokenkeeper::{ClientConfig, Error};
use tokenkeeper_redis::{
    Encryption, RedisLease, RedisOptions, RedisTokenCache, RedisTopology, RedisUserTokenStore,
};
use tokenkeeper_testing::{TestClient, TestServer};

mod common;
use common::OwnCluster;

/// A session's Redis key, as the store names it.
fn entry_key(prefix: &str, session: &SessionKey) -> String {
    let digest = sha2::Sha256::digest(format!("ut&session={}", session.as_str()).as_bytes());
    let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16]);
    format!("{prefix}:{{{tag}}}:ut")
}

fn instance(
    server: &TestServer,
    topology: &RedisTopology,
    prefix: &str,
) -> (UserTokenManager, RedisUserTokenStore, RedisTokenCache) {
    let cache = RedisTokenCache::connect(
        topology.clone(),
        RedisOptions::encrypted(Encryption::new("k1", &[6; 32]).unwrap()).prefix(prefix),
    )
    .unwrap();
    let store = RedisUserTokenStore::new(&cache);
    let users = UserTokenManager::builder(ClientConfig::from_issuer(
        server.issuer(),
        "web",
        "web-secret",
    ))
    .store(Arc::new(store.clone()))
    .lease(Arc::new(RedisLease::new(&cache)))
    .build()
    .unwrap();
    (users, store, cache)
}

async fn raw_pair(cache: &RedisTokenCache, key: &str) -> (Option<u64>, Option<Vec<u8>>) {
    let key = key.to_owned();
    cache
        .call(|mut c| async move {
            redis::cmd("HMGET")
                .arg(&key)
                .arg("ver")
                .arg("v")
                .query_async(&mut c)
                .await
        })
        .await
        .unwrap()
}

async fn put_back(cache: &RedisTokenCache, key: &str, version: u64, value: Vec<u8>) {
    let key = key.to_owned();
    cache
        .call(|mut c| async move {
            redis::cmd("HSET")
                .arg(&key)
                .arg("ver")
                .arg(version)
                .arg("v")
                .arg(value)
                .query_async::<i64>(&mut c)
                .await
        })
        .await
        .unwrap();
}

async fn rolled_back_entries_are_refused(topology: RedisTopology) {
    let server = Arc::new(
        TestServer::builder()
            .client(TestClient::new("web", "web-secret"))
            .start()
            .await,
    );
    server.set_rotate_refresh_tokens(true);
    let prefix = format!("tk-fl04-{:x}", fastrand::u64(..));
    let (users, _, cache) = instance(&server, &topology, &prefix);

    // A session, then a rotation: the entry as it was before is kept aside.
    let session = SessionKey::from_sub_sid("alice", "s-1");
    let key = entry_key(&prefix, &session);
    let first = server.issue_refresh_token("web", "alice", Some("openid"));
    users
        .replace(
            &session,
            UserTokens {
                refresh_token: Some(first.as_str().into()),
                ..UserTokens::default()
            },
        )
        .await
        .unwrap();
    let before = users
        .get_access_token(&session, &UserTokenParams::default())
        .await
        .unwrap();
    let (Some(old_version), Some(old_value)) = raw_pair(&cache, &key).await else {
        panic!("the entry is at {key}");
    };
    users
        .get_access_token(&session, &UserTokenParams::default().force_renewal(true))
        .await
        .unwrap();
    assert!(!server.is_refresh_token_active(&first), "rotated");
    let refreshes = server.token_requests("refresh_token");

    // Rolled back: the older pair is put back, as a stale replica or a restored key would.
    put_back(&cache, &key, old_version, old_value.clone()).await;
    let (fresh, fresh_store, _) = instance(&server, &topology, &prefix);
    match fresh
        .get_access_token(&session, &UserTokenParams::default())
        .await
    {
        Err(Error::ReauthenticationRequired(_)) => {}
        Ok(token) => panic!(
            "a rolled-back entry was used (replaced token handed out: {})",
            token.same_token(&before)
        ),
        Err(other) => panic!("{other}"),
    }
    assert_eq!(
        server.token_requests("refresh_token"),
        refreshes,
        "the spent refresh token was not presented"
    );
    assert_eq!(server.refused_refreshes(), 0);
    assert!(
        raw_pair(&cache, &key).await.0.is_none(),
        "the rolled-back entry was deleted"
    );
    assert!(fresh_store.get(&session).await.unwrap().is_none());

    // A new login of the same session works (it goes above the mark).
    let next = server.issue_refresh_token("web", "alice", Some("openid"));
    fresh
        .replace(
            &session,
            UserTokens {
                refresh_token: Some(next.as_str().into()),
                ..UserTokens::default()
            },
        )
        .await
        .unwrap();
    fresh
        .get_access_token(&session, &UserTokenParams::default())
        .await
        .unwrap();

    // Logged out, then put back from a stale copy: refused, the mark stays as a tombstone.
    let (Some(live_version), Some(live_value)) = raw_pair(&cache, &key).await else {
        panic!("the new login's entry");
    };
    fresh.store().clear(&session).await.unwrap();
    put_back(&cache, &key, live_version, live_value).await;
    let (third, third_store, _) = instance(&server, &topology, &prefix);
    assert!(third_store.get(&session).await.unwrap().is_none());
    assert!(matches!(
        third
            .get_access_token(&session, &UserTokenParams::default())
            .await,
        Err(Error::ReauthenticationRequired(_))
    ));
    assert_eq!(server.refused_refreshes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl_04_a_fresh_instance_refuses_an_entry_older_than_the_high_water_mark() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    rolled_back_entries_are_refused(RedisTopology::node(url)).await;
    let cluster = OwnCluster::start().await;
    rolled_back_entries_are_refused(RedisTopology::cluster(cluster.urls())).await;
}
