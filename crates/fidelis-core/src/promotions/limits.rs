//! Promotion limits: per member (times, points) over the promotion's life or per period,
//! a total budget of points, and a daily cap on points for all members.
//!
//! Limits are exact at processing time: the store loads the [`Counters`] a batch needs
//! (the members' under their locks, the all-member ones locked too) and [`check`] cuts an
//! award that would cross a cap to what the cap leaves. The units an award used are
//! recorded with the journal ([`Usage`]) so a refund or cancellation gives them back.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::ids::{Code, MemberId};

/// A calendar period, in the program's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

impl Period {
    pub const NAMES: &'static str = "day, week, month, quarter, year";

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "day" => Self::Day,
            "week" => Self::Week,
            "month" => Self::Month,
            "quarter" => Self::Quarter,
            "year" => Self::Year,
            _ => return None,
        })
    }

    /// Its name, as written in definitions.
    pub fn name(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
            Self::Quarter => "quarter",
            Self::Year => "year",
        }
    }

    /// The key of the period holding `at`: `d:2026-06-13`, `w:2026-W24` (ISO week),
    /// `m:2026-06`, `q:2026-Q2`, `y:2026`.
    pub fn key(self, tz: Tz, at: DateTime<Utc>) -> String {
        let d = at.with_timezone(&tz).date_naive();
        // Built by hand, not by `format!`: every accrual builds these keys for each
        // counting promotion, and the formatting machinery was a tenth of a journal's time.
        let mut key = String::with_capacity(12);
        match self {
            Self::Day => {
                key.push_str("d:");
                push_year(&mut key, d.year());
                key.push('-');
                push_two(&mut key, d.month());
                key.push('-');
                push_two(&mut key, d.day());
            }
            Self::Week => {
                let w = d.iso_week();
                key.push_str("w:");
                push_year(&mut key, w.year());
                key.push_str("-W");
                push_two(&mut key, w.week());
            }
            Self::Month => {
                key.push_str("m:");
                push_year(&mut key, d.year());
                key.push('-');
                push_two(&mut key, d.month());
            }
            Self::Quarter => {
                key.push_str("q:");
                push_year(&mut key, d.year());
                key.push_str("-Q");
                key.push(char::from(b'1' + (d.month0() / 3) as u8));
            }
            Self::Year => {
                key.push_str("y:");
                push_year(&mut key, d.year());
            }
        }
        key
    }
}

/// A year as `format!("{}")` writes it.
fn push_year(out: &mut String, year: i32) {
    if year < 0 {
        out.push('-');
    }
    let mut digits = [0u8; 10];
    let mut n = year.unsigned_abs();
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &b in &digits[i..] {
        out.push(char::from(b));
    }
}

/// A number below 100 as two digits (`{:02}`).
fn push_two(out: &mut String, n: u32) {
    out.push(char::from(b'0' + (n / 10 % 10) as u8));
    out.push(char::from(b'0' + (n % 10) as u8));
}

/// A promotion's limits. Points limits count every point the promotion awards, all
/// currencies together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Per member, over the promotion's life.
    pub member_times: Option<i64>,
    pub member_points: Option<i64>,
    /// Per member and period.
    pub period: Option<Period>,
    pub period_times: Option<i64>,
    pub period_points: Option<i64>,
    /// All members, over the promotion's life.
    pub budget_points: Option<i64>,
    /// Vouchers issued to all members, over the promotion's life (counted in the
    /// points of [`Limits::voucher_key`]'s counter).
    pub budget_vouchers: Option<i64>,
    /// All members, per local day.
    pub daily_points: Option<i64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The counters this promotion reads and writes for `member` at `at`, each with its
    /// times and points caps.
    pub fn keys(
        &self,
        promotion: &Code,
        member: MemberId,
        tz: Tz,
        at: DateTime<Utc>,
    ) -> Vec<(CounterKey, Option<i64>, Option<i64>)> {
        let key = |member: i64, period: String| CounterKey {
            promotion: promotion.clone(),
            member,
            period,
        };
        let mut out = Vec::new();
        if self.member_times.is_some() || self.member_points.is_some() {
            out.push((
                key(member.0, String::new()),
                self.member_times,
                self.member_points,
            ));
        }
        if let Some(period) = self.period {
            out.push((
                key(member.0, period.key(tz, at)),
                self.period_times,
                self.period_points,
            ));
        }
        if self.budget_points.is_some() {
            out.push((key(EVERYONE, String::new()), None, self.budget_points));
        }
        if self.daily_points.is_some() {
            out.push((
                key(EVERYONE, Period::Day.key(tz, at)),
                None,
                self.daily_points,
            ));
        }
        out
    }
}

