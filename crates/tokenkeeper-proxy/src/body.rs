//! The bodies the server hands over and the engine returns: a request body as it came from
//! the client (read whole, or hyper's stream); a response body that is the upstream's stream,
//! the engine's own short answer, or a boxed body of the host (a WebSocket handshake answer, a
//! management page). The body the engine sends upstream is `request_body`'s.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::request_body::{whole_frame, whole_size};
use crate::BoxError;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;

/// A response body on its way to the caller.
#[derive(Debug)]
pub enum ProxyBody {
    /// The upstream's body, streamed as it comes.
    Upstream(crate::upstream::UpstreamBody),
    /// A short body of the engine or the host.
    Full(Option<Bytes>),
    /// Any other body (WebSocket handshakes, pages of the host).
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl ProxyBody {
    /// A short body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }

    /// Any body, boxed.
    pub fn boxed<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt as _;
        Self::Boxed(body.map_err(Into::into).boxed_unsync())
    }
}

impl Default for ProxyBody {
    fn default() -> Self {
        Self::Full(None)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Upstream(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::Full(bytes) => whole_frame(bytes),
            Self::Boxed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Upstream(body) => body.is_end_stream(),
            Self::Full(bytes) => bytes.is_none(),
            Self::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Upstream(body) => body.size_hint(),
            Self::Full(bytes) => whole_size(bytes),
            Self::Boxed(body) => body.size_hint(),
        }
    }
}

/// A request body as the server hands it to a [`crate::server::Handler`]: none, read whole
/// (the server's own HTTP/1.1 path, bodies up to 64 KiB), or hyper's stream (the connections
/// the server hands to hyper: chunked or large uploads, upgrades, HTTP/1.0).
#[derive(Debug, Default)]
pub enum IncomingBody {
    /// No body.
    #[default]
    Empty,
    /// The whole body.
    Full(Option<Bytes>),
    /// A body streamed by hyper.
    Hyper(hyper::body::Incoming),
}

impl Body for IncomingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Full(bytes) => whole_frame(bytes),
            Self::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Full(bytes) => bytes.is_none(),
            Self::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Full(bytes) => whole_size(bytes),
            Self::Hyper(body) => body.size_hint(),
        }
    }
}
