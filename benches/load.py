#!/usr/bin/env python3
"""Tollgate's end-to-end load bench (standard library only).

Brings up the bundled upstream (`tollgate-bench upstream`, a fixed 1 KiB response), the gateway
with a bench configuration, and a load generator (`wrk` when installed, otherwise the bundled
`tollgate-bench load`), with keep-alive on both sides, and runs:

  direct      load generator -> upstream, no proxy (the ceiling)
  proxy       one route, no policies
  access-log  the same with the JSON access log written to a file
  policies    1,000 routes, API-key auth (1,000 consumers) and a rate limit that is never hit
  cache-hit   a cached route, every request a hit
  pingora-bare
              bare Pingora (examples/bare_proxy.rs: one fixed peer, nothing else), when built
              (scripts/bench.sh builds it): the framework's own cost
  pingora-bare-forwarding
              bare Pingora adding the forwarding headers (X-Forwarded-For, -Proto, -Host,
              X-Request-Id, the id on the answer too) and setting the upstream and client
              timeouts, through Pingora's API: what that work costs inside Pingora
  nginx-proxy, nginx-cache-hit, nginx-policies
              the same through nginx (one worker per gateway thread, upstream keep-alive,
              proxy_cache; for policies a map of the 1,000 keys and limit_req per key), when
              nginx is installed
  haproxy-proxy, haproxy-policies
              the same through HAProxy (one thread per gateway thread, connection reuse; for
              policies a map of the 1,000 keys and a stick table counting each key's rate),
              when haproxy is installed
  pingap-proxy, pingap-policies
              the same through pingap (the Pingora-based gateway; its reverse-proxy headers and
              request_id plugin; for policies its key_auth plugin with the 1,000 keys and its
              limit plugin per key), when --pingap names its binary (scripts/bench.sh
              --with-pingap builds it)
  caddy-proxy the same through Caddy's reverse_proxy (GOMAXPROCS = gateway threads), when
              caddy is installed (Caddy has no key auth or rate limit without plugins)
  tls, pingora-bare-tls, nginx-tls, haproxy-tls
              the proxy scenario over TLS 1.3 (ECDSA P-256 certificate made with openssl),
              keep-alive connections (wrk over https, or the bundled generator with --tls-ca)
  tls-handshake, pingora-bare-tls-handshake, nginx-tls-handshake, haproxy-tls-handshake
              a new TLS 1.3 connection per request (`Connection: close`), full handshakes: always
              driven by `tollgate-bench load --tls-ca --close` (rustls, resumption off), since wrk
              resumes TLS sessions on reconnection
  h2, pingora-bare-h2, nginx-h2, haproxy-h2
              HTTP/2 over TLS, --h2-connections connections with --h2-streams concurrent streams
              each, driven by h2load (nghttp2-client), when installed
  pipelined, nginx-pipelined, haproxy-pipelined
              the proxy scenario with HTTP/1.1 pipelining, --pipeline requests written at once
              per connection (wrk with a pipelining script, or the bundled generator)

Every peer adds the forwarding headers Tollgate adds (X-Forwarded-For, X-Forwarded-Proto,
X-Request-Id). Before a policies scenario is measured, a request without a key must be refused.

For each: requests/s, p50/p99/p99.9 latency, the proxy's own CPU time per request (utime+stime
of all its processes and threads from /proc/<pid>/stat, sampled when measuring starts and ends;
also split into user space and kernel), and peak RSS. The proxy is pinned to one CPU, the load generator and upstream to another.
`--idle` adds the memory cost of 10,000 idle keep-alive client connections, for Tollgate, nginx,
bare Pingora and pingap (each when available).

CPU time per request on a virtual machine moves by 10-25 % between runs of the same binary:
`--rounds N` runs every scenario N times, in turn, and reports each one's median round (every
round's figures are kept in the JSON).

Writes <out>/<name>.json and <out>/<name>.md and prints the table.
Usage: scripts/bench.sh [--duration S] [--rounds N] [--idle] [--smoke] ...   (see --help)
"""

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[0]} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def descendants(pid):
    """pid and every process below it."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def cpu_seconds(pid):
    """(utime, stime) of pid and its descendants (all threads), in seconds."""
    user = system = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return user / CLK_TCK, system / CLK_TCK


def cpu_delta(before, after):
    """(user, system) seconds spent between two cpu_seconds() samples."""
    return after[0] - before[0], after[1] - before[1]


def memory_kib(pid, key):
    """Sum of a /proc/<pid>/status field (VmRSS, VmHWM) over pid and its descendants."""
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return total


def pinned(cmd, cpu):
    if cpu is None or not shutil.which("taskset"):
        return cmd
    return ["taskset", "-c", str(cpu)] + cmd


class Procs:
    """Started processes, stopped on exit."""

    def __init__(self):
        self.procs = []

    def start(self, cmd, **kw):
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        p = subprocess.Popen(cmd, **kw)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs = []


# ------------------------------------------------------------------------------------------------
# configurations


_STALLED = []


def stalled_redis_port():
    """A port that accepts connections (the kernel's backlog) and never answers."""
    if not _STALLED:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        s.listen(4096)
        _STALLED.append(s)
    return _STALLED[0].getsockname()[1]


def tollgate_config(d, scenario, port, upstream_port, threads, certs=None):
    tls = ""
    if mode_of(scenario) in TLS_MODES:
        tls = f"\n    tls: {{cert: {certs['cert']}, key: {certs['key']}}}"
    head = (
        f"threads: {threads}\npid_file: {d}/tollgate.pid\nupgrade_sock: {d}/tollgate.sock\n"
        f"grace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 1\n"
        f"listeners:\n  - address: 127.0.0.1:{port}{tls}\n"
        f"upstreams:\n  app: {{peers: [\"127.0.0.1:{upstream_port}\"], idle_timeout: 300s}}\n"
    )
    if scenario in ("proxy", "tls", "tls-handshake", "h2", "pipelined"):
        return head + "routes:\n  - {name: app, match: {path_prefix: /}, upstream: app}\n"
    if scenario == "access-log":
        return (
            head
            + f"access_log: {{path: {d}/access.log}}\n"
            + "routes:\n  - {name: app, match: {path_prefix: /}, upstream: app}\n"
        )
    if scenario == "cache-hit":
        return (
            head
            + "cache: {max_size: 64MiB}\n"
            + "routes:\n  - {name: app, match: {path_prefix: /}, upstream: app, cache: {ttl: 60s}}\n"
        )
    if scenario == "limit-local":
        return head + (
            "routes:\n  - {name: app, match: {path_prefix: /}, upstream: app,"
            " rate_limit: [{requests: 1000000000, per: 1s, key: client_ip}]}\n"
        )
    if scenario == "limit-redis-down":
        # A global limit whose Redis accepts connections and never answers: the worst case, each
        # decision would wait redis.timeout without the circuit breaker.
        return head + (
            f"redis: {{url: \"redis://127.0.0.1:{stalled_redis_port()}\", timeout: 50ms}}\n"
            "routes:\n  - {name: app, match: {path_prefix: /}, upstream: app,"
            " rate_limit: [{requests: 1000000000, per: 1s, key: client_ip, scope: global}]}\n"
        )
    if scenario == "policies":
        lines = [head, "consumers:\n"]
        for i in range(1000):
            lines.append(f"  - {{name: c{i}, api_keys: [bench-key-{i:04}]}}\n")
        lines.append("routes:\n")
        for i in range(1000):
            lines.append(
                f"  - {{name: r{i}, match: {{hosts: [api{i % 10}.bench], path_prefix: /svc{i}/}},"
                f" upstream: app, auth: [api_key],"
                f" rate_limit: [{{requests: 1000000000, per: 1s, key: consumer}}]}}\n"
            )
        return "".join(lines)
    raise ValueError(scenario)


SCENARIO_REQUEST = {
    # path, headers, Host override
    "direct": ("/items/1", [], None),
    "proxy": ("/items/1", [], None),
    "access-log": ("/items/1", [], None),
    "cache-hit": ("/items/1", [], None),
    "limit-local": ("/items/1", [], None),
    "limit-redis-down": ("/items/1", [], None),
    "policies": ("/svc500/items/1", ["X-Api-Key: bench-key-0500"], "api0.bench"),
    "pingora-bare": ("/items/1", [], None),
    "pingora-bare-forwarding": ("/items/1", [], None),
    "nginx-proxy": ("/items/1", [], None),
    "nginx-cache-hit": ("/items/1", [], None),
    "nginx-policies": ("/svc500/items/1", ["X-Api-Key: bench-key-0500"], "api0.bench"),
    "haproxy-proxy": ("/items/1", [], None),
    "haproxy-policies": ("/svc500/items/1", ["X-Api-Key: bench-key-0500"], "api0.bench"),
    "caddy-proxy": ("/items/1", [], None),
    "pingap-proxy": ("/items/1", [], None),
    "pingap-policies": ("/svc500/items/1", ["X-Api-Key: bench-key-0500"], "api0.bench"),
}
# The transport variants of the proxy scenario, for Tollgate, nginx and HAProxy.
MODES = ("tls-handshake", "tls", "h2", "pipelined")
TLS_MODES = ("tls-handshake", "tls", "h2")
for _mode in MODES:
    for _prefix in ("", "nginx-", "haproxy-", "pingora-bare-"):
        if _prefix != "pingora-bare-" or _mode in TLS_MODES:
            SCENARIO_REQUEST[_prefix + _mode] = ("/items/1", [], None)


def mode_of(scenario):
    """plain, or the transport variant a scenario runs (tls, tls-handshake, h2, pipelined)."""
    for m in MODES:
        if scenario == m or scenario.endswith("-" + m):
            return m
    return "plain"


def make_certs(d):
    """A CA and an ECDSA P-256 server certificate for localhost/127.0.0.1 it signed (openssl):
    paths of ca, cert, key, and cert+key in one file (HAProxy's form)."""
    def openssl(*a):
        subprocess.run(["openssl", *a], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    c = {k: os.path.join(d, f"{k}.pem") for k in ("ca", "ca-key", "cert", "key", "combined")}
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", c["ca-key"], "-out", c["ca"], "-subj", "/CN=bench-ca",
            "-days", "30")
    csr, ext = os.path.join(d, "leaf.csr"), os.path.join(d, "leaf.ext")
    openssl("req", *ec, "-keyout", c["key"], "-out", csr, "-subj", "/CN=localhost")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", csr, "-CA", c["ca"], "-CAkey", c["ca-key"], "-CAcreateserial",
            "-out", c["cert"], "-days", "30", "-extfile", ext)
    with open(c["combined"], "w") as out, open(c["cert"]) as cert, open(c["key"]) as key:
        out.write(cert.read() + key.read())
    return c


