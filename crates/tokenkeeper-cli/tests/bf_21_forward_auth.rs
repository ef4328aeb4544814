//! BF-21: forward auth with a real nginx in front (`auth_request` to `{base}/auth`, the
//! identity headers set from its answer): the upstream behind nginx sees who the user is, a
//! request without a session is refused, and identity headers a client makes up never reach
//! the upstream — neither through nginx nor through the BFF's own proxy.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::process::{Command, Stdio};

use common::{free_port, logged_in, start_bff, Killed};
use tokenkeeper_testing::{TestClient, TestServer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const PROXY_SECRET: &str = "bf21-proxy-secret-0123456789abcdef";

/// An upstream that answers every request with the request's head (lower case).
async fn echo() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                loop {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{head}",
                        head.len()
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn nginx(dir: &std::path::Path, port: u16, bff: u16, upstream: u16) -> Killed {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("nginx is not installed (scripts/test installs it)");
    for sub in ["logs", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let d = dir.display();
    let conf = format!(
        r#"
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp/body; proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi; uwsgi_temp_path {d}/tmp/uwsgi; scgi_temp_path {d}/tmp/scgi;
  server {{
    listen 127.0.0.1:{port};
    location = /_auth {{
      internal;
      proxy_pass http://127.0.0.1:{bff}/bff/auth;
      proxy_set_header X-Forward-Auth-Secret "{PROXY_SECRET}";
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
    }}
    location /app/ {{
      auth_request /_auth;
      auth_request_set $user $upstream_http_x_auth_request_user;
      auth_request_set $session $upstream_http_x_auth_request_session;
      auth_request_set $token $upstream_http_x_auth_request_access_token;
      proxy_set_header X-Auth-Request-User $user;
      proxy_set_header X-Auth-Request-Session $session;
      proxy_set_header X-Auth-Request-Access-Token $token;
      proxy_pass http://127.0.0.1:{upstream};
    }}
  }}
}}
"#
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new(nginx)
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(dir)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Killed(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_21_nginx_auth_request_passes_identity_headers_and_never_spoofed_ones() {
    let (port, nginx_port) = (free_port(), free_port());
    let public = format!("http://127.0.0.1:{port}");
    let idp = TestServer::builder()
        .client(
            TestClient::new("spa", "spa-secret").redirect_uri(&format!("{public}/bff/callback")),
        )
        .start()
        .await;
    idp.set_login(Some("alice"));
    let upstream = echo().await;
    let dir = std::env::temp_dir().join(format!("tk-bf21-{}", std::process::id()));
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

[[routes]]
path = "/api"
upstream = "http://127.0.0.1:{upstream}/"
token = "user"

[forward_auth]
headers = {{ sub = "x-auth-request-user", sid = "x-auth-request-session" }}
access_token_header = "x-auth-request-access-token"
proxy_secret_env = "FORWARD_AUTH_SECRET"
"#,
        issuer = idp.issuer(),
    );
    let (child, _) = start_bff(
        &dir,
        &config,
        &[
            ("SPA_SECRET", "spa-secret"),
            ("FORWARD_AUTH_SECRET", PROXY_SECRET),
        ],
        Stdio::null(),
    );
    let _bff = Killed(child);
    let _nginx = nginx(&dir.join("nginx"), nginx_port, port, upstream);
    let front = format!("http://127.0.0.1:{nginx_port}");
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http.get(format!("{front}/app/x")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Anonymous, spoofing or not: refused by nginx on the BFF's word.
    for spoof in [None, Some("mallory")] {
        let mut request = http.get(format!("{front}/app/x"));
        if let Some(who) = spoof {
            request = request.header("x-auth-request-user", who);
        }
        assert_eq!(request.send().await.unwrap().status(), 401, "{spoof:?}");
    }

    // Logged in: the upstream behind nginx sees alice, her session and her token, whatever the
    // client claims.
    let (browser, cookie) = logged_in(&public).await;
    let seen = http
        .get(format!("{front}/app/x"))
        .header("cookie", &cookie)
        .header("x-auth-request-user", "mallory")
        .header("x-auth-request-access-token", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(seen.status(), 200);
    let seen = seen.text().await.unwrap();
    let users: Vec<&str> = seen
        .lines()
        .filter(|l| l.starts_with("x-auth-request-user:"))
        .collect();
    assert_eq!(users, ["x-auth-request-user: alice"], "{seen}");
    assert!(seen.contains("x-auth-request-session: "), "{seen}");
    assert!(seen.contains("x-auth-request-access-token: eyj"), "{seen}");
    assert!(
        !seen.contains("mallory") && !seen.contains("forged"),
        "{seen}"
    );

    // The BFF's own proxy drops the identity headers a browser sends.
    let through_bff = browser
        .get(format!("{public}/api/x"))
        .header("x-csrf", "1")
        .header("x-auth-request-user", "mallory")
        .header("x-auth-request-session", "s")
        .header("x-forward-auth-secret", PROXY_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(through_bff.status(), 200);
    let seen = through_bff.text().await.unwrap();
    assert!(!seen.contains("x-auth-request"), "{seen}");
    assert!(!seen.contains("x-forward-auth-secret"), "{seen}");

    // The endpoint itself: 401 without a session, never cached.
    let direct = http.get(format!("{public}/bff/auth")).send().await.unwrap();
    assert_eq!(direct.status(), 401);
    let direct = http
        .get(format!("{public}/bff/auth"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 200);
    assert_eq!(direct.headers()["cache-control"], "no-store");
    assert_eq!(direct.headers()["x-auth-request-user"], "alice");
    // A browser that asks directly never gets its access token: only the proxy, with its
    // secret, does.
    assert!(direct
        .headers()
        .get("x-auth-request-access-token")
        .is_none());
    let guessed = http
        .get(format!("{public}/bff/auth"))
        .header("cookie", &cookie)
        .header("x-forward-auth-secret", "guess")
        .send()
        .await
        .unwrap();
    assert!(guessed
        .headers()
        .get("x-auth-request-access-token")
        .is_none());
    let proxy = http
        .get(format!("{public}/bff/auth"))
        .header("cookie", &cookie)
        .header("x-forward-auth-secret", PROXY_SECRET)
        .send()
        .await
        .unwrap();
    assert!(proxy.headers().get("x-auth-request-access-token").is_some());
    let _ = std::fs::remove_dir_all(&dir);
}
