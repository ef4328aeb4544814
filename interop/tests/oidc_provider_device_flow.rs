//! PR-05 against node oidc-provider's device flow (RFC 8628): the library asks for a device
//! authorization for the public client `cli`, polls as the provider says while the user
//! confirms the code, logs in and consents on the provider's pages, and gets tokens — the
//! refresh token works; a user who aborts stops the poll with `access_denied`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{scripted_device_approval, Provider};
use tokenkeeper::user::UserTokenManager;
use tokenkeeper::{AuthMethod, ClientConfig, Grant, Scope, TokenRequest};

fn cli(provider: &Provider) -> UserTokenManager {
    UserTokenManager::builder(
        ClientConfig::from_issuer(provider.issuer.clone(), "cli", "").auth_method(AuthMethod::None),
    )
    .build()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pr_05_device_flow_against_oidc_provider() {
    let provider = Provider::start(&[("DEVICE", "1")]).await;
    let users = cli(&provider);
    let device = users
        .endpoint()
        .start_device_authorization(&Scope::parse("openid offline_access"), &[])
        .await
        .unwrap();
    assert!(device
        .verification_uri
        .as_str()
        .starts_with(&provider.issuer));
    let complete = device.verification_uri_complete.clone().unwrap();
    let poll = {
        let users = users.clone();
        let device = device.clone();
        tokio::spawn(async move { users.endpoint().poll_device_authorization(&device).await })
    };
    let page = scripted_device_approval(&complete, "ivan").await;
    assert!(page.contains("Sign-in Success"), "{page}");
    let tokens = poll.await.unwrap().unwrap();
    let id_token = tokens.id_token.as_ref().unwrap();
    assert_eq!(common::jwt_claims(id_token.secret())["sub"], "ivan");
    // The refresh token works (what `tokenkeeper token --tokens-file` does when it expires).
    let refreshed = users
        .endpoint()
        .request(&TokenRequest::new(Grant::RefreshToken {
            refresh_token: tokens.refresh_token.clone().unwrap(),
        }))
        .await
        .unwrap();
    assert_ne!(
        refreshed.access_token.secret(),
        tokens.access_token.secret()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pr_05_an_aborted_device_login_is_access_denied() {
    let provider = Provider::start(&[("DEVICE", "1")]).await;
    let users = cli(&provider);
    let device = users
        .endpoint()
        .start_device_authorization(&Scope::parse("openid"), &[])
        .await
        .unwrap();
    // The user aborts on the confirmation page.
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let complete = device.verification_uri_complete.clone().unwrap();
    let page = browser
        .get(complete.clone())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let xsrf = page
        .split("name=\"xsrf\" value=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .unwrap()
        .to_owned();
    let action = complete.join("/device").unwrap();
    let aborted = browser
        .post(action)
        .form(&[
            ("xsrf", xsrf.as_str()),
            ("user_code", device.user_code.as_str()),
            ("abort", "yes"),
        ])
        .send()
        .await
        .unwrap();
    assert!(aborted.status().is_success() || aborted.status().is_redirection());
    let e = users
        .endpoint()
        .poll_device_authorization(&device)
        .await
        .unwrap_err();
    assert_eq!(e.oauth_error(), Some("access_denied"), "{e}");
}
