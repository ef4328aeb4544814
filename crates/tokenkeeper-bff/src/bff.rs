//! The BFF: options, state, router, sessions and cookies.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue};
use tokenkeeper::{
    ClientCredentialsTokenManager, Clock, ConfigError, Error, Timestamp, TokioClock,
};
use tokenkeeper_axum::Oidc;

use crate::routes::{ApiRoute, RouteToken};
use crate::session::{BffSession, BffSessionStore, InMemoryBffSessionStore};

/// How the BFF behaves.
#[derive(Debug, Clone)]
pub struct BffOptions {
    /// Where the management endpoints live (default `/bff`).
    pub base_path: String,
    /// The anti-forgery header API calls must send, and its value (default `x-csrf: 1`).
    pub anti_forgery_header: (String, String),
    /// A session ends after this long without use (default 30 min; `user?slide=false` does not
    /// count as use).
    pub session_sliding: Duration,
    /// A session ends this long after login, used or not (default 12 h).
    pub session_max: Duration,
    /// Session cookies without `Secure` and without the `__Host-` prefix: plain-http loopback
    /// development only (`tokenkeeper bff --dev`), and said so in the log at start.
    pub insecure_cookies: bool,
    /// The remote API routes.
    pub routes: Vec<ApiRoute>,
    /// Development mode: the diagnostics endpoint exists.
    pub dev: bool,
    /// The proxies in front of the BFF (a load balancer) whose `X-Forwarded-For`, `-Proto`
    /// and `-Host` are passed on (SEC-16). From anyone else those headers are dropped, and the
    /// BFF sets them itself: the connection's peer (when the router is served with
    /// `into_make_service_with_connect_info::<SocketAddr>()`) and the public URL.
    pub trusted_proxies: Vec<tokenkeeper_proxy::Cidr>,
    /// How many upstream pools the proxy keeps: one per worker of the server that runs the
    /// BFF ([`crate::BffHandler`]; default: one per core).
    pub workers: usize,
    /// What the user endpoint shows of the user's claims (default: all but the protocol
    /// claims; BF-19).
    pub claims: crate::claims::UserClaims,
    /// `{base}/auth` for a reverse proxy's forward auth, and its identity headers (BF-21). Off
    /// (`None`) by default. The identity header names are never forwarded from a browser.
    pub forward_auth: Option<crate::forward_auth::ForwardAuth>,
    /// The frontend's name (BF-17), in metrics (`frontend` label) and logs (default
    /// `default`). Letters, digits, `-` and `_`, at most 64.
    pub name: String,
    /// W3C trace context on proxied requests (feature `otel`, BF-23): each request's span
    /// continues the trace of a caller among [`BffOptions::trusted_proxies`] (its
    /// `traceparent`), and the upstream gets the span's own `traceparent` instead of whatever
    /// the browser sent. Off by default; `tokenkeeper bff` turns it on with `[telemetry]`.
    pub trace_context: bool,
    /// The session cookie's name, without the `__Host-` prefix that Secure cookies get
    /// (default `bff`: `__Host-bff`). Frontends sharing a host need different names.
    pub cookie_name: String,
}

impl Default for BffOptions {
    fn default() -> Self {
        Self {
            base_path: "/bff".into(),
            anti_forgery_header: ("x-csrf".into(), "1".into()),
            session_sliding: Duration::from_secs(30 * 60),
            session_max: Duration::from_secs(12 * 3600),
            insecure_cookies: false,
            routes: Vec::new(),
            dev: false,
            trusted_proxies: Vec::new(),
            workers: tokenkeeper_proxy::server::default_workers(),
            claims: crate::claims::UserClaims::default(),
            forward_auth: None,
            name: "default".into(),
            cookie_name: "bff".into(),
            trace_context: false,
        }
    }
}

impl BffOptions {
    /// Adds a remote API route.
    pub fn route(mut self, route: ApiRoute) -> Self {
        self.routes.push(route);
        self
    }
}

