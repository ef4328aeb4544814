//! The `tokenkeeper token` and `tokenkeeper dev-idp` commands, run as processes.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use tokenkeeper_testing::{ClientAuthMethod, TestClient, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_tokenkeeper");

/// Runs the binary off the runtime's threads (the test server keeps serving meanwhile).
async fn tokenkeeper(args: Vec<String>, secret: Option<&str>) -> std::process::Output {
    let secret = secret.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(BIN);
        command.args(args).env_remove("TOKENKEEPER_CLIENT_SECRET");
        if let Some(secret) = secret {
            command.env("TOKENKEEPER_CLIENT_SECRET", secret);
        }
        command.output().unwrap()
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_prints_a_token_the_server_issued() {
    let server = TestServer::builder()
        .client(TestClient::new("svc", "svc-secret"))
        .client(TestClient::new("poster", "post-secret").auth_method(ClientAuthMethod::Post))
        .start()
        .await;

    // By discovery, bare token on stdout.
    let out = tokenkeeper(
        args(&[
            "token",
            "--issuer",
            server.issuer(),
            "--client-id",
            "svc",
            "--scope",
            "api",
        ]),
        Some("svc-secret"),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let claims = server.verify_access_token(&token).unwrap();
    assert_eq!(claims["client_id"], "svc");

    // client_secret_post, JSON.
    let endpoint = server.token_endpoint();
    let out = tokenkeeper(
        args(&[
            "token",
            "--token-endpoint",
            &endpoint,
            "--client-id",
            "poster",
            "--auth",
            "post",
            "--json",
        ]),
        Some("post-secret"),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["token_type"], "Bearer");
    assert!(server
        .verify_access_token(json["access_token"].as_str().unwrap())
        .is_ok());
    assert!(json["expires_at"].as_u64().unwrap() > 1_700_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_fails_clearly_without_leaking_the_secret() {
    let server = TestServer::builder()
        .client(TestClient::new("svc", "svc-secret"))
        .start()
        .await;
    let endpoint = server.token_endpoint();
    let call = [
        "token",
        "--token-endpoint",
        endpoint.as_str(),
        "--client-id",
        "svc",
    ];

    let out = tokenkeeper(args(&call), Some("wrong-s3cret")).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("invalid_client"), "{stderr}");
    assert!(!stderr.contains("wrong-s3cret"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let out = tokenkeeper(args(&call), None).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("TOKENKEEPER_CLIENT_SECRET"), "{stderr}");

    let out = tokenkeeper(args(&["token", "--client-id", "svc"]), Some("x")).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "usage error: --issuer or --token-endpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_idp_serves_discovery_and_tokens_until_stopped() {
    let mut child = Command::new(BIN)
        .args([
            "dev-idp",
            "--bind",
            "127.0.0.1:0",
            "--client",
            "svc:dev-secret",
            "--client",
            "web:web-secret:http://127.0.0.1:1/cb",
            "--token-lifetime",
            "120",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // The reader is kept (not dropped after the first line) until the child is stopped: the
    // rest of the banner must not meet a closed pipe.
    let (issuer, _stdout) = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        reader.read_line(&mut line).unwrap();
        (
            line.trim().strip_prefix("issuer: ").unwrap().to_owned(),
            reader,
        )
    })
    .await
    .unwrap();

    let tokens = tokenkeeper::ClientCredentialsTokenManager::builder()
        .client(
            "api",
            tokenkeeper::ClientConfig::from_issuer(issuer.as_str(), "svc", "dev-secret"),
        )
        .build()
        .unwrap();
    let token = tokens
        .get_token("api", &tokenkeeper::TokenRequestParams::default())
        .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let token = token.unwrap();
    let lifetime = token.expires_at().as_millis() - token.issued_at().as_millis();
    assert!(
        lifetime <= 120_000,
        "the configured lifetime: {lifetime} ms"
    );

    // A bad --client is a usage error, not a panic.
    let out = Command::new(BIN)
        .args(["dev-idp", "--bind", "127.0.0.1:0", "--client", "no-secret"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ID:SECRET"));
}

/// `dpop keygen` writes a key (not over an existing file), `dpop proof` prints a proof signed
/// with it, and `token --client-key` authenticates with private_key_jwt using the same key;
/// `--decode` prints the token's claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_keygen_proof_and_private_key_jwt_token() {
    let dir = std::env::temp_dir().join(format!("tk-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key.pem");
    let _ = std::fs::remove_file(&key);
    let key_arg = key.to_str().unwrap();

    let out = tokenkeeper(args(&["dpop", "keygen", "--out", key_arg]), None).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["alg"], "ES256");
    assert_eq!(printed["jkt"].as_str().unwrap().len(), 43);
    assert!(std::fs::read_to_string(&key)
        .unwrap()
        .contains("BEGIN PRIVATE KEY"));
    let again = tokenkeeper(args(&["dpop", "keygen", "--out", key_arg]), None).await;
    assert!(
        !again.status.success(),
        "an existing key file is not overwritten"
    );

    let out = tokenkeeper(
        args(&[
            "dpop",
            "proof",
            "--key",
            key_arg,
            "--htm",
            "get",
            "--htu",
            "https://API.example.com/items?page=2",
            "--token",
            "tok",
        ]),
        None,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let proof = String::from_utf8(out.stdout).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            proof.trim().split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["htm"], "GET");
    assert_eq!(claims["htu"], "https://api.example.com/items");
    assert!(claims["ath"].is_string());

    // The same key as a private_key_jwt client key.
    let mut jwk = printed["jwk"].clone();
    jwk["alg"] = "ES256".into();
    let server = TestServer::builder()
        .client(TestClient::new("keyed", "unused").private_key_jwt(jwk))
        .start()
        .await;
    let out = tokenkeeper(
        args(&[
            "token",
            "--token-endpoint",
            &server.token_endpoint(),
            "--client-id",
            "keyed",
            "--client-key",
            key_arg,
            "--decode",
        ]),
        None,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(decoded["client_id"], "keyed");
    assert_eq!(server.client_assertions(), 1);

    // --dpop-key: a DPoP-bound token (cnf.jkt is the key's thumbprint), and `--json` says DPoP.
    let out = tokenkeeper(
        args(&[
            "token",
            "--token-endpoint",
            &server.token_endpoint(),
            "--client-id",
            "keyed",
            "--client-key",
            key_arg,
            "--dpop-key",
            key_arg,
            "--decode",
        ]),
        None,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(decoded["cnf"]["jkt"], printed["jkt"]);
    assert_eq!(server.dpop_proofs_accepted(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's first command, checked: `tokenkeeper bff --dev --check` runs the SPA's whole
/// journey (login, user, API, events, WebSocket, logout) headlessly and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bff_dev_check_runs_the_journey_and_exits_0() {
    let out = tokenkeeper(args(&["bff", "--dev", "--check"]), None).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    assert!(stdout.contains("WebSocket echo"), "{stdout}");
}

/// `tokenkeeper bff --config FILE --check-config` validates without starting: errors name the
/// key and the line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bff_check_config_names_the_key_and_line() {
    let dir = std::env::temp_dir().join(format!("tk-cli-bff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = "[bff]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://app.example.com\"\n\n[oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"spa\"\nclient_secret = \"s\"\n\n[[routes]]\npath = \"/api\"\nupstream = \"https://api.internal\"\n";
    let file = dir.join("good.toml");
    std::fs::write(&file, good).unwrap();
    let out = tokenkeeper(
        args(&["bff", "--config", file.to_str().unwrap(), "--check-config"]),
        None,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        good.replace("https://api.internal", "ftp://api.internal"),
    )
    .unwrap();
    let out = tokenkeeper(
        args(&["bff", "--config", bad.to_str().unwrap(), "--check-config"]),
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("routes[0].upstream") && stderr.contains("line 12"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// UX-04: `token --json` reports the token's real expiry (`expires_at`: issued + `expires_in`,
/// the JWT's own `exp`), not the time a cache would refresh it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ux_04_token_json_reports_the_real_expiry() {
    let server = TestServer::builder()
        .client(TestClient::new("svc", "svc-secret"))
        .start()
        .await;
    let out = tokenkeeper(
        args(&[
            "token",
            "--token-endpoint",
            &server.token_endpoint(),
            "--client-id",
            "svc",
            "--json",
        ]),
        Some("svc-secret"),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let claims = server
        .verify_access_token(json["access_token"].as_str().unwrap())
        .unwrap();
    let exp = claims["exp"].as_u64().unwrap();
    let reported = json["expires_at"].as_u64().unwrap();
    assert!(
        reported.abs_diff(exp) <= 1,
        "expires_at {reported}, exp {exp}"
    );
    assert_eq!(
        json["expires_in"].as_u64(),
        Some(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap())
    );
}

/// UX-03: an unreachable token endpoint is named in the error; the failure is printed once;
/// no colour codes when stderr is not a terminal, nor with `NO_COLOR`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ux_03_errors_name_the_url_once_without_colour() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/oauth/token", closed.local_addr().unwrap());
    drop(closed);
    for no_color in [false, true] {
        let endpoint = url.clone();
        let out = tokio::task::spawn_blocking(move || {
            let mut command = Command::new(BIN);
            command
                .args(["token", "--token-endpoint", &endpoint, "--client-id", "svc"])
                .env("TOKENKEEPER_CLIENT_SECRET", "s3cret-value")
                .env_remove("RUST_LOG");
            if no_color {
                command.env("NO_COLOR", "1");
            }
            command.output().unwrap()
        })
        .await
        .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.matches(url.as_str()).count(),
            1,
            "the URL once:\n{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "one line:\n{stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(!stderr.contains('\u{1b}'), "colour codes:\n{stderr}");
        assert!(!stderr.contains("s3cret-value"));
    }
    // Long-running commands' logs have no colour either when stderr is a pipe.
    let out = Command::new(BIN)
        .args(["bff", "--config", "/nonexistent/bff.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
    assert!(stderr.contains("/nonexistent/bff.toml"), "{stderr}");
}

/// UX-05: the README's command-line lines run as written against the README's `dev-idp` —
/// the same text, on a free port instead of 8080: the key, the key-based client
/// (`--client keyed:jwk=client-key.pem`), tokens for curl, private_key_jwt, DPoP.
#[test]
fn ux_05_the_readme_command_lines_run_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme
        .split("These lines run as they are")
        .nth(1)
        .expect("the README's command-line section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap();
    let port = tokenkeeper_testing::free_port();
    let block = block.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    let (before, rest) = block
        .split_once("tokenkeeper dev-idp ")
        .expect("the dev-idp line");
    let (dev_idp, after) = rest.split_once('\n').unwrap();
    let dev_idp = dev_idp.trim_end().trim_end_matches('&').trim_end();

    let dir = std::env::temp_dir().join(format!("tk-readme-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin_dir = std::path::Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let bash = |script: &str| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("set -euo pipefail\n{script}"))
            .current_dir(&dir)
            .env("PATH", &path)
            .env_remove("TOKENKEEPER_CLIENT_SECRET")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}\n--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    bash(before);
    let mut server = Command::new("bash");
    server
        .arg("-c")
        .arg(format!("exec tokenkeeper dev-idp {dev_idp}"))
        .current_dir(&dir)
        .env("PATH", &path);
    let (_server, _) = tokenkeeper_testing::start_and_wait_for(server, "issuer:");
    let printed = bash(&format!(
        "{after}\necho \"TOKEN=$TOKEN\"\necho \"PROOF=$PROOF\""
    ));
    assert!(printed.contains("\"active\":true"), "{printed}");
    assert!(printed.contains("\"client_id\": \"keyed\""), "{printed}");
    assert!(printed.contains("\"token_type\": \"Bearer\""), "{printed}");
    assert!(
        printed.contains("\"sub\": \"alice\""),
        "the device login's token: {printed}"
    );
    let proof = printed
        .lines()
        .find_map(|l| l.strip_prefix("PROOF="))
        .unwrap();
    assert_eq!(proof.split('.').count(), 3, "a DPoP proof: {proof}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// UX-07 and SEC-20: `bff --dev` lets every port be chosen — the BFF, the identity provider
/// and the sample API — and refuses to listen anywhere but loopback.
#[test]
fn ux_07_bff_dev_ports_are_chosen_and_loopback_only() {
    let free = || std::net::SocketAddr::from(([127, 0, 0, 1], tokenkeeper_testing::free_port()));
    // The journey on chosen ports, then the banner naming each of them.
    let (bff, idp, api) = (free(), free(), free());
    let out = Command::new(BIN)
        .args([
            "bff",
            "--dev",
            "--check",
            "--listen",
            &bff.to_string(),
            "--idp-listen",
            &idp.to_string(),
            "--api-listen",
            &api.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut command = Command::new(BIN);
    command.args([
        "bff",
        "--dev",
        "--listen",
        &bff.to_string(),
        "--idp-listen",
        &idp.to_string(),
        "--api-listen",
        &api.to_string(),
    ]);
    command.stdout(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        banner.push_str(&line);
        banner.push('\n');
        if line.contains("sample API") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(banner.contains(&format!("open http://{bff}")), "{banner}");
    assert!(banner.contains(&format!("http://{idp}")), "{banner}");
    assert!(banner.contains(&format!("http://{api}")), "{banner}");

    for flag in ["--listen", "--idp-listen", "--api-listen"] {
        let out = Command::new(BIN)
            .args(["bff", "--dev", flag, "0.0.0.0:0"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{flag}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(flag) && stderr.contains("loopback"),
            "{stderr}"
        );
    }
}
