//! `[[limit_sources]]`: a provider's admin API that states an org's rate limits (OpenAI
//! project rate limits, Anthropic organization or workspace rate limits), polled so that the
//! limits in force follow the provider's instead of drifting from a hand-written tier.
//!
//! The admin key is never in the file nor in [`Config`](super::Config): `admin_key_env` names
//! the variable, read once when the poller starts ([`LimitSource::admin_key`]); `run` refuses
//! to start while it is unset and `check-config` warns, as for every other `*_env` secret.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::channels::SecretRef;
use super::check::{Spanned2, at, request_timeout};
use super::duration::HumanDuration;
use crate::model::{OVERFLOW, valid_given_name, valid_name};

/// Which provider's admin API a limit source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitSourceKind {
    /// OpenAI: a project's rate limits, per model.
    Openai,
    /// Anthropic: the organization's (or a workspace's) rate limits, per model group.
    Anthropic,
}

impl LimitSourceKind {
    /// As written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitSourceKind::Openai => "openai",
            LimitSourceKind::Anthropic => "anthropic",
        }
    }

    /// Where limits from this kind come from, as `/v1/usage`, `status`, `check-config` and
    /// the `source` label show it.
    pub fn source_name(self) -> &'static str {
        match self {
            LimitSourceKind::Openai => "openai-admin",
            LimitSourceKind::Anthropic => "anthropic-admin",
        }
    }

    /// The provider's public API, the default `base_url`.
    pub fn default_base_url(self) -> &'static str {
        match self {
            LimitSourceKind::Openai => "https://api.openai.com",
            LimitSourceKind::Anthropic => "https://api.anthropic.com",
        }
    }
}

/// Whose limits a source asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitScope {
    /// An OpenAI project (`project_id`).
    Project(String),
    /// The whole Anthropic organization the admin key belongs to.
    Organization,
    /// One Anthropic workspace (`workspace_id`): its overrides and what it inherits.
    Workspace(String),
}

/// One validated `[[limit_sources]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSource {
    /// The provider.
    pub kind: LimitSourceKind,
    /// The environment variable holding the admin key (its name only: the key itself is read
    /// when the poller starts and kept nowhere in the config).
    pub admin_key_env: String,
    /// Whose limits.
    pub scope: LimitScope,
    /// The ratewarden org the limits apply to.
    pub org: String,
    /// The API's base URL, without a trailing `/` (tests point it at a fake).
    pub base_url: String,
    /// Time between polls, ms (at least 5 s).
    pub interval_ms: i64,
    /// `LimitSourceFailing` fires once no poll succeeded for this long, ms.
    pub failing_after_ms: i64,
    /// Time allowed for one request (one page), ms.
    pub timeout_ms: i64,
}

impl LimitSource {
    /// The admin key's reference, for [`SecretRef::read`] and the missing-secrets check.
    pub fn admin_key(&self) -> SecretRef {
        SecretRef::Env(self.admin_key_env.clone())
    }

    /// "openai-admin for org acme", for messages.
    pub fn describe(&self) -> String {
        format!("{} for org {}", self.kind.source_name(), self.org)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimitSource {
    kind: LimitSourceKind,
    admin_key_env: Spanned<String>,
    project_id: Option<Spanned<String>>,
    workspace_id: Option<Spanned<String>>,
    org: Spanned<String>,
    base_url: Option<Spanned<String>>,
    #[serde(default = "default_interval")]
    interval: Spanned<HumanDuration>,
    #[serde(default = "default_failing_after")]
    failing_after: Spanned<HumanDuration>,
    #[serde(default = "default_timeout")]
    timeout: Spanned<HumanDuration>,
}

fn minutes(m: u64) -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(std::time::Duration::from_secs(m * 60)))
}

fn default_interval() -> Spanned<HumanDuration> {
    minutes(60)
}

fn default_failing_after() -> Spanned<HumanDuration> {
    minutes(180)
}

fn default_timeout() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(std::time::Duration::from_secs(30)))
}

/// A project or workspace id: it becomes one path segment of the request.
fn scope_id(id: &Spanned<String>, what: &str) -> Result<String, Spanned2> {
    let v = id.get_ref();
    if !valid_name(v) || v.trim().is_empty() || matches!(v.as_str(), "." | "..") {
        return Err(at(
            id.span(),
            format!("{what} must be 1-128 printable characters"),
        ));
    }
    Ok(v.clone())
}

