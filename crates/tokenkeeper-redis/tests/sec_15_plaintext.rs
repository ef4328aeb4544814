//! SEC-15: no plaintext in Redis by accident.
#![allow(clippy::unwrap_used)]

use tokenkeeper_redis::{RedisOptions, RedisTokenCache};

/// SEC-15: a cache without an encryption key starts only when plaintext is asked for, and then
/// says so in a gauge (and a warning), not only in the code.
#[cfg(feature = "metrics")]
#[test]
fn sec_15_plaintext_is_refused_unless_asked_for_and_then_shows_in_a_gauge() {
    let recorder = tokenkeeper_testing::TestRecorder::global();
    let refused = RedisTokenCache::new("redis://127.0.0.1:6379", RedisOptions::default());
    assert!(refused.unwrap_err().to_string().contains("plaintext"));
    let both = RedisTokenCache::new(
        "redis://127.0.0.1:6379",
        RedisOptions {
            encryption: Some(tokenkeeper_redis::Encryption::new("k", &[1; 32]).unwrap()),
            ..RedisOptions::plaintext()
        },
    );
    assert!(both.is_err(), "a key and plaintext: choose one");
    let gauge = "tokenkeeper_redis_plaintext{prefix=sec15-plain}";
    assert_eq!(recorder.get(gauge), 0);
    RedisTokenCache::new(
        "redis://127.0.0.1:6379",
        RedisOptions::plaintext().prefix("sec15-plain"),
    )
    .unwrap();
    assert_eq!(recorder.get(gauge), 1);
}
