//! The BFF's proxy under attack (SEC-16, SEC-17, SEC-21, SEC-23) and its sharp edges (UX-01,
//! UX-06): what a browser can make the upstream believe, which methods and paths get through
//! with the user's token, and what the upstream can make the browser do.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use tokenkeeper_bff::{AntiForgery, ApiRoute, RouteToken};

/// A request through the proxy with the anti-forgery header and extra `headers`.
async fn call(
    browser: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = browser.request(method, url).header("x-csrf", "1");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// SEC-16: `X-Forwarded-*`, `X-Real-IP`, `X-Original-URL` and `X-Rewrite-URL` from the browser
/// never reach the upstream; the BFF sets `X-Forwarded-For/-Proto/-Host` itself, and takes
/// them from a trusted proxy only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_16_forwarding_headers_come_from_the_bff() {
    let spoofed: [(&str, &str); 9] = [
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-host", "admin.internal"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-prefix", "/admin"),
        ("x-real-ip", "10.0.0.2"),
        ("x-original-url", "/admin/delete"),
        ("x-rewrite-url", "/admin/delete"),
        ("forwarded", "for=10.0.0.3;host=admin.internal"),
        ("true-client-ip", "10.0.0.4"),
    ];
    let h = harness(Setup::default()).await;
    let browser = browser();
    log_in(&h, &browser).await;
    for route in ["/api/user/x", "/api/open/x", "/api/client/x"] {
        let response = call(
            &browser,
            reqwest::Method::GET,
            format!("{}{route}", h.url),
            &spoofed,
        )
        .await;
        assert_eq!(response.status(), 200, "{route}");
        let seen: serde_json::Value = response.json().await.unwrap();
        let headers = &seen["headers"];
        for (name, _) in spoofed {
            if name.starts_with("x-forwarded-")
                && ["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"].contains(&name)
            {
                continue;
            }
            assert!(
                headers.get(name).is_none(),
                "{route}: {name} reached the upstream"
            );
        }
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1", "{route}");
        let host = h.url.trim_start_matches("http://");
        assert_eq!(headers["x-forwarded-host"], host, "{route}");
        assert_eq!(headers["x-forwarded-proto"], "http", "{route}");
    }

    // Behind a trusted load balancer: its chain, proto and host are passed on (well-formed
    // ones only).
    let trusted = harness(Setup {
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..Setup::default()
    })
    .await;
    let browser = common::browser();
    log_in(&trusted, &browser).await;
    let seen: serde_json::Value = call(
        &browser,
        reqwest::Method::GET,
        format!("{}/api/user/x", trusted.url),
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example.com"),
            ("x-real-ip", "10.0.0.2"),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(seen["headers"]["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    assert_eq!(seen["headers"]["x-forwarded-host"], "app.example.com");
    assert!(seen["headers"].get("x-real-ip").is_none());
    let seen: serde_json::Value = call(
        &browser,
        reqwest::Method::GET,
        format!("{}/api/user/x", trusted.url),
        &[
            ("x-forwarded-for", "not-an-ip, <script>"),
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-host", "evil.example/admin"),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
}

/// SEC-17: TRACE and CONNECT are never proxied (405); a route may list its methods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_17_trace_and_connect_are_never_proxied() {
    let h = harness(Setup {
        more_routes: vec![("/api/read", |r: ApiRoute| {
            r.token(RouteToken::User)
                .methods([http::Method::GET, http::Method::HEAD])
        })],
        ..Setup::default()
    })
    .await;
    let browser = browser();
    log_in(&h, &browser).await;
    let before = h.seen.lock().unwrap().requests;
    for route in ["/api/user/x", "/api/open/x", "/api/read/x"] {
        let response = call(
            &browser,
            reqwest::Method::TRACE,
            format!("{}{route}", h.url),
            &[],
        )
        .await;
        assert_eq!(response.status(), 405, "TRACE {route}");
    }
    // CONNECT in its request-target form, over a raw connection.
    let mut stream = tokio::net::TcpStream::connect(h.url.trim_start_matches("http://"))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    stream
        .write_all(b"CONNECT /api/open/x HTTP/1.1\r\nHost: x\r\nX-CSRF: 1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; 64];
    let n = stream.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    let response = call(
        &browser,
        reqwest::Method::POST,
        format!("{}/api/read/x", h.url),
        &[],
    )
    .await;
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD");
    assert_eq!(
        h.seen.lock().unwrap().requests,
        before,
        "nothing reached the upstream"
    );
    let ok = call(
        &browser,
        reqwest::Method::GET,
        format!("{}/api/read/x", h.url),
        &[],
    )
    .await;
    assert_eq!(ok.status(), 200);
}

/// SEC-21: a forwarded path segment with `%2F`, `%5C`, `%2E`, `;` or `%00` (any case) is
/// refused before anything reaches the upstream with the user's token, unless the route lets
/// encoded slashes through (and then only those).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_21_encoded_traversal_is_refused() {
    let h = harness(Setup {
        more_routes: vec![("/api/slashes", |r: ApiRoute| {
            r.token(RouteToken::User).allow_encoded_slashes(true)
        })],
        ..Setup::default()
    })
    .await;
    let browser = browser();
    let session = log_in_for_cookie(&h, &browser).await;
    let before = h.seen.lock().unwrap().requests;
    // Sent as they are, the way an attacker's client sends them (a browser's URL parser
    // would resolve some of them first).
    let raw = |path: &'static str| {
        let (addr, session) = (
            h.url.trim_start_matches("http://").to_owned(),
            session.clone(),
        );
        async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nX-CSRF: 1\r\nCookie: bff={session}\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.unwrap();
            String::from_utf8_lossy(&answer)
                .split(' ')
                .nth(1)
                .unwrap_or_default()
                .parse::<u16>()
                .unwrap_or_default()
        }
    };
    for path in [
        "/api/user/..%2fadmin",
        "/api/user/..%2Fadmin",
        "/api/user/%2e%2e%2fadmin",
        "/api/user/%2E%2E/admin",
        "/api/user/..%5cadmin",
        "/api/user/..%5Cadmin",
        "/api/user/x;jsessionid=1",
        "/api/user/x%00.json",
        "/api/user/.%2e/admin",
        "/api/slashes/..%2e/admin",
        "/api/slashes/x%5cy",
    ] {
        assert_eq!(raw(path).await, 400, "{path}");
    }
    assert_eq!(raw("/api/user/x").await, 200, "the session works");
    let before = before + 1;
    assert_eq!(
        h.seen.lock().unwrap().requests,
        before,
        "nothing reached the upstream"
    );
    let response = call(
        &browser,
        reqwest::Method::GET,
        format!("{}/api/slashes/a%2Fb", h.url),
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);
    let seen: serde_json::Value = response.json().await.unwrap();
    assert_eq!(seen["path"], "/up/a%2Fb");
    // Normal encodings still pass.
    let response = call(
        &browser,
        reqwest::Method::GET,
        format!("{}/api/user/a%20b?q=x%2Fy;z", h.url),
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);
}

/// SEC-23: upstream `Access-Control-*` headers are stripped unless the route opts in; an
/// absolute `Location` pointing at the upstream becomes the BFF's route, one elsewhere on the
/// upstream is dropped, one on another site is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_23_upstream_response_headers_are_cleaned() {
    let h = harness(Setup {
        more_routes: vec![("/api/cors", |r: ApiRoute| {
            r.token(RouteToken::User).pass_cors_headers(true)
        })],
        ..Setup::default()
    })
    .await;
    let browser = browser();
    log_in(&h, &browser).await;
    let response = call(
        &browser,
        reqwest::Method::GET,
        format!("{}/api/user/cors", h.url),
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    assert!(response
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
    assert_eq!(response.headers()["x-kept"], "yes");
    let response = call(
        &browser,
        reqwest::Method::GET,
        format!("{}/api/cors/cors", h.url),
        &[],
    )
    .await;
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://evil.example"
    );

    let up = &h.upstream;
    for (to, expected) in [
        (
            format!("{up}/up/items/2?page=1"),
            Some("/api/user/items/2?page=1".to_owned()),
        ),
        (
            "/up/items/3".to_owned(),
            Some("/api/user/items/3".to_owned()),
        ),
        (format!("{up}/internal/admin"), None),
        ("/internal/admin".to_owned(), None),
        (
            "https://login.example.com/start".to_owned(),
            Some("https://login.example.com/start".to_owned()),
        ),
    ] {
        let target = format!(
            "{}/api/user/redirect?to={}",
            h.url,
            url::form_urlencoded::byte_serialize(to.as_bytes()).collect::<String>()
        );
        let response = call(&browser, reqwest::Method::GET, target, &[]).await;
        assert_eq!(response.status(), 302, "{to}");
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(location, expected, "{to}");
    }
}

/// UX-01: a `token = "client"` route with a `resource` (and `scope`) sends them to the token
/// endpoint; a key that does not apply to a route is an error with key and line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ux_01_client_routes_send_their_resource_and_no_key_is_ignored() {
    let h = harness(Setup {
        more_routes: vec![("/api/inventory", |r: ApiRoute| {
            r.token(RouteToken::Client).client_params(
                tokenkeeper::TokenRequestParams::new()
                    .resource(
                        tokenkeeper::Resource::parse("https://inventory.example.com").unwrap(),
                    )
                    .scope("inventory.read"),
            )
        })],
        ..Setup::default()
    })
    .await;
    let browser = browser();
    let response = call(
        &browser,
        reqwest::Method::GET,
        format!("{}/api/inventory/x", h.url),
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);
    let request = h.idp.last_token_request().unwrap();
    assert_eq!(request.form_value("grant_type"), Some("client_credentials"));
    assert_eq!(
        request.form_value("resource"),
        Some("https://inventory.example.com")
    );
    assert_eq!(request.form_value("scope"), Some("inventory.read"));

    // The configuration file: the same, and no inapplicable key.
    use tokenkeeper_bff::config::BffConfig;
    let file = |route: &str| {
        format!(
            "[bff]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://app.example.com\"\n\n[oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"spa\"\nclient_secret = \"s\"\n\n[client]\nclient_id = \"w\"\nclient_secret = \"s\"\n\n[[routes]]\npath = \"/api\"\nupstream = \"https://api.internal\"\n{route}"
        )
    };
    let validate = |text: String| {
        BffConfig::parse(&text)
            .and_then(|c| c.validate(&text, &|_| None))
            .map(|v| v.frontends[0].options.routes.clone())
    };
    let routes = validate(file(
        "token = \"client\"\nresource = \"https://inventory.example.com\"\n",
    ))
    .unwrap();
    assert_eq!(routes.len(), 1);
    for (route, key, line) in [
        (
            "token = \"none\"\nresource = \"https://x.example\"\n",
            "routes[0].resource",
            18,
        ),
        ("token = \"none\"\nscope = \"a\"\n", "routes[0].scope", 18),
        (
            "token = \"user\"\nanti_forgery = \"none\"\n",
            "routes[0].anti_forgery",
            18,
        ),
        ("methods = [\"GET\", \"TRACE\"]\n", "routes[0].methods", 17),
        ("methods = [\"G ET\"]\n", "routes[0].methods", 17),
        ("anti_forgery = \"maybe\"\n", "routes[0].anti_forgery", 17),
        ("colour = \"blue\"\n", "routes[0].colour", 17),
    ] {
        let e = validate(file(route)).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), (key, Some(line)), "{route}: {e}");
    }
}

