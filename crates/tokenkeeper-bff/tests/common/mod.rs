//! A BFF under test: the test identity provider, an echo upstream, and the BFF on loopback.
#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::response::IntoResponse;
use axum::Router;
use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager, Clock, Timestamp};
use tokenkeeper_axum::{Oidc, OidcConfig};
use tokenkeeper_bff::{ApiRoute, Bff, BffOptions, InMemoryBffSessionStore, RouteToken};
use tokenkeeper_testing::{TestClient, TestServer};

/// A clock the test moves.
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self(AtomicU64::new(Timestamp::system_now().as_millis())))
    }
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::Relaxed))
    }
}

/// What the echo upstream saw last.
#[derive(Default, Clone, Debug)]
pub struct Seen {
    pub requests: u64,
    pub last: Option<serde_json::Value>,
}

pub struct Harness {
    pub url: String,
    pub idp: Arc<TestServer>,
    pub bff: Bff,
    pub upstream: String,
    pub seen: Arc<Mutex<Seen>>,
    pub clock: Arc<ManualClock>,
    pub sessions: Arc<InMemoryBffSessionStore>,
    /// The store in use (`sessions`, or Redis).
    pub store: Arc<dyn tokenkeeper_bff::BffSessionStore>,
    pub redirect_uri: String,
    /// The test server's protected API (with `dpop`).
    pub protected: Option<Arc<tokenkeeper_testing::TestApi>>,
    /// Releases the second event of `/events`.
    pub release: Arc<tokio::sync::Notify>,
    /// The app, to call in-process (`tower::ServiceExt::oneshot`).
    pub app: Router,
    /// The Redis behind the stores, with `redis`.
    pub redis: Option<tokenkeeper_redis::RedisTokenCache>,
}

