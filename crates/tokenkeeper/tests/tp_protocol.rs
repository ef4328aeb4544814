//! Token endpoint protocol (TP-01 … TP-09).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use tokenkeeper::{
    AuthMethod, ClientConfig, ClientCredentialsTokenManager, Error, HttpOptions, LifetimePolicy,
    Resource, TokenRequestParams, TransportErrorKind,
};
use tokenkeeper_testing::{ClientAuthMethod, Fault, TestClient, TestServer, Times};

#[tokio::test]
async fn tp_01_client_secret_basic_is_form_urlencoded_and_secret_not_in_body() {
    let id = "svc client:1";
    let secret = "p@ss:w/rd+ é";
    let server = TestServer::builder()
        .client(TestClient::new(id, secret).auth_method(ClientAuthMethod::Basic))
        .start()
        .await;
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::new(server.token_endpoint(), id, secret)
                .scope("b.read a.write")
                .resource("https://api.example.com/orders")
                .extra("tenant", "acme"),
        )
        .build()
        .unwrap();
    tokens.get_token("api", &default_params()).await.unwrap();
    let request = server.last_token_request().unwrap();
    let header = request
        .headers
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(header.strip_prefix("Basic ").unwrap())
        .unwrap();
    assert_eq!(
        String::from_utf8(decoded).unwrap(),
        "svc+client%3A1:p%40ss%3Aw%2Frd%2B+%C3%A9"
    );
    assert_eq!(request.form_value("grant_type"), Some("client_credentials"));
    assert_eq!(request.form_value("scope"), Some("a.write b.read"));
    assert_eq!(
        request.form_values("resource"),
        vec!["https://api.example.com/orders"]
    );
    assert_eq!(request.form_value("tenant"), Some("acme"));
    assert_eq!(request.form_value("client_secret"), None);
    assert_eq!(request.form_value("client_id"), None);
    assert_eq!(
        request.headers.get("content-type").unwrap(),
        "application/x-www-form-urlencoded"
    );
}

#[tokio::test]
async fn tp_02_client_secret_post_puts_credentials_in_body_only() {
    let server = TestServer::builder()
        .client(TestClient::new(CLIENT_ID, SECRET).auth_method(ClientAuthMethod::Post))
        .start()
        .await;
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            config(&server).auth_method(AuthMethod::ClientSecretPost),
        )
        .build()
        .unwrap();
    tokens.get_token("api", &default_params()).await.unwrap();
    let request = server.last_token_request().unwrap();
    assert!(request.headers.get("authorization").is_none());
    assert_eq!(request.form_value("client_id"), Some(CLIENT_ID));
    assert_eq!(request.form_value("client_secret"), Some(SECRET));
    assert_eq!(request.form_value("grant_type"), Some("client_credentials"));

    // The server refuses basic for this client: a mismatch is a typed invalid_client error.
    let basic = ClientCredentialsTokenManager::builder()
        .client("api", config(&server))
        .build()
        .unwrap();
    let err = basic.get_token("api", &default_params()).await.unwrap_err();
    assert_eq!(err.oauth_error(), Some("invalid_client"));
    assert_eq!(err.status(), Some(401));
}

#[tokio::test(start_paused = true)]
async fn tp_04_expiry_from_expires_in_or_default_lifetime() {
    let server = server().await;
    server.set_expires_in(Some(600));
    let policy = LifetimePolicy {
        skew: Duration::from_secs(30),
        default_lifetime: Duration::from_secs(400),
        refresh_ahead: 0.0,
    };
    let tokens = in_process(&server).lifetime_policy(policy).build().unwrap();
    let token = tokens.get_token("api", &default_params()).await.unwrap();
    assert_eq!(
        token
            .expires_at()
            .saturating_duration_since(token.issued_at()),
        Duration::from_secs(570)
    );

    for absent in [None, Some(0)] {
        server.set_expires_in(absent);
        let token = tokens
            .get_token("api", &TokenRequestParams::new().force_renewal(true))
            .await
            .unwrap();
        assert_eq!(
            token
                .expires_at()
                .saturating_duration_since(token.issued_at()),
            Duration::from_secs(370),
            "absent or zero expires_in uses the default lifetime minus skew"
        );
    }
}

