//! SC-01 and SC-02: the sidecar's routes (client, DPoP, exchange, forward, none), its JSON
//! errors, and its trust boundary — run in process against the test authorization server and
//! its protected API (which verifies Bearer tokens, and DPoP proofs and bindings).
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use serde_json::Value;
use tokenkeeper_proxy::server::{Bound, Server, ServerOptions};
use tokenkeeper_sidecar::config::SidecarConfig;
use tokenkeeper_sidecar::Sidecar;
use tokenkeeper_testing::{TestClient, TestServer};

const SECRET_ENV: &str = "WORKER_SECRET";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

fn env(name: &str) -> Option<String> {
    match name {
        SECRET_ENV => Some("worker-secret".into()),
        "CALLER_KEY" => Some("a-caller-key-of-some-length".into()),
        _ => None,
    }
}

async fn idp() -> TestServer {
    TestServer::builder()
        .client(TestClient::new("worker", "worker-secret"))
        .client(TestClient::new("frontend", "frontend-secret"))
        .start()
        .await
}

/// The sidecar for `toml`, served on its configured listen address.
fn start(toml: &str) -> Server {
    let config = SidecarConfig::parse(toml).unwrap();
    let sidecar = Sidecar::build(&config, &env).unwrap();
    let options = ServerOptions {
        workers: 2,
        ..ServerOptions::default()
    };
    Bound::bind_to(sidecar.listen(), options.workers)
        .unwrap()
        .serve(Arc::new(sidecar.handler()), &options)
        .unwrap()
}

fn config(issuer: &str, client_extra: &str, routes: &str) -> String {
    format!(
        r#"
[sidecar]
listen = "127.0.0.1:0"

[[clients]]
name = "worker"
issuer = "{issuer}"
client_id = "worker"
client_secret_env = "{SECRET_ENV}"
{client_extra}

{routes}
"#
    )
}

async fn json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn sc_01_client_route_attaches_the_clients_token_and_the_caller_never_sees_it() {
    let idp = idp().await;
    let api = idp.start_api().await;
    let server = start(&config(
        idp.issuer(),
        "",
        &format!(
            "[[routes]]\npath = \"/orders\"\nupstream = \"{}\"\ntoken = \"client\"\nclient = \"worker\"",
            api.url("/v1")
        ),
    ));
    let base = format!("http://{}", server.local_addr());
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let response = http
            .get(format!("{base}/orders/42?x=1"))
            .send()
            .await
            .unwrap();
        let headers = format!("{:?}", response.headers());
        let (status, body) = json(response).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["scheme"], "Bearer");
        assert_eq!(body["sub"], "worker");
        assert_eq!(body["path"], "/v1/42");
        assert!(
            !headers.to_ascii_lowercase().contains("bearer"),
            "{headers}"
        );
    }
    // One token for the three calls.
    assert_eq!(idp.token_requests("client_credentials"), 1);
    server.shutdown();
    server.stopped().await;
}

