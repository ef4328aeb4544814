# Shell functions shared by benches/nginx.sh and benches/instructions-engine.sh (sourced).

# A free TCP port on 127.0.0.1, below the kernel's ephemeral range (where outgoing
# connections take their local ports, so a released port there may be taken again before the
# server binds it) and bind-tested; the same rule as tokenkeeper_testing::free_port.
free_port() {
  python3 -c '
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(10000):
    port = random.randrange(20000, max(low, 21000))
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
'
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

# nginx_proxy_conf dir workers listen_port upstream_port: prints the nginx.conf of the plain
# reverse proxy that tokenkeeper's hosts are compared with (files under dir; pid dir/nginx.pid):
# keepalive to the upstream, sending what a reverse proxy is usually configured to send (and
# what the BFF sends).
nginx_proxy_conf() {
  cat <<CONF
worker_processes $2;
pid $1/nginx.pid;
error_log $1/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $1/tmp/body; proxy_temp_path $1/tmp/proxy;
  fastcgi_temp_path $1/tmp/fastcgi; uwsgi_temp_path $1/tmp/uwsgi; scgi_temp_path $1/tmp/scgi;
  upstream api { server 127.0.0.1:$4; keepalive 64; }
  server {
    listen 127.0.0.1:$3;
    location /api/ {
      proxy_pass http://api/up/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host 127.0.0.1:$4;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
      proxy_set_header Cookie "";
      proxy_set_header X-CSRF "";
    }
  }
}
CONF
}
