//! Timeouts on a worker thread without a timer per request:
//! - a connection waiting for its next request has until a deadline to send a complete head
//!   (slow-loris, idle keep-alive), and closes when the server stops;
//! - a proxied request waits for its upstream's answer until its route's timeout.
//!
//! Four sweeps a second per worker wake the waits whose time has run out, instead of a tokio
//! timer armed and disarmed for every request, and stopping wakes every waiting connection at
//! once, instead of each connection registering with a shutdown signal for every request
//! (together about 1.5 k instructions per request; BENCHMARKS.md). A timeout therefore fires
//! within a quarter of a second after its deadline. The sweeps also keep a coarse clock (the
//! time of the last sweep) for what needs no better: idle connections' ages in the pools and
//! the deadlines of request heads.
//!
//! Everything here belongs to the worker's thread: its current-thread runtime never moves a
//! task elsewhere. Off a worker (no sweeps on the thread) the clock is the real one and waits
//! are not to be used.

use std::cell::RefCell;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

/// How often a worker looks for waits whose time has run out.
const SWEEP: Duration = Duration::from_millis(250);

thread_local! {
    static WAITING: RefCell<Waiting> = RefCell::new(Waiting::default());
}

#[derive(Default)]
struct Waiting {
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// The time of the last sweep (a coarse clock); `None` on a thread with no sweeps.
    now: Option<Instant>,
    stopping: bool,
}

#[derive(Default)]
struct Slot {
    waker: Option<Waker>,
    /// While waiting: when the wait ends.
    deadline: Option<Instant>,
    /// A request's wait for its upstream (not ended by stopping: in-flight requests finish).
    request: bool,
}

/// Why a waiting connection was woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woken {
    /// Its deadline has passed.
    Expired,
    /// The server is stopping.
    Stopping,
}

/// A place among the worker's waits (freed on drop): a connection's, for each of its request
/// heads in turn, or one request's.
pub(crate) struct Waiter {
    slot: usize,
}

impl Waiter {
    /// A request's wait for its upstream, of `timeout` from now (the real time). To be polled
    /// on a worker thread only.
    pub(crate) fn request(timeout: Duration) -> Self {
        let waiter = Self::new();
        let deadline = Instant::now() + timeout;
        WAITING.with(|waiting| {
            if let Some(slot) = waiting.borrow_mut().slots.get_mut(waiter.slot) {
                slot.deadline = Some(deadline);
                slot.request = true;
            }
        });
        waiter
    }

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
            let now = waiting.now.unwrap_or_else(Instant::now);
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
            if stopping && !slot.request {
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

/// The time: as of this worker's last sweep (at most a quarter of a second old), or the real
/// time on a thread without sweeps.
pub(crate) fn now() -> Instant {
    WAITING
        .try_with(|waiting| waiting.borrow().now)
        .ok()
        .flatten()
        .unwrap_or_else(Instant::now)
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
            .filter(|slot| !slot.request)
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
