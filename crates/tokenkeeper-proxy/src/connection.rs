//! One client connection on a worker: HTTP/1.1 requests read, handled and answered inline by the
//! connection's own task, with no dispatcher, no body channel and no second task in between
//! (hyper's server dispatch was the largest block of a proxied request's user-space work;
//! BENCHMARKS.md).
//!
//! Only the plain case is served here: an HTTP/1.1 request in origin form, with no body or a
//! `Content-Length` body of at most 64 KiB (read whole, as the engine would), no
//! `Transfer-Encoding`, no `Expect` and no `Upgrade`. At the first request that is anything
//! else — a WebSocket handshake, a chunked or large upload, HTTP/1.0, a malformed or oversized
//! head — the connection is handed to hyper's server, bytes already read included, and hyper
//! serves it from that request on (upgrades, `100-continue`, streaming bodies, its 400 and 431
//! answers). Nothing is consumed before the hand-over, so hyper sees exactly what the client
//! sent.
//!
//! Responses: `Content-Length` when the body's length is known, chunked otherwise; no body
//! after `HEAD`, 1xx, 204 and 304; `Date` added when absent; a body that errors or breaks its
//! declared length closes the connection (the client sees a cut response, never a desync).
//! Body frames that are ready at once are written together with the head, in one system call.

use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use crate::body::{IncomingBody, ProxyBody};
use crate::handler::{Handler, Peer};
use crate::timeouts::Waiter;

/// The largest request head served here (larger ones go to hyper, which answers 431).
const MAX_HEAD: usize = 64 * 1024;
/// The most request headers served here.
const MAX_HEADERS: usize = 100;
/// The largest request body read whole here (larger ones go to hyper, and stream).
const MAX_BODY: usize = 64 * 1024;
/// Response body bytes gathered before a write.
const WRITE_BATCH: usize = 64 * 1024;
/// Data frames at least this large are written from where they are, not copied.
const COPY_LIMIT: usize = 16 * 1024;

/// Serves `io` until the client closes it, it idles past the header-read timeout, a write
/// fails, or the server stops.
pub(crate) async fn serve<H, S>(
    io: S,
    peer: Peer,
    handler: Arc<H>,
    stopped: watch::Receiver<bool>,
    header_read_timeout: Duration,
) where
    H: Handler,
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let waiter = Waiter::new();
    let mut connection = Connection {
        io,
        read: BytesMut::with_capacity(8 * 1024),
        write: Vec::with_capacity(4 * 1024),
    };
    loop {
        let request = match connection.next_request(&waiter, header_read_timeout).await {
            Next::Request(request) => request,
            Next::Closed => return,
            Next::Handoff => {
                drop(waiter);
                let prefix = connection.read.split().freeze();
                let io = Rewind {
                    prefix,
                    io: connection.io,
                };
                return serve_with_hyper(io, peer, handler, stopped, header_read_timeout).await;
            }
        };
        let head_only = request.method() == Method::HEAD;
        let close = connection_close(request.headers());
        let response = handler.handle(request, peer).await;
        // A server that is stopping answers this request, and closes.
        let close = close || crate::timeouts::stopping();
        match connection.respond(response, head_only, close).await {
            Ok(true) => {}
            Ok(false) | Err(_) => return,
        }
    }
}

