//! Which worker thread this is: the server's workers say so when they start; the engine and
//! the upstream pools ask (a pool per worker, timers that stay on the worker's thread).

use std::cell::Cell;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
    static ON_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as worker `index` of a server.
pub(crate) fn enter(index: usize) {
    WORKER.with(|w| w.set(index));
    ON_WORKER.with(|w| w.set(true));
}

/// The index of the calling worker thread (0 outside a server's workers).
pub(crate) fn worker_index() -> usize {
    WORKER.with(Cell::get)
}

/// Whether the calling thread is a server's worker (a current-thread runtime of its own).
pub(crate) fn on_worker() -> bool {
    ON_WORKER.with(Cell::get)
}

/// One worker per core (as the OS reports them), at least 1.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
