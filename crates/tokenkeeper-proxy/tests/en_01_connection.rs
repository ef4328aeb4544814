//! EN-01: the server's own HTTP/1.1 (`connection`), spoken to by raw TCP clients: keep-alive
//! and pipelining, `HEAD`, framing of known and unknown lengths, a body that breaks its
//! length, and everything it hands to hyper (chunked and large uploads, `Expect`, HTTP/1.0,
//! malformed and oversized heads, control characters) — answered, never a panic, and the
//! server keeps serving. Slow-loris heads and idle connections at shutdown are closed.
#![allow(clippy::unwrap_used, missing_docs)]

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use tokenkeeper_proxy::server::{Bound, Handler, Peer, Server, ServerOptions};
use tokenkeeper_proxy::{IncomingBody, ProxyBody};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// `/echo`: the request body back, with `x-method` and `x-length`; `/stream`: three chunks
/// of unknown total length; `/lie`: a body that says 10 bytes and gives 5; `/big`: 1 MiB.
struct Echo;

/// `/echo/signal` says here that its request has reached the handler.
static SIGNAL: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// A body whose length hint says 10 bytes and which yields 5.
struct Liar(bool);

impl Body for Liar {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.0 {
            return Poll::Ready(None);
        }
        self.0 = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"short")))))
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(10)
    }
}

impl Handler for Echo {
    async fn handle(&self, request: Request<IncomingBody>, _peer: Peer) -> Response<ProxyBody> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let body = match path.as_str() {
            "/stream" => {
                let chunks = ["one,", "two,", "three"]
                    .map(|c| Ok::<_, std::io::Error>(Frame::data(Bytes::from(c))));
                ProxyBody::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
                    chunks,
                )))
            }
            "/lie" => ProxyBody::boxed(Liar(false)),
            "/big" => ProxyBody::full(vec![b'x'; 1 << 20]),
            _ => {
                if path == "/echo/signal" {
                    SIGNAL.notify_one();
                }
                let bytes = request.into_body().collect().await.unwrap().to_bytes();
                let length = bytes.len();
                let mut response = Response::new(ProxyBody::full(bytes));
                response
                    .headers_mut()
                    .insert("x-method", method.as_str().parse().unwrap());
                response
                    .headers_mut()
                    .insert("x-length", length.to_string().parse().unwrap());
                return response;
            }
        };
        Response::new(body)
    }
}

fn server(header_read_timeout: Duration) -> Server {
    let options = ServerOptions {
        workers: 2,
        header_read_timeout,
        drain_timeout: Duration::from_secs(60),
    };
    Bound::bind("127.0.0.1:0".parse().unwrap(), options.workers)
        .unwrap()
        .serve(Arc::new(Echo), &options)
        .unwrap()
}

/// One response from `stream` (head lower-cased, body de-chunked); `None` if the connection
/// closed before a complete one.
async fn response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    head_only: bool,
) -> Option<(String, Vec<u8>)> {
    async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
        let mut chunk = [0u8; 65536];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if !fill(stream, buf).await {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    buf.drain(..end + 4);
    if head.starts_with("http/1.1 100") {
        return Box::pin(response(stream, buf, head_only)).await;
    }
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|v| v.trim().parse::<usize>().unwrap());
    if head_only {
        return Some((head, Vec::new()));
    }
    if head.contains("transfer-encoding: chunked") {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if !fill(stream, buf).await {
                    return None;
                }
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16).unwrap();
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                if !fill(stream, buf).await {
                    return None;
                }
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                return Some((head, body));
            }
        }
    }
    let length = length.unwrap_or(0);
    while buf.len() < length {
        if !fill(stream, buf).await {
            return None;
        }
    }
    let body = buf.drain(..length).collect();
    Some((head, body))
}

/// Sends `request` on `stream` and reads one complete response.
async fn ask(stream: &mut TcpStream, buf: &mut Vec<u8>, request: &[u8]) -> (String, Vec<u8>) {
    stream.write_all(request).await.unwrap();
    response(stream, buf, false).await.unwrap()
}

