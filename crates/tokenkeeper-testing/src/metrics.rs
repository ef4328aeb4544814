//! A metrics recorder for tests: counts every counter increment and histogram record, and keeps
//! every gauge's value (rounded down), under `name{label=value,...}` (labels sorted).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

#[derive(Default)]
struct Cell(AtomicU64);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, value: f64) {
        self.0.fetch_add(value as u64, Ordering::Relaxed);
    }
    fn decrement(&self, value: f64) {
        self.0.fetch_sub(value as u64, Ordering::Relaxed);
    }
    fn set(&self, value: f64) {
        self.0.store(value as u64, Ordering::Relaxed);
    }
}

impl HistogramFn for Cell {
    fn record(&self, _value: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The process's test recorder ([`TestRecorder::global`]): counters add up, histograms count
/// their records.
///
/// ```
/// let recorder = tokenkeeper_testing::TestRecorder::global();
/// metrics::counter!("demo_total", "client" => "a").increment(2);
/// assert_eq!(recorder.get("demo_total{client=a}"), 2);
/// ```
#[derive(Default, Clone)]
pub struct TestRecorder(Arc<Mutex<HashMap<String, Arc<Cell>>>>);

impl std::fmt::Debug for TestRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRecorder").finish_non_exhaustive()
    }
}

impl TestRecorder {
    /// The recorder installed for this process (installed on first use).
    ///
    /// # Panics
    /// When another global recorder was installed first.
    pub fn global() -> &'static TestRecorder {
        static RECORDER: OnceLock<TestRecorder> = OnceLock::new();
        RECORDER.get_or_init(|| {
            let recorder = TestRecorder::default();
            if metrics::set_global_recorder(recorder.clone()).is_err() {
                panic!("another metrics recorder is installed");
            }
            recorder
        })
    }

    fn cell(&self, key: &Key) -> Arc<Cell> {
        let mut name = key.name().to_owned();
        let mut labels: Vec<_> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        if !labels.is_empty() {
            name = format!("{name}{{{}}}", labels.join(","));
        }
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name)
            .or_default()
            .clone()
    }

    /// The value of `name` (`metric{label=value,...}`, labels sorted); 0 when never recorded.
    pub fn get(&self, name: &str) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .map(|c| c.0.load(Ordering::Relaxed))
            .unwrap_or(0)
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.cell(key))
    }
}
