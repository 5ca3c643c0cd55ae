//! The Prometheus rule file (`alerts/ratewarden.rules.yml` for the built-in defaults).
//!
//! Written as text, not through a YAML serializer: the file is read by people, and its
//! comments (why `max without (instance, pod)`, which thresholds) are half its worth. Every
//! value spliced in from the config is either a number or a PromQL string this module
//! escapes into plain ASCII, and it goes into a literal block scalar (`expr: |`), where YAML
//! reads every character as written; so no org name can break the YAML or the PromQL.

use std::fmt::Write;

use super::plan::{Pair, Plan, percent, ratio};
use crate::config::Config;
use crate::model::Dimension;

/// The rules file for `config`.
pub fn rules(config: &Config) -> String {
    let plan = Plan::of(config);
    let mut out = String::new();
    out.push_str(HEADER);
    header_facts(&mut out, &plan);
    out.push_str(REPLICAS);
    out.push_str(RECORDING);
    out.push_str("  - name: ratewarden.alerts\n    rules:\n");
    usage_high(&mut out, &plan);
    if plan.has(Dimension::Daily) {
        out.push_str(DAILY_QUOTA_EXHAUSTED);
    }
    out.push_str(PER_ORG);
    out.push_str(LIMIT_MISMATCH);
    out.push_str(EXPORTER);
    // The last rule ends the file: no blank line after it.
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

const HEADER: &str = "\
# Prometheus rules for ratewarden: the SPEC §9 alerts expressed on the exported metrics, for
# teams that alert from Prometheus rather than (or besides) ratewarden's own notifications.
# Runbooks: README.md#runbooks. The scrape job is assumed to be named \"ratewarden\".
#
# Written by `ratewarden generate rules [--config FILE]` for one config's thresholds and
# limits: after changing those, generate the file again rather than editing it. This file:
";

/// The header's account of what the config decided, so a reader can tell which config a file
/// was made for.
fn header_facts(out: &mut String, plan: &Plan) {
    let [w, c] = plan.thresholds;
    let _ = writeln!(
        out,
        "#   UsageHigh warns at {} % and is critical at {} % ([alerts] thresholds = [{}, {}]);",
        percent(w),
        percent(c),
        ratio(w),
        ratio(c)
    );
    for ([w, c], orgs) in &plan.own {
        let _ = writeln!(
            out,
            "#   and for {} org{} at {} % and {} % ([[orgs]] thresholds = [{}, {}]);",
            orgs.len(),
            if orgs.len() == 1 { "" } else { "s" },
            percent(*w),
            percent(*c),
            ratio(*w),
            ratio(*c)
        );
    }
    let dims: Vec<&str> = plan.dimensions.iter().map(|d| d.as_str()).collect();
    let _ = writeln!(
        out,
        "#   limits set in {} (rules about one dimension only for those).",
        if dims.is_empty() {
            "no dimension".to_string()
        } else {
            dims.join(", ")
        }
    );
}

const REPLICAS: &str = "\
#
# Several replicas ([cluster]) each export the org-wide series: the same values under another
# instance (and pod). So org-wide series are taken with `max without (instance, pod)` before
# anything is summed (a sum would count each replica's copy), and an alert fires once, not
# once per replica. Each replica's own counters (events ingested and rejected, notifications)
# are its own and are summed.
";

const RECORDING: &str = "\
groups:
  - name: ratewarden.recording
    interval: 30s
    rules:
      - record: org:ratewarden_requests:rate5m
        expr: sum by (org) (max without (instance, pod) (rate(ratewarden_requests_total[5m])))
      - record: org_outcome:ratewarden_requests:rate5m
        expr: sum by (org, outcome) (max without (instance, pod) (rate(ratewarden_requests_total[5m])))
      - record: org_cause:ratewarden_rate_limited:rate5m
        expr: sum by (org, cause) (max without (instance, pod) (rate(ratewarden_rate_limited_total[5m])))
      - record: org:ratewarden_rate_limited:ratio_rate5m
        expr: |
          sum by (org) (max without (instance, pod) (rate(ratewarden_rate_limited_total[5m])))
            / on (org) (org:ratewarden_requests:rate5m > 0)
      - record: org:ratewarden_utilization:max
        expr: max by (org) (ratewarden_utilization_ratio)
      - record: source:ratewarden_events_rejected:ratio_rate5m
        expr: |
          sum by (source) (rate(ratewarden_events_rejected_total[5m]))
            / on (source) (
              (sum by (source) (rate(ratewarden_events_ingested_total[5m])) + sum by (source) (rate(ratewarden_events_rejected_total[5m]))) > 0
            )

";

/// `RatewardenUsageHigh`, one warning and one critical rule. With orgs that have their own
/// thresholds, each rule is a union of one branch per threshold pair: the `[alerts]` pair for
/// every org but those, then each own pair for its orgs. Each org is judged by exactly one
/// pair, so no org gets two warnings or a warning beside a critical. (Separate rules of one
/// name and labels per pair would do the same, but promtool's lint calls them duplicates.)
fn usage_high(out: &mut String, plan: &Plan) {
    let series = |selector: &str| {
        format!("max without (instance, pod) (ratewarden_utilization_ratio{selector})")
    };
    let mut branches: Vec<(String, Pair)> = Vec::new();
    if plan.own.is_empty() {
        branches.push((series(""), plan.thresholds));
    } else {
        let others = alternatives(plan.own_orgs());
        branches.push((series(&format!("{{org!~{others}}}")), plan.thresholds));
        for (pair, orgs) in &plan.own {
            let these = alternatives(orgs.iter().map(String::as_str));
            branches.push((series(&format!("{{org=~{these}}}")), *pair));
        }
        out.push_str(
            "      # One branch per threshold pair: [alerts] thresholds for every org without its\n      \
             # own, then each pair of [[orgs]] thresholds for the orgs that have it.\n",
        );
    }
    let expr = |cond: &dyn Fn(Pair) -> String| {
        let [(first, pair), rest @ ..] = branches.as_slice() else {
            return String::new();
        };
        if rest.is_empty() {
            return format!("expr: {first} {}", cond(*pair));
        }
        // Org names are in the selectors: a literal block keeps YAML from reading into them.
        let mut text = format!("expr: |\n          {first} {}", cond(*pair));
        for (series, pair) in rest {
            let _ = write!(text, "\n            or {series} {}", cond(*pair));
        }
        text
    };
    let warning = |[w, c]: Pair| format!(">= {} < {}", ratio(w), ratio(c));
    let critical = |[_, c]: Pair| format!(">= {}", ratio(c));
    let _ = write!(
        out,
        "      - alert: RatewardenUsageHigh
        {}
        for: 1m
        labels:
          severity: warning
        annotations:
          summary: \"{{{{ $labels.org }}}}{{{{ with $labels.model }}}} {{{{ . }}}}{{{{ end }}}} at {{{{ $value | humanizePercentage }}}} of its {{{{ $labels.dimension }}}} limit\"
          description: \"{{{{ $labels.org }}}} has used {{{{ $value | humanizePercentage }}}} of its {{{{ $labels.dimension }}}} limit for a minute; 429s follow at 100 %.\"
          runbook_url: https://github.com/ratewarden/ratewarden/blob/main/README.md#runbook-usagehigh

      - alert: RatewardenUsageHigh
        {}
        for: 1m
        labels:
          severity: critical
        annotations:
          summary: \"{{{{ $labels.org }}}}{{{{ with $labels.model }}}} {{{{ . }}}}{{{{ end }}}} at {{{{ $value | humanizePercentage }}}} of its {{{{ $labels.dimension }}}} limit\"
          description: \"{{{{ $labels.org }}}} is about to be rate limited on {{{{ $labels.dimension }}}}: {{{{ $value | humanizePercentage }}}} of the limit is in use.\"
          runbook_url: https://github.com/ratewarden/ratewarden/blob/main/README.md#runbook-usagehigh

",
        expr(&warning),
        expr(&critical),
    );
}

/// A PromQL string literal holding a regular expression that matches exactly `names`.
fn alternatives<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let regex: Vec<String> = names.map(regex_escape).collect();
    promql_string(&regex.join("|"))
}

