//! A value fetched from the network and kept for a lifetime: discovery metadata, a JWKS.
//!
//! - Fresh: returned at once, no lock held across an await.
//! - Stale or missing: one fetch, shared by every concurrent caller (they wait on the same
//!   future, not in turn behind a lock), and the value is replaced when it lands.
//! - A failed fetch is remembered: until its backoff runs out (jittered, doubling, capped),
//!   callers get the stale value if there is one — else the remembered error — at once,
//!   without a request (SEC-09).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt, Shared};

use crate::client_credentials::BackoffPolicy;
use crate::clock::{Clock, Timestamp};
use crate::error::Error;

type Flight<T> = Shared<BoxFuture<'static, Result<Arc<T>, Error>>>;

struct State<T> {
    value: Option<Arc<T>>,
    expires_at: Timestamp,
    flight: Option<Flight<T>>,
    failures: u32,
    retry_at: Timestamp,
    last_error: Option<Error>,
    /// When the last forced fetch ([`Want::Refetch`]) was started.
    forced_at: Option<Timestamp>,
}

/// See the module docs.
pub(crate) struct Refreshing<T> {
    state: Arc<Mutex<State<T>>>,
    clock: Arc<dyn Clock>,
    backoff: BackoffPolicy,
    /// What is fetched, for log lines.
    what: &'static str,
}

/// What a fetch returns: the value and how long it may be kept.
pub(crate) type Fetch<T> = BoxFuture<'static, Result<(T, Duration), Error>>;

/// Why [`Refreshing::get`] is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    /// A value within its lifetime.
    Fresh,
    /// A value fetched now, unless such a forced fetch happened less than this long ago (for
    /// an unknown key id: the provider may have rotated; the interval keeps made-up key ids
    /// from driving a request each).
    Refetch(Duration),
}

impl<T: Send + Sync + 'static> Refreshing<T> {
    pub(crate) fn new(clock: Arc<dyn Clock>, backoff: BackoffPolicy, what: &'static str) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                value: None,
                expires_at: Timestamp::default(),
                flight: None,
                failures: 0,
                retry_at: Timestamp::default(),
                last_error: None,
                forced_at: None,
            })),
            clock,
            backoff,
            what,
        }
    }

    fn lock(state: &Mutex<State<T>>) -> std::sync::MutexGuard<'_, State<T>> {
        state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value, fetched with `fetch` when it is missing, expired or (for `Want::NewerThan`)
    /// too old.
    pub(crate) async fn get(
        &self,
        want: Want,
        fetch: impl FnOnce() -> Fetch<T>,
    ) -> Result<Arc<T>, Error> {
        let flight = {
            let mut state = Self::lock(&self.state);
            let now = self.clock.now();
            let force = match want {
                Want::Fresh => false,
                Want::Refetch(interval) => state
                    .forced_at
                    .is_none_or(|at| now >= at.saturating_add(interval)),
            };
            if force {
                state.forced_at = Some(now);
            }
            let usable = state
                .value
                .clone()
                .filter(|_| !force && now < state.expires_at);
            if let Some(value) = usable {
                return Ok(value);
            }
            match &state.flight {
                Some(flight) => flight.clone(),
                None if now < state.retry_at => {
                    // Backing off after a failure: no request now.
                    return match (&state.value, &state.last_error) {
                        (Some(stale), _) => Ok(stale.clone()),
                        (None, Some(error)) => Err(error.clone()),
                        (None, None) => Err(Error::Internal("no value yet".into())),
                    };
                }
                None => {
                    let shared = self.start(fetch());
                    state.flight = Some(shared.clone());
                    shared
                }
            }
        };
        match flight.await {
            Ok(value) => Ok(value),
            Err(error) => {
                let stale = Self::lock(&self.state).value.clone();
                if stale.is_some() {
                    tracing::warn!(what = self.what, %error, "refresh failed; using the value fetched before");
                }
                stale.ok_or(error)
            }
        }
    }

    /// Wraps `fetch` so that its outcome is recorded once, whichever caller drives it.
    fn start(&self, fetch: Fetch<T>) -> Flight<T> {
        let state = self.state.clone();
        let clock = self.clock.clone();
        let backoff = self.backoff;
        async move {
            let result = fetch.await;
            let now = clock.now();
            let mut state = Self::lock(&state);
            state.flight = None;
            match result {
                Ok((value, lifetime)) => {
                    let value = Arc::new(value);
                    state.value = Some(value.clone());
                    state.expires_at = now.saturating_add(lifetime);
                    state.failures = 0;
                    state.retry_at = Timestamp::default();
                    state.last_error = None;
                    Ok(value)
                }
                Err(error) => {
                    state.failures = state.failures.saturating_add(1);
                    state.retry_at = now.saturating_add(backoff.jittered(state.failures));
                    state.last_error = Some(error.clone());
                    Err(error)
                }
            }
        }
        .boxed()
        .shared()
    }
}
