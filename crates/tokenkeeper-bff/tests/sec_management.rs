//! The BFF's management endpoints and configuration under attack (SEC-19, SEC-20, SEC-27) and
//! a new user's first hour with them (UX-02).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The page the callback answers with, for a login started with `return_url`: where it sends
/// the browser on.
async fn login_lands_on(h: &Harness, return_url: &str) -> Result<String, u16> {
    let browser = browser();
    let (page, _) = follow(
        &browser,
        &format!("{}/bff/login?returnUrl={}", h.url, encode(return_url)),
    )
    .await;
    if page.status() != 200 {
        return Err(page.status().as_u16());
    }
    let body = page.text().await.unwrap();
    let start = body.find("url=").unwrap() + 4;
    let end = body[start..].find('"').unwrap() + start;
    Ok(body[start..end].replace("&amp;", "&"))
}

/// SEC-19: return URLs are resolved as a browser resolves them: `/.//evil.example` and
/// `/%2e%2f/evil.example` (which a browser turns into the path `//evil.example`) are refused;
/// normal encoded local URLs and paths up to 8 KiB pass, through the whole login (the sealed
/// login cookie carries them) and at logout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_19_return_urls_as_a_browser_resolves_them() {
    let h = harness(Setup::default()).await;
    for hostile in [
        "/.//evil.example",
        "/%2e%2f/evil.example",
        "/%2E%2F/evil.example",
        "/.%2f/evil.example",
        "/x/..//evil.example",
        "//evil.example",
        "/\\evil.example",
        "/%2F%2Fevil.example",
        "https://evil.example/",
        "/\u{202e}/x",
    ] {
        assert_eq!(login_lands_on(&h, hostile).await, Err(400), "{hostile}");
    }
    let long = format!("/docs/{}", "a".repeat(8 * 1024 - 6));
    for (local, lands) in [
        ("/search?q=a%20b", "/search?q=a%20b"),
        ("/files/report%20(1).pdf", "/files/report%20(1).pdf"),
        ("/a/b/../c?x=%2F%2F#frag", "/a/c?x=%2F%2F#frag"),
        ("/caf%C3%A9", "/caf%C3%A9"),
        (long.as_str(), long.as_str()),
    ] {
        assert_eq!(
            login_lands_on(&h, local).await.as_deref(),
            Ok(lands),
            "{local}"
        );
    }
    assert_eq!(
        login_lands_on(&h, &format!("{long}a")).await,
        Err(400),
        "over 8 KiB"
    );

    // Logout: the same rules.
    let browser = browser();
    log_in(&h, &browser).await;
    let bad = browser
        .get(format!(
            "{}/bff/logout?returnUrl={}",
            h.url,
            encode("/.//evil.example")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

/// SEC-20: plain http only on loopback: `insecure_cookies` needs a loopback public URL; an
/// http provider elsewhere needs its own switch, which `--check-config` reports; (UX-02) a
/// non-loopback http issuer is refused with its key and line.
#[test]
fn sec_20_ux_02_plain_http_only_on_loopback() {
    use tokenkeeper_bff::config::BffConfig;
    let file = |public: &str, insecure: bool, issuer: &str, allow: bool| {
        format!(
            "[bff]\nlisten = \"127.0.0.1:0\"\npublic_url = \"{public}\"\ninsecure_cookies = {insecure}\n\n[oidc]\nissuer = \"{issuer}\"\nclient_id = \"spa\"\nclient_secret = \"s\"\nallow_insecure_http_provider = {allow}\n"
        )
    };
    let validate = |text: String| BffConfig::parse(&text).unwrap().validate(&text, &|_| None);
    let ok = validate(file(
        "http://127.0.0.1:8080",
        true,
        "http://127.0.0.1:9000",
        false,
    ))
    .unwrap();
    assert!(ok.frontends[0].insecure_http_provider && ok.notices.is_empty());
    assert!(validate(file(
        "http://localhost:8080",
        true,
        "https://idp.example.com",
        false
    ))
    .is_ok());
    assert!(validate(file(
        "http://[::1]:8080",
        true,
        "https://idp.example.com",
        false
    ))
    .is_ok());
    let e = validate(file(
        "http://app.example.com",
        true,
        "https://idp.example.com",
        false,
    ))
    .unwrap_err();
    assert_eq!(
        (e.key.as_str(), e.line),
        ("bff.insecure_cookies", Some(4)),
        "{e}"
    );
    let e = validate(file(
        "https://app.example.com",
        true,
        "https://idp.example.com",
        false,
    ))
    .unwrap_err();
    assert_eq!(e.key, "bff.insecure_cookies", "{e}");
    let e = validate(file(
        "https://app.example.com",
        false,
        "http://idp.example.com",
        false,
    ))
    .unwrap_err();
    assert_eq!((e.key.as_str(), e.line), ("oidc.issuer", Some(7)), "{e}");
    assert!(e.message.contains("allow_insecure_http_provider"), "{e}");
    let allowed = validate(file(
        "https://app.example.com",
        false,
        "http://idp.example.com",
        true,
    ))
    .unwrap();
    assert_eq!(allowed.notices.len(), 1, "{:?}", allowed.notices);
    assert!(allowed.notices[0].contains("http://idp.example.com"));
}

/// SEC-27: a provider that answers a `dpop_jkt` login with a Bearer token is warned about and
/// counted (`tokenkeeper_dpop_downgrades_total`); with `require_dpop` the login is refused.
#[cfg(feature = "metrics")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_27_a_bearer_answer_to_a_dpop_login_is_not_silent() {
    use tokenkeeper_axum::{Oidc, OidcConfig};
    let recorder = tokenkeeper_testing::TestRecorder::global();
    let downgrades = "tokenkeeper_dpop_downgrades_total{client_id=spa-sec27}";
    let before = recorder.get(downgrades);
    for require in [false, true] {
        let idp = tokenkeeper_testing::TestServer::builder()
            .client(
                tokenkeeper_testing::TestClient::new("spa-sec27", "spa-secret")
                    .redirect_uri("http://127.0.0.1:1/bff/callback"),
            )
            .start()
            .await;
        idp.set_login(Some("alice"));
        idp.set_dpop_ignored(true);
        let users = tokenkeeper::user::UserTokenManager::builder(
            tokenkeeper::ClientConfig::from_issuer(idp.issuer(), "spa-sec27", "spa-secret")
                .require_dpop(require),
        )
        .per_session_dpop(tokenkeeper::dpop::DpopAlgorithm::ES256)
        .build()
        .unwrap();
        let mut config = OidcConfig::new(
            idp.issuer(),
            "spa-sec27",
            "spa-secret",
            "http://127.0.0.1:1/bff/callback",
        );
        config.insecure_cookies = true;
        let oidc = Oidc::new(config, users).unwrap();
        let start = oidc.start_login(None, None).await.unwrap();
        let mut headers = axum::http::HeaderMap::new();
        let cookie = start
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
            .collect::<Vec<_>>()
            .join("; ");
        headers.insert("cookie", cookie.parse().unwrap());
        let authorize = start.headers()["location"].to_str().unwrap().to_owned();
        assert!(authorize.contains("dpop_jkt="));
        let plain = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let callback = plain.get(authorize).send().await.unwrap();
        let callback = url::Url::parse(callback.headers()["location"].to_str().unwrap()).unwrap();
        let query: std::collections::HashMap<String, String> =
            callback.query_pairs().into_owned().collect();
        let done = oidc
            .finish_login(
                &headers,
                tokenkeeper_axum::CallbackQuery {
                    code: query.get("code").cloned(),
                    state: query.get("state").cloned(),
                    iss: query.get("iss").cloned(),
                    ..Default::default()
                },
            )
            .await;
        if require {
            let error = done.result.unwrap_err().to_string();
            assert!(error.to_lowercase().contains("dpop"), "{error}");
        } else {
            let login = done.result.unwrap();
            let stored = oidc
                .users()
                .store()
                .get(&login.login.session)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                stored.value.dpop_jkt, None,
                "Bearer tokens, bound to nothing"
            );
        }
    }
    // Counted once without require_dpop; refused (not counted as a downgrade) with it.
    assert_eq!(recorder.get(downgrades), before + 1);
}

