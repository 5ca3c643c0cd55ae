#!/usr/bin/env python3
"""Whole-process benchmarks of the daemon with its store on.

    python3 bench/ingest.py post    --bin target/release/ratewarden [--seconds 20] [--clients 4]
    python3 bench/ingest.py startup --bin target/release/ratewarden [--orgs 1000] [--apps 10]
    python3 bench/ingest.py bodies  --bin target/release/ratewarden [--clients 32] [--rounds 3]
    python3 bench/ingest.py usage   --bin target/release/ratewarden [--orgs 500] [--apps 100]
    python3 bench/ingest.py idle    --bin target/release/ratewarden [--clients 1000]

post:    sustained POST /v1/events throughput, NDJSON bodies of 1,000 events over keep-alive
         loopback connections; every 202 means the batch is committed (full-sync SQLite).
startup: fills the store with 24 h of state (one request per minute for every org/app, spread
         over the last 24 h), stops the daemon, and times how long a restart takes until
         /readyz answers 200: after SIGTERM (from the snapshot) and after kill -9 (snapshot plus
         journal). Prints the store size too.
bodies:  memory under maximal bodies: --clients connections each send --rounds NDJSON bodies of
         just under the default max_body_bytes (16 MiB) at once; prints the daemon's peak RSS
         (VmHWM), its RSS when idle before, and how the answers split (202, 429 with Retry-After).
usage:   ingest latency while /v1/usage is read: loads --orgs x --apps app series, then times
         single-event POSTs on one keep-alive connection alone and with two clients reading
         /v1/usage in a loop; prints p50/p99 of each and how long one /v1/usage takes.
idle:    /healthz while --clients connections are open and silent (and as many more that sent
         half a request head): the time to a 200 on a new connection, p50 and max of 50.

Standard library only. Each run uses a fresh temporary data directory and stops the daemon.
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def post_lines(port, lines, per_body=20_000):
    """POSTs `lines` as NDJSON bodies of `per_body` lines on one connection; each must be 202."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    for i in range(0, len(lines), per_body):
        c.request("POST", "/v1/events", "\n".join(lines[i:i + per_body]) + "\n",
                  {"Content-Type": "application/x-ndjson"})
        r = c.getresponse()
        r.read()
        if r.status != 202:
            raise RuntimeError(f"POST /v1/events answered {r.status}")


