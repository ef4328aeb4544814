//! Outage tracking: one warning (and one count) per outage, and a short pause between attempts
//! while Redis is down so that requests do not each wait for a timeout.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokenkeeper::{Clock, TokioClock};

#[derive(Debug)]
pub(crate) struct Outage {
    down: AtomicBool,
    retry_at: AtomicU64,
    outages: AtomicU64,
    pause: Duration,
    clock: TokioClock,
}

impl Outage {
    pub(crate) fn new(pause: Duration) -> Self {
        Self {
            down: AtomicBool::new(false),
            retry_at: AtomicU64::new(0),
            outages: AtomicU64::new(0),
            pause,
            clock: TokioClock::new(),
        }
    }

    /// Whether to try Redis now (not while paused after a failure).
    pub(crate) fn should_try(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
            || self.clock.now().as_millis() >= self.retry_at.load(Ordering::Relaxed)
    }

    pub(crate) fn failed(&self, error: &str) {
        self.retry_at.store(
            self.clock.now().saturating_add(self.pause).as_millis(),
            Ordering::Relaxed,
        );
        if !self.down.swap(true, Ordering::AcqRel) {
            self.outages.fetch_add(1, Ordering::Relaxed);
            #[cfg(feature = "metrics")]
            metrics::counter!("tokenkeeper_redis_outages_total").increment(1);
            tracing::warn!(%error, "Redis is unreachable; going on with the in-process cache and the token endpoint until it is back");
        }
    }

    pub(crate) fn succeeded(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("Redis is reachable again; the shared cache is back in use");
        }
    }

    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    pub(crate) fn count(&self) -> u64 {
        self.outages.load(Ordering::Relaxed)
    }
}
