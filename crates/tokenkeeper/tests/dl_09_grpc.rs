//! DL-09: a tonic gRPC client gets managed tokens through the tower layer — Bearer, and DPoP
//! (a proof per call for the call's URI, with `ath`) where the client has a DPoP key.
#![cfg(feature = "tonic")]
#![allow(clippy::unwrap_used)]

#[path = "../examples/grpc/echo.rs"]
#[allow(dead_code)]
mod echo;

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::Digest as _;
use tokenkeeper::dpop::{DpopAlgorithm, DpopKey};
use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager};
use tokenkeeper_testing::{TestClient, TestServer};

async fn setup(
    dpop: Option<Arc<DpopKey>>,
) -> (
    TestServer,
    echo::Echo,
    String,
    ClientCredentialsTokenManager,
) {
    let idp = TestServer::builder()
        .client(TestClient::new("grpc-client", "secret"))
        .start()
        .await;
    let service = echo::Echo::default();
    let url = echo::serve(service.clone()).await;
    let mut config = ClientConfig::new(idp.token_endpoint(), "grpc-client", "secret");
    if let Some(key) = dpop {
        config = config.dpop(key).require_dpop(true);
    }
    let tokens = ClientCredentialsTokenManager::builder()
        .client("echo", config)
        .build()
        .unwrap();
    (idp, service, url, tokens)
}

async fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn dl_09_tonic_client_gets_bearer_tokens_through_the_tower_layer() {
    let (idp, service, url, tokens) = setup(None).await;
    let client = tower::ServiceBuilder::new()
        .layer(tokens.layer("echo").unwrap())
        .service(channel(&url).await);
    for name in ["Ada", "Grace", "Edsger"] {
        assert_eq!(
            echo::say(client.clone(), name).await.unwrap(),
            format!("hello, {name}")
        );
    }
    let seen = service.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    let token = seen[0]
        .authorization
        .as_deref()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();
    assert!(idp.verify_access_token(&token).is_ok());
    assert!(seen
        .iter()
        .all(|s| s.authorization.as_deref() == Some(&format!("Bearer {token}"))));
    assert_eq!(
        idp.token_requests("client_credentials"),
        1,
        "one token, cached"
    );

    // Without the layer the server refuses the call: the token is what let it through.
    let status = echo::say(channel(&url).await, "nobody").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn dl_09_tonic_client_gets_dpop_bound_tokens_with_a_proof_per_call() {
    let key = Arc::new(DpopKey::generate(DpopAlgorithm::ES256).unwrap());
    let (idp, service, url, tokens) = setup(Some(key.clone())).await;
    // tonic's channel adds the origin below the layer: the layer is told it, for `htu`.
    let client = tower::ServiceBuilder::new()
        .layer(tokens.layer("echo").unwrap().origin(&url).unwrap())
        .service(channel(&url).await);
    for name in ["Ada", "Grace"] {
        echo::say(client.clone(), name).await.unwrap();
    }
    let seen = service.seen.lock().unwrap().clone();
    let mut jtis = Vec::new();
    for call in &seen {
        let token = call
            .authorization
            .as_deref()
            .unwrap()
            .strip_prefix("DPoP ")
            .unwrap();
        let claims = idp.verify_access_token(token).unwrap();
        assert_eq!(claims["cnf"]["jkt"], key.thumbprint());
        // The proof: signed by the key in its header, for this call's method and URI, bound to
        // the token.
        let proof = call.dpop.as_deref().unwrap();
        let header = jsonwebtoken::decode_header(proof).unwrap();
        assert_eq!(header.typ.as_deref(), Some("dpop+jwt"));
        let decoding = jsonwebtoken::DecodingKey::from_jwk(header.jwk.as_ref().unwrap()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let proof = jsonwebtoken::decode::<serde_json::Value>(proof, &decoding, &validation)
            .unwrap()
            .claims;
        assert_eq!(proof["htm"], "POST");
        assert_eq!(proof["htu"], format!("{url}{}", echo::SAY));
        assert_eq!(
            proof["ath"],
            URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(token.as_bytes()))
        );
        jtis.push(proof["jti"].as_str().unwrap().to_owned());
    }
    assert_eq!(jtis.len(), 2);
    // Without the origin, a relative URI cannot carry a proof: a clear error, nothing sent.
    let bare = tower::ServiceBuilder::new()
        .layer(tokens.layer("echo").unwrap())
        .service(channel(&url).await);
    let status = echo::say(bare, "Ada").await.unwrap_err();
    assert!(status.message().contains("absolute URI"), "{status:?}");
    assert_eq!(service.seen.lock().unwrap().len(), 2);
    assert_ne!(jtis[0], jtis[1], "a fresh proof per call");
    assert_eq!(idp.token_requests("client_credentials"), 1);
}
