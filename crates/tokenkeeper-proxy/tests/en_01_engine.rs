//! EN-01: the engine forwards through its own HTTP/1.1 client — bodies streamed both ways,
//! chunked and close-delimited answers, stale pooled connections, hostile upstreams — on the
//! per-core server, with a policy that attaches a header and refuses what it must.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tokenkeeper_proxy::server::{Bound, Handler, Peer, Server, ServerOptions};
use tokenkeeper_proxy::{Attach, Engine, Policy, ProxyBody, Route};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// Admits everything with `Authorization: Bearer t`, except paths with `deny`.
struct Test;

impl Policy for Test {
    type Context = ();
    async fn admit(
        &self,
        _route: usize,
        parts: &http::request::Parts,
    ) -> Result<(Attach, ()), Response<ProxyBody>> {
        if parts.uri.path().contains("deny") {
            return Err(tokenkeeper_proxy::plain_text(StatusCode::FORBIDDEN, "No."));
        }
        Ok((
            Attach::Authorization(http::HeaderValue::from_static("Bearer t")),
            (),
        ))
    }
}

struct Host(Engine);

impl Handler for Host {
    async fn handle(
        &self,
        request: Request<tokenkeeper_proxy::IncomingBody>,
        peer: Peer,
    ) -> Response<ProxyBody> {
        match self.0.route_for(request.uri().path()) {
            Some(route) => {
                self.0
                    .forward(&Test, route, request, peer.socket_addr())
                    .await
            }
            None => tokenkeeper_proxy::plain_text(StatusCode::NOT_FOUND, "Not found."),
        }
    }
}

fn proxy(upstream: &str) -> Server {
    let options = ServerOptions {
        workers: 2,
        drain_timeout: Duration::from_secs(5),
        ..ServerOptions::default()
    };
    let engine = Engine::builder("test")
        .route(
            Route::new("/api", upstream.parse().unwrap())
                .unwrap()
                .timeout(Duration::from_secs(5)),
        )
        .workers(2)
        .build()
        .unwrap();
    Bound::bind("127.0.0.1:0".parse().unwrap(), options.workers)
        .unwrap()
        .serve(Arc::new(Host(engine)), &options)
        .unwrap()
}

