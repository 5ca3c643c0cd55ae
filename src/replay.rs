//! `ratewarden replay`: the tracker and detectors run offline over log files, in event time.
//!
//! Input is streamed line by line through one reused buffer; lines longer than the limit are
//! skipped (counted `too_large`) without being held. The replay clock is the newest `ts`
//! seen; whenever it enters a new second the tracker ticks, so stuck jobs, releases and
//! resolves happen as they would have live. Alert transitions are spilled to an anonymous
//! temporary file as they occur, so memory stays flat however long the input is.
//! This is also the throughput benchmark: the per-event path allocates nothing but what the
//! tracker needs for new series and jobs.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Read, Seek, Write};
use std::path::PathBuf;

use serde_json::json;

use crate::clock::rfc3339;
use crate::config::Config;
use crate::detect::{Cause, Transition};
use crate::events::{DEFAULT_MAX_EVENT_BYTES, ParseContext, Reason};
use crate::sources::format::{Dialect, ENVOY_DEFAULT, LineFormat, NGINX_COMBINED, Template};
use crate::tracker::{OrgReport, Tracker};

/// Most alerts listed by the text report (all of them are in `--json`).
const TEXT_ALERTS: usize = 200;

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// An input could not be opened or read.
    #[error("{path}: {source}")]
    Input {
        /// The input as given.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The report could not be written (or its temporary file used).
    #[error("writing the report: {0}")]
    Output(#[from] io::Error),
    /// The built-in format did not compile (a bug, reported rather than hidden).
    #[error("the built-in {0} format does not compile: {1}")]
    Format(&'static str, String),
}

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
    /// Line format (nginx: the `combined` format; Envoy: its default format).
    pub format: Format,
    /// Org of lines that carry none (access logs usually do not).
    pub org: Option<String>,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
    /// Lines longer than this are rejected as `too_large`.
    pub max_line_bytes: usize,
}

impl Options {
    /// Defaults for `inputs`.
    pub fn new(inputs: Vec<String>) -> Options {
        Options {
            inputs,
            format: Format::Json,
            org: None,
            progress: true,
            max_line_bytes: DEFAULT_MAX_EVENT_BYTES,
        }
    }
}

/// One line from a [`LineReader`].
enum Line<'a> {
    /// A complete line without its newline.
    Text(&'a [u8]),
    /// A line longer than the limit, with its length; its bytes were not kept.
    TooLong(usize),
}

/// Reads lines through one reused buffer, never holding more than `max` bytes of a line.
struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    max: usize,
    /// Bytes consumed so far (for progress).
    consumed: u64,
}

impl<R: BufRead> LineReader<R> {
    fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            buf: Vec::with_capacity(4096),
            max,
            consumed: 0,
        }
    }

    fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buf.clear();
        let mut len = 0usize;
        let mut too_long = false;
        let mut any = false;
        loop {
            let available = match self.inner.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                if !any {
                    return Ok(None);
                }
                break;
            }
            any = true;
            let (chunk, used, done) = match memchr::memchr(b'\n', available) {
                Some(i) => (&available[..i], i + 1, true),
                None => (available, available.len(), false),
            };
            len += chunk.len();
            if !too_long {
                if len > self.max {
                    too_long = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(chunk);
                }
            }
            self.inner.consume(used);
            self.consumed += used as u64;
            if done {
                break;
            }
        }
        Ok(Some(if too_long {
            Line::TooLong(len)
        } else {
            Line::Text(&self.buf)
        }))
    }
}

/// Alert transitions as JSON lines in an anonymous temporary file.
struct AlertLog {
    file: BufWriter<File>,
    count: u64,
}

impl AlertLog {
    fn new() -> io::Result<AlertLog> {
        Ok(AlertLog {
            file: BufWriter::new(tempfile::tempfile()?),
            count: 0,
        })
    }

    fn push(&mut self, t: &Transition) -> io::Result<()> {
        let v = json!({
            "ts": rfc3339(t.ts_ms),
            "org": &*t.org,
            "app": t.app.as_deref(),
            "alert": t.alert.as_str(),
            "dimension": t.dimension.map(|d| d.as_str()),
            "severity": t.severity.as_str(),
            "status": t.status.as_str(),
        });
        serde_json::to_writer(&mut self.file, &v)?;
        self.file.write_all(b"\n")?;
        self.count += 1;
        Ok(())
    }

    /// Reads back every alert line.
    fn lines(self) -> io::Result<impl Iterator<Item = io::Result<String>>> {
        let mut file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        Ok(BufReader::new(file).lines())
    }
}

