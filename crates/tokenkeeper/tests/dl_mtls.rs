//! Mutual TLS (RFC 8705): DL-07 (client authentication with certificates, the mTLS endpoint
//! aliases, certificates reloaded on change) and DL-08 (certificate-bound tokens presented over
//! the same certificate). The test server's mTLS listener checks every certificate.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use tokenkeeper::mtls::MtlsIdentity;
use tokenkeeper::{
    AuthMethod, ClientConfig, ClientCredentialsTokenManager, Error, TokenRequestParams,
};
use tokenkeeper_testing::mtls::{certs, pem_thumbprint};
use tokenkeeper_testing::{TestClient, TestServer};

const CC: &str = "client_credentials";

/// A directory with `client.pem` and `client.key` holding `cert` and `key`.
fn files(name: &str, cert: &str, key: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("tk-mtls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("client.pem"), dir.join("client.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    (cert_path, key_path)
}

fn identity(cert: &PathBuf, key: &PathBuf) -> Arc<MtlsIdentity> {
    Arc::new(
        MtlsIdentity::from_pem_files(cert, key)
            .unwrap()
            .add_root_certificates(certs::CA.as_bytes())
            .unwrap(),
    )
}

async fn mtls_server() -> TestServer {
    TestServer::builder()
        .mtls()
        .client(TestClient::new("worker", "").tls_client_auth(certs::WORKER_DNS))
        .client(TestClient::new("self", "").self_signed_tls_client_auth(certs::SELF_CERT))
        .start()
        .await
}

fn manager(
    server: &TestServer,
    client: &str,
    identity: Arc<MtlsIdentity>,
    method: AuthMethod,
) -> ClientCredentialsTokenManager {
    ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::from_issuer(server.issuer(), client, "").mtls(identity, method),
        )
        .build()
        .unwrap()
}

/// The server refuses this client's token request: `invalid_client`.
async fn refused(tokens: ClientCredentialsTokenManager) {
    let error = tokens
        .get_token("api", &TokenRequestParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::OAuth(e) if e.error == "invalid_client"),
        "{error:?}"
    );
}

fn cnf_x5t(server: &TestServer, token: &str) -> String {
    server.verify_access_token(token).unwrap()["cnf"]["x5t#S256"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn dl_07_tls_client_auth_over_the_mtls_aliases_with_reloaded_certificates() {
    let server = mtls_server().await;
    let (cert, key) = files("dl07", certs::WORKER_CERT, certs::WORKER_KEY);
    let worker = identity(&cert, &key);
    assert_eq!(&*worker.thumbprint(), pem_thumbprint(certs::WORKER_CERT));
    assert!(!format!("{worker:?}").contains("PRIVATE"));

    // tls_client_auth: discovery's mtls_endpoint_aliases lead to the mTLS listener (the plain
    // token endpoint sees no certificate and would refuse the client).
    let tokens = manager(&server, "worker", worker.clone(), AuthMethod::TlsClientAuth);
    let token = tokens
        .get_token("api", &TokenRequestParams::default())
        .await
        .unwrap();
    assert_eq!(
        cnf_x5t(&server, token.access_token().secret()),
        pem_thumbprint(certs::WORKER_CERT)
    );
    let sent = server.recorded_requests().pop().unwrap();
    assert_eq!(sent.form_values("client_id"), ["worker"]);
    assert!(
        sent.form_values("client_secret").is_empty() && !sent.headers.contains_key("authorization")
    );

    // Without the aliases (the plain endpoint by URL): no certificate there, refused.
    let direct = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::new(server.token_endpoint(), "worker", "")
                .mtls(worker.clone(), AuthMethod::TlsClientAuth),
        )
        .build()
        .unwrap();
    refused(direct).await;

    // self_signed_tls_client_auth with the registered certificate; the CA-issued one is not it.
    let (self_cert, self_key) = files("dl07-self", certs::SELF_CERT, certs::SELF_KEY);
    let own = identity(&self_cert, &self_key);
    let tokens_self = manager(
        &server,
        "self",
        own.clone(),
        AuthMethod::SelfSignedTlsClientAuth,
    );
    let token_self = tokens_self
        .get_token("api", &TokenRequestParams::default())
        .await
        .unwrap();
    assert_eq!(
        cnf_x5t(&server, token_self.access_token().secret()),
        pem_thumbprint(certs::SELF_CERT)
    );
    let wrong = manager(
        &server,
        "self",
        worker.clone(),
        AuthMethod::SelfSignedTlsClientAuth,
    );
    refused(wrong).await;
    // A certificate that does not name the client is refused for tls_client_auth.
    let misnamed = manager(&server, "worker", own.clone(), AuthMethod::TlsClientAuth);
    refused(misnamed).await;

    // Rotation: the files change; the next token request goes over the new certificate.
    std::fs::write(&cert, certs::WORKER2_CERT).unwrap();
    std::fs::write(&key, certs::WORKER2_KEY).unwrap();
    assert!(worker.reload().unwrap());
    assert_eq!(&*worker.thumbprint(), pem_thumbprint(certs::WORKER2_CERT));
    let renewed = tokens
        .get_token("api", &TokenRequestParams::default().force_renewal(true))
        .await
        .unwrap();
    assert_eq!(
        cnf_x5t(&server, renewed.access_token().secret()),
        pem_thumbprint(certs::WORKER2_CERT)
    );
    // A half-written change (a key that does not match) keeps the working certificate.
    std::fs::write(&key, certs::SELF_KEY).unwrap();
    assert!(!worker.reload().unwrap());
    assert_eq!(&*worker.thumbprint(), pem_thumbprint(certs::WORKER2_CERT));
    assert_eq!(server.token_requests(CC), 6, "3 issued, 3 refused");

    // Configuration errors name the field: tls_client_auth without a certificate, a missing
    // file, a key that is not the certificate's.
    let error = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::new(server.token_endpoint(), "worker", "")
                .auth_method(AuthMethod::TlsClientAuth),
        )
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("auth_method"), "{error}");
    let error = MtlsIdentity::from_pem_files(cert.with_extension("missing"), &key).unwrap_err();
    assert!(error.to_string().contains("mtls"), "{error}");
    let (bad_cert, bad_key) = files("dl07-bad", certs::WORKER_CERT, certs::SELF_KEY);
    let error = MtlsIdentity::from_pem_files(&bad_cert, &bad_key).unwrap_err();
    assert!(!error.to_string().contains("PRIVATE KEY"), "{error}");
}