def pingap_config(d, scenario, port, upstream_port, threads):
    plugins = '["requestId"]'
    extra = ""
    if scenario == "pingap-policies":
        plugins = '["requestId", "keyAuth", "perKey"]'
        keys = ", ".join(f'"bench-key-{i:04}"' for i in range(1000))
        extra = f"""
[plugins.keyAuth]
category = "key_auth"
header = "X-Api-Key"
keys = [{keys}]

[plugins.perKey]
category = "limit"
tag = "header"
key = "X-Api-Key"
max = 1000000000
interval = "1s"
"""
    return f"""[basic]
upstream_keepalive_pool_size = 256

[upstreams.app]
addrs = ["127.0.0.1:{upstream_port}"]

[locations.app]
upstream = "app"
enable_reverse_proxy_headers = true
plugins = {plugins}

[plugins.requestId]
category = "request_id"
{extra}
[servers.bench]
addr = "127.0.0.1:{port}"
locations = ["app"]
threads = {threads}
"""

# The peers' programs, found at start (None: not installed, their scenarios skipped).
PEERS = {"nginx": "nginx", "haproxy": "haproxy", "caddy": "caddy"}


def bench_keys(d):
    """The 1,000 consumers' keys as a map file (key -> consumer), for nginx and HAProxy."""
    path = os.path.join(d, "keys.map")
    with open(path, "w") as f:
        for i in range(1000):
            f.write(f"bench-key-{i:04} c{i}\n")
    return path