/// Replay in progress: feed it lines, then [`Replayer::finish`].
pub struct Replayer {
    format: LineFormat,
    default_org: Option<String>,
    tracker: Tracker,
    /// Newest event time seen (the replay clock).
    clock: Option<i64>,
    /// Clock for events before any timestamp was seen.
    start_ms: i64,
    last_tick_sec: i64,
    events: u64,
    rejected: [u64; Reason::ALL.len()],
    first_ts: Option<i64>,
    out: Vec<Transition>,
    alerts: AlertLog,
}

impl Replayer {
    /// A replayer with `config`'s tiers, orgs and detectors. `start_ms` is the clock for
    /// events without `ts` that come before any event with one.
    pub fn new(config: &Config, start_ms: i64) -> io::Result<Replayer> {
        Ok(Replayer {
            format: LineFormat::Json { fields: Vec::new() },
            default_org: None,
            tracker: Tracker::new(config),
            clock: None,
            start_ms,
            last_tick_sec: i64::MIN,
            events: 0,
            rejected: [0; Reason::ALL.len()],
            first_ts: None,
            out: Vec::new(),
            alerts: AlertLog::new()?,
        })
    }

    /// Handles one line (without its newline). Blank lines are skipped.
    pub fn line(&mut self, line: &[u8]) -> io::Result<()> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let ctx = ParseContext {
            default_org: self.default_org.as_deref(),
            ..ParseContext::default()
        };
        let ev = match self.format.parse(line, &ctx) {
            Ok(ev) => ev,
            Err(r) => {
                self.rejected[r.reason as usize] += 1;
                return Ok(());
            }
        };
        if let Some(ts) = ev.ts_ms {
            self.first_ts.get_or_insert(ts);
            if self.clock.is_none_or(|c| ts > c) {
                self.clock = Some(ts);
            }
        }
        let now = self.clock.unwrap_or(self.start_ms);
        self.events += 1;
        self.tracker.apply(&ev, now, &mut self.out);
        if now.div_euclid(1000) > self.last_tick_sec {
            self.last_tick_sec = now.div_euclid(1000);
            self.tracker.tick(now, &mut self.out);
        }
        self.flush()
    }

    /// Counts a line that was too long to parse.
    pub fn too_large(&mut self) {
        self.rejected[Reason::TooLarge as usize] += 1;
    }

    fn flush(&mut self) -> io::Result<()> {
        for t in self.out.drain(..) {
            if t.notify {
                self.alerts.push(&t)?;
            }
        }
        Ok(())
    }

    /// The report.
    pub fn finish(mut self) -> io::Result<Report> {
        self.flush()?;
        let mut orgs = self.tracker.report();
        orgs.sort_by(|a, b| a.org.cmp(&b.org));
        Ok(Report {
            events: self.events,
            rejected: self.rejected,
            orgs,
            first_ts: self.first_ts,
            last_ts: self.clock,
            alerts: self.alerts,
        })
    }
}

/// What a replay found.
pub struct Report {
    /// Accepted events of every kind.
    pub events: u64,
    /// Rejected lines by [`Reason`] index.
    pub rejected: [u64; Reason::ALL.len()],
    /// Per org, sorted by name.
    pub orgs: Vec<OrgReport>,
    /// First event time seen.
    pub first_ts: Option<i64>,
    /// Newest event time seen.
    pub last_ts: Option<i64>,
    alerts: AlertLog,
}

impl Report {
    /// Rejected lines in total.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// Alert transitions recorded.
    pub fn alert_count(&self) -> u64 {
        self.alerts.count
    }

