//! `replay --html`: one self-contained HTML file: an overview table, then per org its usage
//! over time against the limit (rpm and the rolling 24 h), 429s over time by cause, bursts
//! and stuck jobs marked, and its alert timeline.
//!
//! The charts are drawn in the browser by uPlot (vendored in `assets/vendor/uplot`, MIT,
//! inlined with its licence notice), from the report's own data embedded as JSON, so the file
//! opens from disk with no network and its numbers are those of `replay --json`. This module
//! only lays the data into the template; it never computes usage.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde_json::Value;
use serde_json::value::RawValue;

/// What the page's script reads (embedded as JSON).
#[derive(serde::Serialize)]
pub struct Data {
    /// Accepted events.
    pub events: u64,
    /// Rejected lines.
    pub rejected: u64,
    /// First event time, RFC 3339.
    pub first: Option<String>,
    /// Newest event time, RFC 3339.
    pub last: Option<String>,
    /// The `orgs` rows of `replay --json`.
    pub orgs: Vec<Value>,
    /// Per org, its series (see `timeline`), already JSON.
    pub timelines: BTreeMap<String, Box<RawValue>>,
    /// Every alert transition, as `replay --json` lists them.
    pub alerts: Vec<Value>,
}

/// Writes the report page for `data`.
pub fn write(w: &mut impl Write, data: &Data) -> io::Result<()> {
    // `<` is escaped in the embedded JSON, so no text in it (an org name, say) can close the
    // script element it sits in.
    let json = serde_json::to_string(data)?.replace('<', "\\u003c");
    let page = crate::assets::with_uplot(include_str!("report.html")).replace("/*DATA*/", &json);
    w.write_all(page.as_bytes())
}
