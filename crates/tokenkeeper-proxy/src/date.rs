//! The `Date` header of responses (RFC 9110 §6.6.1), formatted once a second per thread.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// An IMF-fixdate is always this long: `Sun, 06 Nov 1994 08:49:37 GMT`.
const LENGTH: usize = 29;

thread_local! {
    static CACHED: RefCell<(u64, [u8; LENGTH])> = const { RefCell::new((u64::MAX, [b' '; LENGTH])) };
}

/// Calls `f` with the current time as an IMF-fixdate.
pub(crate) fn with_now<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            let text = httpdate::fmt_http_date(now);
            if text.len() == LENGTH {
                cached.1.copy_from_slice(text.as_bytes());
                cached.0 = second;
            }
        }
        f(&cached.1)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_imf_fixdates() {
        let text = super::with_now(|date| String::from_utf8_lossy(date).into_owned());
        assert_eq!(text.len(), super::LENGTH);
        assert!(text.ends_with(" GMT"), "{text}");
        assert!(httpdate::parse_http_date(&text).is_ok(), "{text}");
    }
}
