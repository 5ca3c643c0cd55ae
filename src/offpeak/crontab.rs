//! Cron expressions with crontab(5) meanings, compiled to `cron` crate schedules that mean
//! exactly that.
//!
//! The `cron` crate reads six or seven fields, numbers weekdays 1 = Sunday … 7 = Saturday and
//! requires day-of-month AND day-of-week to match. crontab(5) reads five fields (minute
//! first), numbers weekdays 0–7 with 0 and 7 = Sunday, and opens on a day that matches
//! EITHER day field when both are restricted (neither starts with `*`). So every field is
//! parsed here into the set of values it means and handed to the crate as an explicit list
//! (weekdays by name), and an expression with both day fields restricted becomes two
//! schedules whose union is the window's starts. Nothing is passed through unread: whatever
//! the crate would make of a string, the days are the ones crontab would pick.

use std::str::FromStr;

/// One field's definition: its range and, for months and weekdays, its names.
struct FieldDef {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const SECOND: FieldDef = FieldDef::numeric("second", 0, 59);
const MINUTE: FieldDef = FieldDef::numeric("minute", 0, 59);
const HOUR: FieldDef = FieldDef::numeric("hour", 0, 23);
const DAY_OF_MONTH: FieldDef = FieldDef::numeric("day of month", 1, 31);
const MONTH: FieldDef = FieldDef {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
/// 0–7, 0 and 7 both Sunday (crontab(5)).
const DAY_OF_WEEK: FieldDef = FieldDef {
    name: "day of week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

impl FieldDef {
    /// A field of numbers only.
    const fn numeric(name: &'static str, min: u32, max: u32) -> FieldDef {
        FieldDef {
            name,
            min,
            max,
            names: &[],
        }
    }
}

/// The set of values a field means, one bit per value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Set(u64);

impl Set {
    fn values(self, def: &FieldDef) -> impl Iterator<Item = u32> + '_ {
        (def.min..=def.max).filter(move |v| self.0 & (1 << v) != 0)
    }

    fn is_full(self, def: &FieldDef) -> bool {
        (def.min..=def.max).all(|v| self.0 & (1 << v) != 0)
    }
}

fn value(def: &FieldDef, text: &str, whole: &str) -> Result<u32, String> {
    if let Some(i) = def.names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        // Month names are 1-based, weekday names 0-based.
        return Ok(i as u32 + u32::from(def.min == 1));
    }
    let v: u32 = text.parse().map_err(|_| {
        format!(
            "{} field {whole:?}: {text:?} is not a number{}",
            def.name,
            if def.names.is_empty() {
                String::new()
            } else {
                format!(" or a name ({})", def.names.join(", "))
            }
        )
    })?;
    if v < def.min || v > def.max {
        return Err(format!(
            "{} field {whole:?}: {v} is outside {}-{}",
            def.name, def.min, def.max
        ));
    }
    Ok(v)
}

/// Parses one field: `*`, `?` (the same as `*`), `N`, `A-B`, names, `*/S`, `A-B/S`, `A/S`
/// (from A to the maximum), and comma lists of these.
fn field(def: &FieldDef, text: &str) -> Result<Set, String> {
    let mut set = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!(
                        "{} field {text:?}: step {s:?} is not a positive number",
                        def.name
                    )
                })?;
                (r, step)
            }
            None => (item, 1),
        };
        let (lo, hi) = match range {
            "*" | "?" => (def.min, def.max),
            r => match r.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (value(def, a, text)?, value(def, b, text)?);
                    if a > b {
                        return Err(format!(
                            "{} field {text:?}: the range {r} runs backwards, which crontab does not allow",
                            def.name
                        ));
                    }
                    (a, b)
                }
                None => {
                    let a = value(def, r, text)?;
                    (a, if item.contains('/') { def.max } else { a })
                }
            },
        };
        for v in (lo..=hi).step_by(step as usize) {
            set |= 1 << v;
        }
    }
    if def.name == DAY_OF_WEEK.name && set & (1 << 7) != 0 {
        set = (set | 1) & !(1 << 7);
    }
    Ok(Set(set))
}

/// crontab(5)'s test for "restricted": the field does not start with `*`.
fn restricted(text: &str) -> bool {
    !(text.starts_with('*') || text == "?")
}

