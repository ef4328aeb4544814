//! Login protocols for regulated users, in the library (PR-01 PAR, PR-02 JAR, PR-03 the FAPI 2.0
//! profile, PR-04 step-up): `UserTokenManager::start_login` against the test server, which
//! checks what it receives (client authentication at the PAR endpoint, DPoP proofs, request
//! object signatures) and issues `acr` and `auth_time` as a provider would.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokenkeeper::dpop::{DpopAlgorithm, DpopKey};
use tokenkeeper::protocol::profile::{Profile, PushedAuthorization};
use tokenkeeper::protocol::step_up::AuthenticationRequirements;
use tokenkeeper::user::{Login, LoginOptions, StartedLogin, UserTokenManager};
use tokenkeeper::{AuthMethod, ClientConfig, Error, PrivateKeyJwt};
use tokenkeeper_testing::{TestClient, TestServer};

const REDIRECT: &str = "http://127.0.0.1:1/cb";

fn signer() -> PrivateKeyJwt {
    PrivateKeyJwt::new(DpopKey::generate(DpopAlgorithm::ES256).unwrap())
}

async fn server(client: TestClient) -> TestServer {
    let server = TestServer::builder()
        .client(client.redirect_uri(REDIRECT))
        .start()
        .await;
    server.set_login(Some("alice"));
    server
}

/// The browser at the authorization endpoint: the callback's query, or the refusal's status
/// and text.
async fn browse(url: &url::Url) -> Result<HashMap<String, String>, (u16, String)> {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = browser.get(url.clone()).send().await.unwrap();
    if !response.status().is_redirection() {
        return Err((response.status().as_u16(), response.text().await.unwrap()));
    }
    let location: url::Url = response.headers()["location"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(location.as_str().starts_with(REDIRECT));
    Ok(location.query_pairs().into_owned().collect())
}

/// The login completed from its callback.
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

#[tokio::test]
async fn pr_01_par_when_required_with_client_auth_and_dpop_browser_sees_only_reference() {
    let server = server(TestClient::new("web", "web-secret").require_pushed_authorization()).await;
    let users = UserTokenManager::builder(ClientConfig::from_issuer(
        server.issuer(),
        "web",
        "web-secret",
    ))
    .per_session_dpop(DpopAlgorithm::ES256)
    .build()
    .unwrap();
    // The client (not the server's metadata) requires it: an unpushed request is refused...
    let plain = users
        .start_login(&LoginOptions::new(REDIRECT))
        .await
        .unwrap();
    assert!(!plain.pushed);
    let (status, why) = browse(&plain.url).await.unwrap_err();
    assert_eq!(status, 400, "{why}");
    // ...so it is configured; and a provider that says it requires PAR gets it unasked.
    server.set_require_pushed_authorization(true);
    for users in [
        UserTokenManager::builder(ClientConfig::from_issuer(
            server.issuer(),
            "web",
            "web-secret",
        ))
        .per_session_dpop(DpopAlgorithm::ES256)
        .build()
        .unwrap(),
        UserTokenManager::builder(ClientConfig::from_issuer(
            server.issuer(),
            "web",
            "web-secret",
        ))
        .per_session_dpop(DpopAlgorithm::ES256)
        .pushed_authorization(PushedAuthorization::Always)
        .build()
        .unwrap(),
    ] {
        let started = users
            .start_login(&LoginOptions::new(REDIRECT))
            .await
            .unwrap();
        assert!(started.pushed);
        let query: Vec<(String, String)> = started.url.query_pairs().into_owned().collect();
        let names: Vec<&str> = query.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            ["client_id", "request_uri"],
            "the browser sees only the reference"
        );
        assert!(
            !started.url.as_str().contains(&started.state)
                && !started.url.as_str().contains("code_challenge"),
            "no state, no PKCE challenge in the URL"
        );
        let callback = browse(&started.url).await.unwrap();
        let (how, params) = server.last_authorization_request().unwrap();
        assert_eq!(how, "pushed");
        assert_eq!(
            params.get("dpop_jkt").map(String::as_str),
            started.dpop.as_ref().map(|d| d.jkt()),
            "the PAR request's proof and dpop_jkt bind the code to the login's key"
        );
        assert_eq!(
            params.get("code_challenge_method").map(String::as_str),
            Some("S256")
        );
        let login = complete(&users, &started, &callback).await.unwrap();
        assert_eq!(login.sub, "alice");
        let token = users
            .get_access_token(&login.session, &Default::default())
            .await
            .unwrap();
        assert_eq!(*token.token_type(), tokenkeeper::TokenType::DPoP);
    }
    assert_eq!(server.pushed_requests(), 2);
    assert!(
        server.dpop_proofs_accepted() >= 4,
        "PAR and token requests carried proofs"
    );
}

