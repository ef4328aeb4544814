//! Server-side sessions: sliding expiry with an absolute maximum, cleanup that revokes, lookup
//! and revocation by sub and sid, in memory and in Redis (BF-08); two instances sharing Redis
//! (BF-16).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokenkeeper::user::UserTokenParams;

fn prefix(name: &str) -> String {
    format!("tk-{name}-{}", tokenkeeper::random_token(6).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_08_sliding_expiry_absolute_maximum_cleanup_and_lookup() {
    for redis in [None, Some(prefix("bf08"))] {
        let in_redis = redis.is_some();
        let h = harness(Setup {
            redis,
            ..Setup::default()
        })
        .await;
        let (active, idle, third) = (browser(), browser(), browser());
        for b in [&active, &idle, &third] {
            log_in(&h, b).await;
        }
        assert_eq!(h.store.find(Some("alice"), None).await.unwrap().len(), 3);

        // Lookup and revocation by sid, then by sub.
        let sessions = h.store.find(Some("alice"), None).await.unwrap();
        let (_, user) = api(&third, format!("{}/bff/user", h.url)).await;
        let third_sid = sessions
            .iter()
            .find(|s| {
                user.as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c["type"] == "sid" && c["value"] == s.sid.as_str())
            })
            .unwrap()
            .sid
            .clone();
        assert_eq!(h.store.find(None, Some(&third_sid)).await.unwrap().len(), 1);
        assert_eq!(h.bff.end_sessions(None, Some(&third_sid)).await.unwrap(), 1);
        assert_eq!(api(&third, format!("{}/bff/user", h.url)).await.0, 401);
        assert_eq!(h.idp.revocations(), 1, "revoked (redis: {in_redis})");

        // Sliding: used every 25 minutes, the active session lives on; the idle one expires
        // after 30 minutes and the cleanup revokes its refresh token.
        let mut elapsed = Duration::ZERO;
        let mut cleaned = 0;
        while elapsed < Duration::from_secs(11 * 3600) {
            h.clock.advance(Duration::from_secs(25 * 60));
            elapsed += Duration::from_secs(25 * 60);
            assert_eq!(
                api(&active, format!("{}/bff/user", h.url)).await.0,
                200,
                "alive after {elapsed:?} (redis: {in_redis})"
            );
            cleaned += h.bff.cleanup_expired().await.unwrap();
        }
        assert_eq!(cleaned, 1, "the idle session, once (redis: {in_redis})");
        assert_eq!(h.idp.revocations(), 2);
        assert_eq!(api(&idle, format!("{}/bff/user", h.url)).await.0, 401);
        // The absolute maximum (12 h) ends the active one, however busy.
        h.clock.advance(Duration::from_secs(3600));
        assert_eq!(
            api(&active, format!("{}/bff/user", h.url)).await.0,
            401,
            "past the maximum (redis: {in_redis})"
        );
        assert_eq!(h.bff.cleanup_expired().await.unwrap(), 1);
        assert_eq!(h.idp.revocations(), 3);
        assert!(h.store.find(Some("alice"), None).await.unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_16_two_instances_sharing_redis_serve_one_user_interchangeably() {
    let shared = prefix("bf16");
    let a = harness(Setup {
        redis: Some(shared.clone()),
        ..Setup::default()
    })
    .await;
    let b = harness(Setup {
        redis: Some(shared),
        fleet_of: Some((a.idp.clone(), a.redirect_uri.clone())),
        ..Setup::default()
    })
    .await;
    a.idp.set_rotate_refresh_tokens(true);
    // One browser: behind one public URL, its cookie goes to either instance (a cookie jar
    // does not tell ports apart).
    let browser = browser();
    log_in(&a, &browser).await;
    let (status, echo) = api(&browser, format!("{}/api/user/x", b.url)).await;
    assert_eq!(status, 200, "a login on A is a session on B");
    assert!(echo["authorization"]
        .as_str()
        .unwrap()
        .starts_with("Bearer "));

    // The access token expires: concurrent calls on both instances make exactly one refresh.
    let session = a.store.find(Some("alice"), None).await.unwrap().remove(0);
    let users = a.bff.oidc().users();
    let stored = users.store().get(&session.key()).await.unwrap().unwrap();
    let mut tokens = (*stored.value).clone();
    let current = tokens.access_tokens.get("").unwrap().clone();
    let now = tokenkeeper::Timestamp::system_now();
    let expired = tokenkeeper::CachedToken::new(
        current.access_token().clone(),
        current.token_type().clone(),
        None,
        tokenkeeper::Timestamp::from_millis(now.as_millis() - 10_000),
        tokenkeeper::Timestamp::from_millis(now.as_millis() - 2_000),
        tokenkeeper::Timestamp::from_millis(now.as_millis() - 1_000),
    )
    .unwrap();
    tokens.access_tokens.insert("", Arc::new(expired));
    users.replace(&session.key(), tokens).await.unwrap();
    let before = a.idp.token_requests("refresh_token");
    let mut calls = Vec::new();
    for i in 0..40 {
        let (browser, url) = (
            browser.clone(),
            if i % 2 == 0 {
                a.url.clone()
            } else {
                b.url.clone()
            },
        );
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
        "one refresh across both instances"
    );
    let token = b
        .bff
        .oidc()
        .users()
        .get_access_token(&session.key(), &UserTokenParams::default())
        .await
        .unwrap();
    assert!(!token.same_token(&current));

    // Logout on B ends the session on A.
    let (_, user) = api(&browser, format!("{}/bff/user", b.url)).await;
    let logout = user
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "bff:logout_url")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = browser
        .get(format!("{}{logout}", b.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(api(&browser, format!("{}/bff/user", a.url)).await.0, 401);
    assert_eq!(api(&browser, format!("{}/api/user/x", a.url)).await.0, 401);
}