/// The BFF host: build it once, mount [`Bff::router`].
#[derive(Clone)]
pub struct Bff {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) oidc: Oidc,
    pub(crate) options: BffOptions,
    pub(crate) sessions: Arc<dyn BffSessionStore>,
    pub(crate) clients: Option<ClientCredentialsTokenManager>,
    pub(crate) clock: Arc<dyn Clock>,
    /// The client of [`crate::BffUser::http_client`] (local API handlers).
    pub(crate) http: reqwest::Client,
    /// The proxy engine of the API routes (same order as `options.routes`).
    pub(crate) engine: tokenkeeper_proxy::Engine,
    /// The BFF's public origin (`https://app.example.com`), from the callback URL.
    pub(crate) origin: String,
    pub(crate) anti_forgery_name: http::HeaderName,
    /// The open WebSocket relays, by session (SEC-18).
    pub(crate) relays: Arc<crate::relays::Relays>,
    /// Per route, the client-token layer (its client and parameters), made once.
    pub(crate) route_clients: Vec<Option<(String, tokenkeeper::TokenLayer)>>,
    /// Per route, the proxied-request metrics' handles.
    pub(crate) proxied: crate::metrics::Proxied,
    /// The session cookie's full name (`__Host-bff`, or `bff` with insecure cookies).
    pub(crate) cookie: String,
}

impl std::fmt::Debug for Bff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bff")
            .field("name", &self.inner.options.name)
            .field("origin", &self.inner.origin)
            .field("base_path", &self.inner.options.base_path)
            .field("routes", &self.inner.options.routes.len())
            .finish_non_exhaustive()
    }
}

fn config_error(field: &'static str, reason: impl Into<String>) -> Error {
    Error::Config(ConfigError::new(field, reason))
}

impl Bff {
    /// A BFF logging users in through `oidc` (whose `redirect_uri` must be
    /// `{origin}{base_path}/callback`), with sessions in memory. Fails, naming the field, on a
    /// configuration that cannot work.
    pub fn new(oidc: Oidc, options: BffOptions) -> Result<Self, Error> {
        Self::with_store(
            oidc,
            options,
            Arc::new(InMemoryBffSessionStore::new()),
            None,
        )
    }

