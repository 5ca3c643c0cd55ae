//! Off-peak windows: cron starts plus a duration, in an IANA time zone (SPEC §3 `[offpeak]`).
//!
//! Start expressions mean what crontab(5) says they mean (module `crontab`): 5 fields or 6 with
//! seconds, weekdays 0–7 with Sunday as 0 and 7, either day field when both are restricted.
//!
//! Starts are computed in local wall-clock time and only then placed on the time line, so the
//! rules around daylight-saving changes are ours and explicit:
//!
//! * a start that falls in a skipped hour (spring forward) happens shifted forward by the
//!   length of the gap: `02:30` on a day that jumps from 02:00 to 03:00 starts at `03:30`;
//! * a start that falls in a repeated hour (fall back) happens once, at its first occurrence;
//! * durations are elapsed time: an 11 h window that spans a change ends 11 real hours later
//!   (06:00 local on a normal night, 05:00 or 07:00 on the nights of a change).
//!
//! Windows may overlap; the off-peak period is their union. Everything takes `now` as an
//! argument; nothing here reads a clock.

mod crontab;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// One compiled window.
#[derive(Debug, Clone)]
pub struct Window {
    /// The cron expression as written.
    pub expr: String,
    /// Schedules whose union is the expression's starts (two when both day fields are
    /// restricted, see [`crontab`]).
    schedules: Vec<cron::Schedule>,
    /// Length in ms.
    pub duration_ms: i64,
}

impl Window {
    /// Compiles `expr`, a crontab(5) expression (`0 19 * * 1-5`) or one with a seconds field
    /// first (`0 0 19 * * Mon-Fri`).
    pub fn new(expr: &str, duration_ms: i64) -> Result<Window, String> {
        let schedules =
            crontab::compile(expr).map_err(|e| format!("invalid cron expression {expr:?}: {e}"))?;
        if duration_ms <= 0 {
            return Err("a window needs a positive duration".into());
        }
        Ok(Window {
            expr: expr.to_string(),
            schedules,
            duration_ms,
        })
    }

    /// The starts after `from`, in order, each once.
    fn after<'s>(&'s self, from: &DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + 's {
        let mut iters: Vec<_> = self
            .schedules
            .iter()
            .map(|s| s.after(from).peekable())
            .collect();
        std::iter::from_fn(move || {
            let next = iters.iter_mut().filter_map(|i| i.peek().copied()).min()?;
            for i in &mut iters {
                if i.peek() == Some(&next) {
                    i.next();
                }
            }
            Some(next)
        })
    }

    /// The starts before `from`, latest first, each once.
    fn before(&self, from: &DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> {
        let mut iters: Vec<_> = self
            .schedules
            .iter()
            .map(|s| {
                let mut it = s.after_owned(*from);
                let head = it.next_back();
                (it, head)
            })
            .collect();
        std::iter::from_fn(move || {
            let next = iters.iter().filter_map(|(_, h)| *h).max()?;
            for (it, head) in &mut iters {
                if *head == Some(next) {
                    *head = it.next_back();
                }
            }
            Some(next)
        })
    }
}

/// Whether the off-peak period is open at some time, and when that changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Open now.
    pub open: bool,
    /// Next time it opens (when closed), Unix ms.
    pub next_open: Option<i64>,
    /// Time it closes (when open), or closes after the next opening (when closed), Unix ms.
    pub next_close: Option<i64>,
}

/// The configured windows in their time zone.
#[derive(Debug, Clone)]
pub struct OffPeak {
    /// Time zone the cron expressions are read in.
    pub tz: Tz,
    /// The windows.
    pub windows: Vec<Window>,
}

/// Margin around a search for DST offsets (no zone moves its clock by more than this).
const OFFSET_MARGIN_MS: i64 = 3 * 3_600_000;

