#!/usr/bin/env bash
# Instructions per request for the middleware-overhead variants, counted by callgrind: unlike
# throughput on a shared machine, the count moves little between runs (up to ±0.8 %).
#   bash benches/instructions.sh            # 3 runs of each variant (RUNS=7 for BENCHMARKS.md), medians
# Per request = (instructions for 1,200 requests − instructions for 200) / 1,000, on a
# current-thread runtime (client, API and token server in one thread).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p tokenkeeper-benches --bench middleware_overhead --no-run >/dev/null 2>&1
bin=$(ls -t target/release/deps/middleware_overhead-* | grep -v '\.d$' | head -1)
out=$(mktemp -d)
runs=${RUNS:-3}
declare -A med
for v in base empty floor mw; do
  counts=()
  for r in $(seq "$runs"); do
    for n in 200 1200; do
      TK_ONLY=$v TK_COUNT=$n valgrind --tool=callgrind --callgrind-out-file="$out/$v.$r.$n" "$bin" --bench >/dev/null 2>&1
    done
    a=$(awk '/^summary/ {print $2}' "$out/$v.$r.1200"); b=$(awk '/^summary/ {print $2}' "$out/$v.$r.200")
    counts+=($(( (a - b) / 1000 )))
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
