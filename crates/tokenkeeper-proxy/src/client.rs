//! The upstream side of HTTP/1.1, inline: a request is written and its response read by the
//! task that forwards it — no connection task, no channel between them, no wake-up in between
//! (hyper's client connection spends about a quarter of a proxied request's instructions on
//! those; BENCHMARKS.md). The response body streams from the same connection, which goes back
//! to its pool when the body has ended.
//!
//! Framing follows RFC 9112: no body for `HEAD`, 1xx, 204 and 304; `Transfer-Encoding:
//! chunked`; `Content-Length` (several must agree); otherwise until the connection closes (then
//! the connection is not reused). A response head over 64 KiB or 100 headers, a bad chunk
//! size, or a body cut short is an error, never a panic.

use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use bytes::{Buf as _, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};

use tokenkeeper::tower::ReturnedRequest;

use crate::request_body::RequestBody;
use crate::BoxError;

/// The largest response head read.
const MAX_HEAD: usize = 64 * 1024;
/// The most response headers.
const MAX_HEADERS: usize = 100;
/// The longest chunk-size line (with extensions) or trailer line.
const MAX_LINE: usize = 4096;

/// A connection to an upstream: plain TCP or TLS.
pub(crate) enum Stream {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An upstream's HTTP/1.1 answer the proxy cannot use.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProtocolError {
    #[error("the upstream closed the connection before a complete response")]
    Closed,
    #[error("the upstream's response head is malformed: {0}")]
    Head(httparse::Error),
    #[error("the upstream's response head is over {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("the upstream answered 101 Switching Protocols to a request that did not ask")]
    UnexpectedUpgrade,
    #[error("the upstream's Content-Length is invalid")]
    ContentLength,
    #[error("the upstream's chunked body is malformed")]
    Chunk,
    #[error("the upstream's body ended early")]
    BodyCut,
    #[error("the request body did not match its Content-Length")]
    RequestLength,
}

/// One HTTP/1.1 connection to an upstream, idle between requests.
pub(crate) struct Connection {
    io: Stream,
    /// Bytes read and not yet used.
    buf: BytesMut,
    /// The request head being written (kept between requests: no allocation per request).
    out: Vec<u8>,
    /// When the upstream said it closes idle connections (`Keep-Alive: timeout=`).
    pub(crate) expires: Option<Instant>,
}

/// Why a request got no response.
pub(crate) enum SendError {
    /// A reused connection failed before a byte of the response: the upstream had closed it.
    /// Here is the request again (it was idempotent and its body replayable): send it on a
    /// new connection.
    Stale(Box<Request<RequestBody>>),
    /// Anything else.
    Failed(BoxError),
}

impl<E: Into<BoxError>> From<E> for SendError {
    fn from(error: E) -> Self {
        Self::Failed(error.into())
    }
}

