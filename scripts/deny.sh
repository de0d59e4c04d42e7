#!/usr/bin/env bash
# Check what the shipped binary depends on against deny.toml with cargo-deny: licenses, bans
# (duplicate major versions, wildcards) and sources always; the RustSec advisories when their
# database can be fetched (it lives on GitHub: a machine that can only reach the package
# registries skips that part and says so). Installs cargo-deny (from crates.io) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "installing cargo-deny"
  cargo install --locked --quiet cargo-deny
fi
cargo deny --log-level error check licenses bans sources
if timeout 60 cargo deny --log-level error fetch db >/dev/null 2>&1; then
  cargo deny --log-level error check advisories
else
  echo "cargo-deny: the RustSec advisory database cannot be fetched from here; advisories not checked" >&2
fi
