//! User tokens (UT-01 … UT-04, UT-06 … UT-10) against the in-process test server.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::Api;
use tokenkeeper::user::{SessionKey, UserTokenManager, UserTokenParams, UserTokens};
use tokenkeeper::{ClientConfig, Error, Grant, Resource, TokenRequest};
use tokenkeeper_testing::{TestClient, TestServer};

const RT: &str = "refresh_token";

async fn server() -> Arc<TestServer> {
    Arc::new(
        TestServer::builder()
            .client(TestClient::new("web", "web-secret"))
            .start()
            .await,
    )
}

fn manager(server: &TestServer, in_process: bool) -> UserTokenManager {
    let builder = UserTokenManager::builder(ClientConfig::from_issuer(
        server.issuer(),
        "web",
        "web-secret",
    ));
    let builder = if in_process {
        builder.transport(server.transport())
    } else {
        builder
    };
    builder.build().unwrap()
}

/// A programmable login: the session gets a refresh token (and, with `with_access`, the access
/// token of a first exchange).
async fn login(
    server: &TestServer,
    users: &UserTokenManager,
    user: &str,
    with_access: bool,
) -> SessionKey {
    let session = SessionKey::from_sub_sid(user, "s-1");
    let refresh = server.issue_refresh_token("web", user, Some("openid api"));
    if with_access {
        let response = users
            .endpoint()
            .request(&TokenRequest::new(Grant::RefreshToken {
                refresh_token: refresh.as_str().into(),
            }))
            .await
            .unwrap();
        users.store_login(&session, &response, None).await.unwrap();
    } else {
        users
            .replace(
                &session,
                UserTokens {
                    refresh_token: Some(refresh.as_str().into()),
                    ..UserTokens::default()
                },
            )
            .await
            .unwrap();
    }
    session
}

