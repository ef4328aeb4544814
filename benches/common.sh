# Shell functions shared by benches/nginx.sh and benches/instructions-engine.sh (sourced).

# A free TCP port on 127.0.0.1 (bound, read back, released).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# start_idp dir: starts `tokenkeeper dev-idp` with the client worker:worker-secret, waits for it,
# appends its pid to `pids` and sets `issuer`.
start_idp() {
  target/release/tokenkeeper dev-idp --bind 127.0.0.1:0 --client worker:worker-secret > "$1/idp.out" 2>"$1/idp.err" &
  pids+=($!)
  for _ in $(seq 100); do grep -q 'http://' "$1/idp.out" 2>/dev/null && break; sleep 0.1; done
  issuer=$(grep -o 'http://127.0.0.1:[0-9]*' "$1/idp.out" | head -1)
}

# sidecar_toml listen workers upstream: a sidecar config with one `token = client` route `/api`
# to `upstream`, its token from the dev-idp at $issuer (printed).
sidecar_toml() {
  cat <<TOML
[sidecar]
listen = "$1"
workers = $2

[[clients]]
name = "worker"
issuer = "$issuer"
client_id = "worker"
client_secret_env = "WORKER_SECRET"

[[routes]]
path = "/api"
upstream = "$3"
token = "client"
client = "worker"
TOML
}
