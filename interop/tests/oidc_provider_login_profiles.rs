//! PR-07: the conformance matrix — each login profile against node oidc-provider, from
//! `UserTokenManager::start_login` to the ID token check, with its negative cases:
//!
//! | profile | client | what the provider enforces |
//! |---|---|---|
//! | basic | `web` | PKCE, `iss` on the response |
//! | PAR | `par-web` | `require_pushed_authorization_requests` |
//! | PAR + JAR | `jar-web` | `require_signed_request_object`, `private_key_jwt` |
//! | FAPI 2.0 + DPoP | `fapi-dpop` | its FAPI 2.0 profile, PAR, DPoP-bound tokens |
//!
//! (FAPI 2.0 with mTLS is in `oidc_provider_fapi2_mtls.rs`.) Every profile refuses a callback
//! with a wrong `iss`, an ID token whose `acr` is weaker than asked, one whose `auth_time` is
//! older than `max_age` allows; the signed-request profiles' provider refuses an unsigned
//! request, and the PAR profiles' an unpushed one.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{scripted_login, Provider};
use tokenkeeper::dpop::{DpopAlgorithm, DpopKey};
use tokenkeeper::protocol::profile::{Profile, PushedAuthorization};
use tokenkeeper::protocol::step_up::AuthenticationRequirements;
use tokenkeeper::user::{Login, LoginOptions, StartedLogin, UserTokenManager};
use tokenkeeper::{ClientConfig, Error, PrivateKeyJwt};

const REDIRECT: &str = "http://127.0.0.1:1/callback";

/// The client key of the `private_key_jwt` clients, and the provider that knows it.
async fn provider() -> (Provider, Arc<PrivateKeyJwt>) {
    let key = Arc::new(
        PrivateKeyJwt::new(DpopKey::generate(DpopAlgorithm::ES256).unwrap()).with_kid("k1"),
    );
    let jwks = serde_json::json!({ "keys": [key.public_jwk()] }).to_string();
    let provider = Provider::start(&[("LOGIN_JWKS", jwks.as_str())]).await;
    (provider, key)
}

/// One profile of the matrix: how to build its manager.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Matrix {
    Basic,
    Par,
    ParJar,
    Fapi2Dpop,
}

fn manager(provider: &Provider, key: &Arc<PrivateKeyJwt>, profile: Matrix) -> UserTokenManager {
    let issuer = provider.issuer.clone();
    match profile {
        Matrix::Basic => {
            UserTokenManager::builder(ClientConfig::from_issuer(issuer, "web", "web-secret"))
                .build()
                .unwrap()
        }
        Matrix::Par => UserTokenManager::builder(ClientConfig::from_issuer(
            issuer,
            "par-web",
            "par-web-secret",
        ))
        .pushed_authorization(PushedAuthorization::Always)
        .build()
        .unwrap(),
        Matrix::ParJar => UserTokenManager::builder(
            ClientConfig::from_issuer(issuer, "jar-web", "").private_key_jwt(key.clone()),
        )
        .signed_request_objects(true)
        .pushed_authorization(PushedAuthorization::Always)
        .build()
        .unwrap(),
        Matrix::Fapi2Dpop => UserTokenManager::builder(
            ClientConfig::from_issuer(issuer, "fapi-dpop", "").private_key_jwt(key.clone()),
        )
        .per_session_dpop(DpopAlgorithm::ES256)
        .profile(Profile::Fapi2)
        .build()
        .unwrap(),
    }
}

/// Starts a login and goes through the provider's pages; the started login and the callback.
async fn authorize(
    users: &UserTokenManager,
    requirements: AuthenticationRequirements,
) -> Result<(StartedLogin, HashMap<String, String>), Error> {
    let started = users
        .start_login(
            &LoginOptions::new(REDIRECT)
                .scope("openid offline_access")
                .prompt("consent")
                .requirements(requirements),
        )
        .await?;
    let callback = scripted_login(&started.url, REDIRECT, "alice").await;
    Ok((started, callback.query_pairs().into_owned().collect()))
}

async fn complete(
    users: &UserTokenManager,
    started: &StartedLogin,
    query: &HashMap<String, String>,
) -> Result<Login, Error> {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query.iter())
        .finish();
    users.finish_login(started, &query).await
}

