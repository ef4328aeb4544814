//! Following a Redis pub/sub channel of invalidations, for the in-memory tiers.

use std::time::Duration;

use futures_util::StreamExt as _;

use crate::cache::RedisTokenCache;

/// Follows `channel` for an in-memory tier while `alive()`: on every (re)connect calls `reset`
/// (messages may have been missed while disconnected, so the tier must drop what it holds),
/// then `handle` for each message. Reconnects with a backoff (100 ms doubling to 5 s). Stops
/// when `alive`, `reset` or `handle` says the tier is gone (`false`). While disconnected the
/// tier keeps what it holds: it serves through a Redis outage.
pub(crate) async fn follow(
    cache: RedisTokenCache,
    channel: String,
    alive: impl Fn() -> bool,
    mut reset: impl FnMut() -> bool,
    mut handle: impl FnMut(&str) -> bool,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        if !alive() {
            return;
        }
        let connected = async {
            let mut pubsub = cache.inner.connector.pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        if let Ok(Ok(mut pubsub)) = tokio::time::timeout(Duration::from_secs(2), connected).await {
            delay = Duration::from_millis(100);
            if !reset() {
                return;
            }
            tracing::debug!(%channel, "subscribed to invalidations");
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let Ok(payload) = message.get_payload::<String>() else {
                    continue;
                };
                if !handle(&payload) {
                    return;
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
