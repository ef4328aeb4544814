//! The BFF's fleet stores: three instances on a real Redis Cluster (3 masters, 3 replicas;
//! FL-01) or on a real PostgreSQL (FL-05), each started by the test, share sessions and user
//! tokens — a login on one is a session on all, an expired token is refreshed once across the
//! three, a back-channel logout on one ends the user's sessions on all, and the cleanup claims
//! expired sessions (from every schedule bucket, in batches) once across the fleet.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use tokenkeeper::Timestamp;
use tokenkeeper_testing::postgres_server::OwnPostgres;
use tokenkeeper_testing::redis_servers::OwnCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl_01_three_bff_instances_on_a_redis_cluster() {
    let cluster = OwnCluster::start().await;
    let prefix = format!("tk-fl01-{}", tokenkeeper::random_token(6).unwrap());
    three_instances_share_sessions(|i| {
        let mut urls = cluster.urls();
        urls.rotate_left(i);
        Setup {
            redis: Some(prefix.clone()),
            redis_topology: Some(tokenkeeper_redis::RedisTopology::cluster(urls)),
            ..Setup::default()
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl_05_three_bff_instances_on_postgresql() {
    let postgres = OwnPostgres::start().await;
    three_instances_share_sessions(|_| Setup {
        postgres: Some(postgres.url()),
        ..Setup::default()
    })
    .await;
}

/// Three instances, each set up by `setup(i)`, sharing one store.
async fn three_instances_share_sessions(setup: impl Fn(usize) -> Setup) {
    let a = harness(setup(0)).await;
    let mut fleet = vec![];
    for i in 1..3 {
        fleet.push(
            harness(Setup {
                fleet_of: Some((a.idp.clone(), a.redirect_uri.clone())),
                ..setup(i)
            })
            .await,
        );
    }
    let (b, c) = (&fleet[0], &fleet[1]);
    let all = [&a, b, c];
    a.idp.set_rotate_refresh_tokens(true);

    // A login of alice on A is a session on every instance.
    let first = browser();
    log_in(&a, &first).await;
    for h in all {
        let (status, echo) = api(&first, format!("{}/api/user/x", h.url)).await;
        assert_eq!(status, 200, "a login on A is a session on {}", h.url);
        assert!(echo["authorization"]
            .as_str()
            .unwrap()
            .starts_with("Bearer "));
    }
    let session = c.store.find(Some("alice"), None).await.unwrap().remove(0);

    // Its access token expires: 60 concurrent calls over the three instances make one
    // refresh.
    let users = a.bff.oidc().users();
    let stored = users.store().get(&session.key()).await.unwrap().unwrap();
    let mut tokens = (*stored.value).clone();
    let current = tokens.access_tokens.get("").unwrap().clone();
    let now = Timestamp::system_now().as_millis();
    let expired = tokenkeeper::CachedToken::new(
        current.access_token().clone(),
        current.token_type().clone(),
        None,
        Timestamp::from_millis(now - 10_000),
        Timestamp::from_millis(now - 2_000),
        Timestamp::from_millis(now - 1_000),
    )
    .unwrap();
    tokens.access_tokens.insert("", Arc::new(expired));
    users.replace(&session.key(), tokens).await.unwrap();
    let before = a.idp.token_requests("refresh_token");
    let mut calls = Vec::new();
    for i in 0..60 {
        let browser = first.clone();
        let url = all[i % 3].url.clone();
        calls.push(tokio::spawn(async move {
            api(&browser, format!("{url}/api/user/x")).await.0
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    assert_eq!(
        a.idp.token_requests("refresh_token") - before,
        1,
        "one refresh across three instances"
    );

    // A second login of alice, on B: its session is under another hash tag.
    let second = browser();
    log_in(b, &second).await;
    for h in all {
        assert_eq!(api(&second, format!("{}/api/user/x", h.url)).await.0, 200);
    }
    assert_eq!(a.store.find(Some("alice"), None).await.unwrap().len(), 2);

    // A back-channel logout of alice, received by C, ends both sessions on every instance.
    let token = a.idp.logout_token("spa", Some("alice"), None);
    let response = reqwest::Client::new()
        .post(format!("{}/bff/backchannel", c.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "logout_token={}",
            url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for h in all {
        for browser in [&first, &second] {
            assert_eq!(
                api(browser, format!("{}/api/user/x", h.url)).await.0,
                401,
                "ended on {}",
                h.url
            );
        }
    }
    assert!(a.store.find(Some("alice"), None).await.unwrap().is_empty());

    // Cleanup: sessions due are claimed from every schedule bucket, once across the fleet.
    let mut browsers = Vec::new();
    for _ in 0..8 {
        let browser = browser();
        log_in(b, &browser).await;
        browsers.push(browser);
    }
    let far = Timestamp::from_millis(Timestamp::system_now().as_millis() + 400 * 24 * 3600 * 1000);
    let (on_a, on_c) = tokio::join!(a.store.take_expired(far), c.store.take_expired(far));
    assert_eq!(
        on_a.unwrap().len() + on_c.unwrap().len(),
        8,
        "each expired session claimed by one instance"
    );
    assert!(b.store.find(Some("alice"), None).await.unwrap().is_empty());
}