/// A raw upstream: for each connection, reads requests (head and any declared body) and
/// answers each with what `answer` gives for its head; `close` after an answer closes.
async fn raw_upstream<F>(answer: F) -> (String, Arc<AtomicUsize>)
where
    F: Fn(&str) -> (Vec<u8>, bool) + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/up", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let answer = Arc::new(answer);
    let counter = connections.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = find(&buf, b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    while buf.len() < end + 4 + length {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + 4 + length);
                    let (bytes, close) = answer(&head);
                    if stream.write_all(&bytes).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (url, connections)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[tokio::test]
async fn en_01_forwards_with_the_policys_token_and_hygiene() {
    let (upstream, _) = raw_upstream(|head| {
        let body = head.to_owned();
        (
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nset-cookie: a=b\r\naccess-control-allow-origin: *\r\nconnection: keep-alive, x-internal\r\nx-internal: 1\r\n\r\n{body}", body.len()).into_bytes(),
            false,
        )
    })
    .await;
    let server = proxy(&upstream);
    let base = format!("http://{}", server.local_addr());
    let response = client()
        .get(format!("{base}/api/items?q=a%20b"))
        .header("authorization", "Bearer from-the-caller")
        .header("cookie", "session=secret")
        .header("x-forwarded-for", "10.0.0.1")
        .header("connection", "x-drop")
        .header("x-drop", "1")
        .header("x-kept", "yes")
        .header("host", "caller.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for dropped in ["set-cookie", "access-control-allow-origin", "x-internal"] {
        assert!(response.headers().get(dropped).is_none(), "{dropped}");
    }
    let seen = response.text().await.unwrap().to_ascii_lowercase();
    assert!(seen.starts_with("get /up/items?q=a%20b http/1.1"), "{seen}");
    assert!(seen.contains("authorization: bearer t"), "{seen}");
    assert!(seen.contains("x-kept: yes"), "{seen}");
    // The upstream's own `Host`, once: the caller's is replaced.
    let upstream_host = upstream
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap();
    let hosts: Vec<&str> = seen.lines().filter(|l| l.starts_with("host:")).collect();
    assert_eq!(hosts, [format!("host: {upstream_host}").as_str()], "{seen}");
    for leaked in [
        "from-the-caller",
        "session=secret",
        "10.0.0.1",
        "x-drop",
        "caller.example",
    ] {
        assert!(
            !seen.contains(leaked),
            "{leaked} reached the upstream: {seen}"
        );
    }
    let denied = client()
        .get(format!("{base}/api/deny"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let trace = client()
        .request(http::Method::TRACE, format!("{base}/api/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(trace.status(), 405);
    let traversal = client()
        .get(format!("{base}/api/a%2Fb"))
        .send()
        .await
        .unwrap();
    assert_eq!(traversal.status(), 400);
    server.shutdown();
    server.stopped().await;
}

#[tokio::test]
async fn en_01_streams_chunked_close_delimited_and_large_bodies() {
    let big = "x".repeat(3 * 1024 * 1024);
    let payload = big.clone();
    let (upstream, _) = raw_upstream(move |head| {
        if head.contains("/chunked") {
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\ntrailer: t\r\n\r\n".to_vec(),
                false,
            )
        } else if head.contains("/close") {
            (b"HTTP/1.1 200 OK\r\n\r\nuntil the end".to_vec(), true)
        } else if head.contains("/big") {
            (
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{payload}", payload.len())
                    .into_bytes(),
                false,
            )
        } else if head.contains("/interim") {
            (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n".to_vec(), false)
        } else {
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap_or("none")
                .to_owned();
            (
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{length}", length.len())
                    .into_bytes(),
                false,
            )
        }
    })
    .await;
    let server = proxy(&upstream);
    let base = format!("http://{}", server.local_addr());
    let http = client();
    let chunked = http
        .get(format!("{base}/api/chunked"))
        .send()
        .await
        .unwrap();
    assert_eq!(chunked.text().await.unwrap(), "hello world");
    let close = http.get(format!("{base}/api/close")).send().await.unwrap();
    assert_eq!(close.text().await.unwrap(), "until the end");
    let large = http.get(format!("{base}/api/big")).send().await.unwrap();
    assert_eq!(large.text().await.unwrap().len(), big.len());
    let interim = http
        .get(format!("{base}/api/interim"))
        .send()
        .await
        .unwrap();
    assert_eq!(interim.status(), 204);
    // A 2 MiB request body streams up with its length.
    let upload = http
        .post(format!("{base}/api/upload"))
        .body(vec![b'y'; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(upload.text().await.unwrap(), (2 * 1024 * 1024).to_string());
    // A chunked request body (no length) streams up chunked.
    let stream =
        futures_util::stream::iter(vec![Ok::<_, std::io::Error>(bytes::Bytes::from("abc"))]);
    let chunked_up = http
        .post(format!("{base}/api/upload"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(chunked_up.status(), 200);
    server.shutdown();
    server.stopped().await;
}

#[tokio::test]
async fn en_01_a_pooled_connection_the_upstream_closed_is_retried_once_idempotent() {
    // The upstream answers each request, then closes without saying so.
    let (upstream, connections) = raw_upstream(|_| {
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            true,
        )
    })
    .await;
    let server = proxy(&upstream);
    let base = format!("http://{}", server.local_addr());
    let http = client();
    for _ in 0..5 {
        let response = http.get(format!("{base}/api/x")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert!(connections.load(Ordering::SeqCst) >= 5);
    server.shutdown();
    server.stopped().await;
}

#[tokio::test]
async fn en_01_hostile_upstream_answers_are_502_never_a_panic() {
    let (upstream, _) = raw_upstream(|head| {
        let answer: &[u8] = if head.contains("/length") {
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello"
        } else if head.contains("/garbage") {
            b"NOT HTTP AT ALL\r\n\r\n"
        } else if head.contains("/upgrade") {
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n"
        } else if head.contains("/huge") {
            return (
                format!(
                    "HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n",
                    "a".repeat(70 * 1024)
                )
                .into_bytes(),
                false,
            );
        } else if head.contains("/many") {
            return (
                format!(
                    "HTTP/1.1 200 OK\r\n{}\r\n",
                    (0..150)
                        .map(|i| format!("x-{i}: v\r\n"))
                        .collect::<String>()
                )
                .into_bytes(),
                false,
            );
        } else if head.contains("/control") {
            b"HTTP/1.1 200 OK\r\nx-bad: a\x01b\r\ncontent-length: 0\r\n\r\n"
        } else {
            b""
        };
        (answer.to_vec(), true)
    })
    .await;
    let server = proxy(&upstream);
    let base = format!("http://{}", server.local_addr());
    let http = client();
    for path in [
        "length", "garbage", "upgrade", "huge", "many", "control", "nothing",
    ] {
        let response = http.get(format!("{base}/api/{path}")).send().await.unwrap();
        assert_eq!(response.status(), 502, "{path}");
    }
    server.shutdown();
    server.stopped().await;
}

#[tokio::test]
async fn en_01_a_cut_body_is_not_passed_off_as_complete() {
    let (upstream, _) = raw_upstream(|head| {
        if head.contains("/chunked") {
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel".to_vec(),
                true,
            )
        } else {
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort".to_vec(),
                true,
            )
        }
    })
    .await;
    let server = proxy(&upstream);
    let base = format!("http://{}", server.local_addr());
    for path in ["length", "chunked"] {
        // The answer's head may or may not have left before the cut: either way the caller
        // never gets the cut body as a complete one.
        let whole = match client().get(format!("{base}/api/{path}")).send().await {
            Ok(response) => response.bytes().await.is_ok(),
            Err(_) => false,
        };
        assert!(!whole, "{path}: a cut body read as whole");
    }
    server.shutdown();
    server.stopped().await;
}

#[tokio::test]
async fn en_01_shutdown_lets_in_flight_requests_finish() {
    // The upstream holds each answer until shutdown has begun.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}/up", listener.local_addr().unwrap());
    let received = Arc::new(AtomicUsize::new(0));
    let (release, released) = tokio::sync::watch::channel(false);
    let seen = received.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            let mut released = released.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                seen.fetch_add(1, Ordering::SeqCst);
                let _ = released.wait_for(|r| *r).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ndone")
                    .await;
            });
        }
    });
    let server = proxy(&upstream);
    let base = format!("http://{}", server.local_addr());
    let http = client();
    let in_flight: Vec<_> = (0..10)
        .map(|_| {
            let (http, url) = (http.clone(), format!("{base}/api/slow"));
            tokio::spawn(async move { http.get(url).send().await?.text().await })
        })
        .collect();
    while received.load(Ordering::SeqCst) < 10 {
        tokio::task::yield_now().await;
    }
    // Every request is in flight: shutdown begins, then the upstream answers.
    server.shutdown();
    release.send(true).unwrap();
    for request in in_flight {
        assert_eq!(request.await.unwrap().unwrap(), "done");
    }
    server.stopped().await;
    assert!(client().get(format!("{base}/api/x")).send().await.is_err());
}

#[tokio::test]
async fn en_01_an_upstream_that_never_answers_is_a_504_after_the_routes_timeout() {
    // Accepts, reads, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}/up", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            held.push(stream);
        }
    });
    let options = ServerOptions {
        workers: 1,
        ..ServerOptions::default()
    };
    let engine = Engine::builder("test")
        .route(
            Route::new("/api", upstream.parse().unwrap())
                .unwrap()
                .timeout(Duration::from_millis(200)),
        )
        .workers(1)
        .build()
        .unwrap();
    let server = Bound::bind("127.0.0.1:0".parse().unwrap(), 1)
        .unwrap()
        .serve(Arc::new(Host(engine)), &options)
        .unwrap();
    let response = client()
        .get(format!("http://{}/api/x", server.local_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    server.shutdown();
    server.stopped().await;
}
