//! Resilience: RS-03 (no panic on any input from the network, fuzzed) for every parser of
//! network input in this crate, and RS-02 (token endpoint down).
//!
//! The RS-03 tests feed seeded, structure-aware mutations of real documents (from the in-process
//! test server) to the public API through a scripted transport; each case must end in a value or
//! a typed error — never a panic, never `Error::Internal` (which is what a panic inside a
//! background flight becomes) and never an error message holding a secret. Reproduce a failure
//! with the printed `TK_FUZZ_SEED`; `TK_FUZZ_CASES` sets the number of cases.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokenkeeper::user::{SessionKey, UserTokenManager, UserTokenParams, UserTokens};
use tokenkeeper::{
    ClientAuthentication, ClientConfig, ClientCredentialsTokenManager, Clock, Discovery, Error,
    Grant, HttpResponse, IdTokenValidator, TokenEndpoint, TokenRequest, TokenRequestParams,
    TokioClock, TransportErrorKind,
};
use tokenkeeper_testing::fuzz::{cases, Mutator, ScriptedTransport};
use tokenkeeper_testing::{TestClient, TestServer};

/// Marks the secrets we send (client secret, refresh token): no error message may contain it.
const SECRET_MARK: &str = "s3cr3t-mark";
/// Marks the tokens in response documents: no error message may contain it, unless the response
/// itself put it into an OAuth error field (the server's own words are quoted).
const TOKEN_MARK: &str = "t0ken-mark";
const REDIRECT: &str = "http://127.0.0.1:1/cb";