/// How a response's body is delimited.
enum Framing {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

#[derive(Clone, Copy)]
enum Chunk {
    /// Reading a chunk-size line.
    Size,
    /// In a chunk's data: this many bytes left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines, until an empty one.
    Trailers,
}

impl Connection {
    pub(crate) fn new(io: Stream) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(8 * 1024),
            out: Vec::new(),
            expires: None,
        }
    }

    /// Sends `request` (with an origin-form URI and its `Host`) and reads the response head;
    /// the body streams from the returned [`ResponseBody`]. `reused`: the connection carried
    /// requests before (a failure before any response byte is then [`SendError::Stale`]).
    pub(crate) async fn send(
        mut self,
        request: Request<RequestBody>,
        reused: bool,
    ) -> Result<(Response<()>, ResponseBody), SendError> {
        let (parts, body) = request.into_parts();
        let head_only = parts.method == Method::HEAD;
        // Kept to be sent again: on a stale connection (safe methods and those RFC 9110 calls
        // idempotent), or after a 401 (by the token layer); the head is rebuilt from `parts`,
        // which outlive the write, so the headers are never copied for a retry that rarely
        // comes. Only a body that can be replayed (none, or a small one: a reference count).
        let replay = body.try_replay_body();
        let stale_retry = reused && is_idempotent(&parts.method);
        // A body read whole goes out with the head, most often in one `try_write` that needs no
        // wait; a streamed body takes the general path (boxed: its state would otherwise be
        // part of, and copied with, every request's future).
        let written = match body {
            RequestBody::Stream(stream) => Box::pin(self.write_streamed(&parts, stream)).await,
            whole => self.write_whole(&parts, whole).await,
        };
        if let Err(error) = written {
            return Err(stale(error, parts, replay.filter(|_| stale_retry)));
        }
        let head = match self.read_head().await {
            Ok(head) => head,
            Err(HeadError::Nothing(error)) => {
                return Err(stale(error, parts, replay.filter(|_| stale_retry)))
            }
            Err(error) => return Err(SendError::Failed(error.into_boxed())),
        };
        let Head {
            status,
            version,
            headers,
            close,
            chunked,
            length,
            keep_alive_timeout,
        } = head;
        let mut keep_alive = version == Version::HTTP_11 && !close;
        let framing = if head_only
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::Length(0)
        } else if let Some(chunked) = chunked {
            if chunked && length.is_none() {
                Framing::Chunked(Chunk::Size)
            } else {
                // RFC 9112 §6.3: a length and a coding together, or a final coding other
                // than chunked: read to the close, and never reuse the connection.
                keep_alive = false;
                Framing::UntilClose
            }
        } else if let Some(length) = length {
            Framing::Length(length)
        } else {
            keep_alive = false;
            Framing::UntilClose
        };
        if keep_alive {
            self.expires = keep_alive_timeout.map(|t| crate::timeouts::now() + t);
        }
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        match replay {
            Some(body) if status == StatusCode::UNAUTHORIZED => {
                // For the token layer's one retry (a renewed token, a DPoP nonce).
                response
                    .extensions_mut()
                    .insert(ReturnedRequest::new(Request::from_parts(parts, body)));
            }
            _ => crate::maps::give(parts.headers),
        }
        let length = match framing {
            Framing::Length(n) => Some(n),
            _ => None,
        };
        Ok((
            response,
            ResponseBody {
                connection: Some(self),
                framing,
                keep_alive,
                length,
            },
        ))
    }

    /// Writes the request head and a body read whole (`Empty` or `Full`): encoded into the
    /// connection's buffer and written at once when the socket takes it (no wait, no future
    /// state), else the rest with a wait.
    async fn write_whole(
        &mut self,
        parts: &http::request::Parts,
        body: RequestBody,
    ) -> Result<(), BoxError> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        encode_head(&mut out, parts);
        match body {
            RequestBody::Full(bytes) => {
                let bytes = bytes.unwrap_or_default();
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(bytes.len().to_string().as_bytes());
                out.extend_from_slice(b"\r\n\r\n");
                out.extend_from_slice(&bytes);
            }
            _ => {
                if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
                    out.extend_from_slice(b"content-length: 0\r\n");
                }
                out.extend_from_slice(b"\r\n");
            }
        }
        let mut done = 0;
        if let Stream::Plain(tcp) = &self.io {
            while done < out.len() {
                match tcp.try_write(&out[done..]) {
                    Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into()),
                    Ok(n) => done += n,
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(error) => return Err(error.into()),
                }
            }
        }
        if done < out.len() || matches!(self.io, Stream::Tls(_)) {
            // Boxed: the wait is rare, and its state would bloat every request's future.
            let io = &mut self.io;
            let rest = &out[done..];
            Box::pin(async move {
                io.write_all(rest).await?;
                io.flush().await
            })
            .await?;
        }
        if out.capacity() <= 64 * 1024 {
            self.out = out;
        }
        Ok(())
    }

    /// Writes the request head and a streamed body: with its declared length, else chunked.
    async fn write_streamed(
        &mut self,
        parts: &http::request::Parts,
        mut stream: http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>,
    ) -> Result<(), BoxError> {
        let mut head = std::mem::take(&mut self.out);
        head.clear();
        encode_head(&mut head, parts);
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(length) => {
                head.extend_from_slice(b"content-length: ");
                head.extend_from_slice(length.to_string().as_bytes());
                head.extend_from_slice(b"\r\n\r\n");
            }
            None => head.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n"),
        }
        self.io.write_all(&head).await?;
        let mut sent = 0u64;
        while let Some(frame) =
            std::future::poll_fn(|cx| Pin::new(&mut stream).poll_frame(cx)).await
        {
            let Ok(data) = frame?.into_data() else {
                continue; // trailers are not forwarded
            };
            if data.is_empty() {
                continue;
            }
            sent += data.len() as u64;
            match declared {
                Some(length) if sent > length => return Err(ProtocolError::RequestLength.into()),
                Some(_) => self.io.write_all(&data).await?,
                None => {
                    let size = format!("{:x}\r\n", data.len());
                    crate::write::write_two(&mut self.io, size.as_bytes(), &data).await?;
                    self.io.write_all(b"\r\n").await?;
                }
            }
        }
        match declared {
            Some(length) if sent != length => return Err(ProtocolError::RequestLength.into()),
            Some(_) => {}
            None => self.io.write_all(b"0\r\n\r\n").await?,
        }
        self.io.flush().await?;
        if head.capacity() <= 64 * 1024 {
            self.out = head;
        }
        Ok(())
    }

    /// Reads a final response head (skipping 1xx interim ones).
    async fn read_head(&mut self) -> Result<Head, HeadError> {
        loop {
            if !self.buf.is_empty() {
                match self.parse_head().map_err(HeadError::Other)? {
                    Some(Parsed::Interim) => continue,
                    Some(Parsed::Final(head)) => return Ok(head),
                    None if self.buf.len() > MAX_HEAD => {
                        return Err(HeadError::Other(ProtocolError::HeadTooLarge.into()))
                    }
                    None => {}
                }
            }
            self.buf.reserve(8 * 1024);
            let read = tokio::io::AsyncReadExt::read_buf(&mut self.io, &mut self.buf).await;
            match read {
                Ok(0) if self.buf.is_empty() => {
                    return Err(HeadError::Nothing(ProtocolError::Closed.into()))
                }
                Ok(0) => return Err(HeadError::Other(ProtocolError::Closed.into())),
                Ok(_) => {}
                Err(error) if self.buf.is_empty() => return Err(HeadError::Nothing(error.into())),
                Err(error) => return Err(HeadError::Other(error.into())),
            }
        }
    }

    /// A response head from the buffer, if a complete one is there. What says how the
    /// message is framed and whether the connection stays open is read from the raw lines in
    /// one pass; the headers that belong to this connection (hop-by-hop, and those its
    /// `Connection` names) are left out of the map: they never reach the caller (SEC-23).
    fn parse_head(&mut self) -> Result<Option<Parsed>, BoxError> {
        // Uninitialised slots: initialising 100 of them cost more than parsing a short head.
        let mut slots =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            &self.buf,
            &mut slots,
        );
        let length = match parsed {
            Ok(httparse::Status::Complete(length)) if length <= MAX_HEAD => length,
            Ok(httparse::Status::Complete(_)) => return Err(ProtocolError::HeadTooLarge.into()),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(error) => return Err(ProtocolError::Head(error).into()),
        };
        let status = StatusCode::from_u16(response.code.unwrap_or(0))
            .map_err(|_| ProtocolError::Head(httparse::Error::Status))?;
        let version = if response.version == Some(1) {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(ProtocolError::UnexpectedUpgrade.into());
            }
            self.buf.advance(length);
            return Ok(Some(Parsed::Interim));
        }
        let mut close = false;
        let mut chunked = None;
        let mut content_length: Option<u64> = None;
        let mut keep_alive_timeout = None;
        // Names the `Connection` header lists besides `close` and `keep-alive` (rare).
        let mut listed: Vec<Vec<u8>> = Vec::new();
        // Where each kept name and value lies in the buffer, so that the values can share it.
        let base = self.buf.as_ptr() as usize;
        let mut spans = crate::maps::spans();
        for h in response.headers.iter() {
            let name = h.name.as_bytes();
            let value = h.value;
            match Special::of(name) {
                None => {}
                Some(Special::ContentLength) => {
                    let n = length_value(value)?;
                    if content_length.is_some_and(|l| l != n) {
                        return Err(ProtocolError::ContentLength.into());
                    }
                    content_length = Some(n);
                }
                Some(Special::Connection) => {
                    for token in value.split(|b| *b == b',') {
                        let token = token.trim_ascii();
                        if token.eq_ignore_ascii_case(b"close") {
                            close = true;
                        } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
                            listed.push(token.to_ascii_lowercase());
                        }
                    }
                    continue;
                }
                Some(Special::TransferEncoding) => {
                    // The last coding of the last field decides (RFC 9112 §6.3).
                    let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
                    chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                    continue;
                }
                Some(Special::KeepAlive) => {
                    keep_alive_timeout = keep_alive_value(value);
                    continue;
                }
                Some(Special::HopByHop) => continue,
            }
            spans.push((
                (name.as_ptr() as usize - base) as u32,
                name.len() as u32,
                (value.as_ptr() as usize - base) as u32,
                value.len() as u32,
            ));
        }
        let head = self.buf.split_to(length).freeze();
        let mut headers = crate::maps::take(spans.len());
        for &(name, name_len, value, value_len) in &spans {
            let (name, value) = (name as usize, value as usize);
            let name_bytes = &head[name..name + name_len as usize];
            if !listed.is_empty() && listed.iter().any(|l| l.eq_ignore_ascii_case(name_bytes)) {
                continue;
            }
            let name = crate::names::name(name_bytes)
                .map_err(|_| ProtocolError::Head(httparse::Error::HeaderName))?;
            let value =
                HeaderValue::from_maybe_shared(head.slice(value..value + value_len as usize))
                    .map_err(|_| ProtocolError::Head(httparse::Error::HeaderValue))?;
            headers.append(name, value);
        }
        crate::maps::give_spans(spans);
        Ok(Some(Parsed::Final(Head {
            status,
            version,
            headers,
            close,
            chunked,
            length: content_length,
            keep_alive_timeout,
        })))
    }
}

