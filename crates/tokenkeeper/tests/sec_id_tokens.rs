//! ID tokens, keys and metadata (SEC-08, SEC-09, SEC-10).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokenkeeper::{
    ClientConfig, ClientCredentialsTokenManager, Clock, Discovery, Error, HttpOptions, HttpRequest,
    HttpResponse, HttpTransport, IdTokenValidator, ReqwestTransport, Timestamp, TokioClock,
    TransportError,
};
use tokenkeeper_testing::{TestClient, TestServer};

const REDIRECT: &str = "http://127.0.0.1:1/cb";

/// A clock the test moves by hand.
#[derive(Debug, Default)]
struct ManualClock {
    base: TokioClock,
    offset_ms: AtomicU64,
}

impl ManualClock {
    fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.base
            .now()
            .saturating_add(Duration::from_millis(self.offset_ms.load(Ordering::SeqCst)))
    }
}

async fn server() -> TestServer {
    let server = TestServer::builder()
        .client(TestClient::new("web", "web-secret").redirect_uri(REDIRECT))
        .start()
        .await;
    server.set_login(Some("alice"));
    server
}

fn transport() -> tokenkeeper::http::SharedTransport {
    Arc::new(ReqwestTransport::new(&HttpOptions::default()).unwrap())
}

fn validator(server: &TestServer, clock: Arc<dyn Clock>) -> IdTokenValidator {
    IdTokenValidator::new(
        server.issuer(),
        "web",
        server.jwks_uri().parse().unwrap(),
        transport(),
        clock,
    )
}