#[tokio::test]
async fn pr_01_par_request_uri_is_one_use_and_par_errors_are_typed() {
    let key = signer();
    let server = server(TestClient::new("web", "").private_key_jwt(key.public_jwk())).await;
    let users = UserTokenManager::builder(
        ClientConfig::from_issuer(server.issuer(), "web", "").private_key_jwt(Arc::new(key)),
    )
    .pushed_authorization(PushedAuthorization::Always)
    .build()
    .unwrap();
    let started = users
        .start_login(&LoginOptions::new(REDIRECT))
        .await
        .unwrap();
    assert!(
        server.client_assertions() >= 1,
        "the push was authenticated with an assertion"
    );
    let callback = browse(&started.url).await.unwrap();
    complete(&users, &started, &callback).await.unwrap();
    let (status, _) = browse(&started.url).await.unwrap_err();
    assert_eq!(status, 400, "a request_uri is taken once");
    // A redirect URI the client did not register: the provider's refusal, typed.
    let refused = users
        .start_login(&LoginOptions::new("http://127.0.0.1:1/elsewhere"))
        .await
        .unwrap_err();
    assert_eq!(refused.oauth_error(), Some("invalid_request"), "{refused}");
}

#[tokio::test]
async fn pr_02_signed_request_objects_pushed_or_in_the_url() {
    let key = signer();
    let jwk = key.public_jwk();
    let server = server(
        TestClient::new("web", "")
            .private_key_jwt(jwk)
            .require_signed_request_object(),
    )
    .await;
    let key = Arc::new(key);
    let unsigned = UserTokenManager::builder(
        ClientConfig::from_issuer(server.issuer(), "web", "").private_key_jwt(key.clone()),
    )
    .build()
    .unwrap();
    let started = unsigned
        .start_login(&LoginOptions::new(REDIRECT))
        .await
        .unwrap();
    let (status, why) = browse(&started.url).await.unwrap_err();
    assert_eq!(
        status, 400,
        "an unsigned request is refused when one is required: {why}"
    );
    for pushed in [false, true] {
        let mut builder = UserTokenManager::builder(
            ClientConfig::from_issuer(server.issuer(), "web", "").private_key_jwt(key.clone()),
        )
        .signed_request_objects(true);
        if pushed {
            builder = builder.pushed_authorization(PushedAuthorization::Always);
        }
        let users = builder.build().unwrap();
        let started = users
            .start_login(&LoginOptions::new(REDIRECT).requirements(
                AuthenticationRequirements::new().with_max_age(Duration::from_secs(600)),
            ))
            .await
            .unwrap();
        if !pushed {
            let query: HashMap<String, String> = started.url.query_pairs().into_owned().collect();
            assert!(query.contains_key("request"));
            assert!(!query.contains_key("state"), "state travels signed only");
        }
        let callback = browse(&started.url).await.unwrap();
        let (how, params) = server.last_authorization_request().unwrap();
        assert_eq!(how, if pushed { "pushed+signed" } else { "signed" });
        assert_eq!(params.get("max_age").map(String::as_str), Some("600"));
        assert_eq!(params.get("state"), Some(&started.state));
        complete(&users, &started, &callback).await.unwrap();
    }
    assert_eq!(server.request_objects(), 2);
    // A client whose signer cannot sign request objects is refused when built.
    let e = UserTokenManager::builder(ClientConfig::from_issuer(server.issuer(), "web", "s"))
        .signed_request_objects(true)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("request_object"), "{e}");
}

