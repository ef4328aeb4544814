//! BF-23: with `[telemetry]`, `tokenkeeper bff` exports a span per proxied request over
//! OTLP/HTTP to a collector (here an in-process receiver), with the frontend, route, upstream
//! and status; the upstream gets the span's W3C `traceparent`; a trusted proxy's `traceparent`
//! is continued, anyone else's is not; and what is left is flushed at SIGTERM.
#![cfg(feature = "otel")]
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use common::{free_port, logged_in, signal, start_bff};
use tokenkeeper_testing::{TestClient, TestServer};

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_23_spans_reach_the_collector_and_traceparent_the_upstream() {
    // The collector: every OTLP/HTTP JSON body it receives.
    let exported: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let collector = {
        let exported = exported.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let exported = exported.clone();
                async move {
                    if let Ok(json) = serde_json::from_slice(&body) {
                        exported.lock().unwrap().push(json);
                    }
                    "{}"
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    };
    // The upstream: the traceparent each request carried.
    let traceparents: Arc<Mutex<Vec<String>>> = Arc::default();
    let api = {
        let traceparents = traceparents.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let traceparents = traceparents.clone();
            async move {
                let value = headers
                    .get_all("traceparent")
                    .iter()
                    .map(|v| v.to_str().unwrap_or_default().to_owned())
                    .collect::<Vec<_>>()
                    .join(" | ");
                traceparents.lock().unwrap().push(value);
                "ok"
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    };
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let idp = TestServer::builder()
        .client(
            TestClient::new("spa", "spa-secret").redirect_uri(&format!("{public}/bff/callback")),
        )
        .start()
        .await;
    idp.set_login(Some("alice"));
    let config = format!(
        r#"
[bff]
listen = "127.0.0.1:{port}"
public_url = "{public}"
insecure_cookies = true
workers = 1
trusted_proxies = ["127.0.0.1/32"]

[telemetry]
otlp_traces_endpoint = "{collector}"
service_name = "bff-under-test"

[oidc]
issuer = "{issuer}"
client_id = "spa"
client_secret = "spa-secret"

[[routes]]
path = "/api"
upstream = "{api}"
"#,
        issuer = idp.issuer(),
    );
    let dir = std::env::temp_dir().join(format!("tk-bf23-{}", std::process::id()));
    let (mut child, _) = start_bff(&dir, &config, &[], Stdio::null());
    let (browser, cookie) = logged_in(&public).await;

    // From 127.0.0.1, a trusted proxy: its trace goes on.
    let caller = format!("00-{CALLER_TRACE}-00f067aa0ba902b7-01");
    let response = browser
        .get(format!("{public}/api/trusted"))
        .header("x-csrf", "1")
        .header("traceparent", &caller)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // From 127.0.0.2, not trusted: its traceparent is replaced by the BFF's own trace.
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let response = other
        .get(format!("http://127.0.0.1:{port}/api/untrusted"))
        .header("x-csrf", "1")
        .header("cookie", &cookie)
        .header("traceparent", &caller)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let seen = traceparents.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let parts = |value: &str| value.split('-').map(str::to_owned).collect::<Vec<_>>();
    let trusted = parts(&seen[0]);
    assert_eq!(trusted.len(), 4, "one traceparent: {seen:?}");
    assert_eq!(
        trusted[1], CALLER_TRACE,
        "the trusted caller's trace goes on"
    );
    assert_ne!(
        trusted[2], "00f067aa0ba902b7",
        "with the BFF's span as the parent"
    );
    let untrusted = parts(&seen[1]);
    assert_eq!(untrusted.len(), 4, "one traceparent, the BFF's: {seen:?}");
    assert_ne!(
        untrusted[1], CALLER_TRACE,
        "an untrusted caller cannot choose the trace"
    );

    // SIGTERM: the batch still held is flushed before the process exits.
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
    let exported = exported.lock().unwrap().clone();
    let spans: Vec<serde_json::Value> = exported
        .iter()
        .flat_map(|body| {
            body["resourceSpans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .inspect(|resource| {
            let service = resource["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == "service.name")
                .unwrap()["value"]["stringValue"]
                .clone();
            assert_eq!(service, "bff-under-test");
        })
        .flat_map(|resource| {
            resource["scopeSpans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|scope| scope["spans"].as_array().cloned().unwrap_or_default())
        .filter(|span| span["name"] == "tokenkeeper.proxy")
        .collect();
    assert_eq!(spans.len(), 2, "a span per proxied request: {exported:?}");
    let attribute = |span: &serde_json::Value, key: &str| {
        span["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == key)
            .map(|a| a["value"].clone())
            .unwrap_or_default()
    };
    let trusted_span = spans
        .iter()
        .find(|s| {
            s["traceId"]
                .as_str()
                .unwrap_or_default()
                .eq_ignore_ascii_case(CALLER_TRACE)
        })
        .expect("the trusted request's span is in the caller's trace");
    assert_eq!(
        trusted_span["parentSpanId"]
            .as_str()
            .unwrap()
            .to_ascii_lowercase(),
        "00f067aa0ba902b7"
    );
    assert!(trusted_span["spanId"]
        .as_str()
        .unwrap()
        .eq_ignore_ascii_case(&trusted[2]));
    for span in &spans {
        assert_eq!(attribute(span, "frontend")["stringValue"], "default");
        assert_eq!(attribute(span, "route")["stringValue"], "/api");
        assert_eq!(attribute(span, "upstream")["stringValue"], "127.0.0.1");
        // OTLP JSON writes 64-bit integers as strings.
        assert_eq!(attribute(span, "status")["intValue"], "200", "{span}");
        assert_eq!(span["kind"], 2, "SPAN_KIND_SERVER: {span}");
    }
}
