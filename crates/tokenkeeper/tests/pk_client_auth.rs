//! Client authentication with assertions: private_key_jwt (PK-06) and client_secret_jwt
//! (PK-13), against the test server, which validates them.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use tokenkeeper::dpop::{DpopAlgorithm, DpopKey};
use tokenkeeper::user::{Revocation, SessionKey, UserTokenManager, UserTokens};
use tokenkeeper::{
    AssertionContext, AuthMethod, ClientAssertionProvider, ClientConfig,
    ClientCredentialsTokenManager, PrivateKeyJwt, TokenRequestParams,
};
use tokenkeeper_testing::{ClientAuthMethod, TestClient, TestServer};

const CC: &str = "client_credentials";

fn claims(assertion: &str) -> Value {
    let payload = assertion.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn assertion_of(server: &TestServer) -> String {
    let request = server.last_token_request().unwrap();
    assert_eq!(
        request.form_value("client_assertion_type"),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    assert!(
        request.form_value("client_secret").is_none(),
        "no secret in the body"
    );
    assert!(
        !request.headers.contains_key("authorization"),
        "no Basic header"
    );
    request.form_value("client_assertion").unwrap().to_owned()
}

#[tokio::test]
async fn pk_06_private_key_jwt_fresh_assertion_per_request_revocation_included() {
    for alg in [
        DpopAlgorithm::ES256,
        DpopAlgorithm::PS256,
        DpopAlgorithm::EdDSA,
    ] {
        let signer = PrivateKeyJwt::new(DpopKey::generate(alg).unwrap()).with_kid("k1");
        let server = TestServer::builder()
            .client(TestClient::new("worker", "unused").private_key_jwt(signer.public_jwk()))
            .start()
            .await;
        let signer = Arc::new(signer);
        let tokens = ClientCredentialsTokenManager::builder()
            .client(
                "api",
                ClientConfig::new(server.token_endpoint(), "worker", "")
                    .private_key_jwt(signer.clone()),
            )
            .build()
            .unwrap();
        tokens
            .get_token("api", &TokenRequestParams::default())
            .await
            .unwrap();
        let first = claims(&assertion_of(&server));
        assert_eq!(first["iss"], "worker");
        assert_eq!(first["sub"], "worker");
        assert_eq!(first["aud"], server.token_endpoint());
        let lifetime = first["exp"].as_u64().unwrap() - first["iat"].as_u64().unwrap();
        assert!(lifetime <= 60, "a short exp: {lifetime}");
        tokens
            .get_token("api", &TokenRequestParams::new().force_renewal(true))
            .await
            .unwrap();
        let second = claims(&assertion_of(&server));
        assert_ne!(first["jti"], second["jti"], "a fresh jti for every request");
        assert_eq!(server.token_requests(CC), 2, "{alg:?}");
        assert_eq!(server.client_assertions(), 2);

        // Revocation authenticates with a fresh assertion too.
        let users = UserTokenManager::builder(
            ClientConfig::new(server.token_endpoint(), "worker", "").private_key_jwt(signer),
        )
        .revocation_endpoint(server.revocation_endpoint())
        .build()
        .unwrap();
        let session = SessionKey::new("s-1");
        let refresh = server.issue_refresh_token("worker", "alice", None);
        users
            .replace(
                &session,
                UserTokens {
                    refresh_token: Some(refresh.as_str().into()),
                    ..UserTokens::default()
                },
            )
            .await
            .unwrap();
        assert!(matches!(
            users.logout(&session).await.unwrap(),
            Revocation::Revoked
        ));
        assert_eq!(server.client_assertions(), 3);
        assert!(!server.is_refresh_token_active(&refresh));
    }
}

#[tokio::test]
async fn pk_13_client_secret_jwt_fresh_hs256_assertion_per_request_retry_revocation_introspection()
{
    let server = TestServer::builder()
        .client(
            TestClient::new("worker", "s3cr3t-hmac-key")
                .auth_method(ClientAuthMethod::ClientSecretJwt),
        )
        .start()
        .await;
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::new(server.token_endpoint(), "worker", "s3cr3t-hmac-key")
                .auth_method(AuthMethod::ClientSecretJwt),
        )
        .build()
        .unwrap();
    tokens
        .get_token("api", &TokenRequestParams::default())
        .await
        .unwrap();
    let assertion = assertion_of(&server);
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(assertion.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "HS256");
    let body = server.last_token_request().unwrap().form;
    assert!(!body.iter().any(|(_, v)| v.contains("s3cr3t-hmac-key")));
    let first = claims(&assertion);
    assert_eq!(
        (first["iss"].as_str(), first["sub"].as_str()),
        (Some("worker"), Some("worker"))
    );
    tokens
        .get_token("api", &TokenRequestParams::new().force_renewal(true))
        .await
        .unwrap();
    assert_ne!(claims(&assertion_of(&server))["jti"], first["jti"]);
    assert_eq!(server.client_assertions(), 2);

    // A retry (the DPoP nonce retry) carries a fresh assertion too: the server refuses a
    // reused `jti`, so two assertions are counted for the one token.
    server.set_dpop_nonce_required(true);
    let dpop = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::new(server.token_endpoint(), "worker", "s3cr3t-hmac-key")
                .auth_method(AuthMethod::ClientSecretJwt)
                .dpop(Arc::new(DpopKey::generate(DpopAlgorithm::EdDSA).unwrap())),
        )
        .build()
        .unwrap();
    dpop.get_token("api", &TokenRequestParams::default())
        .await
        .unwrap();
    assert_eq!(
        server.token_requests(CC),
        4,
        "refused for the nonce, retried"
    );
    assert_eq!(server.client_assertions(), 4);
    server.set_dpop_nonce_required(false);

    // Revocation and introspection: a fresh assertion each.
    let endpoint = tokenkeeper::TokenEndpoint::new(
        server.token_endpoint().parse().unwrap(),
        tokenkeeper::ClientAuthentication::ClientSecretJwt {
            client_id: tokenkeeper::ClientId::new("worker"),
            client_secret: "s3cr3t-hmac-key".into(),
        },
        Arc::new(tokenkeeper::ReqwestTransport::new(&Default::default()).unwrap()),
    );
    let refresh = server.issue_refresh_token("worker", "alice", None);
    let introspection = server.introspection_endpoint().parse::<url::Url>().unwrap();
    let active = endpoint
        .introspect(introspection.clone(), &refresh, Some("refresh_token"))
        .await
        .unwrap();
    assert_eq!(active["active"], true);
    endpoint
        .revoke(
            server.revocation_endpoint().parse().unwrap(),
            &refresh,
            "refresh_token",
        )
        .await
        .unwrap();
    let revoked = endpoint
        .introspect(introspection, &refresh, None)
        .await
        .unwrap();
    assert_eq!(revoked["active"], false);
    assert_eq!(
        server.client_assertions(),
        7,
        "one fresh assertion per call"
    );

    // A wrong secret is refused by the server.
    let wrong = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::new(server.token_endpoint(), "worker", "not-the-key")
                .auth_method(AuthMethod::ClientSecretJwt),
        )
        .build()
        .unwrap();
    let error = wrong
        .get_token("api", &TokenRequestParams::default())
        .await
        .unwrap_err();
    assert_eq!(error.oauth_error(), Some("invalid_client"));
}