fn list(set: Set, def: &FieldDef) -> String {
    if set.is_full(def) {
        return "*".into();
    }
    set.values(def)
        .map(|v| match def.name {
            n if n == DAY_OF_WEEK.name => DAY_OF_WEEK.names[v as usize].to_string(),
            _ => v.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Compiles `expr` (5 fields, minute first, or 6 with seconds first; `@daily` and the
/// other crontab nicknames) into schedules whose union is when it fires.
pub fn compile(expr: &str) -> Result<Vec<cron::Schedule>, String> {
    let expr = expr.trim();
    let expanded = match expr.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        "@reboot" => return Err("@reboot names no time of day, so it cannot open a window".into()),
        e if e.starts_with('@') => {
            return Err(format!(
                "unknown nickname {expr:?} (@yearly, @monthly, @weekly, @daily, @hourly)"
            ));
        }
        _ => expr,
    };
    let parts: Vec<&str> = expanded.split_whitespace().collect();
    let (sec, rest) = match parts.len() {
        5 => ("0", &parts[..]),
        6 => (parts[0], &parts[1..]),
        n => {
            return Err(format!(
                "{n} fields: write 5 (minute hour day-of-month month day-of-week, as crontab) or 6 (seconds first)"
            ));
        }
    };
    let [min, hour, dom, month, dow] = [rest[0], rest[1], rest[2], rest[3], rest[4]];
    let sets = (
        field(&SECOND, sec)?,
        field(&MINUTE, min)?,
        field(&HOUR, hour)?,
        field(&DAY_OF_MONTH, dom)?,
        field(&MONTH, month)?,
        field(&DAY_OF_WEEK, dow)?,
    );
    let time = format!(
        "{} {} {}",
        list(sets.0, &SECOND),
        list(sets.1, &MINUTE),
        list(sets.2, &HOUR)
    );
    let month = list(sets.4, &MONTH);
    let (dom_list, dow_list) = (list(sets.3, &DAY_OF_MONTH), list(sets.5, &DAY_OF_WEEK));
    let days: Vec<(String, String)> = if restricted(dom) && restricted(dow) {
        vec![(dom_list, "*".into()), ("*".into(), dow_list)]
    } else {
        vec![(dom_list, dow_list)]
    };
    let schedules = days
        .into_iter()
        .map(|(d, w)| {
            let s = format!("{time} {d} {month} {w}");
            cron::Schedule::from_str(&s)
                .map_err(|e| format!("cannot be honoured ({s:?} was refused underneath: {e})"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if schedules
        .iter()
        .all(|s| s.upcoming(chrono::Utc).next().is_none())
    {
        return Err("matches no date (a day that no month has, such as 30 February)".into());
    }
    Ok(schedules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, NaiveDate, TimeZone, Utc};

    /// The weekdays (Mon = 0) of the starts in the week of Monday 2026-11-30, in order.
    fn weekdays(expr: &str) -> Vec<u32> {
        let from = Utc.with_ymd_and_hms(2026, 11, 29, 23, 59, 59).unwrap();
        let until = Utc.with_ymd_and_hms(2026, 12, 7, 0, 0, 0).unwrap();
        let mut days: Vec<u32> = compile(expr)
            .unwrap()
            .iter()
            .flat_map(|s| {
                s.after(&from)
                    .take_while(|t| *t < until)
                    .map(|t| t.weekday().num_days_from_monday())
                    .collect::<Vec<_>>()
            })
            .collect();
        days.sort();
        days.dedup();
        days
    }

    #[test]
    fn numeric_weekdays_follow_crontab() {
        assert_eq!(weekdays("0 0 19 * * 1-5"), [0, 1, 2, 3, 4], "Mon-Fri");
        assert_eq!(weekdays("0 19 * * 1-5"), [0, 1, 2, 3, 4], "5 fields");
        assert_eq!(weekdays("0 19 * * Mon-Fri"), [0, 1, 2, 3, 4]);
        assert_eq!(weekdays("0 19 * * 0"), [6], "0 is Sunday");
        assert_eq!(weekdays("0 19 * * 7"), [6], "7 is Sunday");
        assert_eq!(weekdays("0 19 * * 5-7"), [4, 5, 6]);
        assert_eq!(weekdays("0 19 * * 6,0"), [5, 6]);
        assert_eq!(weekdays("0 19 * * */2"), [1, 3, 5, 6], "0,2,4,6");
        assert_eq!(weekdays("0 19 * * sat"), [5]);
        assert_eq!(weekdays("@weekly"), [6]);
        assert_eq!(weekdays("0 0 19 * * ?"), [0, 1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn both_day_fields_restricted_means_either() {
        // The 1st and 15th of the month, and every Friday.
        let s = compile("0 3 1,15 * Fri").unwrap();
        assert_eq!(s.len(), 2);
        let from = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();
        let mut days: Vec<NaiveDate> = s
            .iter()
            .flat_map(|s| {
                s.after(&from)
                    .take(4)
                    .map(|t| t.date_naive())
                    .collect::<Vec<_>>()
            })
            .collect();
        days.sort();
        days.dedup();
        let d = |m, d| NaiveDate::from_ymd_opt(2026, m, d).unwrap();
        assert_eq!(&days[..4], [d(12, 1), d(12, 4), d(12, 11), d(12, 15)]);
        // A field starting with * is not restricted: then both must match (crontab(5)).
        assert_eq!(compile("0 3 */2 * Fri").unwrap().len(), 1);
        assert_eq!(weekdays("0 3 * * Fri"), [4]);
    }

    #[test]
    fn seconds_minutes_and_ranges() {
        let s = &compile("30 */15 8-9 * * *").unwrap()[0];
        let from = Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap();
        let first: Vec<String> = s
            .after(&from)
            .take(3)
            .map(|t| t.format("%H:%M:%S").to_string())
            .collect();
        assert_eq!(first, ["08:00:30", "08:15:30", "08:30:30"]);
        let s = &compile("0 22/1 * * *").unwrap()[0];
        let hours: Vec<u32> = s
            .after(&from)
            .take(3)
            .map(|t| t.format("%H").to_string().parse().unwrap())
            .collect();
        assert_eq!(hours, [22, 23, 22], "A/S runs from A to the maximum");
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_with_the_reason() {
        let err = |e: &str| compile(e).unwrap_err();
        assert!(err("0 19 * *").contains("4 fields"), "{}", err("0 19 * *"));
        assert!(err("0 0 19 * * Mon 2027").contains("7 fields"));
        assert!(err("0 25 * * *").contains("outside 0-23"));
        assert!(err("0 19 * * 8").contains("outside 0-7"));
        assert!(err("0 19 * * Fri-Mon").contains("runs backwards"));
        assert!(err("0 19 * * Funday").contains("not a number or a name"));
        assert!(err("0 19 * * */0").contains("step"));
        assert!(err("0 0 30 2 *").contains("matches no date"));
        assert!(err("@reboot").contains("@reboot"));
        assert!(err("0 19 L * *").contains("not a number"));
    }
}
