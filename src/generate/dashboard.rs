//! The Grafana dashboard (`dashboards/ratewarden.json` for the built-in defaults).
//!
//! Built from a few panel shapes so every panel gets the same datasource, units, thresholds
//! and legends; the config decides the utilization thresholds (per org where an org has its
//! own) and which dimensions get a gauge and a usage panel. It writes JSON for Grafana's
//! import (a `DS_PROMETHEUS` input) or for file provisioning (a fixed datasource uid), and
//! never talks to a Grafana.

use super::json::{Json, arr, obj};
use super::panels::{AGAINST_UPSTREAM, ALERTS_FIRING, ROWS, Shape, Spec, words};
use super::plan::{Plan, percent};
use crate::config::Config;
use crate::model::Dimension;

/// Where the dashboard's queries go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datasource {
    /// Grafana asks on import (`__inputs` declares `DS_PROMETHEUS`).
    Import,
    /// A provisioned data source of this uid; Grafana's file provisioning resolves no
    /// `__inputs`, so the uid is written into every query.
    Uid(String),
}

/// The dashboard for `config`.
pub fn dashboard(config: &Config, datasource: &Datasource) -> String {
    let plan = Plan::of(config);
    let ds_uid = match datasource {
        Datasource::Import => "${DS_PROMETHEUS}",
        Datasource::Uid(uid) => uid.as_str(),
    };
    let p = Panels {
        ds: obj! {"type" => "prometheus", "uid" => ds_uid},
    };
    let mut d = obj! {};
    if *datasource == Datasource::Import {
        d.push(
            "__inputs",
            arr![obj! {
                "name" => "DS_PROMETHEUS", "label" => "Prometheus",
                "description" => "Prometheus that scrapes ratewarden", "type" => "datasource",
                "pluginId" => "prometheus", "pluginName" => "Prometheus",
            }],
        );
        let panel = |id: &str, name: &str| {
            obj! {"type" => "panel", "id" => id, "name" => name, "version" => ""}
        };
        d.push("__requires", arr![
            obj! {"type" => "grafana", "id" => "grafana", "name" => "Grafana", "version" => "10.0.0"},
            obj! {"type" => "datasource", "id" => "prometheus", "name" => "Prometheus", "version" => "1.0.0"},
            panel("timeseries", "Time series"),
            panel("gauge", "Gauge"),
            panel("stat", "Stat"),
            panel("table", "Table"),
        ]);
    }
    let variable = |name: &str, label: &str, query: &str| {
        obj! {
            "name" => name, "label" => label, "type" => "query", "datasource" => p.ds.clone(),
            "query" => obj! {"query" => query, "refId" => format!("{name}-var")},
            "definition" => query, "refresh" => 2i64, "includeAll" => true, "multi" => true,
            "allValue" => ".*",
            "current" => obj! {"selected" => true, "text" => arr!["All"], "value" => arr!["$__all"]},
            "sort" => 1i64, "hide" => 0i64,
        }
    };
    let rest = obj! {
        "title" => "ratewarden",
        "uid" => "ratewarden",
        "description" => "Usage of rate-limited APIs against their limits, 429 causes, jobs, alerts, notifications, off-peak batches and ingest health.",
        "tags" => arr!["ratewarden", "rate-limits"],
        "timezone" => "browser",
        "editable" => true,
        "graphTooltip" => 1i64,
        "schemaVersion" => 39i64,
        "version" => 1i64,
        "refresh" => "30s",
        "time" => obj! {"from" => "now-6h", "to" => "now"},
        "templating" => obj! {"list" => arr![
            variable("org", "Org", "label_values(ratewarden_usage, org)"),
            variable("app", "App", "label_values(ratewarden_requests_total{org=~\"$org\"}, app)"),
        ]},
        "annotations" => obj! {"list" => arr![]},
        "links" => arr![],
        "panels" => p.all(&plan),
    };
    if let (Json::Obj(head), Json::Obj(tail)) = (&mut d, rest) {
        head.extend(tail);
    }
    d.to_pretty()
}

