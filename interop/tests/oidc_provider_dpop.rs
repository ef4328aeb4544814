//! DPoP (RFC 9449) against node oidc-provider: a client that requires DPoP with nonces
//! required, a login bound with `dpop_jkt` (code exchange, refresh with rotation, userinfo with
//! the DPoP scheme), and `cnf.jkt` for every proof algorithm the provider accepts.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{jwt_claims, scripted_login, Provider, RESOURCE};
use tokenkeeper::dpop::{DpopAlgorithm, DpopKey};
use tokenkeeper::user::{LoginRequest, UserTokenManager, UserTokenParams};
use tokenkeeper::{
    AuthorizationRequestBuilder, ClientConfig, ClientCredentialsTokenManager, TokenRequestParams,
};

const REDIRECT: &str = "http://127.0.0.1:1/callback";

#[tokio::test]
async fn interop_dpop_with_nonces_required_for_a_client_that_requires_dpop() {
    let provider = Provider::start(&[("DPOP_REQUIRE_NONCE", "1")]).await;
    let key = Arc::new(DpopKey::generate(DpopAlgorithm::ES256).unwrap());
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::from_issuer(&provider.issuer, "cc-dpop", "cc-dpop-secret")
                .resource(RESOURCE)
                .dpop(key.clone())
                .require_dpop(true),
        )
        .client(
            "no-proof",
            ClientConfig::from_issuer(&provider.issuer, "cc-dpop", "cc-dpop-secret")
                .resource(RESOURCE),
        )
        .build()
        .unwrap();
    for renew in [false, true, true] {
        let params = TokenRequestParams::default().force_renewal(renew);
        let token = tokens.get_token("api", &params).await.unwrap();
        assert!(token.is_dpop(), "token_type DPoP");
        let claims = jwt_claims(token.access_token().secret());
        assert_eq!(claims["cnf"]["jkt"], key.thumbprint());
        assert_eq!(claims["aud"], RESOURCE);
    }
    // The provider does require DPoP of this client.
    let refused = tokens
        .get_token("no-proof", &TokenRequestParams::default())
        .await
        .unwrap_err();
    assert!(refused.oauth_error().is_some(), "{refused}");
}

#[tokio::test]
async fn interop_login_with_dpop_refresh_rotation_and_userinfo() {
    let provider =
        Provider::start(&[("ROTATE_REFRESH_TOKENS", "1"), ("DPOP_REQUIRE_NONCE", "1")]).await;
    let users = UserTokenManager::builder(ClientConfig::from_issuer(
        &provider.issuer,
        "web-dpop",
        "web-dpop-secret",
    ))
    .per_session_dpop(DpopAlgorithm::ES256)
    .build()
    .unwrap();
    let metadata = users
        .endpoint()
        .discovery()
        .unwrap()
        .metadata()
        .await
        .unwrap();
    let login_key = users.new_login_dpop().unwrap().unwrap();
    let jkt = login_key.jkt().to_owned();
    let request = AuthorizationRequestBuilder::new(
        metadata.authorization_endpoint.clone().unwrap(),
        "web-dpop",
        REDIRECT,
    )
    .scope("openid offline_access")
    .prompt("consent")
    .extra("dpop_jkt", jkt.clone())
    .build()
    .unwrap();
    let callback = scripted_login(&request.url, REDIRECT, "alice").await;
    let query: std::collections::HashMap<String, String> =
        callback.query_pairs().into_owned().collect();
    let login = users
        .complete_login(&LoginRequest {
            code: &query["code"],
            code_verifier: request.pkce.verifier(),
            redirect_uri: REDIRECT,
            nonce: &request.nonce,
            resource: None,
            dpop: Some(&login_key),
            requirements: None,
        })
        .await
        .unwrap();
    let session = login.session;
    let stored = users.store().get(&session).await.unwrap().unwrap();
    assert_eq!(stored.value.dpop_jkt.as_deref(), Some(jkt.as_str()));
    let first_refresh = stored.value.refresh_token.clone().unwrap();

    let userinfo = metadata.userinfo_endpoint.clone().unwrap();
    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(users.middleware(session.clone(), UserTokenParams::default()))
        .build();
    let call = || async {
        let response = http.get(userinfo.clone()).send().await.unwrap();
        let status = response.status();
        (
            status.as_u16(),
            response
                .json::<serde_json::Value>()
                .await
                .unwrap_or_default(),
        )
    };
    let (status, body) = call().await;
    assert_eq!(
        (status, body["sub"].as_str()),
        (200, Some("alice")),
        "{body}"
    );

    // Refresh with rotation, twice, each with a proof of the session's key.
    let mut previous = first_refresh;
    for _ in 0..2 {
        let token = users
            .get_access_token(&session, &UserTokenParams::default().force_renewal(true))
            .await
            .unwrap();
        assert!(token.is_dpop());
        let stored = users.store().get(&session).await.unwrap().unwrap();
        let rotated = stored.value.refresh_token.clone().unwrap();
        assert_ne!(rotated.secret(), previous.secret(), "rotated");
        previous = rotated;
        let (status, body) = call().await;
        assert_eq!(
            (status, body["sub"].as_str()),
            (200, Some("alice")),
            "{body}"
        );
    }

    // The provider bound the access token to our key.
    let token = users
        .get_access_token(&session, &UserTokenParams::default())
        .await
        .unwrap();
    let introspection: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/token/introspection", provider.issuer))
        .basic_auth("web-dpop", Some("web-dpop-secret"))
        .form(&[("token", token.access_token().secret())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(introspection["active"], true, "{introspection}");
    assert_eq!(introspection["cnf"]["jkt"], jkt.as_str(), "{introspection}");
    assert_eq!(introspection["token_type"], "DPoP");
}

#[tokio::test]
async fn interop_cnf_jkt_is_our_thumbprint_for_every_algorithm() {
    let provider = Provider::start(&[]).await;
    for alg in [
        DpopAlgorithm::ES256,
        DpopAlgorithm::ES384,
        DpopAlgorithm::EdDSA,
        DpopAlgorithm::PS256,
        DpopAlgorithm::RS256,
    ] {
        let key = Arc::new(DpopKey::generate(alg).unwrap());
        let tokens = ClientCredentialsTokenManager::builder()
            .client(
                "api",
                ClientConfig::from_issuer(&provider.issuer, "cc-dpop", "cc-dpop-secret")
                    .resource(RESOURCE)
                    .dpop(key.clone())
                    .require_dpop(true),
            )
            .build()
            .unwrap();
        let token = tokens
            .get_token("api", &TokenRequestParams::default())
            .await
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(
            jwt_claims(token.access_token().secret())["cnf"]["jkt"],
            key.thumbprint(),
            "{alg:?}"
        );
    }
}
