//! Time-to-headers deadlines of proxied requests, without a timer per request.
//!
//! A tokio timer per request costs more than it seems on a busy proxy: registering a deadline
//! earlier than the runtime's next wake-up unparks the runtime (a write to its eventfd) —
//! about 3 % of the BFF's saturated throughput on a multi-thread runtime (BENCHMARKS.md). Here requests put their
//! deadline in a shared list instead, and one task per engine checks it four times a second, so
//! a timeout fires within 250 ms of its deadline.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// How often the deadlines are checked.
const TICK: Duration = Duration::from_millis(250);

/// How many lists: each thread uses one, so that runtime workers registering deadlines at once
/// do not fight over one lock (and its cache line).
const SHARDS: usize = 8;

type Pending = Vec<(Instant, oneshot::Sender<()>)>;

#[derive(Default)]
pub(crate) struct Deadlines {
    shards: [Mutex<Pending>; SHARDS],
    sweeper: OnceLock<()>,
}

/// This thread's shard.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SHARD.with(|shard| {
        let mut value = shard.get();
        if value == usize::MAX {
            value = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            shard.set(value);
        }
        value
    })
}

impl Deadlines {
    fn lock(&self, shard: usize) -> std::sync::MutexGuard<'_, Pending> {
        self.shards[shard].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver that fires once `timeout` has passed (or is dropped with the request).
    pub(crate) fn after(self: &Arc<Self>, timeout: Duration) -> oneshot::Receiver<()> {
        self.sweeper.get_or_init(|| {
            let deadlines = Arc::downgrade(self);
            tokio::spawn(sweep(deadlines));
        });
        let (tx, rx) = oneshot::channel();
        self.lock(shard()).push((Instant::now() + timeout, tx));
        rx
    }
}

/// Fires the expired deadlines, forgets those whose request is over; ends with the engine.
async fn sweep(deadlines: Weak<Deadlines>) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(deadlines) = deadlines.upgrade() else {
            return;
        };
        let now = Instant::now();
        for shard in 0..SHARDS {
            let mut pending = deadlines.lock(shard);
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
}
