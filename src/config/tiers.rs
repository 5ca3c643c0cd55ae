//! `[tiers.*]` and `[[orgs]]` as written: the limits both may set, the daily window among
//! them (`daily_window`, `daily_reset`, `daily_timezone`), and the built-in tier presets.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::check::{Spanned2, at, limit};
use crate::model::{DailyWindow, Limits, ModelScope};

/// Declares a table that holds the limits (`rpm`, `concurrency`, `daily`, `tpm`, `tpd`, `ipm`,
/// `itpm`, `otpm`, `batch_queue_tokens`, each optional) and the daily window after its own fields. Tiers and orgs share them;
/// serde's `flatten` would say it once but cannot be combined with `deny_unknown_fields`.
macro_rules! with_limits {
    ($(#[$attr:meta])* struct $name:ident { $($own:tt)* }) => {
        $(#[$attr])*
        pub(super) struct $name {
            $($own)*
            #[serde(default, deserialize_with = "limit")]
            rpm: Option<u64>,
            #[serde(default, deserialize_with = "limit")]
            concurrency: Option<u64>,
            #[serde(default, deserialize_with = "limit")]
            daily: Option<u64>,
            #[serde(default, deserialize_with = "limit")]
            tpm: Option<u64>,
            #[serde(default, deserialize_with = "limit")]
            tpd: Option<u64>,
            #[serde(default, deserialize_with = "limit")]
            ipm: Option<u64>,
            #[serde(default, deserialize_with = "limit")]
            itpm: Option<u64>,
            #[serde(default, deserialize_with = "limit")]
            otpm: Option<u64>,
            #[serde(default, deserialize_with = "limit")]
            batch_queue_tokens: Option<u64>,
            /// `"rolling"` (the last 24 h) or `"calendar"` (since the last `daily_reset`).
            daily_window: Option<Spanned<String>>,
            /// `"HH:MM"`, local time of `daily_timezone`; calendar windows only.
            daily_reset: Option<Spanned<String>>,
            /// An IANA zone name; calendar windows only.
            daily_timezone: Option<Spanned<String>>,
        }

        impl $name {
            /// The limits this table sets, as a tier table without model scopes.
            // A tier's own copy of itself is never asked for.
            #[allow(dead_code)]
            pub(super) fn limit_fields(&self) -> RawTier {
                RawTier {
                    rpm: self.rpm,
                    concurrency: self.concurrency,
                    daily: self.daily,
                    tpm: self.tpm,
                    tpd: self.tpd,
                    ipm: self.ipm,
                    itpm: self.itpm,
                    otpm: self.otpm,
                    batch_queue_tokens: self.batch_queue_tokens,
                    daily_window: self.daily_window.clone(),
                    daily_reset: self.daily_reset.clone(),
                    daily_timezone: self.daily_timezone.clone(),
                    models: Vec::new(),
                }
            }
        }
    };
}

with_limits! {
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct RawTier {
        /// Per-model scopes.
        #[serde(default)]
        pub(super) models: Vec<Spanned<RawModel>>,
    }
}

with_limits! {
    /// `[[tiers.NAME.models]]` / `[[orgs.models]]`: the limits of one model or model group.
    #[derive(Deserialize, Default, Clone)]
    #[serde(deny_unknown_fields)]
    struct RawModel {
        /// Model ids and aliases (a trailing `*` matches a prefix).
        #[serde(rename = "match")]
        pub(super) matches: Option<Spanned<Vec<String>>>,
        /// The `model` label; default the first id of `match`.
        pub(super) name: Option<Spanned<String>>,
    }
}

impl RawModel {
    /// The scope this table describes, over `base` (the same scope of the tier, or none:
    /// unlimited, the daily window `window`'s).
    fn scope(
        &self,
        span: std::ops::Range<usize>,
        base: Option<&ModelScope>,
        window: DailyWindow,
    ) -> Result<ModelScope, Spanned2> {
        if self.concurrency.is_some() {
            return Err(at(
                span,
                "concurrency is the org's: a model scope limits rpm, daily, tpm, tpd, ipm, itpm, otpm and batch_queue_tokens",
            ));
        }
        let models: Vec<Box<str>> = match (&self.matches, base) {
            (Some(m), _) => {
                if m.get_ref().is_empty() {
                    return Err(at(m.span(), "match must list at least one model id"));
                }
                for id in m.get_ref() {
                    let bare = id.strip_suffix('*').unwrap_or(id);
                    if bare.is_empty()
                        || bare.contains('*')
                        || id.len() > 256
                        || id.chars().any(char::is_control)
                    {
                        return Err(at(
                            m.span(),
                            format!("{id:?} is not a model id (a trailing * matches a prefix)"),
                        ));
                    }
                }
                m.get_ref().iter().map(|id| id.as_str().into()).collect()
            }
            (None, Some(b)) => b.models.clone(),
            (None, None) => {
                return Err(at(span, "a model scope needs match = [\"model-id\", ...]"));
            }
        };
        let name: std::sync::Arc<str> = match (&self.name, base) {
            (Some(n), _) => {
                if !crate::model::valid_name(n.get_ref()) {
                    return Err(at(
                        n.span(),
                        "a model scope's name has 1-128 printable characters",
                    ));
                }
                n.get_ref().as_str().into()
            }
            (None, Some(b)) => b.name.clone(),
            (None, None) => models[0].trim_end_matches('*').into(),
        };
        let limits = self.limit_fields().apply(base.map_or(
            Limits {
                daily_window: window,
                ..Limits::default()
            },
            |b| b.limits,
        ))?;
        Ok(ModelScope {
            name,
            models,
            limits,
            source: None,
            sourced: Vec::new(),
        })
    }

    /// The name this table gives or keeps, for matching an org's scope with its tier's.
    fn key(&self) -> Option<String> {
        match (&self.name, &self.matches) {
            (Some(n), _) => Some(n.get_ref().clone()),
            (None, Some(m)) => m
                .get_ref()
                .first()
                .map(|id| id.trim_end_matches('*').to_string()),
            (None, None) => None,
        }
    }
}

/// The model scopes of `tables` over `base` (the tier's, for an org): a table whose name
/// (or first id) is one of `base`'s changes that scope, any other adds one. Two scopes of one
/// tier or org must not share a name, and a model id must not be in two.
pub(super) fn model_scopes(
    tables: &[Spanned<RawModel>],
    base: &[ModelScope],
    window: DailyWindow,
) -> Result<Vec<ModelScope>, Spanned2> {
    let mut out: Vec<ModelScope> = base.to_vec();
    // The scopes these tables defined or changed: a second table of the same name is an
    // error, not a change (only the tier's scopes are changed by an org's).
    let mut own: Vec<usize> = Vec::new();
    for t in tables {
        let raw = t.get_ref();
        let existing = raw
            .key()
            .and_then(|k| out.iter().position(|s| *s.name == *k));
        if let Some(i) = existing.filter(|i| own.contains(i)) {
            return Err(at(
                t.span(),
                format!(
                    "two model scopes are named {:?} (a scope's name is its `name`, else its first id)",
                    out[i].name
                ),
            ));
        }
        let scope = raw.scope(t.span(), existing.map(|i| &out[i]), window)?;
        let others = |m: &str| {
            out.iter()
                .enumerate()
                .any(|(j, s)| Some(j) != existing && s.models.iter().any(|x| **x == *m))
        };
        if let Some(dup) = scope.models.iter().find(|m| others(m)) {
            return Err(at(t.span(), format!("model {dup:?} is in two scopes")));
        }
        match existing {
            Some(i) => {
                out[i] = scope;
                own.push(i);
            }
            None => {
                out.push(scope);
                own.push(out.len() - 1);
            }
        }
    }
    if out.len() > MAX_MODEL_SCOPES {
        return Err(at(
            tables.last().map_or(0..0, |t| t.span()),
            format!("at most {MAX_MODEL_SCOPES} model scopes per tier or org"),
        ));
    }
    Ok(out)
}

/// Model scopes one tier or org may have: each is a set of windows and a `model` label
/// value per org, so the count is the cardinality an operator signs up for.
pub const MAX_MODEL_SCOPES: usize = 64;

impl RawTier {
    /// `base` with what this table sets.
    pub(super) fn apply(&self, base: Limits) -> Result<Limits, Spanned2> {
        Ok(Limits {
            rpm: self.rpm.unwrap_or(base.rpm),
            concurrency: self.concurrency.unwrap_or(base.concurrency),
            daily: self.daily.unwrap_or(base.daily),
            tpm: self.tpm.unwrap_or(base.tpm),
            tpd: self.tpd.unwrap_or(base.tpd),
            ipm: self.ipm.unwrap_or(base.ipm),
            itpm: self.itpm.unwrap_or(base.itpm),
            otpm: self.otpm.unwrap_or(base.otpm),
            batch_queue_tokens: self.batch_queue_tokens.unwrap_or(base.batch_queue_tokens),
            daily_window: self.daily_window(base.daily_window)?,
        })
    }

    /// The daily window: the one this table names, with the reset and zone it gives or, for
    /// those it leaves out, `base`'s (else midnight UTC).
    fn daily_window(&self, base: DailyWindow) -> Result<DailyWindow, Spanned2> {
        let calendar = match &self.daily_window {
            None => !matches!(base, DailyWindow::Rolling),
            Some(w) => match w.get_ref().as_str() {
                "rolling" => false,
                "calendar" => true,
                other => {
                    return Err(at(
                        w.span(),
                        format!("daily_window must be \"rolling\" or \"calendar\", not {other:?}"),
                    ));
                }
            },
        };
        let (base_tz, base_minute) = match base {
            DailyWindow::Calendar { tz, reset_minute } => (tz, reset_minute),
            DailyWindow::Rolling => (chrono_tz::UTC, 0),
        };
        if !calendar {
            if let Some(s) = self.daily_reset.as_ref().or(self.daily_timezone.as_ref()) {
                return Err(at(
                    s.span(),
                    "daily_reset and daily_timezone apply to daily_window = \"calendar\" only",
                ));
            }
            return Ok(DailyWindow::Rolling);
        }
        let reset_minute = match &self.daily_reset {
            None => base_minute,
            Some(r) => reset_minute(r.get_ref()).ok_or_else(|| {
                at(
                    r.span(),
                    format!(
                        "daily_reset must be a local time \"HH:MM\" (00:00 to 23:59), not {:?}",
                        r.get_ref()
                    ),
                )
            })?,
        };
        let tz = match &self.daily_timezone {
            None => base_tz,
            Some(z) => z.get_ref().parse::<chrono_tz::Tz>().map_err(|_| {
                at(
                    z.span(),
                    format!("daily_timezone {:?} is not an IANA time zone (e.g. \"America/Los_Angeles\")", z.get_ref()),
                )
            })?,
        };
        Ok(DailyWindow::Calendar { tz, reset_minute })
    }
}

/// Minutes past midnight of `"HH:MM"`.
fn reset_minute(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && s.trim().len() == 5).then_some(h * 60 + m)
}

with_limits! {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawOrg {
        pub(super) id: Spanned<String>,
        pub(super) tier: Option<Spanned<String>>,
        /// `UsageHigh` thresholds of this org, instead of `[alerts] thresholds`.
        pub(super) thresholds: Option<Spanned<Vec<f64>>>,
        /// Per-model scopes over its tier's.
        #[serde(default)]
        pub(super) models: Vec<Spanned<RawModel>>,
    }
}

impl RawOrg {
    /// The limits this org sets over its tier's.
    pub(super) fn overrides(&self) -> RawTier {
        self.limit_fields()
    }
}

/// Built-in tier presets (SPEC §3).
pub(super) fn presets() -> BTreeMap<String, Limits> {
    let mut m = BTreeMap::new();
    m.insert(
        "plus".to_string(),
        Limits {
            rpm: 5,
            concurrency: 1,
            ..Limits::default()
        },
    );
    m.insert(
        "pro".to_string(),
        Limits {
            rpm: 50,
            concurrency: 5,
            ..Limits::default()
        },
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(toml: &str) -> Result<Config, String> {
        Config::parse(toml, "t.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn calendar_windows_inherit_and_override() {
        let c = parse(
            "[tiers.gemini]\nrpm = 10\ndaily = 250\ndaily_window = \"calendar\"\ndaily_timezone = \"America/Los_Angeles\"\n\
             [[orgs]]\nid = \"a\"\ntier = \"gemini\"\n\
             [[orgs]]\nid = \"b\"\ntier = \"gemini\"\ndaily_reset = \"06:30\"\n\
             [[orgs]]\nid = \"c\"\ntier = \"gemini\"\ndaily_window = \"rolling\"\n",
        )
        .unwrap();
        let la = chrono_tz::America::Los_Angeles;
        let w: Vec<DailyWindow> = c.orgs.iter().map(|o| o.limits.daily_window).collect();
        assert_eq!(
            w,
            [
                DailyWindow::Calendar {
                    tz: la,
                    reset_minute: 0
                },
                DailyWindow::Calendar {
                    tz: la,
                    reset_minute: 390
                },
                DailyWindow::Rolling,
            ]
        );
        assert_eq!(c.tiers["plus"].daily_window, DailyWindow::Rolling);
    }

    #[test]
    fn calendar_mistakes_are_positioned() {
        let e = parse("[tiers.t]\ndaily_window = \"weekly\"\n").unwrap_err();
        assert!(
            e.contains("t.toml:2:") && e.contains("\"rolling\" or \"calendar\""),
            "{e}"
        );
        let e =
            parse("[tiers.t]\ndaily_window = \"calendar\"\ndaily_timezone = \"Mars/Olympus\"\n")
                .unwrap_err();
        assert!(e.contains("t.toml:3:") && e.contains("IANA"), "{e}");
        let e =
            parse("[tiers.t]\ndaily_window = \"calendar\"\ndaily_reset = \"24:00\"\n").unwrap_err();
        assert!(e.contains("t.toml:3:") && e.contains("HH:MM"), "{e}");
        let e = parse("[tiers.t]\ndaily_reset = \"01:00\"\n").unwrap_err();
        assert!(e.contains("calendar\" only"), "{e}");
    }
}