/// A provider that hands out what the test tells it to, to show the server refuses bad ones.
#[derive(Debug)]
struct Scripted(std::sync::Mutex<Vec<String>>);

impl ClientAssertionProvider for Scripted {
    fn assertion<'a>(
        &'a self,
        _: &'a AssertionContext<'a>,
    ) -> futures_util::future::BoxFuture<'a, Result<String, tokenkeeper::Error>> {
        let next = self.0.lock().unwrap().remove(0);
        Box::pin(async move { Ok(next) })
    }
}

#[tokio::test]
async fn the_test_server_refuses_bad_client_assertions() {
    let key = DpopKey::generate(DpopAlgorithm::ES256).unwrap();
    let signer = PrivateKeyJwt::new(key);
    let server = TestServer::builder()
        .client(TestClient::new("worker", "unused").private_key_jwt(signer.public_jwk()))
        .client(TestClient::new("other", "unused").private_key_jwt(signer.public_jwk()))
        .start()
        .await;
    let context = |client_id: &'static str, audience: String| (client_id, audience);
    let endpoint = server.token_endpoint();
    let make = |(client_id, audience): (&'static str, String)| {
        let signer = &signer;
        async move {
            signer
                .assertion(&AssertionContext {
                    client_id,
                    audience: &audience,
                })
                .await
                .unwrap()
        }
    };
    let good = make(context("worker", endpoint.clone())).await;
    let other_key = PrivateKeyJwt::new(DpopKey::generate(DpopAlgorithm::ES256).unwrap())
        .assertion(&AssertionContext {
            client_id: "worker",
            audience: &endpoint,
        })
        .await
        .unwrap();
    let wrong_audience = make(context("worker", "https://elsewhere.example/token".into())).await;
    let of_another_client = make(context("other", endpoint.clone())).await;
    let cases = vec![
        (good.clone(), true),
        (good, false), // replayed jti
        (other_key, false),
        (wrong_audience, false),
        (of_another_client, false), // iss is "other", but the form says client_id=worker
        ("not.a.jwt".to_owned(), false),
    ];
    for (assertion, accepted) in cases {
        let provider = Arc::new(Scripted(std::sync::Mutex::new(vec![assertion])));
        let tokens = ClientCredentialsTokenManager::builder()
            .client(
                "api",
                ClientConfig::new(server.token_endpoint(), "worker", "").private_key_jwt(provider),
            )
            .build()
            .unwrap();
        let result = tokens
            .get_token("api", &TokenRequestParams::default())
            .await;
        assert_eq!(result.is_ok(), accepted, "{result:?}");
        if !accepted {
            assert_eq!(result.unwrap_err().oauth_error(), Some("invalid_client"));
        }
    }
}