/// The profile's login, and then its negative cases.
async fn run(profile: Matrix) {
    let (provider, key) = provider().await;
    let users = manager(&provider, &key, profile);

    // The login, its tokens, and its userinfo (PR-06: with the right token type).
    let (started, query) = authorize(&users, AuthenticationRequirements::new())
        .await
        .unwrap();
    let pushed = matches!(profile, Matrix::Par | Matrix::ParJar | Matrix::Fapi2Dpop);
    assert_eq!(started.pushed, pushed, "{profile:?}");
    if pushed {
        let names: Vec<String> = started
            .url
            .query_pairs()
            .map(|(k, _)| k.into_owned())
            .collect();
        assert_eq!(names, ["client_id", "request_uri"], "{profile:?}");
    }
    let login = complete(&users, &started, &query).await.unwrap();
    assert_eq!(login.sub, "alice");
    // No acr_values asked: the provider names no acr (or the plain one).
    assert!(login.claims.all.get("acr").is_none_or(|a| a == "urn:pwd"));
    let token = users
        .get_access_token(&login.session, &Default::default())
        .await
        .unwrap();
    let dpop = profile == Matrix::Fapi2Dpop;
    assert_eq!(token.is_dpop(), dpop, "{profile:?}");
    let claims = users.userinfo(&login.session, &login.sub).await.unwrap();
    assert_eq!(claims["sub"], "alice");

    // A step-up the provider meets.
    let mfa = AuthenticationRequirements::new()
        .with_acr_values("urn:mfa")
        .unwrap();
    let (started, query) = authorize(&users, mfa).await.unwrap();
    let login = complete(&users, &started, &query).await.unwrap();
    assert_eq!(login.claims.all["acr"], "urn:mfa", "{profile:?}");

    // Negative: a callback whose iss is not the issuer.
    let (started, mut query) = authorize(&users, AuthenticationRequirements::new())
        .await
        .unwrap();
    query.insert("iss".into(), "http://127.0.0.1:1/evil".into());
    let e = complete(&users, &started, &query).await.unwrap_err();
    assert!(
        matches!(e, Error::AuthorizationResponse(_)),
        "{profile:?}: {e}"
    );
    query.remove("iss");
    let e = complete(&users, &started, &query).await.unwrap_err();
    assert!(
        matches!(e, Error::AuthorizationResponse(_)),
        "{profile:?}: no iss: {e}"
    );

    // Negative: an acr weaker than asked (the provider has no urn:hwk: it gives urn:pwd).
    let hwk = AuthenticationRequirements::new()
        .with_acr_values("urn:hwk")
        .unwrap();
    let (started, query) = authorize(&users, hwk).await.unwrap();
    let e = complete(&users, &started, &query).await.unwrap_err();
    assert!(
        matches!(e, Error::InsufficientAuthentication(_)),
        "{profile:?}: {e}"
    );

    // Negative: an auth_time older than max_age (a provider that ignored it).
    reqwest::get(format!("{}/test/login-age?seconds=3600", provider.issuer))
        .await
        .unwrap();
    let recent = AuthenticationRequirements::new().with_max_age(Duration::from_secs(300));
    let (started, query) = authorize(&users, recent).await.unwrap();
    let e = complete(&users, &started, &query).await.unwrap_err();
    assert!(
        matches!(e, Error::InsufficientAuthentication(_)),
        "{profile:?}: {e}"
    );
    reqwest::get(format!("{}/test/login-age?seconds=0", provider.issuer))
        .await
        .unwrap();

    // Negative: what the provider refuses of this client.
    match profile {
        Matrix::Basic | Matrix::Fapi2Dpop => {}
        Matrix::Par => {
            // An unpushed request from a client that must push.
            let plain = UserTokenManager::builder(ClientConfig::from_issuer(
                provider.issuer.clone(),
                "par-web",
                "par-web-secret",
            ))
            .build()
            .unwrap();
            let (_, query) = authorize(&plain, AuthenticationRequirements::new())
                .await
                .unwrap();
            assert_eq!(
                query.get("error").map(String::as_str),
                Some("invalid_request"),
                "{query:?}"
            );
        }
        Matrix::ParJar => {
            // An unsigned request from a client that must sign, pushed or not.
            for push in [true, false] {
                let mut builder = UserTokenManager::builder(
                    ClientConfig::from_issuer(provider.issuer.clone(), "jar-web", "")
                        .private_key_jwt(key.clone()),
                );
                if push {
                    builder = builder.pushed_authorization(PushedAuthorization::Always);
                }
                let unsigned = builder.build().unwrap();
                match authorize(&unsigned, AuthenticationRequirements::new()).await {
                    Err(e) => assert_eq!(e.oauth_error(), Some("invalid_request"), "{e}"),
                    Ok((_, query)) => assert_eq!(
                        query.get("error").map(String::as_str),
                        Some("invalid_request"),
                        "{query:?}"
                    ),
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pr_07_basic_profile_and_its_refusals() {
    run(Matrix::Basic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pr_07_par_profile_and_its_refusals() {
    run(Matrix::Par).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pr_07_par_jar_profile_and_its_refusals() {
    run(Matrix::ParJar).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pr_07_fapi2_dpop_profile_and_its_refusals() {
    run(Matrix::Fapi2Dpop).await;
}