/// The echo upstream: answers every path with what it received (JSON); `/events` streams two
/// server-sent events, the second only once the test releases it.
async fn upstream(seen: Arc<Mutex<Seen>>, release: Arc<tokio::sync::Notify>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let ws_seen = seen.clone();
    let app = Router::new()
        .route(
            "/up/ws",
            axum::routing::get(
                move |ws: axum::extract::ws::WebSocketUpgrade, headers: axum::http::HeaderMap| {
                    let seen = ws_seen.clone();
                    async move {
                        let header = |name: &str| {
                            headers
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned)
                        };
                        seen.lock().unwrap().last = Some(serde_json::json!({
                            "authorization": header("authorization"),
                            "dpop": header("dpop"),
                        }));
                        ws.on_upgrade(|mut socket| async move {
                            while let Some(Ok(message)) = socket.recv().await {
                                if let axum::extract::ws::Message::Text(text) = message {
                                    let echo = format!("echo: {}", text.as_str());
                                    if socket
                                        .send(axum::extract::ws::Message::Text(echo.into()))
                                        .await
                                        .is_err()
                                    {
                                        break;
                                    }
                                }
                            }
                        })
                    }
                },
            ),
        )
        .route(
            "/up/cors",
            axum::routing::get(|| async {
                (
                    [
                        ("access-control-allow-origin", "https://evil.example"),
                        ("access-control-allow-credentials", "true"),
                        ("x-kept", "yes"),
                    ],
                    "cors",
                )
            }),
        )
        .route(
            "/up/redirect",
            axum::routing::get(
                |axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>| async move {
                    (
                        axum::http::StatusCode::FOUND,
                        [("location", q.get("to").cloned().unwrap_or_default())],
                    )
                },
            ),
        )
        .route(
            "/up/step-up",
            // An API that wants an `acr` of urn:mfa (RFC 9470): a weaker token gets the
            // challenge.
            axum::routing::get(|headers: axum::http::HeaderMap| async move {
                use base64::Engine as _;
                let acr = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split_once(' '))
                    .and_then(|(_, token)| token.split('.').nth(1))
                    .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok())
                    .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok())
                    .and_then(|claims| claims["acr"].as_str().map(str::to_owned));
                if acr.as_deref() == Some("urn:mfa") {
                    (axum::http::StatusCode::OK, [("www-authenticate", "")], "strong enough").into_response()
                } else {
                    (
                        axum::http::StatusCode::UNAUTHORIZED,
                        [(
                            "www-authenticate",
                            r#"Bearer error="insufficient_user_authentication", error_description="stronger, please", acr_values="urn:mfa", max_age=300"#,
                        )],
                        "weak",
                    )
                        .into_response()
                }
            }),
        )
        .route(
            "/up/hang",
            axum::routing::get(std::future::pending::<&'static str>),
        )
        .route(
            "/up/fail",
            axum::routing::get(|| async {
                (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "upstream says no",
                )
            }),
        )
        .route(
            "/up/events",
            axum::routing::get(move || {
                let release = release.clone();
                async move {
                    let stream = futures_util::stream::unfold(0, move |n| {
                        let release = release.clone();
                        async move {
                            match n {
                                0 => Some((
                                    Ok::<_, std::io::Error>(bytes::Bytes::from("data: one\n\n")),
                                    1,
                                )),
                                1 => {
                                    release.notified().await;
                                    Some((Ok(bytes::Bytes::from("data: two\n\n")), 2))
                                }
                                _ => None,
                            }
                        }
                    });
                    (
                        [("content-type", "text/event-stream")],
                        axum::body::Body::from_stream(stream),
                    )
                }
            }),
        )
        .fallback(move |request: Request| {
            let seen = seen.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                let header = |name: &str| {
                    parts
                        .headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let echo = serde_json::json!({
                    "method": parts.method.as_str(),
                    "path": parts.uri.path(),
                    "query": parts.uri.query(),
                    "authorization": header("authorization"),
                    "cookie": header("cookie"),
                    "x_csrf": header("x-csrf"),
                    "x_hop": header("x-hop"),
                    "x_custom": header("x-custom"),
                    "body": String::from_utf8_lossy(&body),
                    "headers": parts
                        .headers
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), serde_json::Value::from(v.to_str().unwrap_or_default())))
                        .collect::<serde_json::Map<_, _>>(),
                });
                let mut seen = seen.lock().unwrap();
                seen.requests += 1;
                seen.last = Some(echo.clone());
                ([("set-cookie", "upstream=1; Path=/")], axum::Json(echo)).into_response()
            }
        });
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Shapes a route (methods, options) from its path and upstream.
pub type Shape = fn(ApiRoute) -> ApiRoute;

pub struct Setup {
    pub insecure_cookies: bool,
    pub dev: bool,
    pub routes: Vec<(&'static str, RouteToken)>,
    /// Sessions, user tokens (with the refresh lease) and taken login callbacks in Redis, under this
    /// prefix.
    pub redis: Option<String>,
    /// Where that Redis is (default: the node at `REDIS_URL`).
    pub redis_topology: Option<tokenkeeper_redis::RedisTopology>,
    /// Sessions, user tokens (with the lease), DPoP keys and login callbacks in the PostgreSQL
    /// at this URL instead.
    pub postgres: Option<String>,
    /// Another instance's identity provider and callback URL: a fleet behind one public URL.
    pub fleet_of: Option<(Arc<TestServer>, String)>,
    /// The routes' timeout (default 30 s).
    pub timeout: Option<Duration>,
    /// User tokens bound to a DPoP key per session; `/api/dpop` goes to the test server's
    /// protected API (which checks proofs and demands its own nonce).
    pub dpop: bool,
    /// More routes to the echo upstream (`{upstream}/up`), shaped by the function.
    pub more_routes: Vec<(&'static str, Shape)>,
    /// `BffOptions::trusted_proxies`.
    pub trusted_proxies: Vec<tokenkeeper_bff::Cidr>,
    /// Served as `tokenkeeper bff` serves it (the per-core server, `Bff::handler`) instead of
    /// through `axum::serve`.
    pub per_core_server: bool,
    /// `BffOptions::claims`.
    pub claims: tokenkeeper_bff::UserClaims,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            insecure_cookies: true,
            dev: false,
            routes: vec![
                ("/api/user", RouteToken::User),
                ("/api/client", RouteToken::Client),
                ("/api/either", RouteToken::UserOrClient),
                ("/api/maybe", RouteToken::UserOrNone),
                ("/api/open", RouteToken::None),
            ],
            redis: None,
            redis_topology: None,
            postgres: None,
            fleet_of: None,
            dpop: false,
            timeout: None,
            more_routes: Vec::new(),
            trusted_proxies: Vec::new(),
            per_core_server: false,
            claims: tokenkeeper_bff::UserClaims::default(),
        }
    }
}

