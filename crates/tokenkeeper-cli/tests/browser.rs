//! The BFF in a real browser: headless Debian Chromium driven through ChromeDriver (WebDriver),
//! against `tokenkeeper bff --dev` (the test identity provider's login page, the sample API, the
//! SPA). `scripts/test` installs `chromium` and `chromium-driver`.
//!
//! It also takes the README's screenshots of the development app (BF-26): into `docs/` with
//! `TK_UPDATE_SCREENSHOTS=1`, else into a temporary directory (checked, then removed).
#![allow(clippy::unwrap_used)]

use std::process::Command;

use tokenkeeper_testing::{start_and_wait_for, Browser};

/// Where the screenshots go.
fn screenshots() -> std::path::PathBuf {
    if std::env::var_os("TK_UPDATE_SCREENSHOTS").is_some() {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs")
    } else {
        std::env::temp_dir().join(format!("tk-screenshots-{}", std::process::id()))
    }
}

/// Takes a screenshot named `name` (a PNG in [`screenshots`]).
async fn shoot(browser: &Browser, name: &str) {
    let png = browser.screenshot().await;
    // A real picture of the window, not an empty one.
    assert!(png.len() > 10_000, "{name}: {} bytes", png.len());
    let dir = screenshots();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

/// The steps the app says happened, one sentence each.
async fn steps(browser: &Browser) -> Vec<String> {
    let steps = browser
        .script("return [...document.querySelectorAll('#steps li')].map(li => li.textContent)")
        .await;
    serde_json::from_value(steps).unwrap()
}

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
    let said = steps(&browser).await;
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains("401"), "{said:?}");
    shoot(&browser, "bff-dev-anonymous.png").await;

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
    // The session's expiry as a person reads it: "29 min left", not "1799 s".
    let expires = browser
        .script("return document.getElementById('expires').textContent")
        .await;
    let expires = expires.as_str().unwrap();
    let minutes: u64 = expires
        .strip_suffix(" min left")
        .unwrap_or_else(|| panic!("{expires}"))
        .parse()
        .unwrap();
    assert!((28..=30).contains(&minutes), "{expires}");

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
    // One sentence per step: the login, the API call, the events, the WebSocket.
    let said = browser
        .until(
            "four steps told",
            "const s = [...document.querySelectorAll('#steps li')]; return s.length >= 4 ? s.map(li => li.textContent) : null",
        )
        .await;
    let said: Vec<String> = serde_json::from_value(said).unwrap();
    for (needle, what) in [
        ("logged in", "the login"),
        ("/api/hello", "the API call"),
        ("Server-sent events", "the events"),
        ("WebSocket", "the WebSocket"),
    ] {
        assert_eq!(
            said.iter().filter(|s| s.contains(needle)).count(),
            1,
            "{what}: {said:?}"
        );
    }
    shoot(&browser, "bff-dev-logged-in.png").await;

    // The bff.toml that runs the same for real: linked, and a file that validates.
    let link = browser
        .script("return document.getElementById('config').href")
        .await;
    let toml = reqwest::get(link.as_str().unwrap())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dist = std::env::temp_dir().join(format!("tk-dev-dist-{}", std::process::id()));
    std::fs::create_dir_all(&dist).unwrap();
    let toml = toml.replace("\"dist\"", &format!("{:?}", dist.display().to_string()));
    let config = tokenkeeper_bff::config::BffConfig::parse(&toml).unwrap();
    let env = |name: &str| (name == "BFF_CLIENT_SECRET").then(|| "secret".to_owned());
    config.validate(&toml, &env).unwrap();
    let _ = std::fs::remove_dir_all(&dist);

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
    let said = steps(&browser).await;
    assert!(said[0].starts_with("You logged out"), "{said:?}");
    let status = browser
        .async_script(
            "const done = arguments[arguments.length - 1]; fetch('/bff/user', {headers: {'X-CSRF': '1'}}).then(r => done(r.status));",
        )
        .await;
    assert_eq!(status, 401);
    browser.close().await;
    if std::env::var_os("TK_UPDATE_SCREENSHOTS").is_none() {
        let _ = std::fs::remove_dir_all(screenshots());
    }
}