fn claims(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

#[tokio::test]
async fn sec_08_strict_id_token_claims_and_key_parameters() {
    let server = server().await;
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let issuer = server.issuer().to_owned();
    let refused = [
        (claims(&[("iss", json!([issuer]))]), "iss as an array"),
        (
            claims(&[("iss", json!(format!("{issuer}/")))]),
            "iss not exact",
        ),
        (claims(&[("iat", Value::Null)]), "no iat"),
        (
            claims(&[("azp", json!("someone-else"))]),
            "azp of another client",
        ),
        (
            claims(&[("aud", json!(["web", "other"])), ("azp", Value::Null)]),
            "several audiences, no azp",
        ),
    ];
    for (overrides, what) in refused {
        server.set_id_token_claims(overrides);
        let (token, nonce) = common::id_token(&server, REDIRECT).await;
        let result = validator(&server, clock.clone())
            .validate(&token, Some(&nonce))
            .await;
        assert!(
            matches!(result, Err(Error::InvalidIdToken(_))),
            "{what}: {result:?}"
        );
    }
    for (overrides, what) in [
        (claims(&[("azp", json!("web"))]), "azp of this client"),
        (
            claims(&[("aud", json!(["web", "other"])), ("azp", json!("web"))]),
            "several audiences with azp",
        ),
    ] {
        server.set_id_token_claims(overrides);
        let (token, nonce) = common::id_token(&server, REDIRECT).await;
        let result = validator(&server, clock.clone())
            .validate(&token, Some(&nonce))
            .await;
        assert!(result.is_ok(), "{what}: {result:?}");
    }
    server.set_id_token_claims(Map::new());

    // A JWK's `use` and `alg` are honoured when present.
    for (parameters, accepted) in [
        (claims(&[("use", json!("enc"))]), false),
        (claims(&[("alg", json!("RS256"))]), false),
        (claims(&[("alg", json!("ES384"))]), false),
        (
            claims(&[("use", json!("sig")), ("alg", json!("ES256"))]),
            true,
        ),
        (claims(&[("use", Value::Null), ("alg", Value::Null)]), true),
    ] {
        server.set_jwk_parameters(parameters.clone());
        let (token, nonce) = common::id_token(&server, REDIRECT).await;
        let result = validator(&server, clock.clone())
            .validate(&token, Some(&nonce))
            .await;
        assert_eq!(result.is_ok(), accepted, "{parameters:?}: {result:?}");
    }
}

#[tokio::test]
async fn sec_09_the_jwks_ages_out_and_a_removed_key_stops_being_trusted() {
    let server = server().await;
    server.set_jwks_cache_control(Some("public, max-age=120"));
    let clock = Arc::new(ManualClock::default());
    let v = validator(&server, clock.clone());
    let (old_token, old_nonce) = common::id_token(&server, REDIRECT).await;
    v.validate(&old_token, Some(&old_nonce)).await.unwrap();
    assert_eq!(server.jwks_requests(), 1);

    // The provider withdraws the key.
    server.rotate_signing_key();
    server.retire_old_signing_keys();
    clock.advance(Duration::from_secs(100));
    v.validate(&old_token, Some(&old_nonce)).await.unwrap();
    assert_eq!(server.jwks_requests(), 1, "within max-age: no fetch");
    clock.advance(Duration::from_secs(30));
    let refused = v.validate(&old_token, Some(&old_nonce)).await;
    assert!(
        matches!(refused, Err(Error::InvalidIdToken(_))),
        "{refused:?}"
    );
    assert_eq!(
        server.jwks_requests(),
        3,
        "re-read after max-age, then once more for the unknown key id"
    );
    assert!(
        v.validate(&old_token, Some(&old_nonce)).await.is_err(),
        "still refused"
    );
    assert_eq!(
        server.jwks_requests(),
        3,
        "unknown key ids are rate-limited"
    );
    let (new_token, new_nonce) = common::id_token(&server, REDIRECT).await;
    v.validate(&new_token, Some(&new_nonce)).await.unwrap();

    // max-age is bounded: a tiny one is raised to the minimum (30 s).
    server.set_jwks_cache_control(Some("max-age=1"));
    let v = validator(&server, clock.clone());
    let before = server.jwks_requests();
    v.validate(&new_token, Some(&new_nonce)).await.unwrap();
    clock.advance(Duration::from_secs(10));
    v.validate(&new_token, Some(&new_nonce)).await.unwrap();
    assert_eq!(server.jwks_requests(), before + 1);
}

/// An HTTP endpoint that counts its requests and answers `status` with `body`.
async fn counting_endpoint(status: u16, body: &'static str) -> (String, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            // Slow enough that concurrent callers overlap.
            tokio::time::sleep(Duration::from_millis(50)).await;
            (http::StatusCode::from_u16(status).unwrap(), body)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_09_failed_refreshes_are_shared_and_back_off() {
    // The JWKS.
    let (url, hits) = counting_endpoint(503, "down").await;
    let clock = Arc::new(ManualClock::default());
    let v = Arc::new(IdTokenValidator::new(
        "http://127.0.0.1:1",
        "web",
        format!("{url}/jwks").parse().unwrap(),
        transport(),
        clock.clone(),
    ));
    let token = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsifQ.eyJzdWIiOiJhIn0.c2ln";
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let v = v.clone();
            tokio::spawn(async move { v.validate(token, None).await })
        })
        .collect();
    for call in calls {
        assert!(call.await.unwrap().is_err());
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1, "one fetch for 20 callers");
    for _ in 0..20 {
        assert!(v.validate(token, None).await.is_err());
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1, "backing off: no request");
    clock.advance(Duration::from_secs(2));
    assert!(v.validate(token, None).await.is_err());
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "after the backoff: one more"
    );

    // Discovery.
    let (url, hits) = counting_endpoint(500, "down").await;
    let discovery = Arc::new(Discovery::new(url, transport(), clock.clone()).unwrap());
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let d = discovery.clone();
            tokio::spawn(async move { d.metadata().await })
        })
        .collect();
    for call in calls {
        assert!(call.await.unwrap().is_err());
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1, "one fetch for 20 callers");
    assert!(discovery.metadata().await.is_err());
    assert_eq!(hits.load(Ordering::SeqCst), 1, "backing off: no request");
}

/// Serves one metadata document for any issuer, without a network.
#[derive(Debug)]
struct CannedMetadata(Value);

