//! Machine-to-machine calls with a managed client-credentials token.
//!
//! Run: `cargo run -p tokenkeeper --example client_credentials`
//!
//! It starts the in-process test authorization server (swap in your own token endpoint or
//! issuer), registers a client, and calls an API through the reqwest middleware: the token is
//! fetched once and reused.
#![allow(clippy::print_stdout)]

use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager, TokenRequestParams};
use tokenkeeper_testing::{TestClient, TestServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let idp = TestServer::builder()
        .client(TestClient::new("worker", "worker-secret"))
        .start()
        .await;

    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "catalog",
            ClientConfig::from_issuer(idp.issuer(), "worker", "worker-secret")
                .scope("catalog.read"),
        )
        .build()?;

    // A tiny protected API that echoes the Authorization header it received.
    let api = axum::Router::new().route(
        "/items",
        axum::routing::get(|headers: axum::http::HeaderMap| async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("(none)")
                .chars()
                .take(20)
                .collect::<String>();
            format!("the API saw `{auth}…`")
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api_url = format!("http://{}/items", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, api).await });

    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(tokens.middleware("catalog")?)
        .build();
    for _ in 0..3 {
        let body = http.get(&api_url).send().await?.text().await?;
        println!("{body}");
    }
    let token = tokens
        .get_token("catalog", &TokenRequestParams::default())
        .await?;
    println!(
        "3 API calls, {} token request(s); the token is used until {:?} (it prints as {:?})",
        idp.token_requests("client_credentials"),
        token.expires_at(),
        token.access_token(),
    );
    Ok(())
}