    /// A BFF with sessions in `sessions` (for a fleet: Redis) and client-credentials tokens
    /// from `clients` (for [`RouteToken::Client`] and [`RouteToken::UserOrClient`] routes).
    pub fn with_store(
        oidc: Oidc,
        options: BffOptions,
        sessions: Arc<dyn BffSessionStore>,
        clients: Option<ClientCredentialsTokenManager>,
    ) -> Result<Self, Error> {
        let base = format!("/{}", options.base_path.trim_matches('/'));
        let redirect = url::Url::parse(&oidc.config().redirect_uri)
            .map_err(|e| config_error("redirect_uri", format!("is not an absolute URL: {e}")))?;
        if redirect.path() != format!("{base}/callback") {
            return Err(config_error(
                "redirect_uri",
                format!(
                    "must end in {base}/callback (the BFF's callback), not {}",
                    redirect.path()
                ),
            ));
        }
        let origin = redirect.origin().ascii_serialization();
        let anti_forgery_name = http::HeaderName::try_from(options.anti_forgery_header.0.as_str())
            .map_err(|_| config_error("anti_forgery_header", "is not a header name"))?;
        let plain_name = |name: &str, max: usize| {
            !name.is_empty()
                && name.len() <= max
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        };
        if !plain_name(&options.name, 64) {
            return Err(config_error(
                "name",
                "must be 1 to 64 letters, digits, '-' or '_'",
            ));
        }
        if !plain_name(&options.cookie_name, 128) {
            return Err(config_error(
                "cookie_name",
                "must be 1 to 128 letters, digits, '-' or '_'",
            ));
        }
        if options.session_sliding.is_zero() || options.session_max < options.session_sliding {
            return Err(config_error(
                "session_sliding",
                "must be greater than zero and at most session_max",
            ));
        }
        for route in &options.routes {
            if route.path == base || route.path.starts_with(&format!("{base}/")) {
                return Err(config_error(
                    "routes",
                    format!("{} is inside the management path {base}", route.path),
                ));
            }
            if !matches!(route.upstream.scheme(), "http" | "https") {
                return Err(config_error(
                    "routes",
                    format!("the upstream of {} is not http(s)", route.path),
                ));
            }
            if matches!(
                route.token,
                RouteToken::Client | RouteToken::UserOrClient | RouteToken::Exchange
            ) {
                let Some(clients) = &clients else {
                    return Err(config_error(
                        "routes",
                        format!(
                            "{} needs a client token, but the BFF has no client",
                            route.path
                        ),
                    ));
                };
                if let Some(name) = &route.client {
                    if !clients.client_names().any(|n| n == name) {
                        return Err(config_error(
                            "routes",
                            format!("{} names the unknown client {name:?}", route.path),
                        ));
                    }
                }
            }
        }
        if let Some(forward) = &options.forward_auth {
            let secret = forward.proxy_secret.as_deref().unwrap_or_default();
            if forward.access_token.is_some()
                && secret.len() < tokenkeeper_proxy::ops::ADMIN_SECRET_MIN
            {
                return Err(config_error(
                    "forward_auth",
                    "an access token header needs a proxy secret of at least 32 bytes",
                ));
            }
        }
        if options.insecure_cookies {
            tracing::warn!("the BFF's session cookies are not Secure (development mode): never expose this instance");
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| config_error("http", e.to_string()))?;
        let mut route_clients = Vec::with_capacity(options.routes.len());
        for route in &options.routes {
            let client = match (&clients, &route.client) {
                (Some(_), Some(name)) => Some(name.clone()),
                (Some(clients), None) => clients.client_names().next().map(str::to_owned),
                (None, _) => None,
            };
            route_clients.push(match (&clients, client) {
                (Some(clients), Some(name)) => {
                    let layer = clients.layer_with(&name, route.client_params.clone())?;
                    Some((name, layer))
                }
                _ => None,
            });
        }
        let mut engine = tokenkeeper_proxy::Engine::builder("bff")
            .forwarding(tokenkeeper_proxy::Forwarding::new(
                &redirect,
                options.trusted_proxies.clone(),
            ))
            .hygiene(tokenkeeper_proxy::RequestHygiene {
                // The anti-forgery header, and the identity headers of forward auth: a browser
                // cannot send an upstream who it is.
                drop: std::iter::once(anti_forgery_name.clone())
                    .chain(options.forward_auth.iter().flat_map(|f| {
                        f.names()
                            .cloned()
                            .chain(std::iter::once(http::HeaderName::from_static(
                                crate::forward_auth::PROXY_SECRET_HEADER,
                            )))
                    }))
                    .collect(),
                ..Default::default()
            })
            .workers(options.workers)
            .frontend(&options.name)
            .trace_context(options.trace_context);
        for route in &options.routes {
            engine = engine.route(
                route
                    .engine_route()
                    .map_err(|e| config_error("routes", e.to_string()))?,
            );
        }
        let engine = engine
            .build()
            .map_err(|e| config_error("upstream", e.to_string()))?;
        let mut options = options;
        options.base_path = base;
        let proxied = crate::metrics::Proxied::new(
            &options.name,
            options.routes.iter().map(|route| route.path.as_str()),
        );
        let cookie = if options.insecure_cookies {
            options.cookie_name.clone()
        } else {
            format!("__Host-{}", options.cookie_name)
        };
        Ok(Self {
            inner: Arc::new(Inner {
                oidc,
                options,
                sessions,
                clients,
                clock: Arc::new(TokioClock::new()),
                http,
                engine,
                origin,
                anti_forgery_name,
                route_clients,
                relays: Arc::default(),
                proxied,
                cookie,
            }),
        })
    }