/// `s` with RE2's metacharacters escaped (what Go's `regexp.QuoteMeta` escapes), so it
/// matches itself only: an org named `a.b` must not also match `axb`.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `s` as a double-quoted PromQL string in plain ASCII: backslash and quote escaped, and
/// every other character outside printable ASCII as a `\u`/`\U` escape (PromQL reads Go's
/// escapes), which also keeps it clear of YAML's notion of printable.
fn promql_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            c if u32::from(c) <= 0xffff => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08x}", u32::from(c));
            }
        }
    }
    out.push('"');
    out
}

const DAILY_QUOTA_EXHAUSTED: &str = r#"      - alert: RatewardenDailyQuotaExhausted
        expr: |
          max without (instance, pod) (ratewarden_usage{dimension="daily"})
            >= on (org, model, dimension) max without (instance, pod) (ratewarden_limit{dimension="daily"})
        labels:
          severity: critical
        annotations:
          summary: "{{ $labels.org }}{{ with $labels.model }} {{ . }}{{ end }} has used its whole daily quota"
          description: "{{ $labels.org }}{{ with $labels.model }} (model {{ . }}){{ end }} made {{ $value }} requests in its daily window, its daily limit; every request fails until the window frees up: old requests leave a rolling 24 h, a calendar day (daily_window = calendar) resets at its local daily_reset."
          runbook_url: https://github.com/ratewarden/ratewarden/blob/main/README.md#runbook-dailyquotaexhausted

