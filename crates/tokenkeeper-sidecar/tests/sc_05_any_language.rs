//! SC-05: services in any language call through the sidecar with nothing but their standard
//! HTTP client — Python (standard library), Node (`fetch`) and curl — and the API behind it
//! verifies the token: a Bearer token on one route, a DPoP-bound token with its proof (and the
//! API's nonce) on the other. The callers never hold a token.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use serde_json::Value;
use tokenkeeper_proxy::server::{Bound, ServerOptions};
use tokenkeeper_sidecar::config::SidecarConfig;
use tokenkeeper_sidecar::Sidecar;
use tokenkeeper_testing::{TestClient, TestServer};

fn env(name: &str) -> Option<String> {
    (name == "WORKER_SECRET").then(|| "worker-secret".to_owned())
}

/// Runs `program args…` and returns its standard output; fails the test, saying what to
/// install, when the program is missing.
async fn run(program: &str, args: &[&str]) -> String {
    let output = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("{program} is needed for SC-05 (scripts/test installs it): {e}")
        });
    assert!(
        output.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn sc_05_python_node_and_curl_call_apis_through_the_sidecar() {
    let idp = TestServer::builder()
        .client(TestClient::new("worker", "worker-secret"))
        .client(TestClient::new("bound", "bound-secret").require_dpop())
        .start()
        .await;
    let api = idp.start_api().await;
    api.set_nonce_required(true);
    let toml = format!(
        r#"
[sidecar]
listen = "127.0.0.1:0"

[[clients]]
name = "worker"
issuer = "{issuer}"
client_id = "worker"
client_secret_env = "WORKER_SECRET"

[[clients]]
name = "bound"
issuer = "{issuer}"
client_id = "bound"
client_secret_env = "BOUND_SECRET"
dpop = true
require_dpop = true

[[routes]]
path = "/orders"
upstream = "{api}"
token = "client"
client = "worker"

[[routes]]
path = "/payments"
upstream = "{api}"
token = "client"
client = "bound"
"#,
        issuer = idp.issuer(),
        api = api.url("/")
    );
    let env = |name: &str| match name {
        "BOUND_SECRET" => Some("bound-secret".to_owned()),
        other => env(other),
    };
    let sidecar = Sidecar::build(&SidecarConfig::parse(&toml).unwrap(), &env).unwrap();
    let options = ServerOptions {
        workers: 2,
        ..ServerOptions::default()
    };
    let server = Bound::bind_to(sidecar.listen(), options.workers)
        .unwrap()
        .serve(Arc::new(sidecar.handler()), &options)
        .unwrap();
    let base = format!("http://{}", server.local_addr());
    for (route, scheme, sub) in [
        ("orders", "Bearer", "worker"),
        ("payments", "DPoP", "bound"),
    ] {
        let url = format!("{base}/{route}/items?id=7");
        let python = format!(
            "import urllib.request\n\
             req = urllib.request.Request({url:?}, data=b'{{\"n\":1}}', headers={{'content-type': 'application/json'}})\n\
             print(urllib.request.urlopen(req).read().decode())"
        );
        let node = format!(
            "fetch({url:?}, {{method: 'POST', body: JSON.stringify({{n: 1}}), headers: {{'content-type': 'application/json'}}}})\
             .then(r => {{ if (!r.ok) throw new Error(r.status); return r.text(); }})\
             .then(t => console.log(t))\
             .catch(e => {{ console.error(e); process.exit(1); }})"
        );
        for (language, output) in [
            ("python", run("python3", &["-c", &python]).await),
            ("node", run("node", &["-e", &node]).await),
            (
                "curl",
                run("curl", &["-sfS", "-X", "POST", "--data", "{\"n\":1}", &url]).await,
            ),
        ] {
            let seen: Value = serde_json::from_str(output.trim())
                .unwrap_or_else(|e| panic!("{language}: {e}: {output}"));
            assert_eq!(seen["scheme"], scheme, "{language}: {seen}");
            assert_eq!(seen["sub"], sub, "{language}: {seen}");
            assert_eq!(seen["path"], "/items", "{language}: {seen}");
            assert_eq!(seen["body_len"], 7, "{language}: {seen}");
        }
    }
    assert!(
        api.proofs_accepted() >= 3,
        "the DPoP route's proofs were checked"
    );
    // One token per client for all nine calls.
    assert_eq!(idp.token_requests("client_credentials"), 2);
    server.shutdown();
    server.stopped().await;
}
