//! The operations listener of a host (its own address, off unless configured): `GET /healthz`
//! (the process answers), `GET /readyz` (the host's readiness checks, run on each call with a
//! deadline) and `GET /metrics` (Prometheus text format, with the `metrics` feature). Built once
//! here for every host: the sidecar now, the BFF next.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use crate::body::ProxyBody;
use crate::server::{Handler, Peer};

/// One readiness check's outcome: `Err(reason)` when not ready (no secret in the reason).
pub type CheckResult = Result<(), String>;

/// A host's readiness checks: named futures, run on each `/readyz`.
pub type Readiness =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Vec<(String, CheckResult)>> + Send>> + Send + Sync>;

/// How long `/readyz` waits for the checks.
const READY_DEADLINE: Duration = Duration::from_secs(3);

/// The operations endpoints.
pub struct Ops {
    readiness: Readiness,
    #[cfg(feature = "metrics")]
    prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops").finish_non_exhaustive()
    }
}

impl Ops {
    /// Endpoints answering `/readyz` with `readiness`, and `/metrics` from the process's
    /// Prometheus recorder ([`install_prometheus`]) when there is one.
    pub fn new(readiness: Readiness) -> Self {
        Self {
            readiness,
            #[cfg(feature = "metrics")]
            prometheus: PROMETHEUS.get().cloned(),
        }
    }
}

#[cfg(feature = "metrics")]
static PROMETHEUS: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
    std::sync::OnceLock::new();

/// Installs the process's metrics recorder (Prometheus text format), once; later calls are
/// no-ops. Call it before building engines, so that their counters record into it. Fails when
/// another recorder is installed already.
#[cfg(feature = "metrics")]
pub fn install_prometheus() -> Result<(), String> {
    if PROMETHEUS.get().is_some() {
        return Ok(());
    }
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| e.to_string())?;
    let _ = PROMETHEUS.set(handle);
    Ok(())
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

impl Handler for Ops {
    async fn handle(
        &self,
        request: Request<crate::IncomingBody>,
        _peer: Peer,
    ) -> Response<ProxyBody> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return json(
                StatusCode::METHOD_NOT_ALLOWED,
                serde_json::json!({"error": "method_not_allowed"}),
            );
        }
        match request.uri().path() {
            "/healthz" => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
            "/readyz" => {
                let checks = tokio::time::timeout(READY_DEADLINE, (self.readiness)()).await;
                let Ok(checks) = checks else {
                    return json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        serde_json::json!({"status": "not_ready", "checks": {"all": "timed out"}}),
                    );
                };
                let ready = checks.iter().all(|(_, r)| r.is_ok());
                let detail: serde_json::Map<String, serde_json::Value> = checks
                    .into_iter()
                    .map(|(name, result)| {
                        let value = match result {
                            Ok(()) => "ok".to_owned(),
                            Err(reason) => reason,
                        };
                        (name, serde_json::Value::String(value))
                    })
                    .collect();
                let (status, word) = if ready {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
                };
                json(
                    status,
                    serde_json::json!({"status": word, "checks": detail}),
                )
            }
            "/metrics" => metrics_page(self),
            _ => json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "not_found"}),
            ),
        }
    }
}

#[cfg(feature = "metrics")]
fn metrics_page(ops: &Ops) -> Response<ProxyBody> {
    match &ops.prometheus {
        Some(handle) => {
            let mut response = Response::new(ProxyBody::full(handle.render()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        None => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "no_metrics_recorder"}),
        ),
    }
}

#[cfg(not(feature = "metrics"))]
fn metrics_page(_ops: &Ops) -> Response<ProxyBody> {
    json(
        StatusCode::NOT_FOUND,
        serde_json::json!({"error": "built_without_metrics"}),
    )
}
