//! The BFF's sessions and logins under attack (SEC-13, SEC-14, SEC-15, SEC-22, SEC-26): what
//! anonymous requests can make the server keep, what two logins of one provider session
//! share, what Redis holds, how long the cookie lives, and what a fleet's housekeeping misses.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt as _;
use tokenkeeper_bff::BffSessionStore as _;
use tower::ServiceExt as _;

fn prefix(name: &str) -> String {
    format!("tk-{name}-{}", tokenkeeper::random_token(6).unwrap())
}

/// The provider's callback for a login started by `browser` (which keeps the login cookie).
async fn start_login(h: &Harness, browser: &reqwest::Client) -> String {
    let login = browser
        .get(format!("{}/bff/login?returnUrl=/app", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let to_idp = login.headers()["location"].to_str().unwrap().to_owned();
    let idp = browser.get(to_idp).send().await.unwrap();
    idp.headers()["location"].to_str().unwrap().to_owned()
}

/// `n` anonymous `GET /bff/login`s, in process, 64 at a time; each must be a redirect to the
/// provider with a login cookie.
async fn anonymous_logins(h: &Harness, n: usize) {
    futures_util::stream::iter(0..n)
        .for_each_concurrent(64, |_| {
            let app = h.app.clone();
            async move {
                let request = axum::http::Request::get("/bff/login")
                    .body(axum::body::Body::empty())
                    .unwrap();
                let response = app.oneshot(request).await.unwrap();
                assert_eq!(response.status(), 303);
                assert!(response.headers().contains_key("set-cookie"));
            }
        })
        .await;
}

/// SEC-13: 100,000 anonymous logins between a user's login and its callback: the callback
/// still succeeds, and neither the in-memory stores nor Redis hold anything for them — with
/// per-session DPoP, whose login keys travel sealed in the cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_13_anonymous_logins_create_no_server_side_state() {
    for redis in [None, Some(prefix("sec13"))] {
        let h = harness(Setup {
            redis: redis.clone(),
            dpop: true,
            ..Setup::default()
        })
        .await;
        let browser = browser();
        let callback = start_login(&h, &browser).await;
        if let Some(prefix) = &redis {
            assert!(
                redis_keys(prefix).await.is_empty(),
                "a login stores nothing"
            );
        }

        anonymous_logins(&h, 100_000).await;

        assert!(h.sessions.is_empty());
        if let Some(prefix) = &redis {
            let keys = redis_keys(prefix).await;
            assert!(keys.is_empty(), "anonymous logins left {} keys", keys.len());
        }
        let page = browser.get(callback).send().await.unwrap();
        assert_eq!(page.status(), 200, "the user's callback still works");
        let (status, _) = api(&browser, format!("{}/api/dpop/x", h.url)).await;
        assert_eq!(status, 200, "and the session's DPoP-bound token is usable");
        match &redis {
            None => assert_eq!(h.sessions.len(), 1),
            Some(prefix) => {
                // The session, its indexes and schedule, its tokens, its key, the one-use
                // record of its callback: a handful of keys, for one real login.
                let keys = redis_keys(prefix).await;
                assert!(keys.len() <= 8, "{keys:?}");
            }
        }
    }
}

/// SEC-13 with SEC-02: the login's one use is still atomic — a double submit of the callback
/// makes one code exchange, on one instance and across two sharing Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_13_a_sealed_login_is_still_completed_once() {
    let prefix = prefix("sec13once");
    let first = harness(Setup {
        redis: Some(prefix.clone()),
        ..Setup::default()
    })
    .await;
    let second = harness(Setup {
        redis: Some(prefix),
        fleet_of: Some((first.idp.clone(), first.redirect_uri.clone())),
        ..Setup::default()
    })
    .await;
    let browser = browser();
    let callback = start_login(&first, &browser).await;
    let on_second = callback.replace(&first.url, &second.url);
    // The login cookie goes to whichever instance answers (one public URL in production).
    let cookies = first
        .url
        .parse::<reqwest::Url>()
        .map(|u| u.host_str().unwrap().to_owned())
        .unwrap();
    assert_eq!(cookies, "127.0.0.1", "cookies are per host, not per port");
    let (a, b) = tokio::join!(
        browser.get(&callback).send(),
        browser.get(&on_second).send()
    );
    let mut statuses = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 400], "one login, one refusal");
    assert_eq!(first.idp.token_requests("authorization_code"), 1);
}

