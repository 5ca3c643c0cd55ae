//! What a notification looks like on each channel: email subject and bodies, the SPEC §9
//! JSON object, Slack's `text`, Alertmanager's v2 alert array. Pure functions of the
//! transition, so every retry of one notification sends the same bytes.

use crate::model::{AlertName, Severity};
use serde_json::{Map, Value, json};

use crate::clock::rfc3339;
use crate::detect::{Status, Transition};

/// `92% (46/50)` when usage and limit are known.
fn share(t: &Transition) -> Option<String> {
    match (t.usage, t.limit) {
        (Some(u), Some(l)) if l > 0 => {
            Some(format!("{}% ({u}/{l})", (u as u128 * 100) / l as u128))
        }
        _ => None,
    }
}

fn who(t: &Transition) -> String {
    match (&t.app, &t.model) {
        (Some(app), _) => format!("{}/{}", t.org, app),
        (None, Some(model)) => format!("{} model {}", t.org, model),
        (None, None) => t.org.to_string(),
    }
}

fn state_word(t: &Transition) -> String {
    match t.status {
        Status::Resolved => "RESOLVED".into(),
        Status::Firing => t.severity.as_str().to_ascii_uppercase(),
    }
}

/// `[ratewarden] CRITICAL UsageHigh acme rpm 92% (46/50)` (SPEC §9).
pub fn subject(t: &Transition) -> String {
    let mut s = format!("[ratewarden] {} {} {}", state_word(t), t.alert, who(t));
    if let Some(d) = t.dimension {
        s.push(' ');
        s.push_str(d.as_str());
    }
    if let Some(p) = share(t) {
        s.push(' ');
        s.push_str(&p);
    }
    s
}

/// The fields of a notification as (name, value) rows, for the email bodies.
fn rows(t: &Transition, delivery_id: &str) -> Vec<(&'static str, String)> {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    vec![
        ("alert", t.alert.to_string()),
        ("status", t.status.as_str().into()),
        ("severity", t.severity.as_str().into()),
        ("org", t.org.to_string()),
        ("app", opt(t.app.as_ref().map(|a| a.to_string()))),
        ("dimension", opt(t.dimension.map(|d| d.to_string()))),
        ("value", opt(t.value().map(|v| format!("{v:.4}")))),
        (
            "threshold",
            opt(t.threshold_bp.map(|b| format!("{}", b as f64 / 10_000.0))),
        ),
        ("usage", opt(t.usage.map(|u| u.to_string()))),
        ("limit", opt(t.limit.map(|l| l.to_string()))),
        ("starts_at", rfc3339(t.starts_at_ms)),
        (
            "ends_at",
            opt((t.status == Status::Resolved).then(|| rfc3339(t.ts_ms))),
        ),
        ("fingerprint", t.fingerprint()),
        ("delivery", delivery_id.to_string()),
    ]
}

fn headline(t: &Transition) -> String {
    if t.alert == AlertName::Test {
        return t.summary();
    }
    match (t.status, t.repeat) {
        (Status::Resolved, _) => format!("{} resolved for {}: {}", t.alert, who(t), t.summary()),
        (Status::Firing, true) => format!(
            "{} is still firing for {}: {}",
            t.alert,
            who(t),
            t.summary()
        ),
        (Status::Firing, false) => format!("{} is firing for {}: {}", t.alert, who(t), t.summary()),
    }
}

