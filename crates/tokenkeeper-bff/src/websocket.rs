//! WebSocket upgrades through the proxy (BF-11, SEC-18). A browser cannot add a header to a
//! WebSocket handshake, so the `Origin` check (our own origin only) replaces the anti-forgery
//! header; the client's upgrade is validated before anything else happens (no upstream
//! handshake, no token, for a request that is not a valid upgrade); the route's token goes on
//! the upstream handshake (a DPoP-bound one with a proof for the handshake's `GET` of the
//! http(s) URL); messages are relayed both ways until either side closes, the relay is idle for
//! the route's idle timeout, a message is over the route's cap (default 1 MiB: close code
//! 1009), or the session ends — logout, back-channel logout, an administrator's
//! `end_sessions`, expiry — which closes the relay with code 1008.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::extract::FromRequestParts as _;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::Response;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::access::{resolve, Source};
use crate::bff::Bff;
use crate::relays::Registration;
use crate::responses::api_error;
use crate::session::BffSession;

/// How often a relay re-reads its session (a logout on another instance of a fleet, an expiry
/// between two cleanups): at most this long after, the relay closes.
const SESSION_CHECK: Duration = Duration::from_secs(30);

/// The close code of a relay whose session ended (policy violation).
const SESSION_ENDED: u16 = 1008;
pub(crate) async fn forward(bff: Bff, index: usize, mut parts: Parts) -> Response {
    let route = &bff.inner.options.routes[index];
    let origin_ok = parts
        .headers
        .get(header::ORIGIN)
        .is_some_and(|o| o.as_bytes() == bff.inner.origin.as_bytes());
    if !origin_ok {
        return api_error(StatusCode::FORBIDDEN, "Cross-origin WebSocket refused.");
    }
    // A valid upgrade first: no upstream handshake with the token for anything else.
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return axum::response::IntoResponse::into_response(rejection),
    };
    let (session, source) = match resolve(&bff, index, &parts.headers).await {
        Ok(resolved) => resolved,
        Err(response) => return response,
    };
    let token = match &source {
        Source::None => None,
        Source::Exchange(exchange) => match tokenkeeper::TokenSource::token(exchange).await {
            Ok(token) => Some(token),
            Err(error) => {
                tracing::warn!(%error, "no exchanged token for the WebSocket upstream");
                return api_error(StatusCode::BAD_GATEWAY, "Upstream token unavailable.");
            }
        },
        Source::User(key, params) => match bff.oidc().users().get_access_token(key, params).await {
            Ok(token) => Some(token),
            Err(tokenkeeper::Error::ReauthenticationRequired(_)) => {
                if let Some(session) = &session {
                    bff.end_session(session, "token").await;
                }
                return api_error(StatusCode::UNAUTHORIZED, "Not logged in.");
            }
            Err(error) => {
                tracing::warn!(%error, "no user token for the WebSocket upstream");
                return api_error(StatusCode::BAD_GATEWAY, "Upstream token unavailable.");
            }
        },
        Source::Client(index) => {
            match (bff.inner.clients.as_ref(), &bff.inner.route_clients[*index]) {
                (Some(clients), Some((name, _))) => match clients
                    .get_token(name, &route.client_params)
                    .await
                {
                    Ok(token) => Some(token),
                    Err(error) => {
                        tracing::warn!(%error, "no client token for the WebSocket upstream");
                        return api_error(StatusCode::BAD_GATEWAY, "Upstream token unavailable.");
                    }
                },
                _ => return api_error(StatusCode::BAD_GATEWAY, "Upstream token unavailable."),
            }
        }
    };
    let engine_route = &bff.inner.engine.routes()[index];
    let Some(mut target) = engine_route.upstream_url(&parts.uri) else {
        return api_error(StatusCode::BAD_REQUEST, "Invalid path.");
    };
    let scheme = if target.scheme() == "https" {
        "wss"
    } else {
        "ws"
    };
    if target.set_scheme(scheme).is_err() {
        return api_error(StatusCode::BAD_GATEWAY, "Bad upstream.");
    }
    let Ok(mut request) = target.as_str().into_client_request() else {
        return api_error(StatusCode::BAD_GATEWAY, "Bad upstream.");
    };
    match &token {
        Some(token) if token.is_dpop() => {
            // The handshake is a GET of the http(s) form of the URL: that is the proof's `htu`.
            let Some(http_url) = engine_route.upstream_url(&parts.uri) else {
                return api_error(StatusCode::BAD_REQUEST, "Invalid path.");
            };
            let presenter = match &source {
                Source::User(key, _) => bff.oidc().users().presenter(key).await,
                Source::Client(index) => {
                    match (bff.inner.clients.as_ref(), &bff.inner.route_clients[*index]) {
                        (Some(clients), Some((name, _))) => clients.presenter(name),
                        _ => Ok(None),
                    }
                }
                Source::Exchange(exchange) => tokenkeeper::TokenSource::dpop(exchange).await,
                Source::None => Ok(None),
            };
            let presented = match presenter {
                Ok(Some(presenter)) => {
                    presenter.present(token, "GET", &http_url, request.headers_mut())
                }
                Ok(None) => Err(tokenkeeper::Error::ReauthenticationRequired(
                    "the token is DPoP-bound, but its key is gone".into(),
                )),
                Err(error) => Err(error),
            };
            if let Err(error) = presented {
                tracing::warn!(%error, "no DPoP proof for the WebSocket upstream");
                return api_error(StatusCode::BAD_GATEWAY, "Upstream token unavailable.");
            }
        }
        Some(token) => {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, token.authorization_header().clone());
        }
        None => {}
    }
    if let Some(protocols) = parts.headers.get(header::SEC_WEBSOCKET_PROTOCOL) {
        request
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_PROTOCOL, protocols.clone());
    }
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(route.websocket_max_message))
        .max_frame_size(Some(route.websocket_max_message));
    let connected = tokio::time::timeout(
        route.timeout,
        tokio_tungstenite::connect_async_with_config(request, Some(config), false),
    )
    .await;
    let (upstream, handshake) = match connected {
        Ok(Ok(connected)) => connected,
        Ok(Err(tungstenite::Error::Http(response))) => {
            let status =
                StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            return api_error(status, "The upstream refused the WebSocket.");
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "WebSocket upstream unavailable");
            return api_error(StatusCode::BAD_GATEWAY, "Upstream unavailable.");
        }
        Err(_) => return api_error(StatusCode::GATEWAY_TIMEOUT, "Upstream timed out."),
    };
    let upgrade = upgrade
        .max_message_size(route.websocket_max_message)
        .max_frame_size(route.websocket_max_message);
    let upgrade = match handshake
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
    {
        Some(protocol) => upgrade.protocols([protocol.to_owned()]),
        None => upgrade,
    };
    let registration = session
        .as_ref()
        .map(|session| bff.inner.relays.register(&session.id_hash));
    let idle = route.websocket_idle;
    let going_away = bff.inner.relays.going_away();
    upgrade.on_upgrade(move |socket| async move {
        let watch = match (session, registration) {
            (Some(session), Some(registration)) => Some((bff, session, registration)),
            _ => None,
        };
        relay(socket, upstream, watch, idle, going_away).await;
    })
}

