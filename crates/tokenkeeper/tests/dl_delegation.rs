//! Delegation (DL): token exchange (RFC 8693) managed like every other token.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokenkeeper::exchange::token_types;
use tokenkeeper::{
    ClientConfig, ClientCredentialsTokenManager, Error, Resource, TokenExchange, TokenRequestParams,
};
use tokenkeeper_testing::{TestClient, TestServer};

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// A server with the exchanging API (`worker`) and a front end whose tokens are the subjects.
async fn exchange_server() -> Arc<TestServer> {
    Arc::new(
        TestServer::builder()
            .client(TestClient::new(CLIENT_ID, SECRET))
            .client(TestClient::new("frontend", "frontend-secret"))
            .client(TestClient::new("batch", "batch-secret"))
            .start()
            .await,
    )
}

/// A token of client `client` (its `sub` is the client id), to exchange.
async fn subject(server: &TestServer, client: &str, secret: &str) -> String {
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "c",
            ClientConfig::new(server.token_endpoint(), client, secret),
        )
        .transport(server.transport())
        .build()
        .unwrap();
    tokens
        .get_token("c", &TokenRequestParams::default())
        .await
        .unwrap()
        .access_token()
        .secret()
        .to_owned()
}

fn exchanging(server: &TestServer) -> ClientCredentialsTokenManager {
    in_process(server).build().unwrap()
}

fn for_billing(subject: &str) -> TokenRequestParams {
    TokenRequestParams::new().exchange(TokenExchange::access_token(subject).audience("billing"))
}

#[tokio::test]
async fn dl_01_token_exchange_sends_the_rfc_8693_fields_and_checks_the_issued_type() {
    let server = exchange_server().await;
    let subject_token = subject(&server, "frontend", "frontend-secret").await;
    let actor_token = subject(&server, "batch", "batch-secret").await;
    let tokens = exchanging(&server);
    let params = TokenRequestParams::new()
        .exchange(
            TokenExchange::access_token(&subject_token)
                .actor(&actor_token, token_types::ACCESS_TOKEN)
                .audience("billing")
                .audience("ledger")
                .requested_token_type(token_types::JWT),
        )
        .resource(Resource::parse("https://billing.example.com/").unwrap())
        .scope("invoices.read");
    let token = tokens.get_token("api", &params).await.unwrap();

    let sent = server.recorded_requests().pop().unwrap();
    assert_eq!(sent.form_values("grant_type"), [EXCHANGE]);
    assert_eq!(sent.form_values("subject_token"), [subject_token.as_str()]);
    assert_eq!(
        sent.form_values("subject_token_type"),
        [token_types::ACCESS_TOKEN]
    );
    assert_eq!(sent.form_values("actor_token"), [actor_token.as_str()]);
    assert_eq!(
        sent.form_values("actor_token_type"),
        [token_types::ACCESS_TOKEN]
    );
    assert_eq!(sent.form_values("audience"), ["billing", "ledger"]);
    assert_eq!(
        sent.form_values("resource"),
        ["https://billing.example.com/"]
    );
    assert_eq!(sent.form_values("scope"), ["invoices.read"]);
    assert_eq!(sent.form_values("requested_token_type"), [token_types::JWT]);

    // The server verified the subject and the actor: the token is the front end's, acted on by
    // the batch client.
    let claims = server
        .verify_access_token(token.access_token().secret())
        .unwrap();
    assert_eq!(claims["sub"], "frontend");
    assert_eq!(claims["ext"]["act"]["sub"], "batch");

    // `issued_token_type`: required, and the requested type when one was asked for.
    for (answer, requested) in [
        (None, None),
        (Some(token_types::ID_TOKEN), None),
        (Some(token_types::ACCESS_TOKEN), Some(token_types::JWT)),
    ] {
        server.set_exchange_issued_type(Some(answer));
        let mut exchange = TokenExchange::access_token(&subject_token)
            .audience(format!("{answer:?}{requested:?}"));
        if let Some(requested) = requested {
            exchange = exchange.requested_token_type(requested);
        }
        let error = tokens
            .get_token("api", &TokenRequestParams::new().exchange(exchange))
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::InvalidResponse(_)),
            "{answer:?}: {error:?}"
        );
    }
    server.set_exchange_issued_type(None);

    // A subject the server does not accept: its error, typed.
    let error = tokens
        .get_token(
            "api",
            &TokenRequestParams::new().exchange(
                TokenExchange::access_token("not-a-token").subject_expires_at(
                    tokenkeeper::Timestamp::system_now().saturating_add(Duration::from_secs(60)),
                ),
            ),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::OAuth(e) if e.error == "invalid_grant"),
        "{error:?}"
    );
}

