//! How long a token is used, when it is refreshed ahead, and how failures back off.

use std::time::Duration;

use crate::clock::Timestamp;
use crate::error::ConfigError;

/// Lifetime rules, shared by the managers.
#[derive(Debug, Clone, Copy)]
pub struct LifetimePolicy {
    /// Subtracted from `expires_in` so a token is never sent in its last moments. Default 30 s.
    pub skew: Duration,
    /// The lifetime assumed when the server sends no `expires_in` (or 0). Default 5 min.
    pub default_lifetime: Duration,
    /// The fraction of the usable lifetime, at its end, during which a hit starts a background
    /// refresh. Default 0.2 (so a one-hour token is refreshed ahead after ~47 minutes).
    pub refresh_ahead: f64,
}

impl Default for LifetimePolicy {
    fn default() -> Self {
        Self {
            skew: Duration::from_secs(30),
            default_lifetime: Duration::from_secs(300),
            refresh_ahead: 0.2,
        }
    }
}

impl LifetimePolicy {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.default_lifetime.is_zero() {
            return Err(ConfigError::new(
                "default_lifetime",
                "must be greater than zero",
            ));
        }
        if !(0.0..1.0).contains(&self.refresh_ahead) {
            return Err(ConfigError::new(
                "refresh_ahead",
                "must be a fraction in [0, 1)",
            ));
        }
        Ok(())
    }

    /// `(refresh_at, expires_at)` for a token received at `now` with `expires_in`.
    ///
    /// - The token is handed out until `expires_in − skew`. For a lifetime `L` under ten times
    ///   the skew, the skew used is `L / 10` instead, so a short-lived token is used for 90 % of
    ///   its life and never in its last tenth (CC-15, CC-06).
    /// - A hit in the last [`LifetimePolicy::refresh_ahead`] part of that usable lifetime starts
    ///   a background refresh, but never before `0.75 · L`: however short the token, it is used
    ///   for at least three quarters of its life and replaced before it expires.
    pub fn times(&self, now: Timestamp, expires_in: Option<Duration>) -> (Timestamp, Timestamp) {
        let lifetime = self.lifetime(expires_in);
        let usable = lifetime - self.skew.min(lifetime / 10);
        let refresh_after = usable
            .mul_f64(1.0 - self.refresh_ahead)
            .max(lifetime.mul_f64(0.75))
            .min(usable);
        (
            now.saturating_add(refresh_after),
            now.saturating_add(usable),
        )
    }

    /// The lifetime a token is taken to have: `expires_in`, or the default when absent or 0.
    fn lifetime(&self, expires_in: Option<Duration>) -> Duration {
        expires_in
            .filter(|d| !d.is_zero())
            .unwrap_or(self.default_lifetime)
    }

    /// Whether the server's lifetime is shorter than the configured skew (worth one warning per
    /// client: the skew is then scaled down).
    pub(crate) fn is_shorter_than_skew(&self, expires_in: Option<Duration>) -> bool {
        self.lifetime(expires_in) < self.skew
    }
}

/// Backoff after a failed token request: the next request for that key waits
/// `min(max, base · 2^(failures−1))`, scaled by a random factor in [0.5, 1] so that many
/// instances do not retry in step. While the backoff runs, callers without a valid token get the
/// last error at once.
#[derive(Debug, Clone, Copy)]
pub struct BackoffPolicy {
    /// The first delay. Default 1 s.
    pub base: Duration,
    /// The longest delay. Default 30 s.
    pub max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl BackoffPolicy {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max < self.base {
            return Err(ConfigError::new("backoff", "`max` is smaller than `base`"));
        }
        Ok(())
    }

    /// The delay after `failures` consecutive failures (≥ 1), before jitter.
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        self.base.saturating_mul(1u32 << exp).min(self.max)
    }

    /// The jittered delay.
    pub(crate) fn jittered(&self, failures: u32) -> Duration {
        self.delay(failures).mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}
