//! SEC-18: proxied WebSockets end with their session (logout, back-channel logout, an
//! administrator's end, expiry: close code 1008), messages are capped (a 15 MiB message closes
//! the relay with 1009 and never reaches the upstream), idle relays time out, and a request that
//! is not a valid upgrade gets no upstream handshake and no token.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use tokenkeeper_bff::{ApiRoute, BffSessionStore as _, RouteToken};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_18_websocket_relays_end_with_their_session() {
    let h = harness(Setup::default()).await;

    // Logout.
    let browser = browser();
    let cookie = log_in_for_cookie(&h, &browser).await;
    let mut socket = open(&h, "/api/user/ws", &cookie).await;
    assert_eq!(h.bff.open_websockets(), 1);
    let logout = logout_url(&h, &browser).await;
    browser
        .get(format!("{}{logout}", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(close_code(&mut socket).await, Some(1008), "logout");

    // Back-channel logout.
    let browser = common::browser();
    let cookie = log_in_for_cookie(&h, &browser).await;
    let mut socket = open(&h, "/api/user/ws", &cookie).await;
    let sid = h.sessions.find(Some("alice"), None).await.unwrap()[0]
        .sid
        .clone();
    let token = h.idp.logout_token("spa", None, Some(&sid));
    let response = reqwest::Client::new()
        .post(format!("{}/bff/backchannel", h.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("logout_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(close_code(&mut socket).await, Some(1008), "back-channel");

    // An administrator's end.
    let browser = common::browser();
    let cookie = log_in_for_cookie(&h, &browser).await;
    let mut socket = open(&h, "/api/user/ws", &cookie).await;
    assert_eq!(h.bff.end_sessions(Some("alice"), None).await.unwrap(), 1);
    assert_eq!(close_code(&mut socket).await, Some(1008), "admin");

    // Expiry, found by the cleanup.
    let browser = common::browser();
    let cookie = log_in_for_cookie(&h, &browser).await;
    let mut socket = open(&h, "/api/user/ws", &cookie).await;
    h.clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(h.bff.cleanup_expired().await.unwrap(), 1);
    assert_eq!(close_code(&mut socket).await, Some(1008), "expiry");

    // A session that stays: its relay stays.
    h.clock.advance(Duration::from_secs(60));
    let browser = common::browser();
    let cookie = log_in_for_cookie(&h, &browser).await;
    let mut socket = open(&h, "/api/user/ws", &cookie).await;
    socket.send(Message::Text("still".into())).await.unwrap();
    let echo = socket.next().await.unwrap().unwrap();
    assert_eq!(echo.into_text().unwrap().as_str(), "echo: still");
    socket.close(None).await.unwrap();
    for _ in 0..100 {
        if h.bff.open_websockets() == 0 {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.bff.open_websockets(), 0, "a closed relay is forgotten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_18_websocket_messages_are_capped_and_idle_relays_time_out() {
    let h = harness(Setup {
        more_routes: vec![("/api/quiet", |r: ApiRoute| {
            r.token(RouteToken::User)
                .websocket_idle_timeout(Duration::from_millis(200))
        })],
        ..Setup::default()
    })
    .await;
    let browser = browser();
    let cookie = log_in_for_cookie(&h, &browser).await;

    // 15 MiB in one message: refused at the cap (1 MiB by default), never relayed.
    let mut socket = open(&h, "/api/user/ws", &cookie).await;
    let big = "x".repeat(15 * 1024 * 1024);
    let _ = socket.send(Message::Text(big.into())).await;
    assert_eq!(close_code(&mut socket).await, Some(1009));
    // Just under the cap goes through.
    let mut socket = open(&h, "/api/user/ws", &cookie).await;
    let fits = "y".repeat(1024 * 1024 - 64);
    socket
        .send(Message::Text(fits.clone().into()))
        .await
        .unwrap();
    let echo = socket.next().await.unwrap().unwrap();
    assert_eq!(echo.into_text().unwrap().len(), fits.len() + "echo: ".len());
    socket.close(None).await.unwrap();

    // Idle: closed with 1001.
    let mut quiet = open(&h, "/api/quiet/ws", &cookie).await;
    assert_eq!(close_code(&mut quiet).await, Some(1001));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_18_an_invalid_upgrade_gets_no_upstream_handshake() {
    let h = harness(Setup::default()).await;
    let browser = browser();
    let cookie = log_in_for_cookie(&h, &browser).await;
    let tokens_before = h.idp.token_requests("client_credentials");
    for path in ["/api/user/ws", "/api/client/ws"] {
        // `Upgrade: websocket` with our Origin, but no key and no version.
        let response = reqwest::Client::new()
            .get(format!("{}{path}", h.url))
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("origin", &h.url)
            .header("cookie", format!("bff={cookie}"))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_client_error(),
            "{path}: {}",
            response.status()
        );
    }
    assert!(
        h.seen.lock().unwrap().last.is_none(),
        "no upstream handshake"
    );
    assert_eq!(
        h.idp.token_requests("client_credentials"),
        tokens_before,
        "no token fetched"
    );
}