fn sub_of(server: &TestServer, token: &str) -> String {
    server.verify_access_token(token).unwrap()["sub"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn ut_01_tokens_stored_at_login_are_returned_without_refresh() {
    let server = server().await;
    let users = manager(&server, false);
    let session = login(&server, &users, "alice", true).await;
    let before = server.token_requests(RT);
    let first = users
        .get_access_token(&session, &UserTokenParams::default())
        .await
        .unwrap();
    for _ in 0..5 {
        let again = users
            .get_access_token(&session, &UserTokenParams::default())
            .await
            .unwrap();
        assert!(again.same_token(&first));
    }
    assert_eq!(
        server.token_requests(RT),
        before,
        "no refresh while the token is valid"
    );
    assert_eq!(sub_of(&server, first.access_token().secret()), "alice");
}

#[tokio::test(start_paused = true)]
async fn ut_02_expired_token_is_refreshed_and_a_missing_refresh_token_keeps_the_old() {
    let server = server().await;
    server.set_expires_in(Some(120));
    let users = manager(&server, true);
    let session = login(&server, &users, "alice", true).await;
    server.set_return_refresh_token(false); // no rotation, and no refresh_token in responses
    let old_refresh = users
        .store()
        .get(&session)
        .await
        .unwrap()
        .unwrap()
        .value
        .refresh_token
        .clone()
        .unwrap();
    let first = users
        .get_access_token(&session, &UserTokenParams::default())
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(121)).await;
    let before = server.token_requests(RT);
    let renewed = users
        .get_access_token(&session, &UserTokenParams::default())
        .await
        .unwrap();
    assert!(!renewed.same_token(&first));
    assert_eq!(server.token_requests(RT), before + 1);
    let stored = users.store().get(&session).await.unwrap().unwrap().value;
    assert!(
        stored.access_tokens[""].same_token(&renewed),
        "the new token is stored"
    );
    assert_eq!(
        stored.refresh_token.clone().unwrap().secret(),
        old_refresh.secret(),
        "the old refresh token is kept"
    );

    // With rotation, the new refresh token replaces the old one.
    server.set_rotate_refresh_tokens(true);
    tokio::time::advance(Duration::from_secs(121)).await;
    users
        .get_access_token(&session, &UserTokenParams::default())
        .await
        .unwrap();
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
    assert_ne!(rotated.secret(), old_refresh.secret());
    assert!(server.is_refresh_token_active(rotated.secret()));
}

#[tokio::test(start_paused = true)]
async fn ut_03_without_refresh_token_the_access_token_serves_until_expiry() {
    let server = server().await;
    server.set_expires_in(Some(120));
    let users = manager(&server, true);
    let session = login(&server, &users, "alice", true).await;
    let mut tokens = (*users.store().get(&session).await.unwrap().unwrap().value).clone();
    tokens.refresh_token = None;
    users.replace(&session, tokens).await.unwrap();
    let token = users
        .get_access_token(&session, &UserTokenParams::default())
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(107)).await; // usable until 108 s (CC-15)
    assert!(users
        .get_access_token(&session, &UserTokenParams::default())
        .await
        .unwrap()
        .same_token(&token));
    tokio::time::advance(Duration::from_secs(2)).await;
    let before = server.token_requests(RT);
    let err = users
        .get_access_token(&session, &UserTokenParams::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ReauthenticationRequired(_)), "{err:?}");
    assert_eq!(server.token_requests(RT), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ut_04_one_thousand_concurrent_requests_make_one_refresh_with_rotation() {
    let server = server().await;
    server.set_rotate_refresh_tokens(true);
    server.set_latency(Duration::from_millis(50));
    let users = manager(&server, false);
    let session = login(&server, &users, "alice", false).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(1000));
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (users, session, barrier) = (users.clone(), session.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            users
                .get_access_token(&session, &UserTokenParams::default())
                .await
        }));
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
    assert_eq!(server.token_requests(RT), 1, "exactly one refresh");
    assert_eq!(values.len(), 1);
    let stored = users.store().get(&session).await.unwrap().unwrap().value;
    assert!(
        server.is_refresh_token_active(stored.refresh_token.clone().unwrap().secret()),
        "no invalid_grant: the rotated token is live"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ut_06_per_resource_tokens_share_the_refresh_token() {
    let server = server().await;
    server.set_rotate_refresh_tokens(true);
    server.set_latency(Duration::from_millis(20));
    let users = manager(&server, false);
    let session = login(&server, &users, "alice", false).await;
    let a = UserTokenParams::new().resource(Resource::parse("https://a.example.com").unwrap());
    let b = UserTokenParams::new().resource(Resource::parse("https://b.example.com").unwrap());
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (users, session) = (users.clone(), session.clone());
        let params = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let token = users.get_access_token(&session, &params).await.unwrap();
            (i % 2, token)
        }));
    }
    for task in tasks {
        let (which, token) = task.await.unwrap();
        let claims = server
            .verify_access_token(token.access_token().secret())
            .unwrap();
        let expected = if which == 0 {
            "https://a.example.com"
        } else {
            "https://b.example.com"
        };
        assert_eq!(
            claims["aud"], expected,
            "a refresh for one resource never returns another's token"
        );
    }
    assert_eq!(
        server.token_requests(RT),
        2,
        "one refresh per resource, one after the other"
    );
    let stored = users.store().get(&session).await.unwrap().unwrap().value;
    assert_eq!(stored.access_tokens.len(), 2);
    assert!(server.is_refresh_token_active(stored.refresh_token.clone().unwrap().secret()));
}

