#!/bin/sh
# A plain nginx round-robin proxy as a load-test `command` policy (see README.md beside this
# file): writes an nginx.conf for this trial's replicas into a fresh temporary folder, then
# execs nginx in the foreground, so the harness's SIGTERM reaches nginx itself (fast shutdown).
#   command: sh loadtests/scenarios/nginx-round-robin.sh {port} {worker_urls_space}
# Listens on 127.0.0.1 only; one worker process; buffering off so SSE streams pass through.
set -eu
port=$1
shift
dir=$(mktemp -d /tmp/sluice-nginx.XXXXXX)
servers=""
for url in "$@"; do
  servers="$servers    server ${url#http://};
"
done
cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log stderr warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $dir/client_body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  client_max_body_size 64m;
  upstream workers {
$servers    keepalive 256;
  }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://workers;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 600s;
    }
  }
}
CONF
exec nginx -p "$dir" -c "$dir/nginx.conf"