pub async fn harness(setup: Setup) -> Harness {
    let per_core = setup.per_core_server.then(|| {
        tokenkeeper_proxy::server::Bound::bind("127.0.0.1:0".parse().unwrap(), 2).unwrap()
    });
    let listener = match &per_core {
        Some(_) => None,
        None => Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
    };
    let url = match (&per_core, &listener) {
        (Some(bound), _) => format!("http://{}", bound.local_addr()),
        (None, Some(listener)) => format!("http://{}", listener.local_addr().unwrap()),
        (None, None) => unreachable!(),
    };
    let (idp, redirect_uri) = match setup.fleet_of {
        Some(fleet) => fleet,
        None => {
            let redirect_uri = format!("{url}/bff/callback");
            let idp = Arc::new(
                TestServer::builder()
                    .client(TestClient::new("spa", "spa-secret").redirect_uri(&redirect_uri))
                    .client(TestClient::new("bff-worker", "worker-secret"))
                    .start()
                    .await,
            );
            (idp, redirect_uri)
        }
    };
    idp.set_login(Some("alice"));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let release = Arc::new(tokio::sync::Notify::new());
    let upstream = upstream(seen.clone(), release.clone()).await;
    let mut config = OidcConfig::new(idp.issuer(), "spa", "spa-secret", redirect_uri.clone());
    config.insecure_cookies = setup.insecure_cookies;
    let mut users = tokenkeeper::user::UserTokenManager::builder(ClientConfig::from_issuer(
        idp.issuer(),
        "spa",
        "spa-secret",
    ));
    let redis = setup.redis.as_ref().map(|prefix| {
        let topology = setup.redis_topology.clone().unwrap_or_else(|| {
            tokenkeeper_redis::RedisTopology::node(
                std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned()),
            )
        });
        tokenkeeper_redis::RedisTokenCache::connect(
            topology,
            tokenkeeper_redis::RedisOptions {
                prefix: prefix.clone(),
                encryption: Some(tokenkeeper_redis::Encryption::new("k1", &[5; 32]).unwrap()),
                ..tokenkeeper_redis::RedisOptions::default()
            },
        )
        .unwrap()
    });
    if setup.dpop {
        users = users.per_session_dpop(tokenkeeper::dpop::DpopAlgorithm::ES256);
    }
    if let Some(redis) = &redis {
        users = users
            .store(Arc::new(tokenkeeper_redis::RedisUserTokenStore::new(redis)))
            .lease(Arc::new(tokenkeeper_redis::RedisLease::new(redis)));
        if setup.dpop {
            users = users.dpop_key_store(Arc::new(
                tokenkeeper_redis::RedisDpopKeyStore::new(redis).unwrap(),
            ));
        }
    }
    let postgres = setup.postgres.as_ref().map(|url| {
        tokenkeeper_postgres::PostgresDatabase::new(
            url,
            tokenkeeper_postgres::PostgresOptions::encrypted(
                tokenkeeper::Encryption::new("k1", &[5; 32]).unwrap(),
            ),
        )
        .unwrap()
    });
    if let Some(db) = &postgres {
        users = users
            .store(Arc::new(tokenkeeper_postgres::PostgresUserTokenStore::new(
                db,
            )))
            .lease(Arc::new(tokenkeeper_postgres::PostgresLease::new(db)));
        if setup.dpop {
            users = users.dpop_key_store(Arc::new(
                tokenkeeper_postgres::PostgresDpopKeyStore::new(db).unwrap(),
            ));
        }
    }
    let mut oidc = Oidc::new(config, users.build().unwrap()).unwrap();
    if let Some(db) = &postgres {
        oidc = oidc.with_login_replay_store(Arc::new(
            tokenkeeper_postgres::PostgresLoginReplayStore::new(db),
        ));
    }
    if let Some(redis) = &redis {
        oidc = oidc.with_login_replay_store(Arc::new(
            tokenkeeper_redis::RedisLoginReplayStore::new(redis),
        ));
    }
    let clients = ClientCredentialsTokenManager::builder()
        .client(
            "worker",
            ClientConfig::new(idp.token_endpoint(), "bff-worker", "worker-secret"),
        )
        .build()
        .unwrap();
    let mut options = BffOptions {
        insecure_cookies: setup.insecure_cookies,
        dev: setup.dev,
        trusted_proxies: setup.trusted_proxies.clone(),
        claims: setup.claims.clone(),
        ..BffOptions::default()
    };
    for (path, shape) in &setup.more_routes {
        options = options.route(shape(ApiRoute::new(
            *path,
            format!("{upstream}/up").parse().unwrap(),
        )));
    }
    for (path, token) in setup.routes {
        let mut route = ApiRoute::new(path, format!("{upstream}/up").parse().unwrap()).token(token);
        if let Some(timeout) = setup.timeout {
            route = route.timeout(timeout);
        }
        options = options.route(route);
    }
    let protected = if setup.dpop {
        let api = idp.start_api().await;
        api.set_nonce_required(true);
        options = options.route(
            ApiRoute::new("/api/dpop", api.url("/v1").parse().unwrap()).token(RouteToken::User),
        );
        Some(Arc::new(api))
    } else {
        None
    };
    let sessions = Arc::new(InMemoryBffSessionStore::new());
    let store: Arc<dyn tokenkeeper_bff::BffSessionStore> = match (&redis, &postgres) {
        (Some(redis), _) => Arc::new(tokenkeeper_bff::RedisBffSessionStore::new(redis)),
        (None, Some(db)) => Arc::new(tokenkeeper_bff::PostgresBffSessionStore::new(db)),
        (None, None) => sessions.clone(),
    };
    let clock = ManualClock::new();
    let bff = Bff::with_store(oidc, options, store.clone(), Some(clients))
        .unwrap()
        .with_clock(clock.clone());
    let local = bff
        .local_api(
            Router::new()
                .route(
                    "/local/me",
                    axum::routing::get(|user: tokenkeeper_bff::BffUser| async move {
                        user.session.sub.clone()
                    }),
                )
                .route(
                    "/local/redirect",
                    axum::routing::get(|| async {
                        axum::response::Redirect::to("https://idp.example/login")
                    }),
                )
                .route(
                    "/local/forbidden",
                    axum::routing::get(|| async {
                        (
                            axum::http::StatusCode::FORBIDDEN,
                            [("set-cookie", "x=1"), ("location", "/elsewhere")],
                        )
                    }),
                ),
        )
        .with_state(bff.clone());
    let beside = Router::new()
        .route("/app", axum::routing::get(|| async { "the app" }))
        .merge(local);
    let app: Router = beside.clone().merge(bff.router());
    match (per_core, listener) {
        (Some(bound), _) => {
            let options = tokenkeeper_proxy::server::ServerOptions {
                workers: 2,
                ..Default::default()
            };
            // Leaked on purpose: it serves until the test process ends.
            std::mem::forget(
                bound
                    .serve(Arc::new(bff.handler(beside)), &options)
                    .unwrap(),
            );
        }
        (None, Some(listener)) => {
            let served = app
                .clone()
                .into_make_service_with_connect_info::<std::net::SocketAddr>();
            tokio::spawn(async move { axum::serve(listener, served).await });
        }
        (None, None) => unreachable!(),
    }
    Harness {
        url,
        idp,
        bff,
        upstream,
        seen,
        clock,
        sessions,
        store,
        redirect_uri,
        release,
        protected,
        app,
        redis,
    }
}