#[tokio::test]
async fn sc_01_dpop_client_route_sends_proofs_and_answers_the_apis_nonce() {
    let idp = idp().await;
    let api = idp.start_api().await;
    api.set_nonce_required(true);
    let server = start(&config(
        idp.issuer(),
        "dpop = true\nrequire_dpop = true",
        &format!(
            "[[routes]]\npath = \"/orders\"\nupstream = \"{}\"\ntoken = \"client\"\nclient = \"worker\"",
            api.url("/")
        ),
    ));
    let base = format!("http://{}", server.local_addr());
    let http = reqwest::Client::new();
    for i in 0..3 {
        let (status, body) = json(
            http.post(format!("{base}/orders/items"))
                .body(format!("item {i}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["scheme"], "DPoP");
    }
    assert!(api.proofs_accepted() >= 3);
    server.shutdown();
    server.stopped().await;
}

#[tokio::test]
async fn sc_01_exchange_route_exchanges_the_callers_bearer_token() {
    let idp = idp().await;
    let api = idp.start_api().await;
    let frontend = tokenkeeper::ClientCredentialsTokenManager::builder()
        .client(
            "f",
            tokenkeeper::ClientConfig::from_issuer(idp.issuer(), "frontend", "frontend-secret")
                .allow_insecure_http(true),
        )
        .build()
        .unwrap();
    let subject = frontend
        .get_token("f", &tokenkeeper::TokenRequestParams::default())
        .await
        .unwrap();
    let server = start(&config(
        idp.issuer(),
        "",
        &format!(
            "[[routes]]\npath = \"/billing\"\nupstream = \"{}\"\ntoken = \"exchange\"\nclient = \"worker\"\naudience = \"billing\"",
            api.url("/")
        ),
    ));
    let base = format!("http://{}", server.local_addr());
    let http = reqwest::Client::new();
    let (status, body) = json(
        http.get(format!("{base}/billing/invoices"))
            .bearer_auth(subject.access_token().secret())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The API saw a token for the caller's subject, not the caller's own token.
    assert_eq!(body["sub"], "frontend");
    assert_eq!(idp.token_requests(EXCHANGE), 1);
    // The same caller token again: the cached exchange.
    let again = http
        .get(format!("{base}/billing/invoices"))
        .bearer_auth(subject.access_token().secret())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(idp.token_requests(EXCHANGE), 1);
    // No caller token: refused before any exchange.
    let (status, body) = json(http.get(format!("{base}/billing/x")).send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("missing_bearer"))
    );
    // A token the server never issued: refused, and nothing reaches the API.
    let before = api.requests();
    let (status, body) = json(
        http.get(format!("{base}/billing/x"))
            .bearer_auth("not-a-token")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("token_refused")),
        "{body}"
    );
    assert_eq!(api.requests(), before);
    server.shutdown();
    server.stopped().await;
}

#[tokio::test]
async fn sc_01_forward_and_none_routes_and_json_errors() {
    let idp = idp().await;
    let api = idp.start_api().await;
    let token = idp.sign_jwt(&serde_json::Map::new(), None);
    let server = start(&config(
        idp.issuer(),
        "",
        &format!(
            "[[routes]]\npath = \"/fwd\"\nupstream = \"{0}\"\ntoken = \"forward\"\n\n\
             [[routes]]\npath = \"/open\"\nupstream = \"{0}\"\ntoken = \"none\"\n\n\
             [[routes]]\npath = \"/down\"\nupstream = \"http://127.0.0.1:9/\"\ntoken = \"none\"",
            api.url("/")
        ),
    ));
    let base = format!("http://{}", server.local_addr());
    let http = reqwest::Client::new();
    // `none`: the API sees no token (and refuses), the caller's own never goes.
    let open = http
        .get(format!("{base}/open/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 401);
    // `forward`: the caller's Authorization as it came (the API checks it).
    let forwarded = http
        .get(format!("{base}/fwd/x"))
        .header("authorization", "Bearer forwarded-as-is")
        .send()
        .await
        .unwrap();
    assert_eq!(
        forwarded.status(),
        401,
        "the API saw the caller's (invalid) token"
    );
    // The sidecar's own answers: JSON, stable codes.
    let (status, body) = json(http.get(format!("{base}/nowhere")).send().await.unwrap()).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("no_route")));
    assert!(body["message"].is_string());
    let (status, body) = json(http.get(format!("{base}/down/x")).send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (502, Some("upstream_unavailable"))
    );
    let (status, body) = json(
        http.request(reqwest::Method::TRACE, format!("{base}/open/x"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("method_not_allowed"))
    );
    server.shutdown();
    server.stopped().await;
}

#[tokio::test]
async fn sc_02_non_loopback_listen_is_refused_without_caller_authentication() {
    let toml = r#"
[sidecar]
listen = "0.0.0.0:15001"

[[routes]]
path = "/a"
upstream = "http://127.0.0.1:9/"
token = "none"
"#;
    let error = SidecarConfig::parse(toml)
        .unwrap()
        .check()
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("sidecar.listen:"), "{error}");
    assert!(error.contains("caller_secret_env"), "{error}");
    let with_secret = toml.replace(
        "listen = \"0.0.0.0:15001\"",
        "listen = \"0.0.0.0:15001\"\ncaller_secret_env = \"CALLER_KEY\"",
    );
    SidecarConfig::parse(&with_secret).unwrap().check().unwrap();
    // Mistakes name their key.
    for (bad, key) in [
        ("listen = \"nowhere\"", "sidecar.listen"),
        (
            "listen = \"127.0.0.1:1\"\nallowed_uids = [0]",
            "sidecar.allowed_uids",
        ),
    ] {
        let text = toml.replace("listen = \"0.0.0.0:15001\"", bad);
        let error = SidecarConfig::parse(&text)
            .unwrap()
            .check()
            .unwrap_err()
            .to_string();
        assert!(error.starts_with(key), "{bad}: {error}");
    }
    let unknown = toml.replace("token = \"none\"", "token = \"none\"\ntokn = 1");
    let error = SidecarConfig::parse(&unknown).unwrap_err().to_string();
    assert!(error.contains("tokn") && error.contains("line"), "{error}");
}

#[tokio::test]
async fn sc_02_the_caller_secret_is_required_and_never_forwarded() {
    let idp = idp().await;
    let api = idp.start_api().await;
    let toml = config(
        idp.issuer(),
        "",
        &format!(
            "[[routes]]\npath = \"/orders\"\nupstream = \"{}\"\ntoken = \"client\"\nclient = \"worker\"",
            api.url("/")
        ),
    )
    .replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\ncaller_secret_env = \"CALLER_KEY\"",
    );
    let server = start(&toml);
    let base = format!("http://{}", server.local_addr());
    let http = reqwest::Client::new();
    for key in [None, Some("wrong"), Some("a-caller-key-of-some-lengtH")] {
        let mut request = http.get(format!("{base}/orders/x"));
        if let Some(key) = key {
            request = request.header("x-tokenkeeper-key", key);
        }
        let (status, body) = json(request.send().await.unwrap()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("caller_unauthenticated"))
        );
    }
    assert_eq!(
        idp.total_token_requests(),
        0,
        "no token for an unauthenticated caller"
    );
    let response = http
        .post(format!("{base}/orders/x"))
        .header("x-tokenkeeper-key", "a-caller-key-of-some-length")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // What the upstream receives: an echo of the request head. The key is not in it.
    let echo = echo_upstream().await;
    let server_echo = start(&toml.replace(&api.url("/"), &echo).replace(
        "token = \"client\"\nclient = \"worker\"",
        "token = \"none\"",
    ));
    let head = http
        .get(format!("http://{}/orders/x", server_echo.local_addr()))
        .header("x-tokenkeeper-key", "a-caller-key-of-some-length")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(head.starts_with("GET /x HTTP/1.1"), "{head}");
    assert!(!head.contains("a-caller-key"), "{head}");
    server.shutdown();
    server_echo.shutdown();
    server.stopped().await;
    server_echo.stopped().await;
}

