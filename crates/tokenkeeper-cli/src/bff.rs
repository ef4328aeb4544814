//! `tokenkeeper bff`: the BFF host, from a configuration file or — with `--dev` — a whole
//! development stack in one process: the BFF, the test identity provider with a login page, a
//! sample API (plain, server-sent events, WebSocket) and a small SPA. `--check` runs the SPA's
//! journey headlessly against it and exits 0 or 1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use tokenkeeper::ClientConfig;
use tokenkeeper_axum::{Oidc, OidcConfig};
use tokenkeeper_bff::{AntiForgery, ApiRoute, Bff, BffOptions, RouteToken};
use tokenkeeper_testing::{TestClient, TestServer};

/// Options of `tokenkeeper bff`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BffArgs {
    /// The configuration file (TOML).
    #[arg(long, required_unless_present = "dev", conflicts_with = "dev")]
    pub(crate) config: Option<std::path::PathBuf>,
    /// Validate the configuration file and exit.
    #[arg(long, requires = "config")]
    pub(crate) check_config: bool,
    /// Development mode, no configuration file: the BFF, a test identity provider with a login
    /// page, a sample API and a small SPA, on 127.0.0.1. Cookies are not Secure (plain http).
    #[arg(long)]
    pub(crate) dev: bool,
    /// With --dev: run the SPA's journey headlessly (login, user, API, events, WebSocket,
    /// logout) and exit 0 or 1.
    #[arg(long, requires = "dev")]
    pub(crate) check: bool,
    /// With --dev: where the BFF listens (loopback only; default 127.0.0.1:8080, or any free
    /// port with --check).
    #[arg(long)]
    pub(crate) listen: Option<SocketAddr>,
    /// With --dev: where the development identity provider listens (loopback only; port 0:
    /// any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub(crate) idp_listen: SocketAddr,
    /// With --dev: where the sample API listens (loopback only; port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub(crate) api_listen: SocketAddr,
}

/// Where the development stack listens.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DevPorts {
    /// The BFF.
    pub(crate) bff: SocketAddr,
    /// The development identity provider.
    pub(crate) idp: SocketAddr,
    /// The sample API.
    pub(crate) api: SocketAddr,
}

impl DevPorts {
    /// Refuses a non-loopback address (SEC-20): development mode has plain-http cookies, a
    /// login page that signs anyone in, and a diagnostics endpoint that shows tokens.
    fn check(&self) -> anyhow::Result<()> {
        for (flag, addr) in [
            ("--listen", self.bff),
            ("--idp-listen", self.idp),
            ("--api-listen", self.api),
        ] {
            if !addr.ip().is_loopback() {
                anyhow::bail!(
                    "{flag} {addr}: development mode listens on loopback only (plain-http cookies, a login page that signs anyone in, tokens shown by its diagnostics); use --config for anything else"
                );
            }
        }
        Ok(())
    }
}

/// A running development stack.
pub(crate) struct DevStack {
    /// The BFF's URL (open it in a browser).
    pub(crate) url: String,
    idp: Arc<TestServer>,
    api: String,
    _bff: Bff,
}

