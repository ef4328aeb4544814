//! Request bodies that can be sent twice.

use bytes::Bytes;

/// A request body that may be copied so the request can be retried.
pub trait ReplayBody: Sized {
    /// A copy of the body, or `None` when it cannot be replayed (a stream).
    fn try_replay(&self) -> Option<Self>;
}

macro_rules! replay_by_clone {
    ($($ty:ty),*) => {$(
        impl ReplayBody for $ty {
            #[inline]
            fn try_replay(&self) -> Option<Self> {
                Some(self.clone())
            }
        }
    )*};
}

replay_by_clone!((), String, Vec<u8>, Bytes, &'static str, &'static [u8]);

impl<D: Clone> ReplayBody for http_body_util::Full<D> {
    fn try_replay(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D> ReplayBody for http_body_util::Empty<D> {
    fn try_replay(&self) -> Option<Self> {
        Some(http_body_util::Empty::new())
    }
}

/// gRPC request bodies are streams: never replayed. (gRPC reports a refused token in its
/// status, not with an HTTP 401, so there is nothing to retry at this layer.)
#[cfg(feature = "tonic")]
impl ReplayBody for tonic::body::Body {
    fn try_replay(&self) -> Option<Self> {
        None
    }
}

/// A body that is never replayed: requests carrying it are not retried on a 401.
#[derive(Debug)]
pub struct NonReplayable<B>(pub B);

impl<B> ReplayBody for NonReplayable<B> {
    fn try_replay(&self) -> Option<Self> {
        None
    }
}

impl<B: http_body::Body> http_body::Body for NonReplayable<B>
where
    B: Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

/// A request an inner service hands back, in its 401 response's extensions, so that the
/// [`super::Token`] layer can send it again without having copied it up front (see
/// [`super::TokenLayer::requests_returned_on_401`]). Its URI must be the one the layer saw
/// (absolute, if it was), and its body a replay of the one sent.
pub struct ReturnedRequest<B>(std::sync::Arc<std::sync::Mutex<Option<http::Request<B>>>>);

impl<B> ReturnedRequest<B> {
    /// Wraps `request` for a response's extensions.
    pub fn new(request: http::Request<B>) -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(Some(request))))
    }

    /// The request (once).
    pub fn take(&self) -> Option<http::Request<B>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

impl<B> Clone for ReturnedRequest<B> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<B> std::fmt::Debug for ReturnedRequest<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReturnedRequest").finish_non_exhaustive()
    }
}