impl Limits {
    /// The counter of vouchers the promotion issued to all members.
    pub fn voucher_key(promotion: &Code) -> CounterKey {
        CounterKey {
            promotion: promotion.clone(),
            member: EVERYONE,
            period: VOUCHERS_PERIOD.to_owned(),
        }
    }
}

/// The period of the vouchers-issued counter (not a calendar period: it never rolls).
pub const VOUCHERS_PERIOD: &str = "vouchers";

/// The member id of counters that count all members.
pub const EVERYONE: i64 = 0;

/// One counter: a promotion's use by a member (or by everyone, [`EVERYONE`]) over its life
/// (empty period) or in a period.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CounterKey {
    pub promotion: Code,
    pub member: i64,
    pub period: String,
}

/// How often and for how many points.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub times: i64,
    pub points: i64,
}

/// Adds to a count held (`None` back), or gives the count to insert for a key not held.
fn added(held: Option<&mut Count>, times: i64, points: i64) -> Option<Count> {
    match held {
        Some(c) => {
            c.times += times;
            c.points += points;
            None
        }
        None => Some(Count { times, points }),
    }
}

/// The counters a batch works with: `counts` as loaded by the store (under locks) and
/// changed as journals are processed; `deltas` what the store adds to the stored rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Looked up for every counting promotion of every journal: hashed, not ordered (a
    /// tree compared the keys' strings at every step).
    pub counts: rustc_hash::FxHashMap<CounterKey, Count>,
    pub deltas: BTreeMap<CounterKey, Count>,
    /// While one journal is processed: each changed key's values before the change, so a
    /// refusal undoes exactly what the journal changed. (A copy of the whole map per
    /// journal cost a batch time quadratic in its size.)
    undo: Option<Vec<(CounterKey, Option<Count>, Option<Count>)>>,
}

impl Counters {
    pub fn get(&self, key: &CounterKey) -> Count {
        self.counts.get(key).copied().unwrap_or_default()
    }

    /// Starts recording changes (one journal's processing).
    pub(crate) fn begin(&mut self) {
        self.undo = Some(Vec::new());
    }

    /// Keeps the changes recorded since [`Counters::begin`].
    pub(crate) fn commit(&mut self) {
        self.undo = None;
    }

    /// Undoes the changes recorded since [`Counters::begin`].
    pub(crate) fn rollback(&mut self) {
        let Some(log) = self.undo.take() else {
            return;
        };
        for (key, count, delta) in log.into_iter().rev() {
            match count {
                Some(c) => self.counts.insert(key.clone(), c),
                None => self.counts.remove(&key),
            };
            match delta {
                Some(d) => self.deltas.insert(key, d),
                None => self.deltas.remove(&key),
            };
        }
    }

    pub(crate) fn add(&mut self, key: &CounterKey, times: i64, points: i64) {
        if let Some(log) = self.undo.as_mut() {
            log.push((
                key.clone(),
                self.counts.get(key).copied(),
                self.deltas.get(key).copied(),
            ));
        }
        // A key is cloned only into a map that does not hold it yet.
        if let Some(count) = added(self.counts.get_mut(key), times, points) {
            self.counts.insert(key.clone(), count);
        }
        if let Some(count) = added(self.deltas.get_mut(key), times, points) {
            self.deltas.insert(key.clone(), count);
        }
    }
}

/// What one award used, kept with the journal so reversals give it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub promotion: Code,
    pub keys: Vec<CounterKey>,
    pub points: i64,
    /// Points already given back by refunds and cancellations.
    #[serde(default)]
    pub returned: i64,
    /// The use itself was given back (the award was reversed entirely).
    #[serde(default)]
    pub times_returned: bool,
}

/// What the limits allow of an award of `points`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowance {
    /// All of it, or this much (cut at a cap).
    Points(i64),
    /// Nothing: a cap was reached.
    Reached(String),
}

