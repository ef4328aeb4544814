//! UX-09: token exchange (RFC 8693) against node oidc-provider, through the grant its extension
//! point (`registerGrantType`) adds in `server.mjs`: the DL-01 … DL-04 behaviours against a
//! real provider, and exchanged tokens that expire before their subject, with the usual skew.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{jwt_claims, Provider, RESOURCE};
use tokenkeeper::{
    ClientConfig, ClientCredentialsTokenManager, Resource, TokenExchange, TokenRequestParams,
};

/// A client-credentials access token for the resource (a JWT), as a subject or an actor.
async fn subject_token(provider: &Provider, client: &str, secret: &str) -> String {
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "subject",
            ClientConfig::from_issuer(&provider.issuer, client, secret)
                .scope("api:read")
                .resource(RESOURCE),
        )
        .build()
        .unwrap();
    tokens
        .get_token("subject", &TokenRequestParams::default())
        .await
        .unwrap()
        .access_token()
        .secret()
        .to_owned()
}

fn exchanger(provider: &Provider) -> ClientCredentialsTokenManager {
    ClientCredentialsTokenManager::builder()
        .client(
            "exchange",
            ClientConfig::from_issuer(&provider.issuer, "exchanger", "exchanger-secret"),
        )
        .build()
        .unwrap()
}

fn params(subject: &str) -> TokenRequestParams {
    TokenRequestParams::new()
        .resource(Resource::parse(RESOURCE).unwrap())
        .exchange(
            TokenExchange::access_token(subject)
                .requested_token_type("urn:ietf:params:oauth:token-type:access_token"),
        )
}

async fn exchanges(provider: &Provider) -> u64 {
    let body: serde_json::Value = reqwest::get(format!("{}/test/exchanges", provider.issuer))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["exchanges"].as_u64().unwrap()
}

/// DL-01, DL-02: the exchange's parameters reach a real provider, which issues a token for the
/// subject (`act` for the actor); each subject has its own exchanged token, cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ux_09_dl_01_dl_02_token_exchange_against_oidc_provider() {
    let provider = Provider::start(&[]).await;
    let alice = subject_token(&provider, "cc-basic", "cc-basic-secret").await;
    let bob = subject_token(&provider, "cc-post", "cc-post-secret").await;
    let actor = subject_token(&provider, "exchanger", "exchanger-secret").await;
    let tokens = exchanger(&provider);

    let exchanged = tokens.get_token("exchange", &params(&alice)).await.unwrap();
    let claims = jwt_claims(exchanged.access_token().secret());
    assert_eq!(claims["sub"], "cc-basic");
    assert_eq!(claims["aud"], RESOURCE);
    assert_eq!(claims["client_id"], "exchanger");
    assert_eq!(exchanges(&provider).await, 1);

    // Cached per subject: again for alice, nothing sent; bob gets his own.
    let again = tokens.get_token("exchange", &params(&alice)).await.unwrap();
    assert!(exchanged.same_token(&again));
    let for_bob = tokens.get_token("exchange", &params(&bob)).await.unwrap();
    assert_eq!(
        jwt_claims(for_bob.access_token().secret())["sub"],
        "cc-post"
    );
    assert_eq!(exchanges(&provider).await, 2);

    // With an actor: delegation, `act` names it.
    let delegated = TokenRequestParams::new()
        .resource(Resource::parse(RESOURCE).unwrap())
        .exchange(
            TokenExchange::access_token(&alice)
                .actor(&actor, "urn:ietf:params:oauth:token-type:access_token"),
        );
    let token = tokens.get_token("exchange", &delegated).await.unwrap();
    assert_eq!(
        jwt_claims(token.access_token().secret())["act"]["sub"],
        "exchanger"
    );

    // A subject the provider did not issue: its refusal, typed.
    let refused = tokens
        .get_token(
            "exchange",
            &params("eyJhbGciOiJub25lIn0.eyJleHAiOjk5OTk5OTk5OTl9."),
        )
        .await;
    assert_eq!(refused.unwrap_err().oauth_error(), Some("invalid_grant"));
}

/// DL-03, UX-09: an exchanged token is never used after its subject expires, and — like every
/// token — stops being handed out a little before (the skew), not at the subject's `exp`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ux_09_dl_03_exchanged_tokens_expire_before_their_subject() {
    // Subjects live 60 s; the provider caps the exchanged token at the subject's expiry.
    let provider = Provider::start(&[("TOKEN_TTL", "60")]).await;
    let subject = subject_token(&provider, "cc-basic", "cc-basic-secret").await;
    let subject_exp = jwt_claims(&subject)["exp"].as_u64().unwrap() * 1000;
    let tokens = exchanger(&provider);
    let exchanged = tokens
        .get_token("exchange", &params(&subject))
        .await
        .unwrap();
    let exchanged_exp = jwt_claims(exchanged.access_token().secret())["exp"]
        .as_u64()
        .unwrap()
        * 1000;
    assert!(exchanged_exp <= subject_exp, "the provider capped it");
    let handed_out_until = exchanged.expires_at().as_millis();
    // Usable until the subject's expiry minus the skew (a tenth of a 60 s lifetime: ~6 s).
    assert!(
        handed_out_until + 5_000 <= subject_exp,
        "handed out until {handed_out_until}, the subject expires at {subject_exp}"
    );
}

/// DL-04: 10,000 concurrent callers exchanging one subject for one resource make exactly one
/// exchange at the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ux_09_dl_04_ten_thousand_callers_one_exchange() {
    let provider = Provider::start(&[]).await;
    let subject = subject_token(&provider, "cc-basic", "cc-basic-secret").await;
    let tokens = Arc::new(exchanger(&provider));
    let barrier = Arc::new(tokio::sync::Barrier::new(10_000));
    let callers: Vec<_> = (0..10_000)
        .map(|_| {
            let (tokens, barrier, params) = (tokens.clone(), barrier.clone(), params(&subject));
            tokio::spawn(async move {
                barrier.wait().await;
                tokens.get_token("exchange", &params).await.map(|_| ())
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap().unwrap();
    }
    assert_eq!(exchanges(&provider).await, 1);
}