/// Whether the server closes `stream` (reads to the end, within 10 s).
async fn closes(stream: &mut TcpStream) -> bool {
    let mut sink = Vec::new();
    matches!(
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut sink)).await,
        Ok(Ok(_))
    )
}

async fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(server.local_addr()).await.unwrap()
}

#[tokio::test]
async fn en_01_connection_pipelined_requests_are_answered_in_order_on_one_connection() {
    let server = server(Duration::from_secs(30));
    let mut stream = connect(&server).await;
    stream
        .write_all(
            b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n\
              POST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello\
              DELETE /c HTTP/1.1\r\nhost: x\r\n\r\n",
        )
        .await
        .unwrap();
    let mut buf = Vec::new();
    for (method, body) in [("get", ""), ("post", "hello"), ("delete", "")] {
        let (head, got) = response(&mut stream, &mut buf, false).await.unwrap();
        assert!(head.starts_with("http/1.1 200 ok"), "{head}");
        assert!(head.contains(&format!("x-method: {method}")), "{head}");
        assert!(head.contains("date: "), "{head}");
        assert_eq!(got, body.as_bytes());
    }
    // A HEAD gets the length of what a GET would, and no body: the next answer is intact.
    stream
        .write_all(b"HEAD /big HTTP/1.1\r\nhost: x\r\n\r\nGET /a HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = response(&mut stream, &mut buf, true).await.unwrap();
    assert!(head.contains("content-length: 1048576"), "{head}");
    let (head, body) = response(&mut stream, &mut buf, false).await.unwrap();
    assert!(head.contains("x-method: get"), "{head}");
    assert!(body.is_empty());
    // `Connection: close` is answered, and the connection closed.
    let (head, _) = ask(
        &mut stream,
        &mut buf,
        b"GET /a HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(head.contains("connection: close"), "{head}");
    assert!(closes(&mut stream).await);
}

#[tokio::test]
async fn en_01_connection_frames_unknown_lengths_and_cuts_a_body_that_breaks_its_length() {
    let server = server(Duration::from_secs(30));
    let mut stream = connect(&server).await;
    let mut buf = Vec::new();
    let (head, body) = ask(
        &mut stream,
        &mut buf,
        b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert_eq!(body, b"one,two,three");
    let (_, body) = ask(
        &mut stream,
        &mut buf,
        b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    assert_eq!(body.len(), 1 << 20);
    // 10 bytes promised, 5 given: the client sees a cut response and a closed connection,
    // never a next response read as the rest of this one.
    stream
        .write_all(b"GET /lie HTTP/1.1\r\nhost: x\r\n\r\nGET /a HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(response(&mut stream, &mut buf, false).await.is_none());
}

#[tokio::test]
async fn en_01_connection_hands_what_it_does_not_serve_to_hyper() {
    let server = server(Duration::from_secs(30));
    let mut buf = Vec::new();
    // A chunked upload: hyper streams it; the same connection then keeps working.
    let mut stream = connect(&server).await;
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n\
              5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n\
              GET /a HTTP/1.1\r\nhost: x\r\n\r\n",
        )
        .await
        .unwrap();
    let (head, body) = response(&mut stream, &mut buf, false).await.unwrap();
    assert!(head.contains("x-length: 11"), "{head}");
    assert_eq!(body, b"hello world");
    let (head, _) = response(&mut stream, &mut buf, false).await.unwrap();
    assert!(head.contains("x-method: get"), "{head}");

    // A body over 64 KiB, after a request served here on the same connection.
    let mut stream = connect(&server).await;
    let big = vec![b'y'; 300 * 1024];
    let mut request = b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n".to_vec();
    request.extend_from_slice(
        format!(
            "PUT /echo HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
            big.len()
        )
        .as_bytes(),
    );
    request.extend_from_slice(&big);
    stream.write_all(&request).await.unwrap();
    let mut buf = Vec::new();
    let (head, _) = response(&mut stream, &mut buf, false).await.unwrap();
    assert!(head.contains("x-method: get"), "{head}");
    let (head, body) = response(&mut stream, &mut buf, false).await.unwrap();
    assert!(head.contains(&format!("x-length: {}", big.len())), "{head}");
    assert_eq!(body, big);

    // `Expect: 100-continue`: hyper says continue, then the body is read.
    let mut stream = connect(&server).await;
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nexpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let mut first = [0u8; 25];
    stream.read_exact(&mut first).await.unwrap();
    assert!(
        first.starts_with(b"HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    stream.write_all(b"abc").await.unwrap();
    let mut buf = first[25..].to_vec();
    let (head, body) = response(&mut stream, &mut buf, false).await.unwrap();
    assert!(head.contains("x-length: 3"), "{head}");
    assert_eq!(body, b"abc");

    // HTTP/1.0: answered, then closed.
    let mut stream = connect(&server).await;
    stream.write_all(b"GET /a HTTP/1.0\r\n\r\n").await.unwrap();
    let mut all = Vec::new();
    stream.read_to_end(&mut all).await.unwrap();
    let text = String::from_utf8_lossy(&all).to_ascii_lowercase();
    assert!(
        text.starts_with("http/1.0 200 ok") || text.starts_with("http/1.1 200 ok"),
        "{text}"
    );
    assert!(text.contains("x-method: get"), "{text}");
}

#[tokio::test]
async fn en_01_connection_hostile_heads_get_a_4xx_and_the_server_keeps_serving() {
    let server = server(Duration::from_secs(30));
    let mut oversized = b"GET /a HTTP/1.1\r\nhost: x\r\nx-big: ".to_vec();
    oversized.extend(std::iter::repeat_n(b'a', 2 << 20));
    oversized.extend_from_slice(b"\r\n\r\n");
    let cases: [(&[u8], &str); 5] = [
        (
            b"GET /a HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n",
            "400",
        ),
        (
            b"GET /a HTTP/1.1\r\nhost: x\r\nx-ctl: a\x01b\r\n\r\n",
            "400",
        ),
        (
            b"GET /a HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
            "400",
        ),
        (
            b"GET /a HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n",
            "400",
        ),
        (&oversized, "431"),
    ];
    for (request, status) in cases {
        let mut stream = connect(&server).await;
        // The server may answer and close before it has read an oversized head whole.
        let _ = stream.write_all(request).await;
        let mut all = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut all)).await;
        let text = String::from_utf8_lossy(&all);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}")),
            "{:?}: {text}",
            String::from_utf8_lossy(&request[..request.len().min(60)])
        );
    }
    let mut stream = connect(&server).await;
    let mut buf = Vec::new();
    let (head, _) = ask(&mut stream, &mut buf, b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
}

#[tokio::test]
async fn en_01_connection_a_head_sent_too_slowly_is_closed() {
    let server = server(Duration::from_secs(1));
    let mut stream = connect(&server).await;
    stream
        .write_all(b"GET /a HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // The rest never comes: the server gives up on the connection.
    assert!(closes(&mut stream).await);
    // An idle keep-alive connection, too.
    let mut stream = connect(&server).await;
    let mut buf = Vec::new();
    ask(&mut stream, &mut buf, b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(closes(&mut stream).await);
}

#[tokio::test]
async fn en_01_connection_shutdown_closes_idle_connections_and_finishes_in_flight_ones() {
    let server = server(Duration::from_secs(30));
    let mut idle = connect(&server).await;
    let mut buf = Vec::new();
    ask(&mut idle, &mut buf, b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n").await;
    // Another connection has sent half a body: its request is in flight at the handler.
    let mut busy = connect(&server).await;
    busy.write_all(
        b"POST /echo/signal HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n",
    )
    .await
    .unwrap();
    SIGNAL.notified().await;
    server.shutdown();
    // The idle connection is closed long before the 60 s drain timeout.
    assert!(closes(&mut idle).await);
    // The request in flight finishes.
    busy.write_all(b"0\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let (head, body) = response(&mut busy, &mut buf, false).await.unwrap();
    assert!(head.contains("x-length: 3"), "{head}");
    assert_eq!(body, b"abc");
    tokio::time::timeout(Duration::from_secs(20), server.stopped())
        .await
        .unwrap();
}
