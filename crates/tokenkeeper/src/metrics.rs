//! Instrumentation through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`).
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `tokenkeeper_token_requests_total` | counter | `client`, `grant` |
//! | `tokenkeeper_cache_hits_total` | counter | `client` |
//! | `tokenkeeper_cache_misses_total` | counter | `client` |
//! | `tokenkeeper_refreshes_total` | counter | `client` (refresh-ahead started) |
//! | `tokenkeeper_token_failures_total` | counter | `client` |
//! | `tokenkeeper_cache_errors_total` | counter | `client` |
//! | `tokenkeeper_token_endpoint_duration_seconds` | histogram | `client` |
//! | `tokenkeeper_revocation_failures_total` | counter | `client` (refresh tokens not revoked at logout) |
//! | `tokenkeeper_dpop_downgrades_total` | counter | `client_id` (Bearer tokens answered to DPoP requests) |
//!
//! Handles are registered once per client when the manager is built, so the hit path pays one
//! relaxed atomic add per counter when a recorder is installed, and nothing else. Without the
//! feature every call here compiles to nothing.

#![cfg_attr(not(feature = "metrics"), allow(dead_code))]

use std::time::Duration;

/// Metric names.
pub mod names {
    /// Token requests sent to the token endpoint.
    pub const TOKEN_REQUESTS: &str = "tokenkeeper_token_requests_total";
    /// Cache hits.
    pub const CACHE_HITS: &str = "tokenkeeper_cache_hits_total";
    /// Cache misses.
    pub const CACHE_MISSES: &str = "tokenkeeper_cache_misses_total";
    /// Background refreshes started.
    pub const REFRESHES: &str = "tokenkeeper_refreshes_total";
    /// Failed token requests.
    pub const FAILURES: &str = "tokenkeeper_token_failures_total";
    /// Cache backend errors.
    pub const CACHE_ERRORS: &str = "tokenkeeper_cache_errors_total";
    /// Token endpoint latency.
    pub const ENDPOINT_DURATION: &str = "tokenkeeper_token_endpoint_duration_seconds";
    /// Refresh tokens that could not be revoked at logout.
    pub const REVOCATION_FAILURES: &str = "tokenkeeper_revocation_failures_total";
    /// Token requests with a DPoP proof answered with a token that is not DPoP-bound.
    pub const DPOP_DOWNGRADES: &str = "tokenkeeper_dpop_downgrades_total";
}

/// A server answered a DPoP token request of `client_id` with a Bearer token (rare: no handle).
#[allow(unused_variables)]
pub(crate) fn dpop_downgrade(client_id: &str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::DPOP_DOWNGRADES, "client_id" => client_id.to_owned()).increment(1);
}

#[derive(Debug, Clone)]
pub(crate) struct ClientMetrics {
    #[cfg(feature = "metrics")]
    inner: std::sync::Arc<Handles>,
}

#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Handles {
    token_requests: metrics::Counter,
    hits: metrics::Counter,
    misses: metrics::Counter,
    refreshes: metrics::Counter,
    failures: metrics::Counter,
    cache_errors: metrics::Counter,
    duration: metrics::Histogram,
    revocation_failures: metrics::Counter,
}

impl ClientMetrics {
    #[allow(unused_variables)]
    pub(crate) fn new(client: &str, grant: &'static str) -> Self {
        #[cfg(feature = "metrics")]
        {
            let client = client.to_owned();
            Self {
                inner: std::sync::Arc::new(Handles {
                    token_requests: metrics::counter!(names::TOKEN_REQUESTS, "client" => client.clone(), "grant" => grant),
                    hits: metrics::counter!(names::CACHE_HITS, "client" => client.clone()),
                    misses: metrics::counter!(names::CACHE_MISSES, "client" => client.clone()),
                    refreshes: metrics::counter!(names::REFRESHES, "client" => client.clone()),
                    failures: metrics::counter!(names::FAILURES, "client" => client.clone()),
                    cache_errors: metrics::counter!(names::CACHE_ERRORS, "client" => client.clone()),
                    duration: metrics::histogram!(names::ENDPOINT_DURATION, "client" => client.clone()),
                    revocation_failures: metrics::counter!(names::REVOCATION_FAILURES, "client" => client),
                }),
            }
        }
        #[cfg(not(feature = "metrics"))]
        Self {}
    }

    #[inline]
    pub(crate) fn hit(&self) {
        #[cfg(feature = "metrics")]
        self.inner.hits.increment(1);
    }

    #[inline]
    pub(crate) fn miss(&self) {
        #[cfg(feature = "metrics")]
        self.inner.misses.increment(1);
    }

    #[inline]
    pub(crate) fn refresh(&self) {
        #[cfg(feature = "metrics")]
        self.inner.refreshes.increment(1);
    }

    #[inline]
    pub(crate) fn cache_error(&self) {
        #[cfg(feature = "metrics")]
        self.inner.cache_errors.increment(1);
    }

    #[inline]
    pub(crate) fn revocation_failed(&self) {
        #[cfg(feature = "metrics")]
        self.inner.revocation_failures.increment(1);
    }

    #[allow(unused_variables)]
    pub(crate) fn token_request(&self, elapsed: Duration, ok: bool) {
        #[cfg(feature = "metrics")]
        {
            self.inner.token_requests.increment(1);
            self.inner.duration.record(elapsed.as_secs_f64());
            if !ok {
                self.inner.failures.increment(1);
            }
        }
    }
}