/// Plain-text email body.
pub fn text_body(t: &Transition, delivery_id: &str) -> String {
    let mut out = headline(t);
    out.push_str("\n\n");
    for (k, v) in rows(t, delivery_id) {
        out.push_str(&format!("{k:<12} {v}\n"));
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The small HTML alternative of the email body.
pub fn html_body(t: &Transition, delivery_id: &str) -> String {
    let color = match (t.status, t.severity) {
        (Status::Resolved, _) => "#2e7d32",
        (_, Severity::Critical) => "#c62828",
        _ => "#ef6c00",
    };
    let mut out = format!(
        "<html><body style=\"font-family:sans-serif\"><p style=\"font-size:16px;color:{color}\"><b>{}</b></p><table style=\"border-collapse:collapse\">",
        escape(&headline(t))
    );
    for (k, v) in rows(t, delivery_id) {
        out.push_str(&format!(
            "<tr><td style=\"padding:2px 12px 2px 0;color:#555\">{}</td><td style=\"padding:2px 0\">{}</td></tr>",
            escape(k),
            escape(&v)
        ));
    }
    out.push_str("</table></body></html>");
    out
}

/// The SPEC §9 notification object (`version`, `status`, `alert`, …, `fingerprint`): the
/// `json` webhook body and each entry of `GET /v1/alerts`.
pub fn json(t: &Transition) -> Value {
    let mut v = json!({
        "version": "1",
        "status": t.status.as_str(),
        "alert": t.alert.as_str(),
        "severity": t.severity.as_str(),
        "org": &*t.org,
        "app": t.app.as_deref(),
        "dimension": t.dimension.map(|d| d.as_str()),
        "value": t.value(),
        "threshold": t.threshold_bp.map(|bp| bp as f64 / 10_000.0),
        "usage": t.usage,
        "limit": t.limit,
        "starts_at": rfc3339(t.starts_at_ms),
        "ends_at": (t.status == Status::Resolved).then(|| rfc3339(t.ts_ms)),
        "summary": t.summary(),
        "fingerprint": t.fingerprint(),
    });
    // Only an alert of a model scope has the key, as only its series have the label.
    if let (Some(m), Some(obj)) = (&t.model, v.as_object_mut()) {
        obj.insert("model".into(), Value::String(m.to_string()));
    }
    v
}

/// The SPEC §9 JSON object (`format = "json"`).
pub fn json_body(t: &Transition) -> Vec<u8> {
    json(t).to_string().into_bytes()
}

/// Slack incoming-webhook message (`format = "slack"`).
pub fn slack_body(t: &Transition) -> Vec<u8> {
    let icon = match (t.status, t.severity) {
        (Status::Resolved, _) => ":white_check_mark:",
        (_, Severity::Critical) => ":red_circle:",
        _ => ":large_orange_circle:",
    };
    let mut text = format!("{icon} *{}* {} {}", state_word(t), t.alert, who(t));
    if let Some(d) = t.dimension {
        text.push_str(&format!(" `{d}`"));
    }
    text.push_str(&format!(" — {}", t.summary()));
    match t.status {
        Status::Firing => text.push_str(&format!(" (since {})", rfc3339(t.starts_at_ms))),
        Status::Resolved => text.push_str(&format!(" (fired {})", rfc3339(t.starts_at_ms))),
    }
    json!({ "text": text }).to_string().into_bytes()
}

/// Alertmanager v2 alerts (`format = "alertmanager"`): every label a string, `startsAt`,
/// and `endsAt` (in the future while firing, so Alertmanager keeps it firing until the next
/// reminder; the time of the resolve when resolved). A severity change also ends the alert
/// under its previous severity label, since labels are the alert's identity there.
pub fn alertmanager_body(t: &Transition, min: Severity, firing_for_ms: i64) -> Option<Vec<u8>> {
    let labels = |severity: Severity| {
        let mut m = Map::new();
        m.insert("alertname".into(), Value::String(t.alert.to_string()));
        m.insert("org".into(), Value::String(t.org.to_string()));
        m.insert("severity".into(), Value::String(severity.as_str().into()));
        if let Some(d) = t.dimension {
            m.insert("dimension".into(), Value::String(d.to_string()));
        }
        if let Some(app) = &t.app {
            m.insert("app".into(), Value::String(app.to_string()));
        }
        if let Some(model) = &t.model {
            m.insert("model".into(), Value::String(model.to_string()));
        }
        m.insert("source".into(), Value::String("ratewarden".into()));
        Value::Object(m)
    };
    let annotations = json!({
        "summary": t.summary(),
        "description": format!("{} (fingerprint {})", headline(t), t.fingerprint()),
    });
    let mut alerts = Vec::new();
    if let Some(prev) = t.previous_severity
        && prev != t.severity
        && prev >= min
    {
        alerts.push(json!({
            "labels": labels(prev),
            "annotations": annotations,
            "startsAt": rfc3339(t.starts_at_ms),
            "endsAt": rfc3339(t.ts_ms),
        }));
    }
    if t.severity >= min {
        let ends = match t.status {
            Status::Resolved => t.ts_ms,
            Status::Firing => t.ts_ms + firing_for_ms,
        };
        alerts.push(json!({
            "labels": labels(t.severity),
            "annotations": annotations,
            "startsAt": rfc3339(t.starts_at_ms),
            "endsAt": rfc3339(ends),
        }));
    }
    (!alerts.is_empty()).then(|| Value::Array(alerts).to_string().into_bytes())
}

/// Notifications sent together because they came faster than the channel's
/// `max_per_minute`: one delivery that stands for all of them, in order.
pub struct Group<'a> {
    /// The channel's name.
    pub channel: &'a str,
    /// Its `max_per_minute`.
    pub max_per_minute: u32,
    /// The notifications, oldest first.
    pub transitions: &'a [Transition],
    /// The group's delivery id.
    pub delivery_id: &'a str,
}

/// Notifications listed one per line in a group's email and in its JSON; the rest are counted.
pub const GROUP_LISTED: usize = 100;
/// Lines of a group's Slack message (Slack cuts long messages).
const GROUP_SLACK_LINES: usize = 20;

impl Group<'_> {
    fn counts(&self) -> String {
        let mut critical = 0;
        let mut warning = 0;
        let mut resolved = 0;
        for t in self.transitions {
            match (t.status, t.severity) {
                (Status::Resolved, _) => resolved += 1,
                (_, Severity::Critical) => critical += 1,
                _ => warning += 1,
            }
        }
        [
            (critical, "critical"),
            (warning, "warning"),
            (resolved, "resolved"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, w)| format!("{n} {w}"))
        .collect::<Vec<_>>()
        .join(", ")
    }

    /// Highest severity among the notifications.
    fn severity(&self) -> Severity {
        self.transitions
            .iter()
            .map(|t| t.severity)
            .max()
            .unwrap_or(Severity::Warning)
    }

    /// One sentence saying what this is.
    pub fn headline(&self) -> String {
        format!(
            "{} notifications ({}) came faster than channel {}'s max_per_minute ({}) and are sent together",
            self.transitions.len(),
            self.counts(),
            self.channel,
            self.max_per_minute
        )
    }

    /// One line per notification: its subject without the `[ratewarden]` prefix.
    fn lines(&self, most: usize) -> (Vec<String>, usize) {
        let lines = self
            .transitions
            .iter()
            .take(most)
            .map(|t| subject(t).trim_start_matches("[ratewarden] ").to_string())
            .collect();
        (lines, self.transitions.len().saturating_sub(most))
    }

    /// Email subject.
    pub fn subject(&self) -> String {
        format!(
            "[ratewarden] {} notifications grouped ({})",
            self.transitions.len(),
            self.counts()
        )
    }

    /// Plain-text email body.
    pub fn text_body(&self) -> String {
        let mut out = format!("{}.\n\n", self.headline());
        let (lines, more) = self.lines(GROUP_LISTED);
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
        if more > 0 {
            out.push_str(&format!(
                "… and {more} more (GET /v1/alerts lists every alert firing now)\n"
            ));
        }
        out.push_str(&format!("\ndelivery     {}\n", self.delivery_id));
        out
    }

    /// HTML alternative of the email body.
    pub fn html_body(&self) -> String {
        let mut out = format!(
            "<html><body style=\"font-family:sans-serif\"><p style=\"font-size:16px\"><b>{}</b></p><ul>",
            escape(&self.headline())
        );
        let (lines, more) = self.lines(GROUP_LISTED);
        for l in lines {
            out.push_str(&format!("<li>{}</li>", escape(&l)));
        }
        out.push_str("</ul>");
        if more > 0 {
            out.push_str(&format!("<p>… and {more} more</p>"));
        }
        out.push_str("</body></html>");
        out
    }

    /// The JSON body: the SPEC §9 shape with `alert` = `NotificationsGrouped`, `grouped` (how
    /// many), `notifications` (the first [`GROUP_LISTED`], each its own SPEC §9 object) and
    /// `omitted`.
    pub fn json_body(&self) -> Vec<u8> {
        let first = self.transitions.first();
        json!({
            "version": "1",
            "status": "firing",
            "alert": "NotificationsGrouped",
            "severity": self.severity().as_str(),
            "org": null,
            "app": null,
            "summary": self.headline(),
            "starts_at": first.map(|t| rfc3339(t.ts_ms)),
            "ends_at": null,
            "grouped": self.transitions.len(),
            "notifications": self.transitions.iter().take(GROUP_LISTED).map(json).collect::<Vec<_>>(),
            "omitted": self.transitions.len().saturating_sub(GROUP_LISTED),
            "fingerprint": self.delivery_id,
        })
        .to_string()
        .into_bytes()
    }

    /// Slack message: the headline and the first lines.
    pub fn slack_body(&self) -> Vec<u8> {
        let mut text = format!(":bell: *{}*", self.headline());
        let (lines, more) = self.lines(GROUP_SLACK_LINES);
        for l in lines {
            text.push_str(&format!("\n• {l}"));
        }
        if more > 0 {
            text.push_str(&format!("\n… and {more} more"));
        }
        json!({ "text": text }).to_string().into_bytes()
    }

    /// Alertmanager: every alert of every notification in one array (Alertmanager groups
    /// them itself); `None` when none is at the channel's severity.
    pub fn alertmanager_body(&self, min: Severity, firing_for_ms: i64) -> Option<Vec<u8>> {
        let mut all = Vec::new();
        for t in self.transitions {
            if let Some(body) = alertmanager_body(t, min, firing_for_ms)
                && let Ok(Value::Array(alerts)) = serde_json::from_slice::<Value>(&body)
            {
                all.extend(alerts);
            }
        }
        (!all.is_empty()).then(|| Value::Array(all).to_string().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Dimension;

    fn usage_high() -> Transition {
        Transition {
            ts_ms: 1_795_788_000_000,
            dimension: Some(Dimension::Rpm),
            usage: Some(46),
            limit: Some(50),
            threshold_bp: Some(9000),
            ..Transition::firing(
                &"acme".into(),
                1_795_787_990_000,
                AlertName::UsageHigh,
                Severity::Critical,
            )
        }
    }

    #[test]
    fn the_notification_object_as_in_the_spec() {
        let t = usage_high();
        let j = json(&t);
        assert_eq!(j["threshold"], 0.9);
        assert_eq!(j["value"], 0.92);
        assert_eq!(j["ends_at"], Value::Null);
        assert_eq!(j["fingerprint"].as_str().map(str::len), Some(16));
        assert_eq!(j["summary"], "acme at 92% of its 50 rpm");
        let resolved = json(&Transition {
            status: Status::Resolved,
            ..t
        });
        assert_eq!(resolved["ends_at"], "2026-11-27T14:00:00.000Z");
    }

    #[test]
    fn email_subject_as_in_the_spec() {
        let t = usage_high();
        assert_eq!(
            subject(&t),
            "[ratewarden] CRITICAL UsageHigh acme rpm 92% (46/50)"
        );
        let r = Transition {
            status: Status::Resolved,
            usage: Some(20),
            ..t.clone()
        };
        assert_eq!(
            subject(&r),
            "[ratewarden] RESOLVED UsageHigh acme rpm 40% (20/50)"
        );
        let storm = Transition {
            alert: AlertName::RetryStorm,
            app: Some("bot".into()),
            dimension: None,
            usage: Some(5),
            limit: None,
            ..t
        };
        assert_eq!(subject(&storm), "[ratewarden] CRITICAL RetryStorm acme/bot");
    }

    #[test]
    fn bodies_repeat_the_fields() {
        let t = usage_high();
        let text = text_body(&t, "d-1");
        for needle in [
            "UsageHigh is firing for acme",
            "severity     critical",
            "usage        46",
            "delivery     d-1",
        ] {
            assert!(text.contains(needle), "{needle:?} in {text}");
        }
        let html = html_body(
            &Transition {
                org: "<script>".into(),
                ..t
            },
            "d-1",
        );
        assert!(
            html.contains("&lt;script&gt;") && !html.contains("<script>"),
            "{html}"
        );
    }

    #[test]
    fn alertmanager_labels_are_strings_and_severity_changes_end_the_old_alert() {
        let t = Transition {
            previous_severity: Some(Severity::Warning),
            ..usage_high()
        };
        let v: Value =
            serde_json::from_slice(&alertmanager_body(&t, Severity::Warning, 3_600_000).unwrap())
                .unwrap();
        let alerts = v.as_array().unwrap();
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0]["labels"]["severity"], "warning");
        assert_eq!(alerts[0]["endsAt"], "2026-11-27T14:00:00.000Z");
        assert_eq!(alerts[1]["labels"]["severity"], "critical");
        assert_eq!(
            alerts[1]["endsAt"], "2026-11-27T15:00:00.000Z",
            "firing: an hour ahead"
        );
        assert_eq!(alerts[1]["labels"]["source"], "ratewarden");
        for a in alerts {
            assert!(
                a["labels"]
                    .as_object()
                    .unwrap()
                    .values()
                    .all(Value::is_string)
            );
        }
        // A channel for critical only sees just the critical part.
        let v: Value =
            serde_json::from_slice(&alertmanager_body(&t, Severity::Critical, 1).unwrap()).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1);
        let warn = Transition {
            severity: Severity::Warning,
            previous_severity: None,
            ..usage_high()
        };
        assert!(alertmanager_body(&warn, Severity::Critical, 1).is_none());
    }

    #[test]
    fn a_group_counts_and_lists_its_notifications() {
        let mut ts = Vec::new();
        for i in 0..150 {
            ts.push(Transition {
                org: format!("org-{i}").into(),
                severity: if i % 2 == 0 {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                ..usage_high()
            });
        }
        ts.push(Transition {
            status: Status::Resolved,
            ..usage_high()
        });
        let g = Group {
            channel: "ops",
            max_per_minute: 60,
            transitions: &ts,
            delivery_id: "g-1",
        };
        assert_eq!(
            g.subject(),
            "[ratewarden] 151 notifications grouped (75 critical, 75 warning, 1 resolved)"
        );
        let text = g.text_body();
        assert!(
            text.contains("CRITICAL UsageHigh org-0 rpm 92% (46/50)\n"),
            "{text}"
        );
        assert!(text.contains("… and 51 more"), "{text}");
        let v: Value = serde_json::from_slice(&g.json_body()).unwrap();
        assert_eq!(v["alert"], "NotificationsGrouped");
        assert_eq!(v["severity"], "critical");
        assert_eq!(v["grouped"], 151);
        assert_eq!(v["notifications"].as_array().unwrap().len(), GROUP_LISTED);
        assert_eq!(v["notifications"][1]["org"], "org-1");
        assert_eq!(v["omitted"], 51);
        let v: Value = serde_json::from_slice(&g.slack_body()).unwrap();
        assert_eq!(v["text"].as_str().unwrap().lines().count(), 22);
        let v: Value =
            serde_json::from_slice(&g.alertmanager_body(Severity::Critical, 1).unwrap()).unwrap();
        assert_eq!(
            v.as_array().unwrap().len(),
            76,
            "critical firings and the resolve"
        );
    }

    #[test]
    fn slack_text() {
        let v: Value = serde_json::from_slice(&slack_body(&usage_high())).unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(
            text.starts_with(
                ":red_circle: *CRITICAL* UsageHigh acme `rpm` — acme at 92% of its 50 rpm"
            ),
            "{text}"
        );
    }
}
