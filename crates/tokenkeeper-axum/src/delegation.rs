//! Extractors for APIs that call further APIs on behalf of their caller (DL-05): the incoming
//! bearer token, and a client that carries — per downstream origin — the exchanged token, the
//! forwarded one or the service's own (see [`tokenkeeper::delegation`]).
//!
//! These extractors only *take* the token: validate it first (signature, issuer, audience,
//! expiry) with your API's token validation, as for any protected route.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokenkeeper::delegation::{Delegation, IncomingToken};

/// The request's `Authorization: Bearer` token. Without one (or with a malformed one): 401
/// with `WWW-Authenticate: Bearer`.
#[derive(Debug, Clone)]
pub struct BearerToken(pub IncomingToken);

fn unauthorized() -> Response {
    let mut response = StatusCode::UNAUTHORIZED.into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The token of an `Authorization` value `Bearer <token68>` (RFC 6750 §2.1).
pub(crate) fn bearer(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token68 = |c: char| c.is_ascii_alphanumeric() || "-._~+/".contains(c);
    let body = token.trim_end_matches('=');
    (scheme.eq_ignore_ascii_case("bearer") && !body.is_empty() && body.chars().all(token68))
        .then_some(token)
}

impl<S: Send + Sync> FromRequestParts<S> for BearerToken {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
        match (values.next(), values.next()) {
            (Some(value), None) => bearer(value.as_bytes())
                .map(|token| Self(IncomingToken::new(token)))
                .ok_or_else(unauthorized),
            _ => Err(unauthorized()),
        }
    }
}

/// A client for this request's downstream calls, carrying the incoming bearer token's
/// delegation ([`Delegation::request_client`]); the [`Delegation`] comes from the state. 401
/// without a bearer token.
///
/// ```no_run
/// use axum::{routing::get, Router};
/// use tokenkeeper::delegation::Delegation;
/// use tokenkeeper_axum::DelegatedClient;
///
/// async fn invoices(http: DelegatedClient) -> String {
///     match http.get("https://billing.example.com/invoices").send().await {
///         Ok(response) => response.status().to_string(),
///         Err(_) => "billing unavailable".into(),
///     }
/// }
///
/// # fn app(delegation: Delegation) -> Router {
/// Router::new().route("/invoices", get(invoices)).with_state(delegation)
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DelegatedClient(pub reqwest_middleware::ClientWithMiddleware);

impl std::ops::Deref for DelegatedClient {
    type Target = reqwest_middleware::ClientWithMiddleware;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<S> FromRequestParts<S> for DelegatedClient
where
    Delegation: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let BearerToken(incoming) = BearerToken::from_request_parts(parts, state).await?;
        Ok(Self(Delegation::from_ref(state).request_client(incoming)))
    }
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn bearer_values_are_token68() {
        assert_eq!(bearer(b"Bearer abc.def-_~+/=="), Some("abc.def-_~+/=="));
        assert_eq!(bearer(b"bearer x"), Some("x"));
        for bad in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Basic abc",
            b"Bearer a b",
            b"Bearer a\x01",
            b"Bearer ==",
            b"DPoP abc",
            b"Bearer \xff",
        ] {
            assert_eq!(bearer(bad), None, "{bad:?}");
        }
    }
}
