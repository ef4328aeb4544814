//! EN-01: `tokenkeeper bff --config` serves on the per-core server — a login through the test
//! authorization server, the API route with the user's token (the protected API verifies it),
//! sessions and tokens in Redis (reached from the workers' runtimes), and SIGTERM exits cleanly.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use common::{redis_delete, redis_keys, signal, BIN};
use tokenkeeper_testing::{TestClient, TestServer};

/// A free loopback port (the BFF's public URL needs it before it starts).
use tokenkeeper_testing::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn en_01_tokenkeeper_bff_serves_on_the_per_core_server_with_redis() {
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let idp = TestServer::builder()
        .client(
            TestClient::new("spa", "spa-secret").redirect_uri(&format!("{public}/bff/callback")),
        )
        .start()
        .await;
    idp.set_login(Some("alice"));
    let api = idp.start_api().await;
    let dir = std::env::temp_dir().join(format!("tk-en01-bff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = format!("tk-en01-bff-{}", std::process::id());
    let config = dir.join("bff.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[bff]
listen = "127.0.0.1:{port}"
public_url = "{public}"
insecure_cookies = true
workers = 2

[oidc]
issuer = "{issuer}"
client_id = "spa"
client_secret_env = "SPA_SECRET"

[redis]
url = "{redis_url}"
prefix = "{prefix}"
encryption_key_env = "BFF_REDIS_KEY"

[[routes]]
path = "/api"
upstream = "{api}"
token = "user"
"#,
            issuer = idp.issuer(),
            api = api.url("/")
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["bff", "--config"])
        .arg(&config)
        .env("SPA_SECRET", "spa-secret")
        .env(
            "BFF_REDIS_KEY",
            "YmZmLWhvc3QtdGVzdC1rZXktMzItYnl0ZXMtbG9uZyE=",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("tokenkeeper BFF on"), "{line}");
    assert!(line.contains("2 workers"), "{line}");

    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let login = browser
        .get(format!("{public}/bff/login?returnUrl=/"))
        .send()
        .await
        .unwrap();
    // The callback answers with a page that goes on to `/` (so that the Strict session cookie
    // is sent from then on).
    assert_eq!(login.status(), 200);
    assert_eq!(login.url().path(), "/bff/callback");
    assert!(login.text().await.unwrap().contains("url=/"));
    let call = browser
        .get(format!("{public}/api/orders/1"))
        .header("x-csrf", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(call.status(), 200);
    let seen: serde_json::Value = call.json().await.unwrap();
    assert_eq!(seen["sub"], "alice", "{seen}");
    assert_eq!(seen["scheme"], "Bearer", "{seen}");
    let refused = browser
        .get(format!("{public}/api/orders/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "anti-forgery");
    // The session is in Redis (from a worker's runtime).
    let keys = redis_keys(&prefix);
    assert!(!keys.is_empty(), "nothing in Redis");
    redis_delete(&keys);
    // SIGTERM: a clean exit.
    signal(&child, "TERM");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
