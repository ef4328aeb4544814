//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use tokenkeeper::{
    ClientConfig, ClientCredentialsTokenManager, ClientCredentialsTokenManagerBuilder,
    LifetimePolicy, TokenRequestParams,
};
use tokenkeeper_testing::{TestClient, TestServer};

pub const CLIENT_ID: &str = "worker";
pub const SECRET: &str = "s3cr3t-VALUE-never-logged";

pub async fn server() -> Arc<TestServer> {
    Arc::new(
        TestServer::builder()
            .client(TestClient::new(CLIENT_ID, SECRET))
            .start()
            .await,
    )
}

pub fn config(server: &TestServer) -> ClientConfig {
    ClientConfig::new(server.token_endpoint(), CLIENT_ID, SECRET)
}

/// A builder whose requests go through the in-process transport (for paused-time tests).
pub fn in_process(server: &TestServer) -> ClientCredentialsTokenManagerBuilder {
    ClientCredentialsTokenManager::builder()
        .client("api", config(server))
        .transport(server.transport())
}

/// A manager over the network.
pub fn networked(server: &TestServer) -> ClientCredentialsTokenManager {
    ClientCredentialsTokenManager::builder()
        .client("api", config(server))
        .build()
        .unwrap()
}

pub fn no_refresh_ahead() -> LifetimePolicy {
    LifetimePolicy {
        refresh_ahead: 0.0,
        ..LifetimePolicy::default()
    }
}

pub fn default_params() -> TokenRequestParams {
    TokenRequestParams::default()
}

/// A protected API on a loopback port: verifies tokens with the test server, records the
/// `Authorization` headers it sees, and can be told to answer 401.
pub struct Api {
    pub url: String,
    state: Arc<ApiState>,
    _task: tokio::task::JoinHandle<()>,
}

struct ApiState {
    server: Arc<TestServer>,
    seen: Mutex<Vec<Option<String>>>,
    tags: Mutex<Vec<Option<String>>>,
    reject_next: AtomicU32,
    always_reject: AtomicBool,
}

impl Api {
    pub async fn start(server: Arc<TestServer>) -> Self {
        let state = Arc::new(ApiState {
            server,
            seen: Mutex::new(Vec::new()),
            tags: Mutex::new(Vec::new()),
            reject_next: AtomicU32::new(0),
            always_reject: AtomicBool::new(false),
        });
        let app = axum::Router::new()
            .fallback(handler)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/resource", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            state,
            _task: task,
        }
    }

    /// The `Authorization` headers received, in order.
    pub fn seen(&self) -> Vec<Option<String>> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The `x-tag` headers received, in order.
    pub fn tags(&self) -> Vec<Option<String>> {
        self.state.tags.lock().unwrap().clone()
    }

    pub fn reject_next(&self, n: u32) {
        self.state.reject_next.store(n, Ordering::SeqCst);
    }

    pub fn always_reject(&self, yes: bool) {
        self.state.always_reject.store(yes, Ordering::SeqCst);
    }
}

async fn handler(
    axum::extract::State(state): axum::extract::State<Arc<ApiState>>,
    headers: HeaderMap,
) -> axum::response::Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.seen.lock().unwrap().push(auth.clone());
    let tag = headers
        .get("x-tag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.tags.lock().unwrap().push(tag);
    if state.always_reject.load(Ordering::SeqCst) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if state
        .reject_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some(token) = auth.as_deref().and_then(|a| a.strip_prefix("Bearer ")) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    match state.server.verify_access_token(token) {
        Ok(_) => (StatusCode::OK, "ok").into_response(),
        Err(_) => StatusCode::UNAUTHORIZED.into_response(),
    }
}

/// Yields until `cond` holds (bounded), letting spawned tasks run under paused time.
pub async fn until(mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition not reached");
}

/// Logs `alice` in at the test server through the code flow (its client `web` / `web-secret`
/// registered with `redirect`); returns a valid ID token and its nonce.
pub async fn id_token(server: &TestServer, redirect: &str) -> (String, String) {
    server.set_login(Some("alice"));
    let request = tokenkeeper::AuthorizationRequestBuilder::new(
        server.authorization_endpoint().parse().unwrap(),
        "web",
        redirect,
    )
    .scope("openid")
    .build()
    .unwrap();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = browser.get(request.url.clone()).send().await.unwrap();
    let location: url::Url = response.headers()["location"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let endpoint = tokenkeeper::TokenEndpoint::new(
        server.token_endpoint().parse().unwrap(),
        tokenkeeper::ClientAuthentication::ClientSecretBasic {
            client_id: "web".into(),
            client_secret: "web-secret".into(),
        },
        server.transport(),
    );
    let response = endpoint
        .request(&tokenkeeper::TokenRequest::new(
            tokenkeeper::Grant::AuthorizationCode {
                code,
                redirect_uri: redirect.into(),
                code_verifier: Some(request.pkce.verifier().to_owned()),
            },
        ))
        .await
        .unwrap();
    let id_token = response.id_token.unwrap().secret().to_owned();
    (id_token, request.nonce)
}
