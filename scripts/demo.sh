#!/usr/bin/env bash
# Build Tollgate and start it on conf/tollgate.yaml with three demo upstreams behind it:
# "users" on 127.0.0.1:8001 and :8002, "products" on 127.0.0.1:8003. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --bins
bin=target/release
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
"$bin/tollgate-demo-upstream" --name users --listen 127.0.0.1:8001 --listen 127.0.0.1:8002 & pids+=($!)
"$bin/tollgate-demo-upstream" --name products --listen 127.0.0.1:8003 & pids+=($!)
"$bin/tollgate" -c conf/tollgate.yaml & pids+=($!)
for _ in $(seq 100); do
  curl -fs -o /dev/null http://127.0.0.1:8080/api/products/1 2>/dev/null && break
  sleep 0.1
done
cat <<MSG

Tollgate is listening on 127.0.0.1:8080, its admin listener on 127.0.0.1:9901. Try:
  curl -i localhost:8080/api/products/1                  # twice: Cache-Status says hit
  curl -i -H 'Host: api.example.com' -H 'x-api-version: 2' localhost:8080/api/users/7
  curl -i localhost:8080/api/orders/1                    # 401: an API key is needed
  curl -i -H 'X-API-Key: demo-key-0001' localhost:8080/api/orders/1
  for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{http_code} ' localhost:8080/api/search; done
  curl -i localhost:8080/nowhere                         # 404 problem details
  curl -s localhost:9901/metrics | grep tollgate_requests
  open http://localhost:9901/ in a browser for the status page
Access log lines appear below. Ctrl-C stops the gateway and the demo upstreams.
MSG
wait "${pids[2]}"
