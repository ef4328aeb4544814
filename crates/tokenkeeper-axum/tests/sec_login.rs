//! Web and session security of the login layer (SEC-01 … SEC-05, SEC-07, and the build-time
//! checks of `Oidc::new`).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use tokenkeeper_axum::{Oidc, OidcConfig, SessionStoreUserTokenStore};

/// Starts a login with `browser` (which keeps the login cookie) and returns the provider's
/// genuine callback URL.
async fn start_login(browser: &reqwest::Client, app: &App) -> url::Url {
    let login = browser
        .get(format!("{}/auth/login", app.url))
        .send()
        .await
        .unwrap();
    assert!(login.status().is_redirection(), "{}", login.status());
    let to_idp = login.headers()["location"].to_str().unwrap().to_owned();
    let idp = browser.get(to_idp).send().await.unwrap();
    url::Url::parse(idp.headers()["location"].to_str().unwrap()).unwrap()
}

/// Starts a login without a cookie jar: the provider's callback URL and the `Cookie` header
/// that carries the sealed login (as a browser would send it to any instance).
async fn start_login_by_hand(app: &App) -> (url::Url, String) {
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = plain
        .get(format!("{}/auth/login", app.url))
        .send()
        .await
        .unwrap();
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("; ");
    let to_idp = login.headers()["location"].to_str().unwrap().to_owned();
    let idp = plain.get(to_idp).send().await.unwrap();
    let callback = url::Url::parse(idp.headers()["location"].to_str().unwrap()).unwrap();
    (callback, cookie)
}

fn with_state(callback: &url::Url, state: &str) -> url::Url {
    let mut url = callback.clone();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == "state" {
                (k, state.to_owned())
            } else {
                (k, v)
            }
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    url
}