/// Starts the development stack on `ports` (port 0: any free port), loopback only.
pub(crate) async fn start_dev(ports: DevPorts) -> anyhow::Result<DevStack> {
    ports.check()?;
    let listen = ports.bff;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (--listen)"))?;
    let url = format!("http://{}", listener.local_addr()?);
    let redirect_uri = format!("{url}/bff/callback");
    let idp = Arc::new(
        TestServer::builder()
            .client(TestClient::new("spa", "dev-secret").redirect_uri(&redirect_uri))
            .bind(ports.idp)
            .try_start()
            .await
            .with_context(|| format!("cannot listen on {} (--idp-listen)", ports.idp))?,
    );
    idp.set_login_page(true);
    let api = start_sample_api(idp.clone(), ports.api).await?;

    let mut config = OidcConfig::new(idp.issuer(), "spa", "dev-secret", redirect_uri);
    config.insecure_cookies = true;
    config.post_logout_redirect_uri = Some(format!("{url}/"));
    let users = tokenkeeper::user::UserTokenManager::builder(ClientConfig::from_issuer(
        idp.issuer(),
        "spa",
        "dev-secret",
    ))
    .build()?;
    let oidc = Oidc::new(config, users)?;
    let options = BffOptions {
        insecure_cookies: true,
        dev: true,
        ..BffOptions::default()
    }
    .route(
        ApiRoute::new("/api", api.parse()?)
            .token(RouteToken::User)
            // The SPA's EventSource cannot send X-CSRF (UX-06).
            .anti_forgery_mode(AntiForgery::SameOriginReads),
    );
    let bff = Bff::new(oidc, options)?;
    bff.spawn_cleanup(Duration::from_secs(600));
    let toml = production_toml(idp.issuer(), &api);
    let app: Router = Router::new()
        .route(
            "/",
            axum::routing::get(|| async {
                (
                    [("content-type", "text/html; charset=utf-8")],
                    include_str!("../assets/dev-spa.html"),
                )
            }),
        )
        .route(
            "/bff.toml",
            axum::routing::get(move || async move {
                ([("content-type", "text/plain; charset=utf-8")], toml)
            }),
        )
        .merge(bff.router());
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the BFF stopped");
        }
    });
    Ok(DevStack {
        url,
        idp,
        api,
        _bff: bff,
    })
}

/// The `bff.toml` that runs what the development stack shows, for real (BF-26): the dev
/// provider and sample API stand where the user's own go.
fn production_toml(issuer: &str, api: &str) -> String {
    format!(
        r#"# bff.toml: this development stack, for real. Run it with
#   tokenkeeper bff --config bff.toml        (--check-config validates it)

[bff]
listen = "0.0.0.0:8080"
public_url = "https://app.example.com"   # your app's URL; register {{public_url}}/bff/callback
static_dir = "dist"                      # your SPA's build (index.html for its own routes)

[oidc]
issuer = "{issuer}"                      # your provider
client_id = "spa"
client_secret_env = "BFF_CLIENT_SECRET"  # the secret, from the environment
scope = "openid offline_access"

[[routes]]
path = "/api"
upstream = "{api}"                       # your API
token = "user"
anti_forgery = "same-origin"             # the SPA's EventSource cannot send X-CSRF

# More: several frontends, Redis for a fleet, the operations listener, forward auth,
# OpenTelemetry: see the README's configuration reference.
"#
    )
}

impl DevStack {
    /// What to print at start.
    pub(crate) fn banner(&self) -> String {
        format!(
            "tokenkeeper BFF (development mode: cookies are not Secure; never expose it)\n\n  open {}\n\n  identity provider: {} (any user name signs in)\n  sample API:        {}\n  diagnostics:       {}/bff/diagnostics (send X-CSRF: 1, as the SPA's Diagnostics button does)\n\nCtrl-C stops it.",
            self.url,
            self.idp.issuer(),
            self.api,
            self.url
        )
    }
}