/// The keys Redis holds under `prefix`.
pub async fn redis_keys(prefix: &str) -> Vec<String> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// Every value Redis holds under `prefix` (strings, hash fields, set members), as bytes.
pub async fn redis_values(prefix: &str) -> Vec<Vec<u8>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut values = Vec::new();
    for key in redis_keys(prefix).await {
        values.push(key.clone().into_bytes());
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        match kind.as_str() {
            "string" => values.push(
                redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap(),
            ),
            "hash" => {
                let all: Vec<Vec<u8>> = redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                values.extend(all);
            }
            "set" => {
                let all: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                values.extend(all);
            }
            "zset" => {
                let all: Vec<Vec<u8>> = redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                values.extend(all);
            }
            _ => {}
        }
    }
    values
}

/// A browser: a cookie jar, redirects followed by hand (to see each step).
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Follows `Location`s from `start`; returns the last response (not a redirect) and every URL.
pub async fn follow(browser: &reqwest::Client, start: &str) -> (reqwest::Response, Vec<String>) {
    let mut url = start.to_owned();
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(url.clone());
        let response = browser.get(&url).send().await.unwrap();
        let Some(location) = response.headers().get("location") else {
            return (response, seen);
        };
        url = reqwest::Url::parse(&url)
            .unwrap()
            .join(location.to_str().unwrap())
            .unwrap()
            .to_string();
    }
    panic!("too many redirects: {seen:?}");
}

