//! When a host reloads its configuration file (the BFF's BF-18, the sidecar's): on SIGHUP, and
//! when the file changes — its modification time, size or content, looked at every 2 s.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// SIGHUP, listened for now: call it before announcing that the host runs, so that a SIGHUP
/// sent after that never meets the default action (exit).
#[cfg(unix)]
pub(crate) type Hangup = Option<tokio::signal::unix::Signal>;
/// No SIGHUP here.
#[cfg(not(unix))]
pub(crate) type Hangup = Option<()>;

/// Starts listening for SIGHUP.
pub(crate) fn hangup() -> Hangup {
    #[cfg(unix)]
    return tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    #[cfg(not(unix))]
    None
}

/// What the file is now: its modification time, length and a hash of its bytes.
fn stamp(path: &Path) -> Option<(Option<std::time::SystemTime>, u64, u64)> {
    use std::hash::{Hash as _, Hasher as _};
    let meta = std::fs::metadata(path).ok()?;
    let text = std::fs::read(path).ok()?;
    let mut hash = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hash);
    Some((meta.modified().ok(), meta.len(), hash.finish()))
}

/// Calls `apply` on each SIGHUP and each change of the file at `path`, until the task is
/// aborted. `apply` reports its own outcome (logs, metrics).
#[cfg_attr(not(unix), allow(unused_mut, unused_variables))]
pub(crate) async fn watch(path: PathBuf, mut hangup: Hangup, mut apply: impl FnMut()) {
    let mut seen = stamp(&path);
    let mut ticks = tokio::time::interval(Duration::from_secs(2));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await.is_some(),
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<bool>();
        let forced = tokio::select! {
            _ = signalled => true,
            _ = ticks.tick() => false,
        };
        let now = stamp(&path);
        if !forced && now == seen {
            continue;
        }
        seen = now;
        apply();
    }
}
