#!/usr/bin/env python3
"""The training run of the profile-guided build (`scripts/build-pgo`): drives an instrumented
ratewarden through the work it does most, so that the profile it leaves behind tells the
compiler which code is hot and which branches are taken.

    python3 bench/pgo_train.py --bin target/pgo/instrumented/release/ratewarden [--lines 300000] [--orgs 1000]

What it runs, each with a fresh temporary directory, stopping every process it starts:
  replay    a workload of its own (deterministic, seeded here; not the benchmark file, so the
            benchmark does not measure a build trained on itself) with `--threads 1` and
            `--threads 2`, once with `--html`, and an nginx access log;
  daemon    NDJSON `POST /v1/events` for --orgs orgs x 3 apps over 24 h, `GET /metrics`,
            `GET /v1/usage`, `POST /v1/admit`, a file source tailing a log, a restart from
            the snapshot after SIGTERM, and one from the journal after `kill -9`.

An instrumented process writes its counts when it exits normally, so every daemon that is
to count ends with SIGTERM (the one killed with `kill -9` is followed by a restart that
replays its journal, which is what that step trains). Standard library only.
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ingest  # noqa: E402  (the daemon harness of the store benchmarks)


def workload(path, lines, seed=20261204):
    """Writes `lines` JSON events shaped like a video API's request log: Zipf-weighted orgs,
    apps, models, jobs that start and sometimes finish, 429s with Retry-After, some token
    counts, upstream rate-limit headers, request ids, and a few lines that are rejected."""
    rng = random.Random(seed)
    orgs = [f"team-{i}" for i in range(1, 81)]
    weights = [1.0 / i ** 0.9 for i in range(1, 81)]
    apps = ["studio", "batcher", "preview", "api-proxy", "nightly", "thumbs"]
    models = ["sora-2", "sora-2-pro", "gpt-image-1", "gpt-4.1-mini"]
    open_jobs = []
    t = 1_795_788_000_000
    with open(path, "w") as f:
        for n in range(lines):
            t += rng.randint(0, 4)
            org = rng.choices(orgs, weights)[0]
            ev = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t // 1000)) + f".{t % 1000:03d}Z",
                  "org": org, "app": rng.choice(apps), "model": rng.choice(models)}
            r = rng.random()
            if r < 0.07 and open_jobs:
                ev["kind"] = "job_completed" if rng.random() < 0.8 else "job_failed"
                ev["org"], ev["job_id"] = open_jobs.pop(rng.randrange(len(open_jobs)))
                ev["status"] = 200
            else:
                ev["kind"] = "request"
                ev["status"] = rng.choices([200, 202, 429, 500, 400], [60, 28, 8, 2, 2])[0]
                if ev["status"] in (200, 202):
                    job = f"job_{rng.getrandbits(96):024x}"
                    ev["job_id"] = job
                    if len(open_jobs) < 5000:
                        open_jobs.append((org, job))
                if ev["status"] == 429:
                    ev["retry_after"] = rng.choice([1, 2, 5, 20])
                ev["latency_ms"] = rng.randint(40, 2500)
                if rng.random() < 0.3:
                    ev["input_tokens"], ev["output_tokens"] = rng.randint(10, 4000), rng.randint(1, 2000)
                if rng.random() < 0.05:
                    ev["headers"] = {"x-ratelimit-limit-requests": "500",
                                     "x-ratelimit-remaining-requests": str(rng.randint(0, 500)),
                                     "x-ratelimit-reset-requests": "12s"}
                if rng.random() < 0.1:
                    ev["request_id"] = f"req-{n}"
            line = json.dumps(ev, separators=(",", ":"))
            if n % 997 == 0:
                line = line[: len(line) // 2]  # a torn line: rejected and counted
            f.write(line + "\n")


def clean_env():
    """The caller's environment without ratewarden's own variables: tokens set for a real
    deployment would make the training's daemon refuse its requests."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RATEWARDEN_")}


def need(ok, what):
    """Fails the training on an answer it does not expect (unlike `assert`, also under -O)."""
    if not ok:
        raise RuntimeError(what)


def run(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=clean_env(), timeout=600)


