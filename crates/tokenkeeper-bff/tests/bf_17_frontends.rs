//! BF-17: frontends in one host, built from the configuration file as `tokenkeeper bff`
//! builds them, on one Redis session store: one matched by host, one by host and path prefix,
//! each with its own client at the provider (a third authenticates with private_key_jwt and
//! binds its tokens with DPoP). A login on one is not a login on the other, a
//! session cookie copied from one is worth nothing on the other, a logout of one leaves the
//! other alone, and the metrics say which frontend counted.
#![cfg(feature = "config")]
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::{api, follow};
use tokenkeeper_bff::config::BffConfig;
use tokenkeeper_testing::{TestClient, TestRecorder, TestServer};

/// The session cookie's value in a response's `Set-Cookie`s.
fn cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
        .find(|v| !v.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_17_two_frontends_one_host_sessions_apart() {
    let recorder = TestRecorder::global();
    let bound = tokenkeeper_proxy::server::Bound::bind("127.0.0.1:0".parse().unwrap(), 1).unwrap();
    let addr = bound.local_addr();
    let port = addr.port();
    let shop = format!("http://shop.localhost:{port}");
    let app = format!("http://app.localhost:{port}");
    let kiosk = format!("http://kiosk.localhost:{port}");
    // The kiosk's client key (private_key_jwt), registered by its public JWK.
    let kiosk_key =
        tokenkeeper::dpop::DpopKey::generate(tokenkeeper::dpop::DpopAlgorithm::ES256).unwrap();
    let kiosk_pem = kiosk_key.to_pkcs8_pem().unwrap();
    let kiosk_jwk = tokenkeeper::PrivateKeyJwt::new(kiosk_key).public_jwk();
    let idp = Arc::new(
        TestServer::builder()
            .client(
                TestClient::new("shop", "shop-secret")
                    .redirect_uri(&format!("{shop}/bff/callback")),
            )
            .client(
                TestClient::new("admin", "admin-secret")
                    .redirect_uri(&format!("{app}/admin/bff/callback")),
            )
            .client(
                TestClient::new("kiosk", "")
                    .private_key_jwt(kiosk_jwk)
                    .redirect_uri(&format!("{kiosk}/bff/callback")),
            )
            .start()
            .await,
    );
    idp.set_login(Some("alice"));
    // The upstream: which client's token each request carried, and its path.
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let upstream = {
        let (seen, idp) = (seen.clone(), idp.clone());
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", api.local_addr().unwrap());
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
                let (seen, idp) = (seen.clone(), idp.clone());
                async move {
                    let authorization = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    let token = authorization
                        .strip_prefix("Bearer ")
                        .or_else(|| authorization.strip_prefix("DPoP "))
                        .unwrap_or_default();
                    let client = idp
                        .verify_access_token(token)
                        .ok()
                        .and_then(|c| {
                            c.get("client_id")
                                .and_then(|v| v.as_str())
                                .map(str::to_owned)
                        })
                        .unwrap_or_default();
                    seen.lock().unwrap().push((client, uri.path().to_owned()));
                    "ok"
                }
            },
        );
        tokio::spawn(async move { axum::serve(api, app).await });
        url
    };
    let static_dir = std::env::temp_dir().join(format!("bf17-admin-{}", std::process::id()));
    std::fs::create_dir_all(&static_dir).unwrap();
    std::fs::write(static_dir.join("index.html"), "the admin app").unwrap();
    let prefix = format!("bf17-{}", tokenkeeper::random_token(6).unwrap());
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let text = format!(
        r#"
[bff]
listen = "127.0.0.1:0"
insecure_cookies = true

[redis]
url = "{redis}"
prefix = "{prefix}"
encryption_key_env = "REDIS_KEY"

[[frontends]]
name = "shop"
public_url = "{shop}"

[frontends.oidc]
issuer = "{issuer}"
client_id = "shop"
client_secret = "shop-secret"

[[frontends.routes]]
path = "/api"
upstream = "{upstream}/shop"

[[frontends]]
name = "admin"
public_url = "{app}/admin"
static_dir = {static_dir:?}

[frontends.oidc]
issuer = "{issuer}"
client_id = "admin"
client_secret = "admin-secret"

[[frontends.routes]]
path = "/api"
upstream = "{upstream}/admin"

[[frontends]]
name = "kiosk"
public_url = "{kiosk}"

[frontends.oidc]
issuer = "{issuer}"
client_id = "kiosk"
private_key_env = "KIOSK_KEY"
dpop = "per-session"

[[frontends.routes]]
path = "/api"
upstream = "{upstream}/kiosk"
"#,
        issuer = idp.issuer(),
        static_dir = static_dir.display().to_string(),
    );
    let env = |name: &str| match name {
        "KIOSK_KEY" => Some(kiosk_pem.clone()),
        "REDIS_KEY" => Some("YmZmLWhvc3QtdGVzdC1rZXktMzItYnl0ZXMtbG9uZyE=".to_owned()),
        _ => None,
    };
    let validated = BffConfig::parse(&text)
        .unwrap()
        .validate(&text, &env)
        .unwrap();
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
        .resolve("shop.localhost", addr)
        .resolve("app.localhost", addr)
        .resolve("kiosk.localhost", addr)
        .build()
        .unwrap();
    let started = |frontend: &str| {
        recorder.get(&format!(
            "tokenkeeper_bff_sessions_started_total{{frontend={frontend}}}"
        ))
    };
    let (shop_before, admin_before) = (started("shop"), started("admin"));

    // Log in to the shop: the shop knows alice, the admin app does not.
    let (page, _) = follow(&browser, &format!("{shop}/bff/login?returnUrl=/")).await;
    assert_eq!(page.status(), 200);
    assert_eq!(api(&browser, format!("{shop}/bff/user")).await.0, 200);
    assert_eq!(api(&browser, format!("{app}/admin/bff/user")).await.0, 401);
    assert_eq!(api(&browser, format!("{shop}/api/orders")).await.0, 200);
    assert_eq!(api(&browser, format!("{app}/admin/api/users")).await.0, 401);
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [("shop".to_owned(), "/shop/orders".to_owned())],
        "the shop's route, with the shop client's token; nothing reached the admin upstream"
    );
    if cfg!(feature = "metrics") {
        assert_eq!(started("shop"), shop_before + 1);
        assert_eq!(started("admin"), admin_before);
    }

    // The shop's session id, presented to the admin app under its cookie name: worth nothing.
    let login = browser
        .get(format!("{shop}/bff/login?returnUrl=/"))
        .send()
        .await
        .unwrap();
    let (done, _) = follow(&browser, login.headers()["location"].to_str().unwrap()).await;
    let stolen = cookie(&done, "bff-shop").expect("the callback sets the shop's session cookie");
    let anonymous = reqwest::Client::builder()
        .resolve("shop.localhost", addr)
        .resolve("app.localhost", addr)
        .build()
        .unwrap();
    let with_cookie = |url: String, cookie: String| {
        let anonymous = anonymous.clone();
        async move {
            anonymous
                .get(url)
                .header("x-csrf", "1")
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        with_cookie(format!("{shop}/bff/user"), format!("bff-shop={stolen}")).await,
        200
    );
    assert_eq!(
        with_cookie(
            format!("{app}/admin/bff/user"),
            format!("bff-admin={stolen}")
        )
        .await,
        401
    );
    assert_eq!(
        with_cookie(format!("{app}/admin/api/x"), format!("bff-admin={stolen}")).await,
        401
    );
    assert_eq!(
        with_cookie(format!("{shop}/bff/user"), format!("bff-admin={stolen}")).await,
        401
    );
    // A host no frontend answers, and a path outside the admin app's prefix.
    assert_eq!(
        anonymous
            .get(format!("http://{addr}/bff/user"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        with_cookie(format!("{app}/bff/user"), String::new()).await,
        404
    );
    // A host name too long to be one, or with a port only: no frontend.
    for host in ["a".repeat(300), ":80".to_owned()] {
        let status = anonymous
            .get(format!("http://{addr}/bff/user"))
            .header("host", host)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404);
    }
    // The admin app's static files, under its prefix.
    let index = anonymous.get(format!("{app}/admin/")).send().await.unwrap();
    assert_eq!(index.text().await.unwrap(), "the admin app");

    // Log in to the admin app too: two sessions, one per frontend, each listed with its own.
    let (page, _) = follow(
        &browser,
        &format!("{app}/admin/bff/login?returnUrl=/admin/"),
    )
    .await;
    assert_eq!(page.status(), 200);
    assert_eq!(api(&browser, format!("{app}/admin/bff/user")).await.0, 200);
    assert_eq!(api(&browser, format!("{app}/admin/api/users")).await.0, 200);
    assert_eq!(
        seen.lock().unwrap().last().unwrap(),
        &("admin".to_owned(), "/admin/users".to_owned())
    );
    if cfg!(feature = "metrics") {
        assert_eq!(started("admin"), admin_before + 1);
    }
    let admin_api = host.handler().admin_api();
    let listed = admin_api(
        http::Method::GET,
        "/admin/sessions".into(),
        Some("sub=alice".into()),
    )
    .await;
    let body = axum::body::to_bytes(axum::body::Body::new(listed.into_body()), usize::MAX)
        .await
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut frontends: Vec<_> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["frontend"].as_str().unwrap().to_owned())
        .collect();
    frontends.sort();
    // One each: the shop's second login in this browser replaced its first.
    assert_eq!(frontends, ["admin", "shop"], "{listed}");

    // Logging out of the shop leaves the admin app's session alone.
    let (_, user) = api(&browser, format!("{shop}/bff/user")).await;
    let logout = user
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "bff:logout_url")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_owned();
    follow(&browser, &format!("{shop}{logout}")).await;
    assert_eq!(api(&browser, format!("{shop}/bff/user")).await.0, 401);
    assert_eq!(api(&browser, format!("{app}/admin/bff/user")).await.0, 200);
    assert_eq!(api(&browser, format!("{app}/admin/api/users")).await.0, 200);

    // The kiosk: its login's code exchange authenticated with its key, its token DPoP-bound.
    let (page, _) = follow(&browser, &format!("{kiosk}/bff/login?returnUrl=/")).await;
    assert_eq!(page.status(), 200);
    assert_eq!(api(&browser, format!("{kiosk}/api/screens")).await.0, 200);
    assert_eq!(
        seen.lock().unwrap().last().unwrap(),
        &("kiosk".to_owned(), "/kiosk/screens".to_owned())
    );
    let _ = std::fs::remove_dir_all(static_dir);
}