#[tokio::test]
async fn dl_08_certificate_bound_tokens_are_presented_over_the_same_certificate() {
    let server = mtls_server().await;
    let (cert, key) = files("dl08", certs::WORKER_CERT, certs::WORKER_KEY);
    let worker = identity(&cert, &key);
    let tokens = manager(&server, "worker", worker.clone(), AuthMethod::TlsClientAuth);
    // The thumbprint is in the cache key: tokens bound to one certificate never serve another.
    let key_text = tokens
        .cache_key("api", &TokenRequestParams::default())
        .unwrap();
    assert!(
        key_text.as_str().contains(&*worker.thumbprint()),
        "{key_text}"
    );

    let api = format!("{}/mtls-api/items", server.mtls_base().unwrap());
    let http = reqwest_middleware::ClientBuilder::new(worker.http_client())
        .with(tokens.middleware("api").unwrap())
        .build();
    let response = http.get(&api).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), r#"{"sub":"worker"}"#);
    assert_eq!(server.mtls_api_calls(), (1, 0));

    // The same token over another certificate is refused by the API.
    let (other_cert, other_key) = files("dl08-other", certs::SELF_CERT, certs::SELF_KEY);
    let other = identity(&other_cert, &other_key);
    let token = tokens
        .get_token("api", &TokenRequestParams::default())
        .await
        .unwrap();
    let response = other
        .http_client()
        .get(&api)
        .bearer_auth(token.access_token().secret())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(server.mtls_api_calls(), (2, 1));
    assert_eq!(server.token_requests(CC), 1);
}

/// DL-07 for user tokens: a user token manager whose client authenticates with its certificate
/// refreshes over the mTLS token endpoint alias (the refreshed token bound to the certificate)
/// and revokes at logout over the revocation alias.
#[tokio::test]
async fn dl_07_user_tokens_refresh_and_revoke_over_mtls() {
    use tokenkeeper::user::{SessionKey, UserTokenManager, UserTokenParams, UserTokens};
    let server = mtls_server().await;
    let (cert, key) = files("dl07-users", certs::WORKER_CERT, certs::WORKER_KEY);
    let worker = identity(&cert, &key);
    let users = UserTokenManager::builder(
        ClientConfig::from_issuer(server.issuer(), "worker", "")
            .mtls(worker.clone(), AuthMethod::TlsClientAuth),
    )
    .build()
    .unwrap();
    let session = SessionKey::from_sub_sid("alice", "s-1");
    let refresh = server.issue_refresh_token("worker", "alice", Some("openid api"));
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
    let token = users
        .get_access_token(&session, &UserTokenParams::default())
        .await
        .unwrap();
    assert_eq!(
        cnf_x5t(&server, token.access_token().secret()),
        pem_thumbprint(certs::WORKER_CERT)
    );
    assert_eq!(server.token_requests("refresh_token"), 1);
    users.logout(&session).await.unwrap();
    assert_eq!(
        server.revocations(),
        1,
        "revoked over the alias, authenticated by the certificate"
    );
}
