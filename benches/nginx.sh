#!/usr/bin/env bash
# tokenkeeper's hosts against nginx as a plain reverse proxy (EN-02, SC-06): all in front of the
# same upstream (an nginx of its own answering `return 200`), driven by the same load tool (wrk), in
# alternating rounds on this machine's cores. Prints each round and the ratio host / nginx
# (median, range); then the latency each adds over nginx at a fixed rate (benches/latency.rs).
#
#   bash benches/nginx.sh            # ROUNDS=10 SECONDS_PER_ROUND=5 CONNECTIONS=32 THREADS=2
#   TARGETS="bff-user" LATENCY=0 bash benches/nginx.sh    # one target, throughput only
#   UPSTREAM_WORKERS=1 bash benches/nginx.sh   # the upstream nginx with 1 worker (default 2)
#   TARGETS="engine pingora" bash benches/nginx.sh  # also Pingora (benches/pingora, built on demand)
#
# Installs Debian's nginx and wrk when missing. Every port is chosen free (bind-tested) and
# every file lives in a temporary directory, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-10}
SECONDS_PER_ROUND=${SECONDS_PER_ROUND:-5}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}

for tool in nginx wrk; do
  if ! command -v "$tool" >/dev/null; then
    echo "benches/nginx.sh: installing $tool" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null
  fi
done
NGINX=$(command -v nginx)

. benches/common.sh

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pidfile in "$work/nginx.pid" "$work/up/nginx.pid"; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

upstream_port=$(free_port)
proxy_port=$(free_port)
mkdir -p "$work/logs" "$work/tmp" "$work/up/logs" "$work/up/tmp"
# Two nginx masters: the upstream (`return 200`), a process of its own as any upstream is;
# and the plain reverse proxy, with keepalive to it, sending what a reverse proxy is usually
# configured to send (and what the BFF sends). In one master, the proxy's workers would also
# be the upstream's: a request could cross from proxy to upstream inside one worker, without
# the wake-up of another process that every other proxy here pays (BENCHMARKS.md).
temp_paths() {
  echo "client_body_temp_path $1/tmp/body; proxy_temp_path $1/tmp/proxy; fastcgi_temp_path $1/tmp/fastcgi; uwsgi_temp_path $1/tmp/uwsgi; scgi_temp_path $1/tmp/scgi;"
}
cat > "$work/up/nginx.conf" <<CONF
worker_processes ${UPSTREAM_WORKERS:-2};
pid $work/up/nginx.pid;
error_log $work/up/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  $(temp_paths "$work/up")
  server {
    listen 127.0.0.1:$upstream_port;
    location / { return 200 "ok"; }
  }
}
CONF
nginx_proxy_conf "$work" 2 "$proxy_port" "$upstream_port" > "$work/nginx.conf"
"$NGINX" -c "$work/up/nginx.conf" -p "$work/up" -g "daemon on;"
"$NGINX" -c "$work/nginx.conf" -p "$work" -g "daemon on;"
for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$proxy_port/api/x" >/dev/null 2>&1 && break; sleep 0.1; done

# tokenkeeper's hosts in front of the same upstream, each a process of its own:
# - bff-user: the BFF, a `token = user` route, a logged-in session (the bff_proxy bench, TK_SERVE);
# - bff-client: the same with a `token = client` route (a client-credentials token);
# - engine: the proxy engine with no policy at all (the floor under the hosts).
cargo build --release -q -p tokenkeeper-benches --bench bff_proxy --bench latency 2>/dev/null
cargo build --release -q -p tokenkeeper-proxy --example forward
cargo build --release -q -p tokenkeeper-cli
bench_bin() {
  cargo bench -p tokenkeeper-benches --bench "$1" --no-run 2>&1 \
    | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1
}
bff=$(bench_bin bff_proxy)
latency=$(bench_bin latency)
[ -x "$bff" ] && [ -x "$latency" ] || { echo "benches/nginx.sh: cannot build the benches" >&2; exit 1; }

start_bff() { # name route-token
  # The bench binary itself (not cargo), so that stopping it stops the BFF.
  TK_SERVE=1 TK_ROUTE_TOKEN=$2 TK_UPSTREAM="http://127.0.0.1:$upstream_port" "$bff" --bench \
    > "$work/$1.out" 2>"$work/$1.err" &
  pids+=($!)
}
start_bff bff-user user
start_bff bff-client client
UPSTREAM="http://127.0.0.1:$upstream_port/up" target/release/examples/forward > "$work/engine.out" 2>"$work/engine.err" &
pids+=($!)
for name in bff-user bff-client; do
  for _ in $(seq 600); do grep -q '^cookie ' "$work/$name.out" 2>/dev/null && break; sleep 0.1; done
  grep -q '^cookie ' "$work/$name.out" || { echo "$name did not start:" >&2; cat "$work/$name.err" >&2; exit 1; }
done
for _ in $(seq 100); do grep -q '^listening ' "$work/engine.out" 2>/dev/null && break; sleep 0.1; done

