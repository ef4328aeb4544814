//! Delegation: an API that received a user's token calls further APIs — on the user's behalf
//! (an exchanged token, or the same token forwarded) or as itself (its own client-credentials
//! token), chosen per downstream origin (DL-05).
//!
//! A [`Delegation`] is built once: the routes by downstream origin and the token manager.
//! Per incoming request, [`Delegation::middleware`] (or [`Delegation::client`]) gives a
//! [`DelegatingMiddleware`] holding the request's token. For each downstream call it:
//!
//! - **exchanges** the incoming token (RFC 8693, see [`crate::exchange`]) for the downstream's
//!   audience, with a registered client — cached by the subject's keyed hash, never outliving
//!   the incoming token;
//! - **forwards** the incoming token as it came — only to origins named with
//!   [`DelegationBuilder::forward`];
//! - sends the service's **own** client-credentials token;
//! - **refuses** a request to any other origin ([`Error::DestinationNotAllowed`]; nothing is
//!   sent), so that no token — the user's least of all — goes where it was not meant to.
//!
//! ```no_run
//! # async fn run(incoming: &str) -> Result<(), Box<dyn std::error::Error>> {
//! use tokenkeeper::delegation::{Delegation, IncomingToken};
//! use tokenkeeper::exchange::TokenExchange;
//! use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager};
//!
//! let tokens = ClientCredentialsTokenManager::builder()
//!     .client("orders", ClientConfig::new("https://idp.example.com/token", "orders-api", "secret"))
//!     .build()?;
//! let delegation = Delegation::builder(tokens)
//!     .exchange("https://billing.example.com", "orders", |e: TokenExchange| e.audience("billing"))
//!     .forward("https://audit.example.com")
//!     .own("https://catalog.example.com", "orders")
//!     .build()?;
//! // Per incoming request (tokenkeeper-axum's `DelegatedClient` extractor does this):
//! let http = delegation.client(&reqwest::Client::new(), IncomingToken::new(incoming));
//! let invoices = http.get("https://billing.example.com/invoices").send().await?;
//! # let _ = invoices; Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use http::{header::AUTHORIZATION, Extensions, HeaderValue};
use reqwest_middleware::{Middleware, Next};

use crate::client_credentials::{ClientCredentialsTokenManager, TokenRequestParams};
use crate::clock::Timestamp;
use crate::error::{ConfigError, Error};
use crate::exchange::{token_types, TokenExchange};
use crate::middleware::TokenMiddleware;
use crate::secret::ExchangedToken;
use crate::ClientTokenSource;

/// The bearer token an API received (the subject of exchanges, the token forwarded). `Debug`
/// shows a fingerprint only.
#[derive(Clone, Debug)]
pub struct IncomingToken {
    token: ExchangedToken,
    expires_at: Option<Timestamp>,
}

impl IncomingToken {
    /// The token as received (without the `Bearer ` scheme). For a JWT, its `exp` bounds the
    /// exchanged tokens' life; for an opaque token, set [`IncomingToken::expires_at`].
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: ExchangedToken::new(token),
            expires_at: None,
        }
    }

    /// When the token expires (from your validation or introspection of it).
    pub fn expires_at(mut self, expires_at: Timestamp) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    /// The token itself. Take care where it goes.
    pub fn secret(&self) -> &str {
        self.token.secret()
    }
}

/// How the exchange for one downstream is asked for: audiences, requested type (the subject
/// is filled in per request).
type Shape = Arc<dyn Fn(TokenExchange) -> TokenExchange + Send + Sync>;

enum Downstream {
    Exchange {
        client: String,
        shape: Shape,
        params: TokenRequestParams,
    },
    Forward,
    Own(TokenMiddleware),
}

impl fmt::Debug for Downstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exchange { client, .. } => write!(f, "Exchange({client:?})"),
            Self::Forward => f.write_str("Forward"),
            Self::Own(m) => write!(f, "Own({:?})", m.source()),
        }
    }
}

