#!/usr/bin/env bash
# Install what building and testing Tollgate needs on a fresh Debian machine that has only the
# Rust toolchain, gcc and python3: cmake (Pingora's zlib-ng build needs it), curl,
# redis-server and redis-tools' redis-cli (the tests start their own Redis servers and a Redis
# Cluster for global rate limits), chromium
# (the status page is tested in a real headless browser), systemd (for
# `systemd-analyze verify` of the unit), nginx-light (the load bench's baseline, which the
# bench smoke test runs too, and a real upstream for the path-normalisation tests), haproxy (a
# real PROXY-protocol balancer in front of the gateway, and a peer in the load bench), caddy (a
# peer in the load bench, which the smoke test runs), slowhttptest (slowloris and
# slow-body attacks), openssl (the load bench's TLS certificates), nghttp2-client (h2load, the
# load bench's HTTP/2 generator, which the smoke test runs too), dnsmasq-base (a real DNS
# server for peer discovery; the binary only, no service) and prometheus, for its `promtool
# check metrics` (installed without its recommended extras, and not started).
set -euo pipefail
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v caddy >/dev/null 2>&1 || missing+=(caddy)
command -v slowhttptest >/dev/null 2>&1 || missing+=(slowhttptest)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || missing+=(dnsmasq-base)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v promtool >/dev/null 2>&1; then
  echo "installing: prometheus (for promtool)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  [ ${#missing[@]} -gt 0 ] || $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