#[tokio::test]
async fn ut_07_invalid_grant_clears_the_session_without_retrying() {
    let server = server().await;
    let users = manager(&server, false);
    let session = login(&server, &users, "alice", false).await;
    let refresh = users
        .store()
        .get(&session)
        .await
        .unwrap()
        .unwrap()
        .value
        .refresh_token
        .clone()
        .unwrap();
    // The grant is revoked at the server (an admin, or reuse detection elsewhere).
    users
        .endpoint()
        .revoke(
            server.revocation_endpoint().parse().unwrap(),
            refresh.secret(),
            "refresh_token",
        )
        .await
        .unwrap();
    let err = users
        .get_access_token(&session, &UserTokenParams::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ReauthenticationRequired(_)), "{err:?}");
    assert_eq!(server.token_requests(RT), 1, "no retry loop");
    assert!(
        users.store().get(&session).await.unwrap().is_none(),
        "the session's tokens are cleared"
    );
    let again = users
        .get_access_token(&session, &UserTokenParams::default())
        .await
        .unwrap_err();
    assert!(matches!(again, Error::ReauthenticationRequired(_)));
    assert_eq!(server.token_requests(RT), 1);

    // Any other failure keeps the tokens.
    let session = login(&server, &users, "bob", false).await;
    server.inject_fault(
        tokenkeeper_testing::Fault::oauth(503, "temporarily_unavailable"),
        tokenkeeper_testing::Times::Next(1),
    );
    let err = users
        .get_access_token(&session, &UserTokenParams::default())
        .await
        .unwrap_err();
    assert_eq!(err.oauth_error(), Some("temporarily_unavailable"));
    assert!(users
        .store()
        .get(&session)
        .await
        .unwrap()
        .unwrap()
        .value
        .refresh_token
        .is_some());
}

