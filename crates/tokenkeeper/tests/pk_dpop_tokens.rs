//! DPoP for client-credentials tokens, end to end against the test server (which validates
//! every proof) and its protected test API: PK-02, PK-03, PK-04, PK-05, PK-09, PK-10, PK-12.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use tokenkeeper::dpop::{DpopAlgorithm, DpopKey};
use tokenkeeper::{
    ClientConfig, ClientCredentialsTokenManager, Error, PrivateKeyJwt, TokenRequestParams,
};
use tokenkeeper_testing::{Fault, TestClient, TestServer, Times};

const CC: &str = "client_credentials";

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn key(alg: DpopAlgorithm) -> Arc<DpopKey> {
    Arc::new(DpopKey::generate(alg).unwrap())
}

async fn server() -> TestServer {
    TestServer::builder()
        .client(TestClient::new("worker", "secret"))
        .start()
        .await
}

fn manager(server: &TestServer, key: &Arc<DpopKey>) -> ClientCredentialsTokenManager {
    ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::new(server.token_endpoint(), "worker", "secret").dpop(key.clone()),
        )
        .build()
        .unwrap()
}

fn http(tokens: &ClientCredentialsTokenManager) -> reqwest_middleware::ClientWithMiddleware {
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(tokens.middleware("api").unwrap())
        .build()
}

async fn call(http: &reqwest_middleware::ClientWithMiddleware, url: &str) -> (u16, Value) {
    let response = http.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn dpop_headers(server: &TestServer) -> (String, String) {
    let request = server.last_token_request().unwrap();
    let proof = request.headers["dpop"].to_str().unwrap().to_owned();
    let assertion = request
        .form_value("client_assertion")
        .unwrap_or("")
        .to_owned();
    (proof, assertion)
}

/// PK-05: a DPoP-bound token is sent with the `DPoP` scheme and a proof, by the middleware and
/// the tower layer; its `cnf.jkt` is our thumbprint for every algorithm; the thumbprint is part
/// of the cache key.
#[tokio::test]
async fn pk_05_dpop_bound_tokens_go_with_the_dpop_scheme_and_cnf_jkt_is_our_thumbprint() {
    let server = server().await;
    let api = server.start_api().await;
    for alg in [
        DpopAlgorithm::ES256,
        DpopAlgorithm::ES384,
        DpopAlgorithm::EdDSA,
        DpopAlgorithm::PS256,
        DpopAlgorithm::RS256,
    ] {
        let key = key(alg);
        let tokens = manager(&server, &key);
        let token = tokens
            .get_token("api", &TokenRequestParams::default())
            .await
            .unwrap();
        assert!(token.is_dpop(), "{alg:?}");
        assert_eq!(
            token.authorization_header().to_str().unwrap(),
            format!("DPoP {}", token.access_token().secret())
        );
        assert_eq!(
            claims(token.access_token().secret())["cnf"]["jkt"],
            key.thumbprint(),
            "{alg:?}"
        );
        let (proof, _) = dpop_headers(&server);
        assert_eq!(claims(&proof)["htu"], server.token_endpoint());
        assert!(
            tokens
                .cache_key("api", &TokenRequestParams::default())
                .unwrap()
                .as_str()
                .contains(key.thumbprint()),
            "the thumbprint is in the cache key"
        );

        let (status, body) = call(&http(&tokens), &api.url("/orders?page=2")).await;
        assert_eq!(status, 200, "{alg:?}: {body}");
        assert_eq!(body["scheme"], "DPoP");

        // The tower layer.
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<bytes::Bytes>>();
        let mut service = tower::ServiceBuilder::new()
            .layer(tokens.layer("api").unwrap())
            .service(client);
        let request = http::Request::post(api.url("/tower"))
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
            .unwrap();
        let response = tower::ServiceExt::oneshot(&mut service, request)
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{alg:?}");
    }
    assert_eq!(api.unauthorized(), 0);
    assert_eq!(server.token_requests(CC), 5, "one token per key");

    // Two keys, two cache entries: a token bound to one key is never used with the other.
    let (a, b) = (key(DpopAlgorithm::ES256), key(DpopAlgorithm::ES256));
    let shared = ClientCredentialsTokenManager::builder()
        .client(
            "a",
            ClientConfig::new(server.token_endpoint(), "worker", "secret").dpop(a.clone()),
        )
        .client(
            "b",
            ClientConfig::new(server.token_endpoint(), "worker", "secret").dpop(b.clone()),
        )
        .build()
        .unwrap();
    let params = TokenRequestParams::default();
    let ta = shared.get_token("a", &params).await.unwrap();
    let tb = shared.get_token("b", &params).await.unwrap();
    assert_eq!(
        claims(ta.access_token().secret())["cnf"]["jkt"],
        a.thumbprint()
    );
    assert_eq!(
        claims(tb.access_token().secret())["cnf"]["jkt"],
        b.thumbprint()
    );
}

/// PK-02: `400 use_dpop_nonce` at the token endpoint → exactly one retry, with the nonce, a
/// fresh proof and a fresh client assertion (the server refuses a reused assertion `jti`).
#[tokio::test]
async fn pk_02_token_endpoint_nonce_retry_with_fresh_proof_and_fresh_assertion() {
    let signer = PrivateKeyJwt::new(DpopKey::generate(DpopAlgorithm::ES256).unwrap());
    let server = TestServer::builder()
        .client(TestClient::new("worker", "unused").private_key_jwt(signer.public_jwk()))
        .start()
        .await;
    server.set_dpop_nonce_required(true);
    let key = key(DpopAlgorithm::ES256);
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::new(server.token_endpoint(), "worker", "")
                .private_key_jwt(Arc::new(signer))
                .dpop(key.clone()),
        )
        .build()
        .unwrap();
    let token = tokens
        .get_token("api", &TokenRequestParams::default())
        .await
        .unwrap();
    assert!(token.is_dpop());
    assert_eq!(server.token_requests(CC), 2, "refused once, retried once");
    assert_eq!(server.dpop_proofs_refused(), 1);
    assert_eq!(server.dpop_proofs_accepted(), 1);
    let requests = server.recorded_requests();
    let (first, second) = (&requests[requests.len() - 2], &requests[requests.len() - 1]);
    let proof =
        |r: &tokenkeeper_testing::RecordedRequest| claims(r.headers["dpop"].to_str().unwrap());
    assert!(proof(first).get("nonce").is_none());
    assert!(proof(second)["nonce"].is_string());
    assert_ne!(proof(first)["jti"], proof(second)["jti"], "a fresh proof");
    assert_ne!(
        claims(first.form_value("client_assertion").unwrap())["jti"],
        claims(second.form_value("client_assertion").unwrap())["jti"],
        "a fresh assertion"
    );

    // `invalid_dpop_proof` with a new nonce is retried the same way.
    server.inject_fault(Fault::oauth(400, "invalid_dpop_proof"), Times::Next(1));
    server.rotate_dpop_nonce();
    let renewed = tokens
        .get_token("api", &TokenRequestParams::default().force_renewal(true))
        .await
        .unwrap();
    assert!(renewed.is_dpop());
    assert_eq!(server.token_requests(CC), 4);

    // The same nonce again: no retry (PK-10).
    server.inject_fault(Fault::oauth(400, "use_dpop_nonce"), Times::Always);
    let refused = tokens
        .get_token("api", &TokenRequestParams::default().force_renewal(true))
        .await
        .unwrap_err();
    assert_eq!(refused.oauth_error(), Some("use_dpop_nonce"));
    assert_eq!(
        server.token_requests(CC),
        5,
        "no retry with an unchanged nonce"
    );
}