#[tokio::test]
async fn dl_02_exchanged_tokens_are_keyed_by_a_hash_of_the_subject() {
    let server = exchange_server().await;
    let alice = subject(&server, "frontend", "frontend-secret").await;
    let bob = subject(&server, "batch", "batch-secret").await;
    let tokens = exchanging(&server);

    let key = tokens.cache_key("api", &for_billing(&alice)).unwrap();
    assert!(
        !key.as_str().contains(&alice),
        "never the token itself: {key}"
    );
    assert!(key.as_str().contains("subject="), "{key}");
    assert_eq!(key, tokens.cache_key("api", &for_billing(&alice)).unwrap());
    assert_ne!(key, tokens.cache_key("api", &for_billing(&bob)).unwrap());
    // Every parameter is in the key.
    for other in [
        TokenRequestParams::new().exchange(TokenExchange::access_token(&alice).audience("ledger")),
        TokenRequestParams::new().exchange(TokenExchange::access_token(&alice)),
        for_billing(&alice).scope("x"),
        TokenRequestParams::new().exchange(
            TokenExchange::access_token(&alice)
                .audience("billing")
                .requested_token_type(token_types::JWT),
        ),
        TokenRequestParams::new().exchange(
            TokenExchange::access_token(&alice)
                .audience("billing")
                .actor(&bob, token_types::ACCESS_TOKEN),
        ),
        TokenRequestParams::default(),
    ] {
        assert_ne!(key, tokens.cache_key("api", &other).unwrap(), "{other:?}");
    }
    // The hash is keyed: another manager's differs, unless both are given the same key.
    assert_ne!(
        key,
        exchanging(&server)
            .cache_key("api", &for_billing(&alice))
            .unwrap()
    );
    let shared = |_| {
        in_process(&server)
            .exchange_hash_key(&[9; 32])
            .build()
            .unwrap()
            .cache_key("api", &for_billing(&alice))
            .unwrap()
    };
    assert_eq!(shared(1), shared(2));

    // Two subjects never share an exchanged token.
    let for_alice = tokens.get_token("api", &for_billing(&alice)).await.unwrap();
    let for_bob = tokens.get_token("api", &for_billing(&bob)).await.unwrap();
    assert!(!for_alice.same_token(&for_bob));
    assert_eq!(
        server
            .verify_access_token(for_alice.access_token().secret())
            .unwrap()["sub"],
        "frontend"
    );
    assert_eq!(
        server
            .verify_access_token(for_bob.access_token().secret())
            .unwrap()["sub"],
        "batch"
    );
    // And each is cached: no more exchanges.
    let again = tokens.get_token("api", &for_billing(&alice)).await.unwrap();
    assert!(again.same_token(&for_alice));
    assert_eq!(server.token_requests(EXCHANGE), 2);
}

