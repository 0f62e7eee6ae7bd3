//! NCRONTAB schedules with seconds, as timer triggers use them: `sec min hour day month day-of-week`.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Timelike, Utc};
use std::fmt;

/// Why a schedule expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schedule `{expression}`: {message}")]
pub struct ScheduleError {
    /// The expression as written.
    pub expression: String,
    /// What is wrong with it.
    pub message: String,
}

/// A parsed six-field NCRONTAB schedule, evaluated in UTC.
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    text: String,
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.text)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

struct Field {
    label: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [Field; 6] = [
    Field {
        label: "second",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        label: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        label: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        label: "day of month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        label: "month",
        min: 1,
        max: 12,
        names: &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
    },
    // NCrontab numbers days 0-6 from Sunday; 7 is accepted as Sunday, as most crons do.
    Field {
        label: "day of week",
        min: 0,
        max: 7,
        names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    },
];

impl Schedule {
    /// Parses `sec min hour day month dow`; each field takes `*`, numbers, names, lists, ranges and steps.
    pub fn parse(expression: &str) -> Result<Self, ScheduleError> {
        let fail = |message: String| ScheduleError {
            expression: expression.to_owned(),
            message,
        };
        let parts: Vec<&str> = expression.split_whitespace().collect();
        if parts.len() != 6 {
            return Err(fail(format!(
                "expected 6 fields (second minute hour day month day-of-week), found {}",
                parts.len()
            )));
        }
        let mut masks = [0u64; 6];
        for (i, (part, field)) in parts.iter().zip(FIELDS.iter()).enumerate() {
            masks[i] = parse_field(part, field)
                .map_err(|m| fail(format!("{} field `{part}`: {m}", field.label)))?;
        }
        // Fold day-of-week 7 onto Sunday.
        if masks[5] & (1 << 7) != 0 {
            masks[5] = (masks[5] & !(1 << 7)) | 1;
        }
        Ok(Self {
            text: parts.join(" "),
            seconds: masks[0],
            minutes: masks[1],
            hours: masks[2],
            days: masks[3],
            months: masks[4],
            weekdays: masks[5],
        })
    }

    /// The first occurrence strictly after `after`, or `None` if the schedule never fires (e.g. `0 0 0 30 2 *`).
    ///
    /// Day of month and day of week must both match, as in NCrontab (classic cron ORs them).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = after.naive_utc().with_nanosecond(0)? + Duration::seconds(1);
        let limit_year = start.year() + 8;
        let mut t = start;
        loop {
            if t.year() > limit_year {
                return None;
            }
            if !bit(self.months, t.month()) {
                t = first_of_next_month(t)?;
                continue;
            }
            if !bit(self.days, t.day()) || !bit(self.weekdays, t.weekday().num_days_from_sunday()) {
                t = midnight(t.date().succ_opt()?);
                continue;
            }
            if !bit(self.hours, t.hour()) {
                t = match next_bit(self.hours, t.hour() + 1, 23) {
                    Some(h) => t.date().and_hms_opt(h, 0, 0)?,
                    None => midnight(t.date().succ_opt()?),
                };
                continue;
            }
            if !bit(self.minutes, t.minute()) {
                t = match next_bit(self.minutes, t.minute() + 1, 59) {
                    Some(m) => t.date().and_hms_opt(t.hour(), m, 0)?,
                    None => t.date().and_hms_opt(t.hour(), 0, 0)? + Duration::hours(1),
                };
                continue;
            }
            if !bit(self.seconds, t.second()) {
                t = match next_bit(self.seconds, t.second() + 1, 59) {
                    Some(s) => t.date().and_hms_opt(t.hour(), t.minute(), s)?,
                    None => t.date().and_hms_opt(t.hour(), t.minute(), 0)? + Duration::minutes(1),
                };
                continue;
            }
            return Some(t.and_utc());
        }
    }
}

fn bit(mask: u64, value: u32) -> bool {
    mask & (1u64 << value) != 0
}

fn next_bit(mask: u64, from: u32, max: u32) -> Option<u32> {
    (from..=max).find(|v| bit(mask, *v))
}

fn midnight(date: NaiveDate) -> NaiveDateTime {
    date.and_hms_opt(0, 0, 0).expect("midnight is a valid time")
}

fn first_of_next_month(t: NaiveDateTime) -> Option<NaiveDateTime> {
    let (y, m) = if t.month() == 12 {
        (t.year() + 1, 1)
    } else {
        (t.year(), t.month() + 1)
    };
    Some(midnight(NaiveDate::from_ymd_opt(y, m, 1)?))
}

fn parse_field(text: &str, field: &Field) -> Result<u64, String> {
    let mut mask = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err("empty list item".into());
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("step `{s}` is not a number"))?;
                if step == 0 {
                    return Err("step must be at least 1".into());
                }
                (r, Some(step))
            }
            None => (item, None),
        };
        // `*` and `a/n` on day-of-week stop at Saturday so that 7 does not add a second Sunday.
        let open_max = if field.label == "day of week" {
            6
        } else {
            field.max
        };
        let (lo, hi) = if range == "*" {
            (field.min, open_max)
        } else if let Some((a, b)) = range.split_once('-') {
            let lo = parse_value(a, field)?;
            let hi = parse_value(b, field)?;
            if lo > hi {
                return Err(format!("range {lo}-{hi} is backwards"));
            }
            (lo, hi)
        } else {
            let v = parse_value(range, field)?;
            // NCrontab reads `a/n` as "from a to the end, every n".
            (v, if step.is_some() { open_max } else { v })
        };
        let step = step.unwrap_or(1);
        let mut v = lo;
        while v <= hi {
            mask |= 1u64 << v;
            v += step;
        }
    }
    Ok(mask)
}