#[tokio::test]
async fn tp_05_error_responses_are_parsed_and_html_is_typed() {
    let server = server().await;
    let tokens = networked(&server);
    server.inject_fault(
        Fault::OAuthError {
            status: 400,
            error: "invalid_scope".into(),
            description: Some("scope not allowed".into()),
        },
        Times::Next(1),
    );
    match tokens.get_token("api", &default_params()).await {
        Err(Error::OAuth(e)) => {
            assert_eq!(e.status, 400);
            assert_eq!(e.error, "invalid_scope");
            assert_eq!(e.description.as_deref(), Some("scope not allowed"));
        }
        other => panic!("expected an OAuth error, got {other:?}"),
    }

    let server = server_with_fault(Fault::HtmlBody { status: 502 }).await;
    match networked(&server).get_token("api", &default_params()).await {
        Err(Error::InvalidResponse(e)) => {
            assert_eq!(e.status, Some(502));
            assert!(e.reason.contains("text/html"), "{}", e.reason);
        }
        other => panic!("expected an invalid-response error, got {other:?}"),
    }
}

async fn server_with_fault(fault: Fault) -> Arc<TestServer> {
    let server = server().await;
    server.inject_fault(fault, Times::Always);
    server
}

#[tokio::test]
async fn tp_06_oversized_malformed_and_broken_bodies_are_typed_errors() {
    // Over the network, through the default reqwest transport with its bounded read.
    let server = server_with_fault(Fault::OversizedBody {
        bytes: 2 * 1024 * 1024,
    })
    .await;
    let err = networked(&server)
        .get_token("api", &default_params())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Transport(e) if e.kind == TransportErrorKind::BodyTooLarge),
        "{err:?}"
    );

    let server = server_with_fault(Fault::MalformedJson).await;
    let err = networked(&server)
        .get_token("api", &default_params())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidResponse(e) if e.status == Some(200)),
        "{err:?}"
    );

    let server = server_with_fault(Fault::CloseConnection).await;
    let err = networked(&server)
        .get_token("api", &default_params())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Transport(e) if e.kind == TransportErrorKind::Connection),
        "{err:?}"
    );

    // A server that answers too slowly: the whole-request timeout applies.
    let server = server_with_fault(Fault::Latency(Duration::from_secs(30))).await;
    let tokens = ClientCredentialsTokenManager::builder()
        .client("api", config(&server))
        .http_options(HttpOptions {
            request_timeout: Duration::from_millis(300),
            ..HttpOptions::default()
        })
        .build()
        .unwrap();
    let err = tokens
        .get_token("api", &default_params())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Transport(e) if e.kind == TransportErrorKind::Timeout),
        "{err:?}"
    );

    // Nothing listening: a connect error.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::new(format!("http://{closed}/token"), CLIENT_ID, SECRET),
        )
        .build()
        .unwrap();
    let err = tokens
        .get_token("api", &default_params())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Transport(e) if e.kind == TransportErrorKind::Connect),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn tp_06_in_process_transport_bounds_bodies_and_times_out() {
    let server = server_with_fault(Fault::OversizedBody { bytes: 1024 * 1024 }).await;
    let err = in_process(&server)
        .build()
        .unwrap()
        .get_token("api", &default_params())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Transport(e) if e.kind == TransportErrorKind::BodyTooLarge),
        "{err:?}"
    );

    let server = server_with_fault(Fault::Latency(Duration::from_secs(3600))).await;
    let err = in_process(&server)
        .build()
        .unwrap()
        .get_token("api", &default_params())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Transport(e) if e.kind == TransportErrorKind::Timeout),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn tp_07_discovery_checks_issuer_and_caches_metadata() {
    let server = server().await;
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::from_issuer(server.issuer(), CLIENT_ID, SECRET),
        )
        .transport(server.transport())
        .discovery_lifetime(Duration::from_secs(600))
        .lifetime_policy(no_refresh_ahead())
        .build()
        .unwrap();
    tokens.get_token("api", &default_params()).await.unwrap();
    let force = TokenRequestParams::new().force_renewal(true);
    tokens.get_token("api", &force).await.unwrap();
    assert_eq!(server.discovery_requests(), 1, "metadata is cached");
    assert_eq!(server.token_requests("client_credentials"), 2);

    tokio::time::advance(Duration::from_secs(601)).await;
    tokens.get_token("api", &force).await.unwrap();
    assert_eq!(
        server.discovery_requests(),
        2,
        "metadata is refreshed after its lifetime"
    );

    // RFC 8414: without an OpenID Connect document, the authorization-server one is used.
    let plain = common::server().await;
    plain.set_oidc_discovery(false);
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::from_issuer(plain.issuer(), CLIENT_ID, SECRET),
        )
        .transport(plain.transport())
        .build()
        .unwrap();
    tokens.get_token("api", &default_params()).await.unwrap();
    assert_eq!(
        plain.discovery_requests(),
        2,
        "OIDC path (404), then RFC 8414 path"
    );

    // A document naming another issuer is refused.
    let other = common::server().await;
    other.set_advertised_issuer(Some("http://127.0.0.1:1"));
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::from_issuer(other.issuer(), CLIENT_ID, SECRET),
        )
        .transport(other.transport())
        .build()
        .unwrap();
    let err = tokens
        .get_token("api", &default_params())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Discovery { reason, .. } if reason.contains("not the configured issuer")),
        "{err:?}"
    );
    assert_eq!(other.total_token_requests(), 0);
}

