//! The operations listener of a host (its own address, off unless configured): `GET /healthz`
//! (the process answers), `GET /readyz` (the host's readiness checks, run on each call with a
//! deadline), `GET /metrics` (Prometheus text format, with the `metrics` feature) and, when the
//! host has one, its administration API under `/admin/`, reached only with a bearer secret
//! ([`Ops::admin`]). Built once here for every host: the sidecar and the BFF.

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

/// A host's administration API: given a request under `/admin/` (its method, path and query,
/// the bearer secret already checked), the answer.
pub type AdminApi = Arc<
    dyn Fn(
            Method,
            String,
            Option<String>,
        ) -> Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>>
        + Send
        + Sync,
>;

/// How long `/readyz` waits for the checks.
const READY_DEADLINE: Duration = Duration::from_secs(3);

/// The shortest administration secret accepted (bytes): guessing one is then out of reach.
pub const ADMIN_SECRET_MIN: usize = 32;

/// The operations endpoints.
pub struct Ops {
    readiness: Readiness,
    admin: Option<(Vec<u8>, AdminApi)>,
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
            admin: None,
            #[cfg(feature = "metrics")]
            prometheus: PROMETHEUS.get().cloned(),
        }
    }

    /// Serves `api` under `/admin/`, for requests with `Authorization: Bearer <secret>`
    /// (compared in constant time; anything else is 401). Without it, `/admin/` is 404. Fails
    /// when the secret is shorter than [`ADMIN_SECRET_MIN`] bytes.
    pub fn admin(mut self, secret: &str, api: AdminApi) -> Result<Self, String> {
        if secret.len() < ADMIN_SECRET_MIN {
            return Err(format!(
                "the administration secret must be at least {ADMIN_SECRET_MIN} bytes"
            ));
        }
        self.admin = Some((secret.as_bytes().to_vec(), api));
        Ok(self)
    }

    /// A request under `/admin/`: 404 without an administration API, 401 without its secret.
    async fn admin_request(&self, request: Request<crate::IncomingBody>) -> Response<ProxyBody> {
        let Some((secret, api)) = &self.admin else {
            return json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "not_found"}),
            );
        };
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        if !same_secret(given, secret) {
            let mut refused = json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": "unauthorized"}),
            );
            refused
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return refused;
        }
        let (parts, _body) = request.into_parts();
        api(
            parts.method,
            parts.uri.path().to_owned(),
            parts.uri.query().map(str::to_owned),
        )
        .await
    }
}

/// Whether `given` is `secret`, in a time that depends only on the secret's length (for
/// shared secrets a host compares: the administration API's, a forward-auth proxy's).
pub fn same_secret(given: &[u8], secret: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != secret.len());
    for (i, byte) in secret.iter().enumerate() {
        diff |= given.get(i).copied().unwrap_or(0) ^ byte;
    }
    diff == 0
}

/// A JSON answer of an administration API: `status` and `value`, not cached.
pub fn admin_json(status: StatusCode, value: serde_json::Value) -> Response<ProxyBody> {
    json(status, value)
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
        let path = request.uri().path();
        if path == "/admin" || path.starts_with("/admin/") {
            return self.admin_request(request).await;
        }
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
