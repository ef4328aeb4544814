//! FL-01: every Redis-backed store on a real Redis Cluster (3 masters, 3 replicas of Debian's
//! `redis-server`, started by the test on ports the kernel chose).
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokenkeeper::dpop::{DpopAlgorithm, DpopKey, DpopKeyStore as _};
use tokenkeeper::user::{
    LoginReplayStore as _, SessionKey, UserTokenManager, UserTokenParams, UserTokenStore as _,
    UserTokens,
};
use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager, TokenRequestParams};
use tokenkeeper_redis::{
    Encryption, RedisDpopKeyStore, RedisLease, RedisLoginReplayStore, RedisOptions,
    RedisTokenCache, RedisTopology, RedisUserTokenStore, ReplicaAck, TwoTierTokenCache,
};
use tokenkeeper_testing::{TestClient, TestServer};

mod common;
use common::{cli, OwnCluster};

fn cache(topology: &RedisTopology, prefix: &str) -> RedisTokenCache {
    RedisTokenCache::connect(
        topology.clone(),
        RedisOptions::encrypted(Encryption::new("k1", &[3; 32]).unwrap())
            .prefix(prefix)
            .replica_ack(ReplicaAck {
                replicas: 1,
                timeout: Duration::from_secs(1),
            }),
    )
    .unwrap()
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl_01_every_redis_store_works_on_a_redis_cluster() {
    let logs = tokenkeeper_testing::LogBuffer::default();
    logs.install_global(tracing::Level::WARN);
    let cluster = OwnCluster::start().await;
    // Each instance knows the cluster by a different first node: subscriptions land on
    // different nodes, and a PUBLISH must reach them all.
    let topology = |i: usize| {
        let mut urls = cluster.urls();
        urls.rotate_left(i);
        RedisTopology::cluster(urls)
    };
    let server = Arc::new(
        TestServer::builder()
            .client(TestClient::new("worker", "secret"))
            .client(TestClient::new("web", "web-secret"))
            .start()
            .await,
    );
    let prefix = format!("fl01-{:x}", fastrand::u64(..));

    // 1. Client tokens: four instances with 250 callers each make one token request.
    server.set_latency(Duration::from_millis(100));
    let mut managers = Vec::new();
    let mut tiers = Vec::new();
    for i in 0..4 {
        let redis = cache(&topology(i), &prefix);
        assert_eq!(redis.topology(), "cluster");
        let tier = TwoTierTokenCache::new(redis.clone());
        tiers.push(tier.clone());
        managers.push(
            ClientCredentialsTokenManager::builder()
                .client(
                    "api",
                    ClientConfig::new(server.token_endpoint(), "worker", "secret"),
                )
                .cache(Arc::new(tier))
                .lease(Arc::new(RedisLease::new(&redis)))
                .build()
                .unwrap(),
        );
    }
    for tier in &tiers {
        tier.start();
    }
    eventually("every instance subscribed", || {
        tiers.iter().all(|t| t.subscriptions() > 0)
    })
    .await;
    let barrier = Arc::new(tokio::sync::Barrier::new(1000));
    let mut tasks = Vec::new();
    for tokens in &managers {
        for _ in 0..250 {
            let (tokens, barrier) = (tokens.clone(), barrier.clone());
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
        server.token_requests("client_credentials"),
        1,
        "one token request across the fleet"
    );
    assert_eq!(values.len(), 1);

    // 2. An invalidation on one instance reaches the others, subscribed on other nodes.
    let key = managers[0]
        .cache_key("api", &TokenRequestParams::default())
        .unwrap();
    let token = managers[0]
        .get_token("api", &TokenRequestParams::default())
        .await
        .unwrap();
    assert!(tiers[3].l1().get_sync(&key).is_some());
    assert!(managers[0]
        .invalidate("api", &TokenRequestParams::default(), &token)
        .await
        .unwrap());
    eventually("every other instance dropped its copy", || {
        tiers[1..].iter().all(|t| t.l1().get_sync(&key).is_none())
    })
    .await;

    // 3. User tokens: three instances, rotating refresh tokens, one refresh; each write waits
    // for a replica.
    server.set_rotate_refresh_tokens(true);
    let users: Vec<(UserTokenManager, RedisUserTokenStore)> = (0..3)
        .map(|i| {
            let redis = cache(&topology(i), &prefix);
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
        })
        .collect();
    let mut sessions = Vec::new();
    for n in 0..6 {
        // Several sessions: their entries spread over the masters.
        let session = SessionKey::from_sub_sid(&format!("user-{n}"), "s-1");
        let refresh = server.issue_refresh_token("web", &format!("user-{n}"), Some("openid"));
        users[0]
            .0
            .replace(
                &session,
                UserTokens {
                    refresh_token: Some(refresh.as_str().into()),
                    ..UserTokens::default()
                },
            )
            .await
            .unwrap();
        sessions.push(session);
    }
    let before = server.token_requests("refresh_token");
    let barrier = Arc::new(tokio::sync::Barrier::new(300));
    let mut tasks = Vec::new();
    for (instance, _) in &users {
        for _ in 0..100 {
            let (instance, session, barrier) =
                (instance.clone(), sessions[0].clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                instance
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
        server.token_requests("refresh_token") - before,
        1,
        "one refresh across three instances"
    );
    assert_eq!(values.len(), 1);
    for (_, store) in &users {
        let rt = store.get(&sessions[0]).await.unwrap().unwrap().value;
        assert!(server.is_refresh_token_active(rt.refresh_token.as_ref().unwrap().secret()));
    }
    // Every instance holds the session in memory; a forced renewal on one reaches the others.
    for (instance, _) in &users {
        instance
            .get_access_token(&sessions[0], &UserTokenParams::default())
            .await
            .unwrap();
    }
    eventually("every user store listening", || {
        users.iter().all(|(_, s)| s.listening())
    })
    .await;
    let held = users[1].1.get_local(&sessions[0]).unwrap().version;
    let forced = users[2]
        .0
        .get_access_token(
            &sessions[0],
            &UserTokenParams::default().force_renewal(true),
        )
        .await
        .unwrap();
    eventually("the other instances dropped the replaced version", || {
        [0, 1].iter().all(|&i| {
            users[i]
                .1
                .get_local(&sessions[0])
                .is_none_or(|v| v.version > held)
        })
    })
    .await;
    let seen = users[0]
        .0
        .get_access_token(&sessions[0], &UserTokenParams::default())
        .await
        .unwrap();
    assert!(
        seen.same_token(&forced),
        "instance 0 uses the renewed token"
    );
    for session in &sessions[1..] {
        users[1]
            .0
            .get_access_token(session, &UserTokenParams::default())
            .await
            .unwrap();
    }

    // 4. DPoP keys and taken login callbacks.
    let redis = cache(&topology(1), &prefix);
    let keys = RedisDpopKeyStore::new(&redis).unwrap();
    let key = Arc::new(DpopKey::generate(DpopAlgorithm::ES256).unwrap());
    keys.put(key.clone(), None).await.unwrap();
    let found = cache(&topology(2), &prefix);
    let found = RedisDpopKeyStore::new(&found)
        .unwrap()
        .get(key.thumbprint())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.thumbprint(), key.thumbprint());
    let replays = RedisLoginReplayStore::new(&redis);
    assert!(replays
        .claim("state-1", Duration::from_secs(60))
        .await
        .unwrap());
    assert!(!RedisLoginReplayStore::new(&cache(&topology(0), &prefix))
        .claim("state-1", Duration::from_secs(60))
        .await
        .unwrap());

    // The fleet's keys sit on every master: hash tags spread them.
    for master in cluster.masters() {
        let keys = cli(master, &["--scan", "--pattern", &format!("{prefix}:*")]);
        assert!(
            keys.lines().count() > 0,
            "master {master} holds some of the fleet's keys"
        );
    }
    // No call failed (no CROSSSLOT, no outage) and every write reached a replica in time.
    assert_eq!(logs.text(), "", "no warnings");
}
