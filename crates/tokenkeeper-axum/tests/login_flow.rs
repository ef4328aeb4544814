//! OpenID Connect login in axum against the test server (WL-01 … WL-03, UT-08 through the web).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use tokenkeeper_axum::SessionStoreUserTokenStore;
use tower_sessions::MemoryStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wl_login_call_and_logout_through_the_web() {
    let app = app(true).await;
    let browser = browser(true);
    assert_eq!(
        browser
            .get(format!("{}/me", app.url))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    let page = browser
        .get(format!("{}/auth/login?returnUrl=/me", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(
        page.text().await.unwrap(),
        "alice",
        "logged in and sent back to returnUrl"
    );

    let token = get_text(&browser, format!("{}/token", app.url)).await;
    let claims = app.idp.verify_access_token(&token).unwrap();
    assert_eq!(claims["sub"], "alice");

    let logout_url = get_text(&browser, format!("{}/logout-url", app.url)).await;
    assert!(logout_url.starts_with("/auth/logout?sid="), "{logout_url}");
    let home = browser
        .get(format!("{}{logout_url}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        home.text().await.unwrap(),
        "home",
        "RP-initiated logout came back to the app"
    );
    assert_eq!(app.idp.end_sessions(), 1);
    assert_eq!(app.idp.revocations(), 1, "the refresh token was revoked");
    assert_eq!(
        browser
            .get(format!("{}/me", app.url))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let _ = &app.oidc;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wl_01_login_redirect_carries_state_nonce_pkce_and_open_redirects_are_refused() {
    let app = app(true).await;
    let browser = browser(false);
    let evil = browser
        .get(format!(
            "{}/auth/login?returnUrl=https://evil.example.com/",
            app.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), 400, "a foreign returnUrl is refused");
    let response = browser
        .get(format!(
            "{}/auth/login?returnUrl=/orders%3Fpage%3D2",
            app.url
        ))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_redirection());
    let location: url::Url = response.headers()["location"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let query: std::collections::HashMap<String, String> =
        location.query_pairs().into_owned().collect();
    assert_eq!(query["response_type"], "code");
    assert_eq!(query["code_challenge_method"], "S256");
    assert!(
        query.contains_key("state")
            && query.contains_key("nonce")
            && query.contains_key("code_challenge")
    );
    // Complete the login: back to the local returnUrl.
    let idp = browser.get(location).send().await.unwrap();
    let callback = idp.headers()["location"].to_str().unwrap().to_owned();
    let done = browser.get(&callback).send().await.unwrap();
    assert_eq!(done.headers()["location"], "/orders?page=2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wl_02_callback_refuses_bad_state_wrong_iss_and_replays() {
    let app = app(true).await;
    let browser = browser(false);
    let start = |b: reqwest::Client, url: String| async move {
        let response = b.get(format!("{url}/auth/login")).send().await.unwrap();
        let to_idp = response.headers()["location"].to_str().unwrap().to_owned();
        let idp = b.get(to_idp).send().await.unwrap();
        url::Url::parse(idp.headers()["location"].to_str().unwrap()).unwrap()
    };
    let with = |url: &url::Url, key: &str, value: Option<&str>| {
        let mut url = url.clone();
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .into_owned()
            .filter(|(k, _)| k != key)
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        if let Some(v) = value {
            url.query_pairs_mut().append_pair(key, v);
        }
        url
    };
    // No login pending.
    let callback = start(browser.clone(), app.url.clone()).await;
    let fresh = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    assert_eq!(
        fresh.get(callback.clone()).send().await.unwrap().status(),
        400
    );
    // A wrong or missing state.
    assert_eq!(
        browser
            .get(with(&callback, "state", Some("forged")))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    let callback = start(browser.clone(), app.url.clone()).await;
    assert_eq!(
        browser
            .get(with(&callback, "state", None))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    // A wrong or missing iss (RFC 9207).
    let callback = start(browser.clone(), app.url.clone()).await;
    assert_eq!(
        browser
            .get(with(&callback, "iss", Some("http://127.0.0.1:9")))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    let callback = start(browser.clone(), app.url.clone()).await;
    assert_eq!(
        browser
            .get(with(&callback, "iss", None))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    // A good callback works once; its replay is refused.
    let callback = start(browser.clone(), app.url.clone()).await;
    assert!(browser
        .get(callback.clone())
        .send()
        .await
        .unwrap()
        .status()
        .is_redirection());
    assert_eq!(browser.get(callback).send().await.unwrap().status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wl_03_session_cookie_is_httponly_lax_and_secure_unless_disabled() {
    for (insecure, secure_expected) in [(false, true), (true, false)] {
        let app = app(insecure).await;
        let browser = browser(false);
        let response = browser
            .get(format!("{}/auth/login", app.url))
            .send()
            .await
            .unwrap();
        let login_cookie = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_owned();
        // The login's own cookie; the browser's cookie jar will not send a Secure cookie over
        // plain http, so complete the login by hand.
        let state = login_cookie
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_owned();
        let to_idp = response.headers()["location"].to_str().unwrap().to_owned();
        let idp = browser.get(to_idp).send().await.unwrap();
        let callback = idp.headers()["location"].to_str().unwrap().to_owned();
        let name = if insecure {
            "tk.login"
        } else {
            "__Host-tk.login"
        };
        let done = browser
            .get(&callback)
            .header("cookie", format!("{name}={state}"))
            .send()
            .await
            .unwrap();
        assert!(done.status().is_redirection(), "{}", done.status());
        let session_cookie = done
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|c| c.contains("tk.sid="))
            .unwrap();
        for cookie in [&login_cookie, &session_cookie] {
            assert!(cookie.contains("HttpOnly"), "{cookie}");
            assert!(cookie.contains("SameSite=Lax"), "{cookie}");
            assert!(cookie.contains("Path=/"), "{cookie}");
            assert_eq!(cookie.contains("Secure"), secure_expected, "{cookie}");
            // SEC-07: a Secure cookie is pinned to this host by the __Host- prefix.
            assert_eq!(cookie.starts_with("__Host-"), secure_expected, "{cookie}");
        }
    }
}

#[tokio::test]
async fn session_store_backed_user_token_store_compares_versions() {
    use tokenkeeper::user::{SessionKey, StoreOutcome, UserTokenStore, UserTokens};
    let store = SessionStoreUserTokenStore::plaintext(MemoryStore::default());
    let key = SessionKey::new("session-1");
    assert!(store.get(&key).await.unwrap().is_none());
    let tokens = Arc::new(UserTokens {
        refresh_token: Some("rt-1".into()),
        ..UserTokens::default()
    });
    assert_eq!(
        store.store(&key, tokens.clone(), None).await.unwrap(),
        StoreOutcome::Stored(1)
    );
    assert_eq!(
        store.store(&key, tokens.clone(), None).await.unwrap(),
        StoreOutcome::Conflict
    );
    let stored = store.get(&key).await.unwrap().unwrap();
    assert_eq!(stored.version, 1);
    assert_eq!(
        stored.value.refresh_token.as_ref().unwrap().secret(),
        "rt-1"
    );
    assert_eq!(
        store.store(&key, tokens, Some(1)).await.unwrap(),
        StoreOutcome::Stored(2)
    );
    store.clear(&key).await.unwrap();
    assert!(store.get(&key).await.unwrap().is_none());
}

/// RS-03 at the web edge: mutated callbacks (query values, raw query bytes, session cookies) are
/// refused with a 4xx — never a panic (a dropped connection) or a 5xx — and only the genuine,
/// untouched callback logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs_03_callback_survives_any_query_and_cookie() {
    use tokenkeeper_testing::fuzz::{cases, Mutator};
    let app = app(true).await;
    let client = browser(false);
    let mut mutator = Mutator::from_env();
    let mut logged_in = 0;
    for case in 0..cases(300) {
        // A pending login: its session cookie and the provider's genuine callback.
        let login = client
            .get(format!("{}/auth/login", app.url))
            .send()
            .await
            .unwrap();
        let cookie = login.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let to_idp = login.headers()["location"].to_str().unwrap().to_owned();
        let idp = client.get(to_idp).send().await.unwrap();
        let genuine = url::Url::parse(idp.headers()["location"].to_str().unwrap()).unwrap();

        let mut callback = genuine.clone();
        let mut cookie_sent = cookie.clone();
        match mutator.rng().u8(..4) {
            0 => {
                // Mutate one parameter's value, drop one, or add a provider error.
                let pairs: Vec<(String, String)> = genuine.query_pairs().into_owned().collect();
                let at = mutator.rng().usize(..pairs.len());
                let mut out = Vec::new();
                for (i, (k, v)) in pairs.into_iter().enumerate() {
                    if i != at {
                        out.push((k, v));
                    } else if mutator.rng().bool() {
                        out.push((k, mutator.mutate_text(&[v])));
                    }
                }
                if mutator.rng().u8(..4) == 0 {
                    out.push((
                        "error".into(),
                        mutator.mutate_text(&["access_denied".into()]),
                    ));
                }
                callback.query_pairs_mut().clear().extend_pairs(out);
            }
            1 => {
                let raw = mutator.mutate_text(&[genuine.query().unwrap_or_default().to_owned()]);
                callback.set_query(Some(&raw));
            }
            2 => cookie_sent = mutator.mutate_text(std::slice::from_ref(&cookie)),
            _ => {}
        }
        let untouched = callback == genuine && cookie_sent == cookie;
        let mut request = client.get(callback.clone());
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&cookie_sent) {
            request = request.header(reqwest::header::COOKIE, value);
        }
        let response = request.send().await.unwrap_or_else(|e| {
            panic!(
                "case {case} (TK_FUZZ_SEED={}): no response ({e}) for {callback}",
                mutator.seed()
            )
        });
        let status = response.status();
        assert!(
            status.is_redirection() || status.is_client_error(),
            "case {case} (TK_FUZZ_SEED={}): HTTP {status} for {callback}",
            mutator.seed()
        );
        if status.is_redirection() {
            // Unknown parameters are ignored; the ones that matter must be the genuine ones.
            let relevant = |url: &url::Url| -> Vec<(String, String)> {
                url.query_pairs()
                    .into_owned()
                    .filter(|(k, _)| ["code", "state", "iss", "error"].contains(&k.as_str()))
                    .collect()
            };
            assert!(
                untouched || relevant(&callback) == relevant(&genuine),
                "case {case}: a tampered callback logged in: {callback}"
            );
            logged_in += 1;
        } else {
            assert!(
                !untouched,
                "case {case}: the genuine callback was refused: HTTP {status}"
            );
        }
    }
    assert!(logged_in > 0, "genuine callbacks still log in");
}

/// PR-04 in the axum integration: an API's RFC 9470 challenge reaches the handler as it is
/// (the middleware does not renew the token for it), `step_up_challenge` reads it,
/// `Oidc::step_up_url` makes the step-up login, whose ID token must meet it, and the user comes
/// back with a token the API accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pr_04_step_up_through_the_axum_integration() {
    use tokenkeeper::protocol::step_up::step_up_challenge;
    let app = app(true).await;
    app.idp.set_login_acr(Some("urn:pwd"), Some("urn:mfa"));
    // An API that wants acr urn:mfa.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_url = format!("http://{}/orders", listener.local_addr().unwrap());
    let idp = app.idp.clone();
    let api = axum::Router::new().route(
        "/orders",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let idp = idp.clone();
            async move {
                let token = headers["authorization"].to_str().unwrap()[7..].to_owned();
                let claims = idp.verify_access_token(&token).unwrap();
                if claims.get("acr").and_then(|a| a.as_str()) == Some("urn:mfa") {
                    (axum::http::StatusCode::OK, [("www-authenticate", "")], "strong")
                } else {
                    (
                        axum::http::StatusCode::UNAUTHORIZED,
                        [(
                            "www-authenticate",
                            r#"Bearer error="insufficient_user_authentication", acr_values="urn:mfa""#,
                        )],
                        "weak",
                    )
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, api).await });
    let browser = browser(true);
    let page = browser
        .get(format!("{}/auth/login?returnUrl=/me", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.text().await.unwrap(), "alice");
    let refreshes = app.idp.token_requests("refresh_token");
    let call = |browser: reqwest::Client| {
        let url = format!(
            "{}/call?url={}",
            app.url,
            url::form_urlencoded::byte_serialize(api_url.as_bytes()).collect::<String>()
        );
        async move { get_text(&browser, url).await }
    };
    assert_eq!(call(browser.clone()).await, "401 weak");
    assert_eq!(
        app.idp.token_requests("refresh_token"),
        refreshes,
        "not renewed"
    );
    // What the handler reads from the API's answer, and the link it sends the user to.
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        "www-authenticate",
        r#"Bearer error="insufficient_user_authentication", acr_values="urn:mfa""#
            .parse()
            .unwrap(),
    );
    let needs = step_up_challenge(&headers).unwrap();
    let link = app.oidc.step_up_url(&needs, "/me");
    let page = browser
        .get(format!("{}{link}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        page.text().await.unwrap(),
        "alice",
        "back where the user was"
    );
    assert_eq!(call(browser.clone()).await, "200 strong");
    // A provider that does not meet the step-up: the login is refused.
    app.idp.set_login_acr(Some("urn:pwd"), None);
    let page = browser
        .get(format!("{}{link}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 400);
}