    /// Reads time from `clock` (sessions' expiry; tests use a clock they move). Call it right
    /// after construction, before the BFF is cloned or mounted.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.clock = clock,
            None => tracing::warn!("Bff::with_clock after the BFF was shared: ignored"),
        }
        self
    }

    /// The OpenID Connect login behind the BFF.
    pub fn oidc(&self) -> &Oidc {
        &self.inner.oidc
    }

    /// How many WebSocket relays are open.
    pub fn open_websockets(&self) -> usize {
        self.inner.relays.len()
    }

    /// The session store.
    pub fn sessions(&self) -> &Arc<dyn BffSessionStore> {
        &self.inner.sessions
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// The session cookie's name: `__Host-bff`, or `bff` with insecure cookies (with another
    /// [`BffOptions::cookie_name`], that name).
    pub(crate) fn cookie_name(&self) -> &str {
        &self.inner.cookie
    }

    /// The frontend's name ([`BffOptions::name`]).
    pub fn name(&self) -> &str {
        &self.inner.options.name
    }

    /// `Set-Cookie` for the session cookie (`None` deletes it): HttpOnly, `SameSite=Strict`,
    /// path `/`, `Secure` unless insecure cookies (BF-15).
    ///
    /// A live session's cookie has no `Max-Age`: it is a browser-session cookie, and the
    /// server alone decides when the session ends (sliding, with an absolute maximum). A
    /// `Max-Age` set at login would end a busy user's session on the browser's side 30 minutes
    /// after login, whatever the slides (SEC-22); re-issuing it would put a `Set-Cookie` on
    /// API answers.
    pub(crate) fn session_cookie(&self, value: Option<&str>) -> HeaderValue {
        let secure = if self.inner.options.insecure_cookies {
            ""
        } else {
            "; Secure"
        };
        let (value, max_age) = match value {
            Some(value) => (value, ""),
            None => ("", "; Max-Age=0"),
        };
        let cookie = format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Strict{max_age}{secure}",
            self.cookie_name()
        );
        HeaderValue::from_str(&cookie)
            .unwrap_or_else(|_| HeaderValue::from_static("bff=; Max-Age=0"))
    }

    /// The session id in the request's cookies, if any.
    fn session_id<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        let name = self.cookie_name().as_bytes();
        headers
            .get_all(header::COOKIE)
            .iter()
            .find_map(|value| cookie_value(value.as_bytes(), name))
    }

    /// The request's session, if it has a live one; with `slide`, its expiry moves on (never
    /// past the absolute maximum).
    pub(crate) async fn session(
        &self,
        headers: &HeaderMap,
        slide: bool,
    ) -> Result<Option<Arc<BffSession>>, Error> {
        let Some(id) = self.session_id(headers) else {
            return Ok(None);
        };
        let now = self.now();
        let found = match self.inner.sessions.get_now(id, now) {
            Some(found) => found,
            None => self.inner.sessions.get(id, now).await,
        };
        let Some(mut session) = found? else {
            return Ok(None);
        };
        if slide {
            let options = &self.inner.options;
            let limit = session
                .created_at
                .saturating_add(options.session_max.as_millis() as u64);
            let next = now
                .as_millis()
                .saturating_add(options.session_sliding.as_millis() as u64)
                .min(limit);
            // Write only when the expiry moves by more than a tenth of the sliding window, not
            // on every request.
            let step = options.session_sliding.as_millis() as u64 / 10;
            if next > session.expires_at.saturating_add(step) {
                // Only while the session is still stored: a slide racing a logout does not
                // bring it back (SEC-26).
                if !self.inner.sessions.touch(&session, next).await? {
                    return Ok(None);
                }
                let mut moved = BffSession::clone(&session);
                moved.expires_at = next;
                session = Arc::new(moved);
            }
        }
        Ok(Some(session))
    }

    /// A new session for a completed login.
    pub(crate) fn new_session(
        &self,
        done: &tokenkeeper_axum::CompletedLogin,
    ) -> Result<BffSession, Error> {
        let now = self.now().as_millis();
        let options = &self.inner.options;
        let mut session = BffSession::new(
            tokenkeeper::random_token(32)?,
            done.login.sub.clone(),
            done.login.sid.clone(),
        );
        session.tokens = done.login.session.as_str().to_owned();
        session.claims = done.login.claims.all.clone();
        session.id_token = done.login.id_token.secret().to_owned();
        session.session_state = done.session_state.clone();
        session.created_at = now;
        session.expires_at = now
            .saturating_add(options.session_sliding.as_millis() as u64)
            .min(now.saturating_add(options.session_max.as_millis() as u64));
        Ok(session)
    }

    /// Whether the request carries the anti-forgery header (BF-04).
    pub(crate) fn anti_forgery_ok(&self, headers: &HeaderMap) -> bool {
        headers
            .get(&self.inner.anti_forgery_name)
            .is_some_and(|v| v.as_bytes() == self.inner.options.anti_forgery_header.1.as_bytes())
    }

    /// Closes every open WebSocket relay with 1001 (going away), for a host that shuts down
    /// (BF-24): call it when the server stops taking connections. Relays opened after it close
    /// at once.
    pub fn close_websockets(&self) {
        self.inner.relays.shut_down();
    }

    /// Ends every session of `sub` (and, when given, of `sid` only): "log out everywhere", or an
    /// administrator's revocation. Each session's refresh token is revoked. Returns how many
    /// sessions ended.
    pub async fn end_sessions(&self, sub: Option<&str>, sid: Option<&str>) -> Result<usize, Error> {
        let sessions = self.inner.sessions.find(sub, sid).await?;
        for session in &sessions {
            self.end_session(session, "admin").await;
        }
        Ok(sessions.len())
    }

    /// Removes the sessions that have expired and revokes their refresh tokens (each expired
    /// session is handled once, across a fleet sharing the store). Returns how many ended.
    pub async fn cleanup_expired(&self) -> Result<usize, Error> {
        let expired = self.inner.sessions.take_expired(self.now()).await?;
        for session in &expired {
            crate::metrics::session_ended(self.name(), "expired");
            self.inner.relays.close(&session.id_hash);
            match self.inner.oidc.users().logout(&session.key()).await {
                Ok(outcome) if !outcome.succeeded() => {
                    tracing::warn!(
                        frontend = self.name(),
                        ?outcome,
                        "an expired session's refresh token was not revoked"
                    )
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(frontend = self.name(), %error, "an expired session's tokens could not be cleared")
                }
            }
        }
        if !expired.is_empty() {
            tracing::info!(
                frontend = self.name(),
                sessions = expired.len(),
                "expired sessions cleaned up"
            );
        }
        Ok(expired.len())
    }

    /// Fetches the provider's metadata (discovery) now, and while that fails, again with
    /// backoff (1 s, doubling to 1 min): each failure is logged (warning) with the discovery
    /// URL and the reason, and the success once. So a provider that is down or misnamed at
    /// start is reported at start — not as a 502 at the first login — and the first login after
    /// it comes up finds the metadata loaded (UX-02). The task ends when the metadata is in.
    pub fn spawn_discovery(&self) -> tokio::task::JoinHandle<()> {
        let oidc = self.inner.oidc.clone();
        let frontend = self.name().to_owned();
        tokio::spawn(async move {
            let issuer = oidc.config().issuer.clone();
            let url = format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            );
            let mut delay = Duration::from_secs(1);
            loop {
                match oidc.provider_metadata().await {
                    Ok(_) => {
                        tracing::info!(%frontend, %url, "provider metadata loaded");
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(
                            %frontend,
                            %url,
                            %error,
                            retry_in_secs = delay.as_secs(),
                            "the provider's discovery document cannot be had; retrying"
                        );
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        })
    }

    /// Runs [`Bff::cleanup_expired`] every `every` (10 minutes is a sensible period) until the
    /// returned task is aborted.
    pub fn spawn_cleanup(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let bff = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(error) = bff.cleanup_expired().await {
                    tracing::warn!(frontend = bff.name(), %error, "session cleanup failed; trying again later");
                }
            }
        })
    }

    /// Ends `session`: removes it and logs its tokens out (the refresh token is revoked).
    pub(crate) async fn end_session(&self, session: &BffSession, reason: &'static str) {
        crate::metrics::session_ended(self.name(), reason);
        self.inner.relays.close(&session.id_hash);
        if let Err(error) = self.inner.sessions.remove(session).await {
            tracing::warn!(frontend = self.name(), %error, "a session could not be removed from the store");
        }
        if reason == "stepped-up" {
            // Replaced by a login of the same provider session: its grant lives on in the new
            // session, so nothing is revoked (see `UserTokenManager::forget`).
            if let Err(error) = self.inner.oidc.users().forget(&session.key()).await {
                tracing::warn!(frontend = self.name(), %error, "the session's tokens could not be cleared");
            }
            return;
        }
        match self.inner.oidc.users().logout(&session.key()).await {
            Ok(outcome) if !outcome.succeeded() => {
                tracing::warn!(
                    frontend = self.name(),
                    ?outcome,
                    "the session's refresh token was not revoked"
                )
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(frontend = self.name(), %error, "the session's tokens could not be cleared")
            }
        }
    }
}

