//! Client credentials against node oidc-provider (a certified OpenID Provider).
#![allow(clippy::unwrap_used)]

mod common;

use common::{jwt_claims, Provider, RESOURCE};
use tokenkeeper::{
    AuthMethod, ClientConfig, ClientCredentialsTokenManager, Resource, TokenRequestParams,
};

#[tokio::test]
async fn interop_client_secret_basic_with_resource_and_scope() {
    let provider = Provider::start(&[]).await;
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::from_issuer(&provider.issuer, "cc-basic", "cc-basic-secret")
                .scope("api:write api:read")
                .resource(RESOURCE),
        )
        .build()
        .unwrap();
    let token = tokens
        .get_token("api", &TokenRequestParams::default())
        .await
        .unwrap();
    let claims = jwt_claims(token.access_token().secret());
    assert_eq!(claims["aud"], RESOURCE);
    assert_eq!(claims["scope"], "api:read api:write");
    assert_eq!(claims["client_id"], "cc-basic");
    assert_eq!(claims["iss"], provider.issuer.as_str());
    assert_eq!(
        token.scope().map(ToString::to_string).as_deref(),
        Some("api:read api:write")
    );
    // Cached: the same token again.
    let again = tokens
        .get_token("api", &TokenRequestParams::default())
        .await
        .unwrap();
    assert!(token.same_token(&again));
}

#[tokio::test]
async fn interop_client_secret_post_with_per_request_scope() {
    let provider = Provider::start(&[]).await;
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::from_issuer(&provider.issuer, "cc-post", "cc-post-secret")
                .auth_method(AuthMethod::ClientSecretPost)
                .resource(RESOURCE),
        )
        .build()
        .unwrap();
    let read = TokenRequestParams::new().scope("api:read");
    let token = tokens.get_token("api", &read).await.unwrap();
    let claims = jwt_claims(token.access_token().secret());
    assert_eq!(claims["aud"], RESOURCE);
    assert_eq!(claims["scope"], "api:read");
    assert_eq!(claims["client_id"], "cc-post");

    let write = TokenRequestParams::new()
        .scope("api:write")
        .resource(Resource::parse(RESOURCE).unwrap());
    let token = tokens.get_token("api", &write).await.unwrap();
    assert_eq!(
        jwt_claims(token.access_token().secret())["scope"],
        "api:write"
    );
}

#[tokio::test]
async fn interop_token_endpoint_url_and_errors() {
    let provider = Provider::start(&[]).await;
    // A fixed token endpoint (no discovery), and a wrong secret: 401 invalid_client, typed.
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "good",
            ClientConfig::new(
                format!("{}/token", provider.issuer),
                "cc-basic",
                "cc-basic-secret",
            )
            .resource(RESOURCE)
            .scope("api:read"),
        )
        .client(
            "bad",
            ClientConfig::new(format!("{}/token", provider.issuer), "cc-basic", "wrong"),
        )
        .build()
        .unwrap();
    let token = tokens
        .get_token("good", &TokenRequestParams::default())
        .await
        .unwrap();
    assert_eq!(jwt_claims(token.access_token().secret())["aud"], RESOURCE);
    let err = tokens
        .get_token("bad", &TokenRequestParams::default())
        .await
        .unwrap_err();
    assert_eq!(err.oauth_error(), Some("invalid_client"));
    assert_eq!(err.status(), Some(401));
    // Without a resource the provider issues an opaque token and drops resource scopes.
    let opaque = ClientCredentialsTokenManager::builder()
        .client(
            "plain",
            ClientConfig::from_issuer(&provider.issuer, "cc-basic", "cc-basic-secret"),
        )
        .build()
        .unwrap()
        .get_token("plain", &TokenRequestParams::default())
        .await
        .unwrap();
    assert_eq!(opaque.access_token().secret().split('.').count(), 1);
}

/// PK-06 against oidc-provider: private_key_jwt with an EC key and with an RSA key (both RSA
/// signature schemes), a fresh assertion for every request.
#[tokio::test]
async fn interop_private_key_jwt_with_ec_and_rsa_keys() {
    use std::sync::Arc;
    use tokenkeeper::dpop::{DpopAlgorithm, DpopKey};
    use tokenkeeper::PrivateKeyJwt;
    for alg in [
        DpopAlgorithm::ES256,
        DpopAlgorithm::PS256,
        DpopAlgorithm::RS256,
    ] {
        let signer = PrivateKeyJwt::new(DpopKey::generate(alg).unwrap()).with_kid("client-key");
        let jwks = serde_json::json!({ "keys": [signer.public_jwk()] }).to_string();
        let provider = Provider::start(&[("CLIENT_JWKS", jwks.as_str())]).await;
        let tokens = ClientCredentialsTokenManager::builder()
            .client(
                "api",
                ClientConfig::from_issuer(&provider.issuer, "cc-pkjwt", "")
                    .private_key_jwt(Arc::new(signer))
                    .scope("api:read")
                    .resource(RESOURCE),
            )
            .build()
            .unwrap();
        let token = tokens
            .get_token("api", &TokenRequestParams::default())
            .await
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        let claims = jwt_claims(token.access_token().secret());
        assert_eq!(claims["client_id"], "cc-pkjwt");
        // A second request: a new assertion (oidc-provider accepts each jti once).
        let again = tokens
            .get_token("api", &TokenRequestParams::new().force_renewal(true))
            .await
            .unwrap_or_else(|e| panic!("{alg:?}, second request: {e}"));
        assert!(!again.same_token(&token));
    }
}
