//! Time-to-headers deadlines of proxied requests, without a timer per request.
//!
//! A tokio timer per request costs more than it seems on a busy proxy: registering a deadline
//! earlier than the runtime's next wake-up unparks the runtime (a write to its eventfd) —
//! about 3 % of the BFF's saturated throughput (BENCHMARKS.md). Here requests put their
//! deadline in a shared list instead, and one task per BFF checks it four times a second, so
//! a timeout fires within 250 ms of its deadline.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// How often the deadlines are checked.
const TICK: Duration = Duration::from_millis(250);

#[derive(Default)]
pub(crate) struct Deadlines {
    pending: Mutex<Vec<(Instant, oneshot::Sender<()>)>>,
    sweeper: OnceLock<()>,
}

impl Deadlines {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Instant, oneshot::Sender<()>)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver that fires once `timeout` has passed (or is dropped with the request).
    pub(crate) fn after(self: &Arc<Self>, timeout: Duration) -> oneshot::Receiver<()> {
        self.sweeper.get_or_init(|| {
            let deadlines = Arc::downgrade(self);
            tokio::spawn(sweep(deadlines));
        });
        let (tx, rx) = oneshot::channel();
        self.lock().push((Instant::now() + timeout, tx));
        rx
    }
}

/// Fires the expired deadlines, forgets those whose request is over; ends with the BFF.
async fn sweep(deadlines: Weak<Deadlines>) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(deadlines) = deadlines.upgrade() else {
            return;
        };
        let now = Instant::now();
        let mut pending = deadlines.lock();
        let mut i = 0;
        while i < pending.len() {
            if pending[i].1.is_closed() {
                pending.swap_remove(i);
            } else if pending[i].0 <= now {
                let (_, tx) = pending.swap_remove(i);
                let _ = tx.send(());
            } else {
                i += 1;
            }
        }
    }
}
