#!/usr/bin/env bash
# Instructions per request for the middleware-overhead variants, counted by callgrind: unlike
# throughput on a shared machine, the count is steady between runs.
#   bash benches/instructions.sh            # 3 runs of each variant (RUNS=7 for BENCHMARKS.md), medians
# Per request = the instructions between two markers around 1,000 sequential requests (after
# 200 to warm up) / 1,000, on a current-thread runtime (client, API and token server in one
# thread). callgrind dumps its counters when each marker is entered (--dump-before), so the
# start-up — whose entropy gathering (aws-lc's jitter entropy) varies by ~1 M instructions
# from run to run — is not in the figure.
# glibc's malloc then still moves the count by up to ±0.9 % between runs (its fast bins and
# per-thread cache end up in one of a few states after start-up). With MALLOC=steady (the
# default) the per-thread cache and fast bins are off, and the count repeats to ±0.03 %; every
# allocation then costs its full path, which weighs allocations more, not less. MALLOC=default
# keeps glibc's defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p tokenkeeper-benches --bench middleware_overhead --no-run >/dev/null 2>&1
bin=$(ls -t target/release/deps/middleware_overhead-* | grep -v '\.d$' | head -1)
out=$(mktemp -d)
runs=${RUNS:-3}
if [ "${MALLOC:-steady}" = steady ]; then
  export GLIBC_TUNABLES=glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0
fi
declare -A med
for v in base empty floor mw; do
  counts=()
  for r in $(seq "$runs"); do
    rm -f "$out/$v.$r"*
    TK_ONLY=$v TK_COUNT=1000 valgrind --tool=callgrind --dump-before='*measure_begin*' \
      --dump-before='*measure_end*' --callgrind-out-file="$out/$v.$r" "$bin" --bench >/dev/null 2>&1
    # Part 2: from the begin marker to the end marker.
    counts+=($(( $(awk '/^summary/ {print $2}' "$out/$v.$r.2") / 1000 )))
  done
  med[$v]=$(printf '%s\n' "${counts[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "$v: ${counts[*]} instructions/request (median ${med[$v]})"
done
awk -v b="${med[base]}" -v e="${med[empty]}" -v f="${med[floor]}" -v m="${med[mw]}" 'BEGIN {
  printf "ratio to plain reqwest with a static header (baseline):\n"
  printf "  reqwest-middleware, no middleware:        %.4f\n", b / e
  printf "  reqwest-middleware, static-header floor:  %.4f\n", b / f
  printf "  reqwest-middleware, TokenMiddleware:      %.4f\n", b / m
  printf "TokenMiddleware vs the floor:               %.4f\n", f / m
}'
rm -rf "$out"