#[test]
fn tp_07_well_known_urls_for_issuers_with_a_path() {
    let transport =
        std::sync::Arc::new(tokenkeeper::ReqwestTransport::new(&HttpOptions::default()).unwrap());
    let discovery = tokenkeeper::Discovery::new(
        "https://idp.example.com/tenant-a",
        transport,
        std::sync::Arc::new(tokenkeeper::TokioClock::new()),
    )
    .unwrap();
    let urls: Vec<String> = discovery
        .well_known_urls()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        urls,
        vec![
            "https://idp.example.com/tenant-a/.well-known/openid-configuration",
            "https://idp.example.com/.well-known/oauth-authorization-server/tenant-a",
        ]
    );
}

#[tokio::test]
async fn tp_09_configuration_errors_fail_at_build_naming_the_field() {
    let field_of = |result: Result<ClientCredentialsTokenManager, Error>| match result {
        Err(Error::Config(e)) => (e.field, e.client.clone(), e.to_string()),
        other => panic!("expected a configuration error, got {other:?}"),
    };
    let build = |config: ClientConfig| {
        ClientCredentialsTokenManager::builder()
            .client("orders", config)
            .build()
    };
    let (field, client, message) = field_of(build(ClientConfig::new("https://idp/token", "", "s")));
    assert_eq!((field, client.as_deref()), ("client_id", Some("orders")));
    assert!(
        message.contains("client_id") && message.contains("orders"),
        "{message}"
    );
    assert_eq!(
        field_of(build(ClientConfig::new("", "id", "s"))).0,
        "token_endpoint"
    );
    assert_eq!(
        field_of(build(ClientConfig::new("not a url", "id", "s"))).0,
        "token_endpoint"
    );
    assert_eq!(
        field_of(build(ClientConfig::new("ftp://idp/token", "id", "s"))).0,
        "token_endpoint"
    );
    assert_eq!(
        field_of(build(ClientConfig::from_issuer("::", "id", "s"))).0,
        "issuer"
    );
    assert_eq!(
        field_of(build(ClientConfig::new("https://idp/token", "id", ""))).0,
        "client_secret"
    );
    assert_eq!(
        field_of(build(
            ClientConfig::new("https://idp/token", "id", "s").scope("bad\"scope")
        ))
        .0,
        "scope"
    );
    assert_eq!(
        field_of(build(
            ClientConfig::new("https://idp/token", "id", "s").resource("relative/path")
        ))
        .0,
        "resource"
    );
    assert_eq!(
        field_of(build(
            ClientConfig::new("https://idp/token", "id", "s").extra("scope", "x")
        ))
        .0,
        "extra"
    );
    assert_eq!(
        field_of(build(
            ClientConfig::new("https://idp/token", "id", "s")
                .extra("a", "1")
                .extra("a", "2")
        ))
        .0,
        "extra"
    );
    assert_eq!(
        field_of(ClientCredentialsTokenManager::builder().build()).0,
        "clients"
    );
    assert_eq!(
        field_of(
            ClientCredentialsTokenManager::builder()
                .client("a", ClientConfig::new("https://idp/token", "id", "s"))
                .client("a", ClientConfig::new("https://idp/token", "id", "s"))
                .build()
        )
        .0,
        "name"
    );
    assert_eq!(
        field_of(
            ClientCredentialsTokenManager::builder()
                .client("a", ClientConfig::new("https://idp/token", "id", "s"))
                .lifetime_policy(LifetimePolicy {
                    refresh_ahead: 1.5,
                    ..LifetimePolicy::default()
                })
                .build()
        )
        .0,
        "refresh_ahead"
    );

    // An unknown client name fails when the integration is wired, not on first request.
    let tokens = build(ClientConfig::new("https://idp/token", "id", "s")).unwrap();
    assert!(matches!(tokens.middleware("nope"), Err(Error::UnknownClient(n)) if n == "nope"));
    assert!(matches!(tokens.layer("nope"), Err(Error::UnknownClient(_))));
    assert!(matches!(
        tokens.get_token("nope", &default_params()).await,
        Err(Error::UnknownClient(_))
    ));
    // A per-request parameter that is not allowed is a configuration error too.
    let bad = TokenRequestParams::new().extra("grant_type", "password");
    assert!(
        matches!(tokens.get_token("orders", &bad).await, Err(Error::Config(e)) if e.field == "extra")
    );
    let _ = Resource::parse("https://ok").unwrap();
}