/// SEC-14: two logins in one provider session (same `sid`, as Keycloak, Entra ID, Okta and
/// oidc-provider send) get token records of their own; ending one (logout, or the cleanup of
/// the expired one) leaves the other working; back-channel logout by `sid` ends both; a new
/// login in the same browser ends the session it replaces (forgetting its tokens: same `sid`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_14_one_login_one_token_record() {
    let h = harness(Setup::default()).await;
    let mut same_sid = serde_json::Map::new();
    same_sid.insert("sid".into(), "sso-1".into());
    h.idp.set_id_token_claims(same_sid);
    let (tab_a, tab_b) = (browser(), browser());
    log_in(&h, &tab_a).await;
    log_in(&h, &tab_b).await;
    let sessions = h.sessions.find(None, Some("sso-1")).await.unwrap();
    assert_eq!(sessions.len(), 2);
    assert_ne!(
        sessions[0].key(),
        sessions[1].key(),
        "separate token records"
    );
    let users = h.bff.oidc().users();
    for session in &sessions {
        assert!(users.store().get(&session.key()).await.unwrap().is_some());
    }
    let token = |browser: reqwest::Client| {
        let url = format!("{}/api/user/x", h.url);
        async move { api(&browser, url).await }
    };
    let (_, seen_a) = token(tab_a.clone()).await;
    let (_, seen_b) = token(tab_b.clone()).await;
    assert_ne!(seen_a["authorization"], seen_b["authorization"]);

    // Logging A out revokes A's refresh token only; B keeps working, refresh included.
    let logout = logout_url(&h, &tab_a).await;
    let out = tab_a
        .get(format!("{}{logout}", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert_eq!(h.idp.revocations(), 1);
    assert_eq!(token(tab_a.clone()).await.0, 401);
    assert_eq!(token(tab_b.clone()).await.0, 200);
    let b = h
        .sessions
        .find(None, Some("sso-1"))
        .await
        .unwrap()
        .remove(0);
    let refreshed = users
        .get_access_token(
            &b.key(),
            &tokenkeeper::user::UserTokenParams::default().force_renewal(true),
        )
        .await;
    assert!(
        refreshed.is_ok(),
        "B's refresh token is alive: {refreshed:?}"
    );

    // A third login (C) whose session expires: its cleanup ends C, not B.
    let tab_c = browser();
    log_in(&h, &tab_c).await;
    h.clock.advance(Duration::from_secs(20 * 60));
    assert_eq!(token(tab_b.clone()).await.0, 200, "B is used, C is not");
    h.clock.advance(Duration::from_secs(15 * 60));
    assert_eq!(h.bff.cleanup_expired().await.unwrap(), 1, "C expired");
    assert_eq!(token(tab_b.clone()).await.0, 200, "B survives C's cleanup");

    // A new login in B's browser, of the same provider session (same sid: a step-up, say),
    // replaces B's session and forgets its tokens without revoking them: the two share the
    // provider's grant, which many providers revoke whole with any of its refresh tokens. (A
    // login of another provider session revokes what it replaces: `pr_04_…` in bff_endpoints.)
    let revoked = h.idp.revocations();
    log_in(&h, &tab_b).await;
    assert_eq!(
        h.idp.revocations(),
        revoked,
        "the replaced login of the same provider session is forgotten, not revoked"
    );
    let now = h.sessions.find(None, Some("sso-1")).await.unwrap();
    assert_eq!(now.len(), 1);
    assert!(users.store().get(&b.key()).await.unwrap().is_none());
    assert_eq!(token(tab_b.clone()).await.0, 200);

    // Back-channel logout by sid still ends every session of that sid.
    let logout_token = h.idp.logout_token("spa", None, Some("sso-1"));
    let response = reqwest::Client::new()
        .post(format!("{}/bff/backchannel", h.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("logout_token={logout_token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(h.sessions.is_empty());
    assert_eq!(token(tab_b).await.0, 401);
}

/// SEC-14 across a fleet on Redis, with per-session DPoP keys: each login its own record and
/// key; logging one out removes only its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_14_one_login_one_token_record_in_redis() {
    let h = harness(Setup {
        redis: Some(prefix("sec14")),
        dpop: true,
        ..Setup::default()
    })
    .await;
    let mut same_sid = serde_json::Map::new();
    same_sid.insert("sid".into(), "sso-2".into());
    h.idp.set_id_token_claims(same_sid);
    let (tab_a, tab_b) = (browser(), browser());
    log_in(&h, &tab_a).await;
    log_in(&h, &tab_b).await;
    let sessions = h.store.find(Some("alice"), None).await.unwrap();
    assert_eq!(sessions.len(), 2);
    let users = h.bff.oidc().users();
    let jkt = |key| async move {
        users
            .store()
            .get(&key)
            .await
            .unwrap()
            .map(|s| s.value.dpop_jkt.clone().unwrap())
    };
    let (jkt_a, jkt_b) = (
        jkt(sessions[0].key()).await.unwrap(),
        jkt(sessions[1].key()).await.unwrap(),
    );
    assert_ne!(jkt_a, jkt_b, "a key per login");
    let logout = logout_url(&h, &tab_a).await;
    tab_a
        .get(format!("{}{logout}", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(api(&tab_b, format!("{}/api/dpop/x", h.url)).await.0, 200);
    assert_eq!(h.store.find(Some("alice"), None).await.unwrap().len(), 1);
}

/// SEC-15: a `[redis]` section without a key is refused unless it says `plaintext = true`;
/// Redis never holds a session id (the cookie), in keys, values or indexes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_15_no_plaintext_in_redis_by_accident() {
    use tokenkeeper_bff::config::BffConfig;
    let file = |redis: &str| {
        format!(
            "[bff]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://app.example.com\"\n\n[oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"spa\"\nclient_secret = \"s\"\n\n[redis]\nurl = \"redis://127.0.0.1:6379\"\n{redis}"
        )
    };
    let env = |name: &str| {
        (name == "KEY").then(|| "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_owned())
    };
    let validate = |text: String| BffConfig::parse(&text).unwrap().validate(&text, &env);
    let refused = validate(file("")).unwrap_err();
    assert_eq!(refused.key, "redis.encryption_key_env");
    assert!(refused.message.contains("plaintext = true"), "{refused}");
    let both = validate(file("encryption_key_env = \"KEY\"\nplaintext = true\n")).unwrap_err();
    assert_eq!(
        (both.key.as_str(), both.line),
        ("redis.plaintext", Some(13))
    );
    assert!(validate(file("encryption_key_env = \"KEY\"\n")).is_ok());
    assert!(validate(file("plaintext = true\n")).is_ok());
    // The library: a visible call or nothing.
    assert!(tokenkeeper_redis::RedisTokenCache::new(
        "redis://127.0.0.1:6379",
        tokenkeeper_redis::RedisOptions::default()
    )
    .is_err());

    // What Redis holds after a login: never the session id, never the ID token in the clear.
    let prefix = prefix("sec15");
    let h = harness(Setup {
        redis: Some(prefix.clone()),
        ..Setup::default()
    })
    .await;
    let browser = browser();
    let id = log_in_for_cookie(&h, &browser).await;
    assert!(id.len() >= 40);
    let session = h.store.find(Some("alice"), None).await.unwrap().remove(0);
    assert!(session.id.is_empty(), "a session found in Redis has no id");
    let id_token = session.id_token.clone();
    let values = redis_values(&prefix).await;
    assert!(!values.is_empty());
    for value in &values {
        let text = String::from_utf8_lossy(value);
        assert!(!text.contains(&id), "the session id in Redis: {text}");
        assert!(!text.contains(&id_token[..40]), "the ID token in the clear");
    }
    // The session still works by its cookie.
    assert_eq!(api(&browser, format!("{}/api/user/x", h.url)).await.0, 200);
}

/// SEC-22: the session cookie carries no `Max-Age`: a user who keeps using the app stays
/// logged in past the sliding window counted from login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_22_the_session_cookie_lives_as_long_as_the_session() {
    let h = harness(Setup::default()).await;
    let browser = browser();
    let (page, _) = follow(&browser, &format!("{}/bff/login?returnUrl=/app", h.url)).await;
    let set_cookie: Vec<String> = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .filter(|c| c.starts_with("bff="))
        .collect();
    assert_eq!(set_cookie.len(), 1, "{set_cookie:?}");
    let cookie = set_cookie[0].to_ascii_lowercase();
    assert!(
        !cookie.contains("max-age") && !cookie.contains("expires"),
        "{cookie}"
    );
    // Used every 20 minutes for two hours: still logged in (30-minute sliding window).
    for _ in 0..6 {
        h.clock.advance(Duration::from_secs(20 * 60));
        assert_eq!(api(&browser, format!("{}/api/user/x", h.url)).await.0, 200);
    }
    // Left alone past the window: the server ends it.
    h.clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(api(&browser, format!("{}/api/user/x", h.url)).await.0, 401);
}

/// SEC-26: the Redis cleanup takes every expired session (more than one batch), lookups by
/// `sub` are complete, and a slide racing a logout does not bring the session back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_26_fleet_housekeeping_is_complete() {
    use tokenkeeper_bff::{BffSession, RedisBffSessionStore};
    let prefix = prefix("sec26");
    let h = harness(Setup {
        redis: Some(prefix.clone()),
        ..Setup::default()
    })
    .await;
    let store = RedisBffSessionStore::new(h.redis.as_ref().unwrap());
    let now = tokenkeeper::Timestamp::system_now().as_millis();
    let session = |i: usize, expires_at: u64| {
        let mut s = BffSession::new(
            tokenkeeper::random_token(32).unwrap(),
            "bob",
            format!("sid-{i}"),
        );
        s.created_at = now;
        s.expires_at = expires_at;
        s
    };
    // 1,200 sessions of one user: more than any batch.
    let mut ids = Vec::new();
    for i in 0..1_200 {
        let s = session(i, now + 60_000);
        ids.push(s.id.clone());
        store.put(s).await.unwrap();
    }
    assert_eq!(store.find(Some("bob"), None).await.unwrap().len(), 1_200);
    // All expired: one cleanup takes all of them.
    let later = tokenkeeper::Timestamp::from_millis(now + 120_000);
    assert_eq!(store.take_expired(later).await.unwrap().len(), 1_200);
    assert!(store.find(Some("bob"), None).await.unwrap().is_empty());

    // A slide racing a logout: the logout wins, whatever the order of arrival.
    for _ in 0..50 {
        let s = session(0, now + 60_000);
        store.put(s.clone()).await.unwrap();
        let read = store
            .get(&s.id, tokenkeeper::Timestamp::from_millis(now))
            .await
            .unwrap()
            .unwrap();
        let (slid, removed) = tokio::join!(store.touch(&read, now + 90_000), store.remove(&s));
        let _ = slid.unwrap();
        assert!(removed.unwrap().is_some());
        assert!(
            store
                .get(&s.id, tokenkeeper::Timestamp::from_millis(now))
                .await
                .unwrap()
                .is_none(),
            "the slide brought the session back"
        );
    }
    // In memory, the same rule.
    let memory = tokenkeeper_bff::InMemoryBffSessionStore::new();
    let s = session(0, now + 60_000);
    memory.put(s.clone()).await.unwrap();
    memory.remove(&s).await.unwrap();
    assert!(!memory.touch(&s, now + 90_000).await.unwrap());
    assert!(memory.is_empty());
}
