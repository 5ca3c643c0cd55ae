#!/usr/bin/env python3
"""Writes dashboards/ratewarden.json, the Grafana dashboard ready for "Import".

    python3 dashboards/build.py            # rewrite the JSON (and the provisioned copy)
    python3 dashboards/build.py --check    # exit 1 if the committed files differ

deploy/compose/grafana/dashboards/ratewarden.json is the same dashboard for file provisioning,
where Grafana does not resolve __inputs: its datasource is the provisioned uid "prometheus".

The dashboard is generated so every panel gets the same datasource input, units, thresholds and
legends; edit this file, not the JSON. Standard library only.
"""
import json
import os
import sys

DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
SEL = 'org=~"$org"'
SEL_APP = 'org=~"$org",app=~"$app"'
RATE = "$__rate_interval"
# Several replicas ([cluster]) each export the org-wide series under their own instance (and
# pod): those are taken once, with ONCE, before anything is summed (batch items too: every
# replica holds the shared log's batches). Each replica's own series (ingest, notifications,
# batch requests sent) are summed across replicas as they are.
ONCE = "max without (instance, pod)"

# 70 % warning, 90 % critical: the same thresholds as [alerts] and alerts/ratewarden.rules.yml.
UTIL_THRESHOLDS = {
    "mode": "absolute",
    "steps": [
        {"color": "green", "value": None},
        {"color": "orange", "value": 0.7},
        {"color": "red", "value": 0.9},
    ],
}


def target(expr, legend, ref):
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": True, "instant": False}


class Layout:
    def __init__(self):
        self.panels, self.y, self.x, self.row_h, self.next_id = [], 0, 0, 0, 1

    def row(self, title):
        if self.x:
            self.y += self.row_h
            self.x, self.row_h = 0, 0
        self.panels.append({"type": "row", "title": title, "id": self.next_id, "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.next_id += 1
        self.y += 1

    def add(self, panel, w, h):
        if self.x + w > 24:
            self.y += self.row_h
            self.x, self.row_h = 0, 0
        panel["id"] = self.next_id
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.next_id += 1
        self.x += w
        self.row_h = max(self.row_h, h)
        self.panels.append(panel)


def timeseries(title, description, targets, unit, stack=False, limit_series=None):
    overrides = []
    if limit_series:
        # Limits are drawn as dashed red lines so usage reads against them at a glance.
        overrides.append({
            "matcher": {"id": "byRegexp", "options": limit_series},
            "properties": [
                {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
                {"id": "custom.fillOpacity", "value": 0},
            ],
        })
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "min": 0,
                "color": {"mode": "palette-classic"},
                "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 15 if stack else 5,
                           "showPoints": "never", "spanNulls": True,
                           "stacking": {"mode": "normal" if stack else "none", "group": "A"}},
            },
            "overrides": overrides,
        },
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                               "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
    }


def gauge(title, description, expr):
    return {
        "type": "gauge",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [target(expr, "{{org}}", "A")],
        "fieldConfig": {"defaults": {"unit": "percentunit", "min": 0, "max": 1, "decimals": 0,
                                     "thresholds": UTIL_THRESHOLDS, "color": {"mode": "thresholds"}},
                        "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "orientation": "auto", "showThresholdLabels": False, "showThresholdMarkers": True},
    }


def stat(title, description, targets, unit, thresholds=None):
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, "color": {"mode": "thresholds"},
                                     "thresholds": thresholds or {"mode": "absolute", "steps": [
                                         {"color": "green", "value": None}]}},
                        "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "background", "graphMode": "none", "justifyMode": "auto",
                    "orientation": "auto", "textMode": "auto"},
    }


def table(title, description, expr):
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [dict(target(expr, "", "A"), format="table", instant=True, range=False)],
        "fieldConfig": {"defaults": {"unit": "none"}, "overrides": []},
        "options": {"showHeader": True, "cellHeight": "sm"},
        "transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True},
                                                            "renameByName": {"Value": "firing"}}}],
    }


