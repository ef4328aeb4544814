#!/usr/bin/env bash
# The BFF against nginx as a plain reverse proxy (EN-02's measurement): both in front of the same
# upstream (an nginx answering `return 200`), driven by the same load tool (wrk), in alternating
# rounds on this machine's cores. Prints each round and the ratio BFF / nginx (median, range).
#
#   bash benches/nginx.sh            # ROUNDS=10 SECONDS_PER_ROUND=5 CONNECTIONS=32 THREADS=2
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

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

upstream_port=$(free_port)
proxy_port=$(free_port)
mkdir -p "$work/logs" "$work/tmp"
# One nginx master: the upstream (`return 200`) and the plain reverse proxy with keepalive to it,
# sending what a reverse proxy is usually configured to send (and what the BFF sends).
cat > "$work/nginx.conf" <<CONF
worker_processes 2;
pid $work/nginx.pid;
error_log $work/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/tmp/body;
  proxy_temp_path $work/tmp/proxy;
  fastcgi_temp_path $work/tmp/fastcgi;
  uwsgi_temp_path $work/tmp/uwsgi;
  scgi_temp_path $work/tmp/scgi;
  upstream api { server 127.0.0.1:$upstream_port; keepalive 64; }
  server {
    listen 127.0.0.1:$upstream_port;
    location / { return 200 "ok"; }
  }
  server {
    listen 127.0.0.1:$proxy_port;
    location /api/ {
      proxy_pass http://api/up/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host 127.0.0.1:$upstream_port;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
      proxy_set_header Cookie "";
      proxy_set_header X-CSRF "";
    }
  }
}
CONF
"$NGINX" -c "$work/nginx.conf" -p "$work" -g "daemon on;"
for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$proxy_port/api/x" >/dev/null 2>&1 && break; sleep 0.1; done

# The BFF (a `token = user` route, a logged-in session) in front of the same upstream.
bench=$(cargo bench -p tokenkeeper-benches --bench bff_proxy --no-run 2>&1 \
  | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
[ -x "$bench" ] || { echo "benches/nginx.sh: cannot build the bff_proxy bench" >&2; exit 1; }
# The bench binary itself (not cargo), so that stopping it stops the BFF.
TK_SERVE=1 TK_UPSTREAM="http://127.0.0.1:$upstream_port" "$bench" --bench \
  > "$work/bff.out" 2>"$work/bff.err" &
pids+=($!)
for _ in $(seq 600); do grep -q '^cookie ' "$work/bff.out" 2>/dev/null && break; sleep 0.1; done
bff_url=$(sed -n 's/^bff //p' "$work/bff.out")
cookie=$(sed -n 's/^cookie //p' "$work/bff.out")
[ -n "$bff_url" ] || { echo "the BFF did not start:" >&2; cat "$work/bff.err" >&2; exit 1; }

rate() { # url [header...] -> requests per second
  local url=$1; shift
  local args=()
  for h in "$@"; do args+=(-H "$h"); done
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SECONDS_PER_ROUND}s" "${args[@]}" "$url" \
    | awk '/^Requests\/sec:/ {print $2}'
}

echo "nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///'), wrk -t$THREADS -c$CONNECTIONS, ${SECONDS_PER_ROUND} s rounds"
echo "| round | nginx req/s | BFF req/s | BFF / nginx |"
echo "|---|---|---|---|"
ratios=()
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then
    n=$(rate "http://127.0.0.1:$proxy_port/api/items")
    b=$(rate "$bff_url" "Cookie: $cookie" "X-CSRF: 1")
  else
    b=$(rate "$bff_url" "Cookie: $cookie" "X-CSRF: 1")
    n=$(rate "http://127.0.0.1:$proxy_port/api/items")
  fi
  r=$(python3 -c "print(f'{$b / $n:.3f}')")
  ratios+=("$r")
  echo "| $round | $n | $b | $r |"
done
python3 - "${ratios[@]}" <<'PY'
import statistics, sys
values = sorted(float(v) for v in sys.argv[1:])
print(f"BFF / nginx: median {statistics.median(values):.3f} (range {values[0]:.3f} – {values[-1]:.3f}, {len(values)} rounds)")
PY
