//! SC-03: a fleet of sidecar processes shares client tokens through Redis (an in-memory L1
//! over an encrypted L2, a lease for the fetch): four `tokenkeeper sidecar` processes and 200
//! concurrent callers cost one token request, and Redis holds no token in the clear.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use common::{redis_delete, redis_keys, Killed, BIN};
use tokenkeeper_testing::{TestClient, TestServer};

/// Starts `tokenkeeper sidecar --config FILE` and returns it with its base URL.
fn sidecar(config: &std::path::Path, key: &str) -> (Killed, String) {
    let mut child = Command::new(BIN)
        .args(["sidecar", "--config"])
        .arg(config)
        .env("WORKER_SECRET", "worker-secret")
        .env("SIDECAR_REDIS_KEY", key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .strip_prefix("tokenkeeper sidecar on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    (Killed(child), format!("http://{addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sc_03_four_sidecars_make_one_token_request_through_redis() {
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let idp = TestServer::builder()
        .client(TestClient::new("worker", "worker-secret"))
        .start()
        .await;
    let api = idp.start_api().await;
    let dir = std::env::temp_dir().join(format!("tk-sc03-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = format!("tk-sc03-{}", std::process::id());
    let config = dir.join("sidecar.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[sidecar]
listen = "127.0.0.1:0"
workers = 1

[redis]
url = "{redis_url}"
encryption_key_env = "SIDECAR_REDIS_KEY"
prefix = "{prefix}"

[[clients]]
name = "worker"
issuer = "{issuer}"
client_id = "worker"
client_secret_env = "WORKER_SECRET"

[[routes]]
path = "/orders"
upstream = "{api}"
token = "client"
client = "worker"
"#,
            issuer = idp.issuer(),
            api = api.url("/")
        ),
    )
    .unwrap();
    // 32 bytes, base64.
    let key = "c2lkZWNhci1mbGVldC1rZXktMzItYnl0ZXMtbG9uZyE=";
    let fleet: Vec<(Killed, String)> = (0..4).map(|_| sidecar(&config, key)).collect();
    let http = reqwest::Client::new();
    let calls = fleet.iter().flat_map(|(_, base)| {
        let http = http.clone();
        (0..50).map(move |i| {
            let (http, url) = (http.clone(), format!("{base}/orders/{i}"));
            tokio::spawn(async move { http.get(url).send().await.map(|r| r.status().as_u16()) })
        })
    });
    let calls: Vec<_> = calls.collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), 200);
    }
    assert_eq!(
        idp.token_requests("client_credentials"),
        1,
        "four sidecars, 200 concurrent callers: one token request"
    );
    // Redis holds the fleet's token, sealed: no access token (a JWT) in the clear.
    let keys = redis_keys(&prefix);
    assert!(!keys.is_empty(), "the token is in Redis");
    for key in &keys {
        let value = Command::new("redis-cli")
            .args(["-u", &redis_url, "--no-raw", "GET", key])
            .output()
            .unwrap();
        let value = String::from_utf8_lossy(&value.stdout);
        assert!(!value.contains("eyJ"), "{key} holds a JWT in the clear");
    }
    redis_delete(&keys);
    drop(fleet);
    let _ = std::fs::remove_dir_all(&dir);
}
