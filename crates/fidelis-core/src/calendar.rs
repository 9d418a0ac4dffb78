//! Calendar arithmetic in a program's time zone.
//!
//! Instants are stored in UTC; calendar rules ("24 months after", "end of the month",
//! "31 December") are evaluated on the program's local clock and converted back.
//! Daylight-saving transitions are resolved deterministically: a local time that does
//! not exist (the spring-forward gap) moves forward to the first instant that does, and
//! an ambiguous one (the autumn fold) takes the earlier instant.

use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// The calendar unit a rolling expiry is rounded up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoundUp {
    Day,
    Month,
    Quarter,
    Year,
}

impl RoundUp {
    pub const NAMES: &'static str = "end_of_day, end_of_month, end_of_quarter, end_of_year";

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "end_of_day" => Self::Day,
            "end_of_month" => Self::Month,
            "end_of_quarter" => Self::Quarter,
            "end_of_year" => Self::Year,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Day => "end_of_day",
            Self::Month => "end_of_month",
            Self::Quarter => "end_of_quarter",
            Self::Year => "end_of_year",
        }
    }
}

/// The UTC instant of a local wall-clock time, resolving gaps and folds as the module
/// documentation says.
pub fn local_to_utc(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    // A gap is at most a few hours wide in every zone of the tz database; step through it
    // a minute at a time (the loop runs only inside a gap).
    let mut probe = local;
    for _ in 0..(24 * 60) {
        if let Some(t) = tz.from_local_datetime(&probe).earliest() {
            return t.with_timezone(&Utc);
        }
        probe += Duration::minutes(1);
    }
    // Unreachable for real zones; fall back to reading the wall clock as UTC.
    Utc.from_utc_datetime(&local)
}

fn to_local(tz: Tz, t: DateTime<Utc>) -> NaiveDateTime {
    t.with_timezone(&tz).naive_local()
}

/// `t` plus `months` calendar months on the local clock. The day is clamped to the end of
/// a shorter month: 31 January + 1 month is 28 (or 29) February.
pub fn add_months(tz: Tz, t: DateTime<Utc>, months: u32) -> DateTime<Utc> {
    let local = to_local(tz, t);
    match local.checked_add_months(Months::new(months)) {
        Some(later) => local_to_utc(tz, later),
        None => DateTime::<Utc>::MAX_UTC,
    }
}

/// `t` plus `days` calendar days on the local clock (the same wall-clock time, even
/// across a daylight-saving change).
pub fn add_days(tz: Tz, t: DateTime<Utc>, days: u32) -> DateTime<Utc> {
    let local = to_local(tz, t);
    match local.checked_add_days(chrono::Days::new(u64::from(days))) {
        Some(later) => local_to_utc(tz, later),
        None => DateTime::<Utc>::MAX_UTC,
    }
}

/// `date` as `YYYY-MM-DD`, written digit by digit: promotions format the journal's local
/// date for every evaluation, and a `strftime` pattern is parsed anew on each call. Years
/// outside 0–9999 (never a loyalty date) take chrono's form.
pub fn iso_date(date: NaiveDate) -> String {
    use chrono::Datelike;
    let year = date.year();
    if !(0..=9999).contains(&year) {
        return date.format("%Y-%m-%d").to_string();
    }
    let digit = |n: u32| char::from(b'0' + (n % 10) as u8);
    let (y, m, d) = (year as u32, date.month(), date.day());
    let mut out = String::with_capacity(10);
    for c in [
        digit(y / 1000),
        digit(y / 100),
        digit(y / 10),
        digit(y),
        '-',
        digit(m / 10),
        digit(m),
        '-',
        digit(d / 10),
        digit(d),
    ] {
        out.push(c);
    }
    out
}