const CODE: &str = "authorization_code";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_01_return_urls_must_be_local_paths() {
    let app = app(true).await;
    let browser = browser(false);
    let long = format!("/{}", "a".repeat(tokenkeeper_axum::MAX_RETURN_URL));
    let hostile = [
        "//evil.example",
        "/\\evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "/%09/evil.example",
        "/%2F%2Fevil.example",
        "/%2f/evil.example",
        "//%2Fevil.example",
        "/%5Cevil.example",
        "/%255C%255Cevil.example",
        "/%25252F%25252F%25252F%25252Fevil",
        "https://evil.example/",
        "http:evil.example",
        "javascript:alert(1)",
        "evil.example",
        "",
        " /x",
        "/x y",
        "/\u{a0}",
        "/%E2%80%8B",
        "/\u{0}",
        "/%00",
        long.as_str(),
    ];
    for raw in hostile {
        let encoded: String = url::form_urlencoded::byte_serialize(raw.as_bytes()).collect();
        let response = browser
            .get(format!("{}/auth/login?returnUrl={encoded}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{raw:?}");
        let body = response.text().await.unwrap();
        assert!(body.len() < 64 && !body.contains("evil"), "{body}");
    }
    for local in ["/", "/orders?page=2#top", "/%E4%BD%A0%E5%A5%BD", "/a/../b"] {
        let encoded: String = url::form_urlencoded::byte_serialize(local.as_bytes()).collect();
        let response = browser
            .get(format!("{}/auth/login?returnUrl={encoded}", app.url))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_redirection(), "{local:?}");
    }
    assert_eq!(app.idp.token_requests(CODE), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_02_two_concurrent_callbacks_make_one_code_exchange() {
    let app = app(true).await;
    let browser = browser(false);
    let callback = start_login(&browser, &app).await;

    // A forged callback (wrong state, right cookie) is refused and consumes nothing.
    let forged = browser
        .get(with_state(&callback, "forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);

    // Double submit: the genuine callback twice at once, on the same cookie.
    let (a, b) = tokio::join!(
        browser.get(callback.clone()).send(),
        browser.get(callback.clone()).send()
    );
    let mut statuses = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
    statuses.sort_unstable();
    assert!(
        (300..400).contains(&statuses[0]) && statuses[1] == 400,
        "one login, one refusal: {statuses:?}"
    );
    assert_eq!(app.idp.token_requests(CODE), 1, "exactly one code exchange");

    // Many at once: still one exchange per login.
    let callback = start_login(&browser, &app).await;
    let sends: Vec<_> = (0..16)
        .map(|_| browser.get(callback.clone()).send())
        .collect();
    let done = futures_util::future::join_all(sends).await;
    let logged_in = done
        .iter()
        .filter(|r| r.as_ref().unwrap().status().is_redirection())
        .count();
    assert_eq!(logged_in, 1);
    assert_eq!(app.idp.token_requests(CODE), 2);
}

/// SEC-02 across instances: two app instances share a Redis login replay store; the same
/// callback sent to both at once makes one code exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_02_one_code_exchange_across_instances_sharing_redis() {
    use tokenkeeper_redis::{Encryption, RedisLoginReplayStore, RedisOptions, RedisTokenCache};
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("tk-sec02-{}", tokenkeeper::random_token(6).unwrap());
    let redis = RedisTokenCache::new(
        &redis_url,
        RedisOptions {
            prefix,
            encryption: Some(Encryption::new("k1", &[9; 32]).unwrap()),
            ..RedisOptions::default()
        },
    )
    .unwrap();
    let replays: Arc<dyn tokenkeeper::user::LoginReplayStore> =
        Arc::new(RedisLoginReplayStore::new(&redis));
    let first = app_with(Setup {
        insecure_cookies: true,
        replays: Some(replays.clone()),
        ..Setup::default()
    })
    .await;
    let redirect_uri = format!("{}/auth/callback", first.url);
    let second = app_with(Setup {
        insecure_cookies: true,
        replays: Some(replays),
        fleet_of: Some((first.idp.clone(), redirect_uri)),
        ..Setup::default()
    })
    .await;

    // Behind one public URL the browser sends its login cookie to whichever instance answers;
    // here the instances listen on two ports, so send that cookie by hand.
    let (callback, cookie) = start_login_by_hand(&first).await;
    let mut on_second = callback.clone();
    on_second
        .set_port(Some(url::Url::parse(&second.url).unwrap().port().unwrap()))
        .unwrap();
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (a, b) = tokio::join!(
        plain.get(callback.clone()).header("cookie", &cookie).send(),
        plain.get(on_second).header("cookie", &cookie).send()
    );
    let mut statuses = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
    statuses.sort_unstable();
    assert!(
        (300..400).contains(&statuses[0]) && statuses[1] == 400,
        "one login, one refusal: {statuses:?}"
    );
    assert_eq!(
        first.idp.token_requests(CODE),
        1,
        "exactly one code exchange"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_03_a_login_refused_after_the_code_exchange_revokes_its_tokens() {
    let app = app(true).await;
    let mut claims = serde_json::Map::new();
    claims.insert("nonce".into(), "not-the-login-nonce".into());
    app.idp.set_id_token_claims(claims);
    let browser = browser(false);
    let callback = start_login(&browser, &app).await;
    let refused = browser.get(callback).send().await.unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(app.idp.token_requests(CODE), 1, "the code was exchanged");
    assert_eq!(
        app.idp.revocations(),
        2,
        "the refresh token and the access token it received were revoked"
    );
    let me = browser.get(format!("{}/me", app.url)).send().await.unwrap();
    assert_eq!(me.status(), 401, "not logged in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_04_logout_cannot_be_forged_cross_site() {
    let app = app(true).await;
    let browser = browser(true);
    let me = browser
        .get(format!("{}/auth/login?returnUrl=/me", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(me.text().await.unwrap(), "alice");

    // A link on another site knows the path, not the session's sid.
    for forged in [
        "/auth/logout",
        "/auth/logout?sid=",
        "/auth/logout?sid=guess",
    ] {
        let response = browser
            .get(format!("{}{forged}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{forged}");
    }
    let still = browser.get(format!("{}/me", app.url)).send().await.unwrap();
    assert_eq!(still.status(), 200, "still logged in");
    assert_eq!(app.idp.revocations(), 0);

    let logout_url = get_text(&browser, format!("{}/logout-url", app.url)).await;
    let home = browser
        .get(format!("{}{logout_url}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(home.text().await.unwrap(), "home");
    assert_eq!(app.idp.revocations(), 1);
    // Idempotent: an anonymous logout just goes home.
    let again = browser
        .get(format!("{}{logout_url}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(again.text().await.unwrap(), "home");
}

#[tokio::test]
async fn sec_05_token_records_are_not_web_sessions_and_can_be_sealed() {
    use tokenkeeper::user::{SessionKey, UserTokenStore, UserTokens};
    use tower_sessions::SessionStore as _;
    let backend = tower_sessions::MemoryStore::default();
    let key = SessionKey::from_sub_sid("alice", "s-1");

    // Record ids come from a secret: knowing sub and sid does not name the record.
    let one = SessionStoreUserTokenStore::plaintext(backend.clone());
    let other = SessionStoreUserTokenStore::plaintext(backend.clone());
    assert_ne!(one.record_id(&key), other.record_id(&key));
    let shared = [7u8; 32];
    let a = SessionStoreUserTokenStore::plaintext(backend.clone()).with_secret(&shared);
    let b = SessionStoreUserTokenStore::plaintext(backend.clone()).with_secret(&shared);
    assert_eq!(
        a.record_id(&key),
        b.record_id(&key),
        "a fleet shares the secret"
    );
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("tokenkeeper:{}", key.as_str()).as_bytes());
    let guessable =
        tower_sessions::session::Id(i128::from_le_bytes(digest[..16].try_into().unwrap()));
    assert_ne!(a.record_id(&key), guessable);

    // Sealed at rest: the refresh token is not in the backend in the clear.
    let sealed = SessionStoreUserTokenStore::encrypted(
        backend.clone(),
        tokenkeeper::Encryption::new("k1", &[3; 32]).unwrap(),
    )
    .with_secret(&shared);
    let tokens = Arc::new(UserTokens {
        refresh_token: Some("rt-secret-value".into()),
        ..UserTokens::default()
    });
    sealed.store(&key, tokens, None).await.unwrap();
    let record = backend
        .load(&sealed.record_id(&key))
        .await
        .unwrap()
        .unwrap();
    let raw = serde_json::to_string(&record.data).unwrap();
    assert!(!raw.contains("rt-secret-value"), "{raw}");
    let back = sealed.get(&key).await.unwrap().unwrap();
    assert_eq!(
        back.value.refresh_token.as_ref().unwrap().secret(),
        "rt-secret-value"
    );
    // Read without the key (or tampered): unreadable, deleted, so the next login works.
    let unsealed = SessionStoreUserTokenStore::plaintext(backend.clone()).with_secret(&shared);
    assert!(unsealed.get(&key).await.unwrap().is_none());
    let wrong_key = SessionStoreUserTokenStore::encrypted(
        backend.clone(),
        tokenkeeper::Encryption::new("k1", &[4; 32]).unwrap(),
    )
    .with_secret(&shared);
    assert!(wrong_key.get(&key).await.unwrap().is_none());
    assert!(backend
        .load(&sealed.record_id(&key))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_07_anonymous_requests_do_not_grow_the_session_store() {
    let app = app(true).await;
    let browser = browser(false);
    for _ in 0..50 {
        let login = browser
            .get(format!("{}/auth/login", app.url))
            .send()
            .await
            .unwrap();
        assert!(login.status().is_redirection());
        let me = browser.get(format!("{}/me", app.url)).send().await.unwrap();
        assert_eq!(me.status(), 401);
        let forged = browser
            .get(format!("{}/auth/callback?code=x&state=y", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 400);
    }
    assert_eq!(
        app.sessions.records(),
        0,
        "no session record for anonymous requests"
    );
    // A completed login writes its session (and its token record).
    let callback = start_login(&browser, &app).await;
    assert!(browser
        .get(callback)
        .send()
        .await
        .unwrap()
        .status()
        .is_redirection());
    assert_eq!(app.sessions.records(), 2);
}

#[tokio::test]
async fn oidc_new_refuses_a_user_manager_it_cannot_use_naming_the_field() {
    let idp = tokenkeeper_testing::TestServer::builder().start().await;
    let config = OidcConfig::new(
        idp.issuer(),
        "web",
        "web-secret",
        "http://127.0.0.1:1/auth/callback",
    );
    let build = |client: tokenkeeper::ClientConfig| {
        tokenkeeper::user::UserTokenManager::builder(client)
            .build()
            .unwrap()
    };
    let cases = [
        (
            build(tokenkeeper::ClientConfig::new(
                idp.token_endpoint(),
                "web",
                "web-secret",
            )),
            "users",
        ),
        (
            build(tokenkeeper::ClientConfig::from_issuer(
                "http://127.0.0.1:9/other",
                "web",
                "web-secret",
            )),
            "issuer",
        ),
        (
            build(tokenkeeper::ClientConfig::from_issuer(
                idp.issuer(),
                "someone-else",
                "web-secret",
            )),
            "client_id",
        ),
    ];
    for (users, field) in cases {
        let error = Oidc::new(config.clone(), users).unwrap_err();
        assert!(
            matches!(&error, tokenkeeper::Error::Config(c) if c.field == field),
            "{field}: {error}"
        );
    }
    let mut relative = config.clone();
    relative.redirect_uri = "/auth/callback".into();
    let error = Oidc::new(relative, Oidc::user_manager_for(&config).unwrap()).unwrap_err();
    assert!(error.to_string().contains("redirect_uri"), "{error}");
    assert!(Oidc::new(config.clone(), Oidc::user_manager_for(&config).unwrap()).is_ok());
}

/// SEC-13: 100,000 anonymous logins between a user's login and its callback leave the callback
/// working and nothing stored: no session record, no claimed login, no DPoP key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_13_anonymous_logins_store_nothing() {
    use futures_util::StreamExt as _;
    use tower::ServiceExt as _;
    let replays = Arc::new(tokenkeeper::user::InMemoryLoginReplayStore::new());
    let keys = Arc::new(tokenkeeper::dpop::InMemoryDpopKeyStore::new());
    let app = app_with(Setup {
        insecure_cookies: true,
        replays: Some(replays.clone()),
        dpop: Some(Dpop::PerSession(keys.clone())),
        ..Setup::default()
    })
    .await;
    let browser = browser(false);
    let callback = start_login(&browser, &app).await;
    futures_util::stream::iter(0..100_000)
        .for_each_concurrent(64, |_| {
            let router = app.router.clone();
            async move {
                let request = axum::http::Request::get("/auth/login")
                    .body(axum::body::Body::empty())
                    .unwrap();
                let response = router.oneshot(request).await.unwrap();
                assert!(response.status().is_redirection());
            }
        })
        .await;
    assert_eq!(app.sessions.records(), 0);
    assert!(replays.is_empty());
    assert!(keys.is_empty() && keys.pending_len() == 0);
    let done = browser.get(callback).send().await.unwrap();
    assert!(done.status().is_redirection(), "{}", done.status());
    assert_eq!(get_text(&browser, format!("{}/me", app.url)).await, "alice");
    assert_eq!((replays.len(), keys.len()), (1, 1));
}

/// SEC-14 in `tokenkeeper-axum`: two logins in one provider session (same `sid`) get token
/// records of their own, and logging one out leaves the other's tokens alone; a new login in
/// the same web session forgets the one it replaces (same `sid`) or revokes it (another).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_14_one_login_one_token_record_in_axum() {
    let app = app(true).await;
    let mut same_sid = serde_json::Map::new();
    same_sid.insert("sid".into(), "sso-1".into());
    app.idp.set_id_token_claims(same_sid);
    let (a, b) = (browser(true), browser(true));
    for tab in [&a, &b] {
        let me = get_text(tab, format!("{}/auth/login?returnUrl=/me", app.url)).await;
        assert_eq!(me, "alice");
    }
    let key_a = get_text(&a, format!("{}/session-key", app.url)).await;
    let key_b = get_text(&b, format!("{}/session-key", app.url)).await;
    assert_ne!(key_a, key_b, "separate token records");
    let token_b = get_text(&b, format!("{}/token", app.url)).await;
    assert_ne!(get_text(&a, format!("{}/token", app.url)).await, token_b);

    let logout = get_text(&a, format!("{}/logout-url", app.url)).await;
    a.get(format!("{}{logout}", app.url)).send().await.unwrap();
    assert_eq!(app.idp.revocations(), 1);
    assert_eq!(get_text(&b, format!("{}/token", app.url)).await, token_b);
    let refreshed = get_text(&b, format!("{}/refresh", app.url)).await;
    assert!(!refreshed.starts_with("error"), "{refreshed}");

    // B logs in again in the same web session and the same provider session (same sid): B's
    // first login is forgotten, not revoked (the two share the provider's grant).
    let me = get_text(&b, format!("{}/auth/login?returnUrl=/me", app.url)).await;
    assert_eq!(me, "alice");
    assert_eq!(app.idp.revocations(), 1);
    let old = tokenkeeper::user::SessionKey::new(&key_b);
    assert!(app.oidc.users().store().get(&old).await.unwrap().is_none());
    let key_b2 = get_text(&b, format!("{}/session-key", app.url)).await;
    assert_ne!(key_b2, key_b);
    // A login of another provider session in the same web session revokes what it replaces.
    app.idp.set_id_token_claims(serde_json::Map::new());
    let me = get_text(&b, format!("{}/auth/login?returnUrl=/me", app.url)).await;
    assert_eq!(me, "alice");
    assert_eq!(app.idp.revocations(), 2);
    let old = tokenkeeper::user::SessionKey::new(&key_b2);
    assert!(app.oidc.users().store().get(&old).await.unwrap().is_none());
}

/// SEC-24: logout in `tokenkeeper-axum` needs, besides the session's `sid`, a request from the
/// app's own pages (`Sec-Fetch-Site: same-origin`, or an `Origin` that is the app's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_24_axum_logout_needs_a_same_origin_request() {
    let app = app(true).await;
    // One cookie jar, two browsers: one that sends `Sec-Fetch-Site` (same-origin by default),
    // one that sends none (an older browser).
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let modern = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .default_headers(
            [(
                reqwest::header::HeaderName::from_static("sec-fetch-site"),
                reqwest::header::HeaderValue::from_static("same-origin"),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .unwrap();
    let older = reqwest::Client::builder()
        .cookie_provider(jar)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let me = get_text(&modern, format!("{}/auth/login?returnUrl=/me", app.url)).await;
    assert_eq!(me, "alice");
    let logout = get_text(&modern, format!("{}/logout-url", app.url)).await;
    let url = format!("{}{logout}", app.url);
    // The right sid, from another site (a site that knows the SSO session's sid).
    for (client, headers) in [
        (&modern, vec![("sec-fetch-site", "cross-site")]),
        (&modern, vec![("sec-fetch-site", "same-site")]),
        (
            &modern,
            vec![
                ("sec-fetch-site", "cross-site"),
                ("origin", app.url.as_str()),
            ],
        ),
        (&older, vec![("origin", "https://evil.example")]),
        (&older, vec![]),
    ] {
        let mut request = client.get(&url);
        for (name, value) in &headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 403, "{headers:?}");
    }
    assert_eq!(get_text(&modern, format!("{}/me", app.url)).await, "alice");
    assert_eq!(app.idp.revocations(), 0);
    // An older browser on the app's own page: its Origin is the app's.
    let response = older
        .get(&url)
        .header("origin", &app.url)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_redirection(), "{}", response.status());
    assert_eq!(app.idp.revocations(), 1);
}
