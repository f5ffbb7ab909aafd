#!/usr/bin/env bash
# The compose topology without Docker: nginx (Debian's package) with deploy/nginx.conf in front of
# three redserve processes on loopback ports. test/deploy-replicas.test.ts runs it; so can you:
#
#   npm run build && bash scripts/replicas.sh start /tmp/rs     # prints the ports and pids
#   curl -s -H 'content-type: image/png' --data-binary @models/fmnist-red/golden/0.png 127.0.0.1:18480/classify
#   bash scripts/replicas.sh stop /tmp/rs
#
# nginx.conf is rendered from deploy/nginx.conf with only what Docker would provide changed: the
# upstream's one DNS name (re-resolved by Docker's resolver) becomes the three loopback replicas,
# nginx listens on loopback, keeps its pid, logs and temp files in the state folder, and logs each
# request's upstream attempts (for the test's counts). Everything else (retries, timeouts, body
# limit, keep-alive) is the file as shipped.
#
# Environment: NGINX_PORT (18480), REPLICA_PORT (18481: replicas on 18481-18483, metrics on
# 19481-19483), REDSERVE_MODEL (models/fmnist-red), REDSERVE_FLAGS (extra flags for each replica).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: $0 start|stop STATE_DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
nginx_port=${NGINX_PORT:-18480}
first=${REPLICA_PORT:-18481}
replicas=3

# Stops what the folder's pid files name, but only processes that are still ours: a pid left by a
# run that was killed may since belong to something else.
stop() {
  for f in "$dir"/nginx.pid "$dir"/replica-*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    cmdline=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null || true)
    case "$cmdline" in
      *"dist/src/server.js"*|*"nginx"*"$dir"*) kill "$pid" 2>/dev/null || true ;;
    esac
    rm -f "$f"
  done
}

case "$cmd" in
  stop) stop; exit 0 ;;
  start) ;;
  *) usage ;;
esac

[ -x "$nginx_bin" ] || { echo "nginx is not installed (bash scripts/setup.sh installs Debian's package)" >&2; exit 1; }
[ -f dist/src/server.js ] || { echo "dist/src/server.js is missing: run npm run build" >&2; exit 1; }
stop

upstreams=""
for i in $(seq 0 $((replicas - 1))); do
  upstreams+="    server 127.0.0.1:$((first + i)) max_fails=3 fail_timeout=10s;\n"
done
mkdir -p "$dir/tmp"
sed -e '/^\s*resolver /d' \
    -e "s|^\(\s*\)server redserve:8080 resolve max_fails=3 fail_timeout=10s;|$upstreams|" \
    -e "s|^\(\s*\)listen 8080;|\1listen 127.0.0.1:$nginx_port;|" \
    -e "s|^http {|pid $dir/nginx.pid;\nerror_log $dir/nginx-error.log warn;\nhttp {\n  client_body_temp_path $dir/tmp/body;\n  proxy_temp_path $dir/tmp/proxy;\n  fastcgi_temp_path $dir/tmp/fastcgi;\n  uwsgi_temp_path $dir/tmp/uwsgi;\n  scgi_temp_path $dir/tmp/scgi;\n  log_format attempts '\$status \$upstream_addr \$upstream_status';|" \
    -e "s|^\(\s*\)access_log off;|\1access_log $dir/access.log attempts;|" \
    deploy/nginx.conf > "$dir/nginx.conf"
# The render must have replaced exactly what it says; anything else means deploy/nginx.conf changed shape.
grep -q "server 127.0.0.1:$first " "$dir/nginx.conf" && ! grep -q 'redserve:8080' "$dir/nginx.conf" \
  && grep -q "listen 127.0.0.1:$nginx_port;" "$dir/nginx.conf" \
  || { echo "could not render $dir/nginx.conf from deploy/nginx.conf" >&2; exit 1; }

for i in $(seq 0 $((replicas - 1))); do
  # shellcheck disable=SC2086 # REDSERVE_FLAGS is a list of flags
  node dist/src/server.js --host 127.0.0.1 --port $((first + i)) --metrics-port $((first + 1000 + i)) \
    --model "${REDSERVE_MODEL:-models/fmnist-red}" ${REDSERVE_FLAGS:-} > "$dir/replica-$i.log" 2>&1 &
  echo $! > "$dir/replica-$i.pid"
done
"$nginx_bin" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' > "$dir/nginx.out" 2>&1 &
nginx_pid=$!

# Ready when every replica's /readyz answers 200 through its own port (60 s at most).
for i in $(seq 0 $((replicas - 1))); do
  for _ in $(seq 1 600); do
    code=$(node -e "fetch('http://127.0.0.1:$((first + i))/readyz').then(r=>console.log(r.status),()=>console.log(0))")
    [ "$code" = 200 ] && break
    kill -0 "$(cat "$dir/replica-$i.pid")" 2>/dev/null || { echo "replica $i exited:" >&2; cat "$dir/replica-$i.log" >&2; stop; exit 1; }
    sleep 0.1
  done
  [ "$code" = 200 ] || { echo "replica $i not ready after 60 s" >&2; stop; exit 1; }
done
kill -0 "$nginx_pid" 2>/dev/null || { echo "nginx exited:" >&2; cat "$dir/nginx.out" "$dir/nginx-error.log" >&2 || true; stop; exit 1; }

echo "nginx=127.0.0.1:$nginx_port pid=$nginx_pid"
for i in $(seq 0 $((replicas - 1))); do
  echo "replica$i=127.0.0.1:$((first + i)) metrics=127.0.0.1:$((first + 1000 + i)) pid=$(cat "$dir/replica-$i.pid")"
done
