#!/usr/bin/env python3
"""Several replicas on one Redis: ingest throughput, engine memory, a new replica's start.

    cargo build --release --example post_load
    python3 bench/cluster.py [--bin target/release/ratewarden] [--seconds 10] [--orgs 10000]

ingest:  durable POST /v1/events (NDJSON x 1 000, examples/post_load) against one daemon on
         SQLite (no [cluster]), one replica on Redis, and three replicas on one Redis (one
         loader per replica, run at once; the figure is their sum). Every 202 means stored.
state:   --orgs orgs x 3 apps, one request each, through one replica; once the leader's
         snapshot is in Redis: Redis used_memory per 1 000 orgs (snapshot plus what is left of
         the log), and how long a new replica takes from start to /readyz 200.

Redis runs with appendonly yes, appendfsync everysec (the settings the README suggests
besides `always`). Everything shares this machine's cores: compare the ratios, not the
absolute figures. Standard library only; starts and stops its own redis-server.
"""
import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ingest  # noqa: E402
from ingest import free_port, post_lines  # noqa: E402


class Redis:
    def __init__(self, workdir):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec", "--dir", workdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(500):
            if self.cli("PING") == "PONG":
                return
            time.sleep(0.01)
        raise RuntimeError("redis-server did not start")

    def cli(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True)
        return out.stdout.strip()

    def used_memory(self):
        for line in self.cli("INFO", "memory").splitlines():
            if line.startswith("used_memory:"):
                return int(line.split(":")[1])
        return 0

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def replica(binary, redis, name, extra=""):
    work = tempfile.mkdtemp(prefix=f"rw-cluster-{name}-")
    # Every org of the state run arrives in one second of event time.
    cluster = f'max_new_orgs_per_second = 1000000\n[cluster]\nredis_url = "redis://127.0.0.1:{redis.port}"\nreplica_id = "{name}"\n{extra}'
    return ingest.Daemon(binary, work, free_port(), limits=cluster)


def load(loader, daemons, seconds, clients):
    procs = [subprocess.Popen([loader, "--addr", f"127.0.0.1:{d.port}", "--clients", str(clients),
                               "--seconds", str(seconds)], stdout=subprocess.PIPE, text=True)
             for d in daemons]
    total = 0.0
    for p in procs:
        line = p.communicate()[0].strip()
        total += float(line.split(" = ")[1].split()[0])
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default="target/release/ratewarden")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--orgs", type=int, default=10_000)
    args = ap.parse_args()
    loader = os.path.join(os.path.dirname(HERE), "target", "release", "examples", "post_load")
    if not os.path.exists(loader):
        sys.exit(f"{loader} is missing: cargo build --release --example post_load")
    if not shutil.which("redis-server"):
        sys.exit("redis-server is missing (Debian package redis-server)")
    print(f"cluster: {os.cpu_count()} cores shared by Redis, the replicas and the loaders")

    rates = {}
    work = tempfile.mkdtemp(prefix="rw-cluster-single-")
    d = ingest.Daemon(args.bin, work, free_port())
    try:
        d.start()
        rates["single"] = load(loader, [d], args.seconds, 4)
    finally:
        d.stop()
        shutil.rmtree(work, ignore_errors=True)
    for n in (1, 3):
        rdir = tempfile.mkdtemp(prefix="rw-redis-")
        redis = Redis(rdir)
        ds = [replica(args.bin, redis, f"r{i}") for i in range(n)]
        try:
            for d in ds:
                d.start()
            rates[n] = load(loader, ds, args.seconds, max(1, 4 // n))
        finally:
            for d in ds:
                d.stop()
                shutil.rmtree(d.workdir, ignore_errors=True)
            redis.stop()
            shutil.rmtree(rdir, ignore_errors=True)
    print(f"  ingest, one daemon on SQLite        {rates['single'] / 1e3:8.0f} k events/s")
    print(f"  ingest, 1 replica on Redis          {rates[1] / 1e3:8.0f} k events/s"
          f"  ({rates[1] / rates['single']:.2f}x SQLite)")
    print(f"  ingest, 3 replicas on one Redis     {rates[3] / 1e3:8.0f} k events/s"
          f"  ({rates[3] / rates[1]:.2f}x one replica)")

    rdir = tempfile.mkdtemp(prefix="rw-redis-")
    redis = Redis(rdir)
    first = replica(args.bin, redis, "r0", 'snapshot_interval = "1s"\n')
    late = None
    try:
        first.start()
        now = int(time.time() * 1000)
        lines = [f'{{"org":"org-{o}","app":"app-{a}","ts":{now},"status":200}}'
                 for o in range(args.orgs) for a in range(3)]
        post_lines(first.port, lines)
        time.sleep(4)  # the leader's next snapshot, and the trim behind it
        used = redis.used_memory()
        log_len = redis.cli("XLEN", "ratewarden:log")
        snap = int(redis.cli("HSTRLEN", "ratewarden:snapshot", "state") or 0)
        print(f"  state of {args.orgs:,} orgs x 3 apps: Redis used_memory {used / 2**20:.1f} MiB"
              f" ({used / args.orgs * 1000 / 2**20:.2f} MiB per 1 000 orgs; snapshot {snap / 2**20:.1f} MiB,"
              f" {log_len} log entries left)")
        late = replica(args.bin, redis, "r1")
        ready = late.start()
        c = http.client.HTTPConnection("127.0.0.1", late.port, timeout=60)
        c.request("GET", "/v1/usage")
        orgs = len(json.loads(c.getresponse().read())["orgs"])
        print(f"  a new replica ready in {ready:.2f} s, answering for {orgs:,} orgs"
              f" (restores the shared snapshot, follows on)")
    finally:
        for d in (first, late):
            if d and d.proc:
                d.stop()
                shutil.rmtree(d.workdir, ignore_errors=True)
        redis.stop()
        shutil.rmtree(rdir, ignore_errors=True)


if __name__ == "__main__":
    main()
