//! The open WebSocket relays of each session (SEC-18): ending a session closes them. The
//! registry sits below both the state that ends sessions ([`crate::bff`]) and the relays
//! ([`crate::websocket`]), so neither imports the other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Each session's open relays (by the session's id hash): a relay's number, and the sender
/// that tells it the session ended.
type OpenRelays = HashMap<String, Vec<(u64, tokio::sync::watch::Sender<bool>)>>;

/// The open relays of each session (by id hash), so that ending a session closes them; and
/// the host's going away, which closes every relay (BF-24).
#[derive(Debug)]
pub(crate) struct Relays {
    open: Mutex<OpenRelays>,
    next: std::sync::atomic::AtomicU64,
    going_away: tokio::sync::watch::Sender<bool>,
}

impl Default for Relays {
    fn default() -> Self {
        Self {
            open: Mutex::default(),
            next: std::sync::atomic::AtomicU64::new(0),
            going_away: tokio::sync::watch::channel(false).0,
        }
    }
}

impl Relays {
    fn lock(&self) -> std::sync::MutexGuard<'_, OpenRelays> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a relay of the session `id_hash`: the receiver turns `true` when it ends.
    pub(crate) fn register(self: &Arc<Self>, id_hash: &str) -> Registration {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = tokio::sync::watch::channel(false);
        self.lock()
            .entry(id_hash.to_owned())
            .or_default()
            .push((id, tx));
        Registration {
            relays: self.clone(),
            id_hash: id_hash.to_owned(),
            id,
            ended: rx,
        }
    }

    /// Closes every relay of the session `id_hash`.
    pub(crate) fn close(&self, id_hash: &str) {
        if let Some(open) = self.lock().remove(id_hash) {
            for (_, tx) in open {
                let _ = tx.send(true);
            }
        }
    }

    /// Turns `true` when the host shuts down: every relay then closes (1001, going away).
    pub(crate) fn going_away(&self) -> tokio::sync::watch::Receiver<bool> {
        self.going_away.subscribe()
    }

    /// Closes every relay, sessions' or not: the host is shutting down.
    pub(crate) fn shut_down(&self) {
        self.going_away.send_replace(true);
    }

    /// How many relays are open.
    pub(crate) fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }
}

/// A relay's place in [`Relays`], given up when the relay ends.
pub(crate) struct Registration {
    relays: Arc<Relays>,
    id_hash: String,
    id: u64,
    pub(crate) ended: tokio::sync::watch::Receiver<bool>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = self.relays.lock();
        if let Some(list) = open.get_mut(&self.id_hash) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                open.remove(&self.id_hash);
            }
        }
    }
}