class Daemon:
    """A daemon on `port` with its store in `workdir`: `server` and `limits` are added to those
    sections of its config, `extra` (whole sections) after them; `env` is its environment
    (default this process's)."""

    def __init__(self, binary, workdir, port, server="max_body_bytes = 67108864\n", limits="", extra="",
                 env=None):
        self.binary, self.workdir, self.port, self.env = binary, workdir, port, env
        self.cfg = os.path.join(workdir, "bench.toml")
        # json.dumps quotes a path as a TOML basic string, escapes included.
        data = json.dumps(os.path.join(workdir, "data"))
        with open(self.cfg, "w") as f:
            f.write(f'[server]\nlisten = "127.0.0.1:{port}"\n{server}'
                    f'[storage]\npath = {data}\n[limits]\nmax_orgs = 20000\n{limits}{extra}')
        self.proc = None

    def start(self, timeout=600):
        """Starts the daemon and returns the seconds until /readyz answered 200; raises with
        the end of its log if it exits first, or after `timeout` seconds."""
        t0 = time.monotonic()
        path = os.path.join(self.workdir, "daemon.log")
        env = dict(os.environ if self.env is None else self.env, RUST_LOG="warn")
        with open(path, "ab") as log:
            self.proc = subprocess.Popen([self.binary, "run", "--config", self.cfg], stdout=log, stderr=log,
                                         env=env)
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                with open(path, "rb") as f:
                    said = f.read()[-2000:].decode(errors="replace")
                raise RuntimeError(f"the daemon exited with {self.proc.returncode}:\n{said}")
            try:
                if self.request("GET", "/readyz", timeout=1)[0] == 200:
                    return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError(f"the daemon did not become ready within {timeout} s")

    def stop(self, sig=signal.SIGTERM):
        """Sends `sig` and waits up to 30 s (then kills it and raises); nothing when it is not
        running."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def request(self, method, path, body=None, timeout=120):
        """One request on a connection of its own (`timeout` seconds for each step): (status,
        body bytes, seconds from connecting to the whole answer)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            t0 = time.perf_counter()
            c.request(method, path, body, {"Content-Type": "application/json"} if body else {})
            r = c.getresponse()
            data = r.read()
            return r.status, data, time.perf_counter() - t0
        finally:
            c.close()

    def get(self, path):
        return self.request("GET", path)

    def status_kb(self, field):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric_sum(exposition, name, label=""):
    """The sum of every series of metric `name` in a text exposition, of those whose labels
    contain `label` when given."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in exposition.splitlines()
               if line.startswith(name + "{") and label in line)


def post_bodies(port, bodies, stop, counts, idx, lock):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    n, i = 0, 0
    while not stop.is_set():
        body = bodies[i % len(bodies)]
        i += 1
        conn.request("POST", "/v1/events", body, {"Content-Type": "application/x-ndjson"})
        r = conn.getresponse()
        r.read()
        if r.status != 202:
            raise RuntimeError(f"status {r.status}")
        n += 1000
    with lock:
        counts[idx] = n


def bench_post(args):
    work = tempfile.mkdtemp(prefix="rw-bench-")
    try:
        d = Daemon(args.bin, work, free_port())
        d.start()
        now = int(time.time() * 1000)
        bodies = []
        for b in range(64):
            lines = []
            for k in range(1000):
                org = f"org-{(b * 1000 + k) % 50}"
                lines.append(json.dumps({"ts": now - 60_000 + k, "org": org, "app": f"app-{k % 5}",
                                         "status": 200 if k % 20 else 429, "latency_ms": 300}))
            bodies.append(("\n".join(lines) + "\n").encode())
        stop, lock = threading.Event(), threading.Lock()
        counts = [0] * args.clients
        cpu0 = d.cpu_seconds()
        t0 = time.monotonic()
        threads = [threading.Thread(target=post_bodies, args=(d.port, bodies, stop, counts, i, lock))
                   for i in range(args.clients)]
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        stop.set()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
        cpu = d.cpu_seconds() - cpu0
        total = sum(counts)
        print(f"post: {total} events in {wall:.1f} s = {total / wall:,.0f} events/s "
              f"({total / 1000 / wall:,.0f} batches/s, {args.clients} clients); daemon CPU {cpu:.1f} s")
        d.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_startup(args):
    work = tempfile.mkdtemp(prefix="rw-bench-")
    try:
        d = Daemon(args.bin, work, free_port())
        d.start()
        now = int(time.time() * 1000)
        minutes = 24 * 60
        series = [(f"org-{o}", f"app-{a}") for o in range(args.orgs) for a in range(args.apps)]
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=120)
        t0 = time.monotonic()
        sent = 0
        per_body = 20_000
        buf = []
        for m in range(minutes, 0, -1):
            ts = now - m * 60_000
            for org, app in series:
                buf.append(f'{{"ts":{ts},"org":"{org}","app":"{app}","status":200}}')
                if len(buf) == per_body:
                    conn.request("POST", "/v1/events", "\n".join(buf) + "\n", {"Content-Type": "application/x-ndjson"})
                    r = conn.getresponse()
                    r.read()
                    assert r.status == 202, r.status
                    sent += len(buf)
                    buf = []
        if buf:
            conn.request("POST", "/v1/events", "\n".join(buf) + "\n", {"Content-Type": "application/x-ndjson"})
            conn.getresponse().read()
            sent += len(buf)
        print(f"startup: loaded {sent:,} events ({args.orgs} orgs x {args.apps} apps, one per minute over 24 h) "
              f"in {time.monotonic() - t0:.0f} s")
        d.stop()  # SIGTERM: final snapshot
        size = sum(os.path.getsize(os.path.join(work, "data", f)) for f in os.listdir(os.path.join(work, "data")))
        print(f"startup: store size {size / 1e6:.1f} MB")
        took = [d.start() for _ in range(1)]
        _, body, _ = d.request("GET", "/v1/usage", timeout=10)
        orgs = json.loads(body)["orgs"]
        daily = sum(o["usage"]["daily"] for o in orgs)
        print(f"startup: after SIGTERM, ready in {took[0]:.2f} s with {len(orgs)} orgs, daily total {daily:,}")
        # Journal on top of the snapshot, then kill -9.
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=120)
        extra = [f'{{"ts":{now},"org":"{o}","app":"{a}","status":200}}' for o, a in series] * 20
        for i in range(0, len(extra), per_body):
            conn.request("POST", "/v1/events", "\n".join(extra[i:i + per_body]) + "\n",
                         {"Content-Type": "application/x-ndjson"})
            conn.getresponse().read()
        d.stop(signal.SIGKILL)
        took = d.start()
        print(f"startup: after kill -9 with {len(extra):,} events in the journal, ready in {took:.2f} s")
        d.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_bodies(args):
    work = tempfile.mkdtemp(prefix="rw-bench-")
    try:
        d = Daemon(args.bin, work, free_port(), server="")
        d.start()
        now = int(time.time() * 1000)
        limit = 16 * 1024 * 1024
        lines, size, k = [], 0, 0
        while True:
            line = json.dumps({"ts": now - 60_000 + k % 50_000, "org": f"org-{k % 50}",
                               "app": f"app-{k % 5}", "model": "sora-2",
                               "status": 200 if k % 20 else 429, "latency_ms": 300,
                               "job_id": f"vid_{k:024x}"}) + "\n"
            if size + len(line) > limit:
                break
            lines.append(line)
            size += len(line)
            k += 1
        body = "".join(lines).encode()
        time.sleep(1)
        idle = d.status_kb("VmRSS")
        answers, lock = {}, threading.Lock()
        accepted = [0]

        def client():
            for _ in range(args.rounds):
                conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=300)
                try:
                    conn.request("POST", "/v1/events", body, {"Content-Type": "application/x-ndjson"})
                    r = conn.getresponse()
                    out = r.read()
                except OSError as e:
                    with lock:
                        key = type(e).__name__
                        answers[key] = answers.get(key, 0) + 1
                    continue
                key = f"{r.status}" + (f" Retry-After {r.getheader('Retry-After')}" if r.status == 429 else "")
                with lock:
                    answers[key] = answers.get(key, 0) + 1
                    if r.status == 202:
                        accepted[0] += json.loads(out)["accepted"]
                conn.close()
                if r.status == 429:
                    time.sleep(float(r.getheader("Retry-After") or 1))

        t0 = time.monotonic()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
        peak = d.status_kb("VmHWM")
        print(f"bodies: {args.clients} clients x {args.rounds} bodies of {len(body) / 2**20:.1f} MiB "
              f"({k:,} events each) in {wall:.1f} s; answers {dict(sorted(answers.items()))}; "
              f"{accepted[0]:,} events accepted")
        print(f"bodies: daemon RSS idle {idle / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB")
        d.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def bench_usage(args):
    work = tempfile.mkdtemp(prefix="rw-bench-")
    try:
        d = Daemon(args.bin, work, free_port())
        d.start()
        now = int(time.time() * 1000)
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=120)
        lines = [f'{{"ts":{now - 1000},"org":"org-{o}","app":"app-{a}","status":200}}'
                 for o in range(args.orgs) for a in range(args.apps)]
        for i in range(0, len(lines), 10_000):
            conn.request("POST", "/v1/events", "\n".join(lines[i:i + 10_000]) + "\n",
                         {"Content-Type": "application/x-ndjson"})
            r = conn.getresponse()
            r.read()
            assert r.status == 202, r.status

        def ingest_latencies(n):
            c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
            out = []
            for k in range(n):
                body = f'{{"org":"org-{k % args.orgs}","app":"app-0","status":200}}'
                t0 = time.perf_counter()
                c.request("POST", "/v1/events", body, {"Content-Type": "application/x-ndjson"})
                r = c.getresponse()
                r.read()
                out.append((time.perf_counter() - t0) * 1000)
                assert r.status == 202, r.status
            return out

        alone = ingest_latencies(args.samples)
        stop = threading.Event()
        reads = []

        def poller():
            c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=120)
            while not stop.is_set():
                t0 = time.perf_counter()
                c.request("GET", "/v1/usage")
                r = c.getresponse()
                size = len(r.read())
                reads.append(((time.perf_counter() - t0) * 1000, size))

        pollers = [threading.Thread(target=poller) for _ in range(2)]
        for t in pollers:
            t.start()
        time.sleep(0.5)
        busy = ingest_latencies(args.samples)
        stop.set()
        for t in pollers:
            t.join()
        series = args.orgs * args.apps
        print(f"usage: {series:,} app series; /v1/usage {reads[-1][1] / 1e6:.1f} MB, "
              f"p50 {percentile([r[0] for r in reads], 50):.0f} ms over {len(reads)} reads")
        print(f"usage: ingest alone      p50 {percentile(alone, 50):.2f} ms, p99 {percentile(alone, 99):.2f} ms")
        print(f"usage: ingest, 2 pollers p50 {percentile(busy, 50):.2f} ms, p99 {percentile(busy, 99):.2f} ms")
        d.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_idle(args):
    work = tempfile.mkdtemp(prefix="rw-bench-")
    held = []
    try:
        d = Daemon(args.bin, work, free_port(), server="")
        d.start()
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * args.clients + 256)), hard))
        for i in range(2 * args.clients):
            s = socket.create_connection(("127.0.0.1", d.port))
            if i % 2:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            held.append(s)
        times = []
        for _ in range(50):
            status, _, secs = d.request("GET", "/healthz", timeout=10)
            assert status == 200, status
            times.append(secs * 1000)
        print(f"idle: {args.clients} silent + {args.clients} half-head connections open; "
              f"/healthz p50 {percentile(times, 50):.2f} ms, max {max(times):.2f} ms")
        d.stop()
    finally:
        for s in held:
            s.close()
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["post", "startup", "bodies", "usage", "idle"])
    ap.add_argument("--bin", default="target/release/ratewarden")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--orgs", type=int, default=1000)
    ap.add_argument("--apps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=400)
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    {"post": bench_post, "startup": bench_startup, "bodies": bench_bodies, "usage": bench_usage, "idle": bench_idle}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
