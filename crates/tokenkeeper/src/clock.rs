//! Injectable time.
//!
//! Every expiry decision in tokenkeeper goes through a [`Clock`]. The default, [`TokioClock`],
//! reads `tokio::time::Instant`, so tests can pause and advance time with
//! `tokio::time::pause()` / `tokio::time::advance()` instead of sleeping, and it reports wall-clock
//! time (milliseconds since the Unix epoch) so that expiry instants can be shared between
//! processes (a Redis cache) without translation.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in wall-clock time, in milliseconds since the Unix epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The timestamp `millis` milliseconds after the Unix epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This timestamp plus `duration` (saturating).
    #[inline]
    pub fn saturating_add(self, duration: Duration) -> Self {
        Self(self.0.saturating_add(duration_millis(duration)))
    }

    /// The time from `earlier` to `self`, or zero when `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// The current system time.
    pub fn system_now() -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(duration_millis)
            .unwrap_or(0);
        Self(millis)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({}ms)", self.0)
    }
}

#[inline]
pub(crate) fn duration_millis(duration: Duration) -> u64 {
    // Cheaper than `as_millis()` (no 128-bit division) on the hit path.
    duration
        .as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(duration.subsec_millis()))
}

/// A source of the current time.
///
/// Implement it to drive expiry from your own time source; the manager calls
/// [`Clock::now`] on every cache lookup, so it must be cheap.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The default clock: wall-clock time that advances with `tokio::time::Instant`.
///
/// It samples the system time once, at construction, and from then on adds the elapsed
/// `tokio::time::Instant` time. Under `tokio::time::pause()` it therefore stands still until the
/// test advances it, which makes expiry tests exact and fast.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base_wall: Timestamp,
    base_instant: tokio::time::Instant,
}

impl TokioClock {
    /// A clock anchored at the current system time.
    pub fn new() -> Self {
        Self {
            base_wall: Timestamp::system_now(),
            base_instant: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    #[inline]
    fn now(&self) -> Timestamp {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.base_instant);
        self.base_wall.saturating_add(elapsed)
    }
}
