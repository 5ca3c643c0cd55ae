//! One page of an admin API: a GET to a URL under the configured base, the key in a header,
//! the answer read up to [`MAX_BODY_BYTES`] and parsed as JSON.

use reqwest::Url;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::source::{FetchError, MAX_BODY_BYTES, Source};
use crate::outbound::{Base, Secrets, error_text};

/// The URL of `path` under the source's base URL, with `query` pairs (values encoded, so a
/// cursor from an answer cannot add a parameter or move the request).
pub(super) fn url(source: &Source, path: &str, query: &[(&str, &str)]) -> Result<Url, FetchError> {
    let base = Base::parse(&source.config.base_url).map_err(FetchError::Url)?;
    let mut url = base.url(path).map_err(FetchError::Url)?;
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

/// GETs `url` with `headers` (the key among them) and parses the answer as `T`.
pub(super) async fn get<T: DeserializeOwned>(
    client: &reqwest::Client,
    source: &Source,
    url: Url,
    headers: &[(&str, &str)],
) -> Result<T, FetchError> {
    let secrets = Secrets::default().with(source.key.expose());
    let timeout = std::time::Duration::from_millis(source.config.timeout_ms.max(1) as u64);
    let mut req = client.get(url).timeout(timeout);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let mut resp = req
        .send()
        .await
        .map_err(|e| FetchError::Request(secrets.scrub(&error_text(&e))))?;
    let status = resp.status();
    if !status.is_success() {
        // Scrubbed before it is cut to 256 bytes, so that no part of a key echoed across the
        // cut can remain.
        let body = crate::outbound::read_body(resp, 64 << 10, &secrets).await;
        let mut end = body.len().min(256);
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        return Err(FetchError::Status {
            status: status.as_u16(),
            body: body[..end].trim().to_string(),
        });
    }
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(FetchError::TooLarge);
    }
    // Not outbound::read_body: that one keeps what arrived when a body fails half-way (right
    // for quoting an error), while a page cut short must fail the poll as what it is.
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(FetchError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(FetchError::Request(secrets.scrub(&error_text(&e)))),
        }
    }
    serde_json::from_slice(&body).map_err(|e| FetchError::Malformed(secrets.scrub(&e.to_string())))
}

/// A limit value: a non-negative integer up to 2^63 − 1 (what a gauge shows without turning
/// negative), or absent/null.
pub(super) fn limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Option::<u64>::deserialize(d)?;
    if let Some(n) = v
        && i64::try_from(n).is_err()
    {
        return Err(serde::de::Error::custom(format!(
            "limit {n} is too large (at most {})",
            i64::MAX
        )));
    }
    Ok(v)
}
