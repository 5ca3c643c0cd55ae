#!/usr/bin/env python3
"""Performance and footprint, in one run, as ratios against baselines run alongside.

    python3 bench/perf.py replay [--bin target/release/ratewarden] [--lines 2000000] [--rounds 3]
                                 [--mtail-runs 3]
    python3 bench/perf.py scale  [--bin target/release/ratewarden] [--orgs 10000] [--apps 3]
    python3 bench/perf.py post   [--bin ...] [--clients 4] [--seconds 15] [--rounds 3]
    python3 bench/perf.py all    [--bin ...] [--baseline OTHER_BINARY]

replay: generates the workload once (../shared/bench/gen_events.py, deterministic; cached
        under $XDG_CACHE_HOME or ~/.cache/ratewarden-bench), then times on that one file:
        `ratewarden replay --json` with `--threads 1` and with the default thread count, and
        the baselines `wc -l` and mtail 3 with ../shared/bench/requests.mtail (when `mtail` is
        installed). Prints lines/s, CPU seconds per million lines and peak RSS of each (the RSS
        has a floor of some 14 MiB: the wrapper that measures it forks from Python), and every
        figure as a ratio to mtail (and to `wc -l`). Each row is the median of its runs, with
        the slowest and fastest beside it: --rounds rounds, one run of each ratewarden row and
        of `wc -l` per round (wall times on a shared machine move by 10 % and more from one
        minute to the next), and --mtail-runs runs of mtail (15 s each) spread over the
        rounds, so that the baseline of the ratios is a median too. With --baseline, the
        same runs of another binary (an older build) are printed after them, with the ratio
        new/old.
scale:  the daemon with its store, at scale: 24 h of traffic for --orgs x --apps (one request
        per org and app every 10 minutes, spread over the last 24 h) posted as NDJSON; then
        its RSS (VmRSS) and peak (VmHWM), `GET /metrics` size and time (median of 5), `GET
        /v1/usage` time with the peak and resident memory after it, and the
        time from a restart after `kill -9` to `/readyz` 200, with the usage checked intact
        (`ratewarden_requests_total` summed: every request sent, before and after; the daily
        usage is compared too, but it is a rolling 24 h whose oldest minute of this traffic
        may leave between the reads). Then a second daemon with
        500 orgs x 100 apps, one request each (50 000 app series): its RSS.

post:   sustained durable `POST /v1/events` (NDJSON bodies of 1 000 events, keep-alive, every
        202 after its commit) driven by the compiled load generator
        `target/release/examples/post_load` (built with `cargo build --release --example
        post_load`): events/s and the daemon's CPU per event for each binary, twice: with
        timestamps that follow the clock (what shippers send) and with the same second posted
        over and over (every event late for its org: the late path's worst case); --rounds
        runs of each binary, alternating, and their medians.

Figures on a shared machine are noisy: compare ratios from one run, not absolute times
across runs. Standard library only; each daemon runs in a fresh temporary directory on a
free loopback port and is stopped at the end.
"""
import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ingest  # noqa: E402  (the daemon harness shared with the store benchmarks)
from ingest import free_port  # noqa: E402
SHARED = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "bench"))
# The row of the mtail baseline (../shared/bench/requests.mtail).
MTAIL = "mtail 3 (requests.mtail)"


