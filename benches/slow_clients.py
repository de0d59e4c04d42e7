#!/usr/bin/env python3
"""Slow clients against the front door (standard library and slowhttptest).

Brings up the bundled upstream (`tollgate-bench upstream`) and the gateway, then for each
attack runs slowhttptest from 127.0.0.1 (slowloris: headers sent a line at a time; slow body:
a large POST body sent a few bytes at a time) with N connections, while a well-behaved client
on another address (127.0.0.10) sends a request on a new connection every 50 ms. Reports, per
attack and per gateway setting, the well-behaved client's answers (all, failed, p50, p99, max)
and the most sockets the gateway held at once (client connections, and the upstream connections
that slow bodies are streamed over).

Usage: python3 benches/slow_clients.py [--bin-dir target/release] [--connections 500]
                                       [--duration 15] [--out benches/results]
"""

import argparse
import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import free_port, wait_port  # noqa: E402  (the load bench's helpers)


def probe(port):
    """One request on a new connection from 127.0.0.10: (ok, seconds)."""
    start = time.monotonic()
    try:
        s = socket.socket()
        s.settimeout(10)
        s.bind(("127.0.0.10", 0))
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /probe HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        return data.startswith(b"HTTP/1.1 200 "), time.monotonic() - start
    except OSError:
        return False, time.monotonic() - start


def open_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def percentile(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def run(args, setting, listener_extra, attack):
    d = tempfile.mkdtemp(prefix="tollgate-slow-")
    up_port, gw_port = free_port(), free_port()
    up = subprocess.Popen([os.path.join(args.bin_dir, "tollgate-bench"), "upstream",
                           "--listen", f"127.0.0.1:{up_port}"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    conf = os.path.join(d, "tollgate.yaml")
    with open(conf, "w") as f:
        f.write(f"""threads: 1
pid_file: {d}/t.pid
upgrade_sock: {d}/t.sock
grace_period_seconds: 0
graceful_shutdown_timeout_seconds: 1
listeners:
  - address: 127.0.0.1:{gw_port}
{listener_extra}upstreams:
  a: {{peers: ["127.0.0.1:{up_port}"]}}
routes:
  - {{name: t, match: {{}}, upstream: a}}
""")
    gw = subprocess.Popen([os.path.join(args.bin_dir, "tollgate"), "-c", conf],
                          stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "gw.log"), "w"))
    attacker = None
    try:
        wait_port(up_port, up)
        wait_port(gw_port, gw)
        idle_fds = open_fds(gw.pid)
        if attack != "none":
            mode = {"slowloris": "-H", "slow body": "-B"}[attack]
            attacker = subprocess.Popen(
                ["slowhttptest", mode, "-c", str(args.connections), "-r", "500", "-i", "5",
                 "-s", "65536", "-t", "POST", "-l", str(args.duration + 5),
                 "-u", f"http://127.0.0.1:{gw_port}/attack"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(2)  # the attack opens its connections
        results, most = [], 0
        end = time.monotonic() + args.duration
        while time.monotonic() < end:
            results.append(probe(gw_port))
            most = max(most, open_fds(gw.pid) - idle_fds)
            time.sleep(0.05)
        latencies = [t for ok, t in results if ok]
        return {
            "attack": attack,
            "setting": setting,
            "requests": len(results),
            "failed": sum(1 for ok, _ in results if not ok),
            "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
            "max_ms": round(max(latencies, default=0) * 1000, 2),
            "gateway_connections_max": most,
        }
    finally:
        for p in (attacker, gw, up):
            if p is not None:
                p.kill()
                p.wait()
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"))
    ap.add_argument("--connections", type=int, default=500)
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--out", default=os.path.join(ROOT, "benches", "results"))
    args = ap.parse_args()
    if not shutil.which("slowhttptest"):
        sys.exit("slowhttptest is not installed (apt-get install slowhttptest)")
    settings = [
        ("defaults (header 10s, body 30s + 500 B/s)", ""),
        ("max_connections_per_ip: 100", "    max_connections_per_ip: 100\n"),
    ]
    rows = []
    for attack in ["none", "slowloris", "slow body"]:
        for setting, extra in settings:
            if attack == "none" and extra:
                continue
            row = run(args, setting, extra, attack)
            print(json.dumps(row), flush=True)
            rows.append(row)
    os.makedirs(args.out, exist_ok=True)
    name = f"slow-clients-{datetime.date.today().isoformat()}"
    with open(os.path.join(args.out, f"{name}.json"), "w") as f:
        json.dump({"connections": args.connections, "duration_s": args.duration, "rows": rows}, f,
                  indent=2)
    lines = [
        f"Attack: slowhttptest with {args.connections} connections from 127.0.0.1; a client on "
        f"127.0.0.10 sends a request on a new connection every 50 ms for {args.duration} s.",
        "",
        "| attack | gateway setting | requests | failed | p50 ms | p99 ms | max ms | gateway sockets (peak) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['attack']} | {r['setting']} | {r['requests']} | {r['failed']} | "
                     f"{r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | {r['gateway_connections_max']} |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, f"{name}.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
