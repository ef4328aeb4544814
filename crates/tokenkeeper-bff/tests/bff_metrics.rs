//! Observability (feature `metrics`): sessions started and ended, proxied requests by route and
//! status, upstream latency, token failures.
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use tokenkeeper_bff::metrics::names;
use tokenkeeper_testing::TestRecorder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bff_metrics_count_sessions_proxied_requests_and_token_failures() {
    let recorder = TestRecorder::global();
    let h = harness(Setup {
        routes: vec![("/api/metered", tokenkeeper_bff::RouteToken::User)],
        ..Setup::default()
    })
    .await;
    let browser = browser();
    let started_key = format!("{}{{frontend=default}}", names::SESSIONS_STARTED);
    let started = recorder.get(&started_key);
    log_in(&h, &browser).await;
    assert_eq!(recorder.get(&started_key), started + 1);
    assert_eq!(
        api(&browser, format!("{}/api/metered/a", h.url)).await.0,
        200
    );
    assert_eq!(
        api(&browser, format!("{}/api/metered/b", h.url)).await.0,
        200
    );
    let ok = format!(
        "{}{{frontend=default,route=/api/metered,status=200}}",
        names::PROXIED
    );
    assert_eq!(recorder.get(&ok), 2);
    let latency = format!(
        "{}{{frontend=default,route=/api/metered}}",
        names::UPSTREAM_DURATION
    );
    assert_eq!(recorder.get(&latency), 2);

    // The session's tokens are gone: a token failure, a 401, and the session ends.
    let session = h.store.find(Some("alice"), None).await.unwrap().remove(0);
    h.bff
        .oidc()
        .users()
        .store()
        .clear(&session.key())
        .await
        .unwrap();
    let ended = format!("{}{{frontend=default,reason=token}}", names::SESSIONS_ENDED);
    let before = recorder.get(&ended);
    assert_eq!(
        api(&browser, format!("{}/api/metered/c", h.url)).await.0,
        401
    );
    assert_eq!(
        recorder.get(&format!(
            "{}{{frontend=default,route=/api/metered}}",
            names::TOKEN_FAILURES
        )),
        1
    );
    assert_eq!(recorder.get(&ended), before + 1);
    assert_eq!(
        recorder.get(&format!(
            "{}{{frontend=default,route=/api/metered,status=401}}",
            names::PROXIED
        )),
        1
    );
}
