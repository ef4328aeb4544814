//! User tokens against node oidc-provider: a scripted login (authorization code + PKCE),
//! refresh with rotation, one refresh under concurrency, revocation verified by introspection.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::{jwt_claims, scripted_login, Provider, RESOURCE};
use tokenkeeper::user::{SessionKey, UserTokenManager, UserTokenParams, UserTokens};
use tokenkeeper::{AuthorizationRequestBuilder, ClientConfig, Grant, Resource, TokenRequest};

const REDIRECT: &str = "http://127.0.0.1:1/callback";

async fn login(provider: &Provider, users: &UserTokenManager, user: &str) -> SessionKey {
    let metadata = users
        .endpoint()
        .discovery()
        .unwrap()
        .metadata()
        .await
        .unwrap();
    let request = AuthorizationRequestBuilder::new(
        metadata.authorization_endpoint.clone().unwrap(),
        "web",
        REDIRECT,
    )
    .scope("openid offline_access api:read")
    .prompt("consent")
    .resource(Resource::parse(RESOURCE).unwrap())
    .build()
    .unwrap();
    let callback = scripted_login(&request.url, REDIRECT, user).await;
    let query: std::collections::HashMap<String, String> =
        callback.query_pairs().into_owned().collect();
    assert_eq!(query["state"], request.state);
    assert_eq!(
        query["iss"], provider.issuer,
        "RFC 9207 iss on the authorization response"
    );
    let response = users
        .endpoint()
        .request(
            &TokenRequest::new(Grant::AuthorizationCode {
                code: query["code"].clone(),
                redirect_uri: REDIRECT.into(),
                code_verifier: Some(request.pkce.verifier().to_owned()),
            })
            .resource(Resource::parse(RESOURCE).unwrap()),
        )
        .await
        .unwrap();
    assert!(
        response.refresh_token.is_some(),
        "offline_access + consent gives a refresh token"
    );
    let session = SessionKey::from_sub_sid(user, "s-1");
    users
        .store_login(
            &session,
            &response,
            Some(&Resource::parse(RESOURCE).unwrap()),
        )
        .await
        .unwrap();
    session
}

/// `per_instance` callers on each of `instances`, released together; the distinct access
/// tokens they got.
async fn concurrent_tokens(
    instances: &[UserTokenManager],
    per_instance: usize,
    session: &SessionKey,
    params: &UserTokenParams,
) -> HashSet<String> {
    let barrier = Arc::new(tokio::sync::Barrier::new(instances.len() * per_instance));
    let mut tasks = Vec::new();
    for users in instances {
        for _ in 0..per_instance {
            let (users, session, params, barrier) = (
                users.clone(),
                session.clone(),
                params.clone(),
                barrier.clone(),
            );
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                users.get_access_token(&session, &params).await
            }));
        }
    }
    let mut values = HashSet::new();
    for task in tasks {
        values.insert(
            task.await
                .unwrap()
                .unwrap()
                .access_token()
                .secret()
                .to_owned(),
        );
    }
    values
}

fn users(provider: &Provider) -> UserTokenManager {
    UserTokenManager::builder(ClientConfig::from_issuer(
        &provider.issuer,
        "web",
        "web-secret",
    ))
    .build()
    .unwrap()
}

