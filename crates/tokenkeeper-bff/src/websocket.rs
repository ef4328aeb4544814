//! WebSocket upgrades through the proxy (BF-11). A browser cannot add a header to a WebSocket
//! handshake, so the `Origin` check (our own origin only) replaces the anti-forgery header; the
//! route's token goes on the upstream handshake (a DPoP-bound one with a proof for the
//! handshake's `GET` of the http(s) URL); messages are relayed both ways until either side
//! closes.

use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::extract::FromRequestParts as _;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::Response;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::bff::Bff;
use crate::proxy::{api_error, resolve, upstream_url, Source};

pub(crate) async fn forward(bff: Bff, index: usize, mut parts: Parts) -> Response {
    let route = &bff.inner.options.routes[index];
    let origin_ok = parts
        .headers
        .get(header::ORIGIN)
        .is_some_and(|o| o.as_bytes() == bff.inner.origin.as_bytes());
    if !origin_ok {
        return api_error(StatusCode::FORBIDDEN, "Cross-origin WebSocket refused.");
    }
    let (session, source) = match resolve(&bff, index, &parts.headers).await {
        Ok(resolved) => resolved,
        Err(response) => return response,
    };
    let token = match &source {
        Source::None => None,
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
    let Some(mut target) = upstream_url(route, &parts.uri) else {
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
            let Some(http_url) = upstream_url(route, &parts.uri) else {
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
    let connected =
        tokio::time::timeout(route.timeout, tokio_tungstenite::connect_async(request)).await;
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
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return axum::response::IntoResponse::into_response(rejection),
    };
    let upgrade = match handshake
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
    {
        Some(protocol) => upgrade.protocols([protocol.to_owned()]),
        None => upgrade,
    };
    upgrade.on_upgrade(move |socket| relay(socket, upstream))
}

/// Relays messages both ways until either side closes.
async fn relay(
    client: WebSocket,
    upstream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut upstream_tx, mut upstream_rx) = upstream.split();
    let up = async {
        while let Some(Ok(message)) = client_rx.next().await {
            let Some(message) = to_upstream(message) else {
                continue;
            };
            let close = matches!(message, Message::Close(_));
            if upstream_tx.send(message).await.is_err() || close {
                break;
            }
        }
        let _ = upstream_tx.close().await;
    };
    let down = async {
        while let Some(Ok(message)) = upstream_rx.next().await {
            let Some(message) = to_client(message) else {
                continue;
            };
            let close = matches!(message, ws::Message::Close(_));
            if client_tx.send(message).await.is_err() || close {
                break;
            }
        }
        let _ = client_tx.close().await;
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
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
