//! Single flight with per-key backoff.
//!
//! One entry per key that has a fetch in flight or a recent failure. A fetch runs in its own
//! spawned task and its result is shared by every caller, so a caller that is cancelled (its
//! future dropped) does not cancel the fetch the others wait on.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::{BoxFuture, FutureExt, Shared};

use crate::cache::{CacheKey, CachedToken};
use crate::clock::Timestamp;
use crate::error::Error;

use super::policy::BackoffPolicy;

pub(crate) type FlightResult = Result<Arc<CachedToken>, Error>;
pub(crate) type SharedFlight = Shared<BoxFuture<'static, FlightResult>>;

/// Why a fetch runs: decides whether a token found in the cache on entry is good enough.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlightMode {
    /// No valid token: any valid cached token will do.
    Miss,
    /// Refresh-ahead: only a token not yet due for refresh will do.
    RefreshAhead,
    /// `force_renewal`: always fetch.
    Force,
    /// An API answered 401 for the cached token: the token that replaces it is the
    /// `renewals`-th renewal in a row driven by a 401. Any valid token other than the rejected
    /// one will do.
    Renewal {
        /// The depth of the renewal chain (1 for the first 401).
        renewals: u8,
    },
}

impl FlightMode {
    pub(crate) fn accepts(self, token: &CachedToken, now: Timestamp) -> bool {
        match self {
            Self::Miss => token.is_valid_at(now),
            Self::RefreshAhead => token.is_valid_at(now) && !token.needs_refresh_at(now),
            Self::Force | Self::Renewal { .. } => false,
        }
    }

    /// Whether a token found in a store during a flight that began at `started` ends it;
    /// `rejected` is the token a renewal replaces.
    pub(crate) fn settles(
        self,
        token: &CachedToken,
        now: Timestamp,
        started: Timestamp,
        rejected: Option<&CachedToken>,
    ) -> bool {
        match self {
            // A forced renewal settles only for a token fetched after it began.
            Self::Force => token.is_valid_at(now) && token.issued_at() > started,
            Self::Renewal { .. } => {
                token.is_valid_at(now) && !rejected.is_some_and(|r| r.same_token(token))
            }
            _ => self.accepts(token, now),
        }
    }
}

struct InFlight {
    id: u64,
    mode: FlightMode,
    future: SharedFlight,
}

#[derive(Default)]
struct KeyState {
    flight: Option<InFlight>,
    failures: u32,
    retry_at: Timestamp,
    last_error: Option<Error>,
}

#[derive(Default)]
pub(crate) struct Flights {
    states: Mutex<HashMap<CacheKey, KeyState>>,
    next_id: AtomicU64,
}

/// What [`Flights::join_or_start`] decided.
pub(crate) enum Joined {
    /// Wait on this flight.
    Flight(SharedFlight),
    /// The key is backing off after a failure: this was the failure.
    BackingOff(Error),
}

impl Flights {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, KeyState>> {
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the flight for `key`, or starts one with `start(id)` (which must spawn the work and
    /// call [`Flights::finish`] when done).
    pub(crate) fn join_or_start<F, Fut>(
        &self,
        key: &CacheKey,
        mode: FlightMode,
        now: Timestamp,
        start: F,
    ) -> Joined
    where
        F: FnOnce(u64) -> Fut,
        Fut: Future<Output = FlightResult> + Send + 'static,
    {
        let mut states = self.lock();
        let state = states.entry(key.clone()).or_default();
        if let Some(flight) = &state.flight {
            // A forced renewal does not settle for a fetch that may be answered from the cache.
            if mode != FlightMode::Force || flight.mode == FlightMode::Force {
                return Joined::Flight(flight.future.clone());
            }
        }
        if mode != FlightMode::Force && now < state.retry_at {
            if let Some(error) = &state.last_error {
                return Joined::BackingOff(error.clone());
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let handle = tokio::spawn(start(id));
        let future = async move {
            match handle.await {
                Ok(result) => result,
                Err(e) => Err(Error::Internal(format!("token fetch task failed: {e}"))),
            }
        }
        .boxed()
        .shared();
        state.flight = Some(InFlight {
            id,
            mode,
            future: future.clone(),
        });
        Joined::Flight(future)
    }

    /// Records the end of flight `id`: clears it and updates the backoff state.
    pub(crate) fn finish(
        &self,
        key: &CacheKey,
        id: u64,
        outcome: Result<(), &Error>,
        now: Timestamp,
        backoff: &BackoffPolicy,
    ) {
        let mut states = self.lock();
        let Some(state) = states.get_mut(key) else {
            return;
        };
        if state.flight.as_ref().is_some_and(|f| f.id == id) {
            state.flight = None;
        }
        match outcome {
            Ok(()) => {
                state.failures = 0;
                state.last_error = None;
                state.retry_at = Timestamp::default();
            }
            Err(error) => {
                state.failures = state.failures.saturating_add(1);
                state.retry_at = now.saturating_add(backoff.jittered(state.failures));
                state.last_error = Some(error.clone());
            }
        }
        if state.flight.is_none() && state.failures == 0 {
            states.remove(key);
        }
    }

    /// Forgets the backoff of keys whose backoff has ended and that have no flight (keeps the map
    /// small when many keys failed once).
    pub(crate) fn prune(&self, now: Timestamp) {
        let mut states = self.lock();
        if states.len() > 64 {
            states.retain(|_, s| s.flight.is_some() || now < s.retry_at);
        }
    }
}
