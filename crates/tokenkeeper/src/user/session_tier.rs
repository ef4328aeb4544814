//! The in-process tier of a shared session store (UT-12): sessions read or written here, kept
//! in memory, dropped when another instance announces a newer version.

use std::fmt;
use std::sync::Arc;

use super::store::{SessionKey, UserTokens, Versioned};

/// Sessions held in this process in front of a shared store (Redis, PostgreSQL), so that a hit
/// on a valid token costs no round trip.
///
/// A store keeps every session it reads or writes here ([`SessionTier::put`]) under its key in
/// the shared store (the *store key*), and calls [`SessionTier::invalidate`] for every change
/// another instance announces (`store key, version`; version 0: deleted). The tier also
/// remembers the highest version seen per store key, even once the tokens are dropped
/// ([`SessionTier::seen`]): a store refuses an entry older than that — put back by someone who
/// can write to the shared store, or rolled back by a failover.
///
/// Bounded: when it holds `capacity` sessions it starts over (a cache, not a record); the
/// versions seen are bounded at four times that.
pub struct SessionTier {
    sessions: papaya::HashMap<SessionKey, (Versioned<Arc<UserTokens>>, Arc<str>)>,
    by_store_key: papaya::HashMap<Arc<str>, SessionKey>,
    seen: papaya::HashMap<Arc<str>, u64>,
    capacity: usize,
}

impl fmt::Debug for SessionTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionTier")
            .field("sessions", &self.sessions.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl SessionTier {
    /// A tier of at most `capacity` sessions (0: the tier is off, nothing is kept).
    pub fn new(capacity: usize) -> Self {
        Self {
            sessions: papaya::HashMap::new(),
            by_store_key: papaya::HashMap::new(),
            seen: papaya::HashMap::new(),
            capacity,
        }
    }

    /// Its capacity (0: off).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many sessions it holds.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The session held for `session`, if any.
    #[inline]
    pub fn get(&self, session: &SessionKey) -> Option<Versioned<Arc<UserTokens>>> {
        self.sessions
            .pin()
            .get(session)
            .map(|(value, _)| value.clone())
    }

    /// Keeps `value` for `session` (stored at `store_key`) unless a newer version is held or
    /// was announced. Nothing when the tier is off.
    pub fn put(
        &self,
        session: &SessionKey,
        store_key: &Arc<str>,
        value: Versioned<Arc<UserTokens>>,
    ) {
        if self.capacity == 0 {
            return;
        }
        if self
            .seen(store_key)
            .is_some_and(|seen| seen > value.version)
        {
            // Another instance wrote a newer version meanwhile: its message got here first.
            return;
        }
        if self.sessions.len() >= self.capacity {
            // A cache: when full, start over rather than track use.
            self.sessions.pin().clear();
            self.by_store_key.pin().clear();
        }
        let version = value.version;
        let sessions = self.sessions.pin();
        sessions.update_or_insert_with(
            session.clone(),
            |(current, key)| {
                if current.version >= version {
                    (current.clone(), key.clone())
                } else {
                    (value.clone(), key.clone())
                }
            },
            || (value.clone(), store_key.clone()),
        );
        self.by_store_key
            .pin()
            .insert(store_key.clone(), session.clone());
        self.saw(store_key, version);
    }

    /// Remembers that `version` of the session at `store_key` exists (or existed).
    pub fn saw(&self, store_key: &Arc<str>, version: u64) {
        if self.seen.len() >= self.capacity.saturating_mul(4).max(1024) {
            self.seen.pin().clear();
        }
        self.seen
            .pin()
            .update_or_insert(store_key.clone(), |v| (*v).max(version), version);
    }

    /// The highest version seen of the session at `store_key`.
    pub fn seen(&self, store_key: &str) -> Option<u64> {
        self.seen.pin().get(store_key).copied()
    }

    /// Another instance changed the session at `store_key` to `version` (or deleted it: 0).
    /// The copy here goes unless it is that version already (this instance's own write).
    pub fn invalidate(&self, store_key: &str, version: u64) {
        let by_key = self.by_store_key.pin();
        if let Some(session) = by_key.get(store_key) {
            let sessions = self.sessions.pin();
            let current = sessions.get(session).map(|(v, _)| v.version);
            if version == 0 || current.is_none_or(|held| held < version) {
                sessions.remove(session);
                by_key.remove(store_key);
            }
        }
        if version > 0 {
            self.saw(&Arc::from(store_key), version);
        }
    }

    /// Drops the session (its version seen is kept).
    pub fn forget(&self, session: &SessionKey, store_key: &str) {
        self.sessions.pin().remove(session);
        self.by_store_key.pin().remove(store_key);
    }

    /// Drops every session (the versions seen are kept): what a store does when it may have
    /// missed announcements (its listener reconnected).
    pub fn clear(&self) {
        self.sessions.pin().clear();
        self.by_store_key.pin().clear();
    }
}
