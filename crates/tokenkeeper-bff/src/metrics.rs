//! Instrumentation through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`).
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `tokenkeeper_bff_sessions_started_total` | counter | `frontend` |
//! | `tokenkeeper_bff_sessions_ended_total` | counter | `frontend`, `reason` (`logout`, `backchannel`, `expired`, `token`, `admin`, `replaced`, `stepped-up`: replaced by a login of the same provider session) |
//! | `tokenkeeper_bff_proxied_requests_total` | counter | `frontend`, `route`, `status` |
//! | `tokenkeeper_bff_upstream_duration_seconds` | histogram | `frontend`, `route` (until the response headers) |
//! | `tokenkeeper_bff_token_failures_total` | counter | `frontend`, `route` |
//! | `tokenkeeper_bff_config_reloads_total` | counter | `outcome` (`applied`, `refused`) |
//!
//! `frontend` is the frontend's name ([`crate::BffOptions::name`]; `default` for a BFF with
//! one). Every proxied request also runs in a `tokenkeeper.proxy` tracing span (frontend,
//! route, method, status).

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
    /// Configuration reloads (BF-18).
    pub const CONFIG_RELOADS: &str = "tokenkeeper_bff_config_reloads_total";
}

#[cfg_attr(not(feature = "config"), allow(dead_code))]
pub(crate) fn config_reload(outcome: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::CONFIG_RELOADS, "outcome" => outcome).increment(1);
}

pub(crate) fn session_started(frontend: &str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::SESSIONS_STARTED, "frontend" => frontend.to_owned()).increment(1);
}

pub(crate) fn session_ended(frontend: &str, reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::SESSIONS_ENDED, "frontend" => frontend.to_owned(), "reason" => reason)
        .increment(1);
}

/// Per route, the handles of `tokenkeeper_bff_proxied_requests_total` (one per status seen)
/// and `tokenkeeper_bff_upstream_duration_seconds`: made on a route's first request with that
/// status (after the process's recorder is installed, whenever that is) and reused, so that a
/// proxied request allocates no label.
pub(crate) struct Proxied {
    #[cfg(feature = "metrics")]
    routes: Vec<ProxiedRoute>,
}

#[cfg(feature = "metrics")]
struct ProxiedRoute {
    frontend: String,
    route: String,
    duration: std::sync::OnceLock<metrics::Histogram>,
    /// At most one entry per status code (100–999).
    by_status: std::sync::RwLock<Vec<(u16, metrics::Counter)>>,
}

impl Proxied {
    pub(crate) fn new<'a>(frontend: &str, routes: impl Iterator<Item = &'a str>) -> Self {
        Self {
            #[cfg(feature = "metrics")]
            routes: routes
                .map(|route| ProxiedRoute {
                    frontend: frontend.to_owned(),
                    route: route.to_owned(),
                    duration: std::sync::OnceLock::new(),
                    by_status: std::sync::RwLock::default(),
                })
                .collect(),
        }
    }

    /// Counts a request of route `index` that ended with `status`, `upstream` after it began.
    pub(crate) fn record(&self, index: usize, status: u16, upstream: Option<std::time::Duration>) {
        #[cfg(feature = "metrics")]
        if let Some(route) = self.routes.get(index) {
            route.counter(status).increment(1);
            if let Some(elapsed) = upstream {
                route
                    .duration
                    .get_or_init(|| {
                        metrics::histogram!(
                            names::UPSTREAM_DURATION,
                            "frontend" => route.frontend.clone(),
                            "route" => route.route.clone()
                        )
                    })
                    .record(elapsed.as_secs_f64());
            }
        }
    }
}

#[cfg(feature = "metrics")]
impl ProxiedRoute {
    fn counter(&self, status: u16) -> metrics::Counter {
        let found = self
            .by_status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(s, _)| *s == status)
            .map(|(_, counter)| counter.clone());
        if let Some(counter) = found {
            return counter;
        }
        let mut by_status = self.by_status.write().unwrap_or_else(|e| e.into_inner());
        if let Some((_, counter)) = by_status.iter().find(|(s, _)| *s == status) {
            return counter.clone();
        }
        let counter = metrics::counter!(
            names::PROXIED,
            "frontend" => self.frontend.clone(),
            "route" => self.route.clone(),
            "status" => status.to_string()
        );
        by_status.push((status, counter.clone()));
        counter
    }
}

pub(crate) fn token_failure(frontend: &str, route: &str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(
        names::TOKEN_FAILURES,
        "frontend" => frontend.to_owned(),
        "route" => route.to_owned()
    )
    .increment(1);
}
