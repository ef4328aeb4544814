//! The protected test API: checks the test server's access tokens, DPoP-bound ones with their
//! proofs, and can demand its own DPoP nonce.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokenkeeper::Clock as _;

use crate::access_tokens::verify;
use crate::dpop::{DpopState, ProofError};
use crate::state::ServerState;

struct ApiState {
    server: Arc<ServerState>,
    base: String,
    dpop: DpopState,
    requests: AtomicU64,
    unauthorized: AtomicU64,
    /// A new nonce after every response (only the latest one is accepted).
    rolling: std::sync::atomic::AtomicBool,
    /// The next this many requests get `use_dpop_nonce`, whatever their proof.
    fail: AtomicU64,
}

/// A protected API on its own loopback port (so its own origin), for the test server's tokens.
///
/// Every path answers any method. A request needs a valid access token of the server:
///
/// - a Bearer token without `cnf` with `Authorization: Bearer`;
/// - a DPoP-bound token (`cnf.jkt`) with `Authorization: DPoP` and a valid proof (`htm`, `htu`
///   of this API, `ath`, a new `jti`, a key whose thumbprint is `cnf.jkt`, and this API's own
///   nonce when [`TestApi::set_nonce_required`] is on).
///
/// Refusals are `401` with a `WWW-Authenticate` challenge (`error="use_dpop_nonce"` and a
/// `DPoP-Nonce` header when the nonce is missing). Success is `200` with
/// `{"sub", "scheme", "path", "body_len"}`.
pub struct TestApi {
    addr: SocketAddr,
    state: Arc<ApiState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for TestApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApi")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl TestApi {
    pub(crate) async fn start(server: Arc<ServerState>) -> Self {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(listener) => listener,
            Err(e) => panic!("tokenkeeper-testing: cannot bind the test API: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => panic!("tokenkeeper-testing: {e}"),
        };
        let state = Arc::new(ApiState {
            server,
            base: format!("http://{addr}"),
            dpop: DpopState::new(),
            requests: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
            rolling: std::sync::atomic::AtomicBool::new(false),
            fail: AtomicU64::new(0),
        });
        let router = Router::new().fallback(handle).with_state(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Self {
            addr,
            state,
            shutdown: Some(tx),
        }
    }

    /// The URL of `path` at this API (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.state.base)
    }

    /// The origin (`http://127.0.0.1:port`).
    pub fn origin(&self) -> &str {
        &self.state.base
    }

    /// Demands this API's own nonce in proofs.
    pub fn set_nonce_required(&self, required: bool) {
        self.state
            .dpop
            .nonce_required
            .store(required, Ordering::Relaxed);
    }

    /// Replaces the API's nonce; returns the new one.
    pub fn rotate_nonce(&self) -> String {
        self.state.dpop.rotate_nonce()
    }

    /// Issues a new nonce with every response, accepting only the latest: a client that does
    /// not keep the nonce of every response (retries' included) gets a `use_dpop_nonce`.
    pub fn set_nonce_rolling(&self, rolling: bool) {
        self.state.rolling.store(rolling, Ordering::Relaxed);
    }

    /// The next `n` requests get `401 use_dpop_nonce` with the current nonce, whatever their
    /// proof.
    pub fn demand_nonce_next(&self, n: u64) {
        self.state.fail.store(n, Ordering::Relaxed);
    }

    /// Requests received.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Requests answered 401.
    pub fn unauthorized(&self) -> u64 {
        self.state.unauthorized.load(Ordering::Relaxed)
    }

    /// DPoP proofs accepted.
    pub fn proofs_accepted(&self) -> u64 {
        self.state.dpop.accepted.load(Ordering::Relaxed)
    }
}

fn challenge(state: &ApiState, scheme: &str, error: &str, description: &str) -> Response {
    state.unauthorized.fetch_add(1, Ordering::Relaxed);
    let value = format!(r#"{scheme} error="{error}", error_description="{description}""#);
    let mut response = StatusCode::UNAUTHORIZED.into_response();
    if let Ok(value) = HeaderValue::try_from(value) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

async fn handle(
    State(state): State<Arc<ApiState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let forced = state
        .fail
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok();
    let mut response = if forced {
        challenge(
            &state,
            "DPoP",
            "use_dpop_nonce",
            "Resource server requires nonce in DPoP proof",
        )
    } else {
        check(&state, &method, &uri, &headers, body.len())
    };
    if state.rolling.load(Ordering::Relaxed) {
        state.dpop.rotate_nonce();
    }
    if let Some(nonce) = state.dpop.current_nonce() {
        if let Ok(value) = HeaderValue::try_from(nonce) {
            response.headers_mut().insert("dpop-nonce", value);
        }
    }
    response
}

fn check(
    state: &ApiState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body_len: usize,
) -> Response {
    let Some((scheme, token)) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
    else {
        return challenge(state, "Bearer", "invalid_request", "no token");
    };
    let claims = match verify(&state.server, token) {
        Ok(claims) => claims,
        Err(_) => return challenge(state, "Bearer", "invalid_token", "the token is not valid"),
    };
    let bound = claims
        .get("cnf")
        .and_then(|c| c.get("jkt"))
        .and_then(Value::as_str);
    match bound {
        None => {
            if !scheme.eq_ignore_ascii_case("bearer") {
                return challenge(state, "Bearer", "invalid_token", "not a DPoP-bound token");
            }
        }
        Some(jkt) => {
            if !scheme.eq_ignore_ascii_case("dpop") {
                return challenge(
                    state,
                    "DPoP",
                    "invalid_token",
                    "a DPoP-bound token needs the DPoP scheme",
                );
            }
            let htu = format!("{}{}", state.base, uri.path());
            let now = state.server.clock.now().as_millis() / 1000;
            match state
                .dpop
                .verify(headers, method.as_str(), &htu, Some(token), now)
            {
                Ok(Some(proven)) if proven == jkt => {}
                Ok(Some(_)) => {
                    return challenge(
                        state,
                        "DPoP",
                        "invalid_dpop_proof",
                        "the proof's key is not the token's",
                    )
                }
                Ok(None) => return challenge(state, "DPoP", "invalid_dpop_proof", "no proof"),
                Err(ProofError::UseNonce) => {
                    return challenge(
                        state,
                        "DPoP",
                        "use_dpop_nonce",
                        "Resource server requires nonce in DPoP proof",
                    )
                }
                Err(ProofError::Invalid(_)) => {
                    return challenge(
                        state,
                        "DPoP",
                        "invalid_dpop_proof",
                        "the proof is not valid",
                    )
                }
            }
        }
    }
    Json(json!({
        "sub": claims.get("sub"),
        "scheme": scheme,
        "path": uri.path(),
        "body_len": body_len,
    }))
    .into_response()
}