    /// Writes the SPEC §11 JSON object (and a newline).
    pub fn write_json(self, w: &mut impl Write) -> io::Result<()> {
        write!(
            w,
            "{{\"events\":{},\"rejected\":{},\"orgs\":",
            self.events,
            self.rejected_total()
        )?;
        let orgs: Vec<_> = self
            .orgs
            .iter()
            .map(|o| {
                let causes: serde_json::Map<_, _> = Cause::ALL
                    .iter()
                    .map(|c| (c.as_str().to_string(), json!(o.rate_limited[c.index()])))
                    .collect();
                json!({
                    "org": &*o.org,
                    "requests": o.requests,
                    "peak_rpm": o.peaks.rpm,
                    "peak_daily": o.peaks.daily,
                    "peak_concurrency": o.peaks.concurrency,
                    "rate_limited": causes,
                    "bursts": o.bursts,
                    "stuck_jobs": o.stuck_jobs,
                    "retry_violations": o.retry_violations,
                })
            })
            .collect();
        serde_json::to_writer(&mut *w, &orgs)?;
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
    pub fn write_text(self, w: &mut impl Write) -> io::Result<()> {
        let span = match (self.first_ts, self.last_ts) {
            (Some(a), Some(b)) => format!(", {} .. {}", rfc3339(a), rfc3339(b)),
            _ => String::new(),
        };
        writeln!(
            w,
            "{} events, {} rejected, {} orgs, {} alert transitions{span}",
            self.events,
            self.rejected_total(),
            self.orgs.len(),
            self.alerts.count
        )?;
        if self.rejected_total() > 0 {
            let parts: Vec<String> = Reason::ALL
                .iter()
                .filter(|r| self.rejected[**r as usize] > 0)
                .map(|r| format!("{}={}", r.as_str(), self.rejected[*r as usize]))
                .collect();
            writeln!(w, "rejected: {}", parts.join(" "))?;
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

/// Replays `opts.inputs` with `config` and returns the report.
pub fn run(config: &Config, opts: &Options, start_ms: i64) -> Result<Report, ReplayError> {
    let format = match opts.format {
        Format::Json => LineFormat::Json { fields: Vec::new() },
        Format::Nginx => Template::compile(Dialect::Nginx, NGINX_COMBINED, &Default::default())
            .map(LineFormat::Template)
            .map_err(|e| ReplayError::Format("nginx", e))?,
        Format::Envoy => Template::compile(Dialect::Envoy, ENVOY_DEFAULT, &Default::default())
            .map(LineFormat::Template)
            .map_err(|e| ReplayError::Format("envoy", e))?,
    };
    let total: u64 = opts
        .inputs
        .iter()
        .filter(|p| p.as_str() != "-")
        .filter_map(|p| std::fs::metadata(p).ok().map(|m| m.len()))
        .sum();
    let bar = progress_bar(opts.progress && io::stderr().is_terminal(), total);
    let mut replayer = Replayer::new(config, start_ms)?;
    replayer.format = format;
    replayer.default_org = opts.org.clone();
    let mut done = 0u64;
    for input in &opts.inputs {
        let input_err = |source| ReplayError::Input {
            path: input.clone(),
            source,
        };
        let reader: Box<dyn Read> = if input == "-" {
            Box::new(io::stdin().lock())
        } else {
            Box::new(File::open(PathBuf::from(input)).map_err(input_err)?)
        };
        let mut lines = LineReader::new(
            BufReader::with_capacity(1 << 20, reader),
            opts.max_line_bytes,
        );
        let mut n = 0u64;
        loop {
            let line = match lines.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(e) => return Err(input_err(e)),
            };
            match line {
                Line::Text(text) => replayer.line(text)?,
                Line::TooLong(bytes) => {
                    tracing::debug!(input = %input, bytes, "line over max_line_bytes skipped");
                    replayer.too_large();
                }
            }
            n += 1;
            if n.is_multiple_of(65_536)
                && let Some(bar) = &bar
            {
                bar.set_position(done + lines.consumed);
            }
        }
        done += lines.consumed;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(replayer.finish()?)
}

fn progress_bar(enabled: bool, total: u64) -> Option<indicatif::ProgressBar> {
    if !enabled {
        return None;
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        (total > 0).then_some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} replay [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(text: &[u8], max: usize) -> LineReader<BufReader<&[u8]>> {
        // A tiny buffer forces lines to span several fills.
        LineReader::new(BufReader::with_capacity(4, text), max)
    }

    fn collect(text: &[u8], max: usize) -> Vec<Result<String, usize>> {
        let mut r = reader(text, max);
        let mut out = Vec::new();
        while let Some(line) = r.next_line().unwrap() {
            out.push(match line {
                Line::Text(t) => Ok(String::from_utf8_lossy(t).into_owned()),
                Line::TooLong(n) => Err(n),
            });
        }
        out
    }

    #[test]
    fn lines_across_buffer_fills_and_without_final_newline() {
        assert_eq!(
            collect(b"hello world\nab\n\nlast", 100),
            vec![
                Ok("hello world".into()),
                Ok("ab".into()),
                Ok("".into()),
                Ok("last".into())
            ]
        );
    }

    #[test]
    fn long_lines_are_skipped_not_held() {
        let text = format!("short\n{}\nafter\n", "x".repeat(50));
        assert_eq!(
            collect(text.as_bytes(), 10),
            vec![Ok("short".into()), Err(50), Ok("after".into())]
        );
    }

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

    #[test]
    fn text_report_names_orgs() {
        let config = Config::default();
        let mut r = Replayer::new(&config, 0).unwrap();
        r.line(br#"{"ts":1795788000,"org":"acme","status":200}"#)
            .unwrap();
        r.too_large();
        let mut out = Vec::new();
        r.finish().unwrap().write_text(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("acme"), "{text}");
        assert!(text.contains("too_large=1"), "{text}");
    }
}