fn token_response_seeds() -> Vec<Vec<u8>> {
    [
        format!(
            r#"{{"access_token":"at-{TOKEN_MARK}","token_type":"Bearer","expires_in":300,"scope":"api:read","refresh_token":"rt-{TOKEN_MARK}"}}"#
        ),
        format!(r#"{{"access_token":"at-{TOKEN_MARK}","token_type":"DPoP","expires_in":"300"}}"#),
        r#"{"error":"invalid_grant","error_description":"the refresh token was revoked"}"#
            .to_owned(),
        r#"{"error":"temporarily_unavailable","error_uri":"https://idp.example/e"}"#.to_owned(),
        format!(r#"{{"access_token":"at-{TOKEN_MARK}","token_type":"bearer","id_token":"x.y.z"}}"#),
    ]
    .map(String::into_bytes)
    .to_vec()
}

/// Fails the test when a case panicked, ended in `Error::Internal`, or leaked a secret.
/// Returns whether the case was accepted (so a test can show that valid input still passes).
fn check(
    mutator: &Mutator,
    case: usize,
    input: &[u8],
    outcome: Result<Result<(), Error>, String>,
) -> bool {
    let shown = String::from_utf8_lossy(&input[..input.len().min(400)]).into_owned();
    let seed = mutator.seed();
    match outcome {
        Err(panic) => {
            panic!("case {case} (TK_FUZZ_SEED={seed}) panicked: {panic}; input: {shown:?}")
        }
        Ok(Err(Error::Internal(message))) => {
            panic!("case {case} (TK_FUZZ_SEED={seed}) ended in an internal error: {message}; input: {shown:?}")
        }
        Ok(Err(error)) => {
            let text = format!("{error} {error:?}");
            let quoted = String::from_utf8_lossy(input).contains("error");
            assert!(
                !text.contains(SECRET_MARK) && (quoted || !text.contains(TOKEN_MARK)),
                "case {case} (TK_FUZZ_SEED={seed}): a secret in the error: {text}"
            );
            false
        }
        Ok(Ok(())) => true,
    }
}

/// Runs `future` in its own task, so that a panic is reported rather than unwinding the test.
async fn isolated<F>(future: F) -> Result<Result<(), Error>, String>
where
    F: std::future::Future<Output = Result<(), Error>> + Send + 'static,
{
    tokio::spawn(future).await.map_err(|e| format!("{e:?}"))
}

fn scripted(body: Vec<u8>, mutator: &mut Mutator) -> Arc<ScriptedTransport> {
    let response = HttpResponse {
        status: mutator.status(),
        headers: mutator.headers(),
        body: Bytes::from(body),
    };
    Arc::new(ScriptedTransport::new(move |_| Ok(response.clone())))
}

/// Runs `cases` cases: each answers every request with one mutated response (status, headers,
/// body from `seeds`) and runs `call` with that transport and the body; fails on a panic, an
/// internal error or a leaked secret, and unless some case succeeded (so valid input still
/// passes and the harness is not refusing everything).
async fn each_response<F, Fut>(cases: usize, seeds: &[Vec<u8>], call: F)
where
    F: Fn(Arc<ScriptedTransport>, Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>> + Send + 'static,
{
    let mut mutator = Mutator::from_env();
    let mut accepted = 0;
    for case in 0..cases {
        let body = mutator.mutate(seeds);
        let transport = scripted(body.clone(), &mut mutator);
        let outcome = isolated(call(transport, body.clone())).await;
        accepted += usize::from(check(&mutator, case, &body, outcome));
    }
    assert!(
        accepted > 0,
        "no case was accepted: the harness never reached success"
    );
}

fn basic() -> ClientAuthentication {
    ClientAuthentication::ClientSecretBasic {
        client_id: "fuzz".into(),
        client_secret: format!("cs-{SECRET_MARK}").as_str().into(),
    }
}

#[tokio::test]
async fn rs_03_token_endpoint_survives_any_response() {
    let seeds = token_response_seeds();
    let grants = [
        Grant::ClientCredentials,
        Grant::RefreshToken {
            refresh_token: format!("rt-{SECRET_MARK}").as_str().into(),
        },
        Grant::AuthorizationCode {
            code: "code".into(),
            redirect_uri: REDIRECT.into(),
            code_verifier: Some("verifier".into()),
        },
    ];
    let case = std::cell::Cell::new(0);
    each_response(cases(3000), &seeds, |transport, _body| {
        // Each grant in turn.
        case.set(case.get() + 1);
        let grant = grants[case.get() % grants.len()].clone();
        async move {
            let endpoint = TokenEndpoint::new(
                "https://idp.example/token".parse().unwrap(),
                basic(),
                transport,
            );
            let response = endpoint.request(&TokenRequest::new(grant)).await?;
            assert!(
                !response.access_token.secret().is_empty(),
                "an empty token was accepted"
            );
            Ok(())
        }
    })
    .await;
}

#[tokio::test]
async fn rs_03_revocation_survives_any_response() {
    let seeds = token_response_seeds();
    each_response(cases(1000), &seeds, |transport, _body| async move {
        let endpoint = TokenEndpoint::new(
            "https://idp.example/token".parse().unwrap(),
            basic(),
            transport,
        );
        let token = format!("rt-{SECRET_MARK}");
        endpoint
            .revoke(
                "https://idp.example/revoke".parse().unwrap(),
                &token,
                "refresh_token",
            )
            .await
    })
    .await;
}

#[tokio::test]
async fn rs_03_client_credentials_manager_survives_any_response() {
    let seeds = token_response_seeds();
    each_response(cases(2000), &seeds, |transport, _body| {
        async move {
            let tokens = ClientCredentialsTokenManager::builder()
                .client(
                    "api",
                    ClientConfig::new(
                        "https://idp.example/token",
                        "fuzz",
                        format!("cs-{SECRET_MARK}"),
                    ),
                )
                .transport(transport)
                .build()?;
            let now = TokioClock::new().now();
            let token = tokens
                .get_token("api", &TokenRequestParams::default())
                .await?;
            // Whatever the server said about its lifetime, the cached times are ordered.
            assert!(token.refresh_at() <= token.expires_at());
            assert!(token.expires_at() >= now);
            Ok(())
        }
    })
    .await;
}

/// What a session holds after a refresh answered by an arbitrary response: its refresh token,
/// unless the server said `invalid_grant` — nothing else may lose it.
#[tokio::test]
async fn rs_03_user_refresh_keeps_the_session_unless_the_grant_is_invalid() {
    let seeds = token_response_seeds();
    each_response(cases(1500), &seeds, |transport, body| {
        let says_invalid_grant = String::from_utf8_lossy(&body).contains("invalid_grant");
        async move {
            let users = UserTokenManager::builder(ClientConfig::new(
                "https://idp.example/token",
                "web",
                format!("cs-{SECRET_MARK}"),
            ))
            .transport(transport)
            .build()?;
            let session = SessionKey::from_sub_sid("alice", "s-1");
            let old = format!("rt-old-{SECRET_MARK}");
            users
                .replace(
                    &session,
                    UserTokens {
                        refresh_token: Some(old.as_str().into()),
                        ..UserTokens::default()
                    },
                )
                .await?;
            let result = users
                .get_access_token(&session, &UserTokenParams::new())
                .await;
            let stored = users.store().get(&session).await?;
            let refresh = stored
                .as_ref()
                .and_then(|s| s.value.refresh_token.as_ref())
                .map(|t| t.secret().to_owned());
            match &result {
                Ok(_) => assert!(
                    refresh.is_some(),
                    "a refreshed session keeps a refresh token"
                ),
                Err(Error::ReauthenticationRequired(_)) => {
                    assert!(
                        says_invalid_grant,
                        "cleared without invalid_grant: {result:?}"
                    );
                    assert!(refresh.is_none(), "invalid_grant clears the session");
                }
                Err(_) => assert_eq!(
                    refresh.as_deref(),
                    Some(old.as_str()),
                    "a failed refresh keeps the refresh token"
                ),
            }
            result.map(|_| ())
        }
    })
    .await;
}

#[tokio::test]
async fn rs_03_discovery_survives_any_document_and_checks_the_issuer() {
    let server = TestServer::builder().start().await;
    let issuer = server.issuer().to_owned();
    let document = reqwest::get(format!("{issuer}/.well-known/openid-configuration"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let seeds = vec![document];
    each_response(cases(2000), &seeds, |transport, _body| {
        let issuer = issuer.clone();
        async move {
            let discovery = Discovery::new(issuer.clone(), transport, Arc::new(TokioClock::new()))?;
            let metadata = discovery.metadata().await?;
            assert_eq!(
                metadata.issuer, issuer,
                "metadata for another issuer was accepted"
            );
            Ok(())
        }
    })
    .await;
}

#[tokio::test]
async fn rs_03_id_token_validation_survives_any_token_and_jwks() {
    let server = TestServer::builder()
        .client(TestClient::new("web", "web-secret").redirect_uri(REDIRECT))
        .start()
        .await;
    let (valid, nonce) = common::id_token(&server, REDIRECT).await;
    let jwks_uri: url::Url = format!("{}/jwks", server.issuer()).parse().unwrap();
    let jwks = reqwest::get(jwks_uri.clone())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let jwks_seeds = vec![jwks.clone()];
    let token_seeds = vec![valid.clone()];
    let valid_payload = valid.split('.').nth(1).unwrap().to_owned();
    let mut mutator = Mutator::from_env();
    let mut accepted = 0;
    for case in 0..cases(2000) {
        // Half the cases: the real keys and a mutated token; the other half: mutated keys too.
        let body = if case % 2 == 0 {
            jwks.clone()
        } else {
            mutator.mutate(&jwks_seeds)
        };
        let status = if case % 2 == 0 {
            http::StatusCode::OK
        } else {
            mutator.status()
        };
        let response = HttpResponse {
            status,
            headers: mutator.headers(),
            body: Bytes::from(body.clone()),
        };
        let transport = Arc::new(ScriptedTransport::new(move |_| Ok(response.clone())));
        let token = mutator.mutate_text(&token_seeds);
        let (issuer, uri, nonce, valid_payload) = (
            server.issuer().to_owned(),
            jwks_uri.clone(),
            nonce.clone(),
            valid_payload.clone(),
        );
        let shown = token.clone();
        let outcome = isolated(async move {
            let validator =
                IdTokenValidator::new(issuer, "web", uri, transport, Arc::new(TokioClock::new()));
            let claims = validator.validate(&token, Some(&nonce)).await?;
            // Accepted: then it must be the token that was issued, claims unchanged.
            assert_eq!(token.split('.').nth(1), Some(valid_payload.as_str()));
            assert_eq!(claims.sub, "alice");
            Ok(())
        })
        .await;
        accepted += usize::from(check(&mutator, case, shown.as_bytes(), outcome));
    }
    assert!(
        accepted > 0,
        "no case was accepted: the harness never reached success"
    );
}

#[test]
fn rs_03_stored_session_json_survives_any_document() {
    let mut tokens = UserTokens {
        refresh_token: Some(format!("rt-{SECRET_MARK}").as_str().into()),
        id_token: Some("a.b.c".into()),
        ..UserTokens::default()
    };
    let now = TokioClock::new().now();
    tokens.access_tokens.insert(
        "",
        Arc::new(
            tokenkeeper::CachedToken::new(
                format!("at-{SECRET_MARK}").as_str().into(),
                tokenkeeper::TokenType::Bearer,
                Some(tokenkeeper::Scope::parse("openid api")),
                now,
                now.saturating_add(Duration::from_secs(60)),
                now.saturating_add(Duration::from_secs(90)),
            )
            .unwrap(),
        ),
    );
    let seed = serde_json::to_vec(&tokens.to_json()).unwrap();
    // The round trip is exact.
    let back = UserTokens::from_json(&tokens.to_json()).unwrap();
    assert_eq!(back.to_json(), tokens.to_json());
    let mut mutator = Mutator::from_env();
    let seeds = vec![seed];
    let mut panics = Vec::new();
    for case in 0..cases(5000) {
        let input = mutator.mutate(&seeds);
        let result = std::panic::catch_unwind(|| {
            serde_json::from_slice::<serde_json::Value>(&input)
                .ok()
                .and_then(|value| UserTokens::from_json(&value))
                .map(|tokens| tokens.to_json())
        });
        if result.is_err() {
            panics.push((case, String::from_utf8_lossy(&input).into_owned()));
        }
    }
    assert!(
        panics.is_empty(),
        "TK_FUZZ_SEED={}: {} inputs panicked, first: {:?}",
        mutator.seed(),
        panics.len(),
        panics.first()
    );
}

/// RS-02: with the token endpoint down, a valid token keeps flowing; once it has expired,
/// callers fail fast with the endpoint's error — through backoff without new requests, and a
/// hanging endpoint ends at the request timeout rather than never.
#[tokio::test(start_paused = true)]
async fn rs_02_endpoint_down_valid_tokens_flow_expired_fail_fast() {
    let server = TestServer::builder()
        .client(TestClient::new("svc", "svc-secret"))
        .expires_in(Some(120))
        .start()
        .await;
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::new(server.token_endpoint(), "svc", "svc-secret"),
        )
        .transport(Arc::new(
            server
                .transport()
                .as_ref()
                .clone()
                .with_timeout(Duration::from_secs(10)),
        ))
        .build()
        .unwrap();
    let params = TokenRequestParams::default();
    let first = tokens.get_token("api", &params).await.unwrap();

    // Down: every request fails with a 503 from here on.
    server.inject_fault(
        tokenkeeper_testing::Fault::oauth(503, "temporarily_unavailable"),
        tokenkeeper_testing::Times::Always,
    );
    for _ in 0..10 {
        let token = tokens.get_token("api", &params).await.unwrap();
        assert!(token.same_token(&first), "the valid token keeps flowing");
        tokio::time::advance(Duration::from_secs(5)).await;
    }

    // Expired: the caller gets the endpoint's error, and the next callers within the backoff
    // get it without a new request.
    tokio::time::advance(Duration::from_secs(120)).await;
    let before = server.token_requests("client_credentials");
    let started = tokio::time::Instant::now();
    let error = tokens.get_token("api", &params).await.unwrap_err();
    assert!(
        matches!(&error, Error::OAuth(e) if e.error == "temporarily_unavailable"),
        "{error:?}"
    );
    for _ in 0..5 {
        let again = tokens.get_token("api", &params).await.unwrap_err();
        assert!(matches!(again, Error::OAuth(_)), "{again:?}");
    }
    assert_eq!(
        server.token_requests("client_credentials"),
        before + 1,
        "callers inside the backoff do not reach the endpoint"
    );
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "no waiting for a known failure"
    );

    // Hanging: the endpoint answers after an hour; the caller gets a timeout at 10 s.
    server.clear_faults();
    server.set_latency(Duration::from_secs(3600));
    tokio::time::advance(Duration::from_secs(60)).await; // past any backoff
    let started = tokio::time::Instant::now();
    let error = tokens.get_token("api", &params).await.unwrap_err();
    assert!(
        matches!(&error, Error::Transport(e) if e.kind == TransportErrorKind::Timeout),
        "{error:?}"
    );
    assert_eq!(started.elapsed(), Duration::from_secs(10));
}