/// Serves `io` with hyper's HTTP/1.1 server (upgrades included) until it closes, or drains it
/// when the server stops.
pub(crate) async fn serve_with_hyper<H, S>(
    io: S,
    peer: Peer,
    handler: Arc<H>,
    mut stopped: watch::Receiver<bool>,
    header_read_timeout: Duration,
) where
    H: Handler,
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let handler = handler.clone();
        async move {
            let request = request.map(IncomingBody::Hyper);
            Ok::<_, std::convert::Infallible>(handler.handle(request, peer).await)
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .with_upgrades();
    let mut connection = pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = stopped.wait_for(|stop| *stop) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// What the connection holds between requests.
struct Connection<S> {
    io: S,
    /// Bytes read and not yet used.
    read: BytesMut,
    /// The response being written.
    write: Vec<u8>,
}

/// What came next on the connection.
// The request is what nearly always comes: boxing it would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Next {
    Request(Request<IncomingBody>),
    /// A request this module does not serve: the connection goes to hyper.
    Handoff,
    Closed,
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Reads until a complete request (served here) is in the buffer, for at most `timeout`
    /// (from the start of the wait: slow-loris, idle keep-alive), or until the server stops.
    async fn next_request(&mut self, waiter: &Waiter, timeout: Duration) -> Next {
        waiter.start(timeout);
        loop {
            if !self.read.is_empty() {
                match parse(&mut self.read) {
                    Parsed::Request(request) => {
                        waiter.stop();
                        return Next::Request(request);
                    }
                    Parsed::Handoff => return Next::Handoff,
                    Parsed::Partial => {}
                }
            }
            if self.read.capacity() - self.read.len() < 1024 {
                self.read.reserve(8 * 1024);
            }
            let read = std::future::poll_fn(|cx| {
                if let Poll::Ready(read) =
                    tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)
                {
                    return Poll::Ready(read.ok());
                }
                // Out of time, or the server stops (a head half sent is not waited for).
                waiter.poll(cx).map(|_| None)
            })
            .await;
            match read {
                Some(0) | None => return Next::Closed,
                Some(_) => {}
            }
        }
    }

    /// Writes `response`; `Ok(true)` when the connection can carry another request.
    async fn respond(
        &mut self,
        response: Response<ProxyBody>,
        head_only: bool,
        close: bool,
    ) -> std::io::Result<bool> {
        let (mut parts, body) = response.into_parts();
        let status = parts.status;
        // 101 is only ever answered by hyper (upgrades go there): here it ends the connection.
        let close = close || connection_close(&parts.headers) || status.is_informational();
        let no_body = head_only
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let length = body.size_hint().exact();
        let framing = if no_body {
            // After `HEAD`, the length a `GET` would have had, unless the handler said it.
            match length {
                Some(length)
                    if head_only
                        && status != StatusCode::NO_CONTENT
                        && !status.is_informational()
                        && !parts.headers.contains_key(header::CONTENT_LENGTH) =>
                {
                    Framing::Head(length)
                }
                _ => Framing::None,
            }
        } else if let Some(length) = length {
            Framing::Length(length)
        } else {
            Framing::Chunked
        };
        self.write.clear();
        write_head(
            &mut self.write,
            status,
            &parts.headers,
            &framing,
            no_body,
            close,
        );
        crate::maps::give(std::mem::take(&mut parts.headers));
        if no_body {
            drop(body);
            self.flush(&[]).await?;
            return Ok(!close);
        }
        let mut body = pin!(body);
        let mut sent = 0u64;
        loop {
            let write = &self.write;
            let polled = std::future::poll_fn(|cx| match body.as_mut().poll_frame(cx) {
                Poll::Ready(frame) => Poll::Ready(Some(frame)),
                // Nothing more yet: what is gathered goes out before the wait.
                Poll::Pending if !write.is_empty() => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            })
            .await;
            let frame = match polled {
                None => {
                    self.flush(&[]).await?;
                    continue;
                }
                Some(None) => break,
                Some(Some(Ok(frame))) => frame,
                Some(Some(Err(error))) => {
                    tracing::debug!(%error, "response body failed; closing the connection");
                    self.flush(&[]).await?;
                    return Ok(false);
                }
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers are not sent
            };
            if data.is_empty() {
                continue;
            }
            sent += data.len() as u64;
            if let Framing::Length(length) = framing {
                if sent > length {
                    tracing::debug!("response body longer than its length; closing");
                    self.flush(&[]).await?;
                    return Ok(false);
                }
            }
            if let Framing::Chunked = framing {
                push_hex(&mut self.write, data.len());
                self.write.extend_from_slice(b"\r\n");
            }
            if data.len() >= COPY_LIMIT {
                self.flush(&data).await?;
            } else {
                self.write.extend_from_slice(&data);
            }
            if let Framing::Chunked = framing {
                self.write.extend_from_slice(b"\r\n");
            }
            if self.write.len() >= WRITE_BATCH {
                self.flush(&[]).await?;
            }
        }
        match framing {
            Framing::Length(length) if sent != length => {
                tracing::debug!("response body shorter than its length; closing");
                self.flush(&[]).await?;
                return Ok(false);
            }
            Framing::Chunked => self.write.extend_from_slice(b"0\r\n\r\n"),
            _ => {}
        }
        self.flush(&[]).await?;
        if self.write.capacity() > 4 * WRITE_BATCH {
            self.write = Vec::with_capacity(4 * 1024);
        }
        Ok(!close)
    }

    /// Writes the gathered bytes, then `more`, in one system call when the socket takes both.
    async fn flush(&mut self, more: &[u8]) -> std::io::Result<()> {
        crate::write::write_two(&mut self.io, &self.write, more).await?;
        self.write.clear();
        Ok(())
    }
}

/// How the response body is delimited.
enum Framing {
    None,
    /// No body (an answer to `HEAD`), with the length it would have had.
    Head(u64),
    Length(u64),
    Chunked,
}

