//! PR-05: `tokenkeeper login --device` against the test server, as a process: it prints where
//! to go and the code, polls until the user approves, and writes a `0600` tokens file that
//! `tokenkeeper token --tokens-file` prints from and refreshes — once, for two commands at
//! once, with rotating refresh tokens.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use tokenkeeper_testing::{TestClient, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_tokenkeeper");

fn token(path: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .args(["token", "--tokens-file"])
        .arg(path)
        .env_remove("TOKENKEEPER_CLIENT_SECRET")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pr_05_login_device_writes_a_private_tokens_file_that_token_refreshes() {
    let server = TestServer::builder()
        .client(TestClient::new("cli", "").public())
        .start()
        .await;
    server.set_device_timing(1, 600);
    server.set_expires_in(Some(30)); // within the minute `token` refreshes ahead
    server.set_rotate_refresh_tokens(true);
    let dir = std::env::temp_dir().join(format!("tk-device-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokens.json");

    let mut login = Command::new(BIN)
        .args([
            "login",
            "--device",
            "--issuer",
            server.issuer(),
            "--client-id",
            "cli",
        ])
        .arg("--tokens-file")
        .arg(&path)
        .env_remove("TOKENKEEPER_CLIENT_SECRET")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = login.stderr.take().unwrap();
    let code = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines();
        let first = lines.next().unwrap().unwrap();
        std::thread::spawn(move || for _ in lines {});
        first
    })
    .await
    .unwrap();
    assert!(
        code.contains(&format!("{}/device", server.issuer())),
        "{code}"
    );
    let user_code = code.rsplit(' ').next().unwrap().to_owned();
    assert!(server.approve_device(&user_code, "alice"), "{code}");
    let out = tokio::task::spawn_blocking(move || login.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty(), "login prints to stderr only");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "readable by its owner only");
    }
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(written["refresh_token"].is_string());

    // The token expires within the minute: two `token` commands at once make one refresh.
    server.set_expires_in(Some(3600));
    let (a, b) = {
        let (p1, p2) = (path.clone(), path.clone());
        let a = tokio::task::spawn_blocking(move || token(&p1));
        let b = tokio::task::spawn_blocking(move || token(&p2));
        (a.await.unwrap(), b.await.unwrap())
    };
    for out in [&a, &b] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(a.stdout, b.stdout, "both print the one new token");
    let access = String::from_utf8(a.stdout).unwrap();
    let claims = server.verify_access_token(access.trim()).unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(server.token_requests("refresh_token"), 1);
    assert_eq!(server.refused_refreshes(), 0);
    // A file others can read is refused, naming the fix.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = token(&path);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
