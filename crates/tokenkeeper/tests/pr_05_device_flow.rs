//! PR-05: the device authorization grant (RFC 8628) in the library, against the test server on
//! paused time: the interval is kept, `slow_down` adds 5 s, `authorization_pending` keeps
//! polling, `access_denied` and `expired_token` stop, and a code that outlives `expires_in`
//! without an answer ends the poll.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokenkeeper::user::UserTokenManager;
use tokenkeeper::{AuthMethod, ClientConfig, Error, Scope, TokenEndpoint};
use tokenkeeper_testing::{Fault, TestClient, TestServer, Times};

async fn setup() -> (TestServer, UserTokenManager) {
    let server = TestServer::builder()
        .client(TestClient::new("cli", "").public())
        .start()
        .await;
    let users = UserTokenManager::builder(
        ClientConfig::from_issuer(server.issuer(), "cli", "").auth_method(AuthMethod::None),
    )
    .transport(server.transport())
    .build()
    .unwrap();
    (server, users)
}

fn endpoint(users: &UserTokenManager) -> &TokenEndpoint {
    users.endpoint()
}

fn scope() -> Scope {
    Scope::parse("openid offline_access")
}

#[tokio::test(start_paused = true)]
async fn pr_05_device_flow_polls_as_the_server_says_and_gets_tokens() {
    let (server, users) = setup().await;
    let device = endpoint(&users)
        .start_device_authorization(&scope(), &[])
        .await
        .unwrap();
    assert_eq!(device.interval, Duration::from_secs(5));
    assert!(device.verification_uri.as_str().ends_with("/device"));
    assert!(device.verification_uri_complete.is_some());
    assert!(
        !format!("{device:?}").contains(&device.device_code),
        "Debug hides the device code"
    );
    // Pending twice, then approved: three polls, 5 s apart.
    let started = tokio::time::Instant::now();
    let poll = {
        let users = users.clone();
        let device = device.clone();
        tokio::spawn(async move { endpoint(&users).poll_device_authorization(&device).await })
    };
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(server.approve_device(&device.user_code, "alice"));
    let tokens = poll.await.unwrap().unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(15));
    assert_eq!(
        server.device_polls(),
        (3, 0),
        "no poll faster than the interval"
    );
    assert!(
        tokens.refresh_token.is_some(),
        "offline_access: a refresh token"
    );
    let claims = server
        .verify_access_token(tokens.access_token.secret())
        .unwrap();
    assert_eq!(claims["sub"], "alice");
}

#[tokio::test(start_paused = true)]
async fn pr_05_slow_down_adds_five_seconds_each_time() {
    let (server, users) = setup().await;
    let device = endpoint(&users)
        .start_device_authorization(&scope(), &[])
        .await
        .unwrap();
    assert!(server.approve_device(&device.user_code, "alice"));
    server.inject_fault(
        Fault::OAuthError {
            status: 400,
            error: "slow_down".into(),
            description: None,
        },
        Times::Next(2),
    );
    let started = tokio::time::Instant::now();
    endpoint(&users)
        .poll_device_authorization(&device)
        .await
        .unwrap();
    // 5 s, then 10 s, then 15 s.
    assert_eq!(started.elapsed(), Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn pr_05_denied_expired_and_outlived_codes_stop_the_poll() {
    let (server, users) = setup().await;
    let device = endpoint(&users)
        .start_device_authorization(&scope(), &[])
        .await
        .unwrap();
    assert!(server.deny_device(&device.user_code));
    let e = endpoint(&users)
        .poll_device_authorization(&device)
        .await
        .unwrap_err();
    assert_eq!(e.oauth_error(), Some("access_denied"), "{e}");
    // The server says the code expired.
    let device = endpoint(&users)
        .start_device_authorization(&scope(), &[])
        .await
        .unwrap();
    server.inject_fault(
        Fault::OAuthError {
            status: 400,
            error: "expired_token".into(),
            description: None,
        },
        Times::Next(1),
    );
    let e = endpoint(&users)
        .poll_device_authorization(&device)
        .await
        .unwrap_err();
    assert_eq!(e.oauth_error(), Some("expired_token"), "{e}");
    // Nobody answers: the poll ends when the code would have expired, without a request past it.
    server.set_device_timing(5, 12);
    let device = endpoint(&users)
        .start_device_authorization(&scope(), &[])
        .await
        .unwrap();
    let (polls, _) = server.device_polls();
    let e = endpoint(&users)
        .poll_device_authorization(&device)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DeviceCodeExpired), "{e}");
    assert_eq!(server.device_polls().0, polls + 2);
}

#[tokio::test]
async fn pr_05_device_authorization_needs_a_registered_client() {
    let (server, _) = setup().await;
    let stranger = UserTokenManager::builder(
        ClientConfig::from_issuer(server.issuer(), "stranger", "").auth_method(AuthMethod::None),
    )
    .build()
    .unwrap();
    let e = stranger
        .endpoint()
        .start_device_authorization(&scope(), &[])
        .await
        .unwrap_err();
    assert_eq!(e.oauth_error(), Some("invalid_client"), "{e}");
}