fn parse_value(text: &str, field: &Field) -> Result<u32, String> {
    let value = match text.parse::<u32>() {
        Ok(v) => v,
        Err(_) => {
            let lower = text.to_ascii_lowercase();
            let index = field
                .names
                .iter()
                .position(|n| *n == lower)
                .ok_or_else(|| format!("`{text}` is not a number"))?;
            index as u32 + field.min
        }
    };
    if value < field.min || value > field.max {
        return Err(format!(
            "{value} is out of range {}-{}",
            field.min, field.max
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn next(expr: &str, from: DateTime<Utc>) -> DateTime<Utc> {
        Schedule::parse(expr).unwrap().next_after(from).unwrap()
    }

    #[test]
    fn every_second_and_steps() {
        assert_eq!(
            next("* * * * * *", at(2024, 1, 1, 0, 0, 0)),
            at(2024, 1, 1, 0, 0, 1)
        );
        assert_eq!(
            next("*/1 * * * * *", at(2024, 1, 1, 0, 0, 59)),
            at(2024, 1, 1, 0, 1, 0)
        );
        assert_eq!(
            next("*/10 * * * * *", at(2024, 1, 1, 0, 0, 0)),
            at(2024, 1, 1, 0, 0, 10)
        );
        assert_eq!(
            next("*/10 * * * * *", at(2024, 1, 1, 0, 0, 55)),
            at(2024, 1, 1, 0, 1, 0)
        );
        // Sub-second input still lands on the next whole matching second.
        let frac = at(2024, 1, 1, 0, 0, 9) + Duration::milliseconds(999);
        assert_eq!(next("*/10 * * * * *", frac), at(2024, 1, 1, 0, 0, 10));
    }

    #[test]
    fn lists_ranges_and_names() {
        // Every 5 minutes on weekdays 09:00-17:59.
        let s = "0 */5 9-17 * * mon-fri";
        // 2024-06-01 is a Saturday.
        assert_eq!(next(s, at(2024, 6, 1, 12, 0, 0)), at(2024, 6, 3, 9, 0, 0));
        assert_eq!(next(s, at(2024, 6, 3, 17, 55, 0)), at(2024, 6, 4, 9, 0, 0));
        assert_eq!(
            next("30 15 10,14 * * *", at(2024, 6, 3, 10, 15, 30)),
            at(2024, 6, 3, 14, 15, 30)
        );
        assert_eq!(
            next("0 0 0 1 jan,jul *", at(2024, 2, 1, 0, 0, 0)),
            at(2024, 7, 1, 0, 0, 0)
        );
        assert_eq!(
            next("0 0 0 * * 7", at(2024, 6, 3, 0, 0, 0)),
            at(2024, 6, 9, 0, 0, 0)
        );
        assert_eq!(
            next("5/20 * * * * *", at(2024, 6, 3, 0, 0, 6)),
            at(2024, 6, 3, 0, 0, 25)
        );
    }

    #[test]
    fn day_and_weekday_are_both_required() {
        // The 13th that is a Friday: 2024-09-13.
        assert_eq!(
            next("0 0 0 13 * 5", at(2024, 1, 1, 0, 0, 0)),
            at(2024, 9, 13, 0, 0, 0)
        );
    }

    #[test]
    fn leap_day_and_impossible_dates() {
        assert_eq!(
            next("0 0 12 29 2 *", at(2025, 1, 1, 0, 0, 0)),
            at(2028, 2, 29, 12, 0, 0)
        );
        assert!(
            Schedule::parse("0 0 0 30 2 *")
                .unwrap()
                .next_after(at(2024, 1, 1, 0, 0, 0))
                .is_none()
        );
    }

    #[test]
    fn year_rollover() {
        assert_eq!(
            next("0 0 0 1 1 *", at(2024, 12, 31, 23, 59, 59)),
            at(2025, 1, 1, 0, 0, 0)
        );
    }

    #[test]
    fn rejects_bad_expressions() {
        let err = Schedule::parse("0 */5 * * *").unwrap_err();
        assert!(err.message.contains("expected 6 fields"), "{err}");
        let err = Schedule::parse("0 0 24 * * *").unwrap_err();
        assert!(
            err.message
                .contains("hour field `24`: 24 is out of range 0-23"),
            "{err}"
        );
        assert!(
            Schedule::parse("*/0 * * * * *")
                .unwrap_err()
                .message
                .contains("step")
        );
        assert!(
            Schedule::parse("0 0 5-1 * * *")
                .unwrap_err()
                .message
                .contains("backwards")
        );
        assert!(
            Schedule::parse("0 0 0 * foo *")
                .unwrap_err()
                .message
                .contains("`foo` is not a number")
        );
        assert!(
            Schedule::parse("0 0 0 0 * *")
                .unwrap_err()
                .message
                .contains("out of range 1-31")
        );
        assert!(Schedule::parse("1,,2 * * * * *").is_err());
    }
}
