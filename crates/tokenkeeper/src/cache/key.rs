//! Cache keys.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, OnceLock};

/// The identity of a cached token: a canonical text of every input that changes the token.
///
/// For client credentials the text holds the client name, the normalised scope set, the sorted
/// resources, the sorted extra parameters and (later) the DPoP key thumbprint, each value
/// form-urlencoded so no two inputs can produce the same text. The hash is computed once, when
/// the key is made, so a lookup hashes a single `u64`.
#[derive(Clone)]
pub struct CacheKey {
    hash: u64,
    text: Arc<str>,
}

fn hasher_state() -> &'static std::collections::hash_map::RandomState {
    static STATE: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    STATE.get_or_init(std::collections::hash_map::RandomState::new)
}

impl CacheKey {
    /// A key from its canonical text. Use the managers' key builders rather than writing texts by
    /// hand.
    pub fn from_canonical(text: impl Into<Arc<str>>) -> Self {
        let text = text.into();
        let hash = hasher_state().hash_one(&*text);
        Self { hash, text }
    }

    /// The canonical text (it holds no secret; it is safe to use as a Redis key).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The hash computed when the key was made.
    #[inline]
    pub(crate) fn hash_value(&self) -> u64 {
        self.hash
    }
}

impl PartialEq for CacheKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && (Arc::ptr_eq(&self.text, &other.text) || self.text == other.text)
    }
}

impl Eq for CacheKey {}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.text)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A hasher that passes through the `u64` a [`CacheKey`] already computed.
#[derive(Default, Clone, Copy, Debug)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than `CacheKey`; mix the bytes in (FNV-1a).
        let mut h = self.0 ^ 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Builds [`KeyHasher`]s.
pub type BuildKeyHasher = std::hash::BuildHasherDefault<KeyHasher>;

/// Writes canonical key texts: `name=value` pairs, each value form-urlencoded, joined by `&`.
pub(crate) struct KeyWriter(String);

impl KeyWriter {
    pub(crate) fn new(kind: &str) -> Self {
        Self(kind.to_owned())
    }

    pub(crate) fn field(&mut self, name: &str, value: &str) -> &mut Self {
        self.0.push('&');
        self.0.push_str(name);
        self.0.push('=');
        self.0
            .extend(url::form_urlencoded::byte_serialize(value.as_bytes()));
        self
    }

    pub(crate) fn finish(self) -> CacheKey {
        CacheKey::from_canonical(self.0)
    }
}