/// Places panels left to right, starting a new line when one does not fit in 24 columns.
struct Layout {
    panels: Vec<Json>,
    y: i64,
    x: i64,
    row_h: i64,
    next_id: i64,
}

impl Layout {
    fn row(&mut self, title: &str) {
        if self.x > 0 {
            self.y += self.row_h;
            (self.x, self.row_h) = (0, 0);
        }
        self.panels.push(obj! {
            "type" => "row", "title" => title, "id" => self.next_id, "collapsed" => false,
            "gridPos" => obj! {"h" => 1i64, "w" => 24i64, "x" => 0i64, "y" => self.y},
            "panels" => arr![],
        });
        self.next_id += 1;
        self.y += 1;
    }

    fn add(&mut self, mut panel: Json, w: i64, h: i64) {
        if self.x + w > 24 {
            self.y += self.row_h;
            (self.x, self.row_h) = (0, 0);
        }
        panel.push("id", self.next_id.into());
        panel.push(
            "gridPos",
            obj! {"h" => h, "w" => w, "x" => self.x, "y" => self.y},
        );
        self.next_id += 1;
        self.x += w;
        self.row_h = self.row_h.max(h);
        self.panels.push(panel);
    }

    /// `n` panels side by side across the full width, at most `per_line` to a line; the first
    /// ones a column wider where 24 does not divide.
    fn widths(n: usize, per_line: usize) -> Vec<i64> {
        let mut out = Vec::with_capacity(n);
        let mut left = n;
        while left > 0 {
            // Lines as even as they can be: 4 panels three to a line are 2 + 2, not 3 + 1.
            let lines = left.div_ceil(per_line);
            let here = left.div_ceil(lines);
            let (each, extra) = (24 / here as i64, 24 % here);
            out.extend((0..here).map(|i| each + i64::from(i < extra)));
            left -= here;
        }
        out
    }
}

/// The panel shapes, sharing one datasource.
struct Panels {
    ds: Json,
}

/// A Grafana threshold step; `None` is the base step.
fn step(color: &str, value: Option<f64>) -> Json {
    obj! {"color" => color, "value" => value}
}

/// A threshold in basis points as the ratio Grafana compares with.
fn ratio(bp: u32) -> Option<f64> {
    Some(f64::from(bp) / 10_000.0)
}

impl Panels {
    fn target(&self, expr: &str, legend: &str, ref_id: &str) -> Json {
        obj! {
            "datasource" => self.ds.clone(), "expr" => expr, "legendFormat" => legend,
            "refId" => ref_id, "range" => true, "instant" => false,
        }
    }

    /// Targets `A`, `B`, … for `queries`.
    fn targets(&self, queries: &[(&str, &str)]) -> Vec<Json> {
        queries
            .iter()
            .zip(["A", "B", "C", "D"])
            .map(|((expr, legend), ref_id)| self.target(expr, legend, ref_id))
            .collect()
    }

    /// The panel `spec` describes.
    fn fixed(&self, spec: &Spec) -> Json {
        match spec.shape {
            Shape::Series {
                unit,
                stack,
                dashed,
            } => self.timeseries(
                spec.title,
                spec.description,
                self.targets(spec.queries),
                unit,
                stack,
                dashed,
            ),
            Shape::Stat { unit, red_from } => self.stat(spec, unit, red_from),
            Shape::Table => self.table(spec),
        }
    }

