//! BF-25: with `log_format = "json"`, `tokenkeeper bff` writes one JSON object per log line,
//! with stable field names (`timestamp`, `level`, `target`, `message`), through a login, API
//! calls, a logout and SIGTERM — and no secret is in them: not the client secret, not the
//! session cookie, not a token (SEC-25).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Command, Stdio};

use common::{signal, BIN};
use tokenkeeper_testing::{TestClient, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_25_json_log_lines_with_stable_fields_and_no_secrets() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let public = format!("http://127.0.0.1:{port}");
    let idp = TestServer::builder()
        .client(
            TestClient::new("spa", "spa-secret-bf25")
                .redirect_uri(&format!("{public}/bff/callback")),
        )
        .start()
        .await;
    idp.set_login(Some("alice"));
    let api = idp.start_api().await;
    let dir = std::env::temp_dir().join(format!("tk-bf25-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("bff.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[bff]
listen = "127.0.0.1:{port}"
public_url = "{public}"
insecure_cookies = true
workers = 1
log_format = "json"

[oidc]
issuer = "{issuer}"
client_id = "spa"
client_secret_env = "SPA_SECRET"
scope = "openid offline_access"

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
        .env("SPA_SECRET", "spa-secret-bf25")
        .env(
            "RUST_LOG",
            "debug,hyper=warn,reqwest=warn,h2=warn,rustls=warn",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("tokenkeeper BFF on"), "{line}");

    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let login = browser
        .get(format!("{public}/bff/login?returnUrl=/"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let call = |path: &'static str| {
        browser
            .get(format!("{public}{path}"))
            .header("x-csrf", "1")
            .send()
    };
    assert_eq!(call("/api/orders/1").await.unwrap().status(), 200);
    let user: serde_json::Value = call("/bff/user").await.unwrap().json().await.unwrap();
    let logout = user
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "bff:logout_url")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_owned();
    // A hostile request too: its cookie must not be logged either.
    let forged = reqwest::Client::new()
        .get(format!("{public}/api/orders/1"))
        .header("x-csrf", "1")
        .header("cookie", "bff=forged-cookie-value-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    // Logged out (wherever the provider's end-session redirect then leads).
    let _ = browser.get(format!("{public}{logout}")).send().await;
    assert_eq!(call("/bff/user").await.unwrap().status(), 401);

    signal(&child, "TERM");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);

    let lines: Vec<&str> = stderr.lines().filter(|l| !l.is_empty()).collect();
    assert!(lines.len() >= 3, "too few log lines: {stderr}");
    for line in &lines {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for field in ["timestamp", "level", "target"] {
            assert!(event[field].is_string(), "{field}: {line}");
        }
        assert!(event.get("message").is_some(), "message: {line}");
    }
    assert!(
        stderr.contains("shutting down"),
        "the shutdown is logged: {stderr}"
    );
    for secret in ["spa-secret-bf25", "forged-cookie-value", "eyJ"] {
        assert!(!stderr.contains(secret), "{secret} in the logs: {stderr}");
    }
}