/// An upstream that answers each request with its own head.
async fn echo_upstream() -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    buf.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.write_all(&buf).await;
            });
        }
    });
    url
}

#[cfg(unix)]
#[tokio::test]
async fn sc_02_unix_socket_callers_are_checked_by_user_id() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let idp = idp().await;
    let api = idp.start_api().await;
    let dir = std::env::temp_dir().join(format!("tk-sidecar-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let uid = std::fs::metadata(&dir)
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    let call = |socket: std::path::PathBuf| async move {
        let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
        stream
            .write_all(b"GET /orders/x HTTP/1.1\r\nhost: sidecar\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    };
    for (allowed, expect) in [(uid, "200 OK"), (uid + 4242, "401 Unauthorized")] {
        let socket = dir.join(format!("sidecar-{allowed}.sock"));
        let toml = config(
            idp.issuer(),
            "",
            &format!(
                "[[routes]]\npath = \"/orders\"\nupstream = \"{}\"\ntoken = \"client\"\nclient = \"worker\"",
                api.url("/")
            ),
        )
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"unix:{}\"\nallowed_uids = [{allowed}]", socket.display()),
        );
        let server = start(&toml);
        let mode = std::fs::metadata(&socket)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))
            .unwrap();
        assert_eq!(mode & 0o777, 0o660);
        let answer = call(socket.clone()).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {expect}")),
            "{answer}"
        );
        server.shutdown();
        server.stopped().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sc_04_readiness_fails_while_a_routes_token_cannot_be_had() {
    let idp = idp().await;
    let api = idp.start_api().await;
    let toml = config(
        idp.issuer(),
        "",
        &format!(
            "[[routes]]\npath = \"/orders\"\nupstream = \"{}\"\ntoken = \"client\"\nclient = \"worker\"",
            api.url("/")
        ),
    );
    let ready = Sidecar::build(&SidecarConfig::parse(&toml).unwrap(), &env)
        .unwrap()
        .handler()
        .readiness();
    assert!(ready().await.iter().all(|(_, r)| r.is_ok()));
    // The wrong secret: the token endpoint refuses, the sidecar is not ready, and says which
    // route without the error's detail.
    let wrong = |name: &str| (name == SECRET_ENV).then(|| "not-the-secret".to_owned());
    let not_ready = Sidecar::build(&SidecarConfig::parse(&toml).unwrap(), &wrong)
        .unwrap()
        .handler()
        .readiness();
    let checks = not_ready().await;
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].0, "routes[0].token");
    let reason = checks[0].1.as_ref().unwrap_err();
    assert!(!reason.contains("not-the-secret"), "{reason}");
}