/// Local wall-clock `naive` on the time line of `tz`, with the gap and fold rules above.
fn place(tz: &Tz, naive: NaiveDateTime) -> i64 {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => t.timestamp_millis(),
        LocalResult::Ambiguous(first, _) => first.timestamp_millis(),
        LocalResult::None => {
            // In a gap: read the wall time with the offset in force just before the gap,
            // which moves it forward by the gap's length.
            let before = naive - chrono::Duration::hours(3);
            let offset = match tz.from_local_datetime(&before) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                    t.offset().fix().local_minus_utc() as i64
                }
                LocalResult::None => 0,
            };
            naive.and_utc().timestamp_millis() - offset * 1000
        }
    }
}

use chrono::Offset;

impl OffPeak {
    /// Wall-clock time of instant `ms` in the zone, as a naive value.
    fn local(&self, ms: i64) -> NaiveDateTime {
        DateTime::<Utc>::from_timestamp_millis(ms)
            .unwrap_or_default()
            .with_timezone(&self.tz)
            .naive_local()
    }

    /// How far local order and instant order may differ around `ms`: nothing when the zone
    /// keeps one offset for [`OFFSET_MARGIN_MS`] either side (most of the year), the margin
    /// around a change. Searches stay a step or two long unless a change is near.
    fn margin(&self, ms: i64) -> i64 {
        let offset = |at: i64| {
            DateTime::<Utc>::from_timestamp_millis(at)
                .map(|t| t.with_timezone(&self.tz).offset().fix().local_minus_utc())
        };
        if offset(ms - OFFSET_MARGIN_MS) == offset(ms + OFFSET_MARGIN_MS) {
            0
        } else {
            OFFSET_MARGIN_MS
        }
    }

    /// Starts of `w` placed on the time line, for local times from about `from_ms`, in order
    /// of local time, while `keep` says to go on.
    fn starts(&self, w: &Window, from_ms: i64, mut keep: impl FnMut(i64) -> bool) {
        let from = self.local(from_ms - self.margin(from_ms)).and_utc();
        for naive in w.after(&from) {
            let at = place(&self.tz, naive.naive_utc());
            if !keep(at) {
                break;
            }
        }
    }

    /// The end of the window of `w` that contains `now`, if one does: the latest start at or
    /// before `now`, found by walking back from `now` (one step, unless a DST change is near),
    /// so a window that starts every second costs no more than one that starts weekly.
    fn covering_end_of(&self, w: &Window, now: i64) -> Option<i64> {
        let margin = self.margin(now);
        let local_ms = |ms: i64| self.local(ms).and_utc().timestamp_millis();
        // Cron works in whole seconds and `before` is exclusive: a start at `now` counts.
        let top = DateTime::<Utc>::from_timestamp_millis(local_ms(now + margin) + 1000)?;
        let mut latest: Option<i64> = None;
        for naive in w.before(&top) {
            let at = place(&self.tz, naive.naive_utc());
            if at <= now {
                latest = Some(latest.map_or(at, |l| l.max(at)));
            }
            let floor = match latest {
                Some(l) => local_ms(l) - margin,
                None => local_ms(now - w.duration_ms) - margin,
            };
            if naive.timestamp_millis() < floor {
                break;
            }
        }
        latest
            .map(|start| start + w.duration_ms)
            .filter(|&end| end > now)
    }

    /// Ends of windows that contain `now`.
    fn covering_end(&self, now: i64) -> Option<i64> {
        self.windows
            .iter()
            .filter_map(|w| self.covering_end_of(w, now))
            .max()
    }

    /// The first window start after `now` (exclusive), however far ahead (a window on
    /// 29 February opens years apart).
    fn next_start(&self, now: i64) -> Option<i64> {
        let mut best: Option<i64> = None;
        for w in &self.windows {
            let mut first: Option<i64> = None;
            self.starts(w, now, |start| {
                if start > now {
                    first = Some(first.map_or(start, |f| f.min(start)));
                }
                // Local order and instant order can differ by the size of a DST change; keep
                // looking a little past the first hit when one is near.
                first.is_none_or(|f| start <= f + self.margin(f))
            });
            if let Some(f) = first {
                best = Some(best.map_or(f, |b| b.min(f)));
            }
        }
        best
    }