def haproxy_config(d, scenario, port, upstream_port, threads, conns, certs=None):
    ssl = ""
    if mode_of(scenario) in TLS_MODES:
        ssl = f" ssl crt {certs['combined']} alpn h2,http/1.1"
    policies = ""
    if scenario == "haproxy-policies":
        keys = bench_keys(d)
        policies = f"""  http-request set-var(txn.consumer) req.hdr(x-api-key),map({keys})
  http-request deny deny_status 401 unless {{ var(txn.consumer) -m found }}
  http-request track-sc0 var(txn.consumer) table per_key
  http-request deny deny_status 429 if {{ sc_http_req_rate(0) gt 1000000000 }}
"""
    return f"""global
  nbthread {threads}
  maxconn {conns + 1000}
  pidfile {d}/haproxy.pid
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  option http-keep-alive
  http-reuse always
backend per_key
  stick-table type string len 32 size 10k expire 60s store http_req_rate(1s)
frontend f
  bind 127.0.0.1:{port}{ssl}
  unique-id-format %{{+X}}o\\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid
  unique-id-header X-Request-Id
  option forwardfor
  http-request set-header X-Forwarded-Proto %[ssl_fc,iif(https,http)]
{policies}  default_backend app
backend app
  server s1 127.0.0.1:{upstream_port} pool-max-conn 256
"""


def caddy_config(d, port, upstream_port):
    return f"""{{
  admin off
  auto_https off
  storage file_system {d}/caddy
}}
http://127.0.0.1:{port} {{
  reverse_proxy 127.0.0.1:{upstream_port} {{
    header_up X-Request-Id {{http.request.uuid}}
  }}
}}
"""


def nginx_config(d, scenario, port, upstream_port, workers, conns, certs=None):
    ssl = ""
    if mode_of(scenario) in TLS_MODES:
        # TLS 1.3 allowed (nginx 1.22's default list stops at 1.2); HTTP/2 offered by ALPN.
        ssl = (f" ssl http2;\n    ssl_certificate {certs['cert']};"
               f" ssl_certificate_key {certs['key']};\n    ssl_protocols TLSv1.2 TLSv1.3")
    user = "user root;\n" if os.geteuid() == 0 else ""
    cache = (
        "proxy_cache c; proxy_cache_valid 200 60s; add_header X-Cache-Status $upstream_cache_status;"
        if scenario == "nginx-cache-hit"
        else ""
    )
    keys = ""
    if scenario == "nginx-policies":
        keys = (
            f"map $http_x_api_key $consumer {{ default \"\"; include {bench_keys(d)}; }}\n"
            "  limit_req_zone $consumer zone=per_key:10m rate=1000000000r/s;\n"
        )
        # A map file's lines are `key value;` in nginx.
        path = os.path.join(d, "keys.map")
        with open(path) as f:
            lines = [line.strip() + ";" for line in f if line.strip()]
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        cache = 'if ($consumer = "") { return 401; } limit_req zone=per_key burst=1000000000 nodelay;'
    return f"""{user}worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
worker_rlimit_nofile {conns * 2 + 1000};
events {{ worker_connections {conns + 1000}; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  keepalive_requests 1000000; keepalive_timeout 300s;
  proxy_cache_path {d}/cache levels=1:2 keys_zone=c:16m max_size=64m inactive=10m use_temp_path=off;
  {keys}
  upstream app {{ server 127.0.0.1:{upstream_port}; keepalive 256; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{port} reuseport{ssl};
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Request-Id $request_id;
      {cache}
    }}
  }}
}}
"""


# ------------------------------------------------------------------------------------------------
# load generation


WRK_LUA = """
done = function(summary, latency, requests)
  io.write(string.format('{"requests": %d, "errors": %d, "non_2xx": %d, "seconds": %f, ' ..
    '"latency_us": {"p50": %d, "p99": %d, "p999": %d, "max": %d}}\\n',
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout, summary.errors.status, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""


WRK_PIPELINE_LUA = """
init = function(args)
  local r = {}
  for i = 1, %d do r[i] = wrk.format() end
  pipelined = table.concat(r)