/// Checks an award of `points` against the counters under `keys`.
pub fn check(
    counters: &Counters,
    keys: &[(CounterKey, Option<i64>, Option<i64>)],
    points: i64,
) -> Allowance {
    let mut allowed = points;
    for (key, times, cap) in keys {
        let used = counters.get(key);
        if let Some(times) = times
            && used.times >= *times
        {
            return Allowance::Reached(describe(key, "times", *times));
        }
        if let Some(cap) = cap {
            let left = (cap - used.points).max(0);
            if left == 0 && points > 0 {
                return Allowance::Reached(describe(key, "points", *cap));
            }
            allowed = allowed.min(left);
        }
    }
    Allowance::Points(allowed)
}

fn describe(key: &CounterKey, what: &str, cap: i64) -> String {
    let who = if key.member == EVERYONE {
        "all members"
    } else {
        "the member"
    };
    let when = match key.period.split_once(':') {
        None => "in total".to_owned(),
        Some((_, p)) => format!("in {p}"),
    };
    format!("the limit of {cap} {what} for {who} {when} is reached")
}

/// Records an award's use of its counters.
pub fn consume(
    counters: &mut Counters,
    promotion: &Code,
    keys: &[(CounterKey, Option<i64>, Option<i64>)],
    points: i64,
) -> Usage {
    for (key, _, _) in keys {
        counters.add(key, 1, points);
    }
    Usage {
        promotion: promotion.clone(),
        keys: keys.iter().map(|k| k.0.clone()).collect(),
        points,
        returned: 0,
        times_returned: false,
    }
}

/// Gives back `points` of a use (a refund or cancellation reversed them), and the use
/// itself once all its points are back.
pub fn give_back(counters: &mut Counters, usage: &mut Usage, points: i64) {
    let points = points.min(usage.points - usage.returned).max(0);
    usage.returned += points;
    let times = if !usage.times_returned && usage.returned >= usage.points {
        usage.times_returned = true;
        1
    } else {
        0
    };
    for key in &usage.keys {
        counters.add(key, -times, -points);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn period_keys_read_as_formatted() {
        use chrono::{Datelike, TimeZone};
        let tz: chrono_tz::Tz = "Europe/Berlin".parse().expect("the test fixture is valid");
        for days in (0..3_000).step_by(7) {
            let at = chrono::Utc
                .with_ymd_and_hms(2019, 12, 25, 23, 30, 0)
                .single()
                .expect("the test fixture is valid")
                + chrono::Duration::days(days);
            let d = at.with_timezone(&tz).date_naive();
            let w = d.iso_week();
            assert_eq!(
                super::Period::Day.key(tz, at),
                format!("d:{}", d.format("%Y-%m-%d"))
            );
            assert_eq!(
                super::Period::Week.key(tz, at),
                format!("w:{}-W{:02}", w.year(), w.week())
            );
            assert_eq!(
                super::Period::Month.key(tz, at),
                format!("m:{}-{:02}", d.year(), d.month())
            );
            assert_eq!(
                super::Period::Quarter.key(tz, at),
                format!("q:{}-Q{}", d.year(), d.month0() / 3 + 1)
            );
            assert_eq!(super::Period::Year.key(tz, at), format!("y:{}", d.year()));
        }
    }

    use super::*;

    fn key(member: i64, period: &str) -> CounterKey {
        CounterKey {
            promotion: Code::parse("promo").expect("a code"),
            member,
            period: period.to_owned(),
        }
    }

    #[test]
    fn a_refused_journal_undoes_exactly_its_changes() {
        let mut c = Counters::default();
        c.counts.insert(
            key(1, ""),
            Count {
                times: 2,
                points: 20,
            },
        );
        c.add(&key(2, ""), 1, 5); // an earlier journal of the batch
        let before = c.clone();
        c.begin();
        c.add(&key(1, ""), 1, 10);
        c.add(&key(1, ""), 1, 10);
        c.add(&key(3, "d:2026-12-02"), 1, 7);
        c.rollback();
        assert_eq!(c, before);
        c.begin();
        c.add(&key(1, ""), 1, 10);
        c.commit();
        c.rollback(); // nothing recorded any more
        assert_eq!(
            c.get(&key(1, "")),
            Count {
                times: 3,
                points: 30
            }
        );
        assert_eq!(
            c.deltas[&key(1, "")],
            Count {
                times: 1,
                points: 10
            }
        );
    }
}
