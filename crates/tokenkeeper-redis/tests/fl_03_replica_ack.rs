//! FL-03: a rotated refresh token reaches a replica (`WAIT`) before it is used, so a failover
//! right after rotations loses no session. On a real Sentinel set (master, replica, 3
//! sentinels): the master's link to its replica is cut, 20 sessions rotate their one-time
//! refresh tokens, the master is killed and the sentinels promote the replica. A fresh instance
//! then reads each session: it is lost when the refresh token it finds is no longer the live
//! one at the provider.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokenkeeper::user::{
    SessionKey, UserTokenManager, UserTokenParams, UserTokenStore as _, UserTokens,
};
use tokenkeeper::ClientConfig;
use tokenkeeper_redis::{
    Encryption, RedisLease, RedisOptions, RedisTokenCache, RedisTopology, RedisUserTokenStore,
    ReplicaAck,
};
use tokenkeeper_testing::{TestClient, TestServer};

mod common;
use common::{cli, OwnSentinel};

const SESSIONS: usize = 20;

fn instance(
    server: &TestServer,
    sentinel: &OwnSentinel,
    ack: bool,
) -> (UserTokenManager, RedisUserTokenStore) {
    let redis = RedisTokenCache::connect(
        RedisTopology::sentinel(
            sentinel.sentinel_urls(),
            tokenkeeper_testing::redis_servers::MASTER_NAME,
        ),
        RedisOptions {
            retry_pause: Duration::ZERO,
            replica_ack: ack.then_some(ReplicaAck {
                replicas: 1,
                timeout: Duration::from_secs(5),
            }),
            ..RedisOptions::encrypted(Encryption::new("k1", &[4; 32]).unwrap()).prefix("fl03")
        },
    )
    .unwrap();
    assert_eq!(redis.topology(), "sentinel");
    let store = RedisUserTokenStore::new(&redis);
    let users = UserTokenManager::builder(ClientConfig::from_issuer(
        server.issuer(),
        "web",
        "web-secret",
    ))
    .store(Arc::new(store.clone()))
    .lease(Arc::new(RedisLease::new(&redis)))
    .build()
    .unwrap();
    (users, store)
}

