//! The app under test, shared by the web tests.
#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::sync::Arc;

use axum::extract::FromRef;
use axum::routing::get;
use axum::Router;
use tokenkeeper_axum::{
    CurrentUser, Oidc, OidcConfig, SessionStoreUserTokenStore, UserAccessToken,
};
use tokenkeeper_testing::{TestClient, TestServer};
use tower_sessions::MemoryStore;

#[derive(Clone)]
pub struct AppState {
    pub oidc: Oidc,
}

impl FromRef<AppState> for Oidc {
    fn from_ref(state: &AppState) -> Oidc {
        state.oidc.clone()
    }
}

pub struct App {
    pub url: String,
    pub idp: Arc<TestServer>,
    pub oidc: Oidc,
    pub sessions: CountingStore,
    /// The app, to call in-process (`tower::ServiceExt::oneshot`).
    pub router: Router,
}

/// How an app under test is set up.
#[derive(Default)]
pub struct Setup {
    /// Session cookies without `Secure` (plain-http loopback).
    pub insecure_cookies: bool,
    /// Another app's identity provider and redirect URI (a fleet behind one public URL).
    pub fleet_of: Option<(Arc<TestServer>, String)>,
    /// A shared login replay store.
    pub replays: Option<Arc<dyn tokenkeeper::user::LoginReplayStore>>,
    /// DPoP for the user tokens.
    pub dpop: Option<Dpop>,
}

/// How user tokens are bound to DPoP keys.
pub enum Dpop {
    /// One key for the client.
    Client(Arc<tokenkeeper::dpop::DpopKey>),
    /// A key per session, in this store.
    PerSession(Arc<dyn tokenkeeper::dpop::DpopKeyStore>),
}

pub async fn app(insecure_cookies: bool) -> App {
    app_with(Setup {
        insecure_cookies,
        ..Setup::default()
    })
    .await
}

pub async fn app_with(setup: Setup) -> App {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (idp, redirect_uri) = match setup.fleet_of {
        Some(shared) => shared,
        None => {
            let redirect_uri = format!("{url}/auth/callback");
            let idp = Arc::new(
                TestServer::builder()
                    .client(TestClient::new("web", "web-secret").redirect_uri(&redirect_uri))
                    .start()
                    .await,
            );
            (idp, redirect_uri)
        }
    };
    idp.set_login(Some("alice"));
    let mut config = OidcConfig::new(idp.issuer(), "web", "web-secret", redirect_uri);
    config.insecure_cookies = setup.insecure_cookies;
    config.post_logout_redirect_uri = Some(format!("{url}/"));
    // Tokens live in the same tower-sessions backend as the sessions.
    let sessions = CountingStore::default();
    let mut client = tokenkeeper::ClientConfig::from_issuer(idp.issuer(), "web", "web-secret");
    if let Some(Dpop::Client(key)) = &setup.dpop {
        client = client.dpop(key.clone());
    }
    let mut users = tokenkeeper::user::UserTokenManager::builder(client).store(Arc::new(
        SessionStoreUserTokenStore::plaintext(sessions.clone()),
    ));
    if let Some(Dpop::PerSession(keys)) = &setup.dpop {
        users = users.dpop_key_store(keys.clone());
    }
    let users = users.build().unwrap();
    let mut oidc = Oidc::new(config, users).unwrap();
    if let Some(replays) = setup.replays {
        oidc = oidc.with_login_replay_store(replays);
    }
    let router = Router::new()
        .route("/", get(|| async { "home" }))
        .route("/me", get(|user: CurrentUser| async move { user.sub }))
        .route(
            "/logout-url",
            get(
                |axum::extract::State(state): axum::extract::State<AppState>, user: CurrentUser| async move {
                    state.oidc.logout_url(&user)
                },
            ),
        )
        .route(
            "/debug-user",
            get(|user: CurrentUser| async move { format!("{user:?}") }),
        )
        .route(
            "/session-key",
            get(|user: CurrentUser| async move { user.session_key().as_str().to_owned() }),
        )
        .route(
            "/token",
            get(|token: UserAccessToken| async move { token.0.access_token().secret().to_owned() }),
        )
        .route(
            "/refresh",
            get(
                |axum::extract::State(state): axum::extract::State<AppState>, user: CurrentUser| async move {
                    let session = user.session_key();
                    let params = tokenkeeper::user::UserTokenParams::default().force_renewal(true);
                    match state.oidc.users().get_access_token(&session, &params).await {
                        Ok(token) => token.access_token().secret().to_owned(),
                        Err(error) => format!("error {error}"),
                    }
                },
            ),
        )
        .route(
            "/call",
            get(
                |client: tokenkeeper_axum::UserHttpClient,
                 axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>| async move {
                    match client.0.get(&q["url"]).send().await {
                        Ok(response) => format!("{} {}", response.status().as_u16(), response.text().await.unwrap_or_default()),
                        Err(error) => format!("error {error}"),
                    }
                },
            ),
        )
        .merge(oidc.router())
        .with_state(AppState { oidc: oidc.clone() })
        .layer(oidc.session_layer(sessions.clone()));
    let served = router.clone();
    tokio::spawn(async move { axum::serve(listener, served).await });
    App {
        url,
        idp,
        oidc,
        sessions,
        router,
    }
}

/// A memory session store that counts the records it holds.
#[derive(Clone, Debug, Default)]
pub struct CountingStore {
    inner: MemoryStore,
    ids: Arc<std::sync::Mutex<std::collections::HashSet<tower_sessions::session::Id>>>,
}

impl CountingStore {
    /// How many records are stored (sessions and token records).
    pub fn records(&self) -> usize {
        self.ids.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl tower_sessions::SessionStore for CountingStore {
    async fn save(
        &self,
        record: &tower_sessions::session::Record,
    ) -> tower_sessions::session_store::Result<()> {
        self.ids.lock().unwrap().insert(record.id);
        self.inner.save(record).await
    }
    async fn load(
        &self,
        id: &tower_sessions::session::Id,
    ) -> tower_sessions::session_store::Result<Option<tower_sessions::session::Record>> {
        self.inner.load(id).await
    }
    async fn delete(
        &self,
        id: &tower_sessions::session::Id,
    ) -> tower_sessions::session_store::Result<()> {
        self.ids.lock().unwrap().remove(id);
        self.inner.delete(id).await
    }
}

/// A browser on the app's own pages: it keeps cookies and says `Sec-Fetch-Site: same-origin`
/// (as browsers do for a navigation within a site); a request may override it.
pub fn browser(follow: bool) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "sec-fetch-site",
        reqwest::header::HeaderValue::from_static("same-origin"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .cookie_store(true)
        .redirect(if follow {
            reqwest::redirect::Policy::limited(10)
        } else {
            reqwest::redirect::Policy::none()
        })
        .build()
        .unwrap()
}

/// The body of a GET of `url`, as text.
pub async fn get_text(browser: &reqwest::Client, url: String) -> String {
    browser.get(url).send().await.unwrap().text().await.unwrap()
}