/// The downstream routes: what each origin gets. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Delegation {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tokens: ClientCredentialsTokenManager,
    http: reqwest::Client,
    /// Index into `routes` by origin (`https://host:port`, as `url::Origin` serialises it).
    by_origin: HashMap<String, usize>,
    routes: Vec<Downstream>,
}

/// Builds a [`Delegation`]; origins and clients are checked in [`DelegationBuilder::build`].
#[must_use]
pub struct DelegationBuilder {
    tokens: ClientCredentialsTokenManager,
    http: Option<reqwest::Client>,
    routes: Vec<(String, Pending)>,
}

enum Pending {
    Exchange {
        client: String,
        shape: Shape,
        params: TokenRequestParams,
    },
    Forward,
    Own {
        client: String,
        params: TokenRequestParams,
    },
}

impl fmt::Debug for DelegationBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelegationBuilder")
            .field(
                "origins",
                &self.routes.iter().map(|(o, _)| o).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl DelegationBuilder {
    /// Calls to `origin` carry the incoming token exchanged by `client` (a registered client of
    /// the manager); `shape` adds the audiences or requested type
    /// (`|e| e.audience("billing")`).
    pub fn exchange(
        self,
        origin: &str,
        client: &str,
        shape: impl Fn(TokenExchange) -> TokenExchange + Send + Sync + 'static,
    ) -> Self {
        self.exchange_with(origin, client, shape, TokenRequestParams::default())
    }

    /// As [`DelegationBuilder::exchange`], with a scope or resources for the exchange.
    pub fn exchange_with(
        mut self,
        origin: &str,
        client: &str,
        shape: impl Fn(TokenExchange) -> TokenExchange + Send + Sync + 'static,
        params: TokenRequestParams,
    ) -> Self {
        self.routes.push((
            origin.to_owned(),
            Pending::Exchange {
                client: client.to_owned(),
                shape: Arc::new(shape),
                params,
            },
        ));
        self
    }

    /// Calls to `origin` carry the incoming token itself. Only for APIs that accept the same
    /// audience as this one (the token was not minted for them otherwise).
    pub fn forward(mut self, origin: &str) -> Self {
        self.routes.push((origin.to_owned(), Pending::Forward));
        self
    }

    /// Calls to `origin` carry `client`'s own client-credentials token.
    pub fn own(self, origin: &str, client: &str) -> Self {
        self.own_with(origin, client, TokenRequestParams::default())
    }

    /// As [`DelegationBuilder::own`], with parameters (scope, resources).
    pub fn own_with(mut self, origin: &str, client: &str, params: TokenRequestParams) -> Self {
        self.routes.push((
            origin.to_owned(),
            Pending::Own {
                client: client.to_owned(),
                params,
            },
        ));
        self
    }

    /// The HTTP client of [`Delegation::request_client`] (default: `reqwest::Client::new()`).
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Checks the routes: each origin an absolute `http(s)` origin named once (a path is an
    /// error: routes are per origin), each client registered.
    pub fn build(self) -> Result<Delegation, Error> {
        let mut by_origin = HashMap::new();
        let mut routes = Vec::new();
        for (origin, pending) in self.routes {
            let parsed = url::Url::parse(&origin)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .filter(|u| u.path() == "/" && u.query().is_none() && u.fragment().is_none())
                .ok_or_else(|| {
                    ConfigError::new("origin", format!("{origin:?} is not an http(s) origin"))
                })?;
            let key = parsed.origin().ascii_serialization();
            let route = match pending {
                Pending::Exchange {
                    client,
                    shape,
                    params,
                } => {
                    self.tokens.cache_key(&client, &params)?;
                    Downstream::Exchange {
                        client,
                        shape,
                        params,
                    }
                }
                Pending::Forward => Downstream::Forward,
                Pending::Own { client, params } => {
                    Downstream::Own(self.tokens.middleware_with(&client, params)?)
                }
            };
            if by_origin.insert(key.clone(), routes.len()).is_some() {
                return Err(ConfigError::new("origin", format!("{key} is routed twice")).into());
            }
            routes.push(route);
        }
        Ok(Delegation {
            inner: Arc::new(Inner {
                tokens: self.tokens,
                http: self.http.unwrap_or_default(),
                by_origin,
                routes,
            }),
        })
    }
}

impl Delegation {
    /// A builder over `tokens` (the clients that exchange, and the service's own).
    pub fn builder(tokens: ClientCredentialsTokenManager) -> DelegationBuilder {
        DelegationBuilder {
            tokens,
            http: None,
            routes: Vec::new(),
        }
    }

    /// The middleware for one incoming request's downstream calls.
    pub fn middleware(&self, incoming: IncomingToken) -> DelegatingMiddleware {
        DelegatingMiddleware {
            delegation: self.clone(),
            exchanges: (0..self.inner.routes.len())
                .map(|_| OnceLock::new())
                .collect(),
            incoming,
        }
    }

    /// A client for one incoming request's downstream calls, over the builder's HTTP client.
    pub fn request_client(
        &self,
        incoming: IncomingToken,
    ) -> reqwest_middleware::ClientWithMiddleware {
        self.client(&self.inner.http, incoming)
    }

    /// A client for one incoming request's downstream calls: `http` with
    /// [`Delegation::middleware`].
    pub fn client(
        &self,
        http: &reqwest::Client,
        incoming: IncomingToken,
    ) -> reqwest_middleware::ClientWithMiddleware {
        reqwest_middleware::ClientBuilder::new(http.clone())
            .with(self.middleware(incoming))
            .build()
    }
}

/// Attaches, per downstream origin, the exchanged, forwarded or own token; refuses other
/// origins. Made by [`Delegation::middleware`] for one incoming request.
pub struct DelegatingMiddleware {
    delegation: Delegation,
    /// The exchange middleware of each route, made on the first call there.
    exchanges: Box<[OnceLock<TokenMiddleware>]>,
    incoming: IncomingToken,
}

impl fmt::Debug for DelegatingMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelegatingMiddleware")
            .field("incoming", &self.incoming)
            .finish_non_exhaustive()
    }
}

