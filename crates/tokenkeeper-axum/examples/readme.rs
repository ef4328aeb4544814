//! Every Rust snippet of the repository's README.md, verbatim, in code that compiles: the
//! `readme_snippets` test checks that each README snippet appears here unchanged, and the
//! README's test command builds this example. The snippets are compiled, not run (they talk to
//! hosts that do not exist here). rustfmt leaves the functions alone, so that they stay the
//! README's text.
#![allow(clippy::unwrap_used, unused_variables, dead_code)]

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager};
use tokenkeeper_redis::{RedisLease, RedisLoginReplayStore, RedisUserTokenStore};
use tower_sessions::MemoryStore;

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

fn main() {}

/// Quick start: machine-to-machine.
#[rustfmt::skip]
async fn machine_to_machine() -> Result {
    use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager};

    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "catalog",
            ClientConfig::from_issuer("https://idp.example.com", "worker", "secret") // or ClientConfig::new(token_endpoint, ..)
                .scope("catalog.read")
                .resource("https://catalog.example.com"),
        )
        .build()?; // every configuration error surfaces here, naming the field

    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(tokens.middleware("catalog")?) // fails now if "catalog" is not registered
        .build();
    let items = http.get("https://catalog.example.com/items").send().await?;
    Ok(())
}

/// Quick start: private_key_jwt.
#[rustfmt::skip]
#[allow(clippy::print_stdout)]
async fn private_key_jwt() -> Result {
    use std::sync::Arc;
    use tokenkeeper::dpop::{DpopAlgorithm, DpopKey};
    use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager, PrivateKeyJwt};

    let key = DpopKey::from_pem(&std::fs::read_to_string("client-key.pem")?, DpopAlgorithm::ES256)?;
    let signer = PrivateKeyJwt::new(key).with_kid("client-key-2026");
    println!("register this public key: {}", signer.public_jwk()); // the private key never leaves
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "catalog",
            ClientConfig::from_issuer("https://idp.example.com", "worker", "").private_key_jwt(Arc::new(signer)),
        )
        .build()?;
    Ok(())
}

/// Quick start: DPoP.
#[rustfmt::skip]
async fn dpop() -> Result {
    use std::sync::Arc;
    use tokenkeeper::dpop::{DpopAlgorithm, DpopKey};
    use tokenkeeper::user::UserTokenManager;
    use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager};

    // Machine to machine: one key per client (or one `Arc` shared by several).
    let key = Arc::new(DpopKey::from_pem(&std::fs::read_to_string("dpop-key.pem")?, DpopAlgorithm::ES256)?);
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "ledger",
            ClientConfig::from_issuer("https://idp.example.com", "worker", "secret")
                .dpop(key)
                .require_dpop(true), // a Bearer answer is an error, not a silent downgrade
        )
        .build()?;
    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(tokens.middleware("ledger")?) // `Authorization: DPoP …` and a fresh proof per request
        .build();

    // On behalf of users: a key of its own for every session (made at login, dropped at logout).
    let users = UserTokenManager::builder(ClientConfig::from_issuer("https://idp.example.com", "web", "secret"))
        .per_session_dpop(DpopAlgorithm::ES256)
        .build()?;
    Ok(())
}

