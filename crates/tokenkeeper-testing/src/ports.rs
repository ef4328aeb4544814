//! Ports for servers that must be told their port before they start (`redis-server`,
//! PostgreSQL, nginx, a `tokenkeeper bff` whose public URL names its own port).
//!
//! A port the kernel hands out for `bind(127.0.0.1:0)` lies in its ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`, usually 32768–60999) — the same range every
//! outgoing connection takes its local port from. Released and handed to a server a moment
//! later, such a port may already be the local end of some connection (a Redis client, a
//! cluster bus link, another test), and the server fails to bind and exits. So
//! [`free_port`] picks below the ephemeral range, where no outgoing connection lands,
//! checks the port can be bound now (bind-test), and never gives the same port twice in one
//! process.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};

/// The lowest port [`free_port`] picks: above the well-known and most registered services.
const FLOOR: u16 = 20_000;

/// A port on `127.0.0.1` that nothing listens on now, outside the kernel's ephemeral range and
/// not handed out before by this process. Falls back to a kernel-chosen port only when the
/// ephemeral range leaves no room below it.
///
/// # Panics
///
/// When not even a kernel-chosen port can be bound on `127.0.0.1`.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(Mutex::default);
    let mut given = given
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (ephemeral_low, ephemeral_high) = ephemeral_range();
    // Below the ephemeral range, or above it when it ends early enough to leave room.
    let mut ranges = Vec::new();
    if ephemeral_low > FLOOR + 1_000 {
        ranges.push((FLOOR, ephemeral_low));
    }
    if ephemeral_high < u16::MAX - 1_000 {
        ranges.push((ephemeral_high + 1, u16::MAX));
    }
    if !ranges.is_empty() {
        for _ in 0..10_000 {
            let (low, high) = ranges[fastrand::usize(..ranges.len())];
            let port = fastrand::u16(low..high);
            if given.contains(&port) {
                continue;
            }
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.insert(port);
                return port;
            }
        }
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a port on 127.0.0.1");
    given.insert(port);
    port
}

/// The kernel's ephemeral port range (inclusive), or Linux's default when it cannot be read.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(str::parse::<u16>);
            Some((parts.next()?.ok()?, parts.next()?.ok()?))
        })
        .unwrap_or((32_768, 60_999))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_outside_the_ephemeral_range_bindable_and_never_repeated() {
        let (low, high) = ephemeral_range();
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len(), "a port given twice");
        for port in ports {
            assert!(!(low..=high).contains(&port), "{port} is in {low}-{high}");
            assert!(TcpListener::bind(("127.0.0.1", port)).is_ok(), "{port}");
        }
    }
}
