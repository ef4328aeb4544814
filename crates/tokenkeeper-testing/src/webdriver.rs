//! A minimal WebDriver client for browser tests: starts ChromeDriver on a free port and headless
//! Debian Chromium (`/usr/bin/chromium`, `/usr/bin/chromedriver`; packages `chromium` and
//! `chromium-driver`), with the flags this kind of machine needs (no sandbox, no background
//! networking).
//!
//! ```no_run
//! # async fn run() {
//! let browser = tokenkeeper_testing::Browser::start().await;
//! browser.go("http://127.0.0.1:8080/").await;
//! let title = browser.until("a title", "return document.title").await;
//! # let _ = title; }
//! ```

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A child process, killed when dropped.
#[derive(Debug)]
pub struct ChildProcess(Child);

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` and waits for a line of its standard output that contains `marker`;
/// returns the process and that line. Standard output keeps being drained afterwards.
///
/// # Panics
/// When the command cannot start or ends before printing `marker`.
pub fn start_and_wait_for(mut command: Command, marker: &str) -> (ChildProcess, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let Some(stdout) = child.stdout.take() else {
        panic!("{command:?}: no stdout");
    };
    let mut lines = BufReader::new(stdout).lines();
    let line = loop {
        match lines.next() {
            Some(Ok(line)) if line.contains(marker) => break line,
            Some(Ok(_)) => continue,
            _ => panic!("{command:?} ended before printing {marker:?}"),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (ChildProcess(child), line)
}

/// A headless Chromium session through ChromeDriver; both end when it is dropped.
#[derive(Debug)]
pub struct Browser {
    http: reqwest::Client,
    session: String,
    _driver: ChildProcess,
}

impl Browser {
    /// Starts ChromeDriver (on a port it chooses) and a Chromium session.
    ///
    /// # Panics
    /// When ChromeDriver or Chromium is missing (`scripts/test` installs them) or the session
    /// cannot start.
    pub async fn start() -> Self {
        let mut driver = Command::new("chromedriver");
        driver.arg("--port=0");
        let (driver, line) = start_and_wait_for(driver, "started successfully on port");
        let port = line
            .rsplit("port ")
            .next()
            .unwrap_or_default()
            .trim_end_matches('.')
            .to_owned();
        let http = reqwest::Client::new();
        let profile = std::env::temp_dir().join(format!(
            "tk-chromium-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--window-size=1100,900", "--hide-scrollbars", "--force-device-scale-factor=1",
                    "--disable-component-update", "--disable-sync",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let base = format!("http://127.0.0.1:{port}");
        let response: Value = match http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
        {
            Ok(response) => response.json().await.unwrap_or_default(),
            Err(e) => panic!("ChromeDriver did not answer: {e}"),
        };
        let Some(session) = response["value"]["sessionId"].as_str() else {
            panic!("no WebDriver session: {response}");
        };
        Self {
            session: format!("{base}/session/{session}"),
            http,
            _driver: driver,
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        match self
            .http
            .post(format!("{}{path}", self.session))
            .json(&body)
            .send()
            .await
        {
            Ok(response) => response.json::<Value>().await.unwrap_or_default()["value"].clone(),
            Err(e) => panic!("WebDriver {path}: {e}"),
        }
    }

    /// A screenshot of the window (PNG).
    ///
    /// # Panics
    /// When the browser does not take one.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let response: Value = match self
            .http
            .get(format!("{}/screenshot", self.session))
            .send()
            .await
        {
            Ok(response) => response.json().await.unwrap_or_default(),
            Err(e) => panic!("WebDriver /screenshot: {e}"),
        };
        let encoded = response["value"].as_str().unwrap_or_default();
        match base64::engine::general_purpose::STANDARD.decode(encoded) {
            Ok(png) if png.starts_with(b"\x89PNG") => png,
            _ => panic!("no screenshot: {response}"),
        }
    }

    /// Navigates to `url`.
    pub async fn go(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// Runs `script` (a function body) in the page; its return value.
    pub async fn script(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    /// Runs `script`, which calls `arguments[arguments.length - 1](value)` when done; that value.
    pub async fn async_script(&self, script: &str) -> Value {
        self.post("/execute/async", json!({ "script": script, "args": [] }))
            .await
    }

    /// Waits (up to 15 s) until `script` returns something truthy; returns it.
    ///
    /// # Panics
    /// When it does not within 15 s (`what` names the condition).
    pub async fn until(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let value = self.script(script).await;
            if !(value.is_null() || value == false || value == "") {
                return value;
            }
            if Instant::now() >= deadline {
                let at = self
                    .script("return location.href + ' — ' + (document.body ? document.body.innerText.slice(0, 300) : '')")
                    .await;
                panic!("timed out waiting for {what}; the page: {at}");
            }
            tokio::task::yield_now().await;
        }
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) {
        self.script(&format!("document.querySelector({css:?}).click()"))
            .await;
    }

    /// Ends the session (ChromeDriver stops when the value is dropped).
    pub async fn close(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}
