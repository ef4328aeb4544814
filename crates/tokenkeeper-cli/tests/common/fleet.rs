//! A fleet of `tokenkeeper bff` processes on one shared Redis (node, Cluster or Sentinel),
//! under load, for the failover tests (FL-02, FL-06) and the chaos bench: every call is
//! recorded with when it was made, so that failures can be placed against the moment a server
//! was killed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokenkeeper_testing::{TestApi, TestClient, TestServer};

use super::{free_port, start_bff, Killed};

/// The processes, their provider and their API.
pub struct Fleet {
    /// The test provider (2-second access tokens, one-time refresh tokens).
    pub idp: Arc<TestServer>,
    /// The protected API behind the routes.
    pub api: TestApi,
    /// Each process's base URL; the first one's is the public URL of all.
    pub urls: Vec<String>,
    processes: Vec<Killed>,
    dir: std::path::PathBuf,
}

/// The secrets the processes read from their environment (the shared store's key: `STORE_KEY`).
const ENV: [(&str, &str); 3] = [
    ("SPA_SECRET", "spa-secret"),
    ("WORKER_SECRET", "worker-secret"),
    ("STORE_KEY", "ZmxlZXQtdGVzdC1rZXktMzItYnl0ZXMtbG9uZy4uLiE="),
];

