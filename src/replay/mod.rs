//! `ratewarden replay`: the tracker and detectors run offline over log files, in event time.
//!
//! Input is streamed through one reused buffer (or, with `--threads`, in blocks decoded on
//! worker threads (`parallel`) whose events are applied by shards of the tracker, an org's
//! all on one, in input order (`sharded`)); lines longer than the limit are
//! skipped (counted `too_large`) without being held. The replay clock is the newest `ts`
//! seen; whenever it enters a new second the tracker ticks, so stuck jobs, releases and
//! resolves happen as they would have live. Alert transitions are spilled to an anonymous
//! temporary file as they occur, so memory stays flat however long the input is.
//! This is also the throughput benchmark: the per-event path allocates nothing but what the
//! tracker needs for new series and jobs.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Write};

use serde_json::json;

use crate::clock::rfc3339;
use crate::config::Config;
use crate::detect::{Cause, Transition};
use crate::events::format::{Dialect, LineFormat, Template};
use crate::events::intake::{Line, LineFramer, SourceStats, Tally};
use crate::events::{DEFAULT_MAX_EVENT_BYTES, Event, EventField};
use crate::tracker::{OrgReport, Tracker};

mod alert_log;
mod html;
mod input;
mod parallel;
mod sharded;
mod timeline;

use alert_log::AlertLog;
pub use input::ReplayError;
use input::{Reading, progress_bar};

/// Most alerts listed by the text report (all of them are in `--json`).
const TEXT_ALERTS: usize = 200;

/// Line format of the inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The native event schema, one JSON object per line.
    Json,
    /// nginx access logs.
    Nginx,
    /// Envoy access logs.
    Envoy,
}

/// What to replay.
#[derive(Debug, Clone)]
pub struct Options {
    /// Files to read in order; `-` is standard input.
    pub inputs: Vec<String>,
    /// Line format (nginx: the `combined` format; Envoy: its default format), unless
    /// `line_format` or `source` says otherwise; `None` is JSON.
    pub format: Option<Format>,
    /// An ad hoc template in `format`'s dialect, or a built-in name (`combined`, `main`,
    /// `default`, `istio`).
    pub line_format: Option<String>,
    /// Event field → variable (templates) or dotted path (JSON), as a source's `fields`.
    pub fields: BTreeMap<String, String>,
    /// Read the inputs as the configured `[[sources.file]]` of this name does (format,
    /// `log_format`, `fields`, default org and app, `max_line_bytes`).
    pub source: Option<String>,
    /// Org of lines that carry none (access logs usually do not).
    pub org: Option<String>,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
    /// Lines longer than this are rejected as `too_large` (each event in them is still held
    /// to 64 KiB, as in a `POST /v1/events` body).
    pub max_line_bytes: usize,
    /// Threads in all, the calling thread one of them: N − 1 decode lines and the calling
    /// thread routes their events in input order to N shards, each an org's events in input
    /// order (none with `timeline`, which the calling thread then applies); every thread
    /// applies the shards' queued batches between blocks and the calling thread decodes
    /// while the next block is not ready. 1 reads, decodes and applies on the calling thread
    /// alone. The report is the same whatever the count.
    pub threads: usize,
    /// Record usage over time per org, for [`Report::write_html`].
    pub timeline: bool,
}

/// The default of `--threads`: a thread and a shard per core, at most 8 (each adds blocks in
/// flight, and the one thread routing events in order is a limit too).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// Default longest line `replay` holds: as long as a default HTTP body, so a line of objects
/// back to back (`json_stream`) counts as it would when posted.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 << 20;

impl Options {
    /// Defaults for `inputs`.
    pub fn new(inputs: Vec<String>) -> Options {
        Options {
            inputs,
            format: None,
            line_format: None,
            fields: BTreeMap::new(),
            source: None,
            org: None,
            progress: true,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            threads: default_threads(),
            timeline: false,
        }
    }