/// UX-02: at start the BFF fetches discovery; while the provider is down it says which URL
/// failed and why, retrying with backoff; once the provider is up, the first login works.
#[tokio::test(flavor = "current_thread")]
async fn ux_02_discovery_at_start_names_the_url_and_retries() {
    use tokenkeeper_axum::{Oidc, OidcConfig};
    let logs = tokenkeeper_testing::LogBuffer::default();
    let _guard = logs.install(tracing::Level::INFO);
    // The provider's address, with nothing listening yet.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], tokenkeeper_testing::free_port()));
    let issuer = format!("http://{addr}");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let redirect = format!("{url}/bff/callback");
    let mut config = OidcConfig::new(issuer.clone(), "spa", "spa-secret", redirect.clone());
    config.insecure_cookies = true;
    let users = tokenkeeper::user::UserTokenManager::builder(
        tokenkeeper::ClientConfig::from_issuer(issuer.clone(), "spa", "spa-secret"),
    )
    .build()
    .unwrap();
    let bff = tokenkeeper_bff::Bff::new(
        Oidc::new(config, users).unwrap(),
        tokenkeeper_bff::BffOptions {
            insecure_cookies: true,
            ..Default::default()
        },
    )
    .unwrap();
    let app = bff.router::<()>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let warming = bff.spawn_discovery();
    // The first attempt fails, naming the URL and why.
    let expected = format!("{issuer}/.well-known/openid-configuration");
    for _ in 0..200 {
        if logs.text().contains("retrying") {
            break;
        }
        tokio::task::yield_now().await;
    }
    let text = logs.text();
    assert!(text.contains(&expected), "{text}");
    assert!(text.contains("Connect"), "{text}");
    // The provider comes up: the retry loads the metadata, the first login works.
    let idp = tokenkeeper_testing::TestServer::builder()
        .bind(addr)
        .client(tokenkeeper_testing::TestClient::new("spa", "spa-secret").redirect_uri(&redirect))
        .start()
        .await;
    idp.set_login(Some("alice"));
    tokio::time::timeout(std::time::Duration::from_secs(30), warming)
        .await
        .expect("the metadata was loaded")
        .unwrap();
    assert!(logs.text().contains("provider metadata loaded"));
    let login = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{url}/bff/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303, "not a 502 at the first login");
}
