#!/usr/bin/env bash
# Run the whole test suite: unit tests and the end-to-end tests that start the real gateway
# binary with real upstream servers on loopback; then the dependency check (deny.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --all-targets
scripts/deny.sh
