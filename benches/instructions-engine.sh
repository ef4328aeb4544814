#!/usr/bin/env bash
# Instructions per proxied request of tokenkeeper's hosts (EN-02, SC-06), counted by callgrind:
# steadier than time on a shared machine. Each host runs one worker under valgrind in front of
# an nginx upstream (`return 200`); wrk (-t1 -c4) warms it up, callgrind's counters are zeroed
# (`callgrind_control -z`), wrk runs again, and the counters are dumped (`-d`): instructions in
# that window / requests wrk made. User space only.
#
#   bash benches/instructions-engine.sh                 # nginx engine sidecar bff-client bff-user
#   TARGETS="engine" KEEP=1 bash benches/instructions-engine.sh   # keep the callgrind files
#   CACHE=1 bash benches/instructions-engine.sh         # also simulated cache misses, branches
#   TARGETS="bff-user bff-user-frontends1 bff-user-frontends2" bash benches/instructions-engine.sh
#                                                       # BF-17: through the frontends' handler,
#                                                       # with one frontend, and two matched by host
#
# `nginx` is nginx itself as the plain reverse proxy of benches/nginx.sh (one worker process,
# `master_process off`), for comparison. With CACHE=1 (`--cache-sim=yes --branch-sim=yes`),
# each line also has the first-level instruction and data cache misses (I1mr, D1mr, D1mw) and
# the mispredicted branches (Bcm, Bim) per request; wrk then runs with -c32, as in nginx.sh,
# so that 32 connections' state competes for the caches.
#
# Then `callgrind_annotate --inclusive=yes <file>` shows where they go. Installs Debian's nginx
# and wrk when missing; every port is chosen free and every file lives in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in nginx wrk valgrind; do
  if ! command -v "$tool" >/dev/null; then
    echo "benches/instructions-engine.sh: installing $tool" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null
  fi
done

. benches/common.sh

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "callgrind files kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

upstream_port=$(free_port)
mkdir -p "$work/logs" "$work/tmp"
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/tmp/body; proxy_temp_path $work/tmp/proxy;
  fastcgi_temp_path $work/tmp/fastcgi; uwsgi_temp_path $work/tmp/uwsgi; scgi_temp_path $work/tmp/scgi;
  server { listen 127.0.0.1:$upstream_port; location / { return 200 "ok"; } }
}
CONF
nginx -c "$work/nginx.conf" -p "$work" -g "daemon on;"

cargo build --release -q -p tokenkeeper-benches --bench bff_proxy 2>/dev/null
cargo build --release -q -p tokenkeeper-proxy --example forward
cargo build --release -q -p tokenkeeper-cli
bff=$(cargo bench -p tokenkeeper-benches --bench bff_proxy --no-run 2>&1 \
  | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)

# The token server of the sidecar's client route.
start_idp "$work"

if [ "${CACHE:-0}" = 1 ]; then
  grind=(valgrind --tool=callgrind --cache-sim=yes --branch-sim=yes)
  connections=32
else
  grind=(valgrind --tool=callgrind)
  connections=4
fi
# GRIND_OPTIONS="--dump-instr=yes": per-instruction costs, for `callgrind_annotate --auto=no`
# or a disassembly side by side.
# shellcheck disable=SC2206
grind+=(${GRIND_OPTIONS:-})

# count name url cookie: zero after a warm-up, measure, dump; prints events/request.
count() {
  local name=$1 url=$2 cookie=$3
  wrk -t1 -c"$connections" -d3s -H "Cookie: $cookie" -H "X-CSRF: 1" "$url" >/dev/null
  callgrind_control -z >/dev/null 2>&1
  local requests
  requests=$(wrk -t1 -c"$connections" -d5s -H "Cookie: $cookie" -H "X-CSRF: 1" "$url" | awk '/requests in/ {print $1}')
  callgrind_control -d >/dev/null 2>&1
  sleep 2
  awk -v name="$name" -v requests="$requests" '
    /^events:/ { for (i = 2; i <= NF; i++) event[i] = $i }
    /^summary:/ { for (i = 2; i <= NF; i++) total[i] += $i; n = NF }
    END {
      printf "%s: %d instructions/request", name, total[2] / requests
      for (i = 3; i <= n; i++)
        if (event[i] ~ /^(I1mr|D1mr|D1mw|Bcm|Bim)$/) printf ", %s %d", event[i], total[i] / requests
      printf " (%d requests)\n", requests
    }' "$work/$name.cg".*
}

run() { # name: starts the host under callgrind, counts, stops it
  local name=$1 url cookie="none=1"
  case $name in
    nginx)
      local port; port=$(free_port)
      mkdir -p "$work/proxy/logs" "$work/proxy/tmp"
      nginx_proxy_conf "$work/proxy" 1 "$port" "$upstream_port" > "$work/proxy/nginx.conf"
      "${grind[@]}" --callgrind-out-file="$work/$name.cg" "$(command -v nginx)" \
        -c "$work/proxy/nginx.conf" -p "$work/proxy" -g "daemon off; master_process off;" \
        > "$work/$name.out" 2>/dev/null &
      url="http://127.0.0.1:$port/api/items"
      for _ in $(seq 300); do curl -fsS "$url" >/dev/null 2>&1 && break; sleep 0.2; done
      ;;
    engine)
      local port; port=$(free_port)
      UPSTREAM="http://127.0.0.1:$upstream_port/up" LISTEN="127.0.0.1:$port" WORKERS=1 \
        "${grind[@]}" --callgrind-out-file="$work/$name.cg" \
        target/release/examples/forward > "$work/$name.out" 2>/dev/null &
      url="http://127.0.0.1:$port/api/items"
      for _ in $(seq 300); do grep -q '^listening ' "$work/$name.out" 2>/dev/null && break; sleep 0.2; done
      ;;
    sidecar)
      local port; port=$(free_port)
      sidecar_toml "127.0.0.1:$port" 1 "http://127.0.0.1:$upstream_port/up" > "$work/sidecar.toml"
      WORKER_SECRET=worker-secret "${grind[@]}" --callgrind-out-file="$work/$name.cg" \
        target/release/tokenkeeper sidecar --config "$work/sidecar.toml" > "$work/$name.out" 2>/dev/null &
      url="http://127.0.0.1:$port/api/items"
      for _ in $(seq 300); do grep -q '^tokenkeeper sidecar on ' "$work/$name.out" 2>/dev/null && break; sleep 0.2; done
      ;;
    bff-user|bff-client|bff-user-frontends1|bff-user-frontends2)
      local token=${name#bff-}; token=${token%-frontends*}
      local frontends=""; case "$name" in *-frontends*) frontends=${name##*-frontends};; esac
      TK_SERVE=1 TK_WORKERS=1 TK_ROUTE_TOKEN=$token TK_FRONTENDS=$frontends TK_UPSTREAM="http://127.0.0.1:$upstream_port" \
        "${grind[@]}" --callgrind-out-file="$work/$name.cg" "$bff" --bench \
        > "$work/$name.out" 2>/dev/null &
      for _ in $(seq 600); do grep -q '^cookie ' "$work/$name.out" 2>/dev/null && break; sleep 0.2; done
      url=$(sed -n 's/^bff //p' "$work/$name.out")
      cookie=$(sed -n 's/^cookie //p' "$work/$name.out")
      ;;
  esac
  local pid=$!
  pids+=("$pid")
  count "$name" "$url" "$cookie"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

for target in ${TARGETS:-nginx engine sidecar bff-client bff-user}; do
  run "$target"
done