    /// When the off-peak period that contains `at` ends (the union of overlapping windows),
    /// and whether that is really its end: windows that keep overlapping are followed for
    /// [`MAX_HOPS`] windows, and a period still open then is reported as open until there.
    fn close_after(&self, at: i64) -> Option<(i64, bool)> {
        let mut close = self.covering_end(at)?;
        for _ in 0..MAX_HOPS {
            match self.covering_end(close) {
                Some(later) if later > close => close = later,
                _ => return Some((close, true)),
            }
        }
        Some((close, false))
    }

    /// Open at `now`?
    pub fn is_open(&self, now: i64) -> bool {
        self.covering_end(now).is_some()
    }

    /// Open now, next opening and next closing (`None` when the windows overlap without a
    /// gap for as far as they are followed: open for good, as far as can be told).
    pub fn status(&self, now: i64) -> Status {
        if let Some((close, ends)) = self.close_after(now) {
            return Status {
                open: true,
                next_open: None,
                next_close: ends.then_some(close),
            };
        }
        let next_open = self.next_start(now);
        Status {
            open: false,
            next_open,
            next_close: next_open
                .and_then(|o| self.close_after(o))
                .and_then(|(c, ends)| ends.then_some(c)),
        }
    }

    /// The next `n` open periods from `now` (the current one first if open), as (open, close);
    /// a period that does not end within 64 windows is cut there.
    pub fn upcoming(&self, now: i64, n: usize) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        let mut at = now;
        while out.len() < n {
            let (open, close) = match self.close_after(at) {
                Some((close, _)) => (at, close),
                None => match self
                    .next_start(at)
                    .and_then(|o| Some((o, self.close_after(o)?.0)))
                {
                    Some(period) => period,
                    None => break,
                },
            };
            out.push((open, close));
            at = close;
        }
        out
    }
}