/// Quick start: delegation.
#[rustfmt::skip]
async fn delegation(hash_key: [u8; 32], incoming: &str) -> Result {
    use tokenkeeper::delegation::Delegation;
    use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager, TokenExchange, TokenRequestParams};
    use tokenkeeper_axum::DelegatedClient;

    let tokens = ClientCredentialsTokenManager::builder()
        .client("orders", ClientConfig::from_issuer("https://idp.example.com", "orders-api", "secret"))
        .exchange_hash_key(&hash_key) // the same on every instance sharing a Redis cache
        .build()?;
    let delegation = Delegation::builder(tokens.clone())
        .exchange("https://billing.example.com", "orders", |e| e.audience("billing")) // on the caller's behalf
        .forward("https://audit.example.com")              // the caller's token itself, to this origin only
        .own("https://catalog.example.com", "orders")      // the service's own client-credentials token
        .build()?;                                         // any other origin: refused, nothing sent
    let app: Router = Router::new()
        .route("/invoices", get(|http: DelegatedClient| async move {
            // validate the incoming token first (your API's JWT validation), as on any protected route
            http.get("https://billing.example.com/invoices").send().await.map(|r| r.status().to_string()).unwrap_or_default()
        }))
        .with_state(delegation);

    // Or directly: an exchanged token for one subject, cached by the subject's keyed hash.
    let params = TokenRequestParams::new().exchange(TokenExchange::access_token(incoming).audience("billing"));
    let token = tokens.get_token("orders", &params).await?;
    Ok(())
}

/// Quick start: mutual TLS and workload identity.
#[rustfmt::skip]
async fn mtls() -> Result {
    use tokenkeeper::mtls::MtlsIdentity;
    use tokenkeeper::{AuthMethod, ClientConfig, ClientCredentialsTokenManager, FileAssertion};

    // A client certificate from PEM files, read again when they change (rotation).
    let identity = Arc::new(MtlsIdentity::from_pem_files("/etc/tls/client.pem", "/etc/tls/client.key")?);
    let tokens = ClientCredentialsTokenManager::builder()
        .client("ledger", ClientConfig::from_issuer("https://idp.example.com", "worker", "")
            .mtls(identity.clone(), AuthMethod::TlsClientAuth)) // or SelfSignedTlsClientAuth
        .client("workload", ClientConfig::new("https://idp.example.com/token", "workload", "")
            .auth_method(AuthMethod::None)                     // the JWT bearer grant (RFC 7523)
            .jwt_bearer_grant(Arc::new(FileAssertion::new("/var/run/secrets/tokens/idp"))))
        .build()?;
    let http = reqwest_middleware::ClientBuilder::new(identity.http_client()) // the same certificate
        .with(tokens.middleware("ledger")?)
        .build();
    let entries = http.get("https://ledger.example.com/entries").send().await?;
    Ok(())
}
/// Quick start: backend-for-frontend.
#[rustfmt::skip]
async fn bff() -> Result {
    use tokenkeeper_axum::{Oidc, OidcConfig};
    use tokenkeeper_bff::{ApiRoute, Bff, BffOptions, BffUser, RouteToken};

    let config = OidcConfig::new("https://idp.example.com", "spa", "secret", "https://app.example.com/bff/callback");
    let oidc = Oidc::new(config.clone(), Oidc::user_manager_for(&config)?)?;
    let bff = Bff::new(
        oidc,
        BffOptions::default()
            .route(ApiRoute::new("/api/orders", "https://orders.internal/v1".parse()?).token(RouteToken::User)),
    )?;
    bff.spawn_cleanup(std::time::Duration::from_secs(600)); // expired sessions: refresh tokens revoked
    let local = bff.local_api(axum::Router::new().route(
        "/api/me",
        axum::routing::get(|user: BffUser| async move { user.session.sub.clone() }),
    ));
    let app: axum::Router = axum::Router::new().merge(bff.router()).merge(local.with_state(bff.clone()));
    Ok(())
}

/// Quick start: a fleet sharing Redis.
#[rustfmt::skip]
async fn fleet(issuer: &str, key_bytes: [u8; 32]) -> Result {
    use std::sync::Arc;
    use tokenkeeper_redis::{Encryption, RedisLease, RedisOptions, RedisTokenCache, TwoTierTokenCache};

    let redis = RedisTokenCache::new("redis://127.0.0.1:6379", RedisOptions {
        prefix: "orders-service".into(),
        encryption: Some(Encryption::new("2026-11", &key_bytes)?), // required, or plaintext: true; rotate with .accept(old_id, &old_key)
        ..RedisOptions::default()
    })?;
    let tokens = ClientCredentialsTokenManager::builder()
        .client("catalog", ClientConfig::from_issuer(issuer, "worker", "secret"))
        .cache(Arc::new(TwoTierTokenCache::new(redis.clone()))) // in-memory L1 over Redis L2
        .lease(Arc::new(RedisLease::new(&redis)))              // one fetch per key across instances
        .build()?;
    Ok(())
}