"#;

const PER_ORG: &str = r#"      - alert: RatewardenJobsStuck
        expr: max without (instance, pod) (ratewarden_jobs_stuck) > 0
        for: 1m
        labels:
          severity: warning
        annotations:
          summary: "{{ $labels.org }} has {{ $value }} stuck jobs"
          description: "{{ $value }} jobs of {{ $labels.org }} have been in flight longer than detect.stuck_after and hold concurrency slots."
          runbook_url: https://github.com/ratewarden/ratewarden/blob/main/README.md#runbook-jobsstuck

      - alert: RatewardenRateLimited
        expr: org_cause:ratewarden_rate_limited:rate5m * 60 > 1
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: "{{ $labels.org }} gets {{ $value | humanize }} 429s a minute ({{ $labels.cause }})"
          description: "{{ $labels.org }} has been rate limited more than once a minute for 5 minutes; the most likely cause is {{ $labels.cause }}."
          runbook_url: https://github.com/ratewarden/ratewarden/blob/main/README.md#runbook-ratelimited

      - alert: RatewardenBurstDetected
        expr: max without (instance, pod) (increase(ratewarden_bursts_total[5m])) > 0
        labels:
          severity: warning
        annotations:
          summary: "{{ $labels.org }} sent a burst of requests"
          description: "{{ $labels.org }} sent more requests within the burst window than its rpm limit allows spread evenly; smooth the sender."
          runbook_url: https://github.com/ratewarden/ratewarden/blob/main/README.md#runbook-burstdetected

      - alert: RatewardenRetryStorm
        expr: max by (org, severity) (ratewarden_alerts_firing{alert="RetryStorm"}) > 0
        labels:
          severity: critical
        annotations:
          summary: "{{ $labels.org }} keeps retrying into 429s"
          description: "An app of {{ $labels.org }} got detect.retry_storm_after 429s in a row and keeps sending; it spends the whole org's quota."
          runbook_url: https://github.com/ratewarden/ratewarden/blob/main/README.md#runbook-retrystorm

      - alert: RatewardenRetryAfterIgnored
        expr: sum by (org, app) (max without (instance, pod) (increase(ratewarden_retry_violations_total[10m]))) > 0
        labels:
          severity: warning
        annotations:
          summary: "{{ $labels.org }}/{{ $labels.app }} ignores Retry-After"
          description: "{{ $labels.org }}/{{ $labels.app }} sent {{ $value | humanize }} requests before the Retry-After of its last 429 elapsed in the last 10 minutes."
          runbook_url: https://github.com/ratewarden/ratewarden/blob/main/README.md#runbook-retryafterignored

"#;

/// The upstream's `x-ratelimit-limit-*` headers against the configured limit of the org (not
/// of its model scopes: `model=""`). `on (org, dimension)` pairs only dimensions both sides
/// have: dimensions the config leaves unlimited have no configured series to differ from.
const LIMIT_MISMATCH: &str = r#"      - alert: RatewardenLimitMismatch
        expr: |
          max without (instance, pod) (ratewarden_upstream_limit)
            != on (org, dimension) max without (instance, pod) (ratewarden_limit{model=""})
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: "{{ $labels.org }}'s {{ $labels.dimension }} limit is {{ $value | humanize }} upstream, not as configured"
          description: "For 5 minutes the upstream's rate-limit headers have reported {{ $value | humanize }} as the {{ $labels.dimension }} limit of {{ $labels.org }}, which differs from its configured limit: usage alerts and headroom are judged against the wrong number."
          runbook_url: https://github.com/ratewarden/ratewarden/blob/main/README.md#runbook-limitmismatch

"#;

