//! Instrumentation through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`).
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `tokenkeeper_bff_sessions_started_total` | counter | |
//! | `tokenkeeper_bff_sessions_ended_total` | counter | `reason` (`logout`, `backchannel`, `expired`, `token`, `admin`, `replaced`) |
//! | `tokenkeeper_bff_proxied_requests_total` | counter | `route`, `status` |
//! | `tokenkeeper_bff_upstream_duration_seconds` | histogram | `route` (until the response headers) |
//! | `tokenkeeper_bff_token_failures_total` | counter | `route` |
//!
//! Every proxied request also runs in a `tokenkeeper.bff.proxy` tracing span (route, method,
//! status).

#![cfg_attr(not(feature = "metrics"), allow(unused_variables))]

/// Metric names.
pub mod names {
    /// Sessions started (logins completed).
    pub const SESSIONS_STARTED: &str = "tokenkeeper_bff_sessions_started_total";
    /// Sessions ended.
    pub const SESSIONS_ENDED: &str = "tokenkeeper_bff_sessions_ended_total";
    /// Requests through the proxy.
    pub const PROXIED: &str = "tokenkeeper_bff_proxied_requests_total";
    /// Upstream latency until the response headers.
    pub const UPSTREAM_DURATION: &str = "tokenkeeper_bff_upstream_duration_seconds";
    /// Requests that could not get their token.
    pub const TOKEN_FAILURES: &str = "tokenkeeper_bff_token_failures_total";
}

pub(crate) fn session_started() {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::SESSIONS_STARTED).increment(1);
}

pub(crate) fn session_ended(reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::SESSIONS_ENDED, "reason" => reason).increment(1);
}

pub(crate) fn proxied(route: &str, status: u16, upstream: Option<std::time::Duration>) {
    #[cfg(feature = "metrics")]
    {
        metrics::counter!(names::PROXIED, "route" => route.to_owned(), "status" => status.to_string())
            .increment(1);
        if let Some(elapsed) = upstream {
            metrics::histogram!(names::UPSTREAM_DURATION, "route" => route.to_owned())
                .record(elapsed.as_secs_f64());
        }
    }
}

pub(crate) fn token_failure(route: &str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::TOKEN_FAILURES, "route" => route.to_owned()).increment(1);
}
