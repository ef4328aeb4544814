//! W3C trace context for OpenTelemetry (BF-23, feature `otel`): a proxied request's span
//! (`tokenkeeper.proxy`) continues the trace of a caller the host trusts — its `traceparent` —
//! and is the parent of the upstream's: the forwarded request carries the span's own
//! `traceparent` (and `tracestate`), whatever the caller sent. A caller the host does not trust
//! cannot choose the trace its request joins.
//!
//! The propagator is the process's (`opentelemetry::global::set_text_map_propagator`; the
//! `tokenkeeper` binary sets W3C trace context): without one, nothing is read or written.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        // One value only: two `traceparent`s are no trace context at all.
        let mut values = self.0.get_all(key).iter();
        let first = values.next()?;
        if values.next().is_some() {
            return None;
        }
        first.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Makes `span` (not yet entered) continue the caller's trace, when the caller is `trusted` and
/// sent a valid `traceparent`.
pub(crate) fn continue_trace(span: &tracing::Span, incoming: &HeaderMap, trusted: bool) {
    if !trusted || !incoming.contains_key(TRACEPARENT) {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(incoming)));
    // A span that cannot take a parent (not sampled, disabled) starts a trace of its own.
    let _ = span.set_parent(parent);
}

/// Replaces the caller's trace context in `outgoing` with the current span's.
pub(crate) fn propagate(outgoing: &mut HeaderMap) {
    outgoing.remove(TRACEPARENT);
    outgoing.remove(TRACESTATE);
    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut HeadersMut(outgoing))
    });
}