impl HttpTransport for CannedMetadata {
    fn send(
        &self,
        _request: HttpRequest,
    ) -> futures_util::future::BoxFuture<'_, Result<HttpResponse, TransportError>> {
        let body = serde_json::to_vec(&self.0).unwrap();
        Box::pin(async move {
            Ok(HttpResponse {
                status: http::StatusCode::OK,
                headers: http::HeaderMap::new(),
                body: body.into(),
            })
        })
    }
}

#[tokio::test]
async fn sec_10_plain_http_only_on_loopback_unless_allowed() {
    // Configuration: a plain-http endpoint elsewhere than loopback fails at build.
    let build = |config: ClientConfig| {
        ClientCredentialsTokenManager::builder()
            .client("api", config)
            .build()
    };
    let error = build(ClientConfig::new("http://idp.example.com/token", "a", "b")).unwrap_err();
    assert!(
        matches!(&error, Error::Config(c) if c.field == "token_endpoint"),
        "{error}"
    );
    assert!(build(ClientConfig::from_issuer(
        "http://idp.example.com",
        "a",
        "b"
    ))
    .is_err());
    for ok in [
        "http://127.0.0.1:8080/token",
        "http://localhost:8080/token",
        "http://[::1]:8080/token",
        "https://idp.example.com/token",
    ] {
        assert!(build(ClientConfig::new(ok, "a", "b")).is_ok(), "{ok}");
    }
    assert!(build(
        ClientConfig::new("http://idp.internal/token", "a", "b").allow_insecure_http(true)
    )
    .is_ok());

    // Metadata: an https issuer must not point at http endpoints.
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let metadata = |issuer: &str, token: &str, jwks: &str| {
        Arc::new(CannedMetadata(json!({
            "issuer": issuer,
            "token_endpoint": token,
            "jwks_uri": jwks,
        })))
    };
    let https = "https://idp.example.com";
    for (token, jwks, ok) in [
        (
            "https://idp.example.com/token",
            "https://idp.example.com/jwks",
            true,
        ),
        (
            "http://idp.example.com/token",
            "https://idp.example.com/jwks",
            false,
        ),
        (
            "https://idp.example.com/token",
            "http://127.0.0.1/jwks",
            false,
        ),
    ] {
        let discovery = Discovery::new(https, metadata(https, token, jwks), clock.clone()).unwrap();
        assert_eq!(discovery.metadata().await.is_ok(), ok, "{token} {jwks}");
    }
    // An http issuer elsewhere than loopback only with the opt-in.
    let http = "http://idp.internal";
    let canned = metadata(
        http,
        "http://idp.internal/token",
        "http://idp.internal/jwks",
    );
    let refused = Discovery::new(http, canned.clone(), clock.clone()).unwrap();
    assert!(matches!(
        refused.metadata().await,
        Err(Error::Discovery { .. })
    ));
    let allowed = Discovery::new(http, canned, clock.clone())
        .unwrap()
        .allow_insecure_http(true);
    assert!(allowed.metadata().await.is_ok());

    // mTLS endpoint aliases (RFC 8705) are https, whatever the issuer: a certificate is only
    // presented over TLS.
    for (alias, ok) in [
        ("https://mtls.idp.example.com/token", true),
        ("http://mtls.idp.example.com/token", false),
        ("http://127.0.0.1/token", false),
    ] {
        let canned = Arc::new(CannedMetadata(json!({
            "issuer": https,
            "token_endpoint": "https://idp.example.com/token",
            "mtls_endpoint_aliases": { "token_endpoint": alias },
        })));
        let discovery = Discovery::new(https, canned, clock.clone()).unwrap();
        let metadata = discovery.metadata().await;
        assert_eq!(metadata.is_ok(), ok, "{alias}");
        if let Ok(metadata) = metadata {
            let aliases = metadata.mtls_endpoint_aliases.as_ref().unwrap();
            assert_eq!(aliases.token_endpoint.as_ref().unwrap().as_str(), alias);
        }
    }
}
