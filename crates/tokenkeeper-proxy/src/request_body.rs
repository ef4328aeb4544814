//! The request body on its way upstream: replayed when small (so a DPoP nonce challenge or a
//! 401 can be answered by sending it again), streamed otherwise.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use tokenkeeper::tower::ReplayBody;

use crate::BoxError;

/// A request body on its way upstream.
#[derive(Debug, Default)]
pub enum RequestBody {
    /// No body.
    #[default]
    Empty,
    /// A small body, read whole: replayable.
    Full(Option<Bytes>),
    /// A large or chunked body, streamed: sent once.
    Stream(UnsyncBoxBody<Bytes, BoxError>),
}

impl ReplayBody for RequestBody {
    fn try_replay(&self) -> Option<Self> {
        match self {
            Self::Empty => Some(Self::Empty),
            Self::Full(bytes) => Some(Self::Full(bytes.clone())),
            Self::Stream(_) => None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Full(bytes) => whole_frame(bytes),
            Self::Stream(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Full(bytes) => bytes.is_none(),
            Self::Stream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Full(bytes) => whole_size(bytes),
            Self::Stream(body) => body.size_hint(),
        }
    }
}

/// The next frame of a body read whole: its bytes, once. (The `Full` variant of each body type
/// here.)
pub(crate) fn whole_frame<E>(bytes: &mut Option<Bytes>) -> Poll<Option<Result<Frame<Bytes>, E>>> {
    Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b))))
}

/// The size of a body read whole (0 once sent).
pub(crate) fn whole_size(bytes: &Option<Bytes>) -> SizeHint {
    SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
}
