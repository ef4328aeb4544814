//! `tokenkeeper demo`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager, LifetimePolicy};
use tokenkeeper_testing::{TestClient, TestServer};

/// Options of `tokenkeeper demo`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DemoArgs {
    /// Concurrent workers calling the API.
    #[arg(long, default_value_t = 8)]
    pub(crate) workers: usize,
    /// How long the workers run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Lifetime (`expires_in`) of the tokens the server issues, in seconds.
    #[arg(long, default_value_t = 3)]
    pub(crate) token_lifetime: u64,
}

/// What the demo measured.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub(crate) workers: usize,
    pub(crate) duration: Duration,
    pub(crate) token_lifetime: u64,
    pub(crate) requests: u64,
    pub(crate) failures: u64,
    pub(crate) token_requests: u64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
}

impl Report {
    pub(crate) fn hit_rate(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        1.0 - self.token_requests as f64 / self.requests as f64
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "tokenkeeper demo — client credentials through the reqwest middleware"
        )?;
        writeln!(
            f,
            "  workers: {}   duration: {:.1} s   token lifetime: {} s",
            self.workers,
            self.duration.as_secs_f64(),
            self.token_lifetime
        )?;
        writeln!(f, "  API requests made:     {}", self.requests)?;
        writeln!(f, "  failed API requests:   {}", self.failures)?;
        writeln!(f, "  token requests made:   {}", self.token_requests)?;
        writeln!(
            f,
            "  cache hit rate:        {:.4} %  (1 − token requests / API requests)",
            self.hit_rate() * 100.0
        )?;
        writeln!(
            f,
            "  API latency p50 / p99: {:.1} µs / {:.1} µs",
            self.p50.as_secs_f64() * 1e6,
            self.p99.as_secs_f64() * 1e6
        )?;
        write!(
            f,
            "  throughput:            {:.0} requests/s",
            self.requests as f64 / self.duration.as_secs_f64().max(1e-9)
        )
    }
}

/// A protected API: answers 200 to a request carrying a valid token of the demo server.
async fn protected(
    axum::extract::State(server): axum::extract::State<Arc<TestServer>>,
    headers: HeaderMap,
) -> axum::response::Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token.map(|t| server.verify_access_token(t)) {
        Some(Ok(_)) => (StatusCode::OK, "{\"items\":[]}").into_response(),
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.workers > 0, "--workers must be at least 1");
    anyhow::ensure!(
        args.duration.is_finite() && args.duration > 0.0 && args.duration <= 86_400.0,
        "--duration must be between 0 and 86400 seconds"
    );
    anyhow::ensure!(
        args.token_lifetime > 0,
        "--token-lifetime must be at least 1"
    );
    let server = Arc::new(
        TestServer::builder()
            .client(TestClient::new("demo-worker", "demo-secret"))
            .expires_in(Some(args.token_lifetime))
            .start()
            .await,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the API port")?;
    let api_url = format!("http://{}/items", listener.local_addr()?);
    let app = axum::Router::new()
        .route("/items", axum::routing::get(protected))
        .with_state(server.clone());
    let api = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    // A short skew so that short demo tokens are used for most of their life.
    let skew = Duration::from_secs(args.token_lifetime).mul_f64(0.2);
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "catalog",
            ClientConfig::from_issuer(server.issuer(), "demo-worker", "demo-secret")
                .scope("catalog.read"),
        )
        .lifetime_policy(LifetimePolicy {
            skew,
            ..LifetimePolicy::default()
        })
        .build()?;
    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(tokens.middleware("catalog")?)
        .build();

    let duration = Duration::from_secs_f64(args.duration);
    let started = tokio::time::Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::with_capacity(args.workers);
    for _ in 0..args.workers {
        let http = http.clone();
        let url = api_url.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            while tokio::time::Instant::now() < deadline {
                let t0 = tokio::time::Instant::now();
                let ok = match http.get(&url).send().await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        let _ = response.bytes().await;
                        ok
                    }
                    Err(_) => false,
                };
                latencies.push(t0.elapsed());
                if !ok {
                    failures += 1;
                }
            }
            (latencies, failures)
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    for worker in workers {
        let (l, f) = worker.await.context("a worker panicked")?;
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed();
    api.abort();
    latencies.sort_unstable();
    let pct = |p: f64| -> Duration {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let idx = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[idx.min(latencies.len() - 1)]
    };
    Ok(Report {
        workers: args.workers,
        duration: elapsed,
        token_lifetime: args.token_lifetime,
        requests: latencies.len() as u64,
        failures,
        token_requests: server.token_requests("client_credentials"),
        p50: pct(0.5),
        p99: pct(0.99),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn demo_runs_and_reports_token_reuse() {
        let report = run(DemoArgs {
            workers: 4,
            duration: 2.5,
            token_lifetime: 1,
        })
        .await
        .unwrap_or_else(|e| panic!("demo failed: {e:#}"));
        assert_eq!(report.failures, 0, "{report}");
        assert!(report.requests > 100, "{report}");
        // Tokens of 1 s over 2.5 s: a handful of token requests, not one per API request.
        assert!(report.token_requests >= 2, "{report}");
        assert!(report.token_requests <= 12, "{report}");
        assert!(report.hit_rate() > 0.9, "{report}");
        assert!(report.to_string().contains("p50"));
    }

    #[tokio::test]
    async fn demo_refuses_bad_arguments() {
        for args in [
            DemoArgs {
                workers: 0,
                duration: 1.0,
                token_lifetime: 1,
            },
            DemoArgs {
                workers: 1,
                duration: -1.0,
                token_lifetime: 1,
            },
            DemoArgs {
                workers: 1,
                duration: 1.0,
                token_lifetime: 0,
            },
        ] {
            assert!(run(args).await.is_err());
        }
    }
}