#[tokio::test]
async fn pr_03_fapi2_profile_pushes_binds_and_checks_iss() {
    let key = signer();
    let server = server(
        TestClient::new("bank", "")
            .private_key_jwt(key.public_jwk())
            .require_dpop(),
    )
    .await;
    let users = UserTokenManager::builder(
        ClientConfig::from_issuer(server.issuer(), "bank", "").private_key_jwt(Arc::new(key)),
    )
    .per_session_dpop(DpopAlgorithm::ES256)
    .profile(Profile::Fapi2)
    .build()
    .unwrap();
    assert_eq!(users.profile(), Profile::Fapi2);
    let started = users
        .start_login(&LoginOptions::new(REDIRECT))
        .await
        .unwrap();
    assert!(started.pushed, "FAPI 2.0 pushes every request");
    let callback = browse(&started.url).await.unwrap();
    // The callback's iss is required under FAPI 2.0, whatever the metadata says.
    let mut without_iss = callback.clone();
    without_iss.remove("iss");
    server.set_advertised_issuer(None);
    let e = users.check_callback_issuer(None).await.unwrap_err();
    assert!(matches!(e, Error::AuthorizationResponse(_)), "{e}");
    let e = users
        .check_callback_issuer(Some("https://evil.example"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AuthorizationResponse(_)), "{e}");
    let login = complete(&users, &started, &callback).await.unwrap();
    // Client assertions named the issuer (FAPI 2.0), at the PAR and token endpoints.
    let last = server.last_token_request().unwrap();
    let assertion = last.form_value("client_assertion").unwrap();
    let claims: serde_json::Value = {
        use base64::Engine as _;
        let payload = assertion.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(claims["aud"], server.issuer());
    let token = users
        .get_access_token(&login.session, &Default::default())
        .await
        .unwrap();
    assert_eq!(*token.token_type(), tokenkeeper::TokenType::DPoP);
    // No Bearer fallback: a provider that ignores the proof fails the login.
    server.set_dpop_ignored(true);
    let started = users
        .start_login(&LoginOptions::new(REDIRECT))
        .await
        .unwrap();
    let callback = browse(&started.url).await.unwrap();
    let e = complete(&users, &started, &callback).await.unwrap_err();
    assert!(matches!(e, Error::DpopRequired { .. }), "{e}");
}

#[test]
fn pr_03_fapi2_refuses_contradicting_settings_naming_the_key() {
    let issuer = "https://idp.example.com";
    let pkjwt = || Arc::new(signer());
    let build = |client: ClientConfig,
                 per_session: Option<DpopAlgorithm>,
                 pushed: Option<PushedAuthorization>| {
        let mut builder = UserTokenManager::builder(client).profile(Profile::Fapi2);
        if let Some(alg) = per_session {
            builder = builder.per_session_dpop(alg);
        }
        if let Some(pushed) = pushed {
            builder = builder.pushed_authorization(pushed);
        }
        builder.build().map(|_| ()).map_err(|e| e.to_string())
    };
    assert!(build(
        ClientConfig::from_issuer(issuer, "c", "").private_key_jwt(pkjwt()),
        Some(DpopAlgorithm::ES256),
        None
    )
    .is_ok());
    assert!(build(
        ClientConfig::from_issuer(issuer, "c", "").private_key_jwt(pkjwt()),
        Some(DpopAlgorithm::EdDSA),
        Some(PushedAuthorization::Always)
    )
    .is_ok());
    let cases = [
        (
            build(
                ClientConfig::from_issuer(issuer, "c", "secret"),
                Some(DpopAlgorithm::ES256),
                None,
            ),
            "auth_method",
        ),
        (
            build(
                ClientConfig::from_issuer(issuer, "c", "secret")
                    .auth_method(AuthMethod::ClientSecretJwt),
                Some(DpopAlgorithm::ES256),
                None,
            ),
            "auth_method",
        ),
        (
            build(
                ClientConfig::from_issuer(issuer, "c", "").private_key_jwt(pkjwt()),
                None,
                None,
            ),
            "dpop",
        ),
        (
            build(
                ClientConfig::from_issuer(issuer, "c", "").private_key_jwt(pkjwt()),
                Some(DpopAlgorithm::RS256),
                None,
            ),
            "dpop",
        ),
        (
            build(
                ClientConfig::from_issuer(issuer, "c", "").private_key_jwt(Arc::new(
                    PrivateKeyJwt::new(DpopKey::generate(DpopAlgorithm::RS256).unwrap()),
                )),
                Some(DpopAlgorithm::ES256),
                None,
            ),
            "private_key_jwt",
        ),
        (
            build(
                ClientConfig::from_issuer(issuer, "c", "").private_key_jwt(pkjwt()),
                Some(DpopAlgorithm::ES256),
                Some(PushedAuthorization::WhenRequired),
            ),
            "pushed_authorization",
        ),
        (
            build(
                ClientConfig::new("https://idp.example.com/token", "c", "")
                    .private_key_jwt(pkjwt()),
                Some(DpopAlgorithm::ES256),
                None,
            ),
            "issuer",
        ),
    ];
    for (result, key) in cases {
        let e = result.expect_err(key);
        assert!(e.contains(key), "{key}: {e}");
    }
}

#[tokio::test]
async fn pr_04_step_up_acr_and_max_age_are_checked_against_the_id_token() {
    let server = server(TestClient::new("web", "web-secret")).await;
    server.set_login_acr(Some("urn:pwd"), Some("urn:mfa"));
    let users = UserTokenManager::builder(ClientConfig::from_issuer(
        server.issuer(),
        "web",
        "web-secret",
    ))
    .build()
    .unwrap();
    let login_with = |requirements: AuthenticationRequirements| {
        let users = users.clone();
        async move {
            let started = users
                .start_login(&LoginOptions::new(REDIRECT).requirements(requirements))
                .await
                .unwrap();
            let callback = browse(&started.url).await.unwrap();
            complete(&users, &started, &callback).await
        }
    };
    // A first login: acr urn:pwd.
    let login = login_with(AuthenticationRequirements::new()).await.unwrap();
    assert_eq!(login.claims.all["acr"], "urn:pwd");
    // A step-up: the provider authenticates again, more strongly.
    let mfa = AuthenticationRequirements::new()
        .with_acr_values("urn:mfa")
        .unwrap();
    let login = login_with(mfa.clone()).await.unwrap();
    assert_eq!(login.claims.all["acr"], "urn:mfa");
    // A provider that answers with a weaker acr than asked: refused (and its tokens revoked).
    let revoked = server.revocations();
    server.set_login_acr(Some("urn:pwd"), None);
    let e = login_with(mfa).await.unwrap_err();
    assert!(matches!(e, Error::InsufficientAuthentication(_)), "{e}");
    assert!(
        server.revocations() > revoked,
        "the refused login's tokens were revoked"
    );
    // max_age: an old authentication is refreshed by the provider...
    server.set_authenticated_ago(Duration::from_secs(3600));
    let recent = AuthenticationRequirements::new().with_max_age(Duration::from_secs(60));
    login_with(recent.clone()).await.unwrap();
    // ...and one whose auth_time is too old (a provider that ignored max_age) is refused.
    let mut old = serde_json::Map::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    old.insert("auth_time".into(), (now - 3600).into());
    server.set_id_token_claims(old);
    let e = login_with(recent).await.unwrap_err();
    assert!(matches!(e, Error::InsufficientAuthentication(_)), "{e}");
}

#[tokio::test]
async fn pr_06_userinfo_with_the_right_token_type_and_sub_must_match() {
    let server = server(TestClient::new("web", "web-secret")).await;
    for dpop in [false, true] {
        let mut builder = UserTokenManager::builder(ClientConfig::from_issuer(
            server.issuer(),
            "web",
            "web-secret",
        ));
        if dpop {
            builder = builder.per_session_dpop(DpopAlgorithm::ES256);
        }
        let users = builder.build().unwrap();
        let started = users
            .start_login(&LoginOptions::new(REDIRECT))
            .await
            .unwrap();
        let callback = browse(&started.url).await.unwrap();
        let login = complete(&users, &started, &callback).await.unwrap();
        server.set_userinfo_claims(serde_json::Map::new());
        let before = server.userinfo_requests();
        let claims = users.userinfo(&login.session, &login.sub).await.unwrap();
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["email"], "alice@example.com", "{claims:?}");
        assert_eq!(
            server.userinfo_requests(),
            before + 1,
            "one request (dpop: {dpop})"
        );
        // An answer about someone else is refused.
        let mut other = serde_json::Map::new();
        other.insert("sub".into(), "mallory".into());
        server.set_userinfo_claims(other);
        let e = users
            .userinfo(&login.session, &login.sub)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("someone else"), "{e}");
        // The caller's sub must be the session's: asked about another user, it is refused too.
        server.set_userinfo_claims(serde_json::Map::new());
        let e = users.userinfo(&login.session, "bob").await.unwrap_err();
        assert!(matches!(e, Error::InvalidResponse(_)), "{e}");
    }
    assert!(server.dpop_proofs_accepted() >= 1);
}