    /// The line format, default org and app, and line limit these options mean with `config`.
    fn reading(&self, config: &Config) -> Result<Reading, ReplayError> {
        if let Some(org) = &self.org
            && !crate::model::valid_given_name(org)
        {
            return Err(ReplayError::Format(format!(
                "--org {org:?}: an org is 1-128 printable characters, and not {}",
                crate::model::OVERFLOW
            )));
        }
        if let Some(name) = &self.source {
            if self.line_format.is_some() || !self.fields.is_empty() || self.format.is_some() {
                return Err(ReplayError::Format(
                    "--source takes the format from the config; leave out --format, --line-format and --field".into(),
                ));
            }
            let Some(src) = config.sources.iter().find(|s| &s.name == name) else {
                let known: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
                return Err(ReplayError::Format(if known.is_empty() {
                    format!(
                        "no [[sources.file]] named {name:?}: the config has no file sources (is --config given?)"
                    )
                } else {
                    format!(
                        "no [[sources.file]] named {name:?}; the config has {}",
                        known.join(", ")
                    )
                }));
            };
            return Ok(Reading {
                name: src.name.clone(),
                format: src.format.clone(),
                org: self.org.clone().or_else(|| src.org.clone()),
                app: src.app.clone(),
                max_line_bytes: src.max_line_bytes,
                max_event_bytes: src.max_line_bytes,
            });
        }
        let template = |dialect: Dialect, default: &str| {
            let text = self.line_format.as_deref().unwrap_or(default);
            Template::compile(dialect, text, &self.fields)
                .map(LineFormat::Template)
                .map_err(|e| {
                    let flag = if e.starts_with("fields.") {
                        "--field"
                    } else {
                        "--line-format"
                    };
                    ReplayError::Format(format!("{flag}: {e}"))
                })
        };
        let format = match self.format.unwrap_or(Format::Json) {
            Format::Json if self.line_format.is_some() => {
                return Err(ReplayError::Format(
                    "--line-format needs --format nginx or --format envoy".into(),
                ));
            }
            Format::Json => LineFormat::json(&self.fields)
                .map_err(|e| ReplayError::Format(format!("--field: {e}")))?,
            Format::Nginx => template(Dialect::Nginx, "combined")?,
            Format::Envoy => template(Dialect::Envoy, "default")?,
        };
        Ok(Reading {
            name: "replay".into(),
            format,
            org: self.org.clone(),
            app: None,
            max_line_bytes: self.max_line_bytes,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
        })
    }
}

/// Replay in progress: feed it bytes or lines, then [`Replayer::finish`].
pub struct Replayer {
    reading: Reading,
    stats: SourceStats,
    apply: Applier,
    alerts: AlertLog,
    /// A write of the alert log that failed between two lines, returned by the next flush.
    failed: Option<io::Error>,
}

/// The tracker and the replay clock: accepted events go in, in input order.
struct Applier {
    /// The tracker; with `shards`, it only routes events (see [`sharded`]).
    tracker: Tracker,
    /// The trackers that apply events, on whichever thread is free, when there are several.
    shards: Option<sharded::Shards>,
    /// Newest event time seen (the replay clock).
    clock: Option<i64>,
    /// Clock for events before any timestamp was seen.
    start_ms: i64,
    last_tick_sec: i64,
    first_ts: Option<i64>,
    out: Vec<Transition>,
    /// Usage over time (`--html`).
    timeline: Option<timeline::Timeline>,
}

impl Applier {
    /// Applies one accepted event at the replay clock, after the clock ticks it moved past;
    /// `record` is its place in its block's records (to find it again on a shard).
    fn accept(&mut self, ev: &Event<'_>) {
        let now = self.clock_to(ev.ts_ms);
        self.tracker.apply(ev, now, &mut self.out);
        if let Some(t) = &mut self.timeline {
            t.record(&self.tracker, &ev.org, ev.ts_ms.unwrap_or(now), now);
        }
        self.tick_if_new_second(now);
    }

    /// As [`Applier::accept`] with shards: routes the event (`record`: its place in its
    /// block's records) to its org's shard.
    fn route(&mut self, ev: &Event<'_>, record: usize) {
        let now = self.clock_to(ev.ts_ms);
        if let (Some(to), Some(shards)) = (self.tracker.route(ev, now), &mut self.shards) {
            shards.apply(record, now, to);
        }
        self.tick_if_new_second(now);
    }

    /// Moves the replay clock to an event at `ts` (and makes up the ticks it jumps over);
    /// returns the clock.
    fn clock_to(&mut self, ts: Option<i64>) -> i64 {
        if let Some(ts) = ts {
            self.first_ts.get_or_insert(ts);
            if self.clock.is_none_or(|c| ts > c) {
                self.clock = Some(ts);
            }
        }
        let now = self.clock.unwrap_or(self.start_ms);
        self.catch_up(now);
        now
    }

    fn tick_if_new_second(&mut self, now: i64) {
        if now.div_euclid(1000) > self.last_tick_sec {
            self.last_tick_sec = now.div_euclid(1000);
            self.tick(now);
        }
    }

