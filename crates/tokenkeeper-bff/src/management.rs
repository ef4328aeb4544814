//! The management endpoints: login, callback, logout, user, diagnostics.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use tokenkeeper_axum::{local_return_url, CallbackQuery, LoginError};

use crate::bff::Bff;
use crate::responses::plain;

/// A short, generic answer for the browser (details go to the log).
#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    #[serde(rename = "returnUrl")]
    return_url: Option<String>,
    prompt: Option<String>,
    /// A step-up (PR-04): what this login asks of the user's authentication.
    acr_values: Option<String>,
    max_age: Option<String>,
}

/// The requirements of a step-up login (`acr_values`, `max_age`), when the query asks for
/// any; `Err` for values that cannot be sent.
fn step_up(
    query: &LoginQuery,
) -> Result<Option<tokenkeeper::protocol::step_up::AuthenticationRequirements>, ()> {
    if query.acr_values.is_none() && query.max_age.is_none() {
        return Ok(None);
    }
    let mut requirements = tokenkeeper::protocol::step_up::AuthenticationRequirements::new();
    if let Some(values) = &query.acr_values {
        requirements = requirements.with_acr_values(values).map_err(|_| ())?;
    }
    if let Some(max_age) = &query.max_age {
        let secs: u64 = max_age
            .parse()
            .ok()
            .filter(|s| *s <= 10 * 365 * 86_400)
            .ok_or(())?;
        requirements = requirements.with_max_age(std::time::Duration::from_secs(secs));
    }
    Ok(Some(requirements))
}

