//! DPoP nonces, kept per origin (PK-09).

use std::collections::HashMap;
use std::sync::Mutex;

use url::Url;

/// The latest `DPoP-Nonce` of each server, keyed by its normalised origin (scheme, host, port)
/// — not by URL and method, which would cost an extra round trip for every new path — and
/// bounded: when full, the origin used least recently is forgotten.
///
/// Feed it from every response ([`NonceStore::update`], retries' responses included); read it
/// when building a proof ([`NonceStore::get`]).
///
/// ```
/// use tokenkeeper::dpop::NonceStore;
/// let nonces = NonceStore::new(100);
/// let api: url::Url = "https://API.example.com:443/orders?x=1".parse().unwrap();
/// nonces.set(&api, "n-1");
/// assert_eq!(nonces.get(&"https://api.example.com/other/path".parse().unwrap()).as_deref(), Some("n-1"));
/// assert_eq!(nonces.get(&"https://api.example.com:8443/".parse().unwrap()), None);
/// ```
#[derive(Debug)]
pub struct NonceStore {
    entries: Mutex<Entries>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Entries {
    by_origin: HashMap<String, (String, u64)>,
    tick: u64,
}

/// `scheme://host:port` of `url`, with the scheme's default port made explicit.
pub(crate) fn origin_key(url: &Url) -> String {
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or(0)
    )
}

impl NonceStore {
    /// A store of at most `capacity` origins (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(Entries::default()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest nonce of `url`'s origin.
    pub fn get(&self, url: &Url) -> Option<String> {
        let mut entries = self.lock();
        entries.tick += 1;
        let tick = entries.tick;
        let (nonce, used) = entries.by_origin.get_mut(&origin_key(url))?;
        *used = tick;
        Some(nonce.clone())
    }

    /// Records `nonce` as the latest of `url`'s origin; returns whether it changed.
    pub fn set(&self, url: &Url, nonce: &str) -> bool {
        let key = origin_key(url);
        let mut entries = self.lock();
        entries.tick += 1;
        let tick = entries.tick;
        if let Some((current, used)) = entries.by_origin.get_mut(&key) {
            *used = tick;
            if current == nonce {
                return false;
            }
            *current = nonce.to_owned();
            return true;
        }
        if entries.by_origin.len() >= self.capacity {
            if let Some(oldest) = entries
                .by_origin
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            {
                entries.by_origin.remove(&oldest);
            }
        }
        entries.by_origin.insert(key, (nonce.to_owned(), tick));
        true
    }

    /// Records the `DPoP-Nonce` of a response from `url`, if it has a valid one; returns
    /// whether the origin's nonce changed.
    pub fn update(&self, url: &Url, headers: &http::HeaderMap) -> bool {
        match super::challenge::dpop_nonce(headers) {
            Some(nonce) => self.set(url, nonce),
            None => false,
        }
    }

    /// How many origins are held.
    pub fn len(&self) -> usize {
        self.lock().by_origin.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn url(s: &str) -> Url {
        s.parse().unwrap()
    }

    /// PK-09: nonces per normalised origin, from any response, in a bounded store.
    #[test]
    fn pk_09_nonces_are_kept_per_origin_in_a_bounded_store() {
        let store = NonceStore::new(2);
        let mut headers = http::HeaderMap::new();
        headers.insert("DPoP-Nonce", "n1".parse().unwrap());
        assert!(store.update(&url("https://a.example/token"), &headers));
        assert!(
            !store.update(&url("https://A.EXAMPLE:443/other?q"), &headers),
            "same origin, same nonce"
        );
        assert_eq!(
            store.get(&url("https://a.example/x")).as_deref(),
            Some("n1")
        );
        assert_eq!(
            store.get(&url("http://a.example/x")),
            None,
            "another scheme"
        );
        headers.insert("dpop-nonce", "n2".parse().unwrap());
        assert!(
            store.update(&url("https://a.example/"), &headers),
            "changed"
        );

        store.set(&url("https://b.example/"), "b");
        let _ = store.get(&url("https://a.example/"));
        store.set(&url("https://c.example/"), "c");
        assert_eq!(store.len(), 2);
        assert_eq!(
            store.get(&url("https://b.example/")),
            None,
            "least recently used went"
        );
        assert_eq!(store.get(&url("https://a.example/")).as_deref(), Some("n2"));

        // An invalid header changes nothing.
        headers.insert("dpop-nonce", "bad nonce".parse().unwrap());
        assert!(!store.update(&url("https://a.example/"), &headers));
    }
}
