//! BF-24: SIGTERM to `tokenkeeper bff` with 200 API requests in flight and a WebSocket open —
//! the listener closes, the WebSocket gets 1001 (going away), every request in flight is
//! answered (0 failed), and the process exits 0.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{free_port, held_upstream, logged_in, signal, start_bff};
use futures_util::{SinkExt as _, StreamExt as _};
use tokenkeeper_testing::{TestClient, TestServer};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

const IN_FLIGHT: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_24_sigterm_answers_every_request_in_flight_and_closes_websockets_with_1001() {
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let idp = TestServer::builder()
        .client(
            TestClient::new("spa", "spa-secret").redirect_uri(&format!("{public}/bff/callback")),
        )
        .start()
        .await;
    idp.set_login(Some("alice"));
    let received = Arc::new(AtomicUsize::new(0));
    let (release, released) = tokio::sync::watch::channel(false);
    let api = held_upstream(received.clone(), released).await;
    let dir = std::env::temp_dir().join(format!("tk-bf24-{}", std::process::id()));
    let config = format!(
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

[[routes]]
path = "/api"
upstream = "{api}"
token = "user"
"#,
        issuer = idp.issuer(),
    );
    let (mut child, _) = start_bff(
        &dir,
        &config,
        &[("SPA_SECRET", "spa-secret")],
        Stdio::null(),
    );
    let (browser, cookie) = logged_in(&public).await;

    // A WebSocket through the BFF, echoing.
    let mut request = format!("ws://127.0.0.1:{port}/api/socket")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("cookie", cookie.parse().unwrap());
    request
        .headers_mut()
        .insert("origin", public.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket.send(Message::Text("ping".into())).await.unwrap();
    let echo = socket.next().await.unwrap().unwrap();
    assert_eq!(echo.into_text().unwrap().as_str(), "echo: ping");

    // 200 requests in flight, held by the upstream.
    let in_flight: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let browser = browser.clone();
            let url = format!("{public}/api/slow");
            tokio::spawn(async move {
                let response = browser.get(url).header("x-csrf", "1").send().await?;
                Ok::<_, reqwest::Error>((response.status().as_u16(), response.text().await?))
            })
        })
        .collect();
    while received.load(Ordering::SeqCst) < IN_FLIGHT {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    signal(&child, "TERM");
    // Shutdown has begun once the listener is gone.
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
    {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The WebSocket is told the server goes away.
    let code = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(message) = socket.next().await {
            if let Ok(Message::Close(frame)) = message {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1001));
    // Then the upstream answers: every request in flight gets its answer.
    release.send(true).unwrap();
    let mut failed = 0;
    for request in in_flight {
        match request.await.unwrap() {
            Ok((200, body)) if body == "ok" => {}
            _ => failed += 1,
        }
    }
    assert_eq!(failed, 0, "requests in flight failed at SIGTERM");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
