//! OpenAI: a project's rate limits, per model
//! (`GET /v1/organization/projects/{project_id}/rate_limits`, `Authorization: Bearer`), a
//! list paginated by `after = last_id` while `has_more`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::page::{get, limit, url};
use super::source::{FetchError, MAX_PAGES, Source};
use crate::model::ScopeLimits;

/// One page, as the API reference documents it (unknown fields are kept to log at debug).
#[derive(Deserialize)]
struct Page {
    data: Vec<Entry>,
    has_more: bool,
    #[serde(default)]
    last_id: Option<String>,
}

/// A `project.rate_limit`.
#[derive(Deserialize)]
struct Entry {
    model: String,
    #[serde(default, deserialize_with = "limit")]
    max_requests_per_1_minute: Option<u64>,
    #[serde(default, deserialize_with = "limit")]
    max_tokens_per_1_minute: Option<u64>,
    #[serde(default, deserialize_with = "limit")]
    max_images_per_1_minute: Option<u64>,
    #[serde(default, deserialize_with = "limit")]
    max_requests_per_1_day: Option<u64>,
    #[serde(default, deserialize_with = "limit")]
    batch_1_day_max_input_tokens: Option<u64>,
    /// `object`, `id`, `max_audio_megabytes_per_1_minute` (no dimension here counts audio)
    /// and whatever the API adds later.
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

/// Fields every entry has that carry no limit.
const KNOWN: [&str; 3] = ["object", "id", "max_audio_megabytes_per_1_minute"];

impl Entry {
    fn into_scope(self) -> ScopeLimits {
        let unknown: Vec<&str> = self
            .other
            .keys()
            .map(String::as_str)
            .filter(|k| !KNOWN.contains(k))
            .collect();
        if !unknown.is_empty() {
            tracing::debug!(model = %self.model, fields = ?unknown, "openai rate limit fields not read");
        }
        ScopeLimits {
            models: vec![self.model],
            rpm: self.max_requests_per_1_minute,
            tpm: self.max_tokens_per_1_minute,
            ipm: self.max_images_per_1_minute,
            daily: self.max_requests_per_1_day,
            batch_queue_tokens: self.batch_1_day_max_input_tokens,
            ..ScopeLimits::default()
        }
    }
}

/// Every page of the project's rate limits.
pub(super) async fn fetch(
    client: &reqwest::Client,
    source: &Source,
    project: &str,
) -> Result<Vec<ScopeLimits>, FetchError> {
    let path = format!(
        "/v1/organization/projects/{}/rate_limits",
        crate::outbound::segment(project).map_err(FetchError::Url)?
    );
    let auth = format!("Bearer {}", source.key.expose());
    let headers = [("authorization", auth.as_str())];
    let mut scopes = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut query = vec![("limit", "100")];
        if let Some(a) = &after {
            query.push(("after", a.as_str()));
        }
        let page: Page = get(client, source, url(source, &path, &query)?, &headers).await?;
        scopes.extend(page.data.into_iter().map(Entry::into_scope));
        if !page.has_more {
            return Ok(scopes);
        }
        match page.last_id {
            Some(next) if after.as_ref() != Some(&next) && !next.is_empty() => after = Some(next),
            Some(_) => return Err(FetchError::Pages("last_id did not move".into())),
            None => return Err(FetchError::Malformed("has_more without last_id".into())),
        }
    }
    Err(FetchError::Pages(format!("more than {MAX_PAGES} pages")))
}

/// One page's scopes, for the tests of the parsing.
#[cfg(test)]
fn parse(json: &str) -> Result<Vec<ScopeLimits>, String> {
    let page: Page = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(page.data.into_iter().map(Entry::into_scope).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_shape() {
        let scopes = parse(
            r#"{"object":"list","data":[
                {"object":"project.rate_limit","id":"rl-gpt-4o","model":"gpt-4o",
                 "max_requests_per_1_minute":500,"max_tokens_per_1_minute":30000,
                 "max_requests_per_1_day":10000,"batch_1_day_max_input_tokens":90000},
                {"object":"project.rate_limit","id":"rl-dall-e-3","model":"dall-e-3",
                 "max_requests_per_1_minute":7,"max_tokens_per_1_minute":0,
                 "max_images_per_1_minute":5,"max_audio_megabytes_per_1_minute":3,"new_thing":1}],
             "first_id":"rl-gpt-4o","last_id":"rl-dall-e-3","has_more":false}"#,
        )
        .unwrap();
        assert_eq!(
            scopes,
            [
                ScopeLimits {
                    models: vec!["gpt-4o".into()],
                    rpm: Some(500),
                    tpm: Some(30000),
                    daily: Some(10000),
                    batch_queue_tokens: Some(90000),
                    ..ScopeLimits::default()
                },
                ScopeLimits {
                    models: vec!["dall-e-3".into()],
                    rpm: Some(7),
                    tpm: Some(0),
                    ipm: Some(5),
                    ..ScopeLimits::default()
                }
            ]
        );
    }

    #[test]
    fn malformed_answers_are_errors() {
        for (json, why) in [
            (r#"{"data":[]}"#, "missing field `has_more`"),
            (r#"{"has_more":false}"#, "missing field `data`"),
            (
                r#"{"data":[{"id":"rl"}],"has_more":false}"#,
                "missing field `model`",
            ),
            (
                r#"{"data":[{"model":"m","max_requests_per_1_minute":-1}],"has_more":false}"#,
                "invalid value",
            ),
            (
                r#"{"data":[{"model":"m","max_requests_per_1_minute":9223372036854775808}],"has_more":false}"#,
                "too large",
            ),
            (
                r#"{"data":[{"model":"m","max_tokens_per_1_minute":1e400}],"has_more":false}"#,
                "",
            ),
            (
                r#"{"data":[{"model":"m","max_tokens_per_1_minute":"500"}],"has_more":false}"#,
                "invalid type",
            ),
            ("[]", "expected struct Page"),
            ("<html>", "expected value"),
        ] {
            let e = parse(json).unwrap_err();
            assert!(e.contains(why), "{json}: {e}");
        }
        let max = parse(
            r#"{"data":[{"model":"m","max_requests_per_1_minute":9223372036854775807,"max_tokens_per_1_minute":null}],"has_more":false}"#,
        )
        .unwrap();
        assert_eq!(max[0].rpm, Some(i64::MAX as u64));
        assert_eq!(max[0].tpm, None);
    }
}
