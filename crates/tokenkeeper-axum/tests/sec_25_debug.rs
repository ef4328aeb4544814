//! SEC-25: no secret, token, code or claim appears in any `Debug` output — login results,
//! callback queries, the session's user, configuration sections and the validated
//! configuration, BFF sessions, logout tokens, proofs' inputs. Each value is formatted with
//! `{:?}` and the output searched for what it holds.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

/// Values that must never show.
fn assert_clean(what: &str, debug: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !debug.contains(secret),
            "{what} shows {secret:?} in its Debug output: {debug}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_25_secrets_and_claims_never_in_debug() {
    let app = app(true).await;
    let mut claims = serde_json::Map::new();
    claims.insert("email".into(), "alice.private@example.com".into());
    claims.insert("sid".into(), "sso-secret-sid".into());
    app.idp.set_id_token_claims(claims);
    let personal = ["alice", "alice.private@example.com", "sso-secret-sid"];

    // The session's user, as a handler sees it.
    let browser = browser(true);
    let me = get_text(&browser, format!("{}/auth/login?returnUrl=/me", app.url)).await;
    assert_eq!(me, "alice");
    let user = get_text(&browser, format!("{}/debug-user", app.url)).await;
    assert!(user.starts_with("CurrentUser"), "{user}");
    assert_clean("CurrentUser", &user, &personal);

    // A login completed by hand: the callback's query, the login, its claims.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = plain
        .get(format!("{}/auth/login", app.url))
        .send()
        .await
        .unwrap();
    let mut headers = axum::http::HeaderMap::new();
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("; ");
    headers.insert("cookie", cookie.parse().unwrap());
    let to_idp = login.headers()["location"].to_str().unwrap().to_owned();
    let idp = plain.get(to_idp).send().await.unwrap();
    let callback = url::Url::parse(idp.headers()["location"].to_str().unwrap()).unwrap();
    let pairs: std::collections::HashMap<String, String> =
        callback.query_pairs().into_owned().collect();
    let (code, state) = (pairs["code"].clone(), pairs["state"].clone());
    let query = tokenkeeper_axum::CallbackQuery {
        code: Some(code.clone()),
        state: Some(state.clone()),
        iss: pairs.get("iss").cloned(),
        ..Default::default()
    };
    assert_clean("CallbackQuery", &format!("{query:?}"), &[&code, &state]);
    let done = app.oidc.finish_login(&headers, query).await;
    let completed = done.result.as_ref().unwrap();
    let id_token = completed.login.id_token.secret().to_owned();
    let mut secrets: Vec<&str> = personal.to_vec();
    secrets.extend([code.as_str(), state.as_str(), &id_token[..30]]);
    assert_clean("Callback", &format!("{done:?}"), &secrets);
    assert_clean("CompletedLogin", &format!("{completed:?}"), &secrets);
    assert_clean("Login", &format!("{:?}", completed.login), &secrets);
    assert_clean(
        "IdTokenClaims",
        &format!("{:?}", completed.login.claims),
        &secrets,
    );

    // What a login request and a proof are made of.
    let dpop = tokenkeeper::user::UserTokenManager::builder(tokenkeeper::ClientConfig::new(
        app.idp.token_endpoint(),
        "web",
        "web-secret",
    ))
    .per_session_dpop(tokenkeeper::dpop::DpopAlgorithm::ES256)
    .build()
    .unwrap()
    .new_login_dpop()
    .unwrap()
    .unwrap();
    let request = tokenkeeper::user::LoginRequest {
        code: "code-value-123",
        code_verifier: "verifier-value-456",
        redirect_uri: "https://app.example.com/cb",
        nonce: "nonce-value-789",
        resource: None,
        dpop: Some(&dpop),
        requirements: None,
    };
    let key_bytes = String::from_utf8(dpop.to_bytes().unwrap()).unwrap();
    let private = key_bytes.split("\"key\":\"").nth(1).unwrap()[..24].to_owned();
    assert_clean(
        "LoginRequest",
        &format!("{request:?}"),
        &[
            "code-value-123",
            "verifier-value-456",
            "nonce-value-789",
            &private,
        ],
    );
    let authorization = tokenkeeper::AuthorizationRequestBuilder::new(
        "https://idp.example.com/authorize".parse().unwrap(),
        "web",
        "https://app.example.com/cb",
    )
    .build()
    .unwrap();
    assert_clean(
        "AuthorizationRequest",
        &format!("{authorization:?}"),
        &[
            &authorization.state,
            &authorization.nonce,
            authorization.pkce.verifier(),
        ],
    );
    let url: url::Url = "https://api.example.com/x".parse().unwrap();
    let proof = tokenkeeper::dpop::ProofRequest {
        method: "GET",
        url: &url,
        access_token: Some("access-token-value-42"),
        nonce: Some("server-nonce-77"),
    };
    assert_clean(
        "ProofRequest",
        &format!("{proof:?}"),
        &["access-token-value-42", "server-nonce-77"],
    );

    // A back-channel logout token, validated.
    let validator = app.oidc.users().id_token_validator().await.unwrap();
    let token = app
        .idp
        .logout_token("web", Some("alice"), Some("sso-secret-sid"));
    let logout = validator
        .validate_logout_token(&token, std::time::Duration::from_secs(300))
        .await
        .unwrap();
    assert_clean("LogoutToken", &format!("{logout:?}"), &personal);

    // A BFF session and the BFF's configuration, parsed and validated.
    let mut session =
        tokenkeeper_bff::BffSession::new("cookie-id-value-0001", "alice", "sso-secret-sid");
    session
        .claims
        .insert("email".into(), "alice.private@example.com".into());
    session.id_token = id_token.clone();
    let mut session_secrets = secrets.clone();
    session_secrets.push("cookie-id-value-0001");
    assert_clean("BffSession", &format!("{session:?}"), &session_secrets);
    let text = "[bff]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://app.example.com\"\n\n[oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"spa\"\nclient_secret = \"oidc-secret-value\"\n\n[client]\nclient_id = \"w\"\nclient_secret = \"worker-secret-value\"\n\n[redis]\nurl = \"redis://127.0.0.1:6379\"\nencryption_key_env = \"KEY\"\n";
    let config = tokenkeeper_bff::config::BffConfig::parse(text).unwrap();
    let key_b64 = "c2VjcmV0LWtleS1ieXRlcy0zMi1sb25nLXZhbHVlISE=";
    let validated = config
        .validate(text, &|name| (name == "KEY").then(|| key_b64.to_owned()))
        .unwrap();
    let config_secrets = [
        "oidc-secret-value",
        "worker-secret-value",
        key_b64,
        "115, 101, 99",
    ];
    assert_clean("BffConfig", &format!("{config:?}"), &config_secrets);
    assert_clean("Validated", &format!("{validated:?}"), &config_secrets);
}