const EXPORTER: &str = r#"      - alert: RatewardenExporterDown
        expr: up{job="ratewarden"} == 0
        for: 2m
        labels:
          severity: critical
        annotations:
          summary: "ratewarden {{ $labels.instance }} cannot be scraped"
          description: "Prometheus has not scraped ratewarden at {{ $labels.instance }} for 2 minutes; usage and alerts are blind."
          runbook_url: https://github.com/ratewarden/ratewarden/blob/main/README.md#runbook-exporterdown

      - alert: RatewardenExporterAbsent
        expr: absent(ratewarden_build_info)
        for: 5m
        labels:
          severity: critical
        annotations:
          summary: "no ratewarden metrics at all"
          description: "No ratewarden series has been seen for 5 minutes: the exporter is gone, or the scrape job is missing."
          runbook_url: https://github.com/ratewarden/ratewarden/blob/main/README.md#runbook-exporterdown

      - alert: RatewardenClusterDisconnected
        expr: ratewarden_cluster_connected == 0
        for: 2m
        labels:
          severity: critical
        annotations:
          summary: "ratewarden {{ $labels.instance }} cannot reach its shared log"
          description: "The replica at {{ $labels.instance }} has not reached Redis for 2 minutes: it answers events with 503 and its file sources wait."
          runbook_url: https://github.com/ratewarden/ratewarden/blob/main/README.md#runbook-clusterdisconnected

      - alert: RatewardenReplicaConfigDiffers
        expr: max by (job) (ratewarden_cluster_config_differs) > 0
        for: 15m
        labels:
          severity: warning
        annotations:
          summary: "ratewarden replicas run different configs"
          description: "For 15 minutes some replicas have run limits, tiers, orgs, detection or alerts configured differently from others: they answer differently."
          runbook_url: https://github.com/ratewarden/ratewarden/blob/main/README.md#runbook-replicaconfigdiffers

      - alert: RatewardenNotificationsFailing
        expr: sum by (channel) (increase(ratewarden_notifications_total{outcome="failed"}[15m])) > 0
        labels:
          severity: warning
        annotations:
          summary: "notifications to {{ $labels.channel }} are failing"
          description: "{{ $value | humanize }} notifications to {{ $labels.channel }} were given up in the last 15 minutes; see the channel's last_error in GET /v1/alerts."
          runbook_url: https://github.com/ratewarden/ratewarden/blob/main/README.md#runbook-notificationsfailing

      - alert: RatewardenNotificationBacklog
        expr: ratewarden_notifications_pending > 50
        for: 15m
        labels:
          severity: warning
        annotations:
          summary: "{{ $value }} notifications wait for {{ $labels.channel }}"
          description: "The outbox of {{ $labels.channel }} has held more than 50 notifications for 15 minutes: the receiver is down or rejects them."
          runbook_url: https://github.com/ratewarden/ratewarden/blob/main/README.md#runbook-notificationsfailing

      - alert: RatewardenEventsRejected
        expr: source:ratewarden_events_rejected:ratio_rate5m > 0.05
        for: 10m
        labels:
          severity: warning
        annotations:
          summary: "{{ $value | humanizePercentage }} of events from {{ $labels.source }} are rejected"
          description: "More than 5 % of the events from {{ $labels.source }} have been rejected for 10 minutes; see events_rejected_total by reason."
          runbook_url: https://github.com/ratewarden/ratewarden/blob/main/README.md#runbook-eventsrejected
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_names_become_exact_ascii_regexes() {
        let names = ["a.b", "x|y", "q\"uo\\te", "é", "😀", "plain #no comment"];
        assert_eq!(
            alternatives(names.into_iter()),
            r#""a\\.b|x\\|y|q\"uo\\\\te|\u00e9|\U0001f600|plain #no comment""#
        );
    }

    #[test]
    fn without_overrides_the_usage_rule_has_no_org_matcher() {
        let text = rules(&Config::default());
        assert!(text.contains(
            "        expr: max without (instance, pod) (ratewarden_utilization_ratio) >= 0.70 < 0.90\n"
        ));
        assert!(
            !text.contains("RatewardenDailyQuotaExhausted"),
            "no daily limit"
        );
        assert!(text.ends_with("#runbook-eventsrejected\n"));
    }

    #[test]
    fn each_org_is_judged_by_one_pair() {
        let config = Config::parse(
            r#"
[tiers.plus]
daily = 100
[[orgs]]
id = "a.b"
thresholds = [0.5, 0.8]
[[orgs]]
id = "c"
thresholds = [0.6, 0.95]
"#,
            "t.toml",
        )
        .expect("valid");
        let text = rules(&config);
        let once = "max without (instance, pod) (ratewarden_utilization_ratio";
        for expr in [
            format!(
                r#"expr: |
          {once}{{org!~"a\\.b|c"}}) >= 0.70 < 0.90
            or {once}{{org=~"a\\.b"}}) >= 0.50 < 0.80
            or {once}{{org=~"c"}}) >= 0.60 < 0.95
"#
            ),
            format!(
                r#"expr: |
          {once}{{org!~"a\\.b|c"}}) >= 0.90
            or {once}{{org=~"a\\.b"}}) >= 0.80
            or {once}{{org=~"c"}}) >= 0.95
"#
            ),
        ] {
            assert!(text.contains(&expr), "{expr} in\n{text}");
        }
        assert_eq!(text.matches("- alert: RatewardenUsageHigh").count(), 2);
        assert!(text.contains("- alert: RatewardenDailyQuotaExhausted"));
    }
}
