//! PK-08: user tokens with DPoP, through the web login: `dpop_jkt` on the authorization
//! request, proofs on the code exchange and every refresh, the session's tokens presented with
//! proofs by the `UserHttpClient` (the session-bound middleware), per-session keys in the key
//! store and dropped at logout.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::*;
use serde_json::Value;
use tokenkeeper::dpop::{DpopAlgorithm, DpopKey, InMemoryDpopKeyStore};

fn claims(jwt: &str) -> Value {
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap()
}

/// Follows redirects by hand (to see each `Location`); returns the URLs visited.
async fn visit(browser: &reqwest::Client, start: String) -> Vec<String> {
    let mut url = start;
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(url.clone());
        let response = browser.get(&url).send().await.unwrap();
        let Some(location) = response.headers().get("location") else {
            break;
        };
        let location = location.to_str().unwrap();
        url = reqwest::Url::parse(&url)
            .unwrap()
            .join(location)
            .unwrap()
            .to_string();
    }
    seen
}

/// A tower service that sends `http` requests with reqwest.
#[derive(Clone)]
struct ViaReqwest;

impl tower_service::Service<axum::http::Request<String>> for ViaReqwest {
    type Response = axum::http::Response<String>;
    type Error = reqwest::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<String>) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let response = reqwest::Client::new()
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let status = response.status();
            let text = response.text().await?;
            let mut out = axum::http::Response::new(text);
            *out.status_mut() = status;
            Ok(out)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pk_08_user_tokens_with_dpop_per_session_and_per_client_keys() {
    for per_session in [true, false] {
        let keys = Arc::new(InMemoryDpopKeyStore::new());
        let client_key = Arc::new(DpopKey::generate(DpopAlgorithm::ES256).unwrap());
        let app = app_with(Setup {
            insecure_cookies: true,
            dpop: Some(if per_session {
                Dpop::PerSession(keys.clone() as Arc<dyn tokenkeeper::dpop::DpopKeyStore>)
            } else {
                Dpop::Client(client_key.clone())
            }),
            ..Setup::default()
        })
        .await;
        app.idp.set_rotate_refresh_tokens(true);
        let api = app.idp.start_api().await;
        api.set_nonce_required(true);
        let browser = browser(false);

        // dpop_jkt on the authorization request.
        let visited = visit(&browser, format!("{}/auth/login?returnUrl=/me", app.url)).await;
        let authorize: reqwest::Url = visited[1].parse().unwrap();
        let jkt = authorize
            .query_pairs()
            .find(|(k, _)| k == "dpop_jkt")
            .map(|(_, v)| v.into_owned())
            .expect("dpop_jkt on the authorization request");
        assert_eq!(get_text(&browser, format!("{}/me", app.url)).await, "alice");
        if per_session {
            assert_eq!(keys.len(), 1, "the session's key is in the key store");
            assert_eq!(keys.pending_len(), 0, "no longer a pending login's key");
            assert!(keys.get_now(&jkt).is_some());
            // Abandoned logins store no key at all: it travels sealed in their cookie (SEC-13).
            for _ in 0..3 {
                common::browser(false)
                    .get(format!("{}/auth/login", app.url))
                    .send()
                    .await
                    .unwrap();
            }
            assert_eq!((keys.len(), keys.pending_len()), (1, 0));
        } else {
            assert_eq!(jkt, client_key.thumbprint());
            assert!(keys.is_empty());
        }
        let cookies_and_pending: Vec<_> = visited.iter().filter(|u| u.contains("BEGIN")).collect();
        assert!(cookies_and_pending.is_empty(), "no key in any URL");

        // The code exchange carried a proof with that key; the token is bound to it.
        let exchange = app.idp.last_token_request().unwrap();
        assert_eq!(
            exchange.form_value("grant_type"),
            Some("authorization_code")
        );
        assert!(exchange.headers.contains_key("dpop"));
        let token = get_text(&browser, format!("{}/token", app.url)).await;
        assert_eq!(claims(&token)["cnf"]["jkt"], jkt.as_str());

        // The UserHttpClient presents it with proofs (and retries once for the API's nonce).
        let answer = get_text(
            &browser,
            format!("{}/call?url={}", app.url, api.url("/orders")),
        )
        .await;
        assert!(answer.starts_with("200 "), "{answer}");
        assert!(answer.contains(r#""scheme":"DPoP""#), "{answer}");
        assert_eq!((api.requests(), api.unauthorized()), (2, 1));

        // Every refresh carries a proof of the same key (the test server refuses another key
        // for a bound refresh token); the new token is bound to it too.
        for _ in 0..2 {
            let refreshed = get_text(&browser, format!("{}/refresh", app.url)).await;
            assert!(!refreshed.starts_with("error"), "{refreshed}");
            let request = app.idp.last_token_request().unwrap();
            assert_eq!(request.form_value("grant_type"), Some("refresh_token"));
            let proof = request.headers["dpop"].to_str().unwrap();
            assert_eq!(claims(&refreshed)["cnf"]["jkt"], jkt.as_str());
            assert_eq!(claims(proof)["htm"], "POST");
        }
        let answer = get_text(
            &browser,
            format!("{}/call?url={}", app.url, api.url("/after-refresh")),
        )
        .await;
        assert!(answer.starts_with("200 "), "{answer}");

        // The tower layer bound to the session presents it with proofs as well.
        let logout_url = get_text(&browser, format!("{}/logout-url", app.url)).await;
        let session = tokenkeeper::user::SessionKey::new(
            get_text(&browser, format!("{}/session-key", app.url)).await,
        );
        let layer = app
            .oidc
            .users()
            .layer(session, tokenkeeper::user::UserTokenParams::default());
        let mut service = tower_layer::Layer::layer(&layer, ViaReqwest);
        std::future::poll_fn(|cx| tower_service::Service::poll_ready(&mut service, cx))
            .await
            .unwrap();
        let request = axum::http::Request::post(api.url("/tower"))
            .body(String::from("{}"))
            .unwrap();
        let response = tower_service::Service::call(&mut service, request)
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.body());
        assert!(response.body().contains(r#""scheme":"DPoP""#));

        // Logout drops the session's key.
        visit(&browser, format!("{}{logout_url}", app.url)).await;
        assert_eq!(app.idp.revocations(), 1);
        assert!(keys.is_empty(), "the per-session key is gone after logout");
    }
}

/// A session that must log in again (`invalid_grant`) loses its key with its tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pk_08_a_refused_refresh_drops_the_sessions_key() {
    let keys = Arc::new(InMemoryDpopKeyStore::new());
    let app = app_with(Setup {
        insecure_cookies: true,
        dpop: Some(Dpop::PerSession(
            keys.clone() as Arc<dyn tokenkeeper::dpop::DpopKeyStore>
        )),
        ..Setup::default()
    })
    .await;
    let browser = browser(true);
    assert_eq!(
        get_text(&browser, format!("{}/auth/login?returnUrl=/me", app.url)).await,
        "alice"
    );
    assert_eq!(keys.len(), 1);
    let session = tokenkeeper::user::SessionKey::new(
        get_text(&browser, format!("{}/session-key", app.url)).await,
    );
    let refresh = app
        .oidc
        .users()
        .store()
        .get(&session)
        .await
        .unwrap()
        .unwrap()
        .value
        .refresh_token
        .clone()
        .unwrap();
    let revoked = reqwest::Client::new()
        .post(app.idp.revocation_endpoint())
        .basic_auth("web", Some("web-secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", refresh.secret()))
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success());
    let answer = get_text(&browser, format!("{}/refresh", app.url)).await;
    assert!(answer.contains("re-authentication required"), "{answer}");
    assert!(keys.is_empty(), "the key went with the tokens");
}