#[tokio::test(start_paused = true)]
async fn dl_03_an_exchanged_token_never_outlives_its_subject() {
    let server = exchange_server().await;
    server.set_expires_in(Some(120));
    let subject_token = subject(&server, "frontend", "frontend-secret").await;
    server.set_expires_in(Some(3600));
    let tokens = in_process(&server)
        .lifetime_policy(no_refresh_ahead())
        .build()
        .unwrap();

    let token = tokens
        .get_token("api", &for_billing(&subject_token))
        .await
        .unwrap();
    let subject_exp = TokenExchange::access_token(&subject_token)
        .subject_expiry()
        .unwrap();
    assert!(
        token.expires_at() <= subject_exp,
        "{:?} > {subject_exp:?}",
        token.expires_at()
    );
    // The server's own answer would have lived an hour.
    let claims = server
        .verify_access_token(token.access_token().secret())
        .unwrap();
    assert!(claims["exp"].as_u64().unwrap() * 1000 > subject_exp.as_millis() + 3_000_000);

    // Until the subject expires, the cached token is served.
    tokio::time::advance(Duration::from_secs(60)).await;
    let cached = tokens
        .get_token("api", &for_billing(&subject_token))
        .await
        .unwrap();
    assert!(cached.same_token(&token));
    // Then never: the subject cannot be exchanged any more, and nothing is sent.
    tokio::time::advance(Duration::from_secs(61)).await;
    let error = tokens
        .get_token("api", &for_billing(&subject_token))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::SubjectToken(_)), "{error:?}");
    assert_eq!(server.token_requests(EXCHANGE), 1);

    // An opaque subject needs its expiry from the caller.
    let error = tokens
        .get_token(
            "api",
            &TokenRequestParams::new().exchange(TokenExchange::access_token("opaque")),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, Error::SubjectToken(_)), "{error:?}");
    assert_eq!(server.token_requests(EXCHANGE), 1);
}

#[tokio::test]
async fn dl_04_ten_thousand_callers_one_exchange() {
    let server = exchange_server().await;
    let subject_token = Arc::new(subject(&server, "frontend", "frontend-secret").await);
    let tokens = exchanging(&server);
    let mut callers = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        let (tokens, subject_token) = (tokens.clone(), subject_token.clone());
        callers.push(tokio::spawn(async move {
            tokens
                .get_token("api", &for_billing(&subject_token))
                .await
                .map(|t| t.access_token().secret().to_owned())
        }));
    }
    let mut issued = std::collections::HashSet::new();
    for caller in callers {
        issued.insert(caller.await.unwrap().unwrap());
    }
    assert_eq!(issued.len(), 1, "every caller got the one exchanged token");
    assert_eq!(server.token_requests(EXCHANGE), 1);
}

/// An exchange by a client with private_key_jwt and DPoP: a fresh assertion, a proof, and a
/// DPoP-bound exchanged token (the key thumbprint in the cache key), presented with a proof.
#[tokio::test]
async fn dl_01_exchange_with_private_key_jwt_and_dpop() {
    use tokenkeeper::dpop::{DpopAlgorithm, DpopKey};
    use tokenkeeper::PrivateKeyJwt;
    let signer = PrivateKeyJwt::new(DpopKey::generate(DpopAlgorithm::ES256).unwrap());
    let server = Arc::new(
        TestServer::builder()
            .client(TestClient::new(CLIENT_ID, "unused").private_key_jwt(signer.public_jwk()))
            .client(TestClient::new("frontend", "frontend-secret"))
            .start()
            .await,
    );
    let subject_token = subject(&server, "frontend", "frontend-secret").await;
    let key = Arc::new(DpopKey::generate(DpopAlgorithm::ES256).unwrap());
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::new(server.token_endpoint(), CLIENT_ID, "")
                .private_key_jwt(Arc::new(signer))
                .dpop(key.clone()),
        )
        .transport(server.transport())
        .build()
        .unwrap();
    let params = for_billing(&subject_token);
    assert!(tokens
        .cache_key("api", &params)
        .unwrap()
        .as_str()
        .contains(key.thumbprint()));
    let token = tokens.get_token("api", &params).await.unwrap();
    assert!(token.is_dpop());
    let sent = server.recorded_requests().pop().unwrap();
    assert_eq!(sent.form_values("grant_type"), [EXCHANGE]);
    assert_eq!(
        sent.form_values("client_assertion_type"),
        ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"]
    );
    assert!(sent.headers.contains_key("dpop"));
    let claims = server
        .verify_access_token(token.access_token().secret())
        .unwrap();
    assert_eq!(claims["sub"], "frontend");
    assert_eq!(claims["cnf"]["jkt"], key.thumbprint());

    // Presented with a proof by the middleware, like any DPoP-bound token.
    let api = server.start_api().await;
    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(tokens.middleware_with("api", params).unwrap())
        .build();
    let response = http.get(api.url("/items")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.token_requests(EXCHANGE), 1);
}