/// `finish_login` takes a callback's query as hostile: a wrong or missing `state`, repeated
/// parameters, a wrong `iss`, a provider error with control characters, 2 MiB of query — each
/// refused with a typed error, nothing exchanged; the real callback then still completes.
#[tokio::test]
async fn pr_03_finish_login_refuses_forged_callbacks() {
    let server = server(TestClient::new("web", "web-secret")).await;
    let users = UserTokenManager::builder(ClientConfig::from_issuer(
        server.issuer(),
        "web",
        "web-secret",
    ))
    .build()
    .unwrap();
    let started = users
        .start_login(&LoginOptions::new(REDIRECT))
        .await
        .unwrap();
    let callback = browse(&started.url).await.unwrap();
    let (state, code, iss) = (&callback["state"], &callback["code"], &callback["iss"]);
    let enc = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    let before = server.token_requests("authorization_code");
    for forged in [
        format!("code={}&iss={}", enc(code), enc(iss)),
        format!("code={}&state=other&iss={}", enc(code), enc(iss)),
        format!(
            "code={}&state={}&state={}&iss={}",
            enc(code),
            enc(state),
            enc(state),
            enc(iss)
        ),
        format!(
            "code={}&state={}&iss=https%3A%2F%2Fevil.example",
            enc(code),
            enc(state)
        ),
        format!("code={}&state={}", enc(code), enc(state)),
        format!(
            "error=access_denied%07%1b[31m&state={}&iss={}",
            enc(state),
            enc(iss)
        ),
        format!("state={}&iss={}", enc(state), enc(iss)),
        format!(
            "code={}&state={}&iss={}&pad={}",
            enc(code),
            enc(state),
            enc(iss),
            "a".repeat(2 << 20)
        )
        .replace("&state=", "&state=x"),
    ] {
        let e = users.finish_login(&started, &forged).await.unwrap_err();
        assert!(matches!(e, Error::AuthorizationResponse(_)), "{e}");
        assert!(
            !e.to_string().contains('\u{7}') && !e.to_string().contains('\u{1b}'),
            "{e:?}"
        );
    }
    assert_eq!(
        server.token_requests("authorization_code"),
        before,
        "nothing exchanged"
    );
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(callback.iter())
        .finish();
    users.finish_login(&started, &query).await.unwrap();
}