    fn timeseries(
        &self,
        title: &str,
        description: &str,
        targets: Vec<Json>,
        unit: &str,
        stack: bool,
        dashed: Option<&str>,
    ) -> Json {
        let overrides = match dashed {
            // Limits are drawn as dashed red lines so usage reads against them at a glance.
            Some(matcher) => arr![obj! {
                "matcher" => obj! {"id" => "byRegexp", "options" => matcher},
                "properties" => arr![
                    obj! {"id" => "custom.lineStyle", "value" => obj! {"fill" => "dash", "dash" => arr![10i64, 10i64]}},
                    obj! {"id" => "color", "value" => obj! {"mode" => "fixed", "fixedColor" => "red"}},
                    obj! {"id" => "custom.fillOpacity", "value" => 0i64},
                ],
            }],
            None => arr![],
        };
        obj! {
            "type" => "timeseries",
            "title" => title,
            "description" => description,
            "datasource" => self.ds.clone(),
            "targets" => targets,
            "fieldConfig" => obj! {
                "defaults" => obj! {
                    "unit" => unit,
                    "min" => 0i64,
                    "color" => obj! {"mode" => "palette-classic"},
                    "custom" => obj! {
                        "drawStyle" => "line", "lineWidth" => 1i64,
                        "fillOpacity" => if stack { 15i64 } else { 5 },
                        "showPoints" => "never", "spanNulls" => true,
                        "stacking" => obj! {"mode" => if stack { "normal" } else { "none" }, "group" => "A"},
                    },
                },
                "overrides" => overrides,
            },
            "options" => obj! {
                "legend" => obj! {
                    "displayMode" => "table", "placement" => "bottom", "showLegend" => true,
                    "calcs" => arr!["lastNotNull", "max"],
                },
                "tooltip" => obj! {"mode" => "multi", "sort" => "desc"},
            },
        }
    }

    /// A utilization gauge per org, coloured at the org's own thresholds: the `[alerts]` ones
    /// by default, and an override per org that has its own (the gauge names each org's
    /// value by its legend, `{{org}}`).
    fn gauge(&self, d: Dimension, plan: &Plan) -> Json {
        let colours = |[w, c]: [u32; 2]| {
            obj! {"mode" => "absolute", "steps" => arr![
                step("green", None), step("orange", ratio(w)), step("red", ratio(c)),
            ]}
        };
        let overrides = plan
            .own
            .iter()
            .flat_map(|(pair, orgs)| {
                orgs.iter().map(|org| {
                    obj! {
                        "matcher" => obj! {"id" => "byName", "options" => org.as_str()},
                        "properties" => arr![obj! {"id" => "thresholds", "value" => colours(*pair)}],
                    }
                })
            })
            .collect::<Vec<_>>();
        let own = if plan.own.is_empty() {
            ""
        } else {
            " Orgs with their own [[orgs]] thresholds are coloured at theirs."
        };
        let dim = d.as_str();
        let expr = format!(
            "max by (org) (ratewarden_utilization_ratio{{org=~\"$org\",dimension=\"{dim}\"}})"
        );
        obj! {
            "type" => "gauge",
            "title" => format!("{dim} utilization"),
            "description" => format!("Share of each org's {} limit in use now.{own}", words(d).what),
            "datasource" => self.ds.clone(),
            "targets" => arr![self.target(&expr, "{{org}}", "A")],
            "fieldConfig" => obj! {
                "defaults" => obj! {
                    "unit" => "percentunit", "min" => 0i64, "max" => 1i64, "decimals" => 0i64,
                    "thresholds" => colours(plan.thresholds), "color" => obj! {"mode" => "thresholds"},
                },
                "overrides" => overrides,
            },
            "options" => obj! {
                "reduceOptions" => obj! {"calcs" => arr!["lastNotNull"], "fields" => "", "values" => false},
                "orientation" => "auto", "showThresholdLabels" => false, "showThresholdMarkers" => true,
            },
        }
    }

    /// Usage in dimension `d` per org, its limit dashed.
    fn usage(&self, d: Dimension) -> Json {
        let (dim, w) = (d.as_str(), words(d));
        let series = |metric: &str| {
            format!("max by (org) (ratewarden_{metric}{{org=~\"$org\",dimension=\"{dim}\"}})")
        };
        self.timeseries(
            w.title,
            &format!("{dim} usage per org, with its limit as a dashed line."),
            vec![
                self.target(&series("usage"), "{{org}} usage", "A"),
                self.target(&series("limit"), "{{org}} limit", "B"),
            ],
            w.unit,
            false,
            Some(".* limit"),
        )
    }

