//! Rewards no purchase triggers: a promotion with a `trigger` is run by the scheduled jobs,
//! not by journals — on the member's birthday (that day, or during the birthday month), on
//! the anniversary of enrolment, or after a stretch without activity (win-back).
//!
//! Each award is one `adjustment` journal with an external id made of the promotion, the
//! member and the period ([`external_id`]), so it is posted once per period however often
//! the jobs run or crash; the store finds the members due ([`Trigger`] says how) and this
//! module decides, for one member and one local date, whether and for which period.

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use crate::ids::Code;

/// What starts a scheduled reward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The profile's `birthday` (`YYYY-MM-DD`) falls on the local date — or, with
    /// `whole_month`, in its month. Once per year.
    Birthday { whole_month: bool },
    /// The local date is the anniversary of enrolment (a year or more after it). Once
    /// per membership year.
    Anniversary,
    /// No accrual or redemption for `days` days (since enrolment for a member who never
    /// had one). Once per inactive stretch: activity starts a new one.
    Inactivity { days: u32 },
}

impl Trigger {
    pub fn name(self) -> &'static str {
        match self {
            Self::Birthday { .. } => "birthday",
            Self::Anniversary => "anniversary",
            Self::Inactivity { .. } => "inactivity",
        }
    }
}

/// 29 February counts as 28 February in years without it.
fn same_day(month_day: (u32, u32), date: NaiveDate) -> bool {
    match month_day {
        (2, 29) if !date.leap_year() => date.month() == 2 && date.day() == 28,
        (m, d) => date.month() == m && date.day() == d,
    }
}

/// The period of a birthday reward due on `date` to someone born on `born`: the year.
pub fn birthday_period(born: NaiveDate, date: NaiveDate, whole_month: bool) -> Option<String> {
    let due = if whole_month {
        born.month() == date.month()
    } else {
        same_day((born.month(), born.day()), date)
    };
    due.then(|| date.year().to_string())
}

/// The period of an anniversary reward due on `date` to a member enrolled (local date)
/// on `enrolled`: the year of the anniversary; none on the enrolment day itself.
pub fn anniversary_period(enrolled: NaiveDate, date: NaiveDate) -> Option<String> {
    (date.year() > enrolled.year() && same_day((enrolled.month(), enrolled.day()), date))
        .then(|| date.year().to_string())
}

/// The period of a win-back reward: the inactive stretch, named by the instant of the last
/// activity (or `enrolled` for a member with none), due once `days` have passed by `as_of`.
pub fn inactivity_period(
    last_activity: Option<DateTime<Utc>>,
    enrolled_at: DateTime<Utc>,
    days: u32,
    as_of: DateTime<Utc>,
) -> Option<String> {
    let since = last_activity.unwrap_or(enrolled_at);
    (as_of - since >= chrono::Duration::days(i64::from(days))).then(|| match last_activity {
        Some(t) => format!("since-{}", t.timestamp_micros()),
        None => "never-active".to_owned(),
    })
}

/// The external id of a scheduled reward's journal: the same for the same promotion,
/// member (its row id) and period, so the reward is posted once.
pub fn external_id(promotion: &Code, member_row: i64, period: &str) -> String {
    format!("scheduled:{promotion}:{member_row}:{period}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("a test date")
    }

    #[test]
    fn birthdays_fall_on_the_day_or_in_the_month_once_a_year() {
        let born = d("1990-12-01");
        assert_eq!(
            birthday_period(born, d("2026-12-01"), false).as_deref(),
            Some("2026")
        );
        assert_eq!(birthday_period(born, d("2026-12-02"), false), None);
        assert_eq!(
            birthday_period(born, d("2026-12-31"), true).as_deref(),
            Some("2026")
        );
        assert_eq!(birthday_period(born, d("2026-11-30"), true), None);
        let leap = d("2000-02-29");
        assert_eq!(
            birthday_period(leap, d("2027-02-28"), false).as_deref(),
            Some("2027")
        );
        assert_eq!(birthday_period(leap, d("2028-02-28"), false), None);
        assert_eq!(
            birthday_period(leap, d("2028-02-29"), false).as_deref(),
            Some("2028")
        );
    }

    #[test]
    fn anniversaries_start_a_year_after_enrolment() {
        let enrolled = d("2025-03-15");
        assert_eq!(anniversary_period(enrolled, d("2025-03-15")), None);
        assert_eq!(
            anniversary_period(enrolled, d("2026-03-15")).as_deref(),
            Some("2026")
        );
        assert_eq!(anniversary_period(enrolled, d("2026-03-16")), None);
    }

    #[test]
    fn inactivity_is_one_stretch_until_the_member_is_active_again() {
        let t = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("an instant")
                .with_timezone(&Utc)
        };
        let enrolled = t("2026-01-01T00:00:00Z");
        let last = Some(t("2026-02-01T10:00:00Z"));
        assert_eq!(
            inactivity_period(last, enrolled, 90, t("2026-05-01T09:59:59Z")),
            None
        );
        let due = inactivity_period(last, enrolled, 90, t("2026-05-02T10:00:00Z"));
        assert_eq!(
            due,
            inactivity_period(last, enrolled, 90, t("2026-09-01T00:00:00Z"))
        );
        assert!(due.is_some_and(|p| p.starts_with("since-")));
        assert_eq!(
            inactivity_period(None, enrolled, 30, t("2026-02-01T00:00:00Z")).as_deref(),
            Some("never-active")
        );
    }
}
