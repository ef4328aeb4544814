//! Encryption at rest: AES-256-GCM with key ids, so keys can rotate.

use std::fmt;

use crate::error::CacheError;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// Keys for encrypting stored tokens at rest (AES-256-GCM): used by the Redis backends
/// (`tokenkeeper-redis`) and the tower-sessions user token store (`tokenkeeper-axum`).
///
/// Entries are sealed with the current key and carry its id; any key added with
/// [`Encryption::accept`] still opens older entries, so a key can be rotated without losing the
/// cache. The stores bind what identifies an entry (its key, and for versioned entries its
/// version) into the AEAD's associated data: an entry copied under another key, or put back in
/// place of a newer version, does not open. An entry that does not open is treated as a miss and
/// deleted.
///
/// ```
/// use tokenkeeper::Encryption;
/// let encryption = Encryption::new("2026-11", &[7u8; 32])?
///     .accept("2026-05", &[6u8; 32])?;
/// assert_eq!(encryption.current_key_id(), "2026-11");
/// # Ok::<(), tokenkeeper::CacheError>(())
/// ```
pub struct Encryption {
    current: usize,
    keys: Vec<(String, LessSafeKey)>,
    rng: SystemRandom,
}

impl fmt::Debug for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encryption")
            .field("current", &self.keys[self.current].0)
            .field(
                "key_ids",
                &self.keys.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn key(id: &str, bytes: &[u8; 32]) -> Result<(String, LessSafeKey), CacheError> {
    if id.is_empty() || id.len() > 64 || !id.is_ascii() {
        return Err(CacheError::new(
            "an encryption key id must be 1 to 64 ASCII characters",
        ));
    }
    let unbound = UnboundKey::new(&AES_256_GCM, bytes)
        .map_err(|_| CacheError::new("invalid AES-256-GCM key"))?;
    Ok((id.to_owned(), LessSafeKey::new(unbound)))
}

impl Encryption {
    /// A 32-byte key from its standard base64 form (how keys travel in environment variables),
    /// surrounding whitespace ignored; `None` for anything else.
    ///
    /// ```
    /// let key = tokenkeeper::Encryption::key_from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    /// assert_eq!(key, Some([0u8; 32]));
    /// assert_eq!(tokenkeeper::Encryption::key_from_base64("c2hvcnQ="), None);
    /// ```
    pub fn key_from_base64(text: &str) -> Option<[u8; 32]> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()?;
        <[u8; 32]>::try_from(bytes).ok()
    }

    /// Encrypts with the 32-byte key `bytes`, named `id`.
    pub fn new(id: &str, bytes: &[u8; 32]) -> Result<Self, CacheError> {
        Ok(Self {
            current: 0,
            keys: vec![key(id, bytes)?],
            rng: SystemRandom::new(),
        })
    }

    /// Also opens entries sealed with this (older) key.
    pub fn accept(mut self, id: &str, bytes: &[u8; 32]) -> Result<Self, CacheError> {
        let key = key(id, bytes)?;
        if self.keys.iter().any(|(k, _)| *k == key.0) {
            return Err(CacheError::new(format!(
                "encryption key id {id:?} is given twice"
            )));
        }
        self.keys.push(key);
        Ok(self)
    }

    /// The id of the key new entries are sealed with.
    pub fn current_key_id(&self) -> &str {
        &self.keys[self.current].0
    }

    /// Seals `plaintext`, authenticating `aad` with it:
    /// `id_len (1) | id | nonce (12) | ciphertext | tag`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CacheError> {
        let (id, key) = &self.keys[self.current];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| CacheError::new("no randomness for a nonce"))?;
        let mut body = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        )
        .map_err(|_| CacheError::new("encryption failed"))?;
        let mut out = Vec::with_capacity(1 + id.len() + NONCE_LEN + body.len());
        out.push(id.len() as u8);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens a sealed entry with the same `aad`; `None` when it does not open (tampered, other
    /// associated data, unknown key id).
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let (&id_len, rest) = sealed.split_first()?;
        let id_len = usize::from(id_len);
        if rest.len() < id_len + NONCE_LEN {
            return None;
        }
        let (id, rest) = rest.split_at(id_len);
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let (_, key) = self.keys.iter().find(|(k, _)| k.as_bytes() == id)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = key.open_in_place(nonce, Aad::from(aad), &mut body).ok()?;
        Some(plain.to_vec())
    }
}