/// A date read as `NaiveDate::parse_from_str(s, "%Y-%m-%d")` reads it, the usual
/// `YYYY-MM-DD` digit by digit (a member's birthday is read for every journal of a program
/// with a birthday bonus; chrono parses its pattern anew on each call).
pub fn parse_iso_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    let canonical = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && [0, 1, 2, 3, 5, 6, 8, 9]
            .iter()
            .all(|&i| b[i].is_ascii_digit());
    if !canonical {
        return NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
    }
    let n = |from: usize, to: usize| {
        b[from..to]
            .iter()
            .fold(0u32, |v, d| v * 10 + u32::from(d - b'0'))
    };
    NaiveDate::from_ymd_opt(n(0, 4) as i32, n(5, 7), n(8, 10))
}

/// The local date of an instant.
pub fn local_date(tz: Tz, t: DateTime<Utc>) -> NaiveDate {
    to_local(tz, t).date()
}

/// The instant the local day `date` starts.
pub fn start_of_day(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    local_to_utc(tz, date.and_time(chrono::NaiveTime::MIN))
}

/// The end of the local day, month, quarter or year containing `t`: the first instant of
/// the next one. With half-open validity, a point expiring then is spendable through the
/// whole of the period.
pub fn end_of(tz: Tz, t: DateTime<Utc>, unit: RoundUp) -> DateTime<Utc> {
    let date = local_date(tz, t);
    let next = match unit {
        RoundUp::Day => date.succ_opt(),
        RoundUp::Month => first_of_month(date.year(), date.month()).and_then(next_month),
        RoundUp::Quarter => {
            let quarter_start = (date.month() - 1) / 3 * 3 + 1;
            first_of_month(date.year(), quarter_start)
                .and_then(|d| d.checked_add_months(Months::new(3)))
        }
        RoundUp::Year => NaiveDate::from_ymd_opt(date.year() + 1, 1, 1),
    };
    next.map_or(DateTime::<Utc>::MAX_UTC, |d| start_of_day(tz, d))
}

fn first_of_month(year: i32, month: u32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(year, month, 1)
}

fn next_month(d: NaiveDate) -> Option<NaiveDate> {
    d.checked_add_months(Months::new(1))
}

