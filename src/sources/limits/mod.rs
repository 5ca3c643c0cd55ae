//! Limit sources (`[[limit_sources]]`): a provider's admin API polled for the rate limits it
//! has set, so that the limits in force are the provider's (SPEC §5's limits, "from the
//! source"). OpenAI states a project's limits per model (`openai`), Anthropic the
//! organization's or a workspace's per model group (`anthropic`).
//!
//! [`fetch`] reads every page of one source into a [`SourcedLimits`]; [`run`] polls each
//! source at start and every `interval`, hands every success to a sink (which puts the
//! limits in force), logs and counts what changed, and feeds
//! [`crate::detect::source::SourceHealth`], whose `LimitSourceFailing` transitions it hands
//! to a second sink. A failed poll changes no limit: the last good ones stay in force.
//!
//! The admin key is read once ([`Source::from_env`]), sent only to the configured base URL
//! (every page's URL is built from it, a cursor goes in as a query value) and never put in an
//! error, a log line, a metric or a stored record: [`AdminKey`]'s `Debug` is `[redacted]`,
//! and what a server answers is scrubbed of it before it is quoted.
//!
//! [`SourcedLimits`]: crate::model::SourcedLimits

mod anthropic;
mod openai;
mod page;
mod poll;
mod source;

pub use poll::{Change, Poller, changes, fetch, run};
pub use source::{AdminKey, FetchError, MAX_BODY_BYTES, MAX_PAGES, Source};