def timed(cmd, stdout=subprocess.DEVNULL, stdin=None):
    """Runs `cmd`; returns (wall s, CPU s of the children, peak RSS KiB of the child)."""
    # A fresh process each time so that ru_maxrss (and the CPU time) is this command's own;
    # the wall time is taken in it too, around the command alone: the wrapper's own start
    # (some 40 ms of Python) was half of `wc -l`'s time and a few percent of a replay's.
    wrapper = [sys.executable, "-c",
               "import resource,subprocess,sys,time;"
               "t=time.monotonic();"
               "r=subprocess.run(sys.argv[1:],stdout=sys.stdout,stdin=sys.stdin);"
               "t=time.monotonic()-t;"
               "u=resource.getrusage(resource.RUSAGE_CHILDREN);"
               "sys.stderr.write(f'\\nRUN {t} {u.ru_utime+u.ru_stime} {u.ru_maxrss}\\n');"
               "sys.exit(r.returncode)"] + cmd
    p = subprocess.run(wrapper, stdout=stdout, stdin=stdin, stderr=subprocess.PIPE)
    # The command's own stderr comes first in the same pipe: the figures are the last line.
    lines = p.stderr.decode(errors="replace").splitlines()
    figures = lines.pop() if lines and lines[-1].startswith("RUN ") else None
    if p.returncode != 0:
        said = "\n".join(lines)[-2000:]
        raise RuntimeError(f"{' '.join(cmd)} exited with status {p.returncode}: {said}")
    try:
        wall, cpu, peak = figures.split()[1:]
        return float(wall), float(cpu), int(peak)
    except (AttributeError, ValueError):
        raise RuntimeError(f"{' '.join(cmd)}: the timing wrapper printed no figures") from None


def workload(lines):
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                         "ratewarden-bench")
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, f"events-{lines}.jsonl")
    if not os.path.exists(path):
        print(f"generating {lines:,} lines into {path} ...", flush=True)
        tmp = path + ".part"
        subprocess.run([sys.executable, os.path.join(SHARED, "gen_events.py"), str(lines), tmp], check=True)
        os.replace(tmp, path)
    return path


def supports_threads(binary):
    out = subprocess.run([binary, "replay", "--help"], capture_output=True, text=True).stdout
    return "--threads" in out


def note_run(table, key, figures):
    """Adds one run's (wall s, CPU s, peak RSS KiB) to `table[key]`: (walls, CPUs, top peak)."""
    walls, cpus, top = table[key]
    wall, cpu, peak = figures
    table[key] = (walls + [wall], cpus + [cpu], max(top, peak))


def replay_round(runs, measured, reports):
    """One run of each (label, variant, command) in `runs`: its figures noted in `measured`,
    the sha256 of its report added to `reports`."""
    for label, vname, cmd in runs:
        out = tempfile.NamedTemporaryFile(prefix="rw-replay-", suffix=".json", delete=False)
        try:
            figures = timed(cmd, stdout=out)
            out.flush()
            with open(out.name, "rb") as f:
                reports.setdefault((label, vname), set()).add(hashlib.sha256(f.read()).hexdigest())
        finally:
            out.close()
            os.unlink(out.name)
        note_run(measured, (label, vname), figures)