    fn tick(&mut self, now: i64) {
        match &mut self.shards {
            None => {
                self.tracker.tick(now, &mut self.out);
            }
            Some(shards) => shards.tick(now),
        }
    }

    /// The replay clock moved from the second of the last tick to `now`. The ticks the
    /// daemon would have made are made up at each whole minute in between, before the event
    /// that moved it: jobs become stuck and are released, windows empty, bursts end, at about
    /// the time they did, not at the next event.
    fn catch_up(&mut self, now: i64) {
        // Within the second of the last tick (nearly every event) no minute has passed: two
        // divisions fewer an event.
        if self.last_tick_sec == i64::MIN || now <= self.last_tick_sec.saturating_mul(1_000) + 999 {
            return;
        }
        let first = (self.last_tick_sec * 1_000).div_euclid(60_000) + 1;
        // The whole minutes before `now`, from the first after the last tick.
        let count = ((now - 1).div_euclid(60_000) - first + 1).clamp(0, CATCH_UP_TICKS);
        match &mut self.shards {
            None => {
                for minute in first..first + count {
                    self.tracker.tick(minute * 60_000, &mut self.out);
                }
            }
            // One step for the whole stretch: a day of minutes per shard and line was
            // gigabytes for a log of daily lines.
            Some(shards) if count > 0 => shards.minutes(first * 60_000, count as u32),
            Some(_) => {}
        }
    }
}

impl Replayer {
    /// A replayer with `config`'s tiers, orgs and detectors, reading native JSON lines.
    /// `start_ms` is the clock for events without `ts` that come before any event with one.
    pub fn new(config: &Config, start_ms: i64) -> io::Result<Replayer> {
        Ok(Replayer {
            reading: Reading {
                name: "replay".into(),
                format: LineFormat::Json { fields: Vec::new() },
                org: None,
                app: None,
                max_line_bytes: DEFAULT_MAX_LINE_BYTES,
                max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            },
            stats: SourceStats::new("replay"),
            apply: Applier {
                tracker: Tracker::new(config),
                shards: None,
                clock: None,
                start_ms,
                last_tick_sec: i64::MIN,
                first_ts: None,
                out: Vec::new(),
                timeline: None,
            },
            alerts: AlertLog::new()?,
            failed: None,
        })
    }

    /// Handles one line (without its newline); blank lines are skipped.
    pub fn line(&mut self, line: &[u8]) -> io::Result<()> {
        LineFramer::new(self.reading.max_line_bytes).feed(line, true, |l| self.framed(l, None));
        self.flush()
    }

    /// Frames `buf` (the bytes after those consumed before) with `framer` and handles each
    /// line; returns the bytes consumed, as [`LineFramer::feed`].
    fn feed(&mut self, framer: &mut LineFramer, buf: &[u8], at_eof: bool) -> io::Result<usize> {
        let used = framer.feed_checked(buf, at_eof, |l, text| self.framed(l, text));
        self.flush()?;
        Ok(used)
    }