/// Fleets: Redis Cluster, Sentinel, PostgreSQL.
#[rustfmt::skip]
async fn fleet_stores(issuer: &str, key_bytes: [u8; 32], database_url: String) -> Result {
    use std::sync::Arc;
    use tokenkeeper::user::UserTokenManager;
    use tokenkeeper_redis::{Encryption, RedisOptions, RedisTokenCache};

    use tokenkeeper_redis::{RedisTopology, ReplicaAck};
    use tokenkeeper_postgres::{PostgresDatabase, PostgresLease, PostgresOptions, PostgresUserTokenStore};

    // Redis Cluster: keys carry hash tags (each script stays in one slot); invalidations are
    // published to every node.
    let cluster = RedisTokenCache::connect(
        RedisTopology::cluster(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379", "redis://10.0.0.3:6379"]),
        RedisOptions::encrypted(Encryption::new("k1", &key_bytes)?)
            .replica_ack(ReplicaAck::default()), // a rotated session is on a replica before use
    )?;
    // Sentinel: the master the sentinels name, asked again after a failover.
    let sentinel = RedisTokenCache::connect(
        RedisTopology::sentinel(["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"], "mymaster")
            .master_password("from-a-secret-store"),
        RedisOptions::encrypted(Encryption::new("k1", &key_bytes)?).replica_ack(ReplicaAck::default()),
    )?;
    // PostgreSQL: the migrations ship with the crate and apply on first use.
    let db = PostgresDatabase::new(&database_url, PostgresOptions::encrypted(Encryption::new("k1", &key_bytes)?))?;
    let users = UserTokenManager::builder(ClientConfig::from_issuer(issuer, "web", "web-secret"))
        .store(Arc::new(PostgresUserTokenStore::new(&db))) // in-process tier, LISTEN/NOTIFY
        .lease(Arc::new(PostgresLease::new(&db)))          // one refresh per session, fleet-wide
        .build()?;
    let _ = (cluster, sentinel, users);
    Ok(())
}

/// Quick start: FAPI 2.0, step-up and signed, pushed logins.
#[rustfmt::skip]
async fn fapi2(issuer: &str, client_key_pem: String, redirect_uri: &str) -> Result {
    use tokenkeeper::dpop::{DpopAlgorithm, DpopKey};
    use tokenkeeper::protocol::profile::Profile;
    use tokenkeeper::protocol::step_up::AuthenticationRequirements;
    use tokenkeeper::user::{LoginOptions, UserTokenManager};
    use tokenkeeper::PrivateKeyJwt;

    let key = PrivateKeyJwt::new(DpopKey::from_pem(&client_key_pem, DpopAlgorithm::ES256)?);
    let users = UserTokenManager::builder(
        ClientConfig::from_issuer(issuer, "bank-web", "").private_key_jwt(Arc::new(key)),
    )
    .per_session_dpop(DpopAlgorithm::ES256) // or ClientConfig::mtls(identity, AuthMethod::TlsClientAuth)
    .profile(Profile::Fapi2)
    .signed_request_objects(true) // optional: RFC 9101, signed with the same key
    .build()?;

    // A login that asks for a strong, recent authentication (PR-04); the ID token's `acr` and
    // `auth_time` are checked against it at the callback, as in the user-token quick start.
    let started = users
        .start_login(&LoginOptions::new(redirect_uri).requirements(
            AuthenticationRequirements::new()
                .with_acr_values("urn:example:mfa")?
                .with_max_age(std::time::Duration::from_secs(600)),
        ))
        .await?;
    assert!(started.pushed); // the URL carries client_id and request_uri only
    Ok(())
}

/// Quick start: tokens on behalf of a user.
#[rustfmt::skip]
async fn user_tokens(
    issuer: &str,
    redis: tokenkeeper_redis::RedisTokenCache,
    redirect_uri: &str,
    callback_query: &str,
) -> Result {
    use tokenkeeper::user::{LoginOptions, SessionKey, UserTokenManager, UserTokenParams};

    let users = UserTokenManager::builder(ClientConfig::from_issuer(issuer, "web", "web-secret"))
        .store(Arc::new(RedisUserTokenStore::new(&redis))) // default: in memory
        .lease(Arc::new(RedisLease::new(&redis)))          // refreshes serialised across instances
        .build()?;

    // Login: send the browser to `started.url`; keep `started` (sealed) until the callback.
    // PKCE, state, nonce, DPoP's `dpop_jkt`, pushed and signed requests: all decided here.
    let started = users
        .start_login(&LoginOptions::new(redirect_uri).prompt("consent")) // consent: a refresh token
        .await?;

    // Callback: `state` and `iss` (RFC 9207) are checked, the code exchanged, the ID token checked
    // against everything the login asked (nonce, acr_values, max_age), the tokens stored.
    let login = users.finish_login(&started, callback_query).await?;
    let session: SessionKey = login.session; // this login's own record; keep it in your web session

    // Anywhere, with only the session key (handlers, websocket tasks, background jobs):
    let token = users.get_access_token(&session, &UserTokenParams::default()).await?;
    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(users.middleware(session.clone(), UserTokenParams::default()))
        .build();

    // Logout: the refresh token is revoked (RFC 7009), then the session's tokens are cleared.
    let revocation = users.logout(&session).await?;
    assert!(revocation.succeeded());
    Ok(())
}

/// Quick start: OpenID Connect login in axum.
#[rustfmt::skip]
async fn axum_login(issuer: &str, redis: tokenkeeper_redis::RedisTokenCache) -> Result {
    use tokenkeeper_axum::{CurrentUser, Oidc, OidcConfig, UserAccessToken, UserHttpClient};

    let config = OidcConfig::new(issuer, "web", "web-secret", "https://app.example.com/auth/callback");
    let oidc = Oidc::new(config.clone(), Oidc::user_manager_for(&config)?)? // fails here, naming the field
        .with_login_replay_store(Arc::new(RedisLoginReplayStore::new(&redis))); // for a fleet; default: memory
    let app = Router::new()
        .route("/", get(|| async { "home" }))               // where a login lands by default
        .route("/me", get(|user: CurrentUser| async move { user.sub }))
        .route("/token", get(|token: UserAccessToken| async move { token.0.expires_at().as_millis().to_string() }))
        .route("/orders", get(|UserHttpClient(http): UserHttpClient| async move {
            // `http` attaches the user's token to every request
            http.get("https://orders.example.com/mine").send().await.map(|r| r.status().to_string()).unwrap_or_default()
        }))
        .route("/logout-link", get(|State(oidc): State<Oidc>, user: CurrentUser| async move {
            oidc.logout_url(&user) // "/auth/logout?sid=…": logout needs the session's sid
        }))
        .merge(oidc.router())                               // /auth/login, /auth/callback, /auth/logout
        .with_state(oidc.clone())
        .layer(oidc.session_layer(MemoryStore::default())); // __Host-tk.sid: HttpOnly, Secure, SameSite=Lax
    let _: Router = app;
    Ok(())
}

/// Quick start: testing with the in-process authorization server.
#[rustfmt::skip]
async fn testing() -> Result {
    use tokenkeeper_testing::{Fault, TestClient, TestServer, Times};

    let server = TestServer::builder().client(TestClient::new("worker", "secret")).start().await;
    // point your client at server.token_endpoint() or server.issuer() ...
    server.inject_fault(Fault::oauth(503, "temporarily_unavailable"), Times::Next(1));
    assert_eq!(server.token_requests("client_credentials"), 0);
    Ok(())
}