#[tokio::test]
async fn ut_08_logout_revokes_the_refresh_token_and_clears_the_store() {
    let server = server().await;
    let users = manager(&server, false);
    let session = login(&server, &users, "alice", true).await;
    let refresh = users
        .store()
        .get(&session)
        .await
        .unwrap()
        .unwrap()
        .value
        .refresh_token
        .clone()
        .unwrap();
    users.logout(&session).await.unwrap();
    assert!(users.store().get(&session).await.unwrap().is_none());
    // Verified by introspection at the server.
    let introspection: serde_json::Value = reqwest::Client::new()
        .post(server.introspection_endpoint())
        .basic_auth("web", Some("web-secret"))
        .form(&[
            ("token", refresh.secret()),
            ("token_type_hint", "refresh_token"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(introspection["active"], false);
    let recorded = server.revocations();
    assert_eq!(recorded, 1);

    // A failing revocation is logged, and logout still completes.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let broken = UserTokenManager::builder(ClientConfig::from_issuer(
        server.issuer(),
        "web",
        "web-secret",
    ))
    .revocation_endpoint(format!("http://{closed}/revoke"))
    .build()
    .unwrap();
    let session = login(&server, &broken, "bob", false).await;
    broken.logout(&session).await.unwrap();
    assert!(broken.store().get(&session).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ut_09_tokens_by_session_key_outside_any_request() {
    let server = server().await;
    let api = Api::start(server.clone()).await;
    let users = manager(&server, false);
    let session = login(&server, &users, "alice", false).await;
    // A background job holding only the session key.
    let job = {
        let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(users.middleware(session.clone(), UserTokenParams::default()))
            .build();
        let url = api.url.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..3 {
                statuses.push(http.get(&url).send().await.unwrap().status().as_u16());
            }
            statuses
        })
    };
    assert_eq!(job.await.unwrap(), vec![200, 200, 200]);
    // The same through a tower layer bound to the session (a hyper client here).
    let layered = {
        use tower::ServiceExt as _;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<bytes::Bytes>>();
        let service = tower::ServiceBuilder::new()
            .layer(users.layer(session.clone(), UserTokenParams::default()))
            .service(client);
        let request = http::Request::get(&api.url)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        tokio::spawn(async move { service.oneshot(request).await.unwrap().status().as_u16() })
    };
    assert_eq!(layered.await.unwrap(), 200);
    let seen = api.seen();
    let token = seen[0].as_deref().unwrap().strip_prefix("Bearer ").unwrap();
    assert_eq!(sub_of(&server, token), "alice");
    assert_eq!(server.token_requests(RT), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ut_10_distinct_users_never_see_each_others_tokens() {
    let server = server().await;
    let api = Api::start(server.clone()).await;
    let users = manager(&server, false);
    let pool = reqwest::Client::new(); // one connection pool shared by every user
    let mut tasks = Vec::new();
    for name in ["alice", "bob", "carol", "dave"] {
        let session = login(&server, &users, name, false).await;
        let http = reqwest_middleware::ClientBuilder::new(pool.clone())
            .with(users.middleware(session.clone(), UserTokenParams::default()))
            .build();
        for _ in 0..25 {
            let (http, url, users, session) = (
                http.clone(),
                api.url.clone(),
                users.clone(),
                session.clone(),
            );
            tasks.push(tokio::spawn(async move {
                assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
                let token = users
                    .get_access_token(&session, &UserTokenParams::default())
                    .await
                    .unwrap();
                (name, token.access_token().secret().to_owned())
            }));
        }
    }
    for task in tasks {
        let (name, token) = task.await.unwrap();
        assert_eq!(sub_of(&server, &token), name);
    }
    // Every Authorization header the API saw belongs to a user who sent it: 4 distinct tokens.
    let distinct: HashSet<_> = api.seen().into_iter().collect();
    assert_eq!(distinct.len(), 4);
}

fn scope_of(server: &TestServer, token: &tokenkeeper::CachedToken) -> String {
    server
        .verify_access_token(token.access_token().secret())
        .unwrap()["scope"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ut_11_scope_narrowed_tokens_are_their_own_entries() {
    let server = server().await;
    server.set_rotate_refresh_tokens(true);
    server.set_latency(Duration::from_millis(20));
    let users = manager(&server, false);

    // Concurrent callers with different scopes, on a session without access tokens: one
    // refresh per scope, and each gets a token of exactly its scope.
    let session = login(&server, &users, "alice", false).await;
    let narrowed = UserTokenParams::new().scope("api");
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (users, session) = (users.clone(), session.clone());
        let params = if i % 2 == 0 {
            UserTokenParams::default()
        } else {
            narrowed.clone()
        };
        tasks.push(tokio::spawn(async move {
            (
                i % 2,
                users.get_access_token(&session, &params).await.unwrap(),
            )
        }));
    }
    let mut default_token = None;
    for task in tasks {
        let (which, token) = task.await.unwrap();
        let scope = scope_of(&server, &token);
        if which == 0 {
            assert_eq!(
                scope, "openid api",
                "the default token is never the narrowed one"
            );
            default_token = Some(token);
        } else {
            assert_eq!(scope, "api", "exactly the scope asked for");
        }
    }
    assert_eq!(server.token_requests(RT), 2, "one refresh per scope");
    let stored = users.store().get(&session).await.unwrap().unwrap().value;
    assert_eq!(stored.access_tokens.len(), 2);
    assert!(server.is_refresh_token_active(stored.refresh_token.clone().unwrap().secret()));

    // A narrowed refresh never overwrites the default token.
    let default_token = default_token.unwrap();
    let fresh = users
        .get_access_token(&session, &narrowed.clone().force_renewal(true))
        .await
        .unwrap();
    assert_eq!(scope_of(&server, &fresh), "api");
    let again = users
        .get_access_token(&session, &UserTokenParams::default())
        .await
        .unwrap();
    assert!(again.same_token(&default_token));
}

#[tokio::test]
async fn ut_11_the_client_scope_and_resource_are_the_defaults() {
    let server = server().await;
    let users = UserTokenManager::builder(
        ClientConfig::from_issuer(server.issuer(), "web", "web-secret")
            .scope("api")
            .resource("https://a.example.com"),
    )
    .build()
    .unwrap();
    let session = login(&server, &users, "alice", false).await;
    let token = users
        .get_access_token(&session, &UserTokenParams::default())
        .await
        .unwrap();
    let claims = server
        .verify_access_token(token.access_token().secret())
        .unwrap();
    assert_eq!(claims["scope"], "api");
    assert_eq!(claims["aud"], "https://a.example.com");
    let sent = server.last_token_request().unwrap();
    assert_eq!(sent.form_value("scope"), Some("api"));
    assert_eq!(sent.form_value("resource"), Some("https://a.example.com"));

    let two = UserTokenManager::builder(
        ClientConfig::from_issuer(server.issuer(), "web", "web-secret")
            .resource("https://a.example.com")
            .resource("https://b.example.com"),
    )
    .build()
    .unwrap_err();
    assert!(
        matches!(&two, Error::Config(c) if c.field == "resource"),
        "{two}"
    );
}