    /// Handles one line (`text`: the line, when known to be UTF-8).
    fn framed(&mut self, line: Line<'_>, text: Option<&str>) {
        let Replayer {
            reading,
            stats,
            apply,
            ..
        } = self;
        let (format, ctx) = (&reading.format, &reading.context());
        match text {
            Some(text) => stats.text_line(format, ctx, text, |p| apply.accept(&p.event)),
            None => stats.line(format, ctx, line, |p| apply.accept(&p.event)),
        }
        // Transitions are written out between lines too once they pile up: a clock jump of
        // a day makes up a tick a minute, and a chunk of such lines held millions of them.
        if self.apply.out.len() >= OUT_BATCH
            && self.failed.is_none()
            && let Err(e) = self.flush()
        {
            self.failed = Some(e);
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        for t in self.apply.out.drain(..) {
            if t.notify {
                self.alerts.push(&t)?;
            }
        }
        let Applier {
            shards, tracker, ..
        } = &mut self.apply;
        if let Some(shards) = shards {
            shards.merge(tracker, false, |t| self.alerts.push(t))?;
        }
        Ok(())
    }

    /// Counts and applies one block decoded by [`parallel`] (routes it to the shards, when
    /// there are), as [`Replayer::framed`] does line by line.
    fn apply_lease(&mut self, lease: parallel::Lease) -> Result<(), ReplayError> {
        if self.apply.shards.is_none() {
            self.apply_decoded(&lease)?;
            return Ok(self.flush()?);
        }
        let block = std::sync::Arc::new(lease);
        if let Some(shards) = &mut self.apply.shards {
            shards.start_block(block.clone());
        }
        self.apply_decoded(&block)?;
        if let Some(shards) = &mut self.apply.shards {
            shards.send(true)?;
        }
        Ok(self.flush()?)
    }

    /// Counts and applies (or routes) one decoded block's lines.
    fn apply_decoded(&mut self, d: &parallel::Decoded) -> Result<(), ReplayError> {
        let (all, lines, records) = (d.bytes(), d.lines(), d.records());
        for (i, line) in lines.iter().enumerate() {
            if let Some(ahead) = lines.get(i + PREFETCH_AHEAD) {
                // A worker on another core wrote these: fetched now, they arrive while the
                // lines before are applied instead of stalling this thread, the bound.
                if let Some(r) = records.get(ahead.records.start) {
                    crate::model::prefetch(r);
                }
                if let Some(text) = ahead.line.clone().and_then(|r| all.get(r)) {
                    crate::model::prefetch(text);
                }
            }
            let Some(range) = line.line.clone() else {
                self.framed(Line::TooLong, None);
                continue;
            };
            let text = &all[range];
            // Counted and applied from the record as it is: neither a `Parsed` (a copy of the
            // event per record, on the one applying thread) nor a cloned `Rejection`.
            for (k, r) in records[line.records.clone()].iter().enumerate() {
                match r.get() {
                    Ok((ev, field_errors)) => {
                        self.stats.accepted(&self.reading.format, field_errors);
                        if self.apply.shards.is_some() {
                            let record = line.records.start + k;
                            self.apply.route(ev, record);
                        } else {
                            self.apply.accept(ev);
                        }
                    }
                    Err(e) => {
                        self.stats.rejected(&self.reading.format, text, e);
                    }
                }
            }
            self.stats.line_done(line.found);
            if let Some(shards) = &mut self.apply.shards
                && shards.full()
            {
                shards.send(false)?;
                self.flush()?;
            }
        }
        Ok(())
    }

    /// The report.
    pub fn finish(mut self) -> io::Result<Report> {
        // The clock stops at the newest event: what it changes for every org (stuck jobs,
        // windows that emptied, bursts that ended) happens, also for orgs whose events came
        // from an earlier input and stopped before it.
        let mut orgs = match self.apply.shards.take() {
            None => {
                if let Some(now) = self.apply.clock {
                    self.apply.tick(now);
                }
                self.flush()?;
                self.apply.tracker.report()
            }
            Some(shards) => {
                let alerts = &mut self.alerts;
                shards.finish(&self.apply.tracker, self.apply.clock, |t| alerts.push(t))?
            }
        };
        self.stats.settle(&self.reading.format);
        orgs.sort_by(|a, b| a.org.cmp(&b.org));
        Ok(Report {
            tally: self.stats.take(),
            orgs,
            first_ts: self.apply.first_ts,
            last_ts: self.apply.clock,
            alerts: self.alerts,
            timeline: self.apply.timeline,
        })
    }
}

/// Transitions held before they are written out mid-chunk.
const OUT_BATCH: usize = 4096;

/// Lines ahead whose record and bytes the applying thread asks the cache for.
const PREFETCH_AHEAD: usize = 4;

/// What a replay found.
pub struct Report {
    /// Accepted and rejected events, and fields lost.
    pub tally: Tally,
    /// Per org, sorted by name.
    pub orgs: Vec<OrgReport>,
    /// First event time seen.
    pub first_ts: Option<i64>,
    /// Newest event time seen.
    pub last_ts: Option<i64>,
    alerts: AlertLog,
    /// Usage over time, when [`Options::timeline`] asked for it.
    timeline: Option<timeline::Timeline>,
}

impl Report {
    /// Accepted events of every kind.
    pub fn events(&self) -> u64 {
        self.tally.accepted
    }

    /// Rejected lines in total.
    pub fn rejected_total(&self) -> u64 {
        self.tally.rejected_total()
    }

    /// Alert transitions recorded.
    pub fn alert_count(&self) -> u64 {
        self.alerts.count
    }

