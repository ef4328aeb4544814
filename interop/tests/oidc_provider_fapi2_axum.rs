//! PR-03: the axum integration under the FAPI 2.0 profile against node oidc-provider, with
//! DPoP (`fapi-dpop`: `private_key_jwt`, per-session keys) and with mTLS (`fapi-mtls`:
//! `tls_client_auth`, certificate-bound tokens): `/auth/login` pushes the request, the callback
//! checks `iss` and the ID token, the session's tokens are sender-constrained, and the
//! provider's userinfo answers for them.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use common::{scripted_web_login, Provider};
use tokenkeeper::protocol::profile::Profile;
use tokenkeeper::user::UserTokenManager;
use tokenkeeper::{AuthMethod, ClientConfig};
use tokenkeeper_axum::{CurrentUser, Oidc, OidcConfig};
use tokenkeeper_testing::mtls::certs;

/// Serves `oidc`'s routes and `/me` (the user, the session's token type, and the provider's
/// userinfo `sub`) on `listener`.
fn serve(listener: tokio::net::TcpListener, oidc: Oidc) {
    let app = axum::Router::new()
        .route(
            "/me",
            get(|State(oidc): State<Oidc>, user: CurrentUser| async move {
                let session = user.session_key();
                let token = oidc
                    .users()
                    .get_access_token(&session, &Default::default())
                    .await
                    .unwrap();
                let info = oidc.users().userinfo(&session, &user.sub).await.unwrap();
                format!(
                    "{} {} {}",
                    user.sub,
                    if token.is_dpop() { "DPoP" } else { "Bearer" },
                    info["sub"].as_str().unwrap_or_default()
                )
            }),
        )
        .merge(oidc.router())
        .with_state(oidc.clone())
        .layer(oidc.session_layer(tower_sessions::MemoryStore::default()));
    tokio::spawn(async move { axum::serve(listener, app).await });
}

fn config(issuer: &str, client_id: &str, origin: &str) -> OidcConfig {
    let mut config = OidcConfig::new(issuer, client_id, "", format!("{origin}/auth/callback"));
    config.insecure_cookies = true;
    config.scope = tokenkeeper::Scope::parse("openid offline_access");
    config.prompt = Some("consent".into());
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pr_03_axum_fapi2_with_dpop() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let key = Arc::new(tokenkeeper::PrivateKeyJwt::new(
        tokenkeeper::dpop::DpopKey::generate(tokenkeeper::dpop::DpopAlgorithm::ES256).unwrap(),
    ));
    let jwks = serde_json::json!({ "keys": [key.public_jwk()] }).to_string();
    let redirect = format!("{origin}/auth/callback");
    let provider = Provider::start(&[
        ("LOGIN_JWKS", jwks.as_str()),
        ("LOGIN_REDIRECTS", redirect.as_str()),
    ])
    .await;
    let users = UserTokenManager::builder(
        ClientConfig::from_issuer(provider.issuer.clone(), "fapi-dpop", "").private_key_jwt(key),
    )
    .per_session_dpop(tokenkeeper::dpop::DpopAlgorithm::ES256)
    .profile(Profile::Fapi2)
    .build()
    .unwrap();
    let oidc = Oidc::new(config(&provider.issuer, "fapi-dpop", &origin), users).unwrap();
    serve(listener, oidc);
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // The first hop: the browser is sent with client_id and request_uri only.
    let first = browser
        .get(format!("{origin}/auth/login?returnUrl=/me"))
        .send()
        .await
        .unwrap();
    let to: url::Url = first.headers()["location"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let names: Vec<String> = to.query_pairs().map(|(k, _)| k.into_owned()).collect();
    assert_eq!(names, ["client_id", "request_uri"]);
    let (at, page) = scripted_web_login(&browser, to.as_str(), &provider.issuer, "grace").await;
    assert_eq!(at.path(), "/me");
    assert_eq!(page, "grace DPoP grace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pr_03_axum_fapi2_with_mtls() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let dir = std::env::temp_dir().join(format!("tk-axum-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let redirect = format!("{origin}/auth/callback");
    let provider = Provider::start(&[
        ("MTLS", "1"),
        ("LOGIN_JWKS", r#"{"keys":[]}"#),
        ("LOGIN_REDIRECTS", redirect.as_str()),
        ("TLS_CERT", file("server.pem", certs::SERVER_CERT).as_str()),
        ("TLS_KEY", file("server.key", certs::SERVER_KEY).as_str()),
        ("TLS_CA", file("ca.pem", certs::CA).as_str()),
    ])
    .await;
    let identity = Arc::new(
        tokenkeeper::mtls::MtlsIdentity::from_pem_files(
            file("worker.pem", certs::WORKER_CERT),
            file("worker.key", certs::WORKER_KEY),
        )
        .unwrap()
        .add_root_certificates(certs::CA.as_bytes())
        .unwrap(),
    );
    let users = UserTokenManager::builder(
        ClientConfig::from_issuer(provider.issuer.clone(), "fapi-mtls", "")
            .mtls(identity.clone(), AuthMethod::TlsClientAuth),
    )
    .transport(Arc::new(tokenkeeper::ReqwestTransport::from_client(
        identity.http_client(),
        256 * 1024,
    )))
    .profile(Profile::Fapi2)
    .build()
    .unwrap();
    let mut config = config(&provider.issuer, "fapi-mtls", &origin);
    // No client secret to derive the login cookie's key from: one for this app.
    config.login_cookie_key = Some(Arc::new(
        tokenkeeper::Encryption::new("k1", &[7; 32]).unwrap(),
    ));
    let oidc = Oidc::new(config, users).unwrap();
    serve(listener, oidc);
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(certs::CA.as_bytes()).unwrap())
        .build()
        .unwrap();
    let (at, page) = scripted_web_login(
        &browser,
        &format!("{origin}/auth/login?returnUrl=/me"),
        &provider.issuer,
        "heidi",
    )
    .await;
    assert_eq!(at.path(), "/me");
    assert_eq!(
        page, "heidi Bearer heidi",
        "certificate-bound, userinfo over the certificate"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
