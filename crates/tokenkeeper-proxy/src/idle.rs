//! Connections waiting for their next request, per worker thread: each has until a deadline to
//! send a complete head (slow-loris, idle keep-alive), and closes when the server stops.
//!
//! One sweep a second per worker wakes the connections whose time has run out, instead of a
//! timer armed and disarmed for every request, and stopping wakes every waiting connection at
//! once, instead of each connection registering with a shutdown signal for every request
//! (together about 1 k instructions per request; BENCHMARKS.md). Deadlines are therefore kept
//! to within about a second, which is all a timeout of many seconds needs.
//!
//! Everything here belongs to the worker's thread: its current-thread runtime never moves a
//! connection's task elsewhere.

use std::cell::RefCell;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

/// How often a worker looks for connections whose time has run out.
const SWEEP: Duration = Duration::from_secs(1);

thread_local! {
    static WAITING: RefCell<Waiting> = RefCell::new(Waiting::default());
}

#[derive(Default)]
struct Waiting {
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// The time of the last sweep (a coarse clock: deadlines are set from it).
    now: Option<Instant>,
    stopping: bool,
}

#[derive(Default)]
struct Slot {
    waker: Option<Waker>,
    /// While waiting for a head: when the wait ends.
    deadline: Option<Instant>,
}

/// Why a waiting connection was woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woken {
    /// Its deadline has passed.
    Expired,
    /// The server is stopping.
    Stopping,
}

/// A connection's place among the worker's waiting connections (freed on drop).
pub(crate) struct Waiter {
    slot: usize,
}

impl Waiter {
    /// A place for a new connection on this thread.
    pub(crate) fn new() -> Self {
        let slot = WAITING.with(|waiting| {
            let mut waiting = waiting.borrow_mut();
            match waiting.free.pop() {
                Some(slot) => slot,
                None => {
                    waiting.slots.push(Slot::default());
                    waiting.slots.len() - 1
                }
            }
        });
        Self { slot }
    }

    /// Starts a wait for a head of at most `timeout` (from the worker's coarse clock).
    pub(crate) fn start(&self, timeout: Duration) {
        WAITING.with(|waiting| {
            let mut waiting = waiting.borrow_mut();
            let now = *waiting.now.get_or_insert_with(Instant::now);
            if let Some(slot) = waiting.slots.get_mut(self.slot) {
                slot.deadline = Some(now + timeout);
            }
        });
    }

    /// Ends the wait: a request is being served.
    pub(crate) fn stop(&self) {
        WAITING.with(|waiting| {
            if let Some(slot) = waiting.borrow_mut().slots.get_mut(self.slot) {
                slot.deadline = None;
                slot.waker = None;
            }
        });
    }

    /// Whether the wait is over; if not, `cx` is woken when it is.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<Woken> {
        WAITING.with(|waiting| {
            let mut waiting = waiting.borrow_mut();
            let stopping = waiting.stopping;
            let now = waiting.now;
            let Some(slot) = waiting.slots.get_mut(self.slot) else {
                return Poll::Pending;
            };
            if stopping {
                return Poll::Ready(Woken::Stopping);
            }
            if let (Some(deadline), Some(now)) = (slot.deadline, now) {
                if now >= deadline {
                    return Poll::Ready(Woken::Expired);
                }
            }
            match &mut slot.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                waker => *waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        // A thread-local being torn down (the worker's thread ending) has nothing to free.
        let _ = WAITING.try_with(|waiting| {
            let mut waiting = waiting.borrow_mut();
            if let Some(slot) = waiting.slots.get_mut(self.slot) {
                *slot = Slot::default();
                waiting.free.push(self.slot);
            }
        });
    }
}

/// Whether this worker is stopping.
pub(crate) fn stopping() -> bool {
    WAITING.with(|waiting| waiting.borrow().stopping)
}

/// Marks this worker as stopping and wakes every waiting connection.
pub(crate) fn stop() {
    let wakers = WAITING.with(|waiting| {
        let mut waiting = waiting.borrow_mut();
        waiting.stopping = true;
        waiting
            .slots
            .iter_mut()
            .filter_map(|slot| slot.waker.take())
            .collect::<Vec<_>>()
    });
    wakers.into_iter().for_each(Waker::wake);
}

/// The worker's sweep: once a second, the coarse clock moves and the connections whose wait
/// has run out are woken. Runs until the worker's runtime ends.
pub(crate) async fn sweep() {
    let mut interval = tokio::time::interval(SWEEP);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now = Instant::now();
        let wakers = WAITING.with(|waiting| {
            let mut waiting = waiting.borrow_mut();
            waiting.now = Some(now);
            waiting
                .slots
                .iter_mut()
                .filter(|slot| slot.deadline.is_some_and(|deadline| deadline <= now))
                .filter_map(|slot| slot.waker.take())
                .collect::<Vec<_>>()
        });
        // Woken outside the borrow: a waker may run code that looks at the list.
        wakers.into_iter().for_each(Waker::wake);
    }
}