/// `GET {base}/login?returnUrl=&prompt=&acr_values=&max_age=` (BF-01; a step-up, PR-04, with
/// `acr_values` and/or `max_age`). The browser's current session, if any, travels sealed with
/// the login, so that the callback ends it (SEC-14).
pub(crate) async fn login(
    State(bff): State<Bff>,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Response {
    if let Some(prompt) = &query.prompt {
        // What the provider lists in `prompt_values_supported`; a provider that publishes no
        // list gets the values OpenID Connect Core defines, and nothing else.
        let supported = match bff.oidc().provider_metadata().await {
            Ok(metadata) => match metadata
                .extra
                .get("prompt_values_supported")
                .and_then(Value::as_array)
            {
                Some(values) => values.iter().any(|v| v.as_str() == Some(prompt)),
                None => matches!(
                    prompt.as_str(),
                    "none" | "login" | "consent" | "select_account"
                ),
            },
            Err(error) => {
                tracing::warn!(%error, "provider metadata unavailable");
                return plain(StatusCode::BAD_GATEWAY, "Login is unavailable right now.");
            }
        };
        if !supported {
            return plain(StatusCode::BAD_REQUEST, "Unsupported prompt.");
        }
    }
    let Ok(requirements) = step_up(&query) else {
        return plain(StatusCode::BAD_REQUEST, "Invalid step-up request.");
    };
    let replaces = match bff.session(&headers, false).await {
        Ok(Some(session)) => Some(session.id.clone()),
        _ => None,
    };
    let mut start = tokenkeeper_axum::LoginStart::new(query.return_url.as_deref())
        .prompt(query.prompt.as_deref())
        .replaces(replaces.as_deref());
    if let Some(requirements) = requirements {
        start = start.requirements(requirements);
    }
    match bff.oidc().begin_login(&start).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// `GET {base}/callback`: completes the login, starts the server-side session, and sends the
/// browser on with a page of our own origin (so that the `SameSite=Strict` session cookie goes
/// with the next request: a redirect chain that began on the provider's site would leave it
/// out). A silent login (`prompt=none`) answers with a page that posts the outcome to the
/// parent window, addressed to the BFF's own origin only (BF-10).
pub(crate) async fn callback(
    State(bff): State<Bff>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let callback = bff.oidc().finish_login(&headers, query).await;
    let silent = callback.prompt.as_deref() == Some("none");
    if let Ok(done) = &callback.result {
        // The session this login replaces in this browser ends, and its tokens are revoked:
        // one login, one token record (SEC-14).
        if let Some(id) = &done.replaces {
            if let Ok(Some(replaced)) = bff.inner.sessions.get(id, bff.now()).await {
                // A login of the same provider session (a step-up) shares its grant with the
                // session it replaces: that one's tokens are forgotten, not revoked.
                let same = replaced.sub == done.login.sub && replaced.sid == done.login.sid;
                let reason = if same { "stepped-up" } else { "replaced" };
                bff.end_session(&replaced, reason).await;
            }
        }
    }
    let result = match callback.result {
        Ok(done) => match with_userinfo(&bff, bff.new_session(&done)).await {
            Ok(session) => match bff.inner.sessions.put(session.clone()).await {
                Ok(()) => {
                    crate::metrics::session_started(bff.name());
                    Ok((session, done.return_url))
                }
                Err(error) => Err(LoginError::Session(error.to_string())),
            },
            Err(error) => Err(LoginError::Token(error)),
        },
        Err(error) => Err(error),
    };
    let mut response = match (&result, silent) {
        (Ok(_), true) => silent_page(&bff, true),
        (Ok((_, return_url)), false) => continue_page(return_url),
        (Err(error), true) => {
            tracing::info!(%error, "silent login: not logged in");
            silent_page(&bff, false)
        }
        (Err(LoginError::StateMismatch), false) => {
            // A forged callback leaves the login in progress (and its cookie) alone.
            return LoginError::StateMismatch.into_response();
        }
        (Err(error), false) => {
            tracing::warn!(%error, "login refused");
            plain(StatusCode::BAD_REQUEST, "Login failed. Please try again.")
        }
    };
    let headers = response.headers_mut();
    for cookie in bff.oidc().clear_login_cookies() {
        headers.append(header::SET_COOKIE, cookie);
    }
    if let Ok((session, _)) = &result {
        headers.append(header::SET_COOKIE, bff.session_cookie(Some(&session.id)));
    }
    response
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A page that moves on to `return_url` (a checked local path) from our own origin.
fn continue_page(return_url: &str) -> Response {
    let url = html_escape(return_url);
    let body = format!(
        "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=\"0;url={url}\"><title>Signing in</title><a href=\"{url}\">Continue</a>"
    );
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

/// The silent-login page: posts `{source: "bff-silent-login", isLoggedIn}` to the parent, for
/// the BFF's own origin only, from a script allowed by a CSP nonce (BF-10).
fn silent_page(bff: &Bff, logged_in: bool) -> Response {
    let nonce = tokenkeeper::random_token(16).unwrap_or_default();
    let origin = serde_json::to_string(&bff.inner.origin).unwrap_or_else(|_| "\"\"".into());
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>Silent login</title><script nonce=\"{nonce}\">window.parent.postMessage({{source:\"bff-silent-login\",isLoggedIn:{logged_in}}},{origin});</script>"
    );
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; frame-ancestors {}",
        bff.inner.origin
    );
    let mut response = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response();
    if let Ok(csp) = HeaderValue::try_from(csp) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    response
}

#[derive(Deserialize)]
pub(crate) struct LogoutQuery {
    sid: Option<String>,
    #[serde(rename = "returnUrl")]
    return_url: Option<String>,
}

/// `GET {base}/logout?sid=&returnUrl=` (BF-02): with a session, the query's `sid` must be the
/// session's (a link on another site cannot know it); the session ends, its refresh token is
/// revoked, and the browser goes to the provider's end-session endpoint with `id_token_hint`.
/// Without a session there is nothing to end: the browser goes to `returnUrl` (idempotent).
pub(crate) async fn logout(
    State(bff): State<Bff>,
    headers: HeaderMap,
    Query(query): Query<LogoutQuery>,
) -> Response {
    let return_url = match query.return_url.as_deref() {
        None => "/".to_owned(),
        Some(raw) => match local_return_url(raw, &bff.inner.origin) {
            Some(url) => url,
            None => return plain(StatusCode::BAD_REQUEST, "Invalid returnUrl."),
        },
    };
    let session = match bff.session(&headers, false).await {
        Ok(session) => session,
        Err(error) => {
            crate::store_outage::warn(&error, "logout");
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "Logout is unavailable right now.",
            );
        }
    };
    let Some(session) = session else {
        return Redirect::to(&return_url).into_response();
    };
    let sid_ok = query
        .sid
        .as_deref()
        .is_some_and(|sid| constant_time_eq(sid.as_bytes(), session.sid.as_bytes()));
    if !sid_ok {
        return plain(StatusCode::BAD_REQUEST, "Invalid logout request.");
    }
    bff.end_session(&session, "logout").await;
    let post_logout = format!("{}{return_url}", bff.inner.origin);
    let target = match bff.oidc().provider_metadata().await {
        Ok(metadata) => match metadata.end_session_endpoint.clone() {
            Some(mut end) => {
                end.query_pairs_mut()
                    .append_pair("id_token_hint", &session.id_token)
                    .append_pair("post_logout_redirect_uri", &post_logout)
                    .append_pair("client_id", &bff.oidc().config().client_id);
                end.to_string()
            }
            None => return_url,
        },
        Err(_) => return_url,
    };
    let mut response = Redirect::to(&target).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, bff.session_cookie(None));
    response
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
pub(crate) struct UserQuery {
    slide: Option<bool>,
}

/// `session`, with the provider's userinfo merged when the options ask for it (BF-19). When it
/// cannot be had, or is about someone else, the login fails and its tokens are forgotten
/// (the refresh token revoked): no session is made of it.
async fn with_userinfo(
    bff: &Bff,
    session: Result<crate::session::BffSession, tokenkeeper::Error>,
) -> Result<crate::session::BffSession, tokenkeeper::Error> {
    let mut session = session?;
    if !bff.inner.options.claims.userinfo {
        return Ok(session);
    }
    match Box::pin(crate::userinfo::merge(bff, &mut session)).await {
        Ok(()) => Ok(session),
        Err(error) => {
            if let Err(cleanup) = bff.oidc().users().logout(&session.key()).await {
                tracing::warn!(error = %cleanup, "a refused login's tokens could not be cleared");
            }
            Err(error)
        }
    }
}

/// `GET {base}/user` (BF-03, BF-19): the session's claims as `[{type, value}]`, shaped by the
/// options' [`crate::UserClaims`] (the protocol claims dropped by default), with
/// `bff:logout_url`, `bff:session_expires_in` and `bff:session_state`; needs the anti-forgery
/// header; `?slide=false` does not extend the session; anonymous callers get 401.
pub(crate) async fn user(
    State(bff): State<Bff>,
    headers: HeaderMap,
    Query(query): Query<UserQuery>,
) -> Response {
    if !bff.anti_forgery_ok(&headers) {
        return plain(StatusCode::UNAUTHORIZED, "Anti-forgery header missing.");
    }
    let session = match bff.session(&headers, query.slide.unwrap_or(true)).await {
        Ok(Some(session)) => session,
        Ok(None) => return plain(StatusCode::UNAUTHORIZED, "Not logged in."),
        Err(error) => {
            crate::store_outage::warn(&error, "management endpoint");
            return plain(StatusCode::SERVICE_UNAVAILABLE, "Unavailable right now.");
        }
    };
    let mut claims: Vec<Value> = Vec::new();
    for (name, value) in bff.inner.options.claims.shape(&session) {
        match value {
            Value::Array(values) => {
                for v in values {
                    claims.push(json!({"type": name, "value": v}));
                }
            }
            v => claims.push(json!({"type": name, "value": v})),
        }
    }
    let sid: String = url::form_urlencoded::byte_serialize(session.sid.as_bytes()).collect();
    claims.push(json!({
        "type": "bff:logout_url",
        "value": format!("{}/logout?sid={sid}", bff.inner.options.base_path),
    }));
    claims.push(json!({
        "type": "bff:session_expires_in",
        "value": session.expires_at.saturating_sub(bff.now().as_millis()) / 1000,
    }));
    if let Some(state) = &session.session_state {
        claims.push(json!({"type": "bff:session_state", "value": state}));
    }
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(Value::Array(claims)),
    )
        .into_response()
}

