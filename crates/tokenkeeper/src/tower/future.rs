//! The response future of [`super::Token`]: the inner service's own future when a cached
//! Bearer token could go on the request at once (nothing of the layer's to keep but what a 401
//! would need), and a boxed future for everything else (a token to fetch, DPoP proofs, a copy
//! kept for the retry, and the 401 itself).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode};
use tower_service::Service;

use super::body::ReplayBody;
use super::BoxError;
use crate::cache::CachedToken;
use crate::source::{Integration, Presented, TokenSource};

pin_project_lite::pin_project! {
    /// The future returned by [`super::Token`] for a request with body `B` to the inner
    /// service `S`, tokens from `Src`.
    pub struct ResponseFuture<S, Src, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, Src, B>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProjection]
    enum State<S, Src, B>
    where
        S: Service<Request<B>>,
    {
        /// The request went to the inner service with a cached Bearer token.
        Sent {
            #[pin]
            call: S::Future,
            // What a 401 answer needs (taken when the answer comes).
            rejected: Option<Rejected<S, Src>>,
        },
        /// Everything else.
        Boxed {
            future: BoxFuture<'static, Result<S::Response, BoxError>>,
        },
    }
}

/// What the layer needs again if the inner service answers 401.
pub(crate) struct Rejected<S, Src> {
    pub(crate) integration: Integration<Src>,
    pub(crate) inner: S,
    pub(crate) token: Arc<CachedToken>,
}

impl<S, Src, B> ResponseFuture<S, Src, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn sent(call: S::Future, rejected: Rejected<S, Src>) -> Self {
        Self {
            state: State::Sent {
                call,
                rejected: Some(rejected),
            },
        }
    }

    pub(crate) fn boxed(future: BoxFuture<'static, Result<S::Response, BoxError>>) -> Self {
        Self {
            state: State::Boxed { future },
        }
    }
}

impl<S, Src, B> fmt::Debug for ResponseFuture<S, Src, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, Src, B, RB> Future for ResponseFuture<S, Src, B>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    Src: TokenSource,
    B: ReplayBody + Send + 'static,
    RB: Send + 'static,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let answer = match this.state.as_mut().project() {
                StateProjection::Boxed { future } => return future.as_mut().poll(cx),
                StateProjection::Sent { call, rejected } => {
                    let response = ready!(call.poll(cx)).map_err(Into::into)?;
                    let Some(rejected) = rejected.take() else {
                        return Poll::Ready(Err("the token layer's future was polled after it \
                                                completed"
                            .into()));
                    };
                    if response.status() != StatusCode::UNAUTHORIZED {
                        rejected.token.accepted();
                        return Poll::Ready(Ok(response));
                    }
                    // A 401: the layer's general path takes it from here (renewal, the retry
                    // with the request the inner service handed back).
                    super::layer::answered(
                        rejected.integration,
                        rejected.inner,
                        rejected.token,
                        None,
                        Presented::Bearer,
                        None,
                        true,
                        response,
                    )
                }
            };
            this.state.set(State::Boxed {
                future: Box::pin(answer),
            });
        }
    }
}
