//! A tonic gRPC client calling a tonic gRPC server with managed tokens: the client's channel
//! goes through tokenkeeper's tower layer, which attaches a client-credentials token (cached,
//! refreshed ahead) to every call. The authorization server is the in-process test server.
//!
//! Run: `cargo run -p tokenkeeper --example grpc --features tonic`
#![allow(clippy::print_stdout)]

mod echo;

use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager};
use tokenkeeper_testing::{TestClient, TestServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let idp = TestServer::builder()
        .client(TestClient::new("grpc-client", "secret"))
        .start()
        .await;
    let service = echo::Echo::default();
    let url = echo::serve(service.clone()).await;

    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "echo",
            ClientConfig::new(idp.token_endpoint(), "grpc-client", "secret").scope("echo"),
        )
        .build()?;
    let channel = tonic::transport::Endpoint::from_shared(url.clone())?
        .connect()
        .await?;
    // The token layer on the channel: every call carries `authorization: Bearer …`.
    let client = tower::ServiceBuilder::new()
        .layer(tokens.layer("echo")?)
        .service(channel);

    for name in ["Ada", "Grace"] {
        let reply = echo::say(client.clone(), name).await?;
        println!("{url}{} → {reply:?}", echo::SAY);
    }
    if let Some(last) = service.seen.lock().ok().and_then(|s| s.last().cloned()) {
        let scheme = last
            .authorization
            .as_deref()
            .and_then(|a| a.split(' ').next());
        println!(
            "the server saw POST {} with scheme {scheme:?} (DPoP proof: {})",
            last.uri,
            last.dpop.is_some()
        );
    }
    println!(
        "calls: {}, token requests: {}",
        service.seen.lock().map(|s| s.len()).unwrap_or_default(),
        idp.token_requests("client_credentials")
    );
    Ok(())
}
