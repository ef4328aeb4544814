//! One outage gives one warning and one count on `tokenkeeper_redis_outages_total`
//! (feature `metrics`). Its own test binary: it installs the process's log and metric sinks.
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use tokenkeeper::{CacheKey, TokenCache};
use tokenkeeper_redis::{RedisOptions, RedisTokenCache};

#[derive(Default)]
struct Count(AtomicU64);

impl CounterFn for Count {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

#[derive(Clone, Default)]
struct Outages(Arc<Count>);

impl Recorder for Outages {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if key.name() == "tokenkeeper_redis_outages_total" {
            Counter::from_arc(self.0.clone())
        } else {
            Counter::noop()
        }
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[tokio::test]
async fn rs_one_outage_one_warning_one_count() {
    let outages = Outages::default();
    metrics::set_global_recorder(outages.clone()).unwrap();
    let logs = tokenkeeper_testing::LogBuffer::default();
    logs.install_global(tracing::Level::WARN);

    // Nothing listens on this port: Redis is "down" for the whole test.
    let port = tokenkeeper_testing::free_port();
    let cache = RedisTokenCache::new(
        &format!("redis://127.0.0.1:{port}"),
        RedisOptions {
            retry_pause: Duration::ZERO,
            timeout: Duration::from_millis(100),
            ..RedisOptions::plaintext()
        },
    )
    .unwrap();
    let key = CacheKey::from_canonical("cc&client=outage");
    for _ in 0..20 {
        assert!(cache.get(&key).await.is_err());
    }
    assert_eq!(cache.outages(), 1);
    assert_eq!(outages.0 .0.load(Ordering::Relaxed), 1, "one count");
    let text = logs.text();
    assert_eq!(
        text.matches("Redis is unreachable").count(),
        1,
        "one warning: {text}"
    );
}
