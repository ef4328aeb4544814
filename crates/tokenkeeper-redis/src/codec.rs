//! The stored form of a token: versioned, optionally sealed.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokenkeeper::{AccessToken, CacheError, CachedToken, Scope, Timestamp, TokenType};

use tokenkeeper::Encryption;

/// Plain entries start with this; a change of format changes the tag, and entries of another
/// tag are read as misses, never as errors.
const PLAIN: &[u8] = b"tk1:";
/// Sealed entries start with this.
const SEALED: &[u8] = b"tk1e:";

#[derive(Serialize, Deserialize)]
struct StoredV1 {
    at: String,
    tt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sc: Option<String>,
    ia: u64,
    ra: u64,
    ea: u64,
}

/// Why a stored entry was not used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unreadable {
    /// Another format version (or not ours): a miss, left alone.
    OtherVersion,
    /// Does not decrypt or does not parse: a miss, and the entry is deleted.
    Damaged,
}

pub(crate) fn encode_session(
    tokens: &tokenkeeper::user::UserTokens,
    aad: &[u8],
    encryption: Option<&Encryption>,
) -> Result<Vec<u8>, CacheError> {
    tokens.seal_stored(aad, encryption)
}

pub(crate) fn decode_session(
    bytes: &[u8],
    aad: &[u8],
    encryption: Option<&Encryption>,
) -> Result<tokenkeeper::user::UserTokens, Unreadable> {
    tokenkeeper::user::UserTokens::open_stored(bytes, aad, encryption).map_err(|e| match e {
        tokenkeeper::user::StoredSessionError::OtherFormat => Unreadable::OtherVersion,
        tokenkeeper::user::StoredSessionError::Damaged => Unreadable::Damaged,
    })
}

pub(crate) fn encode(
    token: &CachedToken,
    aad: &[u8],
    encryption: Option<&Encryption>,
) -> Result<Vec<u8>, CacheError> {
    let stored = StoredV1 {
        at: token.access_token().secret().to_owned(),
        tt: token.token_type().to_string(),
        sc: token.scope().map(ToString::to_string),
        ia: token.issued_at().as_millis(),
        ra: token.refresh_at().as_millis(),
        ea: token.expires_at().as_millis(),
    };
    let json = serde_json::to_vec(&stored).map_err(|e| CacheError::new(format!("encode: {e}")))?;
    Ok(match encryption {
        Some(encryption) => [SEALED, &encryption.seal(aad, &json)?].concat(),
        None => [PLAIN, &json].concat(),
    })
}