/// The end of the local day `month`/`day` (clamped to the month's length, so 29 February
/// in a common year is 28 February) of `year`.
pub fn end_of_calendar_day(tz: Tz, year: i32, month: u32, day: u32) -> DateTime<Utc> {
    let Some(first) = first_of_month(year, month) else {
        return DateTime::<Utc>::MAX_UTC;
    };
    let last_day = next_month(first)
        .and_then(|d| d.pred_opt())
        .map_or(28, |d| d.day());
    let date = NaiveDate::from_ymd_opt(year, month, day.min(last_day)).unwrap_or(first);
    date.succ_opt()
        .map_or(DateTime::<Utc>::MAX_UTC, |d| start_of_day(tz, d))
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso_dates_read_as_chrono_formats_them() {
        let mut d = NaiveDate::from_ymd_opt(1999, 12, 25).expect("a date");
        for _ in 0..4_000 {
            assert_eq!(super::iso_date(d), d.format("%Y-%m-%d").to_string());
            d = d.succ_opt().expect("a next day");
        }
        for d in [
            NaiveDate::from_ymd_opt(5, 1, 9),
            NaiveDate::from_ymd_opt(9999, 12, 31),
            NaiveDate::from_ymd_opt(10_000, 1, 1),
            NaiveDate::from_ymd_opt(-1, 3, 4),
        ] {
            let d = d.expect("a date");
            assert_eq!(super::iso_date(d), d.format("%Y-%m-%d").to_string());
        }
    }

    #[test]
    fn iso_dates_parse_as_chrono_parses_them() {
        let mut d = NaiveDate::from_ymd_opt(1999, 12, 25).expect("a date");
        for _ in 0..4_000 {
            let s = super::iso_date(d);
            assert_eq!(super::parse_iso_date(&s), Some(d));
            d = d.succ_opt().expect("a next day");
        }
        for s in [
            "2026-02-29",
            "2024-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-1-5",
            "2026-01-5",
            "0005-01-09",
            "+10000-01-01",
            "-0001-03-04",
            "2026-01-01 ",
            "2026/01/01",
            "",
            "abcd-ef-gh",
            "2026-06-31",
            "9999-12-31",
        ] {
            assert_eq!(
                super::parse_iso_date(s),
                NaiveDate::parse_from_str(s, "%Y-%m-%d").ok(),
                "{s:?}"
            );
        }
    }

    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("an RFC 3339 instant")
            .with_timezone(&Utc)
    }

    const BERLIN: Tz = chrono_tz::Europe::Berlin;

    #[test]
    fn months_clamp_to_the_shorter_month() {
        let cases = [
            ("2026-01-31T12:00:00+01:00", 1, "2026-02-28T12:00:00+01:00"),
            ("2028-01-31T12:00:00+01:00", 1, "2028-02-29T12:00:00+01:00"),
            ("2026-03-31T12:00:00+02:00", 1, "2026-04-30T12:00:00+02:00"),
            ("2026-11-25T10:42:00+01:00", 24, "2028-11-25T10:42:00+01:00"),
            // Crossing into summer time keeps the wall-clock time, not the UTC offset.
            ("2026-02-15T09:00:00+01:00", 1, "2026-03-15T09:00:00+01:00"),
            ("2026-03-15T09:00:00+01:00", 1, "2026-04-15T09:00:00+02:00"),
        ];
        for (from, months, want) in cases {
            assert_eq!(
                add_months(BERLIN, utc(from), months),
                utc(want),
                "{from} + {months}"
            );
        }
    }

    #[test]
    fn period_ends_are_local_midnights() {
        let t = utc("2026-02-10T23:30:00Z"); // already 11 February in Berlin
        assert_eq!(
            end_of(BERLIN, t, RoundUp::Day),
            utc("2026-02-12T00:00:00+01:00")
        );
        assert_eq!(
            end_of(BERLIN, t, RoundUp::Month),
            utc("2026-03-01T00:00:00+01:00")
        );
        assert_eq!(
            end_of(BERLIN, t, RoundUp::Quarter),
            utc("2026-04-01T00:00:00+02:00")
        );
        assert_eq!(
            end_of(BERLIN, t, RoundUp::Year),
            utc("2027-01-01T00:00:00+01:00")
        );
        assert_eq!(
            end_of(BERLIN, utc("2026-12-31T22:59:59Z"), RoundUp::Year),
            utc("2027-01-01T00:00:00+01:00")
        );
        assert_eq!(
            end_of(BERLIN, utc("2026-12-31T23:00:00Z"), RoundUp::Year),
            utc("2028-01-01T00:00:00+01:00")
        );
    }

    #[test]
    fn gaps_move_forward_and_folds_take_the_earlier_instant() {
        // Berlin skips 02:00–03:00 on 29 March 2026 and repeats 02:00–03:00 on 25 October.
        let gap = NaiveDate::from_ymd_opt(2026, 3, 29)
            .expect("a real date")
            .and_hms_opt(2, 30, 0)
            .expect("a real time");
        assert_eq!(local_to_utc(BERLIN, gap), utc("2026-03-29T03:00:00+02:00"));
        let fold = NaiveDate::from_ymd_opt(2026, 10, 25)
            .expect("a real date")
            .and_hms_opt(2, 30, 0)
            .expect("a real time");
        assert_eq!(local_to_utc(BERLIN, fold), utc("2026-10-25T02:30:00+02:00"));
        // Santiago's clocks jump from 00:00 to 01:00: the day starts at 01:00.
        let santiago: Tz = chrono_tz::America::Santiago;
        let day = NaiveDate::from_ymd_opt(2026, 9, 6).expect("a real date");
        assert_eq!(
            start_of_day(santiago, day),
            utc("2026-09-06T01:00:00-03:00")
        );
    }

    #[test]
    fn calendar_days_clamp_in_common_years() {
        assert_eq!(
            end_of_calendar_day(BERLIN, 2027, 2, 29),
            utc("2027-03-01T00:00:00+01:00")
        );
        assert_eq!(
            end_of_calendar_day(BERLIN, 2026, 12, 31),
            utc("2027-01-01T00:00:00+01:00")
        );
    }
}
