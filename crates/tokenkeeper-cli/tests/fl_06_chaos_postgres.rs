//! FL-06 with PostgreSQL: three `tokenkeeper bff` processes keep sessions and tokens in a real
//! PostgreSQL (started by the test); browsers call user-token and client-token routes on every
//! process, with 2-second access tokens and one-time refresh tokens rotating all along; the
//! database is stopped (as a crash would: `pg_ctl stop -m immediate`) and started again
//! mid-run. No session is lost, no refresh token is presented twice, and calls fail only after
//! the stop, until the database is back. The figures are printed (BENCHMARKS.md records them).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::fleet::{assert_came_through, load, Fleet};
use tokenkeeper_testing::postgres_server::OwnPostgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl_06_postgresql_restarted_under_load_on_a_fleet() {
    let seconds = std::env::var("TK_CHAOS_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let mut postgres = OwnPostgres::start().await;
    let url = postgres.url();
    let fleet = Fleet::start(
        3,
        "[postgres]\nurl_env = \"BFF_DATABASE_URL\"\nencryption_key_env = \"STORE_KEY\"",
        &[("BFF_DATABASE_URL", &url)],
    )
    .await;
    let browsers = fleet.log_in(6).await;
    assert_eq!(fleet.live_sessions(&browsers).await, 6);

    let report = load(
        &fleet,
        &browsers,
        6,
        Duration::from_secs(seconds),
        Duration::from_secs(seconds / 3),
        async { postgres.restart().await },
    )
    .await;
    assert_came_through(
        &fleet,
        &browsers,
        &format!("FL-06 PostgreSQL restarted ({seconds} s)"),
        &report,
    )
    .await;
}
