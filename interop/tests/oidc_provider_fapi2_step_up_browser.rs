//! PR-03 and PR-04 in headless Chromium against node oidc-provider: a BFF built from a
//! configuration file with `profile = "fapi2"` (its `fapi-dpop` client at the provider's FAPI 2.0
//! profile: pushed requests, `private_key_jwt`, per-session DPoP) logs a user in; the SPA calls
//! an API that wants `acr` `urn:mfa` (RFC 9470); the BFF answers with a structured 401 whose
//! `login_url` the page follows; the provider asks the user to log in again, more strongly; the
//! user is back on the page, and the API accepts the new token.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::Provider;
use tokenkeeper_testing::Browser;

const PAGE: &str = r#"<!doctype html><meta charset=utf-8><title>app</title><p id=ready>app</p>
<script>
window.callApi = () => fetch('/api/orders', {headers: {'X-CSRF': '1'}})
  .then(r => r.text().then(t => ({status: r.status, body: t})));
window.user = () => fetch('/bff/user', {headers: {'X-CSRF': '1'}}).then(r => r.json());
</script>"#;

const CALL: &str = "const done = arguments[arguments.length - 1]; window.callApi().then(done);";

/// A PEM (PKCS#8) private key and its public JWK.
fn client_key() -> (String, serde_json::Value) {
    use base64::Engine as _;
    let alg = tokenkeeper::dpop::DpopAlgorithm::ES256;
    let der = tokenkeeper::dpop::DpopKey::generate(alg)
        .unwrap()
        .to_pkcs8_der()
        .unwrap();
    let jwk = tokenkeeper::PrivateKeyJwt::new(
        tokenkeeper::dpop::DpopKey::from_pkcs8_der(&der, alg).unwrap(),
    )
    .public_jwk();
    let body = base64::engine::general_purpose::STANDARD.encode(&der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    (
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        ),
        jwk,
    )
}