/// A workload identity token as the platform writes it: signed by the issuer the server
/// trusts (the test server itself), for the token endpoint.
fn workload_token(server: &TestServer, sub: &str) -> String {
    let now = tokenkeeper::Timestamp::system_now().as_millis() / 1000;
    let mut claims = serde_json::Map::new();
    claims.insert("iss".into(), server.issuer().into());
    claims.insert("sub".into(), sub.into());
    claims.insert("aud".into(), server.token_endpoint().into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + 600).into());
    server.sign_jwt(&claims, Some("JWT"))
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// DL-06: the JWT bearer grant with an assertion from a file, re-read when the platform
/// rotates it; and with an assertion signed here.
#[tokio::test]
async fn dl_06_jwt_bearer_grant_with_a_file_assertion_reread_on_change() {
    use tokenkeeper::FileAssertion;
    let server = exchange_server().await;
    let dir = std::env::temp_dir().join(format!("tk-dl06-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("token");
    std::fs::write(
        &path,
        format!(
            "{}\n",
            workload_token(&server, "system:serviceaccount:shop:orders")
        ),
    )
    .unwrap();
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            config(&server).jwt_bearer_grant(Arc::new(FileAssertion::new(&path))),
        )
        .transport(server.transport())
        .build()
        .unwrap();
    let token = tokens
        .get_token("api", &TokenRequestParams::default())
        .await
        .unwrap();
    let sent = server.recorded_requests().pop().unwrap();
    assert_eq!(sent.form_values("grant_type"), [JWT_BEARER]);
    assert_eq!(sent.form_values("assertion").len(), 1);
    assert_eq!(
        server
            .verify_access_token(token.access_token().secret())
            .unwrap()["sub"],
        "system:serviceaccount:shop:orders"
    );

    // The platform rotates the file (a new token, another length): the next request reads it.
    let rotated = workload_token(&server, "system:serviceaccount:shop:orders-v2");
    std::fs::write(&path, &rotated).unwrap();
    let renewed = tokens
        .get_token("api", &TokenRequestParams::default().force_renewal(true))
        .await
        .unwrap();
    assert_eq!(
        server
            .recorded_requests()
            .pop()
            .unwrap()
            .form_values("assertion"),
        [rotated.as_str()]
    );
    assert_eq!(
        server
            .verify_access_token(renewed.access_token().secret())
            .unwrap()["sub"],
        "system:serviceaccount:shop:orders-v2"
    );
    assert_eq!(server.token_requests(JWT_BEARER), 2);

    // A file that is gone, empty, or holds two tokens: a typed error naming the file, and the
    // cached token is not lost.
    for content in [None, Some(""), Some("a b")] {
        match content {
            None => std::fs::remove_file(&path).unwrap(),
            Some(content) => std::fs::write(&path, content).unwrap(),
        }
        let error = tokens
            .get_token("api", &TokenRequestParams::default().force_renewal(true))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::Config(e) if e.to_string().contains("assertion_file")),
            "{error:?}"
        );
        assert!(!error.to_string().contains(&rotated));
    }
    let kept = tokens
        .get_token("api", &TokenRequestParams::default())
        .await
        .unwrap();
    assert!(kept.same_token(&renewed));
    let _ = std::fs::remove_dir_all(&dir);

    // An assertion signed here (iss = sub = the client, aud = the token endpoint): the server
    // checks it against the client's registered key.
    use tokenkeeper::dpop::{DpopAlgorithm, DpopKey};
    let signer = Arc::new(tokenkeeper::PrivateKeyJwt::new(
        DpopKey::generate(DpopAlgorithm::ES256).unwrap(),
    ));
    let server = TestServer::builder()
        .client(TestClient::new(CLIENT_ID, "").private_key_jwt(signer.public_jwk()))
        .start()
        .await;
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::new(server.token_endpoint(), CLIENT_ID, "")
                .private_key_jwt(signer.clone()) // the client authenticates with the same key
                .jwt_bearer_grant(signer),
        )
        .transport(server.transport())
        .build()
        .unwrap();
    let token = tokens
        .get_token("api", &TokenRequestParams::default())
        .await
        .unwrap();
    assert_eq!(
        server
            .verify_access_token(token.access_token().secret())
            .unwrap()["sub"],
        CLIENT_ID
    );
    assert_eq!(server.token_requests(JWT_BEARER), 1);
}
