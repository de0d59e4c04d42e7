#!/usr/bin/env python3
"""Prove a zero-downtime upgrade on this machine.

Starts a demo upstream and a Tollgate daemon on loopback ports, keeps steady load on it with
plain HTTP/1.1 keep-alive clients (Python's http.client: no automatic retry, every error counts),
performs five upgrades in a row with `tollgate upgrade` (the configuration changes each time), and
reports how many requests failed. Exit status 0 only when none did.

    scripts/upgrade-under-load.py [--bin target/release] [--clients 4] [--upgrades 5]
"""

import argparse
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, limit=20.0):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def write_config(path, workdir, port, upstream_port, generation):
    with open(path, "w") as f:
        f.write(
            f"""pid_file: {workdir}/tollgate.pid
upgrade_sock: {workdir}/upgrade.sock
grace_period_seconds: 1
graceful_shutdown_timeout_seconds: 5
listeners:
  - address: 127.0.0.1:{port}
upstreams:
  demo: {{peers: [127.0.0.1:{upstream_port}]}}
routes:
  - name: demo
    match: {{}}
    upstream: demo
    response_headers: {{set: {{x-generation: "{generation}"}}}}
"""
        )


class Load:
    def __init__(self, port, clients):
        self.port = port
        self.stop = threading.Event()
        self.ok = 0
        self.failures = []
        self.generations = set()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(clients)]

    def client(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        while not self.stop.is_set():
            try:
                conn.request("GET", "/load")
                resp = conn.getresponse()
                resp.read()
                with self.lock:
                    if resp.status == 200:
                        self.ok += 1
                        self.generations.add(resp.getheader("x-generation"))
                    else:
                        self.failures.append(f"status {resp.status}")
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
            except Exception as e:  # every error is a failure: no retry
                with self.lock:
                    self.failures.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.path.join(here, "..", "target", "release"))
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--upgrades", type=int, default=5)
    args = ap.parse_args()
    tollgate = os.path.join(args.bin, "tollgate")
    demo = os.path.join(args.bin, "tollgate-demo-upstream")
    for b in (tollgate, demo):
        if not os.access(b, os.X_OK):
            sys.exit(f"{b} not found: build with `cargo build --release --bins` or pass --bin")

    workdir = tempfile.mkdtemp(prefix="tollgate-upgrade-")
    conf = os.path.join(workdir, "tollgate.yaml")
    port, upstream_port = free_port(), free_port()
    write_config(conf, workdir, port, upstream_port, 0)
    upstream = subprocess.Popen([demo, "--listen", f"127.0.0.1:{upstream_port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = open(os.path.join(workdir, "gateway.log"), "w")
    subprocess.run([tollgate, "-d", "-c", conf], stdout=log, stderr=log, check=True)
    if not (wait_port(upstream_port) and wait_port(port)):
        sys.exit("the gateway or the demo upstream did not start")

    load = Load(port, args.clients)
    load.start()
    time.sleep(1)
    for generation in range(1, args.upgrades + 1):
        write_config(conf, workdir, port, upstream_port, generation)
        # The new daemon inherits the command's output: a file, not a pipe we would wait on.
        out_path = os.path.join(workdir, f"upgrade-{generation}.log")
        with open(out_path, "w") as out:
            r = subprocess.run([tollgate, "upgrade", "-c", conf], stdout=out, stderr=out)
        with open(out_path) as out:
            lines = [l for l in out.read().splitlines() if l.startswith(("upgraded", "upgrade"))]
        print(f"upgrade {generation}: {' '.join(lines) or 'exit ' + str(r.returncode)}")
        if r.returncode != 0:
            break
        time.sleep(1.5)
    load.finish()

    with open(os.path.join(workdir, "tollgate.pid")) as f:
        os.kill(int(f.read().strip()), signal.SIGTERM)
    upstream.terminate()
    total = load.ok + len(load.failures)
    print(f"{total} requests over {args.upgrades} upgrades: {load.ok} ok, {len(load.failures)} failed")
    print(f"configurations seen: {sorted(g for g in load.generations if g)}")
    for f in load.failures[:10]:
        print(f"  failure: {f}")
    sys.exit(0 if not load.failures and total > 0 else 1)


if __name__ == "__main__":
    main()
