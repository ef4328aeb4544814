//! FL-02: three `tokenkeeper bff` processes reach Redis through Sentinel (a master, a replica,
//! 3 sentinels, started by the test) and follow a failover under load: the master is killed
//! while browsers call user-token and client-token routes on every process, with 2-second
//! access tokens and one-time refresh tokens rotating all along. No session is lost, no refresh
//! token is presented twice, and calls fail only after the kill, until the sentinels have
//! promoted the replica. The failed calls and the time to recover are printed (the chaos bench
//! records them in BENCHMARKS.md).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::fleet::{assert_came_through, load, Fleet};
use tokenkeeper_testing::redis_servers::{OwnSentinel, MASTER_NAME};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl_02_a_fleet_follows_a_sentinel_failover_under_load() {
    let seconds = std::env::var("TK_CHAOS_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let mut sentinel = OwnSentinel::start().await;
    let sentinels = sentinel
        .sentinel_urls()
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let fleet = Fleet::start(
        3,
        &format!("sentinels = [{sentinels}]\nsentinel_master = \"{MASTER_NAME}\""),
        &[],
    )
    .await;
    let browsers = fleet.log_in(6).await;
    assert_eq!(fleet.live_sessions(&browsers).await, 6);

    let old = sentinel.master_port();
    let report = load(
        &fleet,
        &browsers,
        6,
        Duration::from_secs(seconds),
        Duration::from_secs(seconds / 3),
        async {
            sentinel.kill_master();
        },
    )
    .await;
    assert_ne!(sentinel.master_port(), old, "the replica was promoted");
    assert_came_through(
        &fleet,
        &browsers,
        &format!("FL-02 sentinel failover ({seconds} s)"),
        &report,
    )
    .await;
}
