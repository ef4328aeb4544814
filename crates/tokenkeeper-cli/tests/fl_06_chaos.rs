//! FL-06: chaos on a fleet. Three `tokenkeeper bff` processes share a Redis Cluster (3 masters,
//! 3 replicas, started by the test); browsers call user-token and client-token routes on every
//! process, with 2-second access tokens and one-time refresh tokens rotating all along; a master
//! is killed mid-run. No session is lost, no refresh token is presented twice (one refresh per
//! cycle, before and after), and calls fail only after the kill, until its replica has taken
//! over. The figures are printed; `benches/chaos.sh` runs it longer and BENCHMARKS.md records
//! them.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::fleet::{assert_came_through, load, Fleet};
use tokenkeeper_testing::redis_servers::OwnCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl_06_a_master_killed_under_load_on_a_cluster_fleet() {
    let node_timeout = std::env::var("TK_CHAOS_NODE_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let seconds = std::env::var("TK_CHAOS_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let mut cluster = OwnCluster::start_with_node_timeout(node_timeout).await;
    let nodes = cluster
        .urls()
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let fleet = Fleet::start(3, &format!("cluster = [{nodes}]"), &[]).await;
    let browsers = fleet.log_in(6).await;
    assert_eq!(fleet.live_sessions(&browsers).await, 6);

    let victim = cluster.masters()[0];
    let report = load(
        &fleet,
        &browsers,
        6,
        Duration::from_secs(seconds),
        Duration::from_secs(seconds / 3),
        async { cluster.kill(victim) },
    )
    .await;
    assert_came_through(
        &fleet,
        &browsers,
        &format!("FL-06 cluster master killed (node timeout {node_timeout} ms, {seconds} s)"),
        &report,
    )
    .await;
}
