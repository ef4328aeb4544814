//! The BFF in headless Chromium against node oidc-provider: log in through the provider's own
//! pages, call the API through the proxy, let the access token expire and call again
//! (refreshed), log out (RP-initiated, confirmed on the provider's page) — and the refresh
//! token is revoked, as the provider's introspection says.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};

use axum::response::IntoResponse;
use common::Provider;
use tokenkeeper::ClientConfig;
use tokenkeeper_axum::{Oidc, OidcConfig};
use tokenkeeper_bff::{ApiRoute, Bff, BffOptions, RouteToken};
use tokenkeeper_testing::Browser;

const PAGE: &str = r#"<!doctype html><meta charset=utf-8><title>app</title><p id=ready>app</p>
<script>
window.callApi = () => fetch('/api/x', {headers: {'X-CSRF': '1'}}).then(r => r.text());
</script>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_bff_in_chromium_login_refresh_and_revoking_logout() {
    // The BFF's address first: the provider registers its callback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let provider = Provider::start(&[("BFF_ORIGIN", origin.as_str()), ("TOKEN_TTL", "2")]).await;

    // The upstream API: remembers the tokens it was sent.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let upstream = {
        let seen = seen.clone();
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", api.local_addr().unwrap());
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let seen = seen.clone();
            async move {
                let token = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                seen.lock().unwrap().push(token.clone());
                token.into_response()
            }
        });
        tokio::spawn(async move { axum::serve(api, app).await });
        url
    };

    let mut config = OidcConfig::new(
        provider.issuer.clone(),
        "bff",
        "bff-secret",
        format!("{origin}/bff/callback"),
    );
    config.insecure_cookies = true;
    let users = tokenkeeper::user::UserTokenManager::builder(ClientConfig::from_issuer(
        provider.issuer.clone(),
        "bff",
        "bff-secret",
    ))
    .build()
    .unwrap();
    let bff = Bff::new(
        Oidc::new(config, users).unwrap(),
        BffOptions {
            insecure_cookies: true,
            ..BffOptions::default()
        }
        .route(ApiRoute::new("/api", upstream.parse().unwrap()).token(RouteToken::User)),
    )
    .unwrap();
    let app: axum::Router = axum::Router::new()
        .route(
            "/app",
            axum::routing::get(|| async { ([("content-type", "text/html")], PAGE) }),
        )
        .merge(bff.router());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let browser = Browser::start().await;
    // `prompt=consent`: this provider issues refresh tokens only with consent.
    browser
        .go(&format!("{origin}/bff/login?prompt=consent&returnUrl=/app"))
        .await;
    common::provider_login_in_browser(&browser, "dana").await;

    // The API through the proxy, with dana's token.
    let call = "const done = arguments[arguments.length - 1]; window.callApi().then(done);";
    let first = browser.async_script(call).await;
    assert!(first.as_str().unwrap().starts_with("Bearer "), "{first}");

    // The 2 s token expires: a later call carries a refreshed one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let refreshed = loop {
        let token = browser.async_script(call).await;
        if token != first {
            break token;
        }
        assert!(std::time::Instant::now() < deadline, "no refreshed token");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        refreshed.as_str().unwrap().starts_with("Bearer "),
        "{refreshed}"
    );

    // The session's refresh token, before logout.
    let session = bff
        .sessions()
        .find(Some("dana"), None)
        .await
        .unwrap()
        .remove(0);
    let stored = bff
        .oidc()
        .users()
        .store()
        .get(&session.key())
        .await
        .unwrap()
        .unwrap();
    let refresh = stored.value.refresh_token.clone().unwrap();
    let introspect = |token: String| {
        let issuer = provider.issuer.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{issuer}/token/introspection"))
                .basic_auth("bff", Some("bff-secret"))
                .form(&[("token", token.as_str())])
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        introspect(refresh.secret().to_owned()).await["active"],
        true
    );

    // Logout: the BFF revokes, then the provider asks to confirm the sign-out.
    let user = browser
        .async_script(
            "const done = arguments[arguments.length - 1]; fetch('/bff/user', {headers: {'X-CSRF': '1'}}).then(r => r.json()).then(done);",
        )
        .await;
    let logout = common::logout_url(&user);
    common::logout_in_browser(&browser, &origin, &logout).await;
    assert_eq!(
        introspect(refresh.secret().to_owned()).await["active"],
        false,
        "the refresh token was revoked at logout"
    );
    let status = browser
        .async_script(
            &format!("const done = arguments[arguments.length - 1]; fetch('{origin}/bff/user', {{headers: {{'X-CSRF': '1'}}}}).then(r => done(r.status)).catch(() => done(0));"),
        )
        .await;
    assert!(status == 401 || status == 0, "{status}");
    assert!(bff
        .sessions()
        .find(Some("dana"), None)
        .await
        .unwrap()
        .is_empty());
    browser.close().await;
}