def build():
    g = Layout()
    g.row("Utilization (warning 70 %, critical 90 %)")
    for dim, what in [("rpm", "requests per minute"), ("daily", "rolling 24 h quota"), ("concurrency", "jobs in flight")]:
        g.add(gauge(f"{dim} utilization", f"Share of each org's {what} limit in use now.",
                    f'max by (org) (ratewarden_utilization_ratio{{{SEL},dimension="{dim}"}})'), 6, 6)
    g.add(stat("Alerts firing", "Alerts firing now in ratewarden, by alert and severity.",
               [target(f"sum by (alert, severity) ({ONCE} (ratewarden_alerts_firing{{{SEL}}}))", "{{alert}} {{severity}}", "A")],
               "none", {"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "red", "value": 1}]}),
          6, 6)

    g.row("Usage against limits")
    for dim, title, unit in [("rpm", "Requests per minute vs limit", "reqpm"),
                             ("daily", "Rolling 24 h requests vs daily limit", "short"),
                             ("concurrency", "Jobs in flight vs concurrency limit", "short")]:
        g.add(timeseries(title, f"{dim} usage per org, with its limit as a dashed line.", [
            target(f'max by (org) (ratewarden_usage{{{SEL},dimension="{dim}"}})', "{{org}} usage", "A"),
            target(f'max by (org) (ratewarden_limit{{{SEL},dimension="{dim}"}})', "{{org}} limit", "B"),
        ], unit, limit_series=".* limit"), 8, 8)
    g.add(timeseries("Headroom (limit − usage)", "How much of each limited dimension is left now.", [
        target(f"{ONCE} (ratewarden_limit{{{SEL}}}) - on (org, dimension) {ONCE} (ratewarden_usage{{{SEL}}})",
               "{{org}} {{dimension}}", "A"),
    ], "short"), 12, 8)
    g.add(timeseries("Upstream remaining (x-ratelimit headers)", "What the upstream itself reports as remaining.", [
        target(f"{ONCE} (ratewarden_upstream_remaining{{{SEL}}})", "{{org}} {{dimension}}", "A"),
    ], "short"), 12, 8)

    g.row("Requests and 429s")
    g.add(timeseries("Requests by outcome", "All requests, 429s and errors included (they all count).", [
        target(f"sum by (outcome) ({ONCE} (rate(ratewarden_requests_total{{{SEL_APP}}}[{RATE}])))", "{{outcome}}", "A"),
    ], "reqps", stack=True), 8, 8)
    g.add(timeseries("429s by most likely cause", "quota, concurrency, rpm, daily, burst, or unexplained.", [
        target(f"sum by (cause) ({ONCE} (rate(ratewarden_rate_limited_total{{{SEL_APP}}}[{RATE}])))", "{{cause}}", "A"),
    ], "reqps", stack=True), 8, 8)
    g.add(timeseries("Bursts and Retry-After violations", "Burst episodes per org; requests sent before a 429's Retry-After elapsed.", [
        target(f"sum by (org) ({ONCE} (increase(ratewarden_bursts_total{{{SEL}}}[{RATE}])))", "{{org}} bursts", "A"),
        target(f"sum by (org, app) ({ONCE} (increase(ratewarden_retry_violations_total{{{SEL_APP}}}[{RATE}])))",
               "{{org}}/{{app}} violations", "B"),
    ], "short"), 8, 8)

    g.row("Jobs")
    g.add(timeseries("Stuck jobs", "Jobs in flight longer than detect.stuck_after.", [
        target(f"max by (org) (ratewarden_jobs_stuck{{{SEL}}})", "{{org}}", "A"),
    ], "short"), 8, 8)
    g.add(timeseries("Jobs finished by outcome", "completed, failed, cancelled, timed_out (released after detect.release_after).", [
        target(f"sum by (outcome) ({ONCE} (rate(ratewarden_jobs_finished_total{{{SEL}}}[{RATE}])))", "{{outcome}}", "A"),
    ], "ops", stack=True), 8, 8)
    g.add(timeseries("Job duration", "Median and 90th percentile of finished jobs.", [
        target(f"histogram_quantile(0.5, sum by (le) ({ONCE} (rate(ratewarden_job_duration_seconds_bucket{{{SEL}}}[{RATE}]))))", "p50", "A"),
        target(f"histogram_quantile(0.9, sum by (le) ({ONCE} (rate(ratewarden_job_duration_seconds_bucket{{{SEL}}}[{RATE}]))))", "p90", "B"),
    ], "s"), 8, 8)

    g.row("Alerts and notifications")
    g.add(table("Alert states", "Every alert firing now, with its org, dimension and severity.",
                f"{ONCE} (ratewarden_alerts_firing{{{SEL}}}) > 0"), 8, 8)
    g.add(timeseries("Notifications by outcome", "sent; retried (will be tried again); failed (given up).", [
        target(f"sum by (channel, outcome) (increase(ratewarden_notifications_total[{RATE}]))", "{{channel}} {{outcome}}", "A"),
    ], "short"), 8, 8)
    # The outbox backlog gauge (notifications_pending) is not one of SPEC §8's metrics, so the
    # dashboard shows what was given up instead; the alert rules watch the backlog.
    g.add(stat("Notifications given up (24 h)", "Notifications not delivered before alerts.max_age, per channel.",
               [target("sum by (channel) (increase(ratewarden_notifications_total{outcome=\"failed\"}[24h]))", "{{channel}}", "A")],
               "none", {"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "red", "value": 1}]}),
          8, 8)

    g.row("Off-peak windows and batches")
    g.add(timeseries("Off-peak window open", "1 while an off-peak window is open (batches in offpeak mode are sent).", [
        target("max(ratewarden_offpeak_open)", "open", "A"),
    ], "bool_yes_no"), 8, 8)
    g.add(timeseries("Batch items by state", "Items of deferred batches: pending, in_flight, retrying, succeeded, failed, cancelled.", [
        target(f"sum by (state) ({ONCE} (ratewarden_batch_items{{{SEL}}}))", "{{state}}", "A"),
    ], "short", stack=True), 8, 8)
    g.add(timeseries("Batch requests by outcome", "Requests the dispatcher sent upstream.", [
        target(f"sum by (outcome) (rate(ratewarden_batch_requests_total{{{SEL}}}[{RATE}]))", "{{outcome}}", "A"),
    ], "reqps", stack=True), 8, 8)

    g.row("Ingest health")
    g.add(timeseries("Events ingested by source", "Accepted events per source (http, file sources, scheduler).", [
        target(f"sum by (source) (rate(ratewarden_events_ingested_total[{RATE}]))", "{{source}}", "A"),
    ], "ops", stack=True), 8, 8)
    g.add(timeseries("Events rejected by reason", "invalid_json, missing_org, invalid_field, future_timestamp, too_large.", [
        target(f"sum by (source, reason) (rate(ratewarden_events_rejected_total[{RATE}]))", "{{source}} {{reason}}", "A"),
    ], "ops"), 8, 8)
    g.add(timeseries("Series overflow", "Events routed to __overflow__ past max_orgs / max_apps_per_org, and jobs dropped past max_jobs_per_org.", [
        target(f"sum by (kind) ({ONCE} (rate(ratewarden_series_overflow_total[{RATE}])))", "{{kind}}", "A"),
    ], "ops"), 4, 8)
    g.add(stat("Version", "Running ratewarden versions.",
               [target("count by (version) (ratewarden_build_info)", "{{version}}", "A")], "none"), 4, 8)

    variable = lambda name, label, query: {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "query": {"query": query, "refId": f"{name}-var"}, "definition": query,
        "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1, "hide": 0,
    }
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "description": "Prometheus that scrapes ratewarden",
                      "type": "datasource", "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
            {"type": "panel", "id": "gauge", "name": "Gauge", "version": ""},
            {"type": "panel", "id": "stat", "name": "Stat", "version": ""},
            {"type": "panel", "id": "table", "name": "Table", "version": ""},
        ],
        "title": "ratewarden",
        "uid": "ratewarden",
        "description": "Usage of rate-limited APIs against their limits, 429 causes, jobs, alerts, notifications, off-peak batches and ingest health.",
        "tags": ["ratewarden", "rate-limits"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [
            variable("org", "Org", "label_values(ratewarden_usage, org)"),
            variable("app", "App", 'label_values(ratewarden_requests_total{org=~"$org"}, app)'),
        ]},
        "annotations": {"list": []},
        "links": [],
        "panels": g.panels,
    }


def provisioned(dashboard):
    d = json.loads(json.dumps(dashboard).replace("${DS_PROMETHEUS}", "prometheus"))
    d.pop("__inputs")
    d.pop("__requires")
    return d


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    d = build()
    files = {
        os.path.join(here, "ratewarden.json"): d,
        os.path.join(here, "..", "deploy", "compose", "grafana", "dashboards", "ratewarden.json"): provisioned(d),
    }
    stale = 0
    for path, content in files.items():
        text = json.dumps(content, indent=2) + "\n"
        if "--check" in sys.argv:
            try:
                same = open(path).read() == text
            except OSError:
                same = False
            if not same:
                print(f"{os.path.normpath(path)} is not what dashboards/build.py writes; run it", file=sys.stderr)
                stale += 1
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