/// The value of the cookie `name` in one `Cookie` header (`a=1; name=value; b=2`): non-empty,
/// at most 128 visible ASCII characters, else the next cookie of that name is looked at. Only
/// that value is checked, as bytes: this runs on every proxied request, and another cookie's
/// odd bytes do not hide the session's.
fn cookie_value<'h>(header: &'h [u8], name: &[u8]) -> Option<&'h str> {
    let mut rest = header;
    loop {
        while let [b' ' | b'\t', tail @ ..] = rest {
            rest = tail;
        }
        let end = memchr::memchr(b';', rest).unwrap_or(rest.len());
        let pair = &rest[..end];
        if let Some(value) = pair
            .strip_prefix(name)
            .and_then(|tail| tail.strip_prefix(b"="))
        {
            let value = value.trim_ascii_end();
            // The fold has no early exit: it runs as a few vector instructions.
            if !value.is_empty()
                && value.len() <= 128
                && value.iter().fold(true, |ok, b| ok & b.is_ascii_graphic())
            {
                // Visible ASCII is UTF-8.
                return std::str::from_utf8(value).ok();
            }
        }
        rest = rest.get(end + 1..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::cookie_value;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let name = b"__Host-bff";
        assert_eq!(cookie_value(b"__Host-bff=abc", name), Some("abc"));
        assert_eq!(
            cookie_value(b"a=1; __Host-bff=abc ; b=2", name),
            Some("abc")
        );
        assert_eq!(cookie_value(b"a=1;__Host-bff=abc", name), Some("abc"));
        // A longer name that starts with ours, an empty value: not ours.
        assert_eq!(cookie_value(b"__Host-bffx=1; __Host-bff=", name), None);
        assert_eq!(cookie_value(b"x__Host-bff=1", name), None);
        // An unusable first value, a usable second one.
        assert_eq!(
            cookie_value(b"__Host-bff=a\x01b; __Host-bff=ok", name),
            Some("ok")
        );
    }

    #[test]
    fn control_characters_non_ascii_and_long_values_are_refused() {
        let name = b"bff";
        assert_eq!(cookie_value(b"bff=a\x7fb", name), None);
        assert_eq!(cookie_value("bff=é".as_bytes(), name), None);
        assert_eq!(cookie_value(b"bff=a b", name), None);
        let long = format!("bff={}", "a".repeat(129));
        assert_eq!(cookie_value(long.as_bytes(), name), None);
        let edge = format!("bff={}", "a".repeat(128));
        assert_eq!(cookie_value(edge.as_bytes(), name).map(str::len), Some(128));
        // Another cookie's odd bytes do not hide the session's.
        assert_eq!(cookie_value("x=é; bff=ok".as_bytes(), name), Some("ok"));
        let huge = vec![b'x'; 2 * 1024 * 1024];
        assert_eq!(cookie_value(&huge, name), None);
    }
}
