//! Model scopes and the dimensions past the first five, through the tracker's surface.

use super::tests::feed;
use super::*;
use crate::detect::{Cause, Status, Transition};
use crate::events::{ParseContext, parse_event};
use crate::model::{AlertName, Dimension};

const T0: i64 = 1_795_788_000_000; // 2026-11-27T14:00:00Z

fn tracker(toml: &str) -> Tracker {
    Tracker::new(&Config::parse(toml, "scopes.toml").unwrap())
}

fn call(t: &mut Tracker, model: &str, ts: i64, status: u16, extra: &str) -> Vec<Transition> {
    feed(
        t,
        &format!(
            r#"{{"org":"acme","app":"web","ts":{ts},"status":{status},"model":"{model}"{extra}}}"#
        ),
        ts,
    )
}

fn snap(t: &Tracker, now: i64) -> OrgSnapshot {
    t.snapshot(now)
        .into_iter()
        .find(|o| &*o.org == "acme")
        .unwrap()
}

const OPENAI: &str = r#"
[tiers.openai]
rpm = 100
[[tiers.openai.models]]
match = ["gpt-image-1"]
rpm = 5
ipm = 8
[[tiers.openai.models]]
name = "gpt-4o"
match = ["gpt-4o", "gpt-4o-2024-*"]
rpm = 3
tpm = 1000

[[orgs]]
id = "acme"
tier = "openai"
"#;