/// `GET {base}/diagnostics` (development mode only, BF-14): the session's user and tokens.
/// It shows an access token, so it needs the anti-forgery header like an API call (SEC-20):
/// no other site can have a browser fetch it.
pub(crate) async fn diagnostics(State(bff): State<Bff>, headers: HeaderMap) -> Response {
    if !bff.anti_forgery_ok(&headers) {
        return plain(StatusCode::UNAUTHORIZED, "Anti-forgery header missing.");
    }
    let session = match bff.session(&headers, false).await {
        Ok(Some(session)) => session,
        _ => return plain(StatusCode::UNAUTHORIZED, "Not logged in."),
    };
    let token = bff
        .oidc()
        .users()
        .get_access_token(&session.key(), &Default::default())
        .await
        .ok()
        .map(|t| t.access_token().secret().to_owned());
    axum::Json(json!({
        "sub": session.sub,
        "sid": session.sid,
        "claims": session.claims,
        "user_access_token": token,
        "session_expires_at": session.expires_at,
    }))
    .into_response()
}

/// `POST {base}/backchannel` (BF-07, BF-13): a back-channel logout token (form field
/// `logout_token`) from the provider: validated (signature, `iss`, `aud`, `iat`, `events`, `sub`
/// or `sid`, no `nonce`), its `jti` accepted once, then every matching session ends and its
/// refresh token is revoked. Any failure is a 400 with `Cache-Control: no-store`.
pub(crate) async fn backchannel(State(bff): State<Bff>, body: axum::body::Bytes) -> Response {
    let refused = || plain(StatusCode::BAD_REQUEST, "Invalid logout token.");
    let Some(token) = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned())
    else {
        return refused();
    };
    let validator = match bff.oidc().users().id_token_validator().await {
        Ok(validator) => validator,
        Err(error) => {
            tracing::warn!(%error, "back-channel logout: no validator");
            return refused();
        }
    };
    let logout = match validator
        .validate_logout_token(&token, LOGOUT_TOKEN_MAX_AGE)
        .await
    {
        Ok(logout) => logout,
        Err(error) => {
            tracing::warn!(%error, "back-channel logout token refused");
            return refused();
        }
    };
    let now = bff.now();
    let until = now.saturating_add(LOGOUT_TOKEN_MAX_AGE + std::time::Duration::from_secs(120));
    match bff
        .inner
        .sessions
        .first_use(&format!("jti:{}", logout.jti), until, now)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("a back-channel logout token was replayed");
            return refused();
        }
        Err(error) => {
            crate::store_outage::warn(&error, "back-channel logout");
            return plain(StatusCode::SERVICE_UNAVAILABLE, "Unavailable right now.");
        }
    }
    let sessions = match bff
        .inner
        .sessions
        .find(logout.sub.as_deref(), logout.sid.as_deref())
        .await
    {
        Ok(sessions) => sessions,
        Err(error) => {
            crate::store_outage::warn(&error, "back-channel logout");
            return plain(StatusCode::SERVICE_UNAVAILABLE, "Unavailable right now.");
        }
    };
    for session in &sessions {
        bff.end_session(session, "backchannel").await;
    }
    tracing::info!(sessions = sessions.len(), "back-channel logout");
    (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response()
}