/// Overlapping windows followed to find where an open period ends.
const MAX_HOPS: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    fn at(ms: i64) -> String {
        crate::clock::rfc3339(ms)
    }

    fn offpeak(tz: &str, windows: &[(&str, i64)]) -> OffPeak {
        OffPeak {
            tz: tz.parse().unwrap(),
            windows: windows
                .iter()
                .map(|(e, d)| Window::new(e, *d).unwrap())
                .collect(),
        }
    }

    const H: i64 = 3_600_000;

    /// The default windows (SPEC §3): weekday nights 19:00 + 11 h, weekends from Sat 00:00 + 48 h.
    fn default_us() -> OffPeak {
        offpeak(
            "America/New_York",
            &[("0 0 19 * * Mon-Fri", 11 * H), ("0 0 0 * * Sat", 48 * H)],
        )
    }

    #[test]
    fn weekday_nights_and_weekends() {
        let o = default_us();
        // Friday 2026-11-27 14:00 EST (19:00Z) is closed; opens at 19:00 EST = 00:00Z.
        let s = o.status(ms("2026-11-27T19:00:00Z"));
        assert!(!s.open);
        assert_eq!(at(s.next_open.unwrap()), "2026-11-28T00:00:00.000Z");
        // Friday night runs into the weekend window: one period until Monday 00:00 EST.
        assert_eq!(at(s.next_close.unwrap()), "2026-11-30T05:00:00.000Z");
        assert!(o.is_open(ms("2026-11-28T04:59:59Z")));
        assert!(o.is_open(ms("2026-11-29T12:00:00Z")), "Sunday");
        assert!(!o.is_open(ms("2026-11-30T15:00:00Z")), "Monday 10:00 EST");
        assert!(o.is_open(ms("2026-12-01T00:00:00Z")), "Monday 19:00 EST");
        assert!(o.is_open(ms("2026-12-01T10:59:59Z")));
        assert!(!o.is_open(ms("2026-12-01T11:00:00Z")), "Tuesday 06:00 EST");
        let next = o.upcoming(ms("2026-11-30T15:00:00Z"), 2);
        assert_eq!(
            next.iter()
                .map(|(a, b)| (at(*a), at(*b)))
                .collect::<Vec<_>>(),
            vec![
                (
                    "2026-12-01T00:00:00.000Z".into(),
                    "2026-12-01T11:00:00.000Z".into()
                ),
                (
                    "2026-12-02T00:00:00.000Z".into(),
                    "2026-12-02T11:00:00.000Z".into()
                )
            ]
        );
    }

    #[test]
    fn new_york_spring_forward() {
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT.
        let o = offpeak("America/New_York", &[("0 30 2 * * *", H)]);
        // 02:30 does not exist that day: it starts at 03:30 EDT (07:30Z), shifted by the gap.
        let s = o.status(ms("2026-03-08T06:00:00Z"));
        assert_eq!(at(s.next_open.unwrap()), "2026-03-08T07:30:00.000Z");
        assert_eq!(at(s.next_close.unwrap()), "2026-03-08T08:30:00.000Z");
        // The day before and after, 02:30 local as usual.
        assert_eq!(
            at(o.status(ms("2026-03-07T00:00:00Z")).next_open.unwrap()),
            "2026-03-07T07:30:00.000Z"
        );
        assert_eq!(
            at(o.status(ms("2026-03-09T00:00:00Z")).next_open.unwrap()),
            "2026-03-09T06:30:00.000Z"
        );
        // A 19:00 + 11 h window across the change lasts 11 real hours: ends 07:00 EDT.
        let night = offpeak("America/New_York", &[("0 0 19 * * *", 11 * H)]);
        let s = night.status(ms("2026-03-08T01:00:00Z"));
        assert!(s.open, "Saturday 20:00 EST");
        assert_eq!(
            at(s.next_close.unwrap()),
            "2026-03-08T11:00:00.000Z",
            "06:00 EST + 11 h = 07:00 EDT"
        );
    }

    #[test]
    fn new_york_fall_back() {
        // 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
        let o = offpeak("America/New_York", &[("0 30 1 * * *", 10 * 60_000)]);
        let s = o.status(ms("2026-11-01T04:00:00Z"));
        assert_eq!(
            at(s.next_open.unwrap()),
            "2026-11-01T05:30:00.000Z",
            "01:30 EDT, the first one"
        );
        // Not again at 01:30 EST (06:30Z).
        let after = o.status(ms("2026-11-01T05:45:00Z"));
        assert!(!after.open);
        assert_eq!(
            at(after.next_open.unwrap()),
            "2026-11-02T06:30:00.000Z",
            "next day 01:30 EST"
        );
        assert!(!o.is_open(ms("2026-11-01T06:35:00Z")));
    }

    #[test]
    fn berlin_spring_forward_and_fall_back() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST. 2026-10-25: 03:00 CEST falls back to 02:00 CET.
        let o = offpeak("Europe/Berlin", &[("0 15 2 * * *", 30 * 60_000)]);
        let spring = o.status(ms("2026-03-29T00:00:00Z"));
        assert_eq!(
            at(spring.next_open.unwrap()),
            "2026-03-29T01:15:00.000Z",
            "02:15 CET + 1 h gap = 03:15 CEST"
        );
        let fall = o.status(ms("2026-10-25T00:00:00Z"));
        assert_eq!(
            at(fall.next_open.unwrap()),
            "2026-10-25T00:15:00.000Z",
            "02:15 CEST, first of two"
        );
        assert_eq!(
            at(o.status(ms("2026-10-25T00:50:00Z")).next_open.unwrap()),
            "2026-10-26T01:15:00.000Z",
            "not again at 02:15 CET"
        );
        // A weekend window across the fall-back change lasts 48 real hours.
        let weekend = offpeak("Europe/Berlin", &[("0 0 0 * * Sat", 48 * H)]);
        let s = weekend.status(ms("2026-10-24T12:00:00Z"));
        assert!(s.open);
        assert_eq!(
            at(s.next_close.unwrap()),
            "2026-10-25T22:00:00.000Z",
            "Sat 00:00 CEST + 48 h"
        );
    }

    #[test]
    fn overlapping_windows_form_one_period() {
        let o = offpeak("UTC", &[("0 0 1 * * *", 2 * H), ("0 0 2 * * *", 2 * H)]);
        let s = o.status(ms("2026-11-27T01:30:00Z"));
        assert!(s.open);
        assert_eq!(at(s.next_close.unwrap()), "2026-11-27T04:00:00.000Z");
        assert!(!o.is_open(ms("2026-11-27T04:00:00Z")), "end is exclusive");
        assert!(o.is_open(ms("2026-11-27T01:00:00Z")), "start is inclusive");
    }

    #[test]
    fn crontab_weekday_numbers_open_monday_to_friday_evenings() {
        // 2026-11-30 is a Monday. 1-5 is Monday to Friday in crontab, not Sunday to Thursday.
        for expr in ["0 0 19 * * 1-5", "0 19 * * 1-5"] {
            let o = offpeak("America/New_York", &[(expr, 11 * H)]);
            let opens: Vec<String> = o
                .upcoming(ms("2026-11-29T12:00:00Z"), 6)
                .iter()
                .map(|(a, _)| {
                    DateTime::<Utc>::from_timestamp_millis(*a)
                        .unwrap()
                        .with_timezone(&o.tz)
                        .format("%a %H:%M")
                        .to_string()
                })
                .collect();
            assert_eq!(
                opens,
                [
                    "Mon 19:00",
                    "Tue 19:00",
                    "Wed 19:00",
                    "Thu 19:00",
                    "Fri 19:00",
                    "Mon 19:00"
                ],
                "{expr}"
            );
        }
        // Either day field: the 1st of the month (a Tuesday) and Sundays.
        let o = offpeak("UTC", &[("0 3 1 * 0", H)]);
        assert!(o.is_open(ms("2026-12-01T03:30:00Z")), "Tuesday the 1st");
        assert!(o.is_open(ms("2026-12-06T03:30:00Z")), "Sunday the 6th");
        assert!(!o.is_open(ms("2026-12-02T03:30:00Z")));
    }

    #[test]
    fn a_window_every_second_is_answered_from_the_latest_start() {
        // Walking forward from `now - duration` would visit 82 800 starts per question.
        let o = offpeak("UTC", &[("* * * * * *", 23 * H)]);
        let now = ms("2026-11-30T10:00:00.400Z");
        assert!(o.is_open(now));
        assert_eq!(o.covering_end(now), Some(ms("2026-12-01T09:00:00Z")));
        let s = o.status(now);
        assert!(s.open && s.next_close.is_none(), "open with no end: {s:?}");
        // Near a DST change the search widens, and the answer holds.
        let ny = offpeak("America/New_York", &[("* * * * * *", 2_000)]);
        let change = ms("2026-03-08T07:00:00Z"); // 02:00 EST becomes 03:00 EDT
        for t in [change - 1_500, change, change + 500, change + 3_600_000] {
            assert!(ny.is_open(t), "{}", at(t));
            assert_eq!(
                ny.covering_end(t),
                Some(t - t.rem_euclid(1000) + 2_000),
                "{}",
                at(t)
            );
        }
        // A weekly window: the latest start may be days back.
        let weekly = offpeak("UTC", &[("0 0 * * Mon", 50 * H)]);
        assert!(weekly.is_open(ms("2026-12-01T01:00:00Z")), "Tuesday 01:00");
        assert!(
            !weekly.is_open(ms("2026-12-02T03:00:00Z")),
            "Wednesday 03:00"
        );
    }

    #[test]
    fn rare_windows_years_ahead_are_found() {
        let o = offpeak("UTC", &[("0 0 29 2 *", H)]);
        let s = o.status(ms("2026-11-30T00:00:00Z"));
        assert_eq!(at(s.next_open.unwrap()), "2028-02-29T00:00:00.000Z");
        assert_eq!(o.upcoming(ms("2026-11-30T00:00:00Z"), 2).len(), 2);
    }

    #[test]
    fn bad_expressions_are_refused() {
        assert!(
            Window::new("every night", H)
                .unwrap_err()
                .contains("invalid cron")
        );
        assert!(Window::new("0 0 19 * * Mon-Fri", 0).is_err());
    }
}
