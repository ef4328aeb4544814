//! BF-22: `tokenkeeper bff`'s operations listener — `/healthz`, `/readyz` (the provider's
//! metadata and the session store in Redis), Prometheus `/metrics`, and the administration API
//! behind its bearer secret: list a user's sessions (never their cookies or tokens), end them
//! by `sid` and by `sub` (the refresh tokens revoked, the browsers logged out). A BFF whose
//! provider and Redis are both down is alive and not ready, and says which check fails.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::process::{Child, Stdio};

use common::{free_port, redis_delete, redis_keys, signal, start_bff};
use tokenkeeper_testing::{TestClient, TestServer};

const ADMIN: &str = "bf22-admin-secret-0123456789abcdef";

struct Bff {
    child: Child,
    public: String,
    ops: String,
    dir: std::path::PathBuf,
}

impl Drop for Bff {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `tokenkeeper bff` with an `[ops]` section (and the administration secret).
fn start(port: u16, issuer: &str, redis_url: &str, prefix: &str, api: &str) -> Bff {
    let ops_port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let dir = std::env::temp_dir().join(format!("tk-bf22-{port}-{}", std::process::id()));
    let config = format!(
        r#"
[bff]
listen = "127.0.0.1:{port}"
public_url = "{public}"
insecure_cookies = true
workers = 1

[oidc]
issuer = "{issuer}"
client_id = "spa"
client_secret_env = "SPA_SECRET"
scope = "openid offline_access"

[redis]
url = "{redis_url}"
prefix = "{prefix}"
encryption_key_env = "BFF_REDIS_KEY"

[[routes]]
path = "/api"
upstream = "{api}"
token = "user"

[ops]
listen = "127.0.0.1:{ops_port}"
admin_token_env = "BFF_ADMIN_TOKEN"
"#
    );
    let (child, line) = start_bff(
        &dir,
        &config,
        &[
            ("SPA_SECRET", "spa-secret"),
            (
                "BFF_REDIS_KEY",
                "YmZmLWhvc3QtdGVzdC1rZXktMzItYnl0ZXMtbG9uZyE=",
            ),
            ("BFF_ADMIN_TOKEN", ADMIN),
        ],
        Stdio::null(),
    );
    assert!(
        line.contains(&format!("operations on 127.0.0.1:{ops_port}")),
        "{line}"
    );
    Bff {
        child,
        public,
        ops: format!("http://127.0.0.1:{ops_port}"),
        dir,
    }
}

/// A browser logged in as the IdP's current user.
async fn logged_in(public: &str) -> reqwest::Client {
    common::logged_in(public).await.0
}

/// `/healthz`'s status, and `/readyz`'s status and answer.
async fn probe(http: &reqwest::Client, ops: &str) -> (u16, u16, serde_json::Value) {
    let health = http.get(format!("{ops}/healthz")).send().await.unwrap();
    let ready = http.get(format!("{ops}/readyz")).send().await.unwrap();
    let status = ready.status().as_u16();
    (
        health.status().as_u16(),
        status,
        ready.json().await.unwrap(),
    )
}

async fn api_status(browser: &reqwest::Client, public: &str) -> u16 {
    browser
        .get(format!("{public}/api/orders/1"))
        .header("x-csrf", "1")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_22_health_readiness_metrics_and_the_admin_api() {
    let redis_url = common::redis_url();
    let prefix = format!("tk-bf22-{}", std::process::id());
    let port = free_port();
    let idp = TestServer::builder()
        .client(
            TestClient::new("spa", "spa-secret")
                .redirect_uri(&format!("http://127.0.0.1:{port}/bff/callback")),
        )
        .start()
        .await;
    idp.set_login(Some("alice"));
    let api = idp.start_api().await;
    let bff = start(port, idp.issuer(), &redis_url, &prefix, &api.url("/"));
    let http = reqwest::Client::new();

    let (health, status, ready) = probe(&http, &bff.ops).await;
    assert_eq!((health, status), (200, 200), "{ready}");
    assert_eq!(ready["checks"]["discovery"], "ok", "{ready}");
    assert_eq!(ready["checks"]["session_store"], "ok", "{ready}");

    // Two logins of alice; both call the API.
    let (first, second) = (logged_in(&bff.public).await, logged_in(&bff.public).await);
    assert_eq!(api_status(&first, &bff.public).await, 200);
    assert_eq!(api_status(&second, &bff.public).await, 200);

    let metrics = http
        .get(format!("{}/metrics", bff.ops))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("tokenkeeper_bff_sessions_started_total"),
        "{text}"
    );

    // The administration API needs its secret.
    let sessions = format!("{}/admin/sessions?sub=alice", bff.ops);
    for auth in [None, Some("Bearer wrong"), Some(&*format!("Basic {ADMIN}"))] {
        let mut request = http.get(&sessions);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let refused = request.send().await.unwrap();
        assert_eq!(refused.status(), 401, "{auth:?}");
    }
    let admin = |method: reqwest::Method, url: String| {
        http.request(method, url)
            .header("authorization", format!("Bearer {ADMIN}"))
            .send()
    };
    let listed = admin(reqwest::Method::GET, sessions.clone()).await.unwrap();
    assert_eq!(listed.status(), 200);
    let body = listed.text().await.unwrap();
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let list = listed["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{listed}");
    assert!(list.iter().all(|s| s["sub"] == "alice"), "{listed}");
    // Only who and when: never a session's id (its cookie) or a token.
    for session in list {
        let mut keys: Vec<&str> = session
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["created_at", "expires_at", "frontend", "sid", "sub"],
            "{body}"
        );
    }
    for bad in [
        "",
        "?sub=",
        "?sub=alice&sub=bob",
        "?sub=alice&x=1",
        "?sub=a%0Ab",
    ] {
        let refused = admin(
            reqwest::Method::GET,
            format!("{}/admin/sessions{bad}", bff.ops),
        )
        .await
        .unwrap();
        assert_eq!(refused.status(), 400, "{bad}");
    }
    let wrong_method = admin(reqwest::Method::POST, sessions.clone())
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);

    // End one session by its sid: one browser is logged out, the other is not, and the ended
    // session's refresh token is revoked.
    let sid = list[0]["sid"].as_str().unwrap().to_owned();
    let revoked = idp.revocations();
    let ended = admin(
        reqwest::Method::DELETE,
        format!("{}/admin/sessions?sub=alice&sid={sid}", bff.ops),
    )
    .await
    .unwrap();
    assert_eq!(ended.status(), 200);
    let ended: serde_json::Value = ended.json().await.unwrap();
    assert_eq!(ended["ended"], 1);
    assert_eq!(idp.revocations(), revoked + 1);
    let statuses = [
        api_status(&first, &bff.public).await,
        api_status(&second, &bff.public).await,
    ];
    let mut sorted = statuses;
    sorted.sort_unstable();
    assert_eq!(sorted, [200, 401], "{statuses:?}");
    // Then every session of alice.
    let ended = admin(reqwest::Method::DELETE, sessions.clone())
        .await
        .unwrap();
    let ended: serde_json::Value = ended.json().await.unwrap();
    assert_eq!(ended["ended"], 1);
    assert_eq!(api_status(&first, &bff.public).await, 401);
    assert_eq!(api_status(&second, &bff.public).await, 401);
    let listed: serde_json::Value = admin(reqwest::Method::GET, sessions)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["sessions"], serde_json::json!([]));

    signal(&bff.child, "TERM");
    redis_delete(&redis_keys(&prefix));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_22_a_bff_without_its_provider_and_redis_is_alive_and_not_ready() {
    // Nothing listens on these ports.
    let (idp_port, redis_port) = (free_port(), free_port());
    let bff = start(
        free_port(),
        &format!("http://127.0.0.1:{idp_port}"),
        &format!("redis://127.0.0.1:{redis_port}"),
        "tk-bf22-down",
        "http://127.0.0.1:9/",
    );
    let http = reqwest::Client::new();
    let (health, status, ready) = probe(&http, &bff.ops).await;
    assert_eq!((health, status), (200, 503), "{ready}");
    assert_eq!(ready["status"], "not_ready", "{ready}");
    assert_ne!(ready["checks"]["discovery"], "ok", "{ready}");
    assert_ne!(ready["checks"]["session_store"], "ok", "{ready}");
    // Generic reasons: no address, no error text.
    let text = ready.to_string();
    assert!(!text.contains(&idp_port.to_string()), "{text}");
    assert!(!text.contains(&redis_port.to_string()), "{text}");
    // No administration without the secret, whatever the state.
    let refused = http
        .delete(format!("{}/admin/sessions?sub=alice", bff.ops))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
}