/// A final response head, and what it says about framing and the connection.
struct Head {
    status: StatusCode,
    version: Version,
    /// Without the hop-by-hop headers.
    headers: HeaderMap,
    /// `Connection: close`.
    close: bool,
    /// `Transfer-Encoding` was sent: whether its last coding is `chunked`.
    chunked: Option<bool>,
    /// `Content-Length` (several must agree).
    length: Option<u64>,
    /// `Keep-Alive: timeout=N`, a second early.
    keep_alive_timeout: Option<Duration>,
}

enum Parsed {
    Interim,
    Final(Head),
}

/// A failure reading the head: before any byte of it (`Nothing`), or after.
enum HeadError {
    Nothing(BoxError),
    Other(BoxError),
}

impl HeadError {
    fn into_boxed(self) -> BoxError {
        match self {
            Self::Nothing(e) | Self::Other(e) => e,
        }
    }
}

/// The request line and the headers (without `Content-Length` and `Transfer-Encoding`: the
/// body's framing is the writer's to say).
fn encode_head(out: &mut Vec<u8>, parts: &http::request::Parts) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str)
            .as_bytes(),
    );
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// A failure before any byte of the response: the request again, if it can be sent again.
fn stale(error: BoxError, parts: http::request::Parts, replay: Option<RequestBody>) -> SendError {
    match replay {
        Some(body) => SendError::Stale(Box::new(Request::from_parts(parts, body))),
        None => SendError::Failed(error),
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

/// The response headers that say how the message is framed or belong to the connection
/// (RFC 9110 §7.6.1: hop-by-hop, never passed to the caller).
enum Special {
    ContentLength,
    Connection,
    TransferEncoding,
    KeepAlive,
    HopByHop,
}

impl Special {
    /// Which one `name` is (any case). Sorted by length first: most names are none of these,
    /// and one comparison of lengths says so.
    fn of(name: &[u8]) -> Option<Self> {
        let is = |other: &[u8]| name.eq_ignore_ascii_case(other);
        match name.len() {
            2 if is(b"te") => Some(Self::HopByHop),
            7 if is(b"trailer") || is(b"upgrade") => Some(Self::HopByHop),
            10 if is(b"connection") => Some(Self::Connection),
            10 if is(b"keep-alive") => Some(Self::KeepAlive),
            14 if is(b"content-length") => Some(Self::ContentLength),
            16 if is(b"proxy-connection") => Some(Self::HopByHop),
            17 if is(b"transfer-encoding") => Some(Self::TransferEncoding),
            18 if is(b"proxy-authenticate") => Some(Self::HopByHop),
            19 if is(b"proxy-authorization") => Some(Self::HopByHop),
            _ => None,
        }
    }
}

/// A `Content-Length` value: digits, or a list of equal ones.
fn length_value(value: &[u8]) -> Result<u64, ProtocolError> {
    let mut length = None;
    for part in value.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(ProtocolError::ContentLength);
        }
        let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if length.is_some_and(|l| l != n) {
            return Err(ProtocolError::ContentLength);
        }
        length = Some(n);
    }
    length.ok_or(ProtocolError::ContentLength)
}