end
request = function() return pipelined end
"""


def run_h2load(args, port, scenario, proxy_pid):
    """HTTP/2 over TLS with h2load: a warm-up run, then the measured one."""
    path = SCENARIO_REQUEST[scenario][0]
    base = ["h2load", "-t", "1", "-c", str(args.h2_connections), "-m", str(args.h2_streams),
            f"https://127.0.0.1:{port}{path}"]
    if args.warmup > 0:
        subprocess.run(pinned(base + ["-D", str(max(1, round(args.warmup)))], args.load_cpu),
                       stdout=subprocess.DEVNULL, check=True)
    cpu0 = cpu_seconds(proxy_pid)
    out = subprocess.run(pinned(base + ["-D", str(max(1, round(args.duration)))], args.load_cpu),
                         capture_output=True, text=True, check=True).stdout
    cpu1 = cpu_seconds(proxy_pid)
    summary = {"generator": "h2load", "non_2xx": 0,
               "latency_us": {"p50": None, "p99": None, "p999": None}}
    for line in out.splitlines():
        words = line.replace(",", "").split()
        if line.startswith("finished in"):
            summary["seconds"] = float(words[2].rstrip("s"))
            summary["rps"] = float(words[3])
        elif line.startswith("requests:"):
            # requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout.
            # h2load's counts overlap: "failed" includes "errored" (no answer, timeouts
            # included) and every 4xx/5xx answer. Answered requests are done - errored, as
            # the other generators count them (with their non-2xx answers among them).
            summary["requests"] = int(words[5]) - int(words[11])
            summary["errors"] = int(words[11])
        elif line.startswith("status codes:"):
            # status codes: N 2xx, N 3xx, N 4xx, N 5xx
            summary["non_2xx"] = sum(int(w) for w in words[4:9:2])
        elif line.startswith("time for request:"):
            summary["latency_us"]["mean"] = parse_h2load_time(words[5])
    if "requests" not in summary or "rps" not in summary:
        raise RuntimeError(f"h2load printed no summary:\n{out}")
    return summary, cpu_delta(cpu0, cpu1)


def parse_h2load_time(text):
    """h2load's durations (`512us`, `3.05ms`, `1.2s`) in microseconds."""
    for unit, scale in (("us", 1), ("ms", 1000), ("s", 1_000_000)):
        if text.endswith(unit):
            return round(float(text[: -len(unit)]) * scale)
    return None


def run_load(args, bench_bin, port, scenario, proxy_pid, d):
    """Run the load generator against port; returns (load summary, proxy cpu seconds)."""
    path, headers, host = SCENARIO_REQUEST[scenario]
    mode = mode_of(scenario)
    if mode == "h2":
        return run_h2load(args, port, scenario, proxy_pid)
    target = f"127.0.0.1:{port}"
    use_wrk = args.generator == "wrk" or (args.generator == "auto" and shutil.which("wrk"))
    # wrk resumes TLS sessions when it reconnects: full handshakes need the bundled generator.
    if use_wrk and mode != "tls-handshake":
        # wrk has no warm-up phase: run it once for the warm-up, then measure a second run.
        script = os.path.join(d, "report.lua")
        with open(script, "w") as f:
            if mode == "pipelined":
                f.write(WRK_PIPELINE_LUA % args.pipeline)
            f.write(WRK_LUA)
        base = ["wrk", "-t", str(args.load_threads), "-c", str(args.connections), "-s", script]
        for h in headers + ([f"Host: {host}"] if host else []):
            base += ["-H", h]
        scheme = "https" if mode in TLS_MODES else "http"
        url = f"{scheme}://{target}{path}"
        if args.warmup > 0:
            subprocess.run(
                pinned(base + ["-d", f"{max(1, round(args.warmup))}s", url], args.load_cpu),
                stdout=subprocess.DEVNULL,
                check=True,
            )
        cpu0 = cpu_seconds(proxy_pid) if proxy_pid else (0.0, 0.0)
        out = subprocess.run(
            pinned(base + ["-d", f"{max(1, round(args.duration))}s", url], args.load_cpu),
            capture_output=True,
            text=True,
            check=True,
        )
        cpu1 = cpu_seconds(proxy_pid) if proxy_pid else (0.0, 0.0)
        line = [x for x in out.stdout.splitlines() if x.startswith("{")][-1]
        summary = json.loads(line)
        summary["rps"] = summary["requests"] / summary["seconds"]
        summary["generator"] = "wrk"
        if mode == "pipelined":
            # wrk times a pipelined batch only partly (its percentiles read 0): none reported.
            summary["latency_us"] = {"p50": None, "p99": None, "p999": None}
        return summary, cpu_delta(cpu0, cpu1)

    cmd = [
        bench_bin, "load", "--target", target, "--path", path,
        "--connections", str(args.connections), "--threads", str(args.load_threads),
        "--warmup", str(args.warmup), "--duration", str(args.duration),
    ]
    for h in headers + ([f"Host: {host}"] if host else []):
        cmd += ["--header", h]
    if mode in TLS_MODES:
        cmd += ["--tls-ca", args.certs["ca"], "--server-name", "localhost"]
    if mode == "tls-handshake":
        cmd += ["--close"]
    if mode == "pipelined":
        cmd += ["--pipeline", str(args.pipeline)]
    p = subprocess.Popen(pinned(cmd, args.load_cpu), stdout=subprocess.PIPE, text=True)
    cpu0 = cpu1 = (0.0, 0.0)
    summary = None
    for line in p.stdout:
        line = line.strip()
        if line == "measuring":
            cpu0 = cpu_seconds(proxy_pid) if proxy_pid else (0.0, 0.0)
        elif line == "done":
            cpu1 = cpu_seconds(proxy_pid) if proxy_pid else (0.0, 0.0)
        elif line.startswith("{"):
            summary = json.loads(line)
    if p.wait() != 0 or summary is None:
        raise RuntimeError(f"the load generator failed ({p.returncode})")
    summary["generator"] = "tollgate-bench load"
    return summary, cpu_delta(cpu0, cpu1)


