//! BF-25: with `log_format = "json"`, `tokenkeeper bff` writes one JSON object per log line,
//! with stable field names (`timestamp`, `level`, `target`, `message`), through a login, API
//! calls, a logout and SIGTERM — and no secret is in them: not the client secret, not the
//! session cookie, not a token (SEC-25).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::Read as _;
use std::process::Stdio;

use common::{free_port, logged_in, signal, start_bff};
use tokenkeeper_testing::{TestClient, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_25_json_log_lines_with_stable_fields_and_no_secrets() {
    let port = free_port();
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
    let config = format!(
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
    );
    // Logs at debug, in JSON, to a pipe read at the end.
    let (mut child, _) = start_bff(
        &dir,
        &config,
        &[
            ("SPA_SECRET", "spa-secret-bf25"),
            (
                "RUST_LOG",
                "debug,hyper=warn,reqwest=warn,h2=warn,rustls=warn",
            ),
        ],
        Stdio::piped(),
    );
    let (browser, _) = logged_in(&public).await;
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
    // The frontend's name is a field of what the BFF logs (BF-17): here the one frontend's.
    assert!(
        lines.iter().any(|line| {
            let event: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            event["frontend"] == "default" || event["span"]["frontend"] == "default"
        }),
        "no log line names the frontend: {stderr}"
    );
    for secret in ["spa-secret-bf25", "forged-cookie-value", "eyJ"] {
        assert!(!stderr.contains(secret), "{secret} in the logs: {stderr}");
    }
}