/// Logs alice in through the BFF; returns the callback page's body.
pub async fn log_in(h: &Harness, browser: &reqwest::Client) -> String {
    let (page, _) = follow(browser, &format!("{}/bff/login?returnUrl=/app", h.url)).await;
    assert_eq!(page.status(), 200);
    page.text().await.unwrap()
}

/// Logs alice in through the BFF; returns the session cookie's value (the session id).
pub async fn log_in_for_cookie(h: &Harness, browser: &reqwest::Client) -> String {
    let (page, _) = follow(browser, &format!("{}/bff/login?returnUrl=/app", h.url)).await;
    assert_eq!(page.status(), 200);
    page.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().unwrap().strip_prefix("bff="))
        .map(|v| v.split(';').next().unwrap().to_owned())
        .next()
        .unwrap()
}

/// The session's logout URL (`bff:logout_url` of `/bff/user`).
pub async fn logout_url(h: &Harness, browser: &reqwest::Client) -> String {
    let (_, user) = api(browser, format!("{}/bff/user", h.url)).await;
    user.as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "bff:logout_url")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `GET` with the anti-forgery header; status and JSON body.
pub async fn api(browser: &reqwest::Client, url: String) -> (u16, serde_json::Value) {
    let response = browser.get(url).header("x-csrf", "1").send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// A proxied WebSocket.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket through the BFF at `path`, with the session `cookie`; checked with one echo.
pub async fn open(h: &Harness, path: &str, cookie: &str) -> Socket {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let url = format!("{}{path}", h.url.replacen("http", "ws", 1));
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("cookie", format!("bff={cookie}").parse().unwrap());
    request
        .headers_mut()
        .insert("origin", h.url.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text("ping".into()))
        .await
        .unwrap();
    let echo = socket.next().await.unwrap().unwrap();
    assert_eq!(echo.into_text().unwrap().as_str(), "echo: ping");
    socket
}

/// The close code the socket ends with (waiting for the close frame, at most 10 s).
pub async fn close_code(socket: &mut Socket) -> Option<u16> {
    use futures_util::StreamExt as _;
    let wait = async {
        while let Some(message) = socket.next().await {
            match message {
                Ok(tokio_tungstenite::tungstenite::Message::Close(frame)) => {
                    return frame.map(|f| u16::from(f.code))
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("the relay did not close")
}