/// The sample API: `/hello`, `/events` (server-sent events, one a second) and `/ws` (echo),
/// each checking the access token the BFF attached.
async fn start_sample_api(idp: Arc<TestServer>, listen: SocketAddr) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (--api-listen)"))?;
    let url = format!("http://{}", listener.local_addr()?);
    let check = move |headers: &HeaderMap| -> Result<String, StatusCode> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(StatusCode::UNAUTHORIZED)?;
        let claims = idp
            .verify_access_token(token)
            .map_err(|_| StatusCode::UNAUTHORIZED)?;
        Ok(claims
            .get("sub")
            .and_then(|s| s.as_str())
            .unwrap_or_default()
            .to_owned())
    };
    let (hello, events, ws) = (check.clone(), check.clone(), check);
    let app = Router::new()
        .route(
            "/hello",
            axum::routing::get(move |headers: HeaderMap| async move {
                match hello(&headers) {
                    Ok(sub) => axum::Json(serde_json::json!({
                        "message": format!("hello, {sub}"),
                        "sub": sub,
                    }))
                    .into_response(),
                    Err(status) => status.into_response(),
                }
            }),
        )
        .route(
            "/events",
            axum::routing::get(move |headers: HeaderMap| async move {
                if let Err(status) = events(&headers) {
                    return status.into_response();
                }
                let stream = futures_util::stream::unfold(0u32, |n| async move {
                    if n > 0 {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    (n < 3600).then(|| {
                        (
                            Ok::<_, std::io::Error>(bytes::Bytes::from(format!(
                                "data: tick {n}\n\n"
                            ))),
                            n + 1,
                        )
                    })
                });
                (
                    [
                        ("content-type", "text/event-stream"),
                        ("cache-control", "no-store"),
                    ],
                    axum::body::Body::from_stream(stream),
                )
                    .into_response()
            }),
        )
        .route(
            "/ws",
            axum::routing::get(
                move |upgrade: WebSocketUpgrade, headers: HeaderMap| async move {
                    if let Err(status) = ws(&headers) {
                        return status.into_response();
                    }
                    upgrade
                        .on_upgrade(|mut socket| async move {
                            while let Some(Ok(message)) = socket.recv().await {
                                if let Message::Text(text) = message {
                                    let echo = format!("echo: {}", text.as_str());
                                    if socket.send(Message::Text(echo.into())).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        })
                        .into_response()
                },
            ),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// Runs `tokenkeeper bff`.
/// Whether `--config`'s file asks for JSON logs (`[bff] log_format = "json"`). Read before
/// the logs are set up; a file that cannot be read or parsed gets text logs, and `run` then
/// reports what is wrong with it.
pub(crate) fn json_logs(args: &BffArgs) -> bool {
    args.config
        .as_ref()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| tokenkeeper_bff::config::BffConfig::parse(&text).ok())
        .is_some_and(|config| config.bff.json_logs())
}

/// `--config`'s `[telemetry]`, checked (BF-23): read before the logs are set up, as the
/// exporter is part of them. A file that cannot be read or parsed has none here; `run` then
/// reports what is wrong with it.
#[cfg(feature = "otel")]
pub(crate) fn telemetry(
    args: &BffArgs,
) -> anyhow::Result<Option<tokenkeeper_bff::config::ValidatedTelemetry>> {
    let Some(path) = &args.config else {
        return Ok(None);
    };
    let Some(text) = std::fs::read_to_string(path).ok() else {
        return Ok(None);
    };
    let Ok(config) = tokenkeeper_bff::config::BffConfig::parse(&text) else {
        return Ok(None);
    };
    match &config.telemetry {
        Some(section) => section
            .validate(&text)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        None => Ok(None),
    }
}

pub(crate) async fn run(args: BffArgs) -> anyhow::Result<()> {
    if args.dev {
        let default_port = if args.check { 0 } else { 8080 };
        let ports = DevPorts {
            bff: args
                .listen
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], default_port))),
            idp: args.idp_listen,
            api: args.api_listen,
        };
        let stack = start_dev(ports).await?;
        if args.check {
            let report = check(&stack.url).await?;
            print(&report);
            return Ok(());
        }
        print(&stack.banner());
        tokio::signal::ctrl_c().await?;
        return Ok(());
    }
    let path = args.config.context("give --config FILE, or --dev")?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let env = |name: &str| std::env::var(name).ok();
    let config = tokenkeeper_bff::config::BffConfig::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let validated = config
        .validate(&text, &env)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    for notice in &validated.notices {
        eprintln_notice(&format!("{}: warning: {notice}", path.display()));
    }
    if args.check_config {
        print(&format!("{}: configuration OK", path.display()));
        return Ok(());
    }
    if validated.ops_listen.is_some() {
        // Before the BFF and its engine are built, so that their counters record here.
        tokenkeeper_proxy::ops::install_prometheus().map_err(anyhow::Error::msg)?;
    }
    let host = tokenkeeper_bff::host::build(&validated)?;
    host.start(Duration::from_secs(600));
    let handler = host.handler().clone();
    let ops = match validated.ops_listen {
        Some(listen) => Some(serve_ops(
            &handler,
            listen,
            validated.admin_token.as_deref(),
        )?),
        None => None,
    };
    // The per-core server: a runtime, a listener (SO_REUSEPORT) and upstream pools per worker.
    let options = tokenkeeper_proxy::server::ServerOptions {
        workers: validated.workers,
        ..Default::default()
    };
    let bound = tokenkeeper_proxy::server::Bound::bind(validated.listen, options.workers)
        .with_context(|| format!("cannot listen on {}", validated.listen))?;
    // SIGHUP reloads (BF-18): listened for before the banner, so that a SIGHUP sent once the
    // banner is out never meets the default action (exit).
    let hangup = crate::reload::hangup();
    let shown: Vec<String> = validated
        .frontends
        .iter()
        .map(|f| {
            if validated.frontends.len() == 1 {
                format!("public URL {}{}", f.public_origin, f.prefix)
            } else {
                format!("{} at {}{}", f.name, f.public_origin, f.prefix)
            }
        })
        .collect();
    print(&format!(
        "tokenkeeper BFF on {} ({}, {} workers{})",
        bound.local_addr(),
        shown.join(", "),
        options.workers,
        ops.as_ref()
            .map(|(_, addr)| format!(", operations on {addr}"))
            .unwrap_or_default()
    ));
    let server = bound.serve(Arc::new(handler.clone()), &options)?;
    let host = Arc::new(host);
    // Reloads (BF-18): `reload_file` applies or refuses the file, and logs and counts which.
    let reloads = tokio::spawn(crate::reload::watch(path.clone(), hangup, move || {
        let env = |name: &str| std::env::var(name).ok();
        let _ = host.reload_file(&path, &env);
    }));
    shutdown_signal().await;
    tracing::info!("shutting down: in-flight requests finish");
    reloads.abort();
    server.shutdown();
    handler.close_websockets();
    server.stopped().await;
    if let Some((ops, _)) = ops {
        ops.shutdown();
        ops.stopped().await;
    }
    Ok(())
}

