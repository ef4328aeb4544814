//! User tokens across instances sharing Redis (UT-05).
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokenkeeper::user::{SessionKey, UserTokenManager, UserTokenParams, UserTokens};
use tokenkeeper::ClientConfig;
use tokenkeeper_redis::{
    Encryption, RedisLease, RedisOptions, RedisTokenCache, RedisUserTokenStore,
};
use tokenkeeper_testing::{TestClient, TestServer};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
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
    let server = Arc::new(
        TestServer::builder()
            .client(TestClient::new("web", "web-secret"))
            .start()
            .await,
    );
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