def train_replay(binary, work, lines):
    events = os.path.join(work, "events.jsonl")
    workload(events, lines)
    for threads in ("1", "2"):
        run([binary, "replay", "--json", "--threads", threads, events])
    run([binary, "replay", "--html", os.path.join(work, "report.html"), events])
    access = os.path.join(work, "access.log")
    nginx_log(access, 20_000)
    run([binary, "replay", "--format", "nginx", "--org", "edge", access])
    return events


def nginx_log(path, lines, seed=7):
    """Writes `lines` of nginx's `combined` format, as an API gateway in front of the
    upstream logs them."""
    rng = random.Random(seed)
    t = 1_795_788_000
    with open(path, "w") as f:
        for _ in range(lines):
            t += rng.randint(0, 1)
            when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(t))
            status = rng.choices([200, 202, 429, 500], [60, 30, 8, 2])[0]
            f.write(f'203.0.113.{rng.randint(1, 254)} - - [{when}] "POST /v1/videos HTTP/1.1" '
                    f'{status} {rng.randint(200, 4000)} "-" "openai-python/1.51.0"\n')


def tailed_count(d):
    """Events the file source `app` has ingested so far (its rejected torn lines aside)."""
    _, body, _ = d.get("/metrics")
    return ingest.metric_sum(body.decode(), "ratewarden_events_ingested_total", 'source="app"')


def train_daemon(binary, work, events, orgs):
    tailed = os.path.join(work, "tailed.jsonl")
    open(tailed, "w").close()
    d = ingest.Daemon(binary, work, ingest.free_port(), limits="max_new_orgs_per_second = 100000\n",
                      extra=f'[[sources.file]]\nname = "app"\npath = {json.dumps(tailed)}\n', env=clean_env())
    try:
        d.start(timeout=120)
        now = int(time.time() * 1000)
        series = [(f"org-{o:04d}", f"app-{a}") for o in range(orgs) for a in range(3)]
        for s in range(24 * 6, 0, -1):
            base = now - s * 600_000
            ingest.post_lines(d.port, [
                f'{{"ts":{base + (i * 7919) % 600 * 1000},"org":"{o}","app":"{a}","status":200}}'
                for i, (o, a) in enumerate(series)])
        written = 0
        with open(events) as src, open(tailed, "a") as dst:
            for _, line in zip(range(50_000), src):
                dst.write(line)
                written += 1
        # Every line but the torn ones (one in 997) is ingested; wait for the tailer.
        deadline = time.monotonic() + 120
        while tailed_count(d) < written - written // 997 - 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the file source did not read the tailed log within 120 s")
            time.sleep(0.1)
        for i in range(2000):
            status, _, _ = d.request("POST", "/v1/admit",
                                     json.dumps({"org": f"org-{i % orgs:04d}", "app": "app-0", "requests": 1}))
            need(status in (200, 429), f"POST /v1/admit answered {status}")
        for _ in range(10):
            status, _, _ = d.get("/metrics")
            need(status == 200, f"GET /metrics answered {status}")
        for path in ("/v1/usage", "/v1/alerts", "/v1/status"):
            status, _, _ = d.get(path)
            need(status == 200, f"GET {path} answered {status}")
        d.stop()
        # From the snapshot, then from the journal.
        d.start(timeout=120)
        ingest.post_lines(d.port, [f'{{"org":"org-{o:04d}","status":429,"retry_after":2}}' for o in range(orgs)])
        d.stop(signal.SIGKILL)
        d.start(timeout=120)
        status, _, _ = d.get("/metrics")
        need(status == 200, f"GET /metrics after kill -9 answered {status}")
    finally:
        d.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="the instrumented ratewarden")
    ap.add_argument("--lines", type=int, default=300_000, help="lines of the replay workload")
    ap.add_argument("--orgs", type=int, default=1000, help="orgs (of 3 apps each) the daemon is loaded with")
    args = ap.parse_args()
    if args.lines < 1 or args.orgs < 1:
        ap.error("--lines and --orgs must be at least 1")
    # SIGTERM unwinds like an exception, so every daemon started is stopped and the
    # temporary directory removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = tempfile.mkdtemp(prefix="rw-pgo-")
    try:
        t0 = time.monotonic()
        events = train_replay(args.bin, work, args.lines)
        print(f"pgo-train: replay done in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        t0 = time.monotonic()
        train_daemon(args.bin, work, events, args.orgs)
        print(f"pgo-train: daemon done in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