impl DelegatingMiddleware {
    fn exchange_middleware(
        &self,
        index: usize,
        client: &str,
        shape: &Shape,
        params: &TokenRequestParams,
    ) -> Result<&TokenMiddleware, Error> {
        if let Some(middleware) = self.exchanges[index].get() {
            return Ok(middleware);
        }
        let mut exchange = shape(TokenExchange::new(
            self.incoming.secret(),
            token_types::ACCESS_TOKEN,
        ));
        if let Some(expires_at) = self.incoming.expires_at {
            exchange = exchange.subject_expires_at(expires_at);
        }
        let source = ClientTokenSource::new(
            &self.delegation.inner.tokens,
            client,
            params.clone().exchange(exchange),
        )?;
        Ok(self.exchanges[index].get_or_init(|| TokenMiddleware::new(source)))
    }
}

#[async_trait::async_trait]
impl Middleware for DelegatingMiddleware {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let origin = req.url().origin().ascii_serialization();
        let inner = &self.delegation.inner;
        let Some(&index) = inner.by_origin.get(&origin) else {
            return Err(reqwest_middleware::Error::middleware(
                Error::DestinationNotAllowed { origin },
            ));
        };
        match &inner.routes[index] {
            Downstream::Forward => {
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {}", self.incoming.secret())).map_err(
                        |_| {
                            reqwest_middleware::Error::middleware(Error::SubjectToken(
                                "it cannot go in a header".into(),
                            ))
                        },
                    )?;
                value.set_sensitive(true);
                req.headers_mut().insert(AUTHORIZATION, value);
                next.run(req, extensions).await
            }
            Downstream::Own(middleware) => middleware.handle(req, extensions, next).await,
            Downstream::Exchange {
                client,
                shape,
                params,
            } => {
                let middleware = self
                    .exchange_middleware(index, client, shape, params)
                    .map_err(reqwest_middleware::Error::middleware)?;
                middleware.handle(req, extensions, next).await
            }
        }
    }
}
