//! The BFF's management endpoints and API semantics against the test identity provider:
//! BF-01, BF-02, BF-03, BF-04, BF-05, BF-06, BF-09, BF-10, BF-12, BF-14, BF-15, BF-19, BF-20.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use tokenkeeper_bff::BffSessionStore as _;

fn claim<'a>(user: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    user.as_array()?
        .iter()
        .find(|c| c["type"] == name)
        .map(|c| &c["value"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_01_login_takes_local_return_urls_and_supported_prompts_only() {
    let h = harness(Setup::default()).await;
    let browser = browser();
    for bad in [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "/%2F%2Fevil.example",
    ] {
        let url = format!(
            "{}/bff/login?returnUrl={}",
            h.url,
            url::form_urlencoded::byte_serialize(bad.as_bytes()).collect::<String>()
        );
        let response = browser.get(url).send().await.unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        assert!(response.headers().get("location").is_none());
    }
    let bogus = browser
        .get(format!("{}/bff/login?prompt=bogus", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(bogus.status(), 400, "a prompt the provider does not list");
    let login = browser
        .get(format!("{}/bff/login?prompt=login&returnUrl=/app", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let location = login.headers()["location"].to_str().unwrap();
    assert!(location.contains("prompt=login"), "{location}");
}

/// BF-15 and the whole login: the callback (a cross-site navigation) starts the session with a
/// `SameSite=Strict` cookie and moves on with a page of our own origin, so the cookie goes with
/// the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_15_session_cookie_is_host_prefixed_httponly_secure_strict_and_login_works() {
    // Secure cookies: read the Set-Cookie (a plain-http jar would not keep a Secure cookie).
    let h = harness(Setup {
        insecure_cookies: false,
        ..Setup::default()
    })
    .await;
    let browser = browser();
    let mut url = format!("{}/bff/login?returnUrl=/app", h.url);
    let mut cookies = Vec::new();
    for _ in 0..5 {
        let response = browser.get(&url).send().await.unwrap();
        for c in response.headers().get_all("set-cookie") {
            cookies.push(c.to_str().unwrap().to_owned());
        }
        let Some(location) = response.headers().get("location") else {
            break;
        };
        url = reqwest::Url::parse(&url)
            .unwrap()
            .join(location.to_str().unwrap())
            .unwrap()
            .to_string();
    }
    let session = cookies
        .iter()
        .find(|c| c.starts_with("__Host-bff=") && !c.contains("Max-Age=0"))
        .unwrap_or_else(|| panic!("no session cookie in {cookies:?}"));
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(attribute), "{attribute} in {session}");
    }
    assert!(!session.contains("Domain="), "{session}");

    // Insecure (loopback dev) cookies: the whole journey in a cookie jar.
    let h = harness(Setup::default()).await;
    let browser = common::browser();
    let page = log_in(&h, &browser).await;
    assert!(
        page.contains("url=/app"),
        "continues to the return URL: {page}"
    );
    assert_eq!(h.sessions.len(), 1);
    let (status, user) = api(&browser, format!("{}/bff/user", h.url)).await;
    assert_eq!(status, 200);
    assert_eq!(claim(&user, "sub").unwrap(), "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_03_user_endpoint_claims_csrf_slide_and_anonymous() {
    let h = harness(Setup::default()).await;
    let browser = browser();
    let (status, _) = api(&browser, format!("{}/bff/user", h.url)).await;
    assert_eq!(status, 401, "anonymous");
    log_in(&h, &browser).await;
    let no_csrf = browser
        .get(format!("{}/bff/user", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(no_csrf.status(), 401, "no anti-forgery header");

    let (status, user) = api(&browser, format!("{}/bff/user", h.url)).await;
    assert_eq!(status, 200);
    assert_eq!(claim(&user, "sub").unwrap(), "alice");
    let logout = claim(&user, "bff:logout_url").unwrap().as_str().unwrap();
    assert!(logout.starts_with("/bff/logout?sid="), "{logout}");
    let expires = claim(&user, "bff:session_expires_in")
        .unwrap()
        .as_u64()
        .unwrap();
    assert!((1790..=1800).contains(&expires), "{expires}");

    // Ten minutes later: `slide=false` reports without extending; a normal call extends.
    h.clock.advance(Duration::from_secs(600));
    let (_, user) = api(&browser, format!("{}/bff/user?slide=false", h.url)).await;
    let left = claim(&user, "bff:session_expires_in")
        .unwrap()
        .as_u64()
        .unwrap();
    assert!((1190..=1200).contains(&left), "not extended: {left}");
    let (_, user) = api(&browser, format!("{}/bff/user", h.url)).await;
    let left = claim(&user, "bff:session_expires_in")
        .unwrap()
        .as_u64()
        .unwrap();
    assert!((1790..=1800).contains(&left), "extended: {left}");

    // Past the sliding window, the session is over.
    h.clock.advance(Duration::from_secs(1801));
    let (status, _) = api(&browser, format!("{}/bff/user", h.url)).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_19_the_user_endpoint_drops_protocol_claims_and_shapes_the_rest() {
    // By default: the user's claims, none of the ID token's protocol claims, the session's.
    let h = harness(Setup::default()).await;
    let browser = browser();
    log_in(&h, &browser).await;
    let (status, user) = api(&browser, format!("{}/bff/user", h.url)).await;
    assert_eq!(status, 200);
    assert_eq!(claim(&user, "sub").unwrap(), "alice");
    for protocol in tokenkeeper_bff::PROTOCOL_CLAIMS {
        assert!(claim(&user, protocol).is_none(), "{protocol}: {user}");
    }
    for session in ["bff:logout_url", "bff:session_expires_in"] {
        assert!(claim(&user, session).is_some(), "{session}: {user}");
    }
    // The test provider's ID tokens do carry them.
    let kept = harness(Setup {
        claims: tokenkeeper_bff::UserClaims {
            keep_protocol_claims: true,
            ..Default::default()
        },
        ..Setup::default()
    })
    .await;
    let browser = self::browser();
    log_in(&kept, &browser).await;
    let (_, user) = api(&browser, format!("{}/bff/user", kept.url)).await;
    for protocol in ["iss", "aud", "exp", "iat", "nonce"] {
        assert!(claim(&user, protocol).is_some(), "{protocol}: {user}");
    }

    // Include, rename and a hook (which cannot take the BFF's own claims).
    let shaped = harness(Setup {
        claims: tokenkeeper_bff::UserClaims {
            include: vec!["sub".into(), "sid".into()],
            rename: vec![("sid".into(), "provider_session".into())],
            hook: Some(tokenkeeper_bff::ClaimsHook::new(|session, claims| {
                claims.insert("greeting".into(), format!("hello {}", session.sub).into());
                claims.insert("bff:logout_url".into(), "https://evil.example/".into());
            })),
            ..Default::default()
        },
        ..Setup::default()
    })
    .await;
    let browser = self::browser();
    log_in(&shaped, &browser).await;
    let (_, user) = api(&browser, format!("{}/bff/user", shaped.url)).await;
    let mut names: Vec<&str> = user
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "bff:logout_url",
            "bff:session_expires_in",
            "greeting",
            "provider_session",
            "sub"
        ],
        "{user}"
    );
    assert_eq!(claim(&user, "greeting").unwrap(), "hello alice");
    let logout = claim(&user, "bff:logout_url").unwrap().as_str().unwrap();
    assert!(logout.starts_with("/bff/logout?sid="), "{logout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_19_userinfo_is_merged_at_login_and_must_be_about_the_same_user() {
    for dpop in [false, true] {
        let h = harness(Setup {
            dpop,
            claims: tokenkeeper_bff::UserClaims {
                userinfo: true,
                ..Default::default()
            },
            ..Setup::default()
        })
        .await;
        let browser = browser();
        log_in(&h, &browser).await;
        assert_eq!(h.idp.userinfo_requests(), 1, "dpop {dpop}");
        let (status, user) = api(&browser, format!("{}/bff/user", h.url)).await;
        assert_eq!(status, 200, "dpop {dpop}");
        assert_eq!(claim(&user, "sub").unwrap(), "alice");
        assert_eq!(
            claim(&user, "name").unwrap(),
            "User alice",
            "dpop {dpop}: {user}"
        );
        assert_eq!(claim(&user, "email").unwrap(), "alice@example.com");

        // A userinfo about someone else refuses the login: no session, tokens revoked.
        let mut other = serde_json::Map::new();
        other.insert("sub".into(), "mallory".into());
        h.idp.set_userinfo_claims(other);
        let revoked = h.idp.revocations();
        let before = h.sessions.len();
        let browser = self::browser();
        let (page, _) = follow(&browser, &format!("{}/bff/login?returnUrl=/app", h.url)).await;
        assert_eq!(page.status(), 400, "dpop {dpop}");
        let body = page.text().await.unwrap();
        assert!(!body.contains("mallory"), "{body}");
        assert_eq!(h.sessions.len(), before, "dpop {dpop}");
        assert_eq!(h.idp.revocations(), revoked + 1, "dpop {dpop}");
        let (status, _) = api(&browser, format!("{}/bff/user", h.url)).await;
        assert_eq!(status, 401);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_20_route_policies_refuse_with_403_and_forward_nothing() {
    for per_core_server in [false, true] {
        let h = harness(Setup {
            per_core_server,
            more_routes: vec![
                ("/api/admins", |r| r.require_claim("groups", "admin")),
                ("/api/ops", |r| r.require_claim("groups", "ops")),
                ("/api/mine", |r| {
                    r.require_claim("sub", "alice")
                        .require_claim("groups", "dev")
                        .require_scope("openid")
                }),
                ("/api/write", |r| r.require_scope("orders.write")),
                ("/api/anyone", |r| {
                    r.token(tokenkeeper_bff::RouteToken::None)
                        .require_claim("groups", "admin")
                }),
            ],
            ..Setup::default()
        })
        .await;
        let mut groups = serde_json::Map::new();
        groups.insert("groups".into(), serde_json::json!(["admin", "dev"]));
        h.idp.set_id_token_claims(groups);
        // Anonymous: 401, even on a route without a token.
        let anonymous = self::browser();
        for path in ["/api/admins/x", "/api/anyone/x"] {
            let (status, _) = api(&anonymous, format!("{}{path}", h.url)).await;
            assert_eq!(status, 401, "{path}");
        }
        let browser = browser();
        log_in(&h, &browser).await;
        for (path, expected) in [
            ("/api/admins/x", 200),
            ("/api/mine/x", 200),
            ("/api/anyone/x", 200),
            ("/api/ops/x", 403),
            ("/api/write/x", 403),
        ] {
            let before = h.seen.lock().unwrap().requests;
            let (status, _) = api(&browser, format!("{}{path}", h.url)).await;
            assert_eq!(
                status, expected,
                "{path} (per-core server: {per_core_server})"
            );
            let forwarded = h.seen.lock().unwrap().requests - before;
            assert_eq!(forwarded, u64::from(expected == 200), "{path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_20_an_exchange_route_sends_a_token_exchanged_for_the_users() {
    let h = harness(Setup {
        more_routes: vec![("/api/orders", |r| {
            r.token(tokenkeeper_bff::RouteToken::Exchange)
                .exchange_audience("orders")
        })],
        ..Setup::default()
    })
    .await;
    let anonymous = self::browser();
    let (status, _) = api(&anonymous, format!("{}/api/orders/1", h.url)).await;
    assert_eq!(status, 401);
    let browser = browser();
    log_in(&h, &browser).await;
    let token_of = |seen: &serde_json::Value| {
        seen["authorization"]
            .as_str()
            .unwrap()
            .strip_prefix("Bearer ")
            .unwrap()
            .to_owned()
    };
    let (status, seen) = api(&browser, format!("{}/api/orders/1", h.url)).await;
    assert_eq!(status, 200, "{seen}");
    let exchanged = token_of(&seen);
    let claims = h.idp.verify_access_token(&exchanged).unwrap();
    assert_eq!(claims["sub"], "alice");
    // Issued to the BFF's client, acting for alice (the test server puts `act` under `ext`).
    assert_eq!(claims["client_id"], "bff-worker", "{claims:?}");
    assert_eq!(claims["ext"]["act"]["sub"], "bff-worker", "{claims:?}");
    let audience = serde_json::to_string(&claims["aud"]).unwrap();
    assert!(audience.contains("orders"), "{audience}");
    // Not the user's own token (the user-token route sends that one).
    let (_, own) = api(&browser, format!("{}/api/user/1", h.url)).await;
    assert_ne!(token_of(&own), exchanged);
    // Cached per user token: the same exchanged token on the next call.
    let (_, again) = api(&browser, format!("{}/api/orders/2", h.url)).await;
    assert_eq!(token_of(&again), exchanged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_04_bf_09_api_calls_need_the_anti_forgery_header_and_never_redirect() {
    let h = harness(Setup::default()).await;
    let browser = browser();
    log_in(&h, &browser).await;
    let response = browser
        .get(format!("{}/api/user/orders", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(h.seen.lock().unwrap().requests, 0, "not forwarded");

    // Anonymous API call: 401, no Location, no Set-Cookie.
    let anonymous = common::browser();
    let response = anonymous
        .get(format!("{}/api/user/orders", h.url))
        .header("x-csrf", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().get("location").is_none());
    assert!(response.headers().get("set-cookie").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_05_token_types_forwarding_and_headers() {
    let h = harness(Setup::default()).await;
    let anonymous = browser();
    // Anonymous: User → 401; UserOrClient → the client's token; UserOrNone, None → no token.
    assert_eq!(
        api(&anonymous, format!("{}/api/user/x", h.url)).await.0,
        401
    );
    let (status, echo) = api(&anonymous, format!("{}/api/either/x", h.url)).await;
    assert_eq!(status, 200);
    let token = echo["authorization"]
        .as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap();
    assert_eq!(
        h.idp.verify_access_token(token).unwrap()["sub"],
        "bff-worker"
    );
    assert_eq!(
        h.idp.token_requests("refresh_token"),
        0,
        "no user token touched"
    );
    let (_, echo) = api(&anonymous, format!("{}/api/maybe/x", h.url)).await;
    assert!(echo["authorization"].is_null());
    let (_, echo) = api(&anonymous, format!("{}/api/open/x", h.url)).await;
    assert!(echo["authorization"].is_null());
    let (_, echo) = api(&anonymous, format!("{}/api/client/x", h.url)).await;
    assert!(echo["authorization"]
        .as_str()
        .unwrap()
        .starts_with("Bearer "));

    // Logged in: the user's token; the path prefix replaced, the query kept; the BFF's cookies,
    // the anti-forgery header and hop-by-hop headers not forwarded; the upstream's cookies not
    // set on the BFF's origin.
    let browser = browser();
    log_in(&h, &browser).await;
    for route in ["user", "either", "maybe"] {
        let response = browser
            .post(format!("{}/api/{route}/orders/7?page=2", h.url))
            .header("x-csrf", "1")
            .header("connection", "x-hop")
            .header("x-hop", "hop")
            .header("x-custom", "kept")
            .body("the body")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{route}");
        assert!(response.headers().get("set-cookie").is_none(), "{route}");
        let echo: serde_json::Value = response.json().await.unwrap();
        let token = echo["authorization"]
            .as_str()
            .unwrap()
            .strip_prefix("Bearer ")
            .unwrap();
        assert_eq!(
            h.idp.verify_access_token(token).unwrap()["sub"],
            "alice",
            "{route}"
        );
        assert_eq!(echo["path"], "/up/orders/7");
        assert_eq!(echo["query"], "page=2");
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["body"], "the body");
        assert!(echo["cookie"].is_null(), "{route}: {echo}");
        assert!(echo["x_csrf"].is_null());
        assert!(
            echo["x_hop"].is_null(),
            "a header named by Connection is hop-by-hop"
        );
        assert_eq!(echo["x_custom"], "kept");
    }
    // A path that tries to leave the upstream stays on it.
    let (status, echo) = api(&browser, format!("{}/api/open/..%2F..%2Fadmin", h.url)).await;
    assert!(status == 200 || status == 400, "{status}");
    if status == 200 {
        assert!(echo["path"].as_str().unwrap().starts_with("/up/"), "{echo}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_06_a_user_token_that_cannot_be_had_signs_the_session_out() {
    let h = harness(Setup::default()).await;
    let browser = browser();
    log_in(&h, &browser).await;
    assert_eq!(api(&browser, format!("{}/api/user/x", h.url)).await.0, 200);
    // The session's tokens are gone (as after invalid_grant): the next call signs it out.
    let session = h
        .sessions
        .find(Some("alice"), None)
        .await
        .unwrap()
        .remove(0);
    h.bff
        .oidc()
        .users()
        .store()
        .clear(&session.key())
        .await
        .unwrap();
    let (status, _) = api(&browser, format!("{}/api/user/x", h.url)).await;
    assert_eq!(status, 401);
    assert!(h.sessions.is_empty(), "signed out");
    assert_eq!(api(&browser, format!("{}/bff/user", h.url)).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_02_logout_needs_the_sid_revokes_and_is_idempotent() {
    let h = harness(Setup::default()).await;
    let browser = browser();
    log_in(&h, &browser).await;
    let (_, user) = api(&browser, format!("{}/bff/user", h.url)).await;
    let logout = claim(&user, "bff:logout_url")
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();

    // Cross-site attempts (no sid, or a guessed one) do nothing.
    for forged in ["/bff/logout", "/bff/logout?sid=guess"] {
        let response = browser
            .get(format!("{}{forged}", h.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{forged}");
    }
    assert_eq!(h.sessions.len(), 1);
    assert_eq!(h.idp.revocations(), 0);

    let response = browser
        .get(format!("{}{logout}&returnUrl=/bye", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with(&format!("{}/end_session?", h.idp.issuer())),
        "{location}"
    );
    assert!(location.contains("id_token_hint="), "{location}");
    assert!(location.contains("post_logout_redirect_uri="), "{location}");
    assert_eq!(h.idp.revocations(), 1, "the refresh token was revoked");
    assert!(h.sessions.is_empty());
    // Again, now anonymous: straight to returnUrl.
    let again = browser
        .get(format!("{}{logout}&returnUrl=/bye", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 303);
    assert_eq!(again.headers()["location"], "/bye");
    assert_eq!(api(&browser, format!("{}/bff/user", h.url)).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_10_silent_login_posts_to_our_own_origin_only() {
    let h = harness(Setup::default()).await;
    let browser = browser();
    let (page, _) = follow(&browser, &format!("{}/bff/login?prompt=none", h.url)).await;
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = page.text().await.unwrap();
    assert!(body.contains("isLoggedIn:true"), "{body}");
    assert!(
        body.contains(&format!("\"{}\"", h.url)),
        "addressed to our origin: {body}"
    );
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    assert!(
        body.contains(&format!("nonce=\"{nonce}\"")),
        "{csp} / {body}"
    );
    assert!(!body.contains("\"*\""), "never to any origin");

    // Not logged in at the provider: "not logged in", not an error page.
    h.idp.set_login(None);
    let other = common::browser();
    let (page, _) = follow(&other, &format!("{}/bff/login?prompt=none", h.url)).await;
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(body.contains("isLoggedIn:false"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_12_server_sent_events_arrive_event_by_event() {
    let h = harness(Setup {
        routes: vec![("/api/stream", tokenkeeper_bff::RouteToken::None)],
        ..Setup::default()
    })
    .await;
    let browser = browser();
    let mut response = browser
        .get(format!("{}/api/stream/events", h.url))
        .header("x-csrf", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    // The first event arrives while the upstream still holds the second: nothing buffers.
    let first = response.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"data: one\n\n");
    h.release.notify_one();
    let second = response.chunk().await.unwrap().unwrap();
    assert_eq!(&second[..], b"data: two\n\n");
    assert!(response.chunk().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_14_diagnostics_only_in_dev_mode() {
    let h = harness(Setup::default()).await;
    let browser = browser();
    log_in(&h, &browser).await;
    let response = browser
        .get(format!("{}/bff/diagnostics", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    let dev = harness(Setup {
        dev: true,
        ..Setup::default()
    })
    .await;
    let browser = common::browser();
    log_in(&dev, &browser).await;
    // It shows a token: without the anti-forgery header, nothing (SEC-20).
    let response = browser
        .get(format!("{}/bff/diagnostics", dev.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = browser
        .get(format!("{}/bff/diagnostics", dev.url))
        .header("x-csrf", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["sub"], "alice");
    assert!(body["user_access_token"].is_string());
}

async fn backchannel(h: &Harness, token: &str) -> (u16, Option<String>) {
    let response = reqwest::Client::new()
        .post(format!("{}/bff/backchannel", h.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "logout_token={}",
            url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
        ))
        .send()
        .await
        .unwrap();
    let cache = response
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), cache)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_07_bf_13_backchannel_logout_validates_ends_sessions_and_refuses_replays() {
    let h = harness(Setup::default()).await;
    let (first, second) = (browser(), browser());
    log_in(&h, &first).await;
    log_in(&h, &second).await;
    let sessions = h.sessions.find(Some("alice"), None).await.unwrap();
    assert_eq!(sessions.len(), 2);
    let sid = sessions[0].sid.clone();

    // Bad tokens are refused, with no-store, and end nothing.
    let now = tokenkeeper::Timestamp::system_now().as_millis() / 1000;
    let base = |extra: serde_json::Value| {
        let mut claims = serde_json::json!({
            "iss": h.idp.issuer(),
            "aud": "spa",
            "iat": now,
            "jti": format!("bad-{}", tokenkeeper::random_token(6).unwrap()),
            "events": {tokenkeeper::BACKCHANNEL_LOGOUT_EVENT: {}},
            "sid": sid,
        });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        h.idp
            .sign_jwt(claims.as_object().unwrap(), Some("logout+jwt"))
    };
    let mut bad = vec![
        (
            "another audience",
            base(serde_json::json!({"aud": "someone-else"})),
        ),
        (
            "another issuer",
            base(serde_json::json!({"iss": "https://evil.example"})),
        ),
        ("a nonce", base(serde_json::json!({"nonce": "n"}))),
        ("no events", base(serde_json::json!({"events": null}))),
        (
            "another event",
            base(serde_json::json!({"events": {"urn:other": {}}})),
        ),
        (
            "neither sub nor sid",
            base(serde_json::json!({"sid": null})),
        ),
        ("no iat", base(serde_json::json!({"iat": null}))),
        ("old", base(serde_json::json!({"iat": now - 3600}))),
        ("no jti", base(serde_json::json!({"jti": null}))),
    ];
    let good = base(serde_json::json!({}));
    let mut tampered: Vec<&str> = good.split('.').collect();
    let payload = tampered[1].to_owned() + "A";
    tampered[1] = &payload;
    bad.push(("a broken signature", tampered.join(".")));
    for (what, token) in bad {
        let (status, cache) = backchannel(&h, &token).await;
        assert_eq!(status, 400, "{what}");
        assert_eq!(cache.as_deref(), Some("no-store"), "{what}");
    }
    assert_eq!(h.sessions.len(), 2);

    // By sid: that session only, its refresh token revoked.
    let token = h.idp.logout_token("spa", None, Some(&sid));
    assert_eq!(backchannel(&h, &token).await.0, 200);
    assert_eq!(h.sessions.len(), 1);
    assert_eq!(h.idp.revocations(), 1);
    // The same token again: a replay.
    assert_eq!(backchannel(&h, &token).await.0, 400, "replayed jti");
    // By sub: every session of the user.
    let token = h.idp.logout_token("spa", Some("alice"), None);
    assert_eq!(backchannel(&h, &token).await.0, 200);
    assert!(h.sessions.is_empty());
    assert_eq!(h.idp.revocations(), 2);
    for browser in [first, second] {
        assert_eq!(api(&browser, format!("{}/bff/user", h.url)).await.0, 401);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_04_bf_09_local_api_routes_have_the_same_semantics() {
    let h = harness(Setup::default()).await;
    let browser = browser();
    assert_eq!(
        api(&browser, format!("{}/local/me", h.url)).await.0,
        401,
        "anonymous"
    );
    log_in(&h, &browser).await;
    let response = browser
        .get(format!("{}/local/me", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "no anti-forgery header");
    let response = browser
        .get(format!("{}/local/me", h.url))
        .header("x-csrf", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "alice");
    for (path, status) in [("/local/redirect", 401), ("/local/forbidden", 403)] {
        let response = browser
            .get(format!("{}{path}", h.url))
            .header("x-csrf", "1")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
        assert!(response.headers().get("location").is_none(), "{path}");
        assert!(response.headers().get("set-cookie").is_none(), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_11_websockets_are_proxied_with_the_token_and_an_origin_check() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    use tokio_tungstenite::tungstenite::Message;

    let h = harness(Setup::default()).await;
    let browser = browser();
    log_in(&h, &browser).await;
    let session = h
        .sessions
        .find(Some("alice"), None)
        .await
        .unwrap()
        .remove(0);
    let ws_url = format!("{}/api/user/ws", h.url.replacen("http", "ws", 1));
    let request = |origin: Option<&str>| {
        let mut request = ws_url.as_str().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("cookie", format!("bff={}", session.id).parse().unwrap());
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", origin.parse().unwrap());
        }
        request
    };

    // Cross-origin, or no Origin: refused before anything reaches the upstream.
    for origin in [Some("https://evil.example"), None] {
        match tokio_tungstenite::connect_async(request(origin)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 403, "{origin:?}");
            }
            other => panic!("{origin:?}: {other:?}"),
        }
    }
    assert!(h.seen.lock().unwrap().last.is_none());

    let (mut socket, _) = tokio_tungstenite::connect_async(request(Some(&h.url)))
        .await
        .unwrap();
    for text in ["hello", "again"] {
        socket.send(Message::Text(text.into())).await.unwrap();
        let answer = socket.next().await.unwrap().unwrap();
        assert_eq!(
            answer.into_text().unwrap().as_str(),
            format!("echo: {text}")
        );
    }
    socket.close(None).await.unwrap();
    let seen = h.seen.lock().unwrap().last.clone().unwrap();
    let token = seen["authorization"]
        .as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();
    assert_eq!(h.idp.verify_access_token(&token).unwrap()["sub"], "alice");

    // Anonymous: a User route refuses the upgrade.
    let mut anonymous = ws_url.as_str().into_client_request().unwrap();
    anonymous
        .headers_mut()
        .insert("origin", h.url.parse().unwrap());
    match tokio_tungstenite::connect_async(anonymous).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
        }
        other => panic!("{other:?}"),
    }
}

/// BF-05 with DPoP: the proxy presents DPoP-bound user tokens with a proof for the upstream URL
/// (`htu` without the query) and keeps and retries for the API's nonce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_05_dpop_bound_user_tokens_through_the_proxy_with_api_nonces() {
    let h = harness(Setup {
        dpop: true,
        ..Setup::default()
    })
    .await;
    let protected = h.protected.clone().unwrap();
    let browser = browser();
    log_in(&h, &browser).await;
    let (status, body) = api(&browser, format!("{}/api/dpop/orders?page=2", h.url)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scheme"], "DPoP");
    assert_eq!(body["path"], "/v1/orders");
    assert_eq!(
        (protected.requests(), protected.unauthorized()),
        (2, 1),
        "one nonce retry"
    );
    // A body of known length is replayable, so a POST is retried for a new nonce too.
    protected.rotate_nonce();
    let response = browser
        .post(format!("{}/api/dpop/orders", h.url))
        .header("x-csrf", "1")
        .body("{\"n\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!((protected.requests(), protected.unauthorized()), (4, 2));
    // The next call needs no retry: the nonce was kept.
    assert_eq!(api(&browser, format!("{}/api/dpop/x", h.url)).await.0, 200);
    assert_eq!(protected.requests(), 5);
}

/// BF-12, the request side: a body larger than the replayable limit, or of unknown length,
/// streams to the upstream whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_12_request_bodies_stream_upstream() {
    let h = harness(Setup::default()).await;
    let browser = browser();
    let big = "x".repeat(300 * 1024);
    let response = browser
        .post(format!("{}/api/open/upload", h.url))
        .header("x-csrf", "1")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echo["body"].as_str().unwrap().len(), big.len());
    // Chunked (no length): streamed as it comes.
    let chunks = futures_util::stream::iter(
        (0..8).map(|i| Ok::<_, std::io::Error>(bytes::Bytes::from(format!("part-{i};")))),
    );
    let response = browser
        .post(format!("{}/api/open/upload", h.url))
        .header("x-csrf", "1")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        echo["body"],
        "part-0;part-1;part-2;part-3;part-4;part-5;part-6;part-7;"
    );
}

/// The proxy's timeouts and upstream errors: a silent upstream is a 504 (the deadline is
/// checked four times a second, with no timer per request), an upstream's error is passed
/// through as it is, an unreachable upstream is a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bff_upstream_timeouts_and_errors() {
    let h = harness(Setup {
        routes: vec![("/api/open", tokenkeeper_bff::RouteToken::None)],
        timeout: Some(Duration::from_millis(300)),
        ..Setup::default()
    })
    .await;
    let browser = browser();
    let (status, _) = api(&browser, format!("{}/api/open/hang", h.url)).await;
    assert_eq!(status, 504);
    let response = browser
        .get(format!("{}/api/open/fail", h.url))
        .header("x-csrf", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.text().await.unwrap(), "upstream says no");

    // An upstream nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let route =
        tokenkeeper_bff::ApiRoute::new("/gone", format!("http://{closed}/").parse().unwrap())
            .token(tokenkeeper_bff::RouteToken::None);
    let oidc = h.bff.oidc().clone();
    let bff = tokenkeeper_bff::Bff::new(
        oidc,
        tokenkeeper_bff::BffOptions {
            insecure_cookies: true,
            ..tokenkeeper_bff::BffOptions::default()
        }
        .route(route),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app: axum::Router = bff.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (status, _) = api(&browser, format!("{url}/gone/x")).await;
    assert_eq!(status, 502);
}

/// BF-11 with DPoP: a DPoP-bound user token goes on the upstream handshake with a proof for
/// `GET` of the http(s) URL, with `ath`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_11_websockets_with_dpop_bound_tokens() {
    use base64::Engine as _;
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

    let h = harness(Setup {
        dpop: true,
        ..Setup::default()
    })
    .await;
    let browser = browser();
    log_in(&h, &browser).await;
    let session = h
        .sessions
        .find(Some("alice"), None)
        .await
        .unwrap()
        .remove(0);
    let mut request = format!("{}/api/user/ws", h.url.replacen("http", "ws", 1))
        .as_str()
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("cookie", format!("bff={}", session.id).parse().unwrap());
    request
        .headers_mut()
        .insert("origin", h.url.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text("hi".into()))
        .await
        .unwrap();
    let echo = socket.next().await.unwrap().unwrap();
    assert_eq!(echo.into_text().unwrap().as_str(), "echo: hi");
    let seen = h.seen.lock().unwrap().last.clone().unwrap();
    let token = seen["authorization"]
        .as_str()
        .unwrap()
        .strip_prefix("DPoP ")
        .unwrap()
        .to_owned();
    let proof = seen["dpop"].as_str().unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(proof.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["htm"], "GET");
    assert_eq!(claims["htu"], format!("{}/up/ws", h.upstream));
    assert_eq!(claims["ath"], tokenkeeper::dpop::ath(&token));
}

/// PR-04 (RFC 9470): an API's `401 insufficient_user_authentication` becomes a structured 401
/// for the SPA (no token renewal: a new token of the same login would not help); the step-up
/// login it names replaces the session with a stronger one and brings the user back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pr_04_step_up_challenge_becomes_a_structured_401_and_a_step_up_login() {
    let h = harness(Setup {
        more_routes: vec![("/api/step", |r| r)],
        ..Setup::default()
    })
    .await;
    h.idp.set_login_acr(Some("urn:pwd"), Some("urn:mfa"));
    let browser = browser();
    log_in(&h, &browser).await;
    let refreshes = h.idp.token_requests("refresh_token");
    let (status, body) = api(&browser, format!("{}/api/step/step-up", h.url)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "insufficient_user_authentication");
    assert_eq!(body["acr_values"], "urn:mfa");
    assert_eq!(body["max_age"], 300);
    let login_url = body["login_url"].as_str().unwrap().to_owned();
    assert_eq!(login_url, "/bff/login?acr_values=urn%3Amfa&max_age=300");
    assert_eq!(
        h.idp.token_requests("refresh_token"),
        refreshes,
        "no renewal for a step-up challenge"
    );
    // The SPA sends the user to the step-up login, with where to come back to. (This provider
    // gives every login a provider session of its own: the replaced session is revoked.)
    let revoked = h.idp.revocations();
    let (page, steps) = follow(
        &browser,
        &format!("{}{login_url}&returnUrl=/app/orders", h.url),
    )
    .await;
    assert_eq!(page.status(), 200, "{steps:?}");
    let (how, params) = h.idp.last_authorization_request().unwrap();
    assert_eq!(how, "plain");
    assert_eq!(
        params.get("acr_values").map(String::as_str),
        Some("urn:mfa")
    );
    assert_eq!(params.get("max_age").map(String::as_str), Some("300"));
    assert!(
        page.text().await.unwrap().contains("/app/orders"),
        "back where the user was"
    );
    let (status, _) = api(&browser, format!("{}/api/step/step-up", h.url)).await;
    assert_eq!(status, 200, "the stronger login's token is accepted");
    assert_eq!(
        h.idp.revocations(),
        revoked + 1,
        "another provider session: revoked"
    );
    // A step-up the provider does not meet is refused at the callback (acr checked).
    h.idp.set_login_acr(Some("urn:pwd"), None);
    let (page, _) = follow(&browser, &format!("{}{login_url}", h.url)).await;
    assert_eq!(page.status(), 400);
    // Hostile step-up parameters are refused before anything is sent.
    for bad in [
        "acr_values=%22x",
        "max_age=-1",
        "max_age=99999999999",
        "acr_values=a%07b",
    ] {
        let response = browser
            .get(format!("{}/bff/login?{bad}", h.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }
}
