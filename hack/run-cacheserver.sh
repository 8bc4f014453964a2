#!/usr/bin/env bash
# Starts a cacheserver on a local directory with a generated token, shows a
# curl round trip through it, and keeps serving until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${DISKCACHE_DEMO_DIR:-.cache/demo}
addr=${DISKCACHE_DEMO_ADDR:-127.0.0.1:8080}
mkdir -p "$dir"
if [ ! -s "$dir/token" ]; then
  # Only the token is private: a umask left in force would also make the
  # bin/ that go build creates below (and the data directory) 0700.
  (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/token")
fi
token=$(cat "$dir/token")

go build -o bin/cacheserver ./cmd/cacheserver
bin/cacheserver --data-dir "$dir/data" --listen "$addr" --token-file "$dir/token" --log-format text &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT INT TERM

for _ in $(seq 1 100); do
  curl -fs "http://$addr/healthz" >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || { echo "cacheserver exited" >&2; exit 1; }
  sleep 0.1
done

echo
echo "cacheserver is serving $dir/data on http://$addr (token in $dir/token)"
echo
set -x
curl -s -X PUT -H "Authorization: Bearer $token" -H 'Diskcache-Value-Type: text' \
  --data-binary 'hello from diskcache' "http://$addr/v1/keys/greeting?expire=3600&tag=demo" -o /dev/null -w '%{http_code}\n'
curl -s -i -H "Authorization: Bearer $token" "http://$addr/v1/keys/greeting"
echo
curl -s -X POST -H "Authorization: Bearer $token" "http://$addr/v1/keys/visits/incr"
echo
set +x
echo
echo "Try it yourself:  curl -H \"Authorization: Bearer \$(cat $dir/token)\" http://$addr/v1/info"
echo "Ctrl-C stops the server (it shuts down gracefully)."
wait $pid