/// Why a relay ends.
enum End {
    /// Either side closed (or went away).
    Closed,
    /// Nothing crossed for the idle timeout.
    Idle,
    /// A message was over the cap.
    TooBig,
    /// The session ended.
    SessionEnded,
    /// The host is shutting down.
    GoingAway,
}

/// Relays messages both ways until either side closes, the relay is idle for `idle`, a message
/// is too big, or — with a session — the session ends.
async fn relay(
    client: WebSocket,
    upstream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    mut watch: Option<(Bff, Arc<BffSession>, Registration)>,
    idle: Duration,
    mut going_away: tokio::sync::watch::Receiver<bool>,
) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut upstream_tx, mut upstream_rx) = upstream.split();
    // Looked at first: a relay that starts after the shutdown began closes at once.
    going_away.mark_changed();
    let mut checks = tokio::time::interval(SESSION_CHECK);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    checks.tick().await;
    let idle_for = tokio::time::sleep(idle);
    tokio::pin!(idle_for);
    let end = loop {
        tokio::select! {
            message = client_rx.next() => match message {
                Some(Ok(message)) => {
                    idle_for.as_mut().reset(tokio::time::Instant::now() + idle);
                    let Some(message) = to_upstream(message) else { continue };
                    let close = matches!(message, Message::Close(_));
                    if upstream_tx.send(message).await.is_err() || close {
                        break End::Closed;
                    }
                }
                Some(Err(error)) => {
                    break if too_big(error) { End::TooBig } else { End::Closed };
                }
                None => break End::Closed,
            },
            message = upstream_rx.next() => match message {
                Some(Ok(message)) => {
                    idle_for.as_mut().reset(tokio::time::Instant::now() + idle);
                    let Some(message) = to_client(message) else { continue };
                    let close = matches!(message, ws::Message::Close(_));
                    if client_tx.send(message).await.is_err() || close {
                        break End::Closed;
                    }
                }
                Some(Err(tungstenite::Error::Capacity(_))) => break End::TooBig,
                _ => break End::Closed,
            },
            () = &mut idle_for => break End::Idle,
            () = async {
                loop {
                    if going_away.changed().await.is_err() {
                        // The host (and its sender) is gone without shutting down.
                        std::future::pending::<()>().await;
                    }
                    if *going_away.borrow_and_update() {
                        break;
                    }
                }
            } => break End::GoingAway,
            ended = async {
                match watch.as_mut() {
                    Some((_, _, registration)) => registration.ended.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            } => {
                if ended {
                    break End::SessionEnded;
                }
            }
            _ = checks.tick(), if watch.is_some() => {
                if let Some((bff, session, _)) = &watch {
                    // Gone or expired in the shared store (ended on another instance).
                    if let Ok(None) = bff.inner.sessions.get(&session.id, bff.now()).await {
                        break End::SessionEnded;
                    }
                }
            }
        }
    };
    let (code, reason) = match end {
        End::Closed => (1000, ""),
        End::Idle => (1001, "idle"),
        End::GoingAway => (1001, "server shutting down"),
        End::TooBig => (1009, "message too big"),
        End::SessionEnded => (SESSION_ENDED, "session ended"),
    };
    if !matches!(end, End::Closed) {
        let _ = client_tx
            .send(ws::Message::Close(Some(ws::CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
        let _ = upstream_tx
            .send(Message::Close(Some(tungstenite::protocol::CloseFrame {
                code: if code == SESSION_ENDED {
                    1001.into()
                } else {
                    code.into()
                },
                reason: reason.into(),
            })))
            .await;
    }
    let _ = client_tx.close().await;
    let _ = upstream_tx.close().await;
}

/// Whether a client-side receive error is a message over the cap.
fn too_big(error: axum::Error) -> bool {
    error
        .into_inner()
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

fn to_upstream(message: ws::Message) -> Option<Message> {
    Some(match message {
        ws::Message::Text(text) => Message::Text(text.as_str().into()),
        ws::Message::Binary(bytes) => Message::Binary(bytes),
        ws::Message::Ping(bytes) => Message::Ping(bytes),
        ws::Message::Pong(bytes) => Message::Pong(bytes),
        ws::Message::Close(frame) => {
            Message::Close(frame.map(|f| tungstenite::protocol::CloseFrame {
                code: f.code.into(),
                reason: f.reason.as_str().into(),
            }))
        }
    })
}

fn to_client(message: Message) -> Option<ws::Message> {
    Some(match message {
        Message::Text(text) => ws::Message::Text(text.as_str().into()),
        Message::Binary(bytes) => ws::Message::Binary(bytes),
        Message::Ping(bytes) => ws::Message::Ping(bytes),
        Message::Pong(bytes) => ws::Message::Pong(bytes),
        Message::Close(frame) => ws::Message::Close(frame.map(|f| ws::CloseFrame {
            code: f.code.into(),
            reason: f.reason.as_str().into(),
        })),
        Message::Frame(_) => return None,
    })
}
