//! BF-18: `tokenkeeper bff` reloads its configuration without a restart. SIGHUP applies a
//! file in which a frontend is removed and another added: the unchanged frontend's session
//! survives, a request in flight on the removed one finishes, the new one answers. A file that
//! does not validate — seen by the file watch, no signal — is refused: logged with its key and
//! line, counted, and the running configuration stays.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::Read as _;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, held_upstream, signal, start_bff};
use tokenkeeper_testing::{TestClient, TestServer};

/// A frontend's part of the file.
fn frontend(name: &str, public: &str, issuer: &str, api: &str) -> String {
    format!(
        r#"
[[frontends]]
name = "{name}"
public_url = "{public}"

[frontends.oidc]
issuer = "{issuer}"
client_id = "{name}"
client_secret = "{name}-secret"

[[frontends.routes]]
path = "/api"
upstream = "{api}"
"#
    )
}

/// Writes `text` to `path` whole (a rename): the file watch never reads half a file.
fn replace_file(path: &std::path::Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(next, path).unwrap();
}

/// Polls `check` until it holds (10 s at most).
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_18_sighup_and_the_file_watch_reload_frontends_and_refuse_a_bad_file() {
    let port = free_port();
    let ops_port = free_port();
    let bff: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let public = |host: &str| format!("http://{host}:{port}");
    let (a, b, c) = (
        public("127.0.0.1"),
        public("b.localhost"),
        public("c.localhost"),
    );
    let mut builder = TestServer::builder();
    for (name, url) in [("a", &a), ("b", &b), ("c", &c)] {
        builder = builder.client(
            TestClient::new(name, &format!("{name}-secret"))
                .redirect_uri(&format!("{url}/bff/callback")),
        );
    }
    let idp = builder.start().await;
    idp.set_login(Some("alice"));
    let issuer = idp.issuer();
    let received = Arc::new(AtomicUsize::new(0));
    let (release, released) = tokio::sync::watch::channel(false);
    let api = held_upstream(received.clone(), released).await;
    let head = format!(
        "[bff]\nlisten = \"127.0.0.1:{port}\"\ninsecure_cookies = true\nworkers = 1\n\n[ops]\nlisten = \"127.0.0.1:{ops_port}\"\n"
    );
    let first = format!(
        "{head}{}{}",
        frontend("a", &a, issuer, &api),
        frontend("b", &b, issuer, &api)
    );
    let dir = std::env::temp_dir().join(format!("tk-bf18-{}", std::process::id()));
    let (mut child, _) = start_bff(&dir, &first, &[], Stdio::piped());
    let path = dir.join("bff.toml");

    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .resolve("b.localhost", bff)
        .resolve("c.localhost", bff)
        .build()
        .unwrap();
    let status = |url: String| {
        let browser = browser.clone();
        async move {
            browser
                .get(url)
                .header("x-csrf", "1")
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    for url in [&a, &b] {
        let login = browser
            .get(format!("{url}/bff/login?returnUrl=/"))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), 200, "{url}");
        assert_eq!(status(format!("{url}/bff/user")).await, 200, "{url}");
    }
    assert_eq!(
        status(format!("{c}/bff/user")).await,
        404,
        "no frontend c yet"
    );

    // A request in flight on b, which the next file removes.
    let held = tokio::spawn(status(format!("{b}/api/slow")));
    until("the held request reaches the upstream", || async {
        received.load(Ordering::SeqCst) == 1
    })
    .await;

    // SIGHUP: a unchanged, b removed, c added.
    let second = format!(
        "{head}{}{}",
        frontend("a", &a, issuer, &api),
        frontend("c", &c, issuer, &api)
    );
    replace_file(&path, &second);
    signal(&child, "HUP");
    until("c answers and b is gone", || async {
        status(format!("{c}/bff/user")).await == 401 && status(format!("{b}/bff/user")).await == 404
    })
    .await;
    // The request in flight on b finishes, on the configuration it began with.
    release.send(true).unwrap();
    assert_eq!(held.await.unwrap(), 200);
    // a's session survived; a and c are apart.
    assert_eq!(status(format!("{a}/bff/user")).await, 200);
    assert_eq!(status(format!("{a}/api/x")).await, 200);
    assert_eq!(status(format!("{c}/api/x")).await, 401);

    // A file that does not validate, seen by the file watch: refused, counted, the old stays.
    let last = second.rfind("upstream = ").unwrap();
    let end = last + second[last..].find('\n').unwrap();
    let bad = format!("{}upstream = \"nope\"{}", &second[..last], &second[end..]);
    let bad_line = bad[..bad.rfind("upstream = \"nope\"").unwrap()]
        .matches('\n')
        .count()
        + 1;
    replace_file(&path, &bad);
    let metrics = || async {
        reqwest::get(format!("http://127.0.0.1:{ops_port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    until("the refusal is counted", || async {
        metrics()
            .await
            .contains("tokenkeeper_bff_config_reloads_total{outcome=\"refused\"} 1")
    })
    .await;
    assert_eq!(status(format!("{a}/bff/user")).await, 200);
    assert_eq!(status(format!("{c}/bff/user")).await, 401);
    assert!(metrics()
        .await
        .contains("tokenkeeper_bff_config_reloads_total{outcome=\"applied\"}"));

    signal(&child, "TERM");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
    // The second frontend's first route's upstream: where the file went wrong.
    let expected = format!("`frontends[1].routes[0].upstream` (line {bad_line})");
    assert!(stderr.contains(&expected), "{expected} not in: {stderr}");
    assert!(stderr.contains("configuration refused"), "{stderr}");
    assert!(!stderr.contains("a-secret"), "{stderr}");
}