def start_proxy(args, procs, d, scenario, upstream_port):
    """Start tollgate or nginx for scenario; returns (port, pid of the process tree root)."""
    port = free_port()
    if scenario.startswith("haproxy"):
        conf = os.path.join(d, "haproxy.cfg")
        with open(conf, "w") as f:
            # HAProxy asks for two descriptors per connection: sized for the load, not --idle.
            f.write(haproxy_config(d, scenario, port, upstream_port, args.threads,
                                   args.connections, args.certs))
        p = procs.start(pinned([args.peers["haproxy"], "-f", conf, "-db"], args.proxy_cpu),
                        stderr=open(os.path.join(d, "haproxy.log"), "w"))
    elif scenario.startswith("pingap"):
        conf = os.path.join(d, "pingap.toml")
        with open(conf, "w") as f:
            f.write(pingap_config(d, scenario, port, upstream_port, args.threads))
        p = procs.start(pinned([args.peers["pingap"], "-c", conf, "--log", os.path.join(d, "pingap.log")],
                               args.proxy_cpu), stderr=open(os.path.join(d, "pingap.err"), "w"))
    elif scenario.startswith("caddy"):
        conf = os.path.join(d, "Caddyfile")
        with open(conf, "w") as f:
            f.write(caddy_config(d, port, upstream_port))
        env = dict(os.environ, GOMAXPROCS=str(args.threads), HOME=d, XDG_DATA_HOME=d,
                   XDG_CONFIG_HOME=d)
        p = procs.start(pinned([args.peers["caddy"], "run", "--config", conf,
                                "--adapter", "caddyfile"], args.proxy_cpu), env=env,
                        stderr=open(os.path.join(d, "caddy.log"), "w"))
    elif scenario.startswith("nginx"):
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx_config(d, scenario, port, upstream_port, args.threads,
                                 max(args.connections, args.idle_connections), args.certs))
        for sub in ("body", "proxy", "fcgi", "uwsgi", "scgi", "cache"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        p = procs.start(pinned([args.peers["nginx"], "-c", conf, "-p", d], args.proxy_cpu))
    elif scenario.startswith("pingora-bare"):
        tls = [args.certs["cert"], args.certs["key"]] if mode_of(scenario) in TLS_MODES else []
        forwarding = ["--forwarding"] if scenario == "pingora-bare-forwarding" else []
        p = procs.start(pinned([args.bare, f"127.0.0.1:{port}", f"127.0.0.1:{upstream_port}",
                                str(args.threads)] + tls + forwarding, args.proxy_cpu))
    else:
        conf = os.path.join(d, "tollgate.yaml")
        with open(conf, "w") as f:
            f.write(tollgate_config(d, scenario, port, upstream_port, args.threads, args.certs))
        env = dict(os.environ, RUST_LOG="warn")
        p = procs.start(pinned([args.tollgate, "-c", conf], args.proxy_cpu), env=env,
                        stderr=open(os.path.join(d, "tollgate.log"), "w"))
    wait_port(port, p)
    return port, p.pid


def warm_cache(port, scenario):
    """One request first, so that every measured cache-hit request is a hit."""
    path, headers, host = SCENARIO_REQUEST[scenario]
    with socket.create_connection(("127.0.0.1", port)) as s:
        req = f"GET {path} HTTP/1.1\r\nHost: {host or f'127.0.0.1:{port}'}\r\nConnection: close\r\n"
        req += "".join(h + "\r\n" for h in headers) + "\r\n"
        s.sendall(req.encode())
        while s.recv(65536):
            pass


def refuses_without_key(port, scenario):
    """A policies scenario measures nothing unless a request without a key is refused."""
    path, _, host = SCENARIO_REQUEST[scenario]
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/") else b"?"
    if status not in (b"401", b"403"):
        raise RuntimeError(f"{scenario}: a request without a key got {status.decode()}, not 401/403")


def run_scenario(args, scenario, bench_bin, upstream_port):
    procs = Procs()
    d = tempfile.mkdtemp(prefix=f"tollgate-bench-{scenario}-")
    try:
        if scenario == "direct":
            port, pid = upstream_port, None
        else:
            port, pid = start_proxy(args, procs, d, scenario, upstream_port)
            if "cache" in scenario:
                warm_cache(port, scenario)
            if scenario.endswith("policies"):
                refuses_without_key(port, scenario)
        summary, cpu = run_load(args, bench_bin, port, scenario, pid, d)
        result = {
            "scenario": scenario,
            "rps": round(summary["rps"], 1),
            "requests": summary["requests"],
            "errors": summary["errors"],
            "non_2xx": summary["non_2xx"],
            "latency_us": summary["latency_us"],
            "generator": summary["generator"],
        }
        if pid:
            n = summary["requests"]
            result["proxy_cpu_seconds"] = round(cpu[0] + cpu[1], 3)
            result["cpu_us_per_request"] = round((cpu[0] + cpu[1]) / n * 1e6, 2) if n else None
            # User space (the proxy's own code) and kernel (sockets, wake-ups) separately.
            result["user_us_per_request"] = round(cpu[0] / n * 1e6, 2) if n else None
            result["kernel_us_per_request"] = round(cpu[1] / n * 1e6, 2) if n else None
            result["peak_rss_kib"] = memory_kib(pid, "VmHWM")
        return result
    finally:
        procs.stop_all()
        shutil.rmtree(d, ignore_errors=True)


def median_round(rs):
    """The round with the median CPU time per request (requests/s for `direct`; of an even
    number of rounds, the higher middle one), with every round's figures kept. Its errors and
    non-2xx answers are those of all rounds: a failure in any round shows."""
    if len(rs) == 1:
        return rs[0]
    key = (lambda r: r["cpu_us_per_request"]) if rs[0].get("cpu_us_per_request") else (
        lambda r: r["rps"])
    median = dict(sorted(rs, key=lambda r: key(r) or 0)[len(rs) // 2])
    median["rounds"] = [{"cpu_us_per_request": r.get("cpu_us_per_request"), "rps": r["rps"]}
                        for r in rs]
    median["errors"] = sum(r["errors"] for r in rs)
    median["non_2xx"] = sum(r["non_2xx"] for r in rs)
    return median


def run_idle(args, system, scenario, bench_bin, upstream_port):
    """RSS per idle keep-alive connection: RSS with N idle connections minus RSS before."""
    procs = Procs()
    d = tempfile.mkdtemp(prefix="tollgate-bench-idle-")
    try:
        port, pid = start_proxy(args, procs, d, scenario, upstream_port)
        warm_cache(port, scenario)
        before = memory_kib(pid, "VmRSS")
        n = args.idle_connections
        holder = procs.start(
            pinned([bench_bin, "idle", "--target", f"127.0.0.1:{port}", "--path", "/items/1",
                    "--connections", str(n)], args.load_cpu),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = holder.stdout.readline().strip()
        if not line.startswith("ready"):
            raise RuntimeError(f"idle connections not established: {line!r}")
        time.sleep(0.5)
        after = memory_kib(pid, "VmRSS")
        holder.stdin.close()
        holder.wait(timeout=30)
        return {
            "system": system,
            "connections": n,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "bytes_per_connection": round((after - before) * 1024 / n, 1),
        }
    finally:
        procs.stop_all()
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# report


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "memory_gib": round(os.sysconf("SC_PHYS_PAGES") * PAGE / 2**30, 1),
    }


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return None


def markdown(report):
    m = report["machine"]
    lines = [
        f"Load bench, {report['time']}: {m['cpu']}, {m['cpus']} CPUs, Linux {m['kernel']}.",
        f"Proxy pinned to CPU {report['pinning']['proxy']}, load generator and upstream to CPU "
        f"{report['pinning']['load']}; proxy threads/workers: {report['threads']}; "
        f"{report['connections']} keep-alive connections; {report['body_bytes']} B responses; "
        f"{report['duration_s']} s measured after {report['warmup_s']} s warm-up"
        + (f", median of {report['rounds']} rounds (by CPU per request)" if report["rounds"] > 1 else "")
        + "; "
        f"generator: {report['generator']}; pipelined: {report['pipeline']} requests at once; "
        f"h2: {report['h2']['connections']} connections × {report['h2']['streams']} streams; "
        "tls-handshake: a new TLS 1.3 connection per request, no resumption.",
        "; ".join(v for v in report["versions"].values() if v) + ".",
        "",
        "| scenario | requests/s | p50 µs | p99 µs | p99.9 µs | proxy CPU µs/request | user + kernel | peak RSS MiB | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["scenarios"]:
        lat = r["latency_us"]
        cpu = r.get("cpu_us_per_request")
        user, kernel = r.get("user_us_per_request"), r.get("kernel_us_per_request")
        split = "-" if user is None or kernel is None else f"{user:.1f} + {kernel:.1f}"
        rss = r.get("peak_rss_kib")
        p50 = lat["p50"]
        if p50 is None:
            p50 = f"{lat['mean']} (mean)" if lat.get("mean") is not None else "-"
        lines.append(
            f"| {r['scenario']} | {r['rps']:.0f} | {p50} | {lat['p99'] or '-'} | {lat['p999'] or '-'} | "
            f"{'-' if cpu is None else f'{cpu:.2f}'} | {split} | "
            f"{'-' if rss is None else f'{rss / 1024:.1f}'} | {r['errors'] + r['non_2xx']} |"
        )
    if report.get("ratios"):
        lines += ["", "| ratio (CPU per request, unless named) | value | target |", "|---|---:|---:|"]
        for name, (value, target) in report["ratios"].items():
            lines.append(f"| {name} | {value:.2f} | ≤ {target} |")
    if report.get("idle"):
        lines += ["", "| idle keep-alive connections | connections | RSS before MiB | RSS after MiB | bytes per connection |",
                  "|---|---:|---:|---:|---:|"]
        for r in report["idle"]:
            lines.append(
                f"| {r['system']} | {r['connections']} | {r['rss_before_kib'] / 1024:.1f} | "
                f"{r['rss_after_kib'] / 1024:.1f} | {r['bytes_per_connection']:.0f} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"),
                    help="where tollgate and tollgate-bench are (default target/release)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds measured per scenario")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per scenario")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every scenario this many times, in turn; report each one's median")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="gateway threads = nginx workers")
    ap.add_argument("--load-threads", type=int, default=1)
    ap.add_argument("--generator", choices=["auto", "wrk", "bundled"], default="auto")
    ap.add_argument("--scenarios",
                    default="direct,proxy,access-log,policies,cache-hit,pingora-bare,"
                            "pingora-bare-forwarding,nginx-proxy,"
                            "nginx-policies,nginx-cache-hit,haproxy-proxy,haproxy-policies,"
                            "caddy-proxy,tls,pingora-bare-tls,nginx-tls,haproxy-tls,tls-handshake,"
                            "pingora-bare-tls-handshake,nginx-tls-handshake,haproxy-tls-handshake,"
                            "h2,pingora-bare-h2,nginx-h2,haproxy-h2,"
                            "pipelined,nginx-pipelined,haproxy-pipelined")
    ap.add_argument("--pipeline", type=int, default=8,
                    help="requests written at once per connection in the pipelined scenarios")
    ap.add_argument("--h2-connections", type=int, default=2)
    ap.add_argument("--h2-streams", type=int, default=100,
                    help="concurrent streams per HTTP/2 connection (h2load -m)")
    ap.add_argument("--pingap", default=None,
                    help="the pingap binary: adds pingap-proxy and pingap-policies")
    ap.add_argument("--idle", action="store_true", help="also measure idle keep-alive connections")
    ap.add_argument("--idle-connections", type=int, default=10_000)
    ap.add_argument("--smoke", action="store_true",
                    help="a short run that checks every part works (numbers mean nothing)")
    ap.add_argument("--out", default=os.path.join(ROOT, "benches", "results"))
    ap.add_argument("--name", default=None, help="file name of the results (default: a timestamp)")
    args = ap.parse_args()
    if args.rounds < 1:
        sys.exit("--rounds must be at least 1")
    if args.smoke:
        args.duration, args.warmup, args.connections = 1.0, 0.3, 8
        args.idle, args.idle_connections = True, 200

    args.tollgate = os.path.join(args.bin_dir, "tollgate")
    bench_bin = os.path.join(args.bin_dir, "tollgate-bench")
    for b in (args.tollgate, bench_bin):
        if not os.access(b, os.X_OK):
            sys.exit(f"{b} not found: build first (scripts/bench.sh does: cargo build --release)")
    args.peers = {}
    for name, program in PEERS.items():
        found = shutil.which(program)
        if not found and os.access(f"/usr/sbin/{program}", os.X_OK):
            found = f"/usr/sbin/{program}"
        args.peers[name] = found
    args.nginx = args.peers["nginx"]
    args.peers["pingap"] = args.pingap if args.pingap and os.access(args.pingap, os.X_OK) else None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        args.proxy_cpu, args.load_cpu = cpus[0], cpus[1]
    else:
        args.proxy_cpu = args.load_cpu = None

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.idle and args.idle_connections + 1000 > hard:
        args.idle_connections = max(100, hard - 1000)
        print(f"open-file limit {hard}: idle mode uses {args.idle_connections} connections")

    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for s in scenarios:
        if s not in SCENARIO_REQUEST:
            sys.exit(f"unknown scenario {s!r}; known: {', '.join(SCENARIO_REQUEST)}")
    args.bare = os.path.join(args.bin_dir, "examples", "bare_proxy")
    bare = [s for s in scenarios if s.startswith("pingora-bare")]
    if bare and not os.access(args.bare, os.X_OK):
        scenarios = [s for s in scenarios if s not in bare]
        print(f"{args.bare} not built: skipping {', '.join(bare)} (cargo build --release --examples)")
    if args.pingap and "pingap-proxy" not in scenarios:
        scenarios += ["pingap-proxy", "pingap-policies"]
    tls = [s for s in scenarios if mode_of(s) in TLS_MODES]
    if tls and not shutil.which("openssl"):
        scenarios = [s for s in scenarios if s not in tls]
        print(f"openssl is not installed: skipping {', '.join(tls)} (apt-get install openssl)")
    h2 = [s for s in scenarios if mode_of(s) == "h2"]
    if h2 and not shutil.which("h2load"):
        scenarios = [s for s in scenarios if s not in h2]
        print(f"h2load is not installed: skipping {', '.join(h2)} (apt-get install nghttp2-client)")
    for peer, package in [("nginx", "nginx-light"), ("haproxy", "haproxy"), ("caddy", "caddy"),
                          ("pingap", "scripts/bench.sh --with-pingap")]:
        if not args.peers[peer]:
            skipped = [s for s in scenarios if s.startswith(peer + "-")]
            scenarios = [s for s in scenarios if not s.startswith(peer + "-")]
            if skipped:
                how = package if package.startswith("scripts") else f"apt-get install {package}"
                print(f"{peer} is not installed: skipping {', '.join(skipped)} ({how})")

    certs_dir = tempfile.mkdtemp(prefix="tollgate-bench-certs-")
    procs = Procs()
    upstream_port = free_port()
    try:
        args.certs = None
        if any(mode_of(s) in TLS_MODES for s in scenarios):
            args.certs = make_certs(certs_dir)
        up = procs.start(pinned([bench_bin, "upstream", "--listen", f"127.0.0.1:{upstream_port}",
                                 "--size", "1024"], args.load_cpu))
        wait_port(upstream_port, up)
        # Each round runs every scenario once, so that a slow minute of the machine spreads
        # over all of them; each scenario's result is its median round.
        rounds = {s: [] for s in scenarios}
        for n in range(args.rounds):
            for s in scenarios:
                print(f"running {s}" + (f" (round {n + 1})" if args.rounds > 1 else "") + " ...",
                      flush=True)
                r = run_scenario(args, s, bench_bin, upstream_port)
                rounds[s].append(r)
                print(f"  {r['rps']:.0f} req/s, p99 {r['latency_us']['p99']} µs, "
                      f"CPU/request {r.get('cpu_us_per_request', '-')} µs, errors {r['errors'] + r['non_2xx']}",
                      flush=True)
        results = [median_round(rounds[s]) for s in scenarios]
        idle = []
        if args.idle:
            systems = [("tollgate", "proxy")]
            if args.nginx:
                systems.append(("nginx", "nginx-proxy"))
            if os.access(args.bare, os.X_OK):
                systems.append(("pingora-bare", "pingora-bare"))
            if args.peers["pingap"]:
                systems.append(("pingap", "pingap-proxy"))
            for system, scenario in systems:
                print(f"idle connections: {system} ...", flush=True)
                idle.append(run_idle(args, system, scenario, bench_bin, upstream_port))
    finally:
        procs.stop_all()
        shutil.rmtree(certs_dir, ignore_errors=True)

    by = {r["scenario"]: r for r in results}

    def ratio(a, b):
        ca, cb = by.get(a, {}).get("cpu_us_per_request"), by.get(b, {}).get("cpu_us_per_request")
        return ca / cb if ca and cb else None

    ratios = {}
    for name, a, b, target in [
        ("proxy / pingora-bare", "proxy", "pingora-bare", 1.1),
        ("proxy / pingora-bare-forwarding", "proxy", "pingora-bare-forwarding", "-"),
        ("pingora-bare-forwarding / pingora-bare", "pingora-bare-forwarding", "pingora-bare", "-"),
        ("proxy / nginx-proxy", "proxy", "nginx-proxy", "-"),
        ("proxy / haproxy-proxy", "proxy", "haproxy-proxy", "-"),
        ("proxy / caddy-proxy", "proxy", "caddy-proxy", "-"),
        ("proxy / pingap-proxy", "proxy", "pingap-proxy", 0.95),
        ("policies / pingap-policies", "policies", "pingap-policies", 0.9),
        ("pingora-bare / nginx-proxy", "pingora-bare", "nginx-proxy", "-"),
        ("policies / proxy", "policies", "proxy", 1.15),
        ("policies / nginx-policies", "policies", "nginx-policies", "-"),
        ("policies / haproxy-policies", "policies", "haproxy-policies", "-"),
        ("access-log / proxy", "access-log", "proxy", 1.05),
        ("cache-hit / nginx-cache-hit", "cache-hit", "nginx-cache-hit", 0.8),
        ("tls-handshake / nginx-tls-handshake", "tls-handshake", "nginx-tls-handshake", 0.7),
        ("tls-handshake / haproxy-tls-handshake", "tls-handshake", "haproxy-tls-handshake", "-"),
        ("tls / nginx-tls", "tls", "nginx-tls", 1.2),
        ("tls / pingora-bare-tls", "tls", "pingora-bare-tls", "-"),
        ("pingora-bare-tls / nginx-tls", "pingora-bare-tls", "nginx-tls", "-"),
        ("tls-handshake / pingora-bare-tls-handshake", "tls-handshake",
         "pingora-bare-tls-handshake", "-"),
        ("h2 / pingora-bare-h2", "h2", "pingora-bare-h2", "-"),
        ("pingora-bare-h2 / nginx-h2", "pingora-bare-h2", "nginx-h2", "-"),
        ("tls / haproxy-tls", "tls", "haproxy-tls", "-"),
        ("h2 / nginx-h2", "h2", "nginx-h2", 1.0),
        ("h2 / haproxy-h2", "h2", "haproxy-h2", "-"),
        ("pipelined / nginx-pipelined", "pipelined", "nginx-pipelined", "-"),
        ("pipelined / haproxy-pipelined", "pipelined", "haproxy-pipelined", "-"),
        ("pipelined / proxy", "pipelined", "proxy", "-"),
    ]:
        v = ratio(a, b)
        if v is not None:
            ratios[name] = (round(v, 3), target)
    # A global limit with its Redis down against a local one: throughput and median latency.
    down, local = by.get("limit-redis-down"), by.get("limit-local")
    if down and local and down["rps"] and local["latency_us"]["p50"]:
        ratios["limit-local / limit-redis-down requests per second"] = (
            round(local["rps"] / down["rps"], 3), 1.1)
        ratios["limit-redis-down / limit-local p50 latency"] = (
            round(down["latency_us"]["p50"] / local["latency_us"]["p50"], 3), 1.1)
    for other in idle[1:]:
        if idle and idle[0]["system"] == "tollgate" and other["bytes_per_connection"] > 0:
            ratios[f"idle bytes per connection: tollgate / {other['system']}"] = (
                round(idle[0]["bytes_per_connection"] / other["bytes_per_connection"], 3), "-")

    report = {
        "time": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "versions": {"tollgate": version([args.tollgate, "--version"]),
                     "nginx": version([args.nginx, "-v"]) if args.nginx else None,
                     "haproxy": version([args.peers["haproxy"], "-v"]) if args.peers["haproxy"] else None,
                     "caddy": ("Caddy " + (version([args.peers["caddy"], "version"]) or "?")) if args.peers["caddy"] else None,
                     "pingap": version([args.peers["pingap"], "--version"]) if args.peers["pingap"] else None},
        "tools": {"openssl": bool(shutil.which("openssl")), "h2load": bool(shutil.which("h2load"))},
        "pinning": {"proxy": args.proxy_cpu, "load": args.load_cpu},
        "threads": args.threads,
        "connections": args.connections,
        "body_bytes": 1024,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "warmup_s": args.warmup,
        "generator": ", ".join(sorted({r["generator"] for r in results})) or None,
        "pipeline": args.pipeline,
        "h2": {"connections": args.h2_connections, "streams": args.h2_streams},
        "smoke": args.smoke,
        "scenarios": results,
        "ratios": ratios,
        "idle": idle,
    }
    os.makedirs(args.out, exist_ok=True)
    name = args.name or datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    md = markdown(report)
    with open(os.path.join(args.out, f"{name}.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(args.out, f"{name}.md"), "w") as f:
        f.write(md)
    print()
    print(md)
    print(f"written: {os.path.join(args.out, name)}.json and .md")
    failed = [r["scenario"] for r in results if r["errors"] or r["non_2xx"] or not r["requests"]]
    if failed:
        sys.exit(f"errors or no requests in: {', '.join(failed)}")


if __name__ == "__main__":
    main()
