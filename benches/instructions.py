#!/usr/bin/env python3
"""User-space instructions per proxied request, counted by valgrind's callgrind: repeatable
where CPU time on a shared or virtual machine is not (the kernel's share is not counted).

Runs each proxy under callgrind with instrumentation off, warms it up, switches instrumentation on,
sends a fixed-duration closed-loop load with the bundled generator, switches it off and divides
the instructions executed by the requests answered. Proxies: tollgate (`proxy` scenario
configuration, or `policies`/`cache-hit`/`access-log`), bare Pingora (examples/bare_proxy;
`pingora-bare-forwarding` with its forwarding headers and timeouts),
nginx (`master_process off`) and HAProxy (one thread), with benches/load.py's configurations
(`nginx-proxy`, `nginx-policies`, `haproxy-proxy`, `haproxy-policies`); TLS 1.3 keep-alive with
`tls`, `pingora-bare-tls`, `pingora-bare-forwarding-tls` and `nginx-tls` (a certificate made per
target).

Usage: python3 benches/instructions.py [--bin-dir target/release] [--seconds 5]
       [--targets proxy,pingora-bare,nginx-proxy] [--annotate]
--annotate keeps the callgrind files and prints the top functions (callgrind_annotate).
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402  (the load bench's configurations and helpers)


def control(pid, *args):
    subprocess.run(["callgrind_control", *args, str(pid)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_callgrind(pid, timeout=30):
    """Until callgrind_control can talk to the process."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = subprocess.run(["callgrind_control", "-s", str(pid)], capture_output=True, text=True)
        if r.returncode == 0 and "No active callgrind runs" not in r.stdout + r.stderr:
            return
        time.sleep(0.2)
    raise RuntimeError("callgrind_control cannot reach the process")


