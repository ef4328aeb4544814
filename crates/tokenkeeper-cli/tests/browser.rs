//! The BFF in a real browser: headless Debian Chromium driven through ChromeDriver (WebDriver),
//! against `tokenkeeper bff --dev` (the test identity provider's login page, the sample API, the
//! SPA). `scripts/test` installs `chromium` and `chromium-driver`.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use tokenkeeper_testing::{start_and_wait_for, Browser};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ux_06_bff_in_chromium_login_user_api_event_source_websocket_antiforgery_logout() {
    let mut bff = Command::new(env!("CARGO_BIN_EXE_tokenkeeper"));
    bff.args(["bff", "--dev", "--listen", "127.0.0.1:0"]);
    let (_bff, line) = start_and_wait_for(bff, "open http");
    let url = line.trim().trim_start_matches("open ").to_owned();
    let browser = Browser::start().await;

    // Anonymous: the SPA offers a login.
    browser.go(&format!("{url}/")).await;
    browser
        .until(
            "the login button",
            "return !document.getElementById('anonymous').hidden",
        )
        .await;

    // Log in through the provider's page.
    browser.click("#login").await;
    browser
        .until(
            "the provider's login page",
            "return document.getElementById('sign-in') !== null",
        )
        .await;
    browser
        .script("document.getElementById('username').value = 'carol'")
        .await;
    browser.click("#sign-in").await;
    let user = browser
        .until(
            "the user",
            "return location.pathname === '/' && document.getElementById('user') && document.getElementById('user').textContent",
        )
        .await;
    assert_eq!(user, "carol");
    let expires = browser
        .script("return Number(document.getElementById('expires').textContent)")
        .await;
    assert!(expires.as_u64().unwrap() > 1700, "{expires}");

    // The API through the proxy, server-sent events and a WebSocket echo.
    browser.click("#call").await;
    let api = browser
        .until(
            "the API answer",
            "return document.getElementById('api-result').textContent",
        )
        .await;
    assert!(api.as_str().unwrap().starts_with("200 "), "{api}");
    assert!(api.as_str().unwrap().contains("hello, carol"), "{api}");
    // UX-06: the SPA's events come through a real `EventSource`, which sends no X-CSRF; the
    // route takes the `Sec-Fetch-Site: same-origin` Chromium sends instead.
    browser
        .until(
            "two server-sent events",
            "return document.getElementById('events').textContent.split('\\n').filter(Boolean).length >= 2",
        )
        .await;
    let echo = browser
        .until(
            "the WebSocket echo",
            "return document.getElementById('ws-result').textContent",
        )
        .await;
    assert_eq!(echo, "echo: hello over a websocket");

    // Without the anti-forgery header, the API refuses anything but a same-origin read.
    let status = browser
        .async_script(
            "const done = arguments[arguments.length - 1]; fetch('/api/hello', {method: 'POST'}).then(r => done(r.status));",
        )
        .await;
    assert_eq!(status, 401);
    // The diagnostics (a token) only with the header (SEC-20).
    let status = browser
        .async_script(
            "const done = arguments[arguments.length - 1]; fetch('/bff/diagnostics').then(r => done(r.status));",
        )
        .await;
    assert_eq!(status, 401);
    browser.click("#diagnose").await;
    let diagnostics = browser
        .until(
            "the diagnostics",
            "return document.getElementById('diagnostics').textContent",
        )
        .await;
    assert!(
        diagnostics.as_str().unwrap().starts_with("200 "),
        "{diagnostics}"
    );

    // A cross-site logout link (no sid) does nothing.
    browser.go(&format!("{url}/bff/logout")).await;
    browser.go(&format!("{url}/")).await;
    let still = browser
        .until(
            "the user after a forged logout",
            "return document.getElementById('user').textContent",
        )
        .await;
    assert_eq!(still, "carol");

    // Logout.
    browser.click("#logout").await;
    browser
        .until(
            "logged out",
            "return location.pathname === '/' && !document.getElementById('anonymous').hidden",
        )
        .await;
    let status = browser
        .async_script(
            "const done = arguments[arguments.length - 1]; fetch('/bff/user', {headers: {'X-CSRF': '1'}}).then(r => done(r.status));",
        )
        .await;
    assert_eq!(status, 401);
    browser.close().await;
}
