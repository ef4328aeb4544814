//! Header names remembered per thread. `HeaderName::from_bytes` copies every name that is not
//! a standard one (`x-csrf`, `sec-fetch-site`, `x-request-id`…) into an allocation of its own,
//! for every header of every message; browsers send half a dozen such names with each request.
//! Here such a name parsed once on a thread is kept in a small direct-mapped table: the next
//! message with the same name gets a clone (a reference count), after one comparison.
//!
//! Only names that begin with `x-` or `sec-` go through the table: a standard name is found by
//! `from_bytes` faster than the table could answer (callgrind), and those two prefixes are where
//! the extension names of real traffic are.
//!
//! A slot is chosen from the name's length and its first and last letters (case folded); a name
//! that lands on a taken slot replaces it. What comes back is always the name that was asked
//! for: a slot is used only when the bytes are equal to its name ignoring ASCII case, and a
//! `HeaderName` holds the lower-case form of exactly those bytes (upper-case letters are the
//! only bytes folded, and they fold to the name's own letters).

use std::cell::RefCell;

use http::header::{HeaderName, InvalidHeaderName};

/// Slots per thread (a power of two).
const SLOTS: usize = 64;
/// Longer names are parsed every time (rare, and they would take the room of common ones).
const LONGEST: usize = 48;

thread_local! {
    static NAMES: RefCell<[Option<HeaderName>; SLOTS]> =
        const { RefCell::new([const { None }; SLOTS]) };
}

/// The header name `bytes` (any case), as `HeaderName::from_bytes` would give it.
#[inline]
pub(crate) fn name(bytes: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
    // The test for the two prefixes is all a standard name pays.
    match bytes {
        [b'x' | b'X', b'-', _, ..] | [b's' | b'S', b'e' | b'E', b'c' | b'C', b'-', _, ..] => {
            remembered(bytes)
        }
        _ => HeaderName::from_bytes(bytes),
    }
}

/// An extension name, from the table or parsed (and then put there).
#[inline(never)]
fn remembered(bytes: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return HeaderName::from_bytes(bytes);
    };
    if bytes.len() > LONGEST {
        return HeaderName::from_bytes(bytes);
    }
    let slot = (bytes
        .len()
        .wrapping_mul(7)
        .wrapping_add(usize::from(first.to_ascii_lowercase()).wrapping_mul(3))
        .wrapping_add(usize::from(last.to_ascii_lowercase())))
        % SLOTS;
    let known = NAMES.try_with(|names| match &names.borrow()[slot] {
        Some(known) if known.as_str().as_bytes().eq_ignore_ascii_case(bytes) => Some(known.clone()),
        _ => None,
    });
    if let Ok(Some(known)) = known {
        return Ok(known);
    }
    let parsed = HeaderName::from_bytes(bytes)?;
    let _ = NAMES.try_with(|names| names.borrow_mut()[slot] = Some(parsed.clone()));
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::name;

    #[test]
    fn a_remembered_name_is_the_name_asked_for() {
        for bytes in [
            &b"X-CSRF"[..],
            b"x-csrf",
            b"x-csrg",
            b"x-CSRF",
            b"y-csrf",
            b"x-",
            b"sec-",
            b"Content-Type",
            b"content-type",
            b"sec-fetch-site",
            b"Sec-Fetch-Mode",
        ] {
            // Twice: parsed, then from the table.
            for _ in 0..2 {
                let expected = http::HeaderName::from_bytes(bytes).unwrap();
                assert_eq!(name(bytes).unwrap(), expected);
            }
        }
    }

    #[test]
    fn invalid_names_are_refused_every_time() {
        // `x-\x00k` has the length and the first and last letters of `x-ok`: its slot.
        name(b"x-ok").unwrap();
        for bytes in [
            &b""[..],
            b"x ok",
            b"x-ok\r",
            b"x-\x00k",
            b"x-\xffok",
            b"x-o:",
            b"sec-\n",
        ] {
            assert!(name(bytes).is_err(), "{bytes:?}");
            assert!(name(bytes).is_err(), "{bytes:?}");
        }
        let mut long = b"x-".to_vec();
        long.extend([b'a'; 100]);
        assert_eq!(name(&long).unwrap().as_str().len(), 102);
    }
}