/// The operations listener (BF-22): `/healthz`, `/readyz`, `/metrics`, and the administration
/// API when it has a secret. One worker: it is not on the request path.
fn serve_ops(
    bff: &tokenkeeper_bff::FrontendsHandler,
    listen: SocketAddr,
    admin_token: Option<&str>,
) -> anyhow::Result<(tokenkeeper_proxy::server::Server, SocketAddr)> {
    let bound = tokenkeeper_proxy::server::Bound::bind(listen, 1)
        .with_context(|| format!("cannot listen on {listen} (ops.listen)"))?;
    let addr = bound.local_addr();
    let mut ops = tokenkeeper_proxy::ops::Ops::new(bff.readiness());
    if let Some(token) = admin_token {
        ops = ops
            .admin(token, bff.admin_api())
            .map_err(|e| anyhow::anyhow!("ops.admin_token_env: {e}"))?;
    }
    let options = tokenkeeper_proxy::server::ServerOptions {
        workers: 1,
        ..Default::default()
    };
    Ok((bound.serve(Arc::new(ops), &options)?, addr))
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[allow(clippy::print_stderr)]
fn eprintln_notice(text: &str) {
    eprintln!("{text}");
}

#[allow(clippy::print_stdout)]
pub(crate) fn print(text: &str) {
    println!("{text}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
}

/// The SPA's journey, headless: every step must hold, or the error says which did not.
pub(crate) async fn check(url: &str) -> anyhow::Result<String> {
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let browser = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()?;
    let mut report = Vec::new();
    let mut step = |text: &str| report.push(format!("ok  {text}"));
    let user = |browser: reqwest::Client| async move {
        browser
            .get(format!("{url}/bff/user"))
            .header("x-csrf", "1")
            .send()
            .await
    };
    anyhow::ensure!(
        user(browser.clone()).await?.status() == 401,
        "anonymous /bff/user is not 401"
    );
    step("anonymous: /bff/user is 401");
    let page = browser.get(format!("{url}/")).send().await?.text().await?;
    anyhow::ensure!(page.contains("id=\"login\""), "the SPA has no login button");
    step("the SPA loads");

    // Login: the BFF → the provider's login page → its form → the callback → back to the SPA.
    let response = browser
        .get(format!("{url}/bff/login?returnUrl=/"))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_redirection(),
        "/bff/login did not redirect"
    );
    let authorize = location(&format!("{url}/"), &response)?;
    let page = browser.get(authorize.clone()).send().await?.text().await?;
    let mut form: Vec<(String, String)> = hidden_inputs(&page);
    anyhow::ensure!(!form.is_empty(), "no login form at the provider");
    form.push(("username".into(), "alice".into()));
    let post = authorize.join("/authorize/login")?;
    let response = browser.post(post.clone()).form(&form).send().await?;
    let callback = location(post.as_str(), &response)?;
    let response = browser.get(callback).send().await?;
    anyhow::ensure!(
        response.status() == 200,
        "the callback answered {}",
        response.status()
    );
    let page = response.text().await?;
    anyhow::ensure!(
        page.contains("url=/"),
        "the callback did not continue to the SPA"
    );
    step("login through the provider's page and the callback");

    let claims: serde_json::Value = user(browser.clone()).await?.json().await?;
    let claim = |name: &str| {
        claims
            .as_array()
            .and_then(|all| all.iter().find(|c| c["type"] == name))
            .map(|c| c["value"].clone())
    };
    anyhow::ensure!(claim("sub") == Some("alice".into()), "/bff/user: {claims}");
    let expires = claim("bff:session_expires_in")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    anyhow::ensure!(expires > 0, "no session expiry");
    step(&format!("/bff/user: alice, session ends in {expires} s"));

    let response = browser
        .get(format!("{url}/api/hello"))
        .header("x-csrf", "1")
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 200,
        "/api/hello answered {}",
        response.status()
    );
    let hello: serde_json::Value = response.json().await?;
    anyhow::ensure!(hello["sub"] == "alice", "/api/hello: {hello}");
    step("API call through the proxy, with the user's token");
    let refused = browser.get(format!("{url}/api/hello")).send().await?;
    anyhow::ensure!(
        refused.status() == 401,
        "an API call without X-CSRF was not refused"
    );
    step("an API call without the anti-forgery header is refused");

    let mut events = browser
        .get(format!("{url}/api/events"))
        .header("x-csrf", "1")
        .send()
        .await?;
    let mut received = String::new();
    while received.matches("\n\n").count() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), events.chunk())
            .await
            .context("no server-sent event within 5 s")??
            .context("the event stream ended")?;
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(events);
    step("two server-sent events, as they came");

    let ws = format!("{}/api/ws", url.replacen("http", "ws", 1));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            ws.as_str(),
        )?;
    let cookies = {
        use reqwest::cookie::CookieStore as _;
        jar.cookies(&url::Url::parse(url)?)
            .context("no session cookie")?
            .to_str()?
            .to_owned()
    };
    request.headers_mut().insert("cookie", cookies.parse()?);
    request.headers_mut().insert("origin", url.parse()?);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    use futures_util::{SinkExt as _, StreamExt as _};
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text("ping".into()))
        .await?;
    let echo = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .context("no WebSocket echo within 5 s")?
        .context("the WebSocket closed")??;
    anyhow::ensure!(echo.to_text()? == "echo: ping", "WebSocket echo: {echo:?}");
    let _ = socket.close(None).await;
    step("WebSocket echo through the proxy");

    let logout = claim("bff:logout_url")
        .and_then(|v| v.as_str().map(str::to_owned))
        .context("no logout URL")?;
    let response = browser.get(format!("{url}{logout}")).send().await?;
    anyhow::ensure!(
        response.status().is_redirection(),
        "logout did not redirect"
    );
    anyhow::ensure!(
        user(browser.clone()).await?.status() == 401,
        "still logged in after logout"
    );
    step("logout: the session is over");
    Ok(format!("{}\nall checks passed", report.join("\n")))
}

fn location(base: &str, response: &reqwest::Response) -> anyhow::Result<url::Url> {
    let location = response
        .headers()
        .get("location")
        .context("no Location header")?
        .to_str()?;
    Ok(url::Url::parse(base)?.join(location)?)
}

/// The hidden inputs of the provider's login form.
fn hidden_inputs(page: &str) -> Vec<(String, String)> {
    let unescape = |s: &str| {
        s.replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    };
    page.split("<input type=hidden ")
        .skip(1)
        .filter_map(|rest| {
            let name = rest.split("name=\"").nth(1)?.split('"').next()?;
            let value = rest.split("value=\"").nth(1)?.split('"').next()?;
            Some((unescape(name), unescape(value)))
        })
        .collect()
}