/// UX-06: a GET route with `anti_forgery = "same-origin"` takes `Sec-Fetch-Site: same-origin`
/// (what an `EventSource` of the BFF's own page sends) instead of the header; other sites'
/// requests and other methods still need the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ux_06_event_source_routes_take_same_origin_fetch_metadata() {
    let h = harness(Setup {
        more_routes: vec![("/api/stream", |r: ApiRoute| {
            r.token(RouteToken::User)
                .anti_forgery_mode(AntiForgery::SameOriginReads)
        })],
        ..Setup::default()
    })
    .await;
    let browser = browser();
    log_in(&h, &browser).await;
    let get = |site: Option<&'static str>, method: reqwest::Method, path: &'static str| {
        let mut request = browser.request(method, format!("{}{path}", h.url));
        if let Some(site) = site {
            request = request.header("sec-fetch-site", site);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        get(
            Some("same-origin"),
            reqwest::Method::GET,
            "/api/stream/events"
        )
        .await,
        200
    );
    assert_eq!(
        get(
            Some("same-site"),
            reqwest::Method::GET,
            "/api/stream/events"
        )
        .await,
        401
    );
    assert_eq!(
        get(
            Some("cross-site"),
            reqwest::Method::GET,
            "/api/stream/events"
        )
        .await,
        401
    );
    assert_eq!(
        get(None, reqwest::Method::GET, "/api/stream/events").await,
        401
    );
    assert_eq!(
        get(Some("same-origin"), reqwest::Method::POST, "/api/stream/x").await,
        401
    );
    // Other routes keep the header.
    assert_eq!(
        get(Some("same-origin"), reqwest::Method::GET, "/api/user/x").await,
        401
    );
}
