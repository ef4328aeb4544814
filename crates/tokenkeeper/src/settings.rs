//! Settings shared by the token managers' builders.

use std::sync::Arc;

use crate::cache::{Lease, LeaseOptions};
use crate::client_credentials::{BackoffPolicy, LifetimePolicy};
use crate::clock::{Clock, TokioClock};
use crate::error::{ConfigError, Error};
use crate::http::{HttpOptions, ReqwestTransport, SharedTransport};

#[derive(Default)]
pub(crate) struct Settings {
    pub(crate) clock: Option<Arc<dyn Clock>>,
    pub(crate) transport: Option<SharedTransport>,
    pub(crate) http: HttpOptions,
    pub(crate) lifetime: LifetimePolicy,
    pub(crate) backoff: BackoffPolicy,
    pub(crate) lease: Option<Arc<dyn Lease>>,
    pub(crate) lease_options: LeaseOptions,
}

/// The settings, checked and with defaults filled in.
pub(crate) struct Resolved {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) transport: SharedTransport,
    pub(crate) lifetime: LifetimePolicy,
    pub(crate) backoff: BackoffPolicy,
    pub(crate) lease: Option<(Arc<dyn Lease>, LeaseOptions)>,
}

impl Settings {
    pub(crate) fn resolve(self) -> Result<Resolved, Error> {
        self.lifetime.validate()?;
        self.backoff.validate()?;
        if self.lease_options.ttl.is_zero() || self.lease_options.poll.is_zero() {
            return Err(ConfigError::new(
                "lease_options",
                "`ttl` and `poll` must be greater than zero",
            )
            .into());
        }
        let transport: SharedTransport = match self.transport {
            Some(t) => t,
            None => Arc::new(ReqwestTransport::new(&self.http)?),
        };
        Ok(Resolved {
            clock: self.clock.unwrap_or_else(|| Arc::new(TokioClock::new())),
            transport,
            lifetime: self.lifetime,
            backoff: self.backoff,
            lease: self.lease.map(|l| (l, self.lease_options)),
        })
    }
}

/// The setters of [`Settings`], for a builder with a `settings` field.
macro_rules! settings_setters {
    () => {
        /// Uses `clock` instead of [`TokioClock`](crate::TokioClock).
        pub fn clock(mut self, clock: std::sync::Arc<dyn crate::clock::Clock>) -> Self {
            self.settings.clock = Some(clock);
            self
        }

        /// Sends requests to authorization servers through `transport` instead of a
        /// [`ReqwestTransport`](crate::ReqwestTransport) built from the HTTP options.
        pub fn transport(mut self, transport: crate::http::SharedTransport) -> Self {
            self.settings.transport = Some(transport);
            self
        }

        /// Timeouts and body limit of the default transport.
        pub fn http_options(mut self, options: crate::http::HttpOptions) -> Self {
            self.settings.http = options;
            self
        }

        /// Lifetime rules: skew, default lifetime, refresh-ahead window.
        pub fn lifetime_policy(
            mut self,
            policy: crate::client_credentials::LifetimePolicy,
        ) -> Self {
            self.settings.lifetime = policy;
            self
        }

        /// Backoff after failed token requests.
        pub fn backoff_policy(mut self, policy: crate::client_credentials::BackoffPolicy) -> Self {
            self.settings.backoff = policy;
            self
        }

        /// Coordinates fetches across instances with a distributed lease (see
        /// [`Lease`](crate::Lease)); use it with a cache or store shared by the instances.
        pub fn lease(mut self, lease: std::sync::Arc<dyn crate::cache::Lease>) -> Self {
            self.settings.lease = Some(lease);
            self
        }

        /// How the lease is used (TTL, wait, poll interval).
        pub fn lease_options(mut self, options: crate::cache::LeaseOptions) -> Self {
            self.settings.lease_options = options;
            self
        }
    };
}

pub(crate) use settings_setters;
