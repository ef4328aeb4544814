//! SEC-06: the browser gets short, generic errors; `sub` and `sid` never appear in log lines at
//! info level or above. In its own test binary so that its log capture is the process's only
//! subscriber.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use tokenkeeper_testing::LogBuffer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_06_generic_browser_errors_and_no_sub_or_sid_in_logs() {
    let logs = LogBuffer::default();
    logs.install_global(tracing::Level::INFO);

    let app = app(true).await;
    app.idp.set_login(Some("alice-3f9c2e"));
    let browser = browser(true);
    let me = browser
        .get(format!("{}/auth/login?returnUrl=/me", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(me.text().await.unwrap(), "alice-3f9c2e");
    let logout_url = get_text(&browser, format!("{}/logout-url", app.url)).await;
    let sid = logout_url.split("sid=").nth(1).unwrap().to_owned();
    assert!(sid.len() >= 8, "{sid}");

    // Failures that log: a forged logout, a refused callback with a provider error, a bad
    // returnUrl, and a token endpoint that fails at refresh.
    let forged = browser
        .get(format!("{}/auth/logout?sid=guess", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    let body = forged.text().await.unwrap();
    assert!(body.len() < 40, "a short message: {body}");
    let bad = browser
        .get(format!(
            "{}/auth/callback?error=access_denied&error_description=<script>&state=x",
            app.url
        ))
        .send()
        .await
        .unwrap();
    assert!(bad.status().is_client_error());
    let body = bad.text().await.unwrap();
    assert!(
        !body.contains("script") && !body.contains("access_denied") && body.len() < 40,
        "{body}"
    );
    app.idp.inject_fault(
        tokenkeeper_testing::Fault::oauth(400, "invalid_grant"),
        tokenkeeper_testing::Times::Always,
    );
    let users = app.oidc.users().clone();
    let session = tokenkeeper::user::SessionKey::new(
        get_text(&browser, format!("{}/session-key", app.url)).await,
    );
    let _ = users
        .get_access_token(
            &session,
            &tokenkeeper::user::UserTokenParams::new().force_renewal(true),
        )
        .await;
    app.idp.clear_faults();
    let home = browser
        .get(format!("{}{logout_url}", app.url))
        .send()
        .await
        .unwrap();
    assert!(home.status().is_success());

    let text = logs.text();
    assert!(
        text.contains("login refused"),
        "the details are logged:\n{text}"
    );
    assert!(text.contains("invalid_grant"), "{text}");
    assert!(!text.contains("alice-3f9c2e"), "sub in the logs:\n{text}");
    assert!(!text.contains(&sid), "sid in the logs:\n{text}");
}
