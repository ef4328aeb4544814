//! DL-05: an axum API calls downstream APIs with, per origin, the exchanged token, the
//! forwarded token or its own client-credentials token — and refuses any other origin.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use tokenkeeper::delegation::Delegation;
use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager, Error, TokenRequestParams};
use tokenkeeper_axum::DelegatedClient;
use tokenkeeper_testing::{TestClient, TestServer};

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A downstream API that records the `Authorization` headers it receives.
async fn downstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new().fallback({
        let seen = seen.clone();
        move |headers: HeaderMap| async move {
            let auth = headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            seen.lock().unwrap().push(auth);
            "ok"
        }
    });
    (serve(app).await, seen)
}

#[derive(serde::Deserialize)]
struct Target {
    url: String,
}

/// The API under test: calls `url` through its delegated client.
async fn call(http: DelegatedClient, Query(target): Query<Target>) -> (StatusCode, String) {
    match http.get(&target.url).send().await {
        Ok(response) => (StatusCode::OK, response.status().to_string()),
        Err(error) => match Error::from_middleware(&error) {
            Some(Error::DestinationNotAllowed { .. }) => {
                (StatusCode::FORBIDDEN, "not allowed".into())
            }
            _ => (StatusCode::BAD_GATEWAY, "failed".into()),
        },
    }
}

#[tokio::test]
async fn dl_05_each_downstream_gets_the_token_it_is_configured_for() {
    let server = Arc::new(
        TestServer::builder()
            .client(TestClient::new("orders-api", "orders-secret"))
            .client(TestClient::new("frontend", "frontend-secret"))
            .start()
            .await,
    );
    // The caller's token: the front end's (`sub` = frontend).
    let front = ClientCredentialsTokenManager::builder()
        .client(
            "f",
            ClientConfig::new(server.token_endpoint(), "frontend", "frontend-secret"),
        )
        .build()
        .unwrap();
    let incoming = front
        .get_token("f", &TokenRequestParams::default())
        .await
        .unwrap()
        .access_token()
        .secret()
        .to_owned();

    let (billing, billing_seen) = downstream().await;
    let (audit, audit_seen) = downstream().await;
    let (catalog, catalog_seen) = downstream().await;
    let (elsewhere, elsewhere_seen) = downstream().await;
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "orders",
            ClientConfig::new(server.token_endpoint(), "orders-api", "orders-secret"),
        )
        .build()
        .unwrap();
    let delegation = Delegation::builder(tokens)
        .exchange(&billing, "orders", |e| e.audience("billing"))
        .forward(&audit)
        .own(&catalog, "orders")
        .build()
        .unwrap();
    let api = serve(
        Router::new()
            .route("/call", get(call))
            .with_state(delegation.clone()),
    )
    .await;

    let client = reqwest::Client::new();
    let call = |target: String| {
        let client = client.clone();
        let (api, incoming) = (api.clone(), incoming.clone());
        async move {
            let response = client
                .get(format!("{api}/call?url={target}/x"))
                .bearer_auth(&incoming)
                .send()
                .await
                .unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };
    for target in [&billing, &audit, &catalog] {
        assert_eq!(
            call(target.clone()).await,
            (StatusCode::OK, "200 OK".into())
        );
    }
    let token = |seen: &Arc<Mutex<Vec<String>>>| {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        seen[0].strip_prefix("Bearer ").unwrap().to_owned()
    };
    // Billing: an exchanged token — the caller's subject, for billing, not the incoming one.
    let exchanged = token(&billing_seen);
    assert_ne!(exchanged, incoming);
    let claims = server.verify_access_token(&exchanged).unwrap();
    assert_eq!(claims["sub"], "frontend");
    assert_eq!(claims["aud"], "billing");
    // Audit: the incoming token, forwarded.
    assert_eq!(token(&audit_seen), incoming);
    // Catalog: the service's own token.
    let own = server.verify_access_token(&token(&catalog_seen)).unwrap();
    assert_eq!(own["sub"], "orders-api");
    // Anywhere else: refused, nothing sent.
    assert_eq!(
        call(elsewhere.clone()).await,
        (StatusCode::FORBIDDEN, "not allowed".into())
    );
    assert!(elsewhere_seen.lock().unwrap().is_empty());

    // A second request with the same caller token: the exchanged token comes from the cache.
    assert_eq!(call(billing.clone()).await.0, StatusCode::OK);
    assert_eq!(
        billing_seen.lock().unwrap()[1],
        format!("Bearer {exchanged}")
    );
    assert_eq!(
        server.token_requests("urn:ietf:params:oauth:grant-type:token-exchange"),
        1
    );

    // Without a bearer token: 401, with the challenge.
    let response = client
        .get(format!("{api}/call?url={billing}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");

    // Routes are per origin: a path, a non-http scheme, or an origin named twice is refused.
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "orders",
            ClientConfig::new(server.token_endpoint(), "orders-api", "orders-secret"),
        )
        .build()
        .unwrap();
    for bad in [
        Delegation::builder(tokens.clone()).forward("https://a.example.com/path"),
        Delegation::builder(tokens.clone()).forward("ftp://a.example.com"),
        Delegation::builder(tokens.clone())
            .forward("https://a.example.com")
            .own("https://a.example.com:443", "orders"),
        Delegation::builder(tokens.clone()).own("https://a.example.com", "nobody"),
    ] {
        assert!(bad.build().is_err());
    }
}
