#!/usr/bin/env python3
"""Admission throughput and latency: POST /v1/admit with a compiled load generator.

    cargo build --release --example admit_load
    python3 bench/admit.py [--bin target/release/ratewarden] [--seconds 15] [--clients 256]

one:       one daemon on SQLite; --clients clients, each with one keep-alive connection,
           asking for one request of one of 100 orgs at a time (limits high enough that
           every ask is granted: the figure is the cost of a grant, reserved and journaled).
baseline:  the same clients against the same daemon posting to /healthz (405 at once):
           what the HTTP stack and the client cost without any decision.
replicas:  three replicas on one Redis, the clients spread over them; every ask goes
           through the shared log and is decided where it is applied.

Prints asks/s and latency percentiles (measured by the client) and each as a ratio against
the baseline run here. Everything shares this machine's cores: compare ratios. Standard
library only; starts and stops its own daemons and redis-server.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ingest  # noqa: E402
from cluster import Redis, replica  # noqa: E402
from ingest import free_port  # noqa: E402

LIMITS = 'default_tier = "big"\n[tiers.big]\nrpm = 1000000000\ndaily = 0\n'


def run(loader, ports, seconds, clients, path="/v1/admit"):
    args = [loader, "--seconds", str(seconds), "--clients", str(clients), "--path", path]
    for p in ports:
        args += ["--addr", f"127.0.0.1:{p}"]
    line = subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()
    fields = {}
    fields["rate"] = float(line.split(" = ")[1].split()[0])
    lat = line.split("latency ms ")[1].split()
    fields.update({lat[i]: float(lat[i + 1]) for i in range(0, len(lat), 2)})
    return line, fields


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/ratewarden")
    ap.add_argument("--loader", default="target/release/examples/admit_load")
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--clients", type=int, default=256)
    a = ap.parse_args()
    for path in (a.bin, a.loader):
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: cargo build --release --example admit_load")
    work = tempfile.mkdtemp(prefix="rw-admit-")
    try:
        one = ingest.Daemon(a.bin, work, free_port(), limits=LIMITS)
        one.start()
        line, base = run(a.loader, [one.port], a.seconds, a.clients, "/healthz")
        print("baseline (405):", line)
        line, single = run(a.loader, [one.port], a.seconds, a.clients)
        print("one daemon:    ", line)
        print(f"  RSS after: {one.status_kb('VmRSS') / 1024:.0f} MiB, peak {one.status_kb('VmHWM') / 1024:.0f} MiB")
        one.stop()
        redis = Redis(work)
        daemons = [replica(a.bin, redis, f"r{i}", extra="") for i in range(3)]
        for d in daemons:
            with open(d.cfg) as f:
                cfg = f.read()
            with open(d.cfg, "w") as f:
                f.write(cfg.replace("[limits]\n", "[limits]\n" + LIMITS.split("\n[tiers")[0] + "\n", 1)
                        + "\n[tiers.big]\nrpm = 1000000000\ndaily = 0\n")
            d.start()
        line, three = run(a.loader, [d.port for d in daemons], a.seconds, a.clients)
        print("three replicas:", line)
        for d in daemons:
            d.stop()
        redis.stop()
        print()
        print(f"one daemon:     {single['rate']:.0f} asks/s = {single['rate'] / base['rate']:.2f}x the baseline's answers/s; "
              f"p50 {single['p50']:.2f} ms, p99 {single['p99']:.2f} ms ({single['p99'] / base['p99']:.2f}x the baseline's p99 {base['p99']:.2f} ms)")
        print(f"three replicas: {three['rate']:.0f} asks/s = {three['rate'] / single['rate']:.2f}x one daemon; "
              f"p50 {three['p50']:.2f} ms, p99 {three['p99']:.2f} ms ({three['p99'] / single['p99']:.2f}x one daemon's)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