    fn stat(&self, spec: &Spec, unit: &str, red_from: Option<i64>) -> Json {
        let mut steps = vec![step("green", None)];
        if let Some(v) = red_from {
            steps.push(obj! {"color" => "red", "value" => v});
        }
        obj! {
            "type" => "stat",
            "title" => spec.title,
            "description" => spec.description,
            "datasource" => self.ds.clone(),
            "targets" => self.targets(spec.queries),
            "fieldConfig" => obj! {
                "defaults" => obj! {
                    "unit" => unit, "color" => obj! {"mode" => "thresholds"},
                    "thresholds" => obj! {"mode" => "absolute", "steps" => steps},
                },
                "overrides" => arr![],
            },
            "options" => obj! {
                "reduceOptions" => obj! {"calcs" => arr!["lastNotNull"], "fields" => "", "values" => false},
                "colorMode" => "background", "graphMode" => "none", "justifyMode" => "auto",
                "orientation" => "auto", "textMode" => "auto",
            },
        }
    }

    /// One instant query as a table: what holds now, not its history.
    fn table(&self, spec: &Spec) -> Json {
        let targets = self
            .targets(spec.queries)
            .into_iter()
            .map(|mut target| {
                for (key, value) in [("range", false), ("instant", true)] {
                    if let Some(v) = target.get_mut(key) {
                        *v = value.into();
                    }
                }
                target.push("format", "table".into());
                target
            })
            .collect::<Vec<_>>();
        obj! {
            "type" => "table",
            "title" => spec.title,
            "description" => spec.description,
            "datasource" => self.ds.clone(),
            "targets" => targets,
            "fieldConfig" => obj! {"defaults" => obj! {"unit" => "none"}, "overrides" => arr![]},
            "options" => obj! {"showHeader" => true, "cellHeight" => "sm"},
            "transformations" => arr![obj! {"id" => "organize", "options" => obj! {
                "excludeByName" => obj! {"Time" => true, "__name__" => true},
                "renameByName" => obj! {"Value" => "firing"},
            }}],
        }
    }

    /// Every panel, rows included, placed.
    fn all(&self, plan: &Plan) -> Vec<Json> {
        let mut g = Layout {
            panels: Vec::new(),
            y: 0,
            x: 0,
            row_h: 0,
            next_id: 1,
        };
        let [w, c] = plan.thresholds;
        g.row(&format!(
            "Utilization (warning {} %, critical {} %)",
            percent(w),
            percent(c)
        ));
        let widths = Layout::widths(plan.dimensions.len() + 1, 4);
        for (d, width) in plan.dimensions.iter().zip(&widths) {
            g.add(self.gauge(*d, plan), *width, 6);
        }
        let last = widths.last().copied().unwrap_or(ALERTS_FIRING.width);
        g.add(self.fixed(&ALERTS_FIRING), last, 6);

        g.row("Usage against limits");
        let widths = Layout::widths(plan.dimensions.len(), 3);
        for (d, width) in plan.dimensions.iter().zip(widths) {
            g.add(self.usage(*d), width, 8);
        }
        for spec in AGAINST_UPSTREAM {
            g.add(self.fixed(spec), spec.width, 8);
        }
        for (title, specs) in ROWS {
            g.row(title);
            for spec in *specs {
                g.add(self.fixed(spec), spec.width, 8);
            }
        }
        g.panels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_share_lines_evenly() {
        assert_eq!(Layout::widths(3, 4), [8, 8, 8]);
        assert_eq!(Layout::widths(4, 4), [6, 6, 6, 6]);
        assert_eq!(Layout::widths(5, 4), [8, 8, 8, 12, 12]);
        assert_eq!(Layout::widths(6, 4), [8, 8, 8, 8, 8, 8]);
        assert_eq!(Layout::widths(2, 3), [12, 12]);
        assert_eq!(Layout::widths(4, 3), [12, 12, 12, 12]);
        assert_eq!(Layout::widths(5, 3), [8, 8, 8, 12, 12]);
        assert_eq!(Layout::widths(1, 3), [24]);
        assert!(Layout::widths(0, 3).is_empty());
    }

    #[test]
    fn the_provisioned_form_names_its_datasource_and_declares_no_inputs() {
        let text = dashboard(&Config::default(), &Datasource::Uid("prometheus".into()));
        assert!(!text.contains("DS_PROMETHEUS"));
        assert!(!text.contains("__requires"));
        assert!(text.contains("\"uid\": \"prometheus\""));
    }
}
