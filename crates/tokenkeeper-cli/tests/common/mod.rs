//! What the CLI's process tests share: the binary, a child killed with the test, Redis keys.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::process::{Child, Command};

/// The `tokenkeeper` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tokenkeeper");

/// A child process, killed when the test ends (passing or not).
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Redis the tests use (`REDIS_URL`, default the local one).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The keys under `prefix` (`redis-cli --scan`).
pub fn redis_keys(prefix: &str) -> Vec<String> {
    let output = Command::new("redis-cli")
        .args([
            "-u",
            &redis_url(),
            "--scan",
            "--pattern",
            &format!("{prefix}*"),
        ])
        .output()
        .unwrap();
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Deletes `keys`.
pub fn redis_delete(keys: &[String]) {
    for key in keys {
        let _ = Command::new("redis-cli")
            .args(["-u", &redis_url(), "DEL", key])
            .output();
    }
}

/// Sends signal `name` (`HUP`, `TERM`) to `child`.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