def bench_replay(args):
    path = workload(args.lines)
    size = os.path.getsize(path)
    # Read it once so every run starts from the page cache.
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass
    n = args.lines
    rounds = args.rounds
    mtail_runs = min(args.mtail_runs, rounds)

    def show(name, walls, cpus, peak):
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        spread = (f"  [{n / max(walls) / 1e6:.2f}-{n / min(walls) / 1e6:.2f} over {len(walls)} runs]"
                  if len(walls) > 1 else "")
        print(f"  {name:<34} {n / wall / 1e6:7.2f} M lines/s  {cpu / (n / 1e6):6.2f} CPU-s/M lines"
              f"  peak RSS {peak / 1024:6.1f} MiB  ({wall:.2f} s){spread}", flush=True)
        return wall

    print(f"replay: {n:,} lines, {size / 1e6:.0f} MB, {os.cpu_count()} cores; " +
          (f"{rounds} rounds of one run of each ratewarden row and `wc -l`"
           + (f", mtail in {mtail_runs} of them" if mtail_runs else "")
           + "; each row the median of its runs (the [range] is the slowest and fastest)"
           if rounds > 1 else "one run each"))
    # The baselines are measured in the rounds too: `wc -l` in every one, mtail (some 15 s a
    # run) --mtail-runs times spread over them. One mtail run made the baseline of every
    # ratio, and its own speed moved from 0.07 to 0.17 M lines/s from one session to another:
    # more than the differences the ratios are read for.
    mtail_prog = None
    if args.mtail_runs == 0:
        print("  mtail left out (--mtail-runs 0): ratios to `wc -l` only")
    elif shutil.which("mtail"):
        mtail_prog = tempfile.mkdtemp(prefix="rw-mtail-")
        shutil.copy(os.path.join(SHARED, "requests.mtail"), mtail_prog)
    else:
        print("  mtail not installed (Debian package mtail): its row is left out")
    mtail_rounds = {k * rounds // mtail_runs for k in range(mtail_runs)}
    bins = [("new", args.bin)] + ([("old", args.baseline)] if args.baseline else [])
    runs = []  # (label, variant, command)
    for label, binary in bins:
        threads = supports_threads(binary)
        variants = [("1 thread", ["--threads", "1"]), ("default threads", [])] if threads else [("", [])]
        for vname, extra in variants:
            runs.append((label, vname, [binary, "replay", "--json", *extra, path]))
    # One run of each per round, so a slow spell of this shared machine falls on every row
    # alike rather than on whichever ran then.
    measured = {(label, vname): ([], [], 0) for label, vname, _ in runs}
    base = {"wc -l": ([], [], 0), MTAIL: ([], [], 0)}
    reports = {}
    try:
        for r in range(rounds):
            with open(path, "rb") as f:
                note_run(base, "wc -l", timed(["wc", "-l"], stdin=f))
            if mtail_prog and r in mtail_rounds:
                note_run(base, MTAIL, timed(["mtail", "--one_shot", "--one_shot_format", "json",
                                             "--progs", mtail_prog, "--logs", path,
                                             "--logtostderr"]))
            replay_round(runs, measured, reports)
    finally:
        if mtail_prog:
            shutil.rmtree(mtail_prog, ignore_errors=True)
    wc = show("wc -l", *base["wc -l"])
    mtail = show(MTAIL, *base[MTAIL]) if mtail_prog else None
    results = {}
    for (label, vname), (walls, cpus, peak) in measured.items():
        results[(label, vname)] = show(f"ratewarden {label} {vname}".strip(), walls, cpus, peak)
    for label, _ in bins:
        variants = [v for (l, v) in reports if l == label]
        if len(variants) * rounds < 2:
            continue
        mine = set().union(*(h for (l, _), h in reports.items() if l == label))
        what = "of " + " and ".join(v for v in variants if v) if len(variants) > 1 else ""
        print(f"  {label}: reports {what}{' in' if what else 'of'} every run identical: {len(mine) == 1}")
    print("ratios (throughput of the medians, higher is faster):")
    for (label, vname), wall in results.items():
        name = f"ratewarden {label} {vname}".strip()
        parts = []
        if mtail:
            parts.append(f"{mtail / wall:5.1f}x mtail")
        parts.append(f"{wc / wall:5.3f}x wc -l")
        if label == "new" and ("old", vname) in results:
            parts.append(f"{results[('old', vname)] / wall:5.2f}x old")
        elif label == "new" and ("old", "") in results:
            parts.append(f"{results[('old', '')] / wall:5.2f}x old")
        print(f"  {name:<34} " + ", ".join(parts))


class Daemon(ingest.Daemon):
    """The daemon of bench/ingest.py on a free port, with what the scale runs read of it."""

    def __init__(self, binary, workdir, limits=""):
        super().__init__(binary, workdir, free_port(), limits=limits)

    def post_lines(self, lines, per_body=20_000):
        ingest.post_lines(self.port, lines, per_body)


def daily_by_org(d):
    status, body, _ = d.get("/v1/usage")
    assert status == 200, status
    return {o["org"]: o["usage"]["daily"] for o in json.loads(body)["orgs"]}


def requests_total(d):
    """The sum of every `ratewarden_requests_total` series: cumulative, so unlike the rolling
    daily usage it does not age between two reads."""
    status, body, _ = d.get("/metrics")
    assert status == 200, status
    return int(ingest.metric_sum(body.decode(), "ratewarden_requests_total"))


def settle_rss(d):
    time.sleep(2)
    return d.status_kb("VmRSS"), d.status_kb("VmHWM")


def bench_scale_one(binary, args, label):
    work = tempfile.mkdtemp(prefix="rw-scale-")
    # Every org of the scenario is tracked from its first event: at the default 1 000 new orgs
    # a second, the first ten seconds of the load would count most orgs in __overflow__ (and
    # a fast load would end with fewer orgs than the scenario has).
    d = Daemon(binary, work, limits="max_new_orgs_per_second = 100000\n")
    try:
        d.start()
        idle, _ = settle_rss(d)
        now = int(time.time() * 1000)
        steps = 24 * 6  # one request per org and app every 10 minutes, for 24 h
        series = [(f"org-{o:05d}", f"app-{a}") for o in range(args.orgs) for a in range(args.apps)]
        t0 = time.monotonic()
        sent = 0
        for s in range(steps, 0, -1):
            base = now - s * 600_000
            # Each series at its own second within the 10 minutes, the same every time.
            lines = [f'{{"ts":{base + (i * 7919) % 600 * 1000},"org":"{o}","app":"{a}","status":200}}'
                     for i, (o, a) in enumerate(series)]
            d.post_lines(lines)
            sent += len(lines)
        load = time.monotonic() - t0
        rss, peak = settle_rss(d)
        sizes, times = [], []
        for _ in range(5):
            status, body, took = d.get("/metrics")
            assert status == 200, status
            sizes.append(len(body))
            times.append(took)
        per_org = body.decode().count('org="org-00001"')
        # The JSON answers people and `ratewarden status` read, at the same scale: their time,
        # the peak they push the daemon to and what stays resident after.
        status, usage_body, usage_s = d.get("/v1/usage")
        assert status == 200, status
        usage_rss, usage_peak = settle_rss(d)
        before, counted = daily_by_org(d), requests_total(d)
        d.stop(signal.SIGKILL)
        ready = d.start()
        after, recovered = daily_by_org(d), requests_total(d)
        # The daily window is a rolling 24 h and the oldest events are 24 h old: a minute of
        # them may leave it between the two reads. The counters do not age.
        intact = counted == recovered == sent
        print(f"  [{label}] {args.orgs:,} orgs x {args.apps} apps, {sent:,} events over 24 h loaded in {load:.0f} s")
        print(f"  [{label}] RSS idle {idle / 1024:.0f} MiB; after the load {rss / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB")
        print(f"  [{label}] GET /metrics {statistics.median(sizes) / 1e6:.2f} MB, "
              f"{statistics.median(times) * 1000:.0f} ms (median of 5), {per_org} series for one org")
        print(f"  [{label}] GET /v1/usage {len(usage_body) / 1e6:.2f} MB, {usage_s * 1000:.0f} ms; "
              f"peak RSS then {usage_peak / 1024:.0f} MiB, {usage_rss / 1024:.0f} MiB after")
        print(f"  [{label}] ready {ready:.2f} s after kill -9; usage intact: {intact} "
              f"(requests_total {counted:,} before, {recovered:,} after; "
              f"daily the same: {before == after}, {len(after):,} orgs, "
              f"daily total {sum(after.values()):,})")
        d.stop()
        # 50 000 app series: 500 orgs x 100 apps, one request each.
        d2 = Daemon(binary, tempfile.mkdtemp(prefix="rw-apps-", dir=work), limits="max_apps_per_org = 100\n")
        try:
            d2.start()
            lines = [f'{{"ts":{now - 1000},"org":"org-{o}","app":"app-{a}","status":200}}'
                     for o in range(500) for a in range(100)]
            d2.post_lines(lines, per_body=10_000)
            rss2, _ = settle_rss(d2)
            print(f"  [{label}] 500 orgs x 100 apps, one request each: RSS {rss2 / 1024:.0f} MiB")
        finally:
            d2.stop()
        return {"rss": rss, "peak": peak, "metrics_bytes": statistics.median(sizes),
                "metrics_s": statistics.median(times), "ready": ready, "rss_apps": rss2,
                "usage_s": usage_s, "usage_peak": usage_peak, "usage_rss": usage_rss}
    finally:
        d.stop()
        shutil.rmtree(work, ignore_errors=True)


def bench_scale(args):
    print(f"scale: {os.cpu_count()} cores")
    new = bench_scale_one(args.bin, args, "new")
    if args.baseline:
        old = bench_scale_one(args.baseline, args, "old")
        print("ratios new/old (lower is better):")
        for k, what in [("rss", "RSS after load"), ("peak", "peak RSS"), ("metrics_bytes", "/metrics size"),
                        ("metrics_s", "/metrics time"), ("ready", "ready after kill -9"),
                        ("rss_apps", "RSS with 50 000 app series"), ("usage_s", "/v1/usage time"),
                        ("usage_peak", "peak RSS after /v1/usage"), ("usage_rss", "RSS after /v1/usage")]:
            print(f"  {what:<28} {new[k] / old[k]:6.3f}")


def bench_post(args):
    loader = os.path.join(os.path.dirname(HERE), "target", "release", "examples", "post_load")
    if not os.path.exists(loader):
        sys.exit(f"{loader} is missing: cargo build --release --example post_load")
    print(f"post: {args.clients} clients, {args.seconds:.0f} s, {os.cpu_count()} cores (daemon and load share them)")
    for stamps in ["clock", "fixed"]:
        rates, cpu = {}, {}
        binaries = [("new", args.bin)] + ([("old", args.baseline)] if args.baseline else [])
        # Rounds alternate the binaries, so a slow minute of the machine hits both alike.
        for _ in range(args.rounds):
            for label, binary in binaries:
                work = tempfile.mkdtemp(prefix="rw-post-")
                d = Daemon(binary, work)
                try:
                    d.start()
                    cpu0 = d.cpu_seconds()
                    out = subprocess.run([loader, "--addr", f"127.0.0.1:{d.port}", "--clients", str(args.clients),
                                          "--seconds", str(int(args.seconds)), "--timestamps", stamps],
                                         capture_output=True, text=True, check=True)
                    spent = d.cpu_seconds() - cpu0
                    line = out.stdout.strip()
                    events = int(line.split()[1])
                    rates.setdefault(label, []).append(float(line.split(" = ")[1].split()[0]))
                    cpu.setdefault(label, []).append(spent / max(events, 1) * 1e6)
                    print(f"  [{label}, timestamps {stamps}] {line}; daemon CPU {cpu[label][-1]:.2f} us per event")
                finally:
                    d.stop()
                    shutil.rmtree(work, ignore_errors=True)
        for label in rates:
            print(f"  timestamps {stamps}, {label}: median {statistics.median(rates[label]) / 1e6:.2f} M events/s "
                  f"(runs {', '.join(f'{r / 1e6:.2f}' for r in rates[label])}), "
                  f"daemon CPU median {statistics.median(cpu[label]):.2f} us per event")
        if "old" in rates:
            print(f"  timestamps {stamps}: new/old {statistics.median(rates['new']) / max(statistics.median(rates['old']), 1e-9):.2f}x "
                  f"events/s, {statistics.median(cpu['old']) / max(statistics.median(cpu['new']), 1e-9):.2f}x less daemon CPU "
                  "per event (medians)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["replay", "scale", "post", "all"])
    ap.add_argument("--bin", default="target/release/ratewarden")
    ap.add_argument("--baseline", help="another ratewarden binary to run alongside")
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--orgs", type=int, default=10_000)
    ap.add_argument("--apps", type=int, default=3)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--rounds", type=int, default=3,
                    help="replay and post: runs of each binary (and thread count), alternating")
    ap.add_argument("--mtail-runs", type=int, default=3,
                    help="replay: runs of mtail, spread over the rounds (at most one a round; "
                         "0 leaves mtail out)")
    args = ap.parse_args()
    if args.mtail_runs < 0 or args.rounds < 1:
        ap.error("--mtail-runs must be at least 0 and --rounds at least 1")
    args.bin = os.path.abspath(args.bin)
    if args.baseline:
        args.baseline = os.path.abspath(args.baseline)
    if args.mode in ("replay", "all"):
        bench_replay(args)
    if args.mode in ("scale", "all"):
        bench_scale(args)
    if args.mode in ("post", "all"):
        bench_post(args)


if __name__ == "__main__":
    sys.exit(main())
