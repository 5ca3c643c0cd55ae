//! Anthropic: the organization's rate limits (`GET /v1/organizations/rate_limits`) or a
//! workspace's (`GET /v1/organizations/workspaces/{workspace_id}/rate_limits`, with
//! `include_inherited=true` so that the limits in force are listed, not only the
//! workspace's overrides), `x-api-key` and `anthropic-version` headers, one entry per
//! rate-limit group, paginated by `page = next_page` while `next_page` is set.
//!
//! Only `model_group` entries become scopes: the other groups (`batch`, `files`,
//! `web_search`, …) limit API surfaces rather than models.

use serde::Deserialize;

use super::page::{get, limit, url};
use super::source::{FetchError, MAX_PAGES, Source};
use crate::config::LimitScope;
use crate::model::ScopeLimits;

/// The API version the shapes below are documented for.
const VERSION: &str = "2023-06-01";

/// One page.
#[derive(Deserialize)]
struct Page {
    data: Vec<Entry>,
    #[serde(default)]
    next_page: Option<String>,
    /// Not documented for these endpoints (the cursor alone says), read if sent.
    #[serde(default)]
    has_more: Option<bool>,
}

/// A `rate_limit` (organization) or `workspace_rate_limit` entry.
#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    group: Option<Group>,
    /// Deprecated in favour of `group.type`, which it equals.
    #[serde(default)]
    group_type: Option<String>,
    #[serde(default)]
    models: Option<Vec<String>>,
    limits: Vec<Limit>,
}

#[derive(Deserialize)]
struct Group {
    #[serde(rename = "type")]
    kind: String,
}

/// One limiter value (a workspace's also carry `org_limit` and `source`, not needed: with
/// `include_inherited` the value is the one in force).
#[derive(Deserialize)]
struct Limit {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, deserialize_with = "limit")]
    value: Option<u64>,
}

impl Entry {
    /// The scope of a `model_group` entry; `None` for other groups.
    fn into_scope(self) -> Result<Option<ScopeLimits>, FetchError> {
        let group = self
            .group
            .map(|g| g.kind)
            .or(self.group_type)
            .ok_or_else(|| FetchError::Malformed("an entry has no group type".into()))?;
        if group != "model_group" {
            tracing::debug!(group = %group, "anthropic rate limit group not read (not a model group)");
            return Ok(None);
        }
        let mut scope = ScopeLimits {
            models: self.models.unwrap_or_default(),
            ..ScopeLimits::default()
        };
        for l in self.limits {
            let slot = match l.kind.as_str() {
                "requests_per_minute" => &mut scope.rpm,
                "input_tokens_per_minute" => &mut scope.itpm,
                "output_tokens_per_minute" => &mut scope.otpm,
                "tokens_per_minute" => &mut scope.tpm,
                other => {
                    tracing::debug!(limit = %other, models = ?scope.models, "anthropic limiter type not read");
                    continue;
                }
            };
            *slot = l.value;
        }
        Ok(Some(scope))
    }
}

/// Every page of the organization's or workspace's rate limits.
pub(super) async fn fetch(
    client: &reqwest::Client,
    source: &Source,
) -> Result<Vec<ScopeLimits>, FetchError> {
    let (path, inherited) = match &source.config.scope {
        LimitScope::Workspace(w) => (
            format!(
                "/v1/organizations/workspaces/{}/rate_limits",
                crate::outbound::segment(w).map_err(FetchError::Url)?
            ),
            true,
        ),
        _ => ("/v1/organizations/rate_limits".to_string(), false),
    };
    let headers = [
        ("x-api-key", source.key.expose()),
        ("anthropic-version", VERSION),
    ];
    let mut scopes = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut query = vec![("limit", "100")];
        if inherited {
            query.push(("include_inherited", "true"));
        }
        if let Some(c) = &cursor {
            query.push(("page", c.as_str()));
        }
        let page: Page = get(client, source, url(source, &path, &query)?, &headers).await?;
        for entry in page.data {
            scopes.extend(entry.into_scope()?);
        }
        match page.next_page {
            Some(next) if page.has_more != Some(false) && !next.is_empty() => {
                if cursor.as_ref() == Some(&next) {
                    return Err(FetchError::Pages("next_page did not move".into()));
                }
                cursor = Some(next);
            }
            _ => return Ok(scopes),
        }
    }
    Err(FetchError::Pages(format!("more than {MAX_PAGES} pages")))
}

/// One page's scopes, for the tests of the parsing.
#[cfg(test)]
fn parse(json: &str) -> Result<Vec<ScopeLimits>, String> {
    let page: Page = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for e in page.data {
        out.extend(e.into_scope().map_err(|e| e.to_string())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_shapes() {
        let org = parse(
            r#"{"data":[
                {"type":"rate_limit","id":"rl_1","group":{"type":"model_group"},"group_type":"model_group",
                 "models":["claude-sonnet-4-5","claude-sonnet-4-5-20250929"],
                 "limits":[{"type":"requests_per_minute","value":4000},
                           {"type":"input_tokens_per_minute","value":2000000},
                           {"type":"output_tokens_per_minute","value":400000},
                           {"type":"cache_reads_per_minute","value":9}]},
                {"type":"rate_limit","id":"rl_2","group":{"type":"batch"},"models":null,
                 "limits":[{"type":"requests_per_minute","value":4000}]}],
             "next_page":null}"#,
        )
        .unwrap();
        assert_eq!(
            org,
            [ScopeLimits {
                models: vec![
                    "claude-sonnet-4-5".into(),
                    "claude-sonnet-4-5-20250929".into()
                ],
                rpm: Some(4000),
                itpm: Some(2_000_000),
                otpm: Some(400_000),
                ..ScopeLimits::default()
            }]
        );
        let workspace = parse(
            r#"{"data":[{"type":"workspace_rate_limit","rate_limit_id":"rl_1","workspace_id":"wrkspc_1",
                "group":{"type":"model_group"},"models":["claude-haiku-4-5"],
                "limits":[{"type":"requests_per_minute","value":50,"org_limit":4000,"source":{"type":"workspace"}},
                          {"type":"output_tokens_per_minute","value":null,"org_limit":null,"source":{"type":"organization"}}]}],
              "next_page":"page_2"}"#,
        )
        .unwrap();
        assert_eq!(workspace[0].rpm, Some(50));
        assert_eq!(workspace[0].otpm, None);
        // The deprecated group_type alone is read too.
        let old =
            parse(r#"{"data":[{"group_type":"model_group","models":["m"],"limits":[]}]}"#).unwrap();
        assert_eq!(old[0].models, ["m"]);
    }

    #[test]
    fn malformed_answers_are_errors() {
        for (json, why) in [
            (r#"{"next_page":null}"#, "missing field `data`"),
            (
                r#"{"data":[{"group":{"type":"model_group"}}]}"#,
                "missing field `limits`",
            ),
            (r#"{"data":[{"models":[],"limits":[]}]}"#, "no group type"),
            (
                r#"{"data":[{"group_type":"model_group","limits":[{"value":1}]}]}"#,
                "missing field `type`",
            ),
            (
                r#"{"data":[{"group_type":"model_group","limits":[{"type":"requests_per_minute","value":18446744073709551616}]}]}"#,
                "",
            ),
            (
                r#"{"data":[{"group_type":"model_group","limits":[{"type":"requests_per_minute","value":1.5}]}]}"#,
                "invalid type",
            ),
            (r#"{"data":{}}"#, "invalid type"),
        ] {
            let e = parse(json).unwrap_err();
            assert!(e.contains(why), "{json}: {e}");
        }
    }
}