/// UX-10: a token endpoint that keeps answering `use_dpop_nonce` — even to the retry with the
/// nonce it gave — is a typed error naming the endpoint, not a generic OAuth error.
#[tokio::test]
async fn ux_10_a_token_endpoint_stuck_on_use_dpop_nonce_is_a_typed_error() {
    let server = server().await;
    let tokens = manager(&server, &key(DpopAlgorithm::ES256));
    // Every answer asks for a nonce, each time a new one: one retry, then the typed error.
    server.set_dpop_nonce_required(true);
    server.inject_fault(Fault::oauth(400, "use_dpop_nonce"), Times::Always);
    let before = server.token_requests(CC);
    let error = tokens
        .get_token("api", &TokenRequestParams::default())
        .await
        .unwrap_err();
    match &error {
        tokenkeeper::Error::DpopNonce { endpoint, .. } => {
            assert_eq!(endpoint, &server.token_endpoint());
        }
        other => panic!("{other:?}"),
    }
    assert!(error.to_string().contains("use_dpop_nonce"), "{error}");
    assert!(server.token_requests(CC) - before <= 2, "one retry at most");
}

/// PK-04: the token endpoint's nonce is kept from every response and used on the next proof.
#[tokio::test]
async fn pk_04_nonces_are_kept_and_used_on_the_next_proof() {
    let server = server().await;
    server.set_dpop_nonce_required(true);
    let tokens = manager(&server, &key(DpopAlgorithm::EdDSA));
    let renew = TokenRequestParams::default().force_renewal(true);
    tokens.get_token("api", &renew).await.unwrap();
    assert_eq!(server.token_requests(CC), 2);
    for n in 0..3 {
        tokens.get_token("api", &renew).await.unwrap();
        assert_eq!(server.token_requests(CC), 3 + n, "no extra round trip");
    }
    let nonce = server.rotate_dpop_nonce();
    tokens.get_token("api", &renew).await.unwrap();
    assert_eq!(
        server.token_requests(CC),
        7,
        "a rotated nonce costs one retry"
    );
    let (proof, _) = dpop_headers(&server);
    assert_eq!(claims(&proof)["nonce"], nonce);
}