impl RawLimitSource {
    pub(super) fn org_span(&self) -> Range<usize> {
        self.org.span()
    }

    pub(super) fn validate(&self, whole: Range<usize>) -> Result<LimitSource, Spanned2> {
        let var = self.admin_key_env.get_ref().trim();
        if var.is_empty() || var.contains('=') || var.contains('\0') {
            return Err(at(
                self.admin_key_env.span(),
                "admin_key_env must name an environment variable (the admin key is never written in the file)",
            ));
        }
        let scope = match (self.kind, &self.project_id, &self.workspace_id) {
            (LimitSourceKind::Openai, Some(p), None) => {
                LimitScope::Project(scope_id(p, "project_id")?)
            }
            (LimitSourceKind::Openai, None, _) => {
                return Err(at(
                    whole,
                    "kind = \"openai\" needs project_id (the project whose rate limits are read)",
                ));
            }
            (LimitSourceKind::Openai, Some(_), Some(w)) => {
                return Err(at(
                    w.span(),
                    "workspace_id is for kind = \"anthropic\"; OpenAI limits are per project_id",
                ));
            }
            (LimitSourceKind::Anthropic, Some(p), _) => {
                return Err(at(
                    p.span(),
                    "project_id is for kind = \"openai\"; Anthropic limits are the organization's or a workspace_id's",
                ));
            }
            (LimitSourceKind::Anthropic, None, None) => LimitScope::Organization,
            (LimitSourceKind::Anthropic, None, Some(w)) => {
                LimitScope::Workspace(scope_id(w, "workspace_id")?)
            }
        };
        let org = self.org.get_ref();
        if !valid_given_name(org) {
            return Err(at(
                self.org.span(),
                format!("org must be 1-128 printable characters (and not {OVERFLOW})"),
            ));
        }
        let base_url = match &self.base_url {
            None => self.kind.default_base_url().to_string(),
            Some(u) => {
                if let Err(why) = crate::outbound::Base::parse(u.get_ref()) {
                    return Err(at(
                        u.span(),
                        format!("base_url {} {why}", crate::outbound::redact(u.get_ref())),
                    ));
                }
                u.get_ref().trim_end_matches('/').to_string()
            }
        };
        let interval_ms = self.interval.get_ref().as_millis_i64();
        if interval_ms < 5_000 {
            return Err(at(
                self.interval.span(),
                "interval must be at least 5s (admin APIs are not for tight loops; the default is 1h)",
            ));
        }
        let failing_after_ms = self.failing_after.get_ref().as_millis_i64();
        if failing_after_ms < interval_ms {
            return Err(at(
                self.failing_after.span(),
                "failing_after must not be shorter than interval (it would fire between two good polls)",
            ));
        }
        Ok(LimitSource {
            kind: self.kind,
            admin_key_env: var.to_string(),
            scope,
            org: org.clone(),
            base_url,
            interval_ms,
            failing_after_ms,
            timeout_ms: request_timeout(&self.timeout)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, "t.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_per_kind() {
        let c = parse(
            "[[limit_sources]]\nkind = \"openai\"\nadmin_key_env = \"OPENAI_ADMIN_KEY\"\nproject_id = \"proj_1\"\norg = \"acme\"\n\n\
             [[limit_sources]]\nkind = \"anthropic\"\nadmin_key_env = \"ANTHROPIC_ADMIN_KEY\"\norg = \"acme\"\n",
        )
        .unwrap();
        let [o, a] = &c.limit_sources[..] else {
            panic!("two sources: {:?}", c.limit_sources)
        };
        assert_eq!(o.scope, LimitScope::Project("proj_1".into()));
        assert_eq!(o.base_url, "https://api.openai.com");
        assert_eq!(
            (o.interval_ms, o.failing_after_ms, o.timeout_ms),
            (3_600_000, 10_800_000, 30_000)
        );
        assert_eq!(a.scope, LimitScope::Organization);
        assert_eq!(a.base_url, "https://api.anthropic.com");
        assert_eq!(a.kind.source_name(), "anthropic-admin");
        let summary = c.summary();
        assert!(
            summary.contains("limits of org acme: source openai-admin (project proj_1"),
            "{summary}"
        );
        let missing = c.missing_secrets();
        assert!(
            missing.iter().any(
                |(who, what, why)| who == "limit source openai-admin for org acme"
                    && *what == "admin key"
                    && why.contains("$OPENAI_ADMIN_KEY")
            ),
            "{missing:?}"
        );
    }

    #[test]
    fn workspace_base_url_and_durations() {
        let c = parse(
            "[[limit_sources]]\nkind = \"anthropic\"\nadmin_key_env = \"K\"\nworkspace_id = \"wrkspc_1\"\norg = \"acme\"\n\
             base_url = \"http://127.0.0.1:9/\"\ninterval = \"5m\"\nfailing_after = \"15m\"\ntimeout = \"2s\"\n",
        )
        .unwrap();
        let l = &c.limit_sources[0];
        assert_eq!(l.scope, LimitScope::Workspace("wrkspc_1".into()));
        assert_eq!(l.base_url, "http://127.0.0.1:9");
        assert_eq!(
            (l.interval_ms, l.failing_after_ms, l.timeout_ms),
            (300_000, 900_000, 2_000)
        );
    }

    #[test]
    fn errors_are_placed_and_name_no_value() {
        let head = "[[limit_sources]]\nkind = \"openai\"\nadmin_key_env = \"K\"\norg = \"acme\"\n";
        let cases: [(String, &str); 10] = [
            (head.to_string(), "t.toml:1:1: kind = \"openai\" needs project_id"),
            (format!("{head}project_id = \"p\"\nworkspace_id = \"w\"\n"), "t.toml:6:16: workspace_id is for kind = \"anthropic\""),
            (format!("{head}project_id = \"\"\n"), "t.toml:5:14: project_id must be 1-128"),
            (format!("{head}project_id = \"p\"\ninterval = \"2s\"\n"), "t.toml:6:12: interval must be at least 5s"),
            (format!("{head}project_id = \"p\"\nfailing_after = \"30m\"\n"), "t.toml:6:17: failing_after must not be shorter than interval"),
            (format!("{head}project_id = \"p\"\nbase_url = \"ftp://x\"\n"), "t.toml:6:12: base_url"),
            (format!("{head}project_id = \"p\"\ntimeout = \"0s\"\n"), "t.toml:6:11: timeout must be at least 100ms"),
            (format!("{head}project_id = \"p\"\nadmin_key = \"sk-admin-x\"\n"), "t.toml:6:1: unknown field `admin_key`"),
            (
                "[[limit_sources]]\nkind = \"google\"\nadmin_key_env = \"K\"\norg = \"acme\"\n".into(),
                "t.toml:2:8: unknown variant `google`",
            ),
            (
                "[[limit_sources]]\nkind = \"openai\"\nadmin_key_env = \" \"\nproject_id = \"p\"\norg = \"acme\"\n".into(),
                "t.toml:3:17: admin_key_env must name an environment variable",
            ),
        ];
        for (text, want) in cases {
            let e = parse(&text).unwrap_err();
            assert!(e.starts_with(want), "{text}\n=> {e}\nwanted {want}");
        }
        let e = parse("[[limit_sources]]\nkind = \"anthropic\"\nadmin_key_env = \"K\"\nproject_id = \"p\"\norg = \"acme\"\n")
            .unwrap_err();
        assert!(
            e.starts_with("t.toml:4:14: project_id is for kind = \"openai\""),
            "{e}"
        );
        let e = parse("[[limit_sources]]\nkind = \"openai\"\nadmin_key_env = \"K\"\nproject_id = \"p\"\norg = \"__overflow__\"\n")
            .unwrap_err();
        assert!(e.starts_with("t.toml:5:7: org must be"), "{e}");
    }

    #[test]
    fn one_org_takes_one_source_of_a_kind() {
        let one =
            "[[limit_sources]]\nkind = \"anthropic\"\nadmin_key_env = \"K\"\norg = \"acme\"\n";
        let e = parse(&format!("{one}{one}")).unwrap_err();
        assert!(
            e.starts_with("t.toml:8:7: org \"acme\" has two anthropic limit sources"),
            "{e}"
        );
        let other =
            "[[limit_sources]]\nkind = \"anthropic\"\nadmin_key_env = \"K\"\norg = \"globex\"\n";
        assert!(parse(&format!("{one}{other}")).is_ok());
    }
}
