//! The BFF in a real browser: headless Debian Chromium driven through ChromeDriver (WebDriver),
//! against `tokenkeeper bff --dev` (the test identity provider's login page, the sample API, the
//! SPA). `scripts/test` installs `chromium` and `chromium-driver`.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` and waits for a stdout line containing `marker`; returns the line.
fn start(mut command: Command, marker: &str) -> (Process, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e} (scripts/test installs chromium and chromium-driver)"));
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = loop {
        match lines.next() {
            Some(Ok(line)) if line.contains(marker) => break line,
            Some(Ok(_)) => continue,
            _ => panic!("{command:?} ended before printing {marker:?}"),
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Process(child), line)
}

/// A minimal WebDriver client.
struct Browser {
    http: reqwest::Client,
    session: String,
}

impl Browser {
    async fn new(driver: &str) -> Self {
        let http = reqwest::Client::new();
        let profile = std::env::temp_dir().join(format!("tk-chromium-{}", std::process::id()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let response: Value = http
            .post(format!("{driver}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = response["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {response}"))
            .to_owned();
        Self {
            http,
            session: format!("{driver}/session/{session}"),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.http
            .post(format!("{}{path}", self.session))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["value"]
            .clone()
    }

    async fn go(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    async fn script(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    async fn async_script(&self, script: &str) -> Value {
        self.post("/execute/async", json!({ "script": script, "args": [] }))
            .await
    }

    /// Waits (up to 15 s) until `script` returns a truthy value; returns it.
    async fn until(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let value = self.script(script).await;
            if !(value.is_null() || value == false || value == "") {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::task::yield_now().await;
        }
    }

    async fn click(&self, css: &str) {
        self.script(&format!("document.querySelector({css:?}).click()"))
            .await;
    }

    async fn close(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bff_in_chromium_login_user_api_events_websocket_antiforgery_logout() {
    let mut bff = Command::new(env!("CARGO_BIN_EXE_tokenkeeper"));
    bff.args(["bff", "--dev", "--listen", "127.0.0.1:0"]);
    let (_bff, line) = start(bff, "open http");
    let url = line.trim().trim_start_matches("open ").to_owned();
    let mut driver = Command::new("chromedriver");
    driver.arg("--port=0");
    let (_driver, line) = start(driver, "started successfully on port");
    let port = line
        .rsplit("port ")
        .next()
        .unwrap()
        .trim_end_matches('.')
        .to_owned();
    let browser = Browser::new(&format!("http://127.0.0.1:{port}")).await;

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

    // Without the anti-forgery header, the API refuses.
    let status = browser
        .async_script(
            "const done = arguments[arguments.length - 1]; fetch('/api/hello').then(r => done(r.status));",
        )
        .await;
    assert_eq!(status, 401);

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
