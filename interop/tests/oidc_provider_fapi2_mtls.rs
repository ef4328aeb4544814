//! PR-03 and PR-07: FAPI 2.0 with mTLS against node oidc-provider — the provider serves https
//! and asks for client certificates (the test CA's); the client authenticates with
//! `tls_client_auth`, its tokens are bound to its certificate (`cnf.x5t#S256`), its requests
//! are pushed, and its profile refuses what contradicts FAPI 2.0. The negative cases: a wrong
//! `iss`, a weak `acr`, and a client without its certificate.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{jwt_claims, scripted_login_trusting, Provider};
use tokenkeeper::mtls::MtlsIdentity;
use tokenkeeper::protocol::profile::Profile;
use tokenkeeper::protocol::step_up::AuthenticationRequirements;
use tokenkeeper::user::{LoginOptions, UserTokenManager};
use tokenkeeper::{AuthMethod, ClientConfig, Error, PrivateKeyJwt, ReqwestTransport};
use tokenkeeper_testing::mtls::certs;

const REDIRECT: &str = "http://127.0.0.1:1/callback";

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pr_07_fapi2_mtls_profile_and_its_refusals() {
    let dir = std::env::temp_dir().join(format!("tk-fapi-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = PrivateKeyJwt::new(
        tokenkeeper::dpop::DpopKey::generate(tokenkeeper::dpop::DpopAlgorithm::ES256).unwrap(),
    );
    let jwks = serde_json::json!({ "keys": [key.public_jwk()] }).to_string();
    let provider = Provider::start(&[
        ("MTLS", "1"),
        ("LOGIN_JWKS", jwks.as_str()),
        (
            "TLS_CERT",
            write(&dir, "server.pem", certs::SERVER_CERT).as_str(),
        ),
        (
            "TLS_KEY",
            write(&dir, "server.key", certs::SERVER_KEY).as_str(),
        ),
        ("TLS_CA", write(&dir, "ca.pem", certs::CA).as_str()),
    ])
    .await;
    assert!(provider.issuer.starts_with("https://localhost:"));
    let identity = Arc::new(
        MtlsIdentity::from_pem_files(
            write(&dir, "worker.pem", certs::WORKER_CERT),
            write(&dir, "worker.key", certs::WORKER_KEY),
        )
        .unwrap()
        .add_root_certificates(certs::CA.as_bytes())
        .unwrap(),
    );
    // Discovery and the JWKS over a client that trusts the test CA (the token, PAR and
    // userinfo requests go over the certificate).
    let trusting = Arc::new(ReqwestTransport::from_client(
        identity.http_client(),
        256 * 1024,
    ));
    let users = UserTokenManager::builder(
        ClientConfig::from_issuer(provider.issuer.clone(), "fapi-mtls", "")
            .mtls(identity.clone(), AuthMethod::TlsClientAuth),
    )
    .transport(trusting.clone())
    .profile(Profile::Fapi2)
    .build()
    .unwrap();

    let login = |users: UserTokenManager,
                 requirements: AuthenticationRequirements,
                 tamper: bool| async move {
        let started = users
            .start_login(
                &LoginOptions::new(REDIRECT)
                    .scope("openid offline_access")
                    .prompt("consent")
                    .requirements(requirements),
            )
            .await?;
        assert!(started.pushed, "FAPI 2.0 pushes");
        let callback =
            scripted_login_trusting(&started.url, REDIRECT, "alice", Some(certs::CA)).await;
        let mut query: HashMap<String, String> = callback.query_pairs().into_owned().collect();
        if tamper {
            query.insert("iss".into(), "https://localhost:1".into());
        }
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query.iter())
            .finish();
        users.finish_login(&started, &query).await
    };

    let done = login(users.clone(), AuthenticationRequirements::new(), false)
        .await
        .unwrap();
    let token = users
        .get_access_token(&done.session, &Default::default())
        .await
        .unwrap();
    assert!(!token.is_dpop());
    // Bound to the certificate, when the token says (a JWT); the userinfo call goes over it.
    let secret = token.access_token().secret();
    if secret.split('.').count() == 3 {
        assert_eq!(
            jwt_claims(secret)["cnf"]["x5t#S256"],
            identity.thumbprint().as_ref()
        );
    }
    let claims = users.userinfo(&done.session, &done.sub).await.unwrap();
    assert_eq!(claims["sub"], "alice");
    // The token is bound: without the certificate, the provider's userinfo refuses it.
    let no_cert = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(certs::CA.as_bytes()).unwrap())
        .build()
        .unwrap();
    let refused = no_cert
        .get(format!("{}/me", provider.issuer))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        401,
        "a certificate-bound token without its certificate"
    );

    // Negative: a wrong iss; an acr weaker than asked.
    let e = login(users.clone(), AuthenticationRequirements::new(), true)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AuthorizationResponse(_)), "{e}");
    let hwk = AuthenticationRequirements::new()
        .with_acr_values("urn:hwk")
        .unwrap();
    let e = login(users.clone(), hwk, false).await.unwrap_err();
    assert!(matches!(e, Error::InsufficientAuthentication(_)), "{e}");

    // Negative: the same client without its certificate is not this client.
    let bare = UserTokenManager::builder(
        ClientConfig::from_issuer(provider.issuer.clone(), "fapi-mtls", "")
            .private_key_jwt(Arc::new(key)),
    )
    .transport(trusting)
    .per_session_dpop(tokenkeeper::dpop::DpopAlgorithm::ES256)
    .profile(Profile::Fapi2)
    .build()
    .unwrap();
    let e = bare
        .start_login(&LoginOptions::new(REDIRECT))
        .await
        .unwrap_err();
    assert_eq!(e.oauth_error(), Some("invalid_client"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// PR-03: a FAPI 2.0 BFF from its configuration file with a client certificate
/// (`tls_client_auth`, no secret, no DPoP) logs a user in at the mTLS provider, and its API
/// calls carry the certificate-bound token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pr_03_bff_fapi2_with_mtls() {
    let dir = std::env::temp_dir().join(format!("tk-bff-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bound = tokenkeeper_proxy::server::Bound::bind("127.0.0.1:0".parse().unwrap(), 1).unwrap();
    let origin = format!("http://{}", bound.local_addr());
    let redirect = format!("{origin}/bff/callback");
    let provider = Provider::start(&[
        ("MTLS", "1"),
        ("LOGIN_JWKS", r#"{"keys":[]}"#),
        ("LOGIN_REDIRECTS", redirect.as_str()),
        (
            "TLS_CERT",
            write(&dir, "server.pem", certs::SERVER_CERT).as_str(),
        ),
        (
            "TLS_KEY",
            write(&dir, "server.key", certs::SERVER_KEY).as_str(),
        ),
        ("TLS_CA", write(&dir, "ca.pem", certs::CA).as_str()),
    ])
    .await;
    // The API: answers with the token it got.
    let api = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    };
    let text = format!(
        r#"
[bff]
listen = "{listen}"
public_url = "{origin}"
insecure_cookies = true
workers = 1

[oidc]
issuer = "{issuer}"
client_id = "fapi-mtls"
profile = "fapi2"
scope = "openid offline_access"
tls_client_cert_file = {cert:?}
tls_client_key_file = {key:?}
tls_ca_file = {ca:?}

[[routes]]
path = "/api"
upstream = "{api}"
"#,
        listen = bound.local_addr(),
        issuer = provider.issuer,
        cert = write(&dir, "worker.pem", certs::WORKER_CERT),
        key = write(&dir, "worker.key", certs::WORKER_KEY),
        ca = write(&dir, "ca.pem", certs::CA),
    );
    let config = tokenkeeper_bff::config::BffConfig::parse(&text).unwrap();
    let validated = config.validate(&text, &|_| None).unwrap();
    let host = tokenkeeper_bff::host::build(&validated).unwrap();
    let options = tokenkeeper_proxy::server::ServerOptions {
        workers: 1,
        ..Default::default()
    };
    let _server = bound
        .serve(Arc::new(host.handler().clone()), &options)
        .unwrap();
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(certs::CA.as_bytes()).unwrap())
        .build()
        .unwrap();
    let (at, _) = common::scripted_web_login(
        &browser,
        &format!("{origin}/bff/login?prompt=consent&returnUrl=/"),
        &provider.issuer,
        "judy",
    )
    .await;
    assert_eq!(
        at.path(),
        "/bff/callback",
        "the BFF's own page sends the browser on"
    );
    let user: serde_json::Value = browser
        .get(format!("{origin}/bff/user"))
        .header("x-csrf", "1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        user.as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "sub" && c["value"] == "judy"),
        "{user}"
    );
    let sent = browser
        .get(format!("{origin}/api/x"))
        .header("x-csrf", "1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = sent.strip_prefix("Bearer ").unwrap();
    // Bound to the certificate: the provider's userinfo refuses it without the certificate.
    let no_cert = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(certs::CA.as_bytes()).unwrap())
        .build()
        .unwrap();
    let refused = no_cert
        .get(format!("{}/me", provider.issuer))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let _ = std::fs::remove_dir_all(&dir);
}
