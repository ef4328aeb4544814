//! What the CLI's process tests share: the binary, a child killed with the test, Redis keys.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod fleet;

use std::process::{Child, Command};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;

/// The `tokenkeeper` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tokenkeeper");

/// A child process, killed when the test ends (passing or not).
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Redis the tests use (`REDIS_URL`, default the local one).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The keys under `prefix` (`redis-cli --scan`).
pub fn redis_keys(prefix: &str) -> Vec<String> {
    let output = Command::new("redis-cli")
        .args([
            "-u",
            &redis_url(),
            "--scan",
            "--pattern",
            &format!("{prefix}*"),
        ])
        .output()
        .unwrap();
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Deletes `keys`.
pub fn redis_delete(keys: &[String]) {
    for key in keys {
        let _ = Command::new("redis-cli")
            .args(["-u", &redis_url(), "DEL", key])
            .output();
    }
}

/// Sends signal `name` (`HUP`, `TERM`) to `child`.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A free loopback port, for addresses written in a configuration file before the process
/// that listens on them starts (bind-tested, outside the kernel's ephemeral range).
pub use tokenkeeper_testing::free_port;

/// Starts `tokenkeeper bff --config <dir>/bff.toml` with `config` as the file and `envs` in its
/// environment (stdout read up to its first line, which is returned; stderr as `stderr` says).
pub fn start_bff(
    dir: &std::path::Path,
    config: &str,
    envs: &[(&str, &str)],
    stderr: std::process::Stdio,
) -> (Child, String) {
    use std::io::BufRead as _;
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("bff.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(BIN);
    command
        .args(["bff", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(stderr);
    for (name, value) in envs {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("tokenkeeper BFF on"), "{line}");
    (child, line)
}

/// A browser logged in at the BFF of `public` (as the test provider's current user), and its
/// `Cookie` header value.
pub async fn logged_in(public: &str) -> (reqwest::Client, String) {
    use reqwest::cookie::CookieStore as _;
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let browser = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .build()
        .unwrap();
    let login = browser
        .get(format!("{public}/bff/login?returnUrl=/"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    assert_eq!(login.url().path(), "/bff/callback");
    let cookie = jar
        .cookies(&public.parse().unwrap())
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    (browser, cookie)
}

/// An upstream that answers `GET /slow` only once `release` turns true (counting them in
/// `received`), anything else at once with `ok`, and echoes WebSocket messages (`echo: …`).
pub async fn held_upstream(
    received: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    release: tokio::sync::watch::Receiver<bool>,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let (received, mut release) = (received.clone(), release.clone());
            tokio::spawn(async move {
                let mut peek = [0u8; 2048];
                let n = stream.peek(&mut peek).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&peek[..n]).to_ascii_lowercase();
                if head.contains("upgrade: websocket") {
                    let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(message)) = socket.next().await {
                        if let Message::Text(text) = message {
                            let echo = format!("echo: {}", text.as_str());
                            if socket.send(Message::Text(echo.into())).await.is_err() {
                                return;
                            }
                        }
                    }
                    return;
                }
                loop {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    if buf.starts_with(b"GET /slow") {
                        received.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let _ = release.wait_for(|r| *r).await;
                    }
                    if stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    url
}
