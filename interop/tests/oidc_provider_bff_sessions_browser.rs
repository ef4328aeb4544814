//! SEC-13 and SEC-14 in headless Chromium against node oidc-provider with back-channel logout
//! on (its ID tokens then carry `sid`, one per SSO session): one app served on two hosts
//! (127.0.0.1 and 127.0.0.2: two cookie jars in one browser profile), sharing one token store
//! and one session store. 10,000 anonymous logins in the middle of a real one leave it working
//! and store nothing; two logins in one SSO session (same `sid`) get separate tokens; logging
//! one out leaves the other working; the provider's back-channel logout for that `sid` then
//! ends the other too.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use axum::response::IntoResponse;
use common::{provider_login_in_browser, Provider};
use futures_util::StreamExt as _;
use tokenkeeper::ClientConfig;
use tokenkeeper_axum::{Oidc, OidcConfig};
use tokenkeeper_bff::{
    ApiRoute, Bff, BffOptions, BffSessionStore, InMemoryBffSessionStore, RouteToken,
};
use tokenkeeper_testing::Browser;

const PAGE: &str = r#"<!doctype html><meta charset=utf-8><title>app</title><p id=ready>app</p>
<script>
window.call = () => fetch('/api/x', {headers: {'X-CSRF': '1'}}).then(async r => r.status + ' ' + await r.text());
window.user = () => fetch('/bff/user', {headers: {'X-CSRF': '1'}}).then(async r => r.status === 200 ? r.json() : r.status);
</script>"#;

const CALL: &str = "const done = arguments[arguments.length - 1]; window.call().then(done);";
const USER: &str = "const done = arguments[arguments.length - 1]; window.user().then(done);";

/// Logs in at `origin` through the provider's pages (the login form when the provider has no
/// session yet, then consent), ending on the app's page.
async fn log_in(browser: &Browser, origin: &str) {
    browser
        .go(&format!("{origin}/bff/login?prompt=consent&returnUrl=/app"))
        .await;
    provider_login_in_browser(browser, "erin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_sec_13_sec_14_in_chromium_two_logins_one_sid() {
    let listener_a = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener_b = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let origin_a = format!("http://{}", listener_a.local_addr().unwrap());
    let origin_b = format!("http://{}", listener_b.local_addr().unwrap());
    let provider = Provider::start(&[
        ("BFF_ORIGINS", &format!("{origin_a},{origin_b}")),
        ("BACKCHANNEL", "1"),
    ])
    .await;

    let upstream = {
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", api.local_addr().unwrap());
        let app = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
                .into_response()
        });
        tokio::spawn(async move { axum::serve(api, app).await });
        url
    };

    // One token store and one session store for both hosts (a fleet behind two names).
    let users = tokenkeeper::user::UserTokenManager::builder(ClientConfig::from_issuer(
        provider.issuer.clone(),
        "bff",
        "bff-secret",
    ))
    .build()
    .unwrap();
    let sessions = Arc::new(InMemoryBffSessionStore::new());
    let replays = Arc::new(tokenkeeper::user::InMemoryLoginReplayStore::new());
    let mut apps = Vec::new();
    for (listener, origin) in [(listener_a, &origin_a), (listener_b, &origin_b)] {
        let mut config = OidcConfig::new(
            provider.issuer.clone(),
            "bff",
            "bff-secret",
            format!("{origin}/bff/callback"),
        );
        config.insecure_cookies = true;
        let oidc = Oidc::new(config, users.clone())
            .unwrap()
            .with_login_replay_store(replays.clone());
        let bff = Bff::with_store(
            oidc,
            BffOptions {
                insecure_cookies: true,
                ..BffOptions::default()
            }
            .route(ApiRoute::new("/api", upstream.parse().unwrap()).token(RouteToken::User)),
            sessions.clone(),
            None,
        )
        .unwrap();
        let app: axum::Router = axum::Router::new()
            .route(
                "/app",
                axum::routing::get(|| async { ([("content-type", "text/html")], PAGE) }),
            )
            .merge(bff.router());
        let served = app.clone();
        tokio::spawn(async move { axum::serve(listener, served).await });
        apps.push((bff, app));
    }

    let browser = Browser::start().await;

    // SEC-13: a real login waits at the provider's login page while 10,000 anonymous logins
    // hit the BFF; then it completes.
    browser
        .go(&format!(
            "{origin_a}/bff/login?prompt=consent&returnUrl=/app"
        ))
        .await;
    browser
        .until(
            "the provider's login form",
            "return document.querySelector('input[name=login]') !== null",
        )
        .await;
    {
        use tower::ServiceExt as _;
        let app = apps[0].1.clone();
        futures_util::stream::iter(0..10_000)
            .for_each_concurrent(64, |_| {
                let app = app.clone();
                async move {
                    let request = axum::http::Request::get("/bff/login")
                        .body(axum::body::Body::empty())
                        .unwrap();
                    let response = app.oneshot(request).await.unwrap();
                    assert_eq!(response.status(), 303);
                }
            })
            .await;
    }
    assert!(
        sessions.is_empty() && replays.is_empty(),
        "nothing stored for them"
    );
    provider_login_in_browser(&browser, "erin").await;
    let call_a = browser.async_script(CALL).await;
    assert!(
        call_a.as_str().unwrap().starts_with("200 Bearer "),
        "{call_a}"
    );

    // SEC-14: a second login in the same SSO session, on the other host of the same app.
    log_in(&browser, &origin_b).await;
    let call_b = browser.async_script(CALL).await;
    assert!(
        call_b.as_str().unwrap().starts_with("200 Bearer "),
        "{call_b}"
    );
    assert_ne!(call_a, call_b, "separate tokens");
    let found = sessions.find(Some("erin"), None).await.unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].sid, found[1].sid, "one provider session: one sid");
    assert_ne!(found[0].key(), found[1].key(), "two token records");

    // Log A out (the BFF ends its session and revokes its refresh token, then sends the
    // browser to the provider, which asks to confirm): B keeps working.
    browser.go(&format!("{origin_a}/app")).await;
    let user = browser.async_script(USER).await;
    let logout = common::logout_url(&user);
    browser.go(&format!("{origin_a}{logout}")).await;
    browser
        .until(
            "the provider's sign-out confirmation",
            "return document.querySelector('form') !== null",
        )
        .await;
    assert_eq!(sessions.find(Some("erin"), None).await.unwrap().len(), 1);
    browser.go(&format!("{origin_b}/app")).await;
    let still = browser.async_script(CALL).await;
    assert_eq!(still, call_b, "B's session and tokens are untouched");
    browser.go(&format!("{origin_a}/app")).await;
    assert_eq!(browser.async_script(USER).await, 401, "A is logged out");

    // Confirming the sign-out ends the SSO session; the provider's back-channel logout for
    // that sid ends B's session too.
    browser
        .go(&format!("{}/session/end", provider.issuer))
        .await;
    browser
        .until(
            "the provider's sign-out confirmation",
            "return document.querySelector('form') !== null",
        )
        .await;
    browser
        .script("document.querySelector('button[name=logout][value=yes]').click()")
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !sessions.find(Some("erin"), None).await.unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the back-channel logout did not end B's session"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    browser.go(&format!("{origin_b}/app")).await;
    assert_eq!(
        browser.async_script(USER).await,
        401,
        "B ended by the back-channel"
    );
    browser.close().await;
}
