//! EN-01: the BFF served as `tokenkeeper bff` serves it — the per-core server, with API routes
//! through the engine and everything else through the management endpoints — keeps its
//! behaviour: login, the user's token upstream with `X-Forwarded-*` from the connection,
//! anti-forgery, server-sent events as they come, WebSockets that end with their session.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use futures_util::StreamExt as _;
use tokenkeeper_bff::RouteToken;

fn per_core() -> Setup {
    Setup {
        per_core_server: true,
        routes: vec![
            ("/api/user", RouteToken::User),
            ("/api/stream", RouteToken::None),
        ],
        ..Setup::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn en_01_the_per_core_server_serves_the_bffs_api_and_management_endpoints() {
    let h = harness(per_core()).await;
    let browser = browser();
    let cookie = log_in_for_cookie(&h, &browser).await;
    let user = browser
        .get(format!("{}/bff/user", h.url))
        .header("x-csrf", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(user.status(), 200);
    let response = browser
        .get(format!("{}/api/user/items?q=1", h.url))
        .header("x-csrf", "1")
        .header("x-forwarded-for", "10.9.9.9")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = h.seen.lock().unwrap().last.clone().unwrap();
    let text = seen.to_string();
    assert!(text.contains("Bearer "), "{text}");
    assert!(
        text.contains("127.0.0.1"),
        "X-Forwarded-For from the connection: {text}"
    );
    assert!(!text.contains("10.9.9.9"), "{text}");
    assert!(!text.contains(&cookie), "{text}");
    // Anti-forgery, and the app's own routes beside the BFF's.
    let refused = browser
        .get(format!("{}/api/user/items", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let app = browser.get(format!("{}/app", h.url)).send().await.unwrap();
    assert_eq!(app.text().await.unwrap(), "the app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn en_01_the_per_core_server_streams_events_and_relays_websockets() {
    let h = harness(per_core()).await;
    let browser = browser();
    let mut events = browser
        .get(format!("{}/api/stream/events", h.url))
        .header("x-csrf", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let first = events.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"data: one\n\n");
    h.release.notify_one();
    let second = events.chunk().await.unwrap().unwrap();
    assert_eq!(&second[..], b"data: two\n\n");

    let cookie = log_in_for_cookie(&h, &browser).await;
    let mut socket = open(&h, "/api/user/ws", &cookie).await;
    assert_eq!(h.bff.open_websockets(), 1);
    let logout = logout_url(&h, &browser).await;
    browser
        .get(format!("{}{logout}", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(close_code(&mut socket).await, Some(1008));
    assert!(socket.next().await.is_none_or(|m| m.is_err()));
}