/// `Keep-Alive: timeout=N`, a second early.
fn keep_alive_value(value: &[u8]) -> Option<Duration> {
    let value = std::str::from_utf8(value).ok()?;
    let secs = value.split(',').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("timeout")
            .then(|| v.trim().parse::<u64>().ok())
            .flatten()
    })?;
    Some(Duration::from_secs(secs.saturating_sub(1)))
}

/// A response body read from its connection, which it gives back through `done` when the
/// body has ended on a connection that can carry another request.
pub(crate) struct ResponseBody {
    connection: Option<Connection>,
    framing: Framing,
    keep_alive: bool,
    length: Option<u64>,
}

impl ResponseBody {
    /// Whether the body has ended.
    pub(crate) fn is_end(&self) -> bool {
        matches!(self.framing, Framing::Length(0))
    }

    /// The connection, once the body has ended and it can be reused.
    pub(crate) fn take_reusable(&mut self) -> Option<Connection> {
        if self.is_end() && self.keep_alive {
            self.connection.take().filter(|c| c.buf.is_empty())
        } else {
            None
        }
    }

    /// Reads more into the connection's buffer: `Ready(Ok(0))` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, BoxError>> {
        let Some(connection) = self.connection.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        connection.buf.reserve(16 * 1024);
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut connection.io),
            cx,
            &mut connection.buf
        ))?;
        Poll::Ready(Ok(n))
    }

    fn buffered(&mut self) -> usize {
        self.connection.as_ref().map_or(0, |c| c.buf.len())
    }

    fn take(&mut self, n: usize) -> Bytes {
        match self.connection.as_mut() {
            Some(c) => c.buf.split_to(n).freeze(),
            None => Bytes::new(),
        }
    }

    /// The next line (without CRLF) from the buffer, if a whole one is there.
    fn line(&mut self) -> Result<Option<Bytes>, BoxError> {
        let Some(connection) = self.connection.as_mut() else {
            return Err(ProtocolError::Chunk.into());
        };
        match connection.buf.windows(2).position(|w| w == b"\r\n") {
            Some(end) => {
                let line = connection.buf.split_to(end).freeze();
                connection.buf.advance(2);
                Ok(Some(line))
            }
            None if connection.buf.len() > MAX_LINE => Err(ProtocolError::Chunk.into()),
            None => Ok(None),
        }
    }

    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match self.framing {
                Framing::Length(0) => return Poll::Ready(None),
                Framing::Length(left) => {
                    let have = self.buffered();
                    if have > 0 {
                        let n = (have as u64).min(left) as usize;
                        self.framing = Framing::Length(left - n as u64);
                        return Poll::Ready(Some(Ok(Frame::data(self.take(n)))));
                    }
                    if ready!(self.poll_fill(cx))? == 0 {
                        self.connection = None;
                        return Poll::Ready(Some(Err(ProtocolError::BodyCut.into())));
                    }
                }
                Framing::UntilClose => {
                    let have = self.buffered();
                    if have > 0 {
                        return Poll::Ready(Some(Ok(Frame::data(self.take(have)))));
                    }
                    if ready!(self.poll_fill(cx))? == 0 {
                        self.connection = None;
                        self.framing = Framing::Length(0);
                        return Poll::Ready(None);
                    }
                }
                Framing::Chunked(state) => {
                    match state {
                        Chunk::Size => {
                            if let Some(line) = self.line()? {
                                let size = line.split(|b| *b == b';').next().unwrap_or_default();
                                let size = std::str::from_utf8(size)
                                    .ok()
                                    .map(str::trim)
                                    .filter(|s| !s.is_empty() && s.len() <= 16)
                                    .and_then(|s| u64::from_str_radix(s, 16).ok())
                                    .ok_or(ProtocolError::Chunk)?;
                                self.framing = Framing::Chunked(if size == 0 {
                                    Chunk::Trailers
                                } else {
                                    Chunk::Data(size)
                                });
                                continue;
                            }
                        }
                        Chunk::Data(left) => {
                            let have = self.buffered();
                            if have > 0 {
                                let n = (have as u64).min(left) as usize;
                                self.framing = Framing::Chunked(if left == n as u64 {
                                    Chunk::DataEnd
                                } else {
                                    Chunk::Data(left - n as u64)
                                });
                                return Poll::Ready(Some(Ok(Frame::data(self.take(n)))));
                            }
                        }
                        Chunk::DataEnd => match self.line()? {
                            Some(line) if line.is_empty() => {
                                self.framing = Framing::Chunked(Chunk::Size);
                                continue;
                            }
                            Some(_) => {
                                self.connection = None;
                                return Poll::Ready(Some(Err(ProtocolError::Chunk.into())));
                            }
                            None => {}
                        },
                        Chunk::Trailers => match self.line()? {
                            Some(line) if line.is_empty() => {
                                self.framing = Framing::Length(0);
                                continue;
                            }
                            // Trailers are not forwarded.
                            Some(_) => continue,
                            None => {}
                        },
                    }
                    if ready!(self.poll_fill(cx))? == 0 {
                        self.connection = None;
                        return Poll::Ready(Some(Err(ProtocolError::BodyCut.into())));
                    }
                }
            }
        }
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        match (self.length, &self.framing) {
            (Some(_), Framing::Length(left)) => SizeHint::with_exact(*left),
            _ => SizeHint::default(),
        }
    }
}

/// A request body that can be copied for a retry.
trait TryReplay: Sized {
    fn try_replay_body(&self) -> Option<Self>;
}

impl TryReplay for RequestBody {
    fn try_replay_body(&self) -> Option<Self> {
        tokenkeeper::tower::ReplayBody::try_replay(self)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn content_lengths_must_agree() {
        assert_eq!(length_value(b"5").unwrap(), 5);
        assert_eq!(length_value(b"5, 5").unwrap(), 5);
        assert!(length_value(b"5, 6").is_err());
        for bad in ["-1", "+5", "", "5x", "99999999999999999999999", " , "] {
            assert!(length_value(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn keep_alive_timeouts_are_read() {
        assert_eq!(
            keep_alive_value(b"timeout=5, max=100"),
            Some(Duration::from_secs(4))
        );
        assert_eq!(keep_alive_value(b"max=100"), None);
    }
}