pub(crate) fn decode(
    bytes: &[u8],
    aad: &[u8],
    encryption: Option<&Encryption>,
) -> Result<Arc<CachedToken>, Unreadable> {
    let json = if let Some(sealed) = bytes.strip_prefix(SEALED) {
        let encryption = encryption.ok_or(Unreadable::Damaged)?;
        encryption.open(aad, sealed).ok_or(Unreadable::Damaged)?
    } else if let Some(plain) = bytes.strip_prefix(PLAIN) {
        if encryption.is_some() {
            // Encryption is on: a plaintext entry is not trusted.
            return Err(Unreadable::Damaged);
        }
        plain.to_vec()
    } else {
        return Err(Unreadable::OtherVersion);
    };
    let stored: StoredV1 = serde_json::from_slice(&json).map_err(|_| Unreadable::Damaged)?;
    let token = CachedToken::new(
        AccessToken::new(stored.at),
        TokenType::parse(&stored.tt),
        stored.sc.as_deref().map(Scope::parse),
        Timestamp::from_millis(stored.ia),
        Timestamp::from_millis(stored.ra),
        Timestamp::from_millis(stored.ea),
    )
    .map_err(|_| Unreadable::Damaged)?;
    Ok(Arc::new(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> CachedToken {
        CachedToken::new(
            AccessToken::new("abc.def"),
            TokenType::Bearer,
            Some(Scope::parse("a b")),
            Timestamp::from_millis(1),
            Timestamp::from_millis(2),
            Timestamp::from_millis(3),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn round_trips_plain_and_sealed_and_rejects_the_rest() {
        let plain = encode(&token(), b"k", None).unwrap_or_default();
        let back = decode(&plain, b"k", None).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(back.same_token(&token()));
        assert_eq!(
            back.scope().map(ToString::to_string).as_deref(),
            Some("a b")
        );
        assert_eq!(back.expires_at(), Timestamp::from_millis(3));

        let enc = Encryption::new("k1", &[1; 32]).unwrap_or_else(|e| panic!("{e}"));
        let sealed = encode(&token(), b"k", Some(&enc)).unwrap_or_default();
        assert!(
            !sealed.windows(7).any(|w| w == b"abc.def"),
            "the token is not in the clear"
        );
        assert!(decode(&sealed, b"k", Some(&enc)).is_ok());
        assert_eq!(
            decode(&sealed, b"other-key", Some(&enc)).err(),
            Some(Unreadable::Damaged)
        );
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            decode(&tampered, b"k", Some(&enc)).err(),
            Some(Unreadable::Damaged)
        );
        assert_eq!(
            decode(b"tk9:{}", b"k", None).err(),
            Some(Unreadable::OtherVersion)
        );
        assert_eq!(
            decode(&plain, b"k", Some(&enc)).err(),
            Some(Unreadable::Damaged)
        );

        // Rotation: a new current key still opens entries of the accepted old one.
        let rotated = Encryption::new("k2", &[2; 32])
            .and_then(|e| e.accept("k1", &[1; 32]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(decode(&sealed, b"k", Some(&rotated)).is_ok());
        let without_old = Encryption::new("k2", &[2; 32]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            decode(&sealed, b"k", Some(&without_old)).err(),
            Some(Unreadable::Damaged)
        );
    }

    /// RS-03 for what Redis hands back: mutated plain and sealed entries (tokens and sessions)
    /// decode to a value or `Unreadable`, never a panic; a sealed entry that decodes is the one
    /// that was written.
    #[test]
    fn rs_03_stored_entries_survive_any_bytes() {
        use tokenkeeper_testing::fuzz::{cases, Mutator};
        let enc = Encryption::new("k1", &[1; 32]).unwrap_or_else(|e| panic!("{e}"));
        let mut session = tokenkeeper::user::UserTokens {
            refresh_token: Some("rt-1".into()),
            ..Default::default()
        };
        session.access_tokens.insert("", Arc::new(token()));
        let seeds = vec![
            encode(&token(), b"k", None).unwrap_or_default(),
            encode(&token(), b"k", Some(&enc)).unwrap_or_default(),
            encode_session(&session, b"k", None).unwrap_or_default(),
            encode_session(&session, b"k", Some(&enc)).unwrap_or_default(),
        ];
        let mut mutator = Mutator::from_env();
        let mut decoded = 0;
        for case in 0..cases(5000) {
            let input = mutator.mutate(&seeds);
            let outcome = std::panic::catch_unwind(|| {
                for encryption in [None, Some(&enc)] {
                    if let Ok(token) = decode(&input, b"k", encryption) {
                        if encryption.is_some() {
                            assert!(token.same_token(&super::tests::token()), "a forged entry");
                        }
                        return true;
                    }
                    if let Ok(tokens) = decode_session(&input, b"k", encryption) {
                        if encryption.is_some() {
                            assert_eq!(tokens.to_json(), session.to_json(), "a forged session");
                        }
                        return true;
                    }
                }
                false
            });
            match outcome {
                Ok(ok) => decoded += usize::from(ok),
                Err(_) => panic!(
                    "case {case} (TK_FUZZ_SEED={}) panicked on {:?}",
                    mutator.seed(),
                    String::from_utf8_lossy(&input)
                ),
            }
        }
        assert!(decoded > 0, "valid entries still decode");
    }
}
