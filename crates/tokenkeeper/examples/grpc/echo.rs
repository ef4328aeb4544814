//! A gRPC service written without code generation, for the example and the DL-09 test: a
//! unary `Say` method whose messages are UTF-8 strings (a small codec instead of protobuf). It
//! records the `authorization` and `dpop` headers of each call and refuses calls without a
//! token (`UNAUTHENTICATED`).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf as _, BufMut as _};
use futures_util::future::BoxFuture;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// The method's path.
pub(crate) const SAY: &str = "/tokenkeeper.example.Echo/Say";

/// Strings as the message format.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Utf8Codec;

impl Codec for Utf8Codec {
    type Encode = String;
    type Decode = String;
    type Encoder = Utf8Codec;
    type Decoder = Utf8Codec;

    fn encoder(&mut self) -> Self::Encoder {
        Utf8Codec
    }

    fn decoder(&mut self) -> Self::Decoder {
        Utf8Codec
    }
}

impl Encoder for Utf8Codec {
    type Item = String;
    type Error = Status;

    fn encode(&mut self, item: String, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(item.as_bytes());
        Ok(())
    }
}

impl Decoder for Utf8Codec {
    type Item = String;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<String>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| Status::invalid_argument("not UTF-8"))
    }
}

/// What a call carried.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    /// The `authorization` header.
    pub(crate) authorization: Option<String>,
    /// The `dpop` header.
    pub(crate) dpop: Option<String>,
    /// The request URI as the server saw it.
    pub(crate) uri: String,
}

/// The service.
#[derive(Clone, Debug, Default)]
pub(crate) struct Echo {
    /// Every call's headers.
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
}

impl tonic::server::NamedService for Echo {
    const NAME: &'static str = "tokenkeeper.example.Echo";
}

struct Say;

impl tonic::server::UnaryService<String> for Say {
    type Response = String;
    type Future = BoxFuture<'static, Result<tonic::Response<String>, Status>>;

    fn call(&mut self, request: tonic::Request<String>) -> Self::Future {
        Box::pin(async move {
            if request.metadata().get("authorization").is_none() {
                return Err(Status::unauthenticated("a token is required"));
            }
            Ok(tonic::Response::new(format!(
                "hello, {}",
                request.into_inner()
            )))
        })
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let seen = Seen {
            authorization: header("authorization"),
            dpop: header("dpop"),
            uri: request.uri().to_string(),
        };
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(seen);
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(Utf8Codec);
            Ok(grpc.unary(Say, request).await)
        })
    }
}

/// Serves `echo` on a new loopback port; its `http://` URL.
pub(crate) async fn serve(echo: Echo) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    let incoming = tokio_stream_from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(echo)
            .serve_with_incoming(incoming),
    );
    url
}

/// The listener's connections as the stream tonic's server takes.
fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}

/// Calls `Say` with `name` through `service` (a channel behind the token layer).
pub(crate) async fn say<S>(service: S, name: &str) -> Result<String, Status>
where
    S: tonic::client::GrpcService<tonic::body::Body>,
    S::Error: Into<tonic::codegen::StdError>,
    S::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <S::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut grpc = tonic::client::Grpc::new(service);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.into().to_string()))?;
    let path = http::uri::PathAndQuery::from_static(SAY);
    grpc.unary(tonic::Request::new(name.to_owned()), path, Utf8Codec)
        .await
        .map(tonic::Response::into_inner)
}
