//! Capturing log lines in tests (to check what is logged, and what never is).

use std::sync::{Arc, Mutex};

/// Every log line written while it is installed, as text.
///
/// ```
/// let logs = tokenkeeper_testing::LogBuffer::default();
/// let _guard = logs.install(tracing::Level::INFO);
/// tracing::info!("hello");
/// assert!(logs.text().contains("hello"));
/// ```
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::fmt::Debug for LogBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogBuffer")
            .field("bytes", &self.lock().len())
            .finish()
    }
}

impl LogBuffer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn subscriber(&self, max: tracing::Level) -> impl tracing::Subscriber + Send + Sync {
        tracing_subscriber::fmt()
            .with_max_level(max)
            .with_ansi(false)
            .with_writer(self.clone())
            .finish()
    }

    /// Captures this thread's lines up to `max` until the guard drops (on a current-thread
    /// runtime: every task of the test).
    pub fn install(&self, max: tracing::Level) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(self.subscriber(max))
    }

    /// Captures every thread's lines up to `max`, for the rest of the process: use it in a test
    /// binary of its own.
    ///
    /// # Panics
    /// When a global subscriber is already installed.
    pub fn install_global(&self, max: tracing::Level) {
        if tracing::subscriber::set_global_default(self.subscriber(max)).is_err() {
            panic!("tokenkeeper-testing: a global subscriber is already installed");
        }
    }

    /// What was logged.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.lock()).into_owned()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
