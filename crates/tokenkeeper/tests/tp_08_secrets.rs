//! TP-08: secrets and tokens never appear in `Debug`, `Display`, errors or logs.
//!
//! In its own test binary so that its log capture is the process's only subscriber.
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine as _;
use common::*;
use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager, Error};
use tokenkeeper_testing::{Fault, Times};

#[tokio::test]
async fn tp_08_secrets_and_tokens_never_in_debug_errors_or_logs() {
    let logs = tokenkeeper_testing::LogBuffer::default();
    logs.install_global(tracing::Level::TRACE);

    let server = server().await;
    let config = config(&server);
    let tokens = ClientCredentialsTokenManager::builder()
        .client("api", config.clone())
        .build()
        .unwrap();
    let token = tokens.get_token("api", &default_params()).await.unwrap();
    let access = token.access_token().secret().to_owned();

    // Failures of every kind, to exercise error paths and their logging.
    let mut errors: Vec<Error> = Vec::new();
    for fault in [
        Fault::oauth(401, "invalid_client"),
        Fault::HtmlBody { status: 502 },
        Fault::MalformedJson,
        Fault::CloseConnection,
        Fault::OversizedBody { bytes: 1 << 20 },
    ] {
        server.clear_faults();
        server.inject_fault(fault, Times::Always);
        let fresh = ClientCredentialsTokenManager::builder()
            .client("api", config.clone())
            .build()
            .unwrap();
        errors.push(fresh.get_token("api", &default_params()).await.unwrap_err());
    }
    let wrong = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::new(server.token_endpoint(), CLIENT_ID, "wrong-secret-XYZ"),
        )
        .build()
        .unwrap();
    server.clear_faults();
    errors.push(wrong.get_token("api", &default_params()).await.unwrap_err());

    let mut texts = vec![
        format!("{config:?}"),
        format!("{tokens:?}"),
        format!("{token:?}"),
        format!("{:?}", token.access_token()),
        format!("{:?}", token.authorization_header()),
        format!("{wrong:?}"),
    ];
    for e in &errors {
        texts.push(format!("{e}"));
        texts.push(format!("{e:?}"));
    }
    // User tokens: login, refresh with rotation, a refused refresh, logout.
    server.register_client(tokenkeeper_testing::TestClient::new("web", SECRET));
    server.set_rotate_refresh_tokens(true);
    let users = tokenkeeper::user::UserTokenManager::builder(ClientConfig::from_issuer(
        server.issuer(),
        "web",
        SECRET,
    ))
    .build()
    .unwrap();
    let mut user_secrets = Vec::new();
    for name in ["alice", "bob"] {
        let session = tokenkeeper::user::SessionKey::from_sub_sid(name, "s");
        let refresh = server.issue_refresh_token("web", name, Some("openid"));
        user_secrets.push(refresh.clone());
        users
            .replace(
                &session,
                tokenkeeper::user::UserTokens {
                    refresh_token: Some(refresh.as_str().into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let token = users
            .get_access_token(&session, &Default::default())
            .await
            .unwrap();
        user_secrets.push(token.access_token().secret().to_owned());
        let stored = users.store().get(&session).await.unwrap().unwrap();
        user_secrets.push(
            stored
                .value
                .refresh_token
                .clone()
                .unwrap()
                .secret()
                .to_owned(),
        );
        texts.push(format!("{stored:?}"));
        texts.push(format!("{users:?}"));
        if name == "bob" {
            // Reuse of the first refresh token: refused, and the session is cleared.
            users
                .replace(
                    &session,
                    tokenkeeper::user::UserTokens {
                        refresh_token: Some(refresh.as_str().into()),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            let err = users
                .get_access_token(&session, &Default::default())
                .await
                .unwrap_err();
            texts.push(format!("{err} {err:?}"));
        } else {
            users.logout(&session).await.unwrap();
        }
    }
    texts.push(logs.text());
    for text in &texts {
        for secret in &user_secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a user token leaked: {text}"
            );
        }
        assert!(!text.contains(SECRET), "client secret leaked: {text}");
        assert!(
            !text.contains("wrong-secret-XYZ"),
            "client secret leaked: {text}"
        );
        assert!(!text.contains(&access), "access token leaked: {text}");
        // Basic credentials are base64 of the secret: that must not leak either.
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{SECRET}"));
        assert!(!text.contains(&basic), "basic credentials leaked: {text}");
    }
    assert!(
        texts.last().unwrap().contains("token request failed"),
        "the failures were logged: {}",
        texts.last().unwrap()
    );
}
