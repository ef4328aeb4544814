//! BF-17 in headless Chromium against node oidc-provider: one BFF process, two SPAs on two
//! hosts (127.0.0.1 and 127.0.0.2, same port), each frontend its own client at the provider,
//! built from a `[[frontends]]` configuration file as `tokenkeeper bff` builds it. Logging into
//! one does not log into the other; logging out of one leaves the other alone.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::Provider;
use tokenkeeper_testing::Browser;

const PAGE: &str = r#"<!doctype html><meta charset=utf-8><title>app</title><p id=ready>app</p>
<script>
window.user = () => fetch('/bff/user', {headers: {'X-CSRF': '1'}})
  .then(r => r.ok ? r.json().then(c => ({status: r.status, claims: c})) : {status: r.status});
window.callApi = () => fetch('/api/x', {headers: {'X-CSRF': '1'}}).then(r => r.status);
</script>"#;

const USER: &str = "const done = arguments[arguments.length - 1]; window.user().then(done);";

/// The two frontends' server: one handler, a listener on 127.0.0.1 and one on 127.0.0.2 with
/// the same port (loopback only).
fn bind_both() -> (
    tokenkeeper_proxy::server::Bound,
    tokenkeeper_proxy::server::Bound,
    u16,
) {
    for _ in 0..20 {
        let one =
            tokenkeeper_proxy::server::Bound::bind("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        let port = one.local_addr().port();
        if let Ok(two) =
            tokenkeeper_proxy::server::Bound::bind(format!("127.0.0.2:{port}").parse().unwrap(), 1)
        {
            return (one, two, port);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_bf_17_two_spas_on_two_hosts_log_in_and_out_apart() {
    let (bound_one, bound_two, port) = bind_both();
    let one = format!("http://127.0.0.1:{port}");
    let two = format!("http://127.0.0.2:{port}");
    let provider =
        Provider::start(&[("BFF_ORIGIN", one.as_str()), ("BFF2_ORIGIN", two.as_str())]).await;

    // Both SPAs: the same page, served from each frontend's static files.
    let dir = std::env::temp_dir().join(format!("bf17-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), PAGE).unwrap();
    // The API behind both: answers 200 to anyone (the BFF decides who gets there).
    let api = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(|| async { "ok" });
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    };
    let text = format!(
        r#"
[bff]
listen = "127.0.0.1:{port}"
insecure_cookies = true
workers = 1

[[frontends]]
name = "one"
public_url = "{one}"
static_dir = {dir:?}

[frontends.oidc]
issuer = "{issuer}"
client_id = "bff"
client_secret = "bff-secret"

[[frontends.routes]]
path = "/api"
upstream = "{api}"

[[frontends]]
name = "two"
public_url = "{two}"
static_dir = {dir:?}

[frontends.oidc]
issuer = "{issuer}"
client_id = "bff2"
client_secret = "bff2-secret"

[[frontends.routes]]
path = "/api"
upstream = "{api}"
"#,
        issuer = provider.issuer,
        dir = dir.display().to_string(),
    );
    let config = tokenkeeper_bff::config::BffConfig::parse(&text).unwrap();
    let validated = config.validate(&text, &|_| None).unwrap();
    let host = tokenkeeper_bff::host::build(&validated).unwrap();
    let options = tokenkeeper_proxy::server::ServerOptions {
        workers: 1,
        ..Default::default()
    };
    let handler = Arc::new(host.handler().clone());
    let _one = bound_one.serve(handler.clone(), &options).unwrap();
    let _two = bound_two.serve(handler, &options).unwrap();

    let browser = Browser::start().await;
    // Log into one.
    browser
        .go(&format!("{one}/bff/login?prompt=consent&returnUrl=/app"))
        .await;
    common::provider_login_in_browser(&browser, "erin").await;
    let user = browser.async_script(USER).await;
    assert_eq!(user["status"], 200, "{user}");
    let claims = user["claims"].as_array().unwrap();
    assert!(claims
        .iter()
        .any(|c| c["type"] == "sub" && c["value"] == "erin"));
    let api = "const done = arguments[arguments.length - 1]; window.callApi().then(done);";
    assert_eq!(browser.async_script(api).await, 200);

    // Two does not know erin: its own cookie, its own session, its own client.
    browser.go(&format!("{two}/app")).await;
    browser
        .until(
            "two's app",
            "return document.getElementById('ready') !== null",
        )
        .await;
    assert_eq!(browser.async_script(USER).await["status"], 401);
    assert_eq!(browser.async_script(api).await, 401);

    // Log into two (the provider remembers erin; consent for the second client).
    browser
        .go(&format!("{two}/bff/login?prompt=consent&returnUrl=/app"))
        .await;
    common::provider_login_in_browser(&browser, "erin").await;
    assert_eq!(browser.async_script(USER).await["status"], 200);
    assert_eq!(browser.async_script(api).await, 200);

    // Log out of one (RP-initiated: confirmed on the provider's page).
    browser.go(&format!("{one}/app")).await;
    browser
        .until(
            "one's app",
            "return document.getElementById('ready') !== null",
        )
        .await;
    let user = browser.async_script(USER).await;
    let logout = common::logout_url(&user["claims"]);
    common::logout_in_browser(&browser, &one, &logout).await;
    browser
        .until(
            "back on one",
            &format!("return location.href.startsWith('{one}/')"),
        )
        .await;
    browser.go(&format!("{one}/app")).await;
    browser
        .until(
            "one's app",
            "return document.getElementById('ready') !== null",
        )
        .await;
    assert_eq!(
        browser.async_script(USER).await["status"],
        401,
        "one logged out"
    );

    // Two is still logged in, and its API calls still carry its token.
    browser.go(&format!("{two}/app")).await;
    browser
        .until(
            "two's app",
            "return document.getElementById('ready') !== null",
        )
        .await;
    let user = browser.async_script(USER).await;
    assert_eq!(user["status"], 200, "two is left alone: {user}");
    assert_eq!(browser.async_script(api).await, 200);
    browser.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