def measure(args, target, bench_bin, upstream_port, keep_dir):
    procs = load.Procs()
    d = tempfile.mkdtemp(prefix=f"tollgate-instr-{target}-")
    try:
        port = load.free_port()
        # TLS keep-alive targets (`tls`, `pingora-bare-tls`, `nginx-tls`): a certificate of their own.
        tls = load.mode_of(target) == "tls"
        certs = load.make_certs(d) if tls else None
        out = os.path.join(d, "callgrind.out")
        vg = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
              f"--callgrind-out-file={out}.%p"]
        if target.startswith("pingap"):
            conf = os.path.join(d, "pingap.toml")
            with open(conf, "w") as f:
                f.write(load.pingap_config(d, target, port, upstream_port, 1))
            cmd = vg + [args.pingap, "-c", conf, "--log", os.path.join(d, "pingap.log")]
        elif target.startswith("haproxy"):
            conf = os.path.join(d, "haproxy.cfg")
            with open(conf, "w") as f:
                f.write(load.haproxy_config(d, target, port, upstream_port, 1, 1000))
            cmd = vg + [args.haproxy, "-f", conf, "-db"]
        elif target.startswith("nginx"):
            conf = os.path.join(d, "nginx.conf")
            text = load.nginx_config(d, target, port, upstream_port, 1, 1000, certs)
            text = text.replace("daemon off;", "daemon off;\nmaster_process off;")
            with open(conf, "w") as f:
                f.write(text)
            for sub in ("body", "proxy", "fcgi", "uwsgi", "scgi", "cache"):
                os.makedirs(os.path.join(d, sub), exist_ok=True)
            cmd = vg + [args.nginx, "-c", conf, "-p", d]
        elif target.startswith("pingora-bare"):
            cmd = vg + [os.path.join(args.bin_dir, "examples", "bare_proxy"),
                        f"127.0.0.1:{port}", f"127.0.0.1:{upstream_port}", "1"]
            if tls:
                cmd += [certs["cert"], certs["key"]]
            if target.startswith("pingora-bare-forwarding"):
                cmd.append("--forwarding")
        else:
            conf = os.path.join(d, "tollgate.yaml")
            with open(conf, "w") as f:
                f.write(load.tollgate_config(d, target, port, upstream_port, 1, certs))
            cmd = vg + [os.path.join(args.bin_dir, "tollgate"), "-c", conf]
        p = procs.start(load.pinned(cmd, args.proxy_cpu), env=dict(os.environ, RUST_LOG="warn"))
        load.wait_port(port, p, timeout=60)
        wait_callgrind(p.pid)
        if "cache" in target:
            load.warm_cache(port, target)
        path, headers, host = load.SCENARIO_REQUEST.get(target, ("/items/1", [], None))
        gen = [bench_bin, "load", "--target", f"127.0.0.1:{port}", "--path", path,
               "--connections", str(args.connections), "--warmup", "0"]
        for h in headers + ([f"Host: {host}"] if host else []):
            gen += ["--header", h]
        if tls:
            gen += ["--tls-ca", certs["ca"], "--server-name", "localhost"]
        # Warm up uninstrumented, then count.
        subprocess.run(load.pinned(gen + ["--duration", "2"], args.load_cpu),
                       stdout=subprocess.DEVNULL, check=True)
        control(p.pid, "-z")
        control(p.pid, "-i", "on")
        r = subprocess.run(load.pinned(gen + ["--duration", str(args.seconds)], args.load_cpu),
                           capture_output=True, text=True, check=True)
        control(p.pid, "-i", "off")
        control(p.pid, "-d")
        summary = [line for line in r.stdout.splitlines() if line.startswith("{")][-1]
        requests = load.json.loads(summary)["requests"]
        time.sleep(0.5)
        total = 0
        files = sorted(glob.glob(out + ".*"))
        for fname in files:
            with open(fname) as f:
                for line in f:
                    if line.startswith("summary:") or line.startswith("totals:"):
                        total = max(total, int(line.split()[1]))
        if keep_dir:
            for fname in files:
                shutil.copy(fname, os.path.join(keep_dir, f"{target}-{os.path.basename(fname)}"))
        return {"target": target, "requests": requests, "instructions": total,
                "per_request": round(total / requests) if requests else None,
                "files": files}
    finally:
        procs.stop_all()
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", default=os.path.join(load.ROOT, "target", "release"))
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--targets", default="proxy,policies,cache-hit,pingora-bare,nginx-proxy")
    ap.add_argument("--annotate", action="store_true")
    ap.add_argument("--pingap", default=None, help="the pingap binary, for pingap-proxy and pingap-policies")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    args.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    args.haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    cpus = sorted(os.sched_getaffinity(0))
    args.proxy_cpu, args.load_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    bench_bin = os.path.join(args.bin_dir, "tollgate-bench")
    keep = tempfile.mkdtemp(prefix="tollgate-callgrind-") if args.annotate else None
    procs = load.Procs()
    upstream_port = load.free_port()
    up = procs.start(load.pinned([bench_bin, "upstream", "--listen", f"127.0.0.1:{upstream_port}"],
                                 args.load_cpu))
    try:
        load.wait_port(upstream_port, up)
        results = []
        for t in [x.strip() for x in args.targets.split(",") if x.strip()]:
            peer = {"nginx": args.nginx, "haproxy": args.haproxy,
                    "pingap": args.pingap or ""}.get(t.split("-")[0])
            if peer and not os.access(peer, os.X_OK):
                print(f"{t}: {t.split('-')[0]} not installed, skipped")
                continue
            r = measure(args, t, bench_bin, upstream_port, keep)
            results.append(r)
            print(f"{t}: {r['per_request']} instructions per request "
                  f"({r['instructions']} over {r['requests']} requests)", flush=True)
    finally:
        procs.stop_all()
    base = {r["target"]: r["per_request"] for r in results}
    print()
    for name, a, b in [("proxy / pingora-bare", "proxy", "pingora-bare"),
                       ("proxy / pingora-bare-forwarding", "proxy", "pingora-bare-forwarding"),
                       ("pingora-bare-forwarding / pingora-bare", "pingora-bare-forwarding",
                        "pingora-bare"),
                       ("proxy / nginx-proxy", "proxy", "nginx-proxy"),
                       ("proxy / haproxy-proxy", "proxy", "haproxy-proxy"),
                       ("proxy / pingap-proxy", "proxy", "pingap-proxy"),
                       ("policies / pingap-policies", "policies", "pingap-policies"),
                       ("policies / proxy", "policies", "proxy"),
                       ("policies / nginx-policies", "policies", "nginx-policies"),
                       ("policies / haproxy-policies", "policies", "haproxy-policies"),
                       ("access-log / proxy", "access-log", "proxy")]:
        if base.get(a) and base.get(b):
            print(f"{name}: {base[a] / base[b]:.2f}")
    if keep:
        for fname in sorted(glob.glob(os.path.join(keep, "*"))):
            print(f"\n== {os.path.basename(fname)}")
            out = subprocess.run(["callgrind_annotate", "--inclusive=no", fname],
                                 capture_output=True, text=True).stdout
            print("\n".join(out.splitlines()[:60]))
        print(f"\ncallgrind files kept in {keep}")


if __name__ == "__main__":
    main()
