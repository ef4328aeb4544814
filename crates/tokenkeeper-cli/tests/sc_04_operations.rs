//! SC-04: the sidecar's operations surface — `/healthz`, `/readyz` (its tokens can be had),
//! `/metrics` (Prometheus), a reload that applies a new route without dropping requests (and
//! refuses a broken file, keeping the running configuration), and SIGTERM that lets in-flight
//! requests finish (0 failed).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{signal, Killed, BIN};
use tokenkeeper_testing::{TestClient, TestServer};

fn write_config(path: &std::path::Path, issuer: &str, upstream: &str, extra_route: bool) {
    let mut text = format!(
        r#"
[sidecar]
listen = "127.0.0.1:0"
workers = 2

[ops]
listen = "127.0.0.1:0"

[[clients]]
name = "worker"
issuer = "{issuer}"
client_id = "worker"
client_secret_env = "WORKER_SECRET"

[[routes]]
path = "/a"
upstream = "{upstream}"
token = "client"
client = "worker"
"#
    );
    if extra_route {
        text.push_str(&format!(
            "\n[[routes]]\npath = \"/b\"\nupstream = \"{upstream}\"\ntoken = \"none\"\n"
        ));
    }
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sc_04_health_readiness_metrics_reload_and_graceful_shutdown() {
    let idp = TestServer::builder()
        .client(TestClient::new("worker", "worker-secret"))
        .start()
        .await;
    let received = Arc::new(AtomicUsize::new(0));
    let (release, released) = tokio::sync::watch::channel(false);
    let upstream = common::held_upstream(received.clone(), released).await;
    let dir = std::env::temp_dir().join(format!("tk-sc04-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("sidecar.toml");
    write_config(&config, idp.issuer(), &upstream, false);
    let mut child = Command::new(BIN)
        .args(["sidecar", "--config"])
        .arg(&config)
        .env("WORKER_SECRET", "worker-secret")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = lines.next().unwrap().unwrap();
    let child = Killed(child);
    let words: Vec<&str> = line.split_whitespace().collect();
    let base = format!("http://{}", words[3]);
    let ops = format!(
        "http://{}",
        line.rsplit("operations on ")
            .next()
            .unwrap()
            .trim_end_matches(')')
    );
    let http = reqwest::Client::new();
    let get = |url: String| {
        let http = http.clone();
        async move {
            let response = http.get(url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    assert_eq!(get(format!("{ops}/healthz")).await.0, 200);
    let (status, body) = get(format!("{ops}/readyz")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(format!("{base}/a/x")).await, (200, "ok".to_owned()));
    let (status, metrics) = get(format!("{ops}/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(
            "tokenkeeper_proxy_requests_total{host=\"sidecar\",route=\"/a\",status_class=\"2xx\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("tokenkeeper_proxy_request_duration_seconds"),
        "{metrics}"
    );
    // Not yet configured.
    assert_eq!(get(format!("{base}/b/x")).await.0, 404);

    // Reload: a slow request in flight on the old configuration; a new route after SIGHUP.
    let slow = tokio::spawn({
        let http = http.clone();
        let url = format!("{base}/a/slow");
        async move { http.get(url).send().await?.text().await }
    });
    while received.load(Ordering::SeqCst) < 1 {
        tokio::task::yield_now().await;
    }
    write_config(&config, idp.issuer(), &upstream, true);
    signal(&child.0, "HUP");
    let mut applied = false;
    for _ in 0..200 {
        if get(format!("{base}/b/x")).await.0 == 200 {
            applied = true;
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(applied, "the new route is served after SIGHUP");
    // A broken file is refused: the running routes stay, and it is counted.
    std::fs::write(&config, "[sidecar]\nlisten = 12\n").unwrap();
    signal(&child.0, "HUP");
    let mut refused = false;
    for _ in 0..200 {
        let (_, metrics) = get(format!("{ops}/metrics")).await;
        if metrics.contains("tokenkeeper_sidecar_config_reloads_total{outcome=\"refused\"}") {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(refused, "the refused reload is counted");
    assert_eq!(get(format!("{base}/b/x")).await.0, 200);

    // SIGTERM with requests in flight: they finish; then the sidecar is gone.
    let in_flight: Vec<_> = (0..10)
        .map(|_| {
            let http = http.clone();
            let url = format!("{base}/a/slow");
            tokio::spawn(async move { http.get(url).send().await?.text().await })
        })
        .collect();
    while received.load(Ordering::SeqCst) < 11 {
        tokio::task::yield_now().await;
    }
    signal(&child.0, "TERM");
    // Shutdown has begun once the listener is gone; only then does the upstream answer.
    let addr = words[3].to_owned();
    while tokio::net::TcpStream::connect(&addr).await.is_ok() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    release.send(true).unwrap();
    assert_eq!(
        slow.await.unwrap().unwrap(),
        "ok",
        "the request from before the reload"
    );
    for request in in_flight {
        assert_eq!(request.await.unwrap().unwrap(), "ok");
    }
    let mut child = child;
    let status = tokio::task::spawn_blocking(move || {
        let status = child.0.wait();
        (status, child)
    })
    .await
    .unwrap()
    .0
    .unwrap();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
