#!/usr/bin/env bash
# The load bench: build the release binaries, then run every scenario (see benches/load.py
# --help for options, e.g. --idle for 10,000 idle keep-alive connections, --duration 30).
# nginx (apt-get install nginx-light) adds the baseline scenarios; wrk is used when installed.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins --examples
exec python3 benches/load.py "$@"
