#!/usr/bin/env python3
"""Checks a Grafana dashboard with grafana-foundation-sdk (Grafana's own schema library).

    check_dashboard.py dashboards/ratewarden.json
    check_dashboard.py --thresholds 0.6,0.875 generated.json   # a config's [alerts] thresholds

Every panel must be a known panel type whose options and field config parse into the SDK's
typed models, every query must parse as a Prometheus query, and the dashboard must survive a
round trip through the SDK's encoder. On top: the import contract (a Prometheus datasource
input used everywhere, org/app variables, no hard-coded instance or job), a sound grid, units
on every panel and the [alerts] thresholds (70 %/90 % unless --thresholds says otherwise) on
utilization gauges. Prints each problem; exit 1 if any.
"""
import json
import sys

from grafana_foundation_sdk.cog import plugins, runtime
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dash
from grafana_foundation_sdk.models import prometheus

problems = []


def check(ok, msg):
    if not ok:
        problems.append(msg)


def main(path, thresholds=(0.7, 0.9)):
    plugins.register_default_plugins()
    raw = json.load(open(path))
    parsed = dash.Dashboard.from_json(raw)
    check(parsed.title == raw["title"], "title lost in parsing")

    inputs = [i for i in raw.get("__inputs", []) if i.get("pluginId") == "prometheus"]
    check(len(inputs) == 1 and inputs[0]["name"] == "DS_PROMETHEUS", "__inputs must declare DS_PROMETHEUS")
    names = [v["name"] for v in raw["templating"]["list"]]
    check(names == ["org", "app"], f"variables should be org and app, are {names}")
    for v in raw["templating"]["list"]:
        check(v["datasource"]["uid"] == "${DS_PROMETHEUS}", f"variable {v['name']} does not use the input")

    panels = [p for p in raw["panels"] if p["type"] != "row"]
    model_panels = [p for p in parsed.panels if getattr(p, "type_val", None) != "row"]
    check(len(panels) == len(model_panels), "panels lost in parsing")
    ids, cells = set(), set()
    for p, m in zip(panels, model_panels):
        t = p["title"]
        check(p["id"] not in ids, f"{t}: duplicate id")
        ids.add(p["id"])
        cfg = runtime.panelcfg_config(p["type"])
        check(cfg is not None, f"{t}: unknown panel type {p['type']}")
        if cfg is not None and "options" in p:
            check(not isinstance(m.options, dict), f"{t}: options do not match the {p['type']} schema")
        check(p["datasource"]["type"] == "prometheus" and p["datasource"]["uid"] == "${DS_PROMETHEUS}",
              f"{t}: datasource is not the DS_PROMETHEUS input")
        check(bool(p.get("targets")), f"{t}: no queries")
        for q in m.targets or []:
            check(isinstance(q, prometheus.Dataquery), f"{t}: a query is not a Prometheus query")
            expr = getattr(q, "expr", "")
            check(bool(expr), f"{t}: empty expr")
            check("instance=" not in expr and "job=" not in expr, f"{t}: hard-coded instance or job in {expr}")
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
        check(bool(unit), f"{t}: no unit")
        if p["type"] == "gauge":
            steps = [s["value"] for s in p["fieldConfig"]["defaults"]["thresholds"]["steps"]]
            want = [None, *thresholds]
            check(steps == want, f"{t}: thresholds {steps} are not {want[1:]}")
            check(unit == "percentunit", f"{t}: utilization should be a percentage")
        g = p["gridPos"]
        check(g["x"] + g["w"] <= 24, f"{t}: wider than the grid")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                check((x, y) not in cells, f"{t}: overlaps another panel at {x},{y}")
                cells.add((x, y))

    # Round trip through the SDK's own encoder.
    again = json.loads(json.dumps(parsed, cls=JSONEncoder))
    back = [p for p in again["panels"] if p.get("type") != "row"]
    check([p["title"] for p in back] == [p["title"] for p in panels], "titles changed in a round trip")
    exprs = lambda ps: [q.get("expr") for p in ps for q in p.get("targets", [])]
    check(exprs(back) == exprs(panels), "queries changed in a round trip")

    for p in problems:
        print(f"PROBLEM {p}")
    print(f"{path}: {len(panels)} panels, {len(exprs(panels))} queries, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--thresholds"]:
        sys.exit(main(args[2], tuple(float(x) for x in args[1].split(","))))
    sys.exit(main(args[0]))
