//! Metrics (feature `metrics`): counters and the latency histogram are recorded per client.
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use tokenkeeper::metrics::names;
use tokenkeeper_testing::{Fault, TestRecorder, Times};

fn recorder() -> &'static TestRecorder {
    TestRecorder::global()
}

#[tokio::test]
async fn metrics_count_requests_hits_misses_failures_and_latency() {
    let recorder = recorder();
    let server = server().await;
    let tokens = networked(&server);
    for _ in 0..3 {
        tokens.get_token("api", &default_params()).await.unwrap();
    }
    let client = "{client=api}";
    assert_eq!(
        recorder.get(&format!(
            "{}{{client=api,grant=client_credentials}}",
            names::TOKEN_REQUESTS
        )),
        1
    );
    assert_eq!(recorder.get(&format!("{}{client}", names::CACHE_MISSES)), 1);
    assert_eq!(recorder.get(&format!("{}{client}", names::CACHE_HITS)), 2);
    assert_eq!(
        recorder.get(&format!("{}{client}", names::ENDPOINT_DURATION)),
        1
    );

    server.inject_fault(Fault::oauth(500, "server_error"), Times::Always);
    let failing = networked(&server);
    assert!(failing.get_token("api", &default_params()).await.is_err());
    assert_eq!(recorder.get(&format!("{}{client}", names::FAILURES)), 1);
    assert_eq!(
        recorder.get(&format!("{}{client}", names::ENDPOINT_DURATION)),
        2
    );
}

/// SEC-04 (the library side): a refresh token that cannot be revoked at logout is logged,
/// counted, and reported to the caller; the session's tokens are cleared anyway.
#[tokio::test]
async fn sec_04_revocation_failures_are_counted_and_visible() {
    use tokenkeeper::user::{Revocation, SessionKey, UserTokenManager, UserTokens};
    let recorder = recorder();
    let server = server().await;
    let failures = format!("{}{{client=user}}", names::REVOCATION_FAILURES);
    let before = recorder.get(&failures);
    let session = SessionKey::from_sub_sid("alice", "s-1");
    let tokens = || UserTokens {
        refresh_token: Some("rt-1".into()),
        ..UserTokens::default()
    };

    let unreachable = UserTokenManager::builder(tokenkeeper::ClientConfig::new(
        server.token_endpoint(),
        CLIENT_ID,
        SECRET,
    ))
    .revocation_endpoint("http://127.0.0.1:9/revoke")
    .build()
    .unwrap();
    unreachable.replace(&session, tokens()).await.unwrap();
    let outcome = unreachable.logout(&session).await.unwrap();
    assert!(matches!(outcome, Revocation::Failed(_)), "{outcome:?}");
    assert!(!outcome.succeeded());
    assert_eq!(recorder.get(&failures), before + 1, "counted");
    assert!(
        unreachable.store().get(&session).await.unwrap().is_none(),
        "cleared anyway"
    );

    let working = UserTokenManager::builder(tokenkeeper::ClientConfig::new(
        server.token_endpoint(),
        CLIENT_ID,
        SECRET,
    ))
    .revocation_endpoint(server.revocation_endpoint())
    .build()
    .unwrap();
    working.replace(&session, tokens()).await.unwrap();
    let outcome = working.logout(&session).await.unwrap();
    assert!(matches!(outcome, Revocation::Revoked), "{outcome:?}");
    assert_eq!(recorder.get(&failures), before + 1);
    assert!(matches!(
        working.logout(&session).await.unwrap(),
        Revocation::NoRefreshToken
    ));
}

/// PK-12 (the default half; the error half is in `pk_dpop_tokens.rs`): a Bearer token answered
/// to a DPoP token request is used as Bearer, with a warning logged and a count.
#[tokio::test]
async fn pk_12_a_bearer_downgrade_is_logged_and_counted() {
    let recorder = recorder();
    let server = tokenkeeper_testing::TestServer::builder()
        .client(tokenkeeper_testing::TestClient::new(
            "downgraded-client",
            SECRET,
        ))
        .start()
        .await;
    server.set_dpop_ignored(true);
    let key = std::sync::Arc::new(
        tokenkeeper::dpop::DpopKey::generate(tokenkeeper::dpop::DpopAlgorithm::ES256).unwrap(),
    );
    let tokens = tokenkeeper::ClientCredentialsTokenManager::builder()
        .client(
            "downgraded",
            tokenkeeper::ClientConfig::new(server.token_endpoint(), "downgraded-client", SECRET)
                .dpop(key),
        )
        .build()
        .unwrap();
    let logs = tokenkeeper_testing::LogBuffer::default();
    let counted = format!("{}{{client_id=downgraded-client}}", names::DPOP_DOWNGRADES);
    let before = recorder.get(&counted);
    let token = {
        let _guard = logs.install(tracing::Level::WARN);
        tokens
            .get_token("downgraded", &default_params())
            .await
            .unwrap()
    };
    assert!(!token.is_dpop());
    assert_eq!(token.token_type(), &tokenkeeper::TokenType::Bearer);
    assert_eq!(recorder.get(&counted), before + 1);
    assert!(
        logs.text().contains("not DPoP-bound"),
        "a warning: {}",
        logs.text()
    );
}