/// The README's sidecar quick start is a configuration that checks.
#[test]
fn sc_01_the_readme_quick_start_configuration_checks() {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
    )
    .unwrap();
    let section = readme
        .split("## Quick start: egress sidecar for any language")
        .nth(1)
        .unwrap();
    let toml = section
        .split("```toml\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let config = SidecarConfig::parse(toml).unwrap();
    config.check().unwrap();
    assert_eq!(config.routes.len(), 2);
}

/// A caller with many distinct tokens cannot make the sidecar flood the token server: at most
/// `MAX_EXCHANGES_IN_FLIGHT` exchanges at once per route; the rest get 503 `busy` at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sc_02_a_flood_of_distinct_caller_tokens_is_capped() {
    let idp = idp().await;
    let api = idp.start_api().await;
    let server = start(&config(
        idp.issuer(),
        "",
        &format!(
            "[[routes]]\npath = \"/billing\"\nupstream = \"{}\"\ntoken = \"exchange\"\nclient = \"worker\"",
            api.url("/")
        ),
    ));
    // Slow answers: every exchange is still in flight while the flood arrives.
    idp.set_latency(std::time::Duration::from_millis(1500));
    let base = format!("http://{}", server.local_addr());
    let http = reqwest::Client::new();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let mut claims = serde_json::Map::new();
            claims.insert("sub".into(), format!("mallory-{i}").into());
            claims.insert("exp".into(), exp.into());
            let token = idp.sign_jwt(&claims, None);
            let (http, url) = (http.clone(), format!("{base}/billing/x"));
            tokio::spawn(async move {
                let response = http.get(url).bearer_auth(token).send().await.unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                (status, body["error"].as_str().map(str::to_owned))
            })
        })
        .collect();
    let mut busy = 0;
    for call in calls {
        match call.await.unwrap() {
            (503, Some(code)) if code == "busy" => busy += 1,
            (401, Some(code)) if code == "token_refused" => {}
            (200, _) => {}
            other => panic!("{other:?}"),
        }
    }
    let exchanges = idp.token_requests(EXCHANGE);
    assert!(
        exchanges <= tokenkeeper_sidecar::MAX_EXCHANGES_IN_FLIGHT as u64,
        "{exchanges} exchanges at once"
    );
    assert!(
        busy >= 200 - tokenkeeper_sidecar::MAX_EXCHANGES_IN_FLIGHT,
        "{busy} busy"
    );
    server.shutdown();
    server.stopped().await;
}

/// An upstream that rejects the first request it gets (401, `invalid_token`) and answers the
/// others with what they carried: `authorization`, the body, and its request count.
async fn rejecting_upstream() -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let header = |name: &str| {
                        head.lines()
                            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
                    };
                    let length = header("content-length").map_or(0, |v| v.parse().unwrap());
                    while buf.len() < end + 4 + length {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).to_string();
                    buf.drain(..end + 4 + length);
                    let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    let answer = if n == 1 {
                        "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer error=\"invalid_token\"\r\ncontent-length: 0\r\n\r\n".to_owned()
                    } else {
                        let json = serde_json::json!({
                            "n": n,
                            "authorization": header("authorization"),
                            "body": body,
                        })
                        .to_string();
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{json}",
                            json.len()
                        )
                    };
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// SC-01: a token the upstream rejects (401 `invalid_token`) is renewed once and the request —
/// its body included — sent again with the new one; the caller sees only the answer to that.
/// (The engine's upstream client hands the request back with the 401: no copy is made up front.)
#[tokio::test]
async fn sc_01_a_rejected_token_is_renewed_once_and_the_request_sent_again() {
    let idp = idp().await;
    let upstream = rejecting_upstream().await;
    let server = start(&config(
        idp.issuer(),
        "",
        &format!(
            "[[routes]]\npath = \"/orders\"\nupstream = \"{upstream}\"\ntoken = \"client\"\nclient = \"worker\""
        ),
    ));
    let base = format!("http://{}", server.local_addr());
    let http = reqwest::Client::new();
    let (status, first) = json(
        http.post(format!("{base}/orders/1"))
            .body("{\"n\":1}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["n"], 2, "one retry");
    assert_eq!(first["body"], "{\"n\":1}", "the body sent again");
    assert_eq!(idp.token_requests("client_credentials"), 2, "one renewal");
    // The renewed token is the one kept: the next call is not rejected, and carries it.
    let (status, second) = json(http.get(format!("{base}/orders/2")).send().await.unwrap()).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["n"], 3);
    assert_eq!(second["authorization"], first["authorization"]);
    assert_eq!(idp.token_requests("client_credentials"), 2);
    server.shutdown();
    server.stopped().await;
}