/// Goes through the provider's pages (login when asked, consent when asked) until the app.
async fn through_provider(browser: &Browser, user: &str) {
    for _ in 0..6 {
        let page = browser
            .until(
                "the provider's login or consent form, or the app",
                "if (location.pathname === '/app' && document.getElementById('ready')) return 'app'; \
                 if (!location.pathname.startsWith('/interaction') || !document.querySelector('form')) return null; \
                 return document.querySelector('input[name=login]') ? 'login' : 'consent';",
            )
            .await;
        match page.as_str().unwrap() {
            "app" => return,
            "login" => {
                browser
                    .script(&format!(
                        "document.querySelector('input[name=login]').value = {};\
                         document.querySelector('input[name=password]').value = 'any';\
                         document.querySelector('form').submit();",
                        serde_json::Value::from(user)
                    ))
                    .await;
            }
            _ => {
                browser
                    .script("document.querySelector('form').submit()")
                    .await;
            }
        }
        // Wait for the page to change before looking again.
        browser
            .until(
                "the next page",
                "return document.readyState === 'complete' ? true : null",
            )
            .await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the login did not come back to the app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pr_03_pr_04_fapi2_bff_login_and_step_up_in_chromium() {
    let bound = tokenkeeper_proxy::server::Bound::bind("127.0.0.1:0".parse().unwrap(), 1).unwrap();
    let origin = format!("http://{}", bound.local_addr());
    let (pem, jwk) = client_key();
    let jwks = serde_json::json!({ "keys": [jwk] }).to_string();
    let redirect = format!("{origin}/bff/callback");
    let provider = Provider::start(&[
        ("LOGIN_JWKS", jwks.as_str()),
        ("LOGIN_REDIRECTS", redirect.as_str()),
    ])
    .await;

    // The API: wants a token whose acr is urn:mfa (RFC 9470), says so otherwise.
    let api = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
            let token = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once(' '))
                .map(|(scheme, token)| (scheme.to_owned(), token.to_owned()));
            let Some((scheme, token)) = token else {
                return (axum::http::StatusCode::UNAUTHORIZED, [("www-authenticate", "")], "no token".to_owned());
            };
            let acr = common::jwt_claims(&token)["acr"].as_str().map(str::to_owned);
            if acr.as_deref() == Some("urn:mfa") {
                (axum::http::StatusCode::OK, [("www-authenticate", "")], format!("{scheme} strong"))
            } else {
                (
                    axum::http::StatusCode::UNAUTHORIZED,
                    [(
                        "www-authenticate",
                        r#"DPoP error="insufficient_user_authentication", acr_values="urn:mfa", algs="ES256""#,
                    )],
                    "weak".to_owned(),
                )
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    };
    let dir = std::env::temp_dir().join(format!("pr04-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), PAGE).unwrap();
    let text = format!(
        r#"
[bff]
listen = "{listen}"
public_url = "{origin}"
insecure_cookies = true
static_dir = {dir:?}
workers = 1

[oidc]
issuer = "{issuer}"
client_id = "fapi-dpop"
private_key_env = "FAPI_KEY"
dpop = "per-session"
profile = "fapi2"
scope = "openid offline_access api:read"
resource = "urn:tokenkeeper:api"

[[routes]]
path = "/api"
upstream = "{api}"
"#,
        listen = bound.local_addr(),
        issuer = provider.issuer,
        dir = dir.display().to_string(),
    );
    let config = tokenkeeper_bff::config::BffConfig::parse(&text).unwrap();
    let validated = config
        .validate(&text, &|name| (name == "FAPI_KEY").then(|| pem.clone()))
        .unwrap();
    assert_eq!(
        validated.frontends[0].profile,
        tokenkeeper::protocol::profile::Profile::Fapi2
    );
    let host = tokenkeeper_bff::host::build(&validated).unwrap();
    let options = tokenkeeper_proxy::server::ServerOptions {
        workers: 1,
        ..Default::default()
    };
    let _server = bound
        .serve(Arc::new(host.handler().clone()), &options)
        .unwrap();

    let browser = Browser::start().await;
    browser
        .go(&format!("{origin}/bff/login?prompt=consent&returnUrl=/app"))
        .await;
    // The browser went to the provider with only client_id and request_uri (pushed).
    browser
        .until(
            "the provider's interaction",
            "return location.pathname.startsWith('/interaction') ? true : null",
        )
        .await;
    through_provider(&browser, "frank").await;

    // The API wants more: the BFF's structured 401 names the step-up login.
    let answer = browser.async_script(CALL).await;
    assert_eq!(answer["status"], 401, "{answer}");
    let body: serde_json::Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"], "insufficient_user_authentication");
    assert_eq!(body["acr_values"], "urn:mfa");
    let login_url = body["login_url"].as_str().unwrap().to_owned();
    browser
        .script(&format!(
            "location.href = {} + '&returnUrl=' + encodeURIComponent('/app');",
            serde_json::Value::from(login_url)
        ))
        .await;
    browser
        .until(
            "the provider asking for a login again",
            "return location.pathname.startsWith('/interaction') && document.querySelector('input[name=login]') ? true : null",
        )
        .await;
    through_provider(&browser, "frank").await;

    // Back on the page, and the API takes the stronger (DPoP-bound) token: the session it
    // replaced shared its grant at the provider, and was forgotten rather than revoked (which
    // would have revoked the grant, the new session's tokens with it).
    let answer = browser.async_script(CALL).await;
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"], "DPoP strong");
    let user = browser
        .async_script("const done = arguments[arguments.length - 1]; window.user().then(done);")
        .await;
    let acr = user
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "acr")
        .map(|c| c["value"].clone());
    assert_eq!(acr, Some(serde_json::Value::from("urn:mfa")), "{user}");
    let _ = std::fs::remove_dir_all(&dir);
}