impl Fleet {
    /// Starts `n` processes sharing the store of `store`: a `[redis]` section's lines (all but
    /// the prefix and the key), or a whole `[postgres]` section (its key: `STORE_KEY`), with
    /// `env` in the processes' environment. Routes: `/api` with the user's token, `/svc` with the
    /// BFF's client token.
    pub async fn start(n: usize, store: &str, env: &[(&str, &str)]) -> Self {
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let public = format!("http://127.0.0.1:{}", ports[0]);
        let idp = Arc::new(
            TestServer::builder()
                .client(
                    TestClient::new("spa", "spa-secret")
                        .redirect_uri(&format!("{public}/bff/callback")),
                )
                .client(TestClient::new("worker", "worker-secret"))
                .expires_in(Some(2))
                .start()
                .await,
        );
        idp.set_rotate_refresh_tokens(true);
        idp.set_login(Some("alice"));
        let api = idp.start_api().await;
        let dir = std::env::temp_dir().join(format!(
            "tk-fleet-{}-{}",
            std::process::id(),
            tokenkeeper::random_token(6).unwrap()
        ));
        let prefix = format!("tk-fleet-{}", tokenkeeper::random_token(6).unwrap());
        let mut processes = Vec::new();
        let mut urls = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let config = format!(
                r#"
[bff]
listen = "127.0.0.1:{port}"
public_url = "{public}"
insecure_cookies = true
workers = 1

[oidc]
issuer = "{issuer}"
client_id = "spa"
client_secret_env = "SPA_SECRET"

[client]
client_id = "worker"
client_secret_env = "WORKER_SECRET"

@STORE@

[[routes]]
path = "/api"
upstream = "{upstream}"
token = "user"

[[routes]]
path = "/svc"
upstream = "{upstream}"
token = "client"
"#,
                issuer = idp.issuer(),
                upstream = api.url("/"),
            );
            let store = if store.starts_with('[') {
                store.to_owned()
            } else {
                format!(
                    "[redis]\nprefix = \"{prefix}\"\nencryption_key_env = \"STORE_KEY\"\n{store}"
                )
            };
            let config = config.replace("@STORE@", &store);
            let own = dir.join(i.to_string());
            std::fs::create_dir_all(&own).unwrap();
            let stderr = std::fs::File::create(own.join("stderr")).unwrap();
            let all: Vec<(&str, &str)> = ENV.iter().chain(env).copied().collect();
            let (child, _) = start_bff(&own, &config, &all, std::process::Stdio::from(stderr));
            processes.push(Killed(child));
            urls.push(format!("http://127.0.0.1:{port}"));
        }
        Self {
            idp,
            api,
            urls,
            processes,
            dir,
        }
    }

    /// `count` browsers, each logged in (as alice) at the first process.
    pub async fn log_in(&self, count: usize) -> Vec<reqwest::Client> {
        let mut browsers = Vec::new();
        for _ in 0..count {
            browsers.push(super::logged_in(&self.urls[0]).await.0);
        }
        browsers
    }

    /// What the processes logged (warnings and above), each line with the process's number.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for i in 0..self.urls.len() {
            let text = std::fs::read_to_string(self.dir.join(i.to_string()).join("stderr"))
                .unwrap_or_default();
            for line in text.lines() {
                all.push_str(&format!("[{i}] {line}\n"));
            }
        }
        all
    }

    /// How many of `browsers` have a working session on every process (`/api` answers 200).
    pub async fn live_sessions(&self, browsers: &[reqwest::Client]) -> usize {
        let mut live = 0;
        for browser in browsers {
            let mut all = true;
            for url in &self.urls {
                all &= call(browser, &format!("{url}/api/check")).await;
            }
            live += usize::from(all);
        }
        live
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.processes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One API call with the anti-forgery header: whether it answered 200.
pub async fn call(browser: &reqwest::Client, url: &str) -> bool {
    browser
        .get(url)
        .header("x-csrf", "1")
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Calls made.
    pub calls: u64,
    /// Calls that did not answer 200.
    pub failed: u64,
    /// When the first and the last failure happened, after the event.
    pub failures: Option<(Duration, Duration)>,
    /// Failures before the event (there should be none).
    pub failed_before: u64,
}

/// Runs `callers` loops for `duration`, spreading calls over the processes and the browsers,
/// alternating user-token (`/api`) and client-token (`/svc`) routes; `event` runs at `at`.
pub async fn load(
    fleet: &Fleet,
    browsers: &[reqwest::Client],
    callers: usize,
    duration: Duration,
    at: Duration,
    event: impl std::future::Future<Output = ()>,
) -> Report {
    let start = Instant::now();
    let event_at = Arc::new(Mutex::new(None::<Instant>));
    let report = Arc::new(Mutex::new(Report::default()));
    let mut tasks = Vec::new();
    for c in 0..callers {
        let (browsers, urls) = (browsers.to_vec(), fleet.urls.clone());
        let (report, event_at) = (report.clone(), event_at.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = c;
            while start.elapsed() < duration {
                let browser = &browsers[n % browsers.len()];
                let url = &urls[n % urls.len()];
                let path = if n % 2 == 0 { "api" } else { "svc" };
                let ok = call(browser, &format!("{url}/{path}/x")).await;
                let now = Instant::now();
                let happened = *event_at.lock().unwrap();
                {
                    let mut report = report.lock().unwrap();
                    report.calls += 1;
                    if !ok {
                        report.failed += 1;
                        match happened {
                            Some(at) => {
                                let after = now - at;
                                report.failures = Some(match report.failures {
                                    Some((first, _)) => (first, after),
                                    None => (after, after),
                                });
                            }
                            None => report.failed_before += 1,
                        }
                    }
                }
                n += callers;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(at).await;
    *event_at.lock().unwrap() = Some(Instant::now());
    event.await;
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(report).unwrap().into_inner().unwrap()
}

/// Prints what `report` saw of `failure` (`what` happened) and asserts that the fleet came
/// through: no failure before it, sessions rotated during the run, no refresh token presented
/// twice or lost (one refresh per cycle), and every session still working on every process.
pub async fn assert_came_through(
    fleet: &Fleet,
    browsers: &[reqwest::Client],
    failure: &str,
    report: &Report,
) {
    let refreshes = fleet.idp.token_requests("refresh_token");
    let refused = fleet.idp.refused_refreshes();
    eprintln!(
        "{failure}: {} calls, {} failed, failures from {:?} to {:?} after it; {refreshes} refreshes, {refused} refused",
        report.calls,
        report.failed,
        report.failures.map(|f| f.0),
        report.failures.map(|f| f.1),
    );
    assert_eq!(report.failed_before, 0, "no failure before it");
    assert!(
        refreshes >= browsers.len() as u64,
        "sessions rotated their refresh tokens during the run"
    );
    assert_eq!(
        refused, 0,
        "one refresh per cycle: no refresh token presented twice or lost"
    );
    let live = fleet.live_sessions(browsers).await;
    assert_eq!(
        live,
        browsers.len(),
        "every session came through; the processes logged:\n{}",
        fleet.logs()
    );
}