#[test]
fn two_models_fill_separately_and_the_org_limit_still_binds() {
    let mut t = tracker(OPENAI);
    for i in 0..3 {
        call(&mut t, "gpt-image-1", T0 + i, 200, r#","images":2"#);
    }
    call(
        &mut t,
        "gpt-4o-2024-08-06",
        T0 + 10,
        200,
        r#","tokens":100"#,
    );
    call(&mut t, "o3", T0 + 11, 200, "");
    let o = snap(&t, T0 + 20);
    assert_eq!(
        o.usage_of(Dimension::Rpm),
        Some(5),
        "the org counts every model"
    );
    let image = &o.models[0];
    let gpt = &o.models[1];
    assert_eq!((&*image.model, &*gpt.model), ("gpt-image-1", "gpt-4o"));
    let used = |m: &ScopeSnapshot, d| m.usage.iter().find(|(x, _)| *x == d).map(|(_, v)| *v);
    assert_eq!(used(image, Dimension::Rpm), Some(3));
    assert_eq!(used(image, Dimension::Ipm), Some(6));
    assert_eq!(
        used(gpt, Dimension::Rpm),
        Some(1),
        "a dated id matches its prefix"
    );
    assert_eq!(used(gpt, Dimension::Tpm), Some(100));

    // gpt-image-1 reaches its 5 rpm: UsageHigh of that scope, not of the org or gpt-4o.
    let mut out = Vec::new();
    for i in 0..2 {
        out.extend(call(&mut t, "gpt-image-1", T0 + 30 + i, 200, ""));
    }
    let scoped: Vec<_> = out
        .iter()
        .filter(|t| t.alert == AlertName::UsageHigh && t.status == Status::Firing)
        .collect();
    assert!(!scoped.is_empty(), "{out:?}");
    assert!(
        scoped
            .iter()
            .all(|t| t.model.as_deref() == Some("gpt-image-1"))
    );
    assert!(
        scoped[0].summary().contains("acme's gpt-image-1"),
        "{}",
        scoped[0].summary()
    );

    // A 429 of gpt-image-1 now is explained by its scope's rpm; one of gpt-4o (not full)
    // is not.
    call(&mut t, "gpt-image-1", T0 + 40, 429, "");
    call(&mut t, "gpt-4o", T0 + 41, 429, "");
    let o = snap(&t, T0 + 42);
    let image = &o.models[0];
    assert_eq!(image.rate_limited.len(), 1);
    assert_eq!(image.rate_limited[0].1[Cause::Rpm.index()], 1);
    assert!(o.models[1].rate_limited.is_empty());
    let web = &o.apps[0];
    assert_eq!(
        web.rate_limited[Cause::Unexplained.index()],
        1,
        "gpt-4o's 429"
    );
    assert_eq!(
        web.rate_limited[Cause::Rpm.index()],
        0,
        "the org's rpm was not full"
    );

    // The org-wide limit binds whatever the model: 100 rpm over scopes and unscoped models.
    for i in 0..95 {
        call(&mut t, "o3", T0 + 50 + i, 200, "");
    }
    call(&mut t, "gpt-4o", T0 + 200, 429, "");
    let o = snap(&t, T0 + 201);
    assert_eq!(o.apps[0].rate_limited[Cause::Rpm.index()], 1);
}

#[test]
fn input_output_tokens_images_and_the_batch_queue_at_the_org() {
    let mut t = tracker(
        r#"
[tiers.anthropic]
rpm = 50
itpm = 1000
otpm = 200
ipm = 4
batch_queue_tokens = 5000
[[orgs]]
id = "acme"
tier = "anthropic"
"#,
    );
    call(
        &mut t,
        "x",
        T0,
        200,
        r#","input_tokens":800,"output_tokens":150"#,
    );
    call(&mut t, "x", T0 + 1, 200, r#","images":3"#);
    let batch = |t: &mut Tracker, id: &str, ts: i64, status: u16, tokens: u64| {
        let extra = format!(r#","batch":true,"job_id":"{id}","input_tokens":{tokens}"#);
        call(t, "x", ts, status, &extra)
    };
    batch(&mut t, "batch_1", T0 + 2, 200, 4000);
    let o = snap(&t, T0 + 3);
    assert_eq!(
        o.usage_of(Dimension::Itpm),
        Some(800),
        "a batch's tokens are the queue's"
    );
    assert_eq!(o.usage_of(Dimension::Otpm), Some(150));
    assert_eq!(o.usage_of(Dimension::Ipm), Some(3));
    assert_eq!(o.usage_of(Dimension::BatchQueueTokens), Some(4000));
    assert_eq!(o.jobs_in_flight, 0, "a batch is not a job in flight");
    assert!(
        o.alerts
            .iter()
            .any(|a| a.dimension == Some(Dimension::Itpm))
    );
    // The queue full: a batch refused is explained by it, a call by its own windows.
    batch(&mut t, "batch_2", T0 + 4, 200, 1000);
    batch(&mut t, "batch_3", T0 + 5, 429, 10);
    call(&mut t, "x", T0 + 6, 200, r#","output_tokens":60"#);
    call(&mut t, "x", T0 + 7, 429, "");
    let causes = snap(&t, T0 + 8).apps[0].rate_limited;
    assert_eq!(causes[Cause::BatchQueueTokens.index()], 1);
    assert_eq!(causes[Cause::Otpm.index()], 1, "210 of 200 output tokens");
    // A batch also reported as a job: its end frees the queue and the slot.
    let job = |t: &mut Tracker, kind: &str, ts: i64| {
        let json = format!(r#"{{"org":"acme","ts":{ts},"kind":"{kind}","job_id":"batch_1"}}"#);
        feed(t, &json, ts)
    };
    job(&mut t, "job_started", T0 + 9);
    assert_eq!(snap(&t, T0 + 9).jobs_in_flight, 1);
    job(&mut t, "job_completed", T0 + 10);
    let o = snap(&t, T0 + 11);
    assert_eq!(o.usage_of(Dimension::BatchQueueTokens), Some(1000));
    assert_eq!(o.jobs_in_flight, 0);
    // A batch without its id counts as a request, with a field error.
    let parsed = parse_event(
        br#"{"org":"acme","status":200,"batch":true,"input_tokens":5}"#,
        &ParseContext::default(),
    )
    .unwrap();
    assert!(!parsed.event.batch);
    assert_eq!(parsed.field_errors.len(), 1);
}

#[test]
fn scopes_survive_a_snapshot_and_follow_the_config() {
    let mut t = tracker(OPENAI);
    for i in 0..5 {
        call(&mut t, "gpt-image-1", T0 + i, 200, r#","images":1"#);
    }
    call(&mut t, "gpt-image-1", T0 + 10, 429, "");
    let bytes = t.encode().unwrap();
    let back = Tracker::restore(&Config::parse(OPENAI, "scopes.toml").unwrap(), &bytes).unwrap();
    let o = snap(&back, T0 + 11);
    assert_eq!(o.models[0].usage[0], (Dimension::Rpm, 6));
    assert_eq!(o.models[0].rate_limited.len(), 1);
    assert!(
        o.alerts
            .iter()
            .any(|a| a.model.as_deref() == Some("gpt-image-1")),
        "the scope's alert state came back"
    );
    // A config without the scope drops it.
    let plain = "[tiers.openai]\nrpm = 100\n[[orgs]]\nid = \"acme\"\ntier = \"openai\"\n";
    let back = Tracker::restore(&Config::parse(plain, "plain.toml").unwrap(), &bytes).unwrap();
    assert!(snap(&back, T0 + 11).models.is_empty());
    assert_eq!(snap(&back, T0 + 11).usage_of(Dimension::Rpm), Some(6));
}

#[test]
fn org_scopes_change_and_extend_their_tiers() {
    let c = Config::parse(
        &format!("{OPENAI}[[orgs.models]]\nname = \"gpt-4o\"\nrpm = 30\n[[orgs.models]]\nmatch = [\"o3\"]\ntpm = 50\n"),
        "scopes.toml",
    )
    .unwrap();
    let scopes = &c.orgs[0].models;
    assert_eq!(scopes.len(), 3);
    assert_eq!((scopes[1].limits.rpm, scopes[1].limits.tpm), (30, 1000));
    assert_eq!(&*scopes[2].name, "o3");
    let e = Config::parse(
        "[[tiers.t.models]]\nmatch = [\"a\"]\nconcurrency = 2\n",
        "bad.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("bad.toml:1:") && e.contains("concurrency is the org's"),
        "{e}"
    );
    let e = Config::parse(
        "[[tiers.t.models]]\nmatch = [\"a\"]\n[[tiers.t.models]]\nname = \"b\"\nmatch = [\"a\"]\n",
        "bad.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("in two scopes"), "{e}");
    let e = Config::parse("[[tiers.t.models]]\nrpm = 1\n", "bad.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs match"), "{e}");
}

#[test]
fn a_format_7_snapshot_is_read_without_extensions() {
    let mut t = tracker(OPENAI);
    call(&mut t, "o3", T0, 200, "");
    let mut bytes = t.encode().unwrap();
    // Format 8 is format 7 followed by the extensions: here acme's scopes (no counts yet).
    assert_eq!(&bytes[..4], b"RWT8");
    let plain = Tracker::new(&Config::parse("[[orgs]]\nid = \"acme\"\n", "p.toml").unwrap());
    let mut old = plain.encode().unwrap();
    assert_eq!(old.pop(), Some(0), "no org has an extension: an empty list");
    old[..4].copy_from_slice(b"RWT7");
    let back = Tracker::restore(&Config::parse(OPENAI, "scopes.toml").unwrap(), &old).unwrap();
    assert_eq!(
        snap(&back, T0).models.len(),
        2,
        "the config's scopes, counting from zero"
    );
    bytes[..4].copy_from_slice(b"RWT9");
    assert!(Tracker::restore(&Config::parse(OPENAI, "scopes.toml").unwrap(), &bytes).is_err());
}

fn poll(models: &[(&str, u64)]) -> crate::model::SourcedLimits {
    crate::model::SourcedLimits {
        source: "openai-admin".into(),
        org: "acme".into(),
        scopes: models
            .iter()
            .map(|&(m, daily)| crate::model::ScopeLimits {
                models: vec![m.into()],
                daily: Some(daily),
                ..Default::default()
            })
            .collect(),
    }
}

#[test]
fn a_source_added_scope_keeps_its_counts_across_a_restart_and_resolves_when_dropped() {
    let mut t = tracker(OPENAI);
    let mut out = Vec::new();
    assert!(t.set_sourced_limits(&poll(&[("dall-e-3", 2)]), T0, &mut out));
    assert!(!t.set_sourced_limits(&poll(&[("dall-e-3", 2)]), T0, &mut out));
    let fired: Vec<_> = (0..2)
        .flat_map(|i| call(&mut t, "dall-e-3", T0 + i, 200, ""))
        .filter(|t| t.alert == AlertName::DailyQuotaExhausted)
        .collect();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].model.as_deref(), Some("dall-e-3"));
    // The snapshot keeps the poll: the restored tracker binds the scope before any event.
    let back = Tracker::restore(
        &Config::parse(OPENAI, "scopes.toml").unwrap(),
        &t.encode().unwrap(),
    )
    .unwrap();
    let o = snap(&back, T0 + 5);
    let dalle = o.models.iter().find(|m| &*m.model == "dall-e-3").unwrap();
    assert_eq!(dalle.usage[1], (Dimension::Daily, 2));
    assert_eq!(dalle.source.as_deref(), Some("openai-admin"));
    assert!(
        o.alerts
            .iter()
            .any(|a| a.alert == AlertName::DailyQuotaExhausted)
    );
    // A poll that no longer lists it drops the scope and resolves what it had firing.
    let mut out = Vec::new();
    assert!(t.set_sourced_limits(&poll(&[]), T0 + 6, &mut out));
    let resolved: Vec<_> = out
        .iter()
        .filter(|t| t.status == Status::Resolved)
        .map(|t| (t.alert, t.model.as_deref().map(str::to_string)))
        .collect();
    assert!(
        resolved.contains(&(AlertName::DailyQuotaExhausted, Some("dall-e-3".into())))
            && resolved.contains(&(AlertName::UsageHigh, Some("dall-e-3".into()))),
        "{out:?}"
    );
    assert!(
        snap(&t, T0 + 7)
            .models
            .iter()
            .all(|m| &*m.model != "dall-e-3")
    );
}

#[test]
fn the_closest_scope_wins_whatever_the_order() {
    for order in [["wide", "mini"], ["mini", "wide"]] {
        let table = |which: &str| match which {
            "wide" => "[[tiers.t.models]]\nname = \"wide\"\nmatch = [\"gpt-4o*\"]\nrpm = 1\n",
            _ => "[[tiers.t.models]]\nmatch = [\"gpt-4o-mini\"]\nrpm = 100\n",
        };
        let toml = format!(
            "[tiers.t]\nrpm = 1000\n{}{}[[orgs]]\nid = \"acme\"\ntier = \"t\"\n",
            table(order[0]),
            table(order[1])
        );
        let mut t = tracker(&toml);
        call(&mut t, "gpt-4o-mini", T0, 200, "");
        call(&mut t, "gpt-4o-2024-08-06", T0 + 1, 200, "");
        let o = snap(&t, T0 + 2);
        let rpm = |name: &str| {
            let m = o.models.iter().find(|m| &*m.model == name).unwrap();
            m.usage[0].1
        };
        assert_eq!((rpm("gpt-4o-mini"), rpm("wide")), (1, 1), "{order:?}");
    }
    let e = Config::parse(
        "[[tiers.t.models]]\nname = \"x\"\nmatch = [\"a\"]\n[[tiers.t.models]]\nname = \"x\"\nmatch = [\"b\"]\n",
        "dup.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("dup.toml:4:") && e.contains("two model scopes are named \"x\""),
        "{e}"
    );
    let e = Config::parse(
        "[[orgs]]\nid = \"o\"\n[[orgs.models]]\nname = \"b\"\nmatch = [\"a\"]\n[[orgs.models]]\nmatch = [\"b\"]\n",
        "dup.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("two model scopes are named \"b\""), "{e}");
}

#[test]
fn a_source_entry_for_the_scope_name_wins_over_one_for_a_dated_id() {
    let gpt = |rpm_named: u64, rpm_dated: u64, named_first: bool| {
        let named = crate::model::ScopeLimits {
            models: vec!["gpt-4o".into()],
            rpm: Some(rpm_named),
            ..Default::default()
        };
        let dated = crate::model::ScopeLimits {
            models: vec!["gpt-4o-2024-08-06".into()],
            rpm: Some(rpm_dated),
            ..Default::default()
        };
        crate::model::SourcedLimits {
            source: "openai-admin".into(),
            org: "acme".into(),
            scopes: if named_first {
                vec![named, dated]
            } else {
                vec![dated, named]
            },
        }
    };
    for named_first in [true, false] {
        let mut t = tracker(OPENAI);
        t.set_sourced_limits(&gpt(500, 2, named_first), T0, &mut Vec::new());
        let o = snap(&t, T0);
        let scope = o.models.iter().find(|m| &*m.model == "gpt-4o").unwrap();
        assert_eq!(
            scope.limits[0],
            (Dimension::Rpm, 500),
            "named first: {named_first}"
        );
    }
}

#[test]
fn headers_of_a_scoped_model_are_not_held_against_the_org() {
    let mut t = tracker(OPENAI);
    let headers =
        r#","headers":{"x-ratelimit-limit-requests":"3","x-ratelimit-remaining-requests":"2"}"#;
    let out = call(&mut t, "gpt-4o", T0, 200, headers);
    assert!(
        !out.iter().any(|t| t.alert == AlertName::LimitMismatch),
        "gpt-4o's 3 rpm is its scope's, not the org's 100: {out:?}"
    );
    assert!(snap(&t, T0).upstream.is_empty());
    // The same headers on a model in no scope are the org's.
    let out = call(&mut t, "o3", T0 + 1, 200, headers);
    assert!(
        out.iter().any(|t| t.alert == AlertName::LimitMismatch),
        "{out:?}"
    );
}

#[test]
fn a_scope_of_a_calendar_tier_holds_the_25_hour_day() {
    let cfg = r#"
[tiers.gem]
rpm = 1000
daily = 1000
daily_window = "calendar"
daily_timezone = "America/Los_Angeles"
[[tiers.gem.models]]
name = "flash"
match = ["gemini-flash"]
daily = 100

[[orgs]]
id = "acme"
tier = "gem"
"#;
    let at = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    };
    let mut t = tracker(cfg);
    // 2026-11-01 falls back in Los Angeles: that day runs from 07:00Z to 08:00Z on the 2nd,
    // so its first requests are more than 24 h old at its end (found by a black-box test).
    for i in 0..3 {
        call(
            &mut t,
            "gemini-flash",
            at("2026-11-01T07:40:00Z") + i,
            200,
            "",
        );
    }
    call(&mut t, "gemini-flash", at("2026-11-02T07:50:00Z"), 200, "");
    let daily = |o: &OrgSnapshot| {
        let scope = o.models[0].usage.iter().find(|u| u.0 == Dimension::Daily);
        (o.usage_of(Dimension::Daily), scope.map(|u| u.1))
    };
    let o = snap(&t, at("2026-11-02T07:55:00Z"));
    assert_eq!(
        daily(&o),
        (Some(4), Some(4)),
        "the org and its scope count the whole day"
    );
    // Restored, the scope still holds the whole day.
    let back = Tracker::restore(
        &Config::parse(cfg, "scopes.toml").unwrap(),
        &t.encode().unwrap(),
    )
    .unwrap();
    assert_eq!(
        daily(&snap(&back, at("2026-11-02T07:55:00Z"))),
        (Some(4), Some(4))
    );
}