# - pingora (only when TARGETS names it): a minimal proxy on the Pingora framework
#   (benches/pingora, 2 threads), built in the temporary directory (cmake from Debian if missing).
if [[ " ${TARGETS:-} " == *" pingora "* ]]; then
  command -v cmake >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake >/dev/null; }
  cp -r benches/pingora "$work/pingora"
  CARGO_TARGET_DIR=target/pingora cargo build --release -q --locked --manifest-path "$work/pingora/Cargo.toml" \
    || { echo "benches/nginx.sh: cannot build benches/pingora" >&2; exit 1; }
  pingora_port=$(free_port)
  printf -- '---\nversion: 1\nthreads: 2\npid_file: %s\nupgrade_sock: %s\n' \
    "$work/pingora.pid" "$work/pingora.sock" > "$work/pingora.yaml"
  UPSTREAM="127.0.0.1:$upstream_port" LISTEN="127.0.0.1:$pingora_port" \
    target/pingora/release/pingora-bench -c "$work/pingora.yaml" > "$work/pingora.out" 2>"$work/pingora.err" &
  pids+=($!)
  for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$pingora_port/api/x" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS "http://127.0.0.1:$pingora_port/api/x" >/dev/null 2>&1 \
    || { echo "pingora did not start:" >&2; cat "$work/pingora.err" >&2; exit 1; }
fi

# - sidecar: `tokenkeeper sidecar`, a `token = client` route (its token from `tokenkeeper dev-idp`).
start_idp "$work"
sidecar_toml 127.0.0.1:0 2 "http://127.0.0.1:$upstream_port/up" > "$work/sidecar.toml"
WORKER_SECRET=worker-secret target/release/tokenkeeper sidecar --config "$work/sidecar.toml" > "$work/sidecar.out" 2>"$work/sidecar.err" &
pids+=($!)
for _ in $(seq 100); do grep -q '^tokenkeeper sidecar on ' "$work/sidecar.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^tokenkeeper sidecar on ' "$work/sidecar.out" || { echo "the sidecar did not start:" >&2; cat "$work/sidecar.err" >&2; exit 1; }
url_of() {
  case $1 in
    engine) echo "$(sed -n 's/^listening //p' "$work/engine.out")/api/items" ;;
    pingora) echo "http://127.0.0.1:$pingora_port/api/items" ;;
    sidecar) echo "http://$(sed -n 's/^tokenkeeper sidecar on \([^ ]*\).*/\1/p' "$work/sidecar.out")/api/items" ;;
    *) sed -n 's/^bff //p' "$work/$1.out" ;;
  esac
}
cookie_of() { case $1 in engine|sidecar|pingora) echo "none=1" ;; *) sed -n 's/^cookie //p' "$work/$1.out" ;; esac; }

rate() { # url [header...] -> requests per second
  local url=$1; shift
  local args=()
  for h in "$@"; do args+=(-H "$h"); done
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SECONDS_PER_ROUND}s" "${args[@]}" "$url" \
    | awk '/^Requests\/sec:/ {print $2}'
}

nginx_url="http://127.0.0.1:$proxy_port/api/items"
echo "nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///'), wrk -t$THREADS -c$CONNECTIONS, ${SECONDS_PER_ROUND} s rounds, $(nproc) cores, upstream ${UPSTREAM_WORKERS:-2} worker(s)"
for target in ${TARGETS:-bff-user bff-client sidecar engine}; do
  url=$(url_of "$target"); cookie=$(cookie_of "$target")
  echo
  echo "### $target"
  echo "| round | nginx req/s | $target req/s | $target / nginx |"
  echo "|---|---|---|---|"
  ratios=()
  for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then
      n=$(rate "$nginx_url")
      b=$(rate "$url" "Cookie: $cookie" "X-CSRF: 1")
    else
      b=$(rate "$url" "Cookie: $cookie" "X-CSRF: 1")
      n=$(rate "$nginx_url")
    fi
    r=$(python3 -c "print(f'{$b / $n:.3f}')")
    ratios+=("$r")
    echo "| $round | $n | $b | $r |"
  done
  python3 - "$target" "${ratios[@]}" <<'PY'
import statistics, sys
name, values = sys.argv[1], sorted(float(v) for v in sys.argv[2:])
print(f"{name} / nginx: median {statistics.median(values):.3f} (range {values[0]:.3f} – {values[-1]:.3f}, {len(values)} rounds)")
PY
done

# Latency at a fixed rate (open loop), each target against nginx and the upstream itself.
if [ "${LATENCY:-1}" = 1 ]; then
  echo
  echo "### latency at ${LATENCY_RATE:-1000} req/s (ms; median of ${LATENCY_ROUNDS:-4} rounds, targets alternating)"
  targets="direct http://127.0.0.1:$upstream_port/up/items
nginx $nginx_url"
  for target in ${TARGETS:-bff-user bff-client sidecar engine}; do
    targets="$targets
$target $(url_of "$target") cookie: $(cookie_of "$target")|x-csrf: 1"
  done
  TK_TARGETS="$targets" TK_RATE=${LATENCY_RATE:-1000} TK_ROUNDS=${LATENCY_ROUNDS:-4} "$latency" --bench > "$work/latency.out"
  cat "$work/latency.out"
  python3 - "$work/latency.out" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    parts = line.split()
    if parts and parts[0] == "latency":
        rows[parts[1]] = dict(p50=float(parts[3]), p90=float(parts[5]), p99=float(parts[7]))
n = rows.get("nginx")
for name, r in rows.items():
    if name in ("direct", "nginx") or not n:
        continue
    print(f"{name}: over nginx p50 {r['p50'] - n['p50']:+.3f} ms, p99 {r['p99'] - n['p99']:+.3f} ms")
d = rows.get("direct")
if d and n:
    print(f"nginx over direct: p50 {n['p50'] - d['p50']:+.3f} ms, p99 {n['p99'] - d['p99']:+.3f} ms")
PY
fi
