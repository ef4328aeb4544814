#!/usr/bin/env bash
# FL-02, FL-06: a fleet of three `tokenkeeper bff` processes under load (6 browsers, user-token
# and client-token routes, 2-second access tokens, one-time refresh tokens), and one failure
# mid-run: a Redis Cluster master killed (its replica takes over), a Sentinel master killed
# (the sentinels promote the replica), PostgreSQL crashed and started again. Each scenario runs
# RUNS times (default 3) for TK_CHAOS_SECONDS (default 30; the tests' own runs take 12) and
# prints its figures: calls, failed calls and when they happened after the failure, refreshes,
# refused refreshes (a refresh token presented twice or lost), and the tests assert 0 sessions
# lost. The servers are started by the tests, from Debian's redis-server and postgresql.
#
# Usage: bash benches/chaos.sh   (TK_CHAOS_NODE_TIMEOUT_MS sets the cluster's node timeout,
#                                 default 500)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
export TK_CHAOS_SECONDS=${TK_CHAOS_SECONDS:-30}
cargo test -q -p tokenkeeper-cli --test fl_06_chaos --test fl_02_sentinel --test fl_06_chaos_postgres --no-run 2>/dev/null
for test in fl_06_chaos fl_02_sentinel fl_06_chaos_postgres; do
  for run in $(seq "$runs"); do
    cargo test -q -p tokenkeeper-cli --test "$test" -- --nocapture 2>&1 | grep -E '^FL-0|panicked|test result: FAILED' || true
  done
done
