//! Which token a request to a route gets (BF-05, BF-06): none, the route's client token, or
//! the session's user token — with the session it came from. The proxy's policy and the
//! WebSocket relay both ask here.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use tokenkeeper::user::UserTokenParams;
use tokenkeeper::Error;

use crate::bff::Bff;
use crate::responses::api_error;
use crate::routes::RouteToken;

/// Which token goes upstream.
pub(crate) enum Source {
    None,
    User(tokenkeeper::user::SessionKey, UserTokenParams),
    /// The client token of the route with this index.
    Client(usize),
    /// A token exchanged for the user's (RFC 8693).
    Exchange(tokenkeeper::ClientTokenSource),
}

/// The request's session (when the route's token type needs one) and the token source.
pub(crate) async fn resolve(
    bff: &Bff,
    index: usize,
    headers: &HeaderMap,
) -> Result<(Option<std::sync::Arc<crate::session::BffSession>>, Source), Response> {
    let route = &bff.inner.options.routes[index];
    let needs_session =
        !matches!(route.token, RouteToken::None | RouteToken::Client) || !route.policy.is_empty();
    let session = if needs_session {
        match bff.session(headers, true).await {
            Ok(session) => session,
            Err(error) => {
                crate::store_outage::warn(&error, "api call");
                return Err(api_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Unavailable right now.",
                ));
            }
        }
    } else {
        None
    };
    let users = bff.oidc().users();
    if !route.policy.is_empty() {
        // Boxed: only routes with requirements take this path.
        Box::pin(allowed(bff, route, session.as_deref())).await?;
    }
    let source = match (route.token, &session) {
        (RouteToken::None, _) => Source::None,
        (RouteToken::Client, _) => Source::Client(index),
        (RouteToken::User, None) => {
            return Err(api_error(StatusCode::UNAUTHORIZED, "Not logged in."));
        }
        (RouteToken::User, Some(session)) => Source::User(session.key(), route.user_params.clone()),
        (RouteToken::Exchange, None) => {
            return Err(api_error(StatusCode::UNAUTHORIZED, "Not logged in."));
        }
        (RouteToken::Exchange, Some(session)) => {
            Source::Exchange(Box::pin(exchanged(bff, index, session)).await?)
        }
        (RouteToken::UserOrClient | RouteToken::UserOrNone, None) => {
            if route.token == RouteToken::UserOrClient {
                Source::Client(index)
            } else {
                Source::None
            }
        }
        (RouteToken::UserOrClient | RouteToken::UserOrNone, Some(session)) => {
            // Boxed, as the session's end below: rare paths, kept out of every request's future.
            match Box::pin(users.get_access_token(&session.key(), &route.user_params)).await {
                Ok(_) => Source::User(session.key(), route.user_params.clone()),
                Err(Error::ReauthenticationRequired(_)) => {
                    Box::pin(bff.end_session(session, "token")).await;
                    if route.token == RouteToken::UserOrClient {
                        Source::Client(index)
                    } else {
                        Source::None
                    }
                }
                Err(error) => {
                    crate::metrics::token_failure(bff.name(), &route.path);
                    tracing::warn!(%error, "user token unavailable");
                    return Err(api_error(
                        StatusCode::BAD_GATEWAY,
                        "Upstream token unavailable.",
                    ));
                }
            }
        }
    };

    Ok((session, source))
}

/// Whether the route's requirements hold for `session` (BF-20): 401 without a session, 403
/// when a claim or a scope is missing.
async fn allowed(
    bff: &Bff,
    route: &crate::routes::ApiRoute,
    session: Option<&crate::session::BffSession>,
) -> Result<(), Response> {
    let forbidden = || {
        tracing::debug!(
            route = route.path.as_str(),
            "the route's policy refused a request"
        );
        api_error(StatusCode::FORBIDDEN, "Forbidden.")
    };
    let Some(session) = session else {
        return Err(api_error(StatusCode::UNAUTHORIZED, "Not logged in."));
    };
    if !route.policy.claims_met(session) {
        return Err(forbidden());
    }
    if route.policy.scopes.is_empty() {
        return Ok(());
    }
    let token = bff
        .oidc()
        .users()
        .get_access_token(&session.key(), &route.user_params)
        .await;
    let granted = match token {
        // A token response without `scope` granted what was asked (RFC 6749 §5.1).
        Ok(token) => token.scope().map_or_else(
            || bff.oidc().config().scope.to_string(),
            ToString::to_string,
        ),
        Err(Error::ReauthenticationRequired(_)) => {
            bff.end_session(session, "token").await;
            return Err(api_error(StatusCode::UNAUTHORIZED, "Not logged in."));
        }
        Err(error) => {
            crate::metrics::token_failure(bff.name(), &route.path);
            tracing::warn!(%error, "user token unavailable");
            return Err(api_error(
                StatusCode::BAD_GATEWAY,
                "Upstream token unavailable.",
            ));
        }
    };
    if route.policy.scopes_met(&granted) {
        Ok(())
    } else {
        Err(forbidden())
    }
}

/// The source of a token exchanged by the route's client for `session`'s access token (BF-20):
/// the subject's expiry bounds the exchanged token's, and the manager caches it per subject
/// token (one exchange per user token, shared by concurrent calls).
async fn exchanged(
    bff: &Bff,
    index: usize,
    session: &crate::session::BffSession,
) -> Result<tokenkeeper::ClientTokenSource, Response> {
    let route = &bff.inner.options.routes[index];
    let unavailable = || api_error(StatusCode::BAD_GATEWAY, "Upstream token unavailable.");
    let subject = match bff
        .oidc()
        .users()
        .get_access_token(
            &session.key(),
            &tokenkeeper::user::UserTokenParams::default(),
        )
        .await
    {
        Ok(token) => token,
        Err(Error::ReauthenticationRequired(_)) => {
            bff.end_session(session, "token").await;
            return Err(api_error(StatusCode::UNAUTHORIZED, "Not logged in."));
        }
        Err(error) => {
            crate::metrics::token_failure(bff.name(), &route.path);
            tracing::warn!(%error, "user token unavailable for the exchange");
            return Err(unavailable());
        }
    };
    let mut exchange =
        tokenkeeper::exchange::TokenExchange::access_token(subject.access_token().secret())
            .subject_expires_at(subject.expires_at());
    if let Some(audience) = &route.exchange_audience {
        exchange = exchange.audience(audience.as_str());
    }
    let (Some(clients), Some((name, _))) = (&bff.inner.clients, &bff.inner.route_clients[index])
    else {
        return Err(unavailable());
    };
    tokenkeeper::ClientTokenSource::new(
        clients,
        name,
        route.client_params.clone().exchange(exchange),
    )
    .map_err(|error| {
        tracing::warn!(%error, "the user's token cannot be exchanged");
        unavailable()
    })
}
