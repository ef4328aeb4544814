//! OpenTelemetry for `tokenkeeper bff` (BF-23, feature `otel`): `[telemetry]` makes every
//! `tokenkeeper.*` span (a proxied request: frontend, route, upstream, method, status; a
//! management request: frontend) an OpenTelemetry span, exported in batches over OTLP/HTTP
//! (JSON) to the collector, and sets W3C trace context as the process's propagator (the engine
//! reads and writes `traceparent` with it). Logs are not affected: `RUST_LOG` filters them only.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tokenkeeper_bff::config::ValidatedTelemetry;
use tracing_subscriber::Layer as _;

/// The tracing layer that makes spans OpenTelemetry's, and its provider (flush it at exit).
pub(crate) fn layer(
    settings: &ValidatedTelemetry,
) -> anyhow::Result<(
    Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>,
    SdkTracerProvider,
)> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpJson)
        .with_endpoint(settings.endpoint.clone())
        .with_timeout(std::time::Duration::from_secs(10))
        .with_headers(Default::default())
        .build()
        .map_err(|e| anyhow::anyhow!("telemetry.otlp_traces_endpoint: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sample_ratio,
        ))))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let tracer = provider.tracer("tokenkeeper");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.is_span() && meta.name().starts_with("tokenkeeper.")
        }))
        .boxed();
    Ok((layer, provider))
}

/// Exports what is left and stops the exporter (at exit, after SIGTERM's drain: BF-24).
pub(crate) fn flush(provider: SdkTracerProvider) {
    if let Err(error) = provider.shutdown() {
        tracing::warn!(%error, "the last spans could not be exported");
    }
}
