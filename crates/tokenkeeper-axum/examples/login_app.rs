//! A runnable axum app: log in with OpenID Connect, call an API as the user, log out.
//!
//! Run: `cargo run -p tokenkeeper-axum --example login_app`, then open the printed URL.
//! (`--check` runs the whole journey once with an HTTP client and exits: what CI does.)
//!
//! Everything is in-process so it runs anywhere: the identity provider is the tokenkeeper test
//! server with a programmable login (the user "alice" is logged in without a form), and the API
//! checks the user's token. Swap `OidcConfig::new(idp.issuer(), …)` for your provider.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::sync::Arc;

use axum::extract::FromRef;
use axum::http::HeaderMap;
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use tokenkeeper_axum::{CurrentUser, Oidc, OidcConfig, UserHttpClient};
use tokenkeeper_testing::{TestClient, TestServer};
use tower_sessions::MemoryStore;

#[derive(Clone)]
struct AppState {
    oidc: Oidc,
    api_url: String,
}

impl FromRef<AppState> for Oidc {
    fn from_ref(state: &AppState) -> Oidc {
        state.oidc.clone()
    }
}

async fn home() -> Html<&'static str> {
    Html(
        r#"<h1>tokenkeeper login demo</h1>
<p><a href="/auth/login?returnUrl=/me">Log in</a> · <a href="/me">Who am I? (and log out)</a> ·
<a href="/orders">Call the API as me</a></p>"#,
    )
}

/// Logout needs the session's `sid` (so that another site cannot log the user out with a
/// link): the page carries the link `Oidc::logout_url` makes.
async fn me(
    axum::extract::State(state): axum::extract::State<AppState>,
    user: CurrentUser,
) -> Html<String> {
    Html(format!(
        "logged in as {} · <a href=\"{}\">Log out</a>",
        user.sub,
        state.oidc.logout_url(&user)
    ))
}

async fn orders(
    axum::extract::State(state): axum::extract::State<AppState>,
    UserHttpClient(http): UserHttpClient,
) -> String {
    match http.get(&state.api_url).send().await {
        Ok(response) => format!(
            "the API answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        ),
        Err(e) => format!("the API call failed: {e}"),
    }
}

#[tokio::main]
async fn main() {
    let check = std::env::args().any(|a| a == "--check");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());

    // The identity provider.
    let idp = Arc::new(
        TestServer::builder()
            .client(
                TestClient::new("web", "web-secret").redirect_uri(&format!("{url}/auth/callback")),
            )
            .start()
            .await,
    );
    idp.set_login(Some("alice"));

    // A protected API that needs the user's token.
    let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_url = format!("http://{}/orders", api_listener.local_addr().unwrap());
    let verifier = idp.clone();
    let api = Router::new().route(
        "/orders",
        get(move |headers: HeaderMap| {
            let verifier = verifier.clone();
            async move {
                let token = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "));
                match token.map(|t| verifier.verify_access_token(t)) {
                    Some(Ok(claims)) => (
                        axum::http::StatusCode::OK,
                        format!("orders of {}", claims["sub"]),
                    ),
                    _ => (
                        axum::http::StatusCode::UNAUTHORIZED,
                        "no valid token".into(),
                    ),
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(api_listener, api).await });

    // The app.
    let mut config = OidcConfig::new(
        idp.issuer(),
        "web",
        "web-secret",
        format!("{url}/auth/callback"),
    );
    config.insecure_cookies = true; // plain http on loopback, for the demo only
    config.post_logout_redirect_uri = Some(format!("{url}/"));
    let users = Oidc::user_manager_for(&config).unwrap();
    let oidc = Oidc::new(config, users).unwrap();
    let app = Router::new()
        .route("/", get(home))
        .route("/me", get(me))
        .route("/orders", get(orders))
        .merge(oidc.router())
        .with_state(AppState {
            oidc: oidc.clone(),
            api_url,
        })
        .layer(oidc.session_layer(MemoryStore::default()));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    if check {
        let browser = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap();
        let mut logout = String::new();
        for path in ["/auth/login?returnUrl=/me", "/orders", "logout", "/me"] {
            let path = if path == "logout" {
                logout.clone()
            } else {
                path.to_owned()
            };
            let response = browser.get(format!("{url}{path}")).send().await.unwrap();
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            if let Some(link) = body
                .split("href=\"")
                .nth(1)
                .and_then(|l| l.split('"').next())
            {
                logout = link.replace("&amp;", "&");
            }
            println!(
                "GET {path} → {status} {}",
                body.lines().next().unwrap_or("")
            );
        }
        return;
    }
    println!("open {url}/ (Ctrl-C to stop)");
    let _ = tokio::signal::ctrl_c().await;
    server.abort();
}
