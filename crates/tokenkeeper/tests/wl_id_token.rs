//! Login protocol pieces (WL-01, WL-02 for the ID token and code): against the test server's
//! authorization code flow.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use tokenkeeper::{
    AuthorizationRequest, AuthorizationRequestBuilder, Clock, Error, Grant, HttpOptions,
    IdTokenValidator, ReqwestTransport, Timestamp, TokenEndpoint, TokenRequest, TokioClock,
};
use tokenkeeper_testing::{TestClient, TestServer};

const REDIRECT: &str = "http://127.0.0.1:1/cb";

async fn server() -> TestServer {
    let server = TestServer::builder()
        .client(TestClient::new("web", "web-secret").redirect_uri(REDIRECT))
        .start()
        .await;
    server.set_login(Some("alice"));
    server
}

/// Sends the user agent to the authorization endpoint; returns the callback's query.
async fn authorize(
    server: &TestServer,
) -> (
    AuthorizationRequest,
    std::collections::HashMap<String, String>,
) {
    let request = AuthorizationRequestBuilder::new(
        server.authorization_endpoint().parse().unwrap(),
        "web",
        REDIRECT,
    )
    .scope("openid offline_access")
    .build()
    .unwrap();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = browser.get(request.url.clone()).send().await.unwrap();
    assert!(response.status().is_redirection());
    let location: url::Url = response.headers()["location"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(location.as_str().starts_with(REDIRECT));
    let query = location.query_pairs().into_owned().collect();
    (request, query)
}

fn endpoint(server: &TestServer) -> TokenEndpoint {
    TokenEndpoint::new(
        server.token_endpoint().parse().unwrap(),
        tokenkeeper::ClientAuthentication::ClientSecretBasic {
            client_id: "web".into(),
            client_secret: "web-secret".into(),
        },
        Arc::new(ReqwestTransport::new(&HttpOptions::default()).unwrap()),
    )
}

fn exchange(code: &str, verifier: &str) -> TokenRequest {
    TokenRequest::new(Grant::AuthorizationCode {
        code: code.to_owned(),
        redirect_uri: REDIRECT.into(),
        code_verifier: Some(verifier.to_owned()),
    })
}

fn validator(
    server: &TestServer,
    issuer: &str,
    client_id: &str,
    clock: Arc<dyn Clock>,
) -> IdTokenValidator {
    IdTokenValidator::new(
        issuer,
        client_id,
        server.jwks_uri().parse().unwrap(),
        Arc::new(ReqwestTransport::new(&HttpOptions::default()).unwrap()),
        clock,
    )
}

#[derive(Debug)]
struct Later(TokioClock, Duration);

impl Clock for Later {
    fn now(&self) -> Timestamp {
        self.0.now().saturating_add(self.1)
    }
}

#[tokio::test]
async fn wl_02_id_token_signature_issuer_audience_expiry_and_nonce_are_checked() {
    let server = server().await;
    let (request, query) = authorize(&server).await;
    assert_eq!(query["state"], request.state);
    assert_eq!(
        query["iss"],
        server.issuer(),
        "RFC 9207 iss on the response"
    );
    let response = endpoint(&server)
        .request(&exchange(&query["code"], request.pkce.verifier()))
        .await
        .unwrap();
    let id_token = response.id_token.clone().unwrap();
    let id_token = id_token.secret();
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());

    let ok = validator(&server, server.issuer(), "web", clock.clone());
    let claims = ok.validate(id_token, Some(&request.nonce)).await.unwrap();
    assert_eq!(claims.sub, "alice");
    assert!(claims.sid.is_some());

    let refused = |result: Result<tokenkeeper::IdTokenClaims, Error>| {
        matches!(result, Err(Error::InvalidIdToken(_)))
    };
    assert!(
        refused(ok.validate(id_token, Some("another-nonce")).await),
        "nonce"
    );
    assert!(
        refused(
            validator(&server, server.issuer(), "other-client", clock.clone())
                .validate(id_token, None)
                .await
        ),
        "aud"
    );
    assert!(
        refused(
            validator(&server, "http://127.0.0.1:9", "web", clock.clone())
                .validate(id_token, None)
                .await
        ),
        "iss"
    );
    let later = Arc::new(Later(TokioClock::new(), Duration::from_secs(3600)));
    assert!(
        refused(
            validator(&server, server.issuer(), "web", later)
                .validate(id_token, None)
                .await
        ),
        "exp"
    );
    let mut tampered = id_token.to_owned();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert!(refused(ok.validate(&tampered, None).await), "signature");
    let (head, rest) = id_token.split_once('.').unwrap();
    let _ = head;
    let none_alg = format!("eyJhbGciOiJub25lIn0.{}", rest.split_once('.').unwrap().0);
    assert!(
        refused(ok.validate(&format!("{none_alg}."), None).await),
        "alg none"
    );
}

#[tokio::test]
async fn wl_02_validation_follows_key_rotation() {
    let server = server().await;
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let v = validator(&server, server.issuer(), "web", clock);
    let (request, query) = authorize(&server).await;
    let first = endpoint(&server)
        .request(&exchange(&query["code"], request.pkce.verifier()))
        .await
        .unwrap();
    v.validate(first.id_token.unwrap().secret(), Some(&request.nonce))
        .await
        .unwrap();

    server.rotate_signing_key();
    let (request, query) = authorize(&server).await;
    let second = endpoint(&server)
        .request(&exchange(&query["code"], request.pkce.verifier()))
        .await
        .unwrap();
    let claims = v
        .validate(second.id_token.unwrap().secret(), Some(&request.nonce))
        .await
        .unwrap();
    assert_eq!(claims.sub, "alice", "the new key was fetched from the JWKS");
}

#[tokio::test]
async fn wl_02_code_replay_and_wrong_pkce_are_refused_by_the_server() {
    let server = server().await;
    let (request, query) = authorize(&server).await;
    let wrong = endpoint(&server)
        .request(&exchange(
            &query["code"],
            "not-the-verifier-not-the-verifier-0123456",
        ))
        .await
        .unwrap_err();
    assert_eq!(
        wrong.oauth_error(),
        Some("invalid_grant"),
        "PKCE is verified"
    );
    let (request2, query2) = authorize(&server).await;
    let _ = request;
    endpoint(&server)
        .request(&exchange(&query2["code"], request2.pkce.verifier()))
        .await
        .unwrap();
    let replay = endpoint(&server)
        .request(&exchange(&query2["code"], request2.pkce.verifier()))
        .await
        .unwrap_err();
    assert_eq!(
        replay.oauth_error(),
        Some("invalid_grant"),
        "a code works once"
    );
}