async fn introspect(provider: &Provider, token: &str) -> serde_json::Value {
    reqwest::Client::new()
        .post(format!("{}/token/introspection", provider.issuer))
        .basic_auth("web", Some("web-secret"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_login_refresh_with_rotation_and_revocation() {
    let provider = Provider::start(&[("ROTATE_REFRESH_TOKENS", "1")]).await;
    let users = users(&provider);
    let session = login(&provider, &users, "alice").await;
    let params = UserTokenParams::new().resource(Resource::parse(RESOURCE).unwrap());

    let first = users.get_access_token(&session, &params).await.unwrap();
    let claims = jwt_claims(first.access_token().secret());
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], RESOURCE);

    let before = users
        .store()
        .get(&session)
        .await
        .unwrap()
        .unwrap()
        .value
        .refresh_token
        .clone()
        .unwrap();
    let refreshed = users
        .get_access_token(&session, &params.clone().force_renewal(true))
        .await
        .unwrap();
    assert!(!refreshed.same_token(&first));
    assert_eq!(
        jwt_claims(refreshed.access_token().secret())["aud"],
        RESOURCE
    );
    let after = users
        .store()
        .get(&session)
        .await
        .unwrap()
        .unwrap()
        .value
        .refresh_token
        .clone()
        .unwrap();
    assert_ne!(before.secret(), after.secret(), "rotated");
    assert_eq!(introspect(&provider, after.secret()).await["active"], true);
    assert_eq!(
        introspect(&provider, before.secret()).await["active"],
        false
    );

    users.logout(&session).await.unwrap();
    assert!(users.store().get(&session).await.unwrap().is_none());
    assert_eq!(
        introspect(&provider, after.secret()).await["active"],
        false,
        "revoked at logout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_ut_04_concurrent_requests_one_refresh_with_rotation() {
    let provider = Provider::start(&[("ROTATE_REFRESH_TOKENS", "1")]).await;
    let users = users(&provider);
    let session = login(&provider, &users, "bob").await;
    // Drop the access token: every caller needs a refresh.
    let stored = users.store().get(&session).await.unwrap().unwrap().value;
    let refresh = stored.refresh_token.clone().unwrap();
    users
        .replace(
            &session,
            UserTokens {
                refresh_token: Some(refresh.clone()),
                ..UserTokens::default()
            },
        )
        .await
        .unwrap();
    let params = UserTokenParams::new().resource(Resource::parse(RESOURCE).unwrap());
    let values = concurrent_tokens(std::slice::from_ref(&users), 1000, &session, &params).await;
    assert_eq!(values.len(), 1, "one refresh: every caller got its token");
    let rotated = users
        .store()
        .get(&session)
        .await
        .unwrap()
        .unwrap()
        .value
        .refresh_token
        .clone()
        .unwrap();
    // Had two refreshes raced, reuse detection would have revoked the grant.
    assert_eq!(
        introspect(&provider, rotated.secret()).await["active"],
        true
    );
    assert_eq!(
        introspect(&provider, refresh.secret()).await["active"],
        false
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_ut_05_three_instances_sharing_redis_one_refresh_with_rotation() {
    use tokenkeeper_redis::{RedisLease, RedisOptions, RedisTokenCache, RedisUserTokenStore};
    let provider = Provider::start(&[("ROTATE_REFRESH_TOKENS", "1")]).await;
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("tkinterop-{:x}", fastrand::u64(..));
    let instances: Vec<UserTokenManager> = (0..3)
        .map(|_| {
            let redis = RedisTokenCache::new(
                &redis_url,
                RedisOptions {
                    prefix: prefix.clone(),
                    ..RedisOptions::plaintext()
                },
            )
            .unwrap();
            UserTokenManager::builder(ClientConfig::from_issuer(
                &provider.issuer,
                "web",
                "web-secret",
            ))
            .store(Arc::new(RedisUserTokenStore::new(&redis)))
            .lease(Arc::new(RedisLease::new(&redis)))
            .build()
            .unwrap()
        })
        .collect();
    let session = login(&provider, &instances[0], "carol").await;
    let refresh = instances[0]
        .store()
        .get(&session)
        .await
        .unwrap()
        .unwrap()
        .value
        .refresh_token
        .clone()
        .unwrap();
    instances[0]
        .replace(
            &session,
            UserTokens {
                refresh_token: Some(refresh.clone()),
                ..UserTokens::default()
            },
        )
        .await
        .unwrap();
    let params = UserTokenParams::new().resource(Resource::parse(RESOURCE).unwrap());
    let values = concurrent_tokens(&instances, 100, &session, &params).await;
    assert_eq!(values.len(), 1, "one refresh across the three instances");
    let rotated = instances[2]
        .store()
        .get(&session)
        .await
        .unwrap()
        .unwrap()
        .value
        .refresh_token
        .clone()
        .unwrap();
    assert_eq!(
        introspect(&provider, rotated.secret()).await["active"],
        true,
        "no reuse: the grant is alive"
    );
    assert_eq!(
        introspect(&provider, refresh.secret()).await["active"],
        false
    );
}
