//! Warnings while the session store is unavailable: one per 5 s with how many were held back,
//! not one per request (a failover under load would otherwise write thousands of lines a
//! second).

use std::sync::atomic::{AtomicU64, Ordering};

/// When the last warning was logged (ms since the epoch).
static LAST: AtomicU64 = AtomicU64::new(0);
/// Warnings held back since.
static HELD_BACK: AtomicU64 = AtomicU64::new(0);

/// How often the warning is logged at most (ms).
const EVERY_MS: u64 = 5_000;

/// Logs that the session store did not answer (`during`: what the BFF was doing), at most once
/// per 5 s.
pub(crate) fn warn(error: &dyn std::fmt::Display, during: &'static str) {
    let now = tokenkeeper::Timestamp::system_now().as_millis();
    let last = LAST.load(Ordering::Relaxed);
    if now.saturating_sub(last) < EVERY_MS
        || LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        HELD_BACK.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let held_back = HELD_BACK.swap(0, Ordering::Relaxed);
    tracing::warn!(%error, during, held_back, "session store unavailable");
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_thousand_failures_make_one_warning() {
        let logs = tokenkeeper_testing::LogBuffer::default();
        let _guard = logs.install(tracing::Level::WARN);
        for _ in 0..1000 {
            super::warn(&"Redis is down", "api call");
        }
        let text = logs.text();
        assert_eq!(
            text.matches("session store unavailable").count(),
            1,
            "{text}"
        );
    }
}