/// How old a back-channel logout token may be.
const LOGOUT_TOKEN_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(300);

/// `GET {base}/auth` (BF-21, see [`crate::ForwardAuth`]): 200 with the identity headers for a
/// live session (it slides, as any use does), 401 without one.
pub(crate) async fn auth(State(bff): State<Bff>, headers: HeaderMap) -> Response {
    let Some(config) = &bff.inner.options.forward_auth else {
        return plain(StatusCode::NOT_FOUND, "Not found.");
    };
    let session = match bff.session(&headers, true).await {
        Ok(Some(session)) => session,
        Ok(None) => return plain(StatusCode::UNAUTHORIZED, "Not logged in."),
        Err(error) => {
            crate::store_outage::warn(&error, "management endpoint");
            return plain(StatusCode::SERVICE_UNAVAILABLE, "Unavailable right now.");
        }
    };
    let mut response = StatusCode::OK.into_response();
    *response.headers_mut() = crate::forward_auth::identity_headers(config, &session);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The access token only to the reverse proxy, never to a browser that asks directly.
    if let (Some(name), true) = (&config.access_token, config.shows_proxy_secret(&headers)) {
        let token = bff
            .oidc()
            .users()
            .get_access_token(&session.key(), &Default::default())
            .await;
        match token {
            Ok(token) if !token.is_dpop() => {
                if let Ok(mut value) = HeaderValue::from_str(token.access_token().secret()) {
                    value.set_sensitive(true);
                    response.headers_mut().insert(name.clone(), value);
                }
            }
            Ok(_) => tracing::warn!("forward auth: the access token is DPoP-bound; not sent"),
            Err(tokenkeeper::Error::ReauthenticationRequired(_)) => {
                Box::pin(bff.end_session(&session, "token")).await;
                return plain(StatusCode::UNAUTHORIZED, "Not logged in.");
            }
            Err(error) => {
                tracing::warn!(%error, "forward auth: no access token");
                return plain(StatusCode::BAD_GATEWAY, "Upstream token unavailable.");
            }
        }
    }
    response
}
