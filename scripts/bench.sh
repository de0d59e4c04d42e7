#!/usr/bin/env bash
# The load bench: build the release binaries, then run every scenario (see benches/load.py
# --help for options, e.g. --idle for 10,000 idle keep-alive connections, --duration 30).
# The peers run when installed: nginx (apt-get install nginx-light), HAProxy (haproxy), Caddy
# (caddy); wrk is used when installed. `--with-pingap` first builds pingap 0.13.1 from crates.io
# into target/peers (a long build; it needs protobuf-compiler) and adds its scenarios.
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
pingap=""
for a in "$@"; do
  if [ "$a" = "--with-pingap" ]; then
    pingap="target/peers/pingap/bin/pingap"
    if [ ! -x "$pingap" ]; then
      command -v protoc >/dev/null 2>&1 || { echo "pingap's build needs protoc: apt-get install protobuf-compiler" >&2; exit 2; }
      cargo install pingap@0.13.1 --locked --root target/peers/pingap --target-dir target/peers/build
    fi
  else
    args+=("$a")
  fi
done
cargo build --release --bins --examples
if [ -n "$pingap" ]; then
  exec python3 benches/load.py --pingap "$pingap" "${args[@]}"
fi
exec python3 benches/load.py "${args[@]}"
