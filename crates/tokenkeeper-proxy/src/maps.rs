//! Header maps recycled per thread: a request's map, once written upstream, and a response's,
//! once written to the client, are cleared and kept for the next message parsed on the same
//! thread. A map keeps its two allocations (and the room it grew to) when cleared: four
//! allocations and frees fewer per proxied request (BENCHMARKS.md).
//!
//! Also the list of where each header lies in a parsed head ([`Span`]): an array of the most
//! headers a head may have, zeroed on the stack for every head, cost more (callgrind: 1.6 KiB
//! set per head, and its cache misses) than the thread's own list, emptied and reused.

use std::cell::{Cell, RefCell};

use http::HeaderMap;

/// Maps kept per thread (beyond this, they are freed).
const KEPT: usize = 256;
/// Maps that grew beyond this many entries are freed, not kept.
const LARGEST: usize = 128;

/// Where a header's name and value lie in a buffer: name start, name length, value start,
/// value length.
pub(crate) type Span = (u32, u32, u32, u32);

thread_local! {
    static MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
    static SPANS: Cell<Vec<Span>> = const { Cell::new(Vec::new()) };
}

/// An empty list of spans: the thread's own (a new one while it is out).
pub(crate) fn spans() -> Vec<Span> {
    SPANS.try_with(Cell::take).unwrap_or_default()
}

/// Gives the thread its list of spans back (one that grew beyond a head's most headers is
/// freed instead).
pub(crate) fn give_spans(mut spans: Vec<Span>) {
    if spans.capacity() > 128 {
        return;
    }
    spans.clear();
    let _ = SPANS.try_with(|kept| kept.set(spans));
}

/// An empty map with room for at least `capacity` entries.
pub(crate) fn take(capacity: usize) -> HeaderMap {
    let kept = MAPS.try_with(|maps| maps.borrow_mut().pop()).ok().flatten();
    match kept {
        Some(mut map) => {
            map.reserve(capacity);
            map
        }
        None => HeaderMap::with_capacity(capacity),
    }
}

/// Keeps `map` for a next message (its entries are dropped now).
pub(crate) fn give(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > LARGEST {
        return;
    }
    map.clear();
    let _ = MAPS.try_with(|maps| {
        let mut maps = maps.borrow_mut();
        if maps.len() < KEPT {
            maps.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn maps_come_back_empty() {
        let mut map = super::take(4);
        map.insert("x-a", http::HeaderValue::from_static("1"));
        super::give(map);
        let map = super::take(2);
        assert!(map.is_empty());
        assert!(map.capacity() >= 2);
    }
}