/// PK-03, PK-09: an API's `401 use_dpop_nonce` → one retry with the same token and a new proof
/// carrying the nonce; nonces are kept per origin (a new path costs nothing; another origin has
/// its own), from every response including the retry's.
#[tokio::test]
async fn pk_03_pk_09_api_nonce_retry_and_per_origin_nonces() {
    let server = server().await;
    let (orders, billing) = (server.start_api().await, server.start_api().await);
    orders.set_nonce_required(true);
    billing.set_nonce_required(true);
    let tokens = manager(&server, &key(DpopAlgorithm::ES256));
    let http = http(&tokens);

    let (status, _) = call(&http, &orders.url("/a")).await;
    assert_eq!(status, 200);
    assert_eq!(
        (orders.requests(), orders.unauthorized()),
        (2, 1),
        "one retry"
    );
    assert_eq!(server.token_requests(CC), 1, "the same token");
    assert_eq!(orders.proofs_accepted(), 1);

    for (i, path) in ["/b", "/c/d?x=1", "/e"].iter().enumerate() {
        assert_eq!(call(&http, &orders.url(path)).await.0, 200);
        assert_eq!(orders.requests(), 3 + i as u64, "a new path, no round trip");
    }
    // Another origin has its own nonce.
    assert_eq!(call(&http, &billing.url("/a")).await.0, 200);
    assert_eq!(billing.requests(), 2);
    assert_eq!(call(&http, &orders.url("/f")).await.0, 200);
    assert_eq!(
        orders.unauthorized(),
        1,
        "billing's nonce did not replace orders'"
    );

    // A nonce that changes with every response: kept from every response, the retry's too.
    orders.set_nonce_rolling(true);
    orders.rotate_nonce();
    assert_eq!(call(&http, &orders.url("/g")).await.0, 200);
    let before = (orders.requests(), orders.unauthorized());
    for path in ["/h", "/i", "/j"] {
        assert_eq!(call(&http, &orders.url(path)).await.0, 200);
    }
    assert_eq!(orders.requests(), before.0 + 3);
    assert_eq!(
        orders.unauthorized(),
        before.1,
        "every response's nonce was used"
    );
    assert_eq!(server.token_requests(CC), 1);
}

/// PK-10: the API nonce retry happens once, only when the nonce changed, and never for a body
/// that cannot be replayed.
#[tokio::test]
async fn pk_10_nonce_retries_once_only_for_a_new_nonce_and_a_replayable_body() {
    let server = server().await;
    let api = server.start_api().await;
    api.set_nonce_required(true);
    let tokens = manager(&server, &key(DpopAlgorithm::ES256));
    let http = http(&tokens);
    assert_eq!(call(&http, &api.url("/warm")).await.0, 200);
    let base = api.requests();

    // The API insists, with the nonce we already sent: no retry.
    api.demand_nonce_next(1);
    assert_eq!(call(&http, &api.url("/same")).await.0, 401);
    assert_eq!(api.requests(), base + 1);

    // A new nonce each time, refused each time: exactly one retry.
    api.set_nonce_rolling(true);
    api.demand_nonce_next(5);
    assert_eq!(call(&http, &api.url("/twice")).await.0, 401);
    assert_eq!(api.requests(), base + 3);
    api.demand_nonce_next(0);

    // A body that cannot be replayed: no retry, but the nonce is kept for the next request.
    api.rotate_nonce();
    let stream =
        futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"x"))]);
    let response = http
        .post(api.url("/stream"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(api.requests(), base + 4);
    assert_eq!(call(&http, &api.url("/after")).await.0, 200);
    assert_eq!(
        api.requests(),
        base + 5,
        "the nonce of the refused request was kept"
    );
    assert_eq!(
        server.token_requests(CC),
        1,
        "a nonce challenge never renews the token"
    );
}

/// PK-12 (the error half; the warning and the metric are in `metrics_counters.rs`): a server
/// that answers a DPoP request with a Bearer token.
#[tokio::test]
async fn pk_12_a_bearer_token_for_a_dpop_request_is_sent_as_bearer_or_refused() {
    let server = server().await;
    server.set_dpop_ignored(true);
    let api = server.start_api().await;
    let key = key(DpopAlgorithm::ES256);

    let lenient = manager(&server, &key);
    let token = lenient
        .get_token("api", &TokenRequestParams::default())
        .await
        .unwrap();
    assert!(!token.is_dpop());
    let (status, body) = call(&http(&lenient), &api.url("/x")).await;
    assert_eq!((status, body["scheme"].as_str()), (200, Some("Bearer")));

    let strict = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::new(server.token_endpoint(), "worker", "secret")
                .dpop(key.clone())
                .require_dpop(true),
        )
        .build()
        .unwrap();
    let error = strict
        .get_token("api", &TokenRequestParams::default())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::DpopRequired { .. }), "{error:?}");
    let failure = http(&strict).get(api.url("/x")).send().await.unwrap_err();
    assert!(matches!(
        Error::from_middleware(&failure),
        Some(Error::DpopRequired { .. })
    ));
    assert_eq!(api.requests(), 1, "nothing sent without a bound token");

    let config = ClientConfig::new(server.token_endpoint(), "worker", "secret").require_dpop(true);
    let refused = ClientCredentialsTokenManager::builder()
        .client("api", config)
        .build()
        .unwrap_err();
    assert!(refused.to_string().contains("require_dpop"), "{refused}");
}