/// Rotates every session while the replica cannot follow, kills the master, and counts the
/// sessions a fresh instance finds with a spent refresh token. With `ack`, the rotations wait
/// for the replica, which is left free to reconnect; without, it is stopped (`SIGSTOP`) until
/// the master is dead, so nothing written after the cut can reach it.
async fn sessions_lost_in_a_failover(ack: bool) -> usize {
    let mut sentinel = OwnSentinel::start().await;
    let server = Arc::new(
        TestServer::builder()
            .client(TestClient::new("web", "web-secret"))
            .start()
            .await,
    );
    server.set_rotate_refresh_tokens(true);
    let (users, _) = instance(&server, &sentinel, ack);
    let sessions: Vec<SessionKey> = (0..SESSIONS)
        .map(|n| SessionKey::from_sub_sid(&format!("user-{n}"), "s"))
        .collect();
    for (n, session) in sessions.iter().enumerate() {
        let refresh = server.issue_refresh_token("web", &format!("user-{n}"), Some("openid"));
        users
            .replace(
                session,
                UserTokens {
                    refresh_token: Some(refresh.as_str().into()),
                    ..UserTokens::default()
                },
            )
            .await
            .unwrap();
    }
    // Everything so far is on the replica.
    let master = sentinel.master_port();
    assert_eq!(cli(master, &["WAIT", "1", "5000"]).trim(), "1");

    if !ack {
        sentinel.signal_replica("STOP");
    }
    sentinel.cut_replication();
    let rotations: Vec<_> = sessions
        .iter()
        .map(|session| {
            let (users, session) = (users.clone(), session.clone());
            tokio::spawn(async move {
                users
                    .get_access_token(&session, &UserTokenParams::default().force_renewal(true))
                    .await
            })
        })
        .collect();
    for rotation in rotations {
        rotation.await.unwrap().unwrap();
    }
    assert_eq!(server.token_requests("refresh_token"), SESSIONS as u64);
    let killed_at = Instant::now();
    let old = sentinel.kill_master();
    if !ack {
        sentinel.signal_replica("CONT");
    }
    sentinel.wait_for_new_master(old).await;

    // A fresh instance, through the sentinels, on the promoted replica.
    let (_, store) = instance(&server, &sentinel, ack);
    let mut lost = 0;
    let mut recovered = None;
    for session in &sessions {
        let found = loop {
            match store.get(session).await {
                Ok(found) => break found,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        recovered.get_or_insert_with(|| killed_at.elapsed());
        let live = found
            .and_then(|v| v.value.refresh_token.clone())
            .is_some_and(|rt| server.is_refresh_token_active(rt.secret()));
        if !live {
            lost += 1;
        }
    }
    eprintln!(
        "FL-03 replica_ack {}: {lost} of {SESSIONS} sessions lost; readable again {:?} after the kill",
        if ack { "on" } else { "off" },
        recovered.unwrap_or_default()
    );
    lost
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl_03_a_failover_right_after_rotations_loses_no_session_with_replica_ack() {
    let without = sessions_lost_in_a_failover(false).await;
    assert_eq!(
        without, SESSIONS,
        "without WAIT, rotations the replica never saw are lost"
    );
    let with = sessions_lost_in_a_failover(true).await;
    assert_eq!(with, 0, "with WAIT, every rotation survives the failover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl_03_a_rotation_whose_write_failed_is_kept_and_written_again() {
    let redis = common::OwnRedis::start().await;
    let port: u16 = redis.url().rsplit(':').next().unwrap().parse().unwrap();
    let server = Arc::new(
        TestServer::builder()
            .client(TestClient::new("web", "web-secret"))
            .start()
            .await,
    );
    server.set_rotate_refresh_tokens(true);
    let instance = || {
        let cache = RedisTokenCache::new(
            &redis.url(),
            RedisOptions {
                retry_pause: Duration::ZERO,
                ..RedisOptions::encrypted(Encryption::new("k1", &[4; 32]).unwrap()).prefix("fl03w")
            },
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
        (users, store)
    };
    let (users, store) = instance();
    let session = SessionKey::from_sub_sid("alice", "s");
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

    // Redis refuses every write now: the rotation happens at the provider, its write fails.
    assert_eq!(
        cli(port, &["CONFIG", "SET", "min-replicas-to-write", "1"]).trim(),
        "OK"
    );
    let token = users
        .get_access_token(&session, &UserTokenParams::default().force_renewal(true))
        .await
        .expect("the new access token is handed out");
    assert!(!server.is_refresh_token_active(&first), "rotated");
    // This instance keeps the new tokens; Redis still holds the spent refresh token.
    let held = store.get(&session).await.unwrap().unwrap().value;
    let second = held.refresh_token.clone().unwrap();
    assert!(server.is_refresh_token_active(second.secret()));
    let (_, fresh) = instance();
    let in_redis = fresh.get(&session).await.unwrap().unwrap().value;
    assert_eq!(in_redis.refresh_token.as_ref().unwrap().secret(), first);

    // Redis takes writes again: the kept write lands, and another instance finds it.
    assert_eq!(
        cli(port, &["CONFIG", "SET", "min-replicas-to-write", "0"]).trim(),
        "OK"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, fresh) = instance();
        let now_in_redis = fresh.get(&session).await.unwrap().unwrap().value;
        if now_in_redis.refresh_token.as_ref().unwrap().secret() == second.secret() {
            break;
        }
        assert!(Instant::now() < deadline, "the kept write never landed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (others, _) = instance();
    let renewed = others
        .get_access_token(&session, &UserTokenParams::default().force_renewal(true))
        .await
        .unwrap();
    assert!(!renewed.same_token(&token));
    assert_eq!(
        server.refused_refreshes(),
        0,
        "no spent refresh token presented"
    );
}