    /// The `orgs` of the SPEC §11 JSON object, one row per org.
    fn org_rows(&self) -> Vec<serde_json::Value> {
        self.orgs
            .iter()
            .map(|o| {
                // The causes listed as on /metrics (`Cause::listed`).
                let causes = |counts: &[u64; Cause::ALL.len()]| -> serde_json::Map<_, _> {
                    Cause::ALL
                        .iter()
                        .filter(|c| c.listed(counts[c.index()]))
                        .map(|c| (c.as_str().to_string(), json!(counts[c.index()])))
                        .collect()
                };
                let mut row = json!({
                    "org": &*o.org,
                    "requests": o.requests,
                    "peak_rpm": o.peaks.rpm,
                    "peak_daily": o.peaks.daily,
                    "peak_concurrency": o.peaks.concurrency,
                    "rate_limited": causes(&o.rate_limited),
                    "bursts": o.bursts,
                    "stuck_jobs": o.stuck_jobs,
                    "retry_violations": o.retry_violations,
                });
                if let (false, Some(obj)) = (o.models.is_empty(), row.as_object_mut()) {
                    let models: Vec<_> = o
                        .models
                        .iter()
                        .map(|(m, c)| json!({"model": &**m, "rate_limited": causes(c)}))
                        .collect();
                    obj.insert("models".into(), json!(models));
                }
                row
            })
            .collect()
    }

    /// Writes the HTML report (`replay --html`): see [`html`].
    pub fn write_html(&mut self, w: &mut impl Write) -> io::Result<()> {
        let alerts = self
            .alerts
            .lines()?
            .map(|l| l.and_then(|l| serde_json::from_str(&l).map_err(io::Error::other)))
            .collect::<io::Result<Vec<serde_json::Value>>>()?;
        let data = html::Data {
            events: self.events(),
            rejected: self.rejected_total(),
            first: self.first_ts.map(rfc3339),
            last: self.last_ts.map(rfc3339),
            orgs: self.org_rows(),
            timelines: match &self.timeline {
                Some(t) => t.series()?,
                None => Default::default(),
            },
            alerts,
        };
        html::write(w, &data)
    }

    /// Writes the SPEC §11 JSON object (and a newline).
    pub fn write_json(mut self, w: &mut impl Write) -> io::Result<()> {
        let field_errors: serde_json::Map<_, _> = EventField::ALL
            .iter()
            .filter(|f| self.tally.field_errors[**f as usize] > 0)
            .map(|f| {
                (
                    f.name().to_string(),
                    json!(self.tally.field_errors[*f as usize]),
                )
            })
            .collect();
        write!(
            w,
            "{{\"events\":{},\"rejected\":{},\"field_errors\":{},\"orgs\":",
            self.events(),
            self.rejected_total(),
            serde_json::Value::Object(field_errors)
        )?;
        serde_json::to_writer(&mut *w, &self.org_rows())?;
        w.write_all(b",\"alerts\":[")?;
        for (i, line) in self.alerts.lines()?.enumerate() {
            if i > 0 {
                w.write_all(b",")?;
            }
            w.write_all(line?.as_bytes())?;
        }
        w.write_all(b"]}\n")
    }

    /// Writes a table for humans.
    pub fn write_text(mut self, w: &mut impl Write) -> io::Result<()> {
        let span = match (self.first_ts, self.last_ts) {
            (Some(a), Some(b)) => format!(", {} .. {}", rfc3339(a), rfc3339(b)),
            _ => String::new(),
        };
        writeln!(
            w,
            "{} events, {} rejected, {} orgs, {} alert transitions{span}",
            self.events(),
            self.rejected_total(),
            self.orgs.len(),
            self.alerts.count
        )?;
        if self.rejected_total() > 0 {
            writeln!(w, "rejected: {}", self.tally.rejected_summary())?;
        }
        if self.tally.field_errors_total() > 0 {
            writeln!(
                w,
                "fields that did not parse (events counted without them): {}",
                self.tally.field_errors_summary()
            )?;
        }
        writeln!(w)?;
        let mut orgs = self.orgs.iter().collect::<Vec<_>>();
        orgs.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.org.cmp(&b.org)));
        let width = orgs
            .iter()
            .map(|o| o.org.chars().count())
            .max()
            .unwrap_or(3)
            .max(3);
        writeln!(
            w,
            "{:<width$}  {:>9}  {:>8}  {:>10}  {:>9}  {:>7}  {:>6}  {:>5}  {:>10}  429 CAUSES",
            "ORG",
            "REQUESTS",
            "PEAK RPM",
            "PEAK DAILY",
            "PEAK CONC",
            "429s",
            "BURSTS",
            "STUCK",
            "RETRY VIOL"
        )?;
        for o in orgs {
            let total: u64 = o.rate_limited.iter().sum();
            let causes: Vec<String> = Cause::ALL
                .iter()
                .filter(|c| o.rate_limited[c.index()] > 0)
                .map(|c| format!("{}={}", c.as_str(), o.rate_limited[c.index()]))
                .collect();
            writeln!(
                w,
                "{:<width$}  {:>9}  {:>8}  {:>10}  {:>9}  {:>7}  {:>6}  {:>5}  {:>10}  {}",
                o.org,
                o.requests,
                o.peaks.rpm,
                o.peaks.daily,
                o.peaks.concurrency,
                total,
                o.bursts,
                o.stuck_jobs,
                o.retry_violations,
                if causes.is_empty() {
                    "-".to_string()
                } else {
                    causes.join(" ")
                }
            )?;
        }
        let count = self.alerts.count;
        if count > 0 {
            writeln!(w, "\nALERTS")?;
            for line in self.alerts.lines()?.take(TEXT_ALERTS) {
                let v: serde_json::Value = serde_json::from_str(&line?)?;
                let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
                let who = match v["app"].as_str() {
                    Some(app) => format!("{}/{}", s("org"), app),
                    None => s("org"),
                };
                writeln!(
                    w,
                    "{}  {:<9} {:<20} {:<11} {:<8} {}",
                    s("ts"),
                    s("status"),
                    s("alert"),
                    s("dimension"),
                    s("severity"),
                    who
                )?;
            }
            if count > TEXT_ALERTS as u64 {
                writeln!(
                    w,
                    "... and {} more (--json lists all)",
                    count - TEXT_ALERTS as u64
                )?;
            }
        }
        Ok(())
    }
}