/// Whether a `Connection` header asks to close.
fn connection_close(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|value| {
        value
            .as_bytes()
            .split(|b| *b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

/// What the buffer holds.
#[allow(clippy::large_enum_variant)] // as `Next`
enum Parsed {
    Request(Request<IncomingBody>),
    Partial,
    Handoff,
}

/// A request served here, taken from the front of `buf` with its body; or why not.
fn parse(buf: &mut BytesMut) -> Parsed {
    // Uninitialised slots: initialising 100 of them would cost more than parsing a short head.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut request,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(length)) if length <= MAX_HEAD => length,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Parsed::Partial,
        _ => return Parsed::Handoff,
    };
    let (Some(method), Some(path), Some(1)) = (request.method, request.path, request.version)
    else {
        return Parsed::Handoff;
    };
    // Origin form only: absolute form, authority form (CONNECT) and `*` go to hyper.
    if !path.starts_with('/') {
        return Parsed::Handoff;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Handoff;
    };
    let mut body_len = 0usize;
    let mut seen_length = false;
    for h in request.headers.iter() {
        let name = h.name.as_bytes();
        // By length first: most names are none of these, and one comparison says so.
        let is = |other: &[u8]| name.eq_ignore_ascii_case(other);
        match name.len() {
            14 if is(b"content-length") => match (seen_length, decimal(h.value)) {
                (false, Some(n)) if n <= MAX_BODY => {
                    body_len = n;
                    seen_length = true;
                }
                _ => return Parsed::Handoff,
            },
            17 if is(b"transfer-encoding") => return Parsed::Handoff,
            6 if is(b"expect") => return Parsed::Handoff,
            7 if is(b"upgrade") => return Parsed::Handoff,
            _ => {}
        }
    }
    if buf.len() < head_len + body_len {
        return Parsed::Partial;
    }
    // Where the target, each name and each value lie, so that the values share the buffer.
    let base = buf.as_ptr() as usize;
    let target = (path.as_ptr() as usize - base, path.len());
    let mut spans = crate::maps::spans();
    spans.extend(request.headers.iter().map(|h| {
        (
            (h.name.as_ptr() as usize - base) as u32,
            h.name.len() as u32,
            (h.value.as_ptr() as usize - base) as u32,
            h.value.len() as u32,
        )
    }));
    let raw = buf.split_to(head_len + body_len).freeze();
    let built = build(&raw, head_len, method, target, &spans);
    crate::maps::give_spans(spans);
    match built {
        Some(request) => Parsed::Request(request),
        None => {
            // Put the bytes back in front, for hyper to answer.
            let mut again = BytesMut::with_capacity(raw.len() + buf.len());
            again.extend_from_slice(&raw);
            again.extend_from_slice(buf);
            *buf = again;
            Parsed::Handoff
        }
    }
}

/// The request of `raw` (its head, then its body), or `None` if a part is not valid HTTP.
fn build(
    raw: &Bytes,
    head_len: usize,
    method: Method,
    (target, target_len): (usize, usize),
    spans: &[crate::maps::Span],
) -> Option<Request<IncomingBody>> {
    let uri = Uri::from_maybe_shared(raw.slice(target..target + target_len)).ok()?;
    let mut headers = crate::maps::take(spans.len() + 4);
    for &(name, name_len, value, value_len) in spans {
        let (name, value) = (name as usize, value as usize);
        let name = crate::names::name(&raw[name..name + name_len as usize]).ok()?;
        let value =
            HeaderValue::from_maybe_shared(raw.slice(value..value + value_len as usize)).ok()?;
        headers.append(name, value);
    }
    let body = if raw.len() > head_len {
        IncomingBody::Full(Some(raw.slice(head_len..)))
    } else {
        IncomingBody::Empty
    };
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Some(request)
}

/// A `Content-Length` value: ASCII digits only (no sign, no space, no list).
fn decimal(value: &[u8]) -> Option<usize> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0usize, |n, d| n * 10 + usize::from(d - b'0')),
    )
}

/// The status line and headers, with this connection's framing.
fn write_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    framing: &Framing,
    no_body: bool,
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut dated = false;
    for (name, value) in headers {
        // The framing and the connection's fate are this module's to say. After `HEAD` and
        // for 304 the handler's `Content-Length` stays (it describes the body not sent).
        if *name == header::TRANSFER_ENCODING || *name == header::CONNECTION {
            continue;
        }
        if *name == header::CONTENT_LENGTH && !(no_body && status != StatusCode::NO_CONTENT) {
            continue;
        }
        dated |= *name == header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::None => {}
        Framing::Length(length) | Framing::Head(length) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, *length);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        crate::date::with_now(|date| out.extend_from_slice(date));
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn push_hex(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[n % 16];
        n /= 16;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// A connection handed to hyper: the bytes already read come first.
struct Rewind<S> {
    prefix: Bytes,
    io: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use tokenkeeper_testing::fuzz::{cases, Mutator};

    use super::{parse, Parsed};

    /// Hostile bytes from a client: every parse takes a whole request off the front, waits for
    /// more, or hands the connection over with every byte still there — never a panic, never a
    /// byte lost.
    #[test]
    fn en_01_hostile_request_bytes_are_served_waited_for_or_handed_over_whole() {
        let seeds = [
            b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nCookie: a=b\r\nX-CSRF: 1\r\n\r\n".to_vec(),
            b"POST /p HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n"
                .to_vec(),
            b"PUT /c HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            b"GET / HTTP/1.1\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n".to_vec(),
        ];
        let mut mutator = Mutator::from_env();
        for _ in 0..cases(20_000) {
            let input = mutator.mutate(&seeds);
            let mut buf = BytesMut::from(&input[..]);
            for _ in 0..64 {
                let before = buf.clone();
                match parse(&mut buf) {
                    Parsed::Request(_) => assert!(buf.len() < before.len()),
                    Parsed::Partial | Parsed::Handoff => {
                        assert_eq!(buf, before, "seed {}", mutator.seed());
                        break;
                    }
                }
            }
        }
    }
}