/// Most clock ticks made up for one jump of the replay clock (a day of minutes).
const CATCH_UP_TICKS: i64 = 1_440;

/// Replays `opts.inputs` with `config` and returns the report.
pub fn run(config: &Config, opts: &Options, start_ms: i64) -> Result<Report, ReplayError> {
    let reading = opts.reading(config)?;
    let total: u64 = opts
        .inputs
        .iter()
        .filter(|p| p.as_str() != "-")
        .filter_map(|p| std::fs::metadata(p).ok().map(|m| m.len()))
        .sum();
    let bar = progress_bar(opts.progress && io::stderr().is_terminal(), total);
    let mut replayer = Replayer::new(config, start_ms)?;
    let max = reading.max_line_bytes;
    replayer.stats = SourceStats::new(&reading.name);
    replayer.reading = reading;
    if opts.timeline {
        replayer.apply.timeline = Some(timeline::Timeline::default());
    }
    if opts.threads > 1 {
        let mut done = 0u64;
        let mut chunks = 0u64;
        let bar_ref = bar.as_ref();
        let reading = replayer.reading.clone();
        let progress = |n| {
            done += n;
            chunks += 1;
            if let Some(bar) = bar_ref
                && chunks.is_multiple_of(4)
            {
                bar.set_position(done.min(total));
            }
        };
        if !opts.timeline {
            replayer.apply.shards = Some(sharded::Shards::start(config, opts.threads));
        }
        let chores = replayer.apply.shards.as_ref().map(|s| s.chores());
        let chores = chores.as_deref().map(|c| c as &dyn parallel::Chores);
        parallel::run(
            &reading,
            &opts.inputs,
            opts.threads,
            chores,
            progress,
            |lease| replayer.apply_lease(lease),
        )?;
    } else {
        input::read_in_chunks(
            &opts.inputs,
            max,
            total,
            bar.as_ref(),
            |framer, buf, eof| replayer.feed(framer, buf, eof),
        )?;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(replayer.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(lines: &[&str]) -> (String, serde_json::Value) {
        let config = Config::default();
        let mut r = Replayer::new(&config, 0).unwrap();
        for l in lines {
            r.line(l.as_bytes()).unwrap();
        }
        let rep = r.finish().unwrap();
        let mut out = Vec::new();
        rep.write_json(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let v = serde_json::from_str(&text).unwrap();
        (text, v)
    }

    #[test]
    fn json_report_shape() {
        let (_, v) = replay(&[
            r#"{"ts":"2026-11-02T15:00:00Z","org":"acme","status":200}"#,
            r#"{"ts":"2026-11-02T15:00:01Z","org":"acme","status":200}"#,
            r#"{"ts":"2026-11-02T15:00:02Z","org":"acme","status":200}"#,
            r#"{"ts":"2026-11-02T15:00:03Z","org":"acme","status":429}"#,
            "{broken",
            "",
        ]);
        assert_eq!(v["events"], 4);
        assert_eq!(v["rejected"], 1);
        let acme = &v["orgs"][0];
        assert_eq!(acme["org"], "acme");
        assert_eq!(acme["requests"], 4);
        assert_eq!(acme["peak_rpm"], 4);
        assert_eq!(acme["rate_limited"]["burst"], 1, "3 prior in 10 s at 5 rpm");
        assert_eq!(acme["bursts"], 1);
        let alerts = v["alerts"].as_array().unwrap();
        assert!(
            alerts.iter().any(|a| a["alert"] == "UsageHigh"
                && a["severity"] == "warning"
                && a["ts"] == "2026-11-02T15:00:03.000Z"),
            "{alerts:?}"
        );
        assert!(alerts.iter().any(|a| a["alert"] == "BurstDetected"));
    }

    #[test]
    fn stuck_jobs_count_ever_stuck_via_ticks() {
        let (_, v) = replay(&[
            r#"{"ts":"2026-11-02T15:00:00Z","org":"acme","status":202,"job_id":"j1"}"#,
            r#"{"ts":"2026-11-02T15:11:00Z","org":"acme","status":200}"#,
            r#"{"ts":"2026-11-02T15:45:00Z","org":"acme","status":200}"#,
        ]);
        assert_eq!(
            v["orgs"][0]["stuck_jobs"], 1,
            "stuck at 10 m, released at 30 m, still counted"
        );
        assert_eq!(v["orgs"][0]["peak_concurrency"], 1);
        let names: Vec<_> = v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["alert"] == "JobsStuck")
            .map(|a| a["status"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, vec!["firing", "resolved"]);
    }

    /// The report's entry for `org`.
    fn org_of<'a>(v: &'a serde_json::Value, org: &str) -> &'a serde_json::Value {
        v["orgs"]
            .as_array()
            .and_then(|orgs| orgs.iter().find(|o| o["org"] == org))
            .unwrap_or_else(|| panic!("no org {org} in {v}"))
    }

    fn replay_with(config: &str, lines: &[String]) -> serde_json::Value {
        let config = Config::parse(config, "t.toml").unwrap();
        let mut r = Replayer::new(&config, 0).unwrap();
        for l in lines {
            r.line(l.as_bytes()).unwrap();
        }
        let mut out = Vec::new();
        r.finish().unwrap().write_json(&mut out).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    fn alerts(v: &serde_json::Value, name: &str) -> Vec<(String, String, String)> {
        v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["alert"] == name)
            .map(|a| {
                let s = |k: &str| a[k].as_str().unwrap_or("").to_string();
                (s("ts"), s("status"), s("severity"))
            })
            .collect()
    }

    #[test]
    fn a_late_line_neither_resolves_nor_refires_and_alerts_stay_in_time_order() {
        let tier = "[tiers.t]\nrpm = 5\n[limits]\ndefault_tier = \"t\"\n";
        let mut lines = vec![r#"{"ts":"2026-11-30T10:00:10Z","org":"acme"}"#.to_string(); 4];
        lines.push(r#"{"ts":"2026-11-30T09:59:00Z","org":"acme"}"#.into());
        let v = replay_with(tier, &lines);
        assert_eq!(
            alerts(&v, "UsageHigh"),
            [(
                "2026-11-30T10:00:10.000Z".into(),
                "firing".into(),
                "warning".into()
            )]
        );
        let times: Vec<&str> = v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["ts"].as_str().unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        assert_eq!(v["orgs"][0]["requests"], 5);
    }

    #[test]
    fn shuffled_lines_report_what_sorted_lines_report() {
        let tier = "[tiers.t]\nrpm = 50\n[limits]\ndefault_tier = \"t\"\n";
        let lines: Vec<String> = (0..46)
            .map(|i| {
                format!(
                    r#"{{"ts":{},"org":"acme","status":200}}"#,
                    1_796_032_800_000i64 + i * 500
                )
            })
            .collect();
        let sorted = replay_with(tier, &lines);
        let mut shuffled = lines.clone();
        // Round-robin from three shippers: every third line, then the next third...
        shuffled.sort_by_key(|l| {
            let i = lines.iter().position(|x| x == l).unwrap();
            (i % 3, std::cmp::Reverse(i))
        });
        let v = replay_with(tier, &shuffled);
        for r in [&sorted, &v] {
            assert_eq!(r["orgs"][0]["peak_rpm"], 46);
            let levels: Vec<_> = alerts(r, "UsageHigh")
                .into_iter()
                .map(|(_, st, sev)| (st, sev))
                .collect();
            assert_eq!(
                levels,
                [
                    ("firing".to_string(), "warning".to_string()),
                    ("firing".into(), "critical".into())
                ]
            );
        }
    }

    #[test]
    fn quiet_stretches_and_inputs_out_of_time_order_still_tick() {
        let at = |m: u32, sec: u32| format!("2026-11-02T10:{m:02}:{sec:02}Z");
        let job = |m, id: &str| {
            format!(
                r#"{{"ts":"{}","org":"b","status":202,"job_id":"{id}"}}"#,
                at(m, 0)
            )
        };
        let req =
            |org: &str, m, sec| format!(r#"{{"ts":"{}","org":"{org}","status":200}}"#, at(m, sec));
        // A job at 10:00 and nothing until 10:40: stuck at 10:10, released at 10:30.
        let v = replay_with("", &[job(0, "j"), req("b", 40, 0)]);
        assert_eq!(
            alerts(&v, "JobsStuck"),
            [
                (
                    at(10, 0).replace('Z', ".000Z"),
                    "firing".into(),
                    "warning".into()
                ),
                (
                    at(30, 0).replace('Z', ".000Z"),
                    "resolved".into(),
                    "warning".into()
                )
            ]
        );
        // A second input whose org stopped before the first input's last event: its state
        // still moves on by the end.
        let mut lines: Vec<String> = (0..30).map(|m| req("a", m, 0)).collect();
        lines.push(job(10, "k"));
        lines.push(req("b", 11, 0));
        let v = replay_with("", &lines);
        let b = org_of(&v, "b");
        assert_eq!(b["stuck_jobs"], 1, "{v}");
        // A job released while the clock was away holds no slot for a later-arriving start.
        let lines = [
            job(0, "a"),
            req("b", 30, 17),
            format!(
                r#"{{"ts":"{}","org":"b","kind":"job_started","job_id":"c"}}"#,
                at(30, 8)
            ),
        ];
        let v = replay_with("", &lines);
        let b = org_of(&v, "b");
        assert_eq!(b["peak_concurrency"], 1, "{v}");
    }

    /// The whole lines read are checked as UTF-8 at once: what the lines come to is what they
    /// come to one by one, whether the block is text (a BOM, CRLF, non-ASCII) or not.
    #[test]
    fn a_block_checked_at_once_counts_as_its_lines_one_by_one() {
        let config = Config::default();
        let report = |feed: &dyn Fn(&mut Replayer)| {
            let mut r = Replayer::new(&config, 0).unwrap();
            feed(&mut r);
            let mut out = Vec::new();
            r.finish().unwrap().write_json(&mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let text: &[&[u8]] = &[
            b"\xef\xbb\xbf{\"ts\":1795788000,\"org\":\"acme\",\"status\":200}",
            b"{\"ts\":1795788001,\"org\":\"acme\",\"app\":\"caf\xc3\xa9\",\"status\":429}\r",
            b"{\"ts\":1795788002,\"org\":\"b\xc3\xa9ta\",\"status\":200,\"job_id\":\"j1\"}",
            b"   ",
            b"{broken",
        ];
        let not_text = [
            text,
            &[b"{\"ts\":1795788003,\"org\":\"acme\",\"app\":\"\xff\"}"],
        ]
        .concat();
        for (lines, rejected) in [(text, 1), (&not_text[..], 2)] {
            let one_by_one = report(&|r| {
                for l in lines {
                    r.line(l).unwrap();
                }
            });
            let block = lines.join(&b'\n');
            for last_newline in [false, true] {
                let mut block = block.clone();
                if last_newline {
                    block.push(b'\n');
                }
                let at_once = report(&|r| {
                    let mut framer = LineFramer::new(DEFAULT_MAX_LINE_BYTES);
                    let used = r.feed(&mut framer, &block, false).unwrap();
                    r.feed(&mut framer, &block[used..], true).unwrap();
                });
                assert_eq!(at_once, one_by_one);
            }
            let counts = format!(r#"{{"events":3,"rejected":{rejected},"#);
            assert!(one_by_one.starts_with(&counts), "{one_by_one}");
        }
    }

    #[test]
    fn text_report_names_orgs() {
        let config = Config::default();
        let mut r = Replayer::new(&config, 0).unwrap();
        r.line(br#"{"ts":1795788000,"org":"acme","status":200}"#)
            .unwrap();
        let big = format!(
            r#"{{"org":"acme","model":"{}"}}"#,
            "m".repeat(DEFAULT_MAX_EVENT_BYTES)
        );
        r.line(big.as_bytes()).unwrap();
        let mut out = Vec::new();
        r.finish().unwrap().write_text(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("acme"), "{text}");
        assert!(text.contains("too_large=1"), "{text}");
    }
}
