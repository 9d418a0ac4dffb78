//! From a member's purchases to the models' summaries: purchases are grouped per day (two
//! tickets on one day are one purchase occasion, as the models assume), and the window
//! ends on a day the operator chooses.

use chrono::NaiveDate;

use crate::analytics::bgnbd::Customer;
use crate::analytics::gamma_gamma::Spender;

/// A member's history up to the end of the calibration window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// For the BG/NBD model, in the caller's time unit.
    pub customer: Customer,
    /// For the Gamma-Gamma model: the repeat purchase days and their mean spend (the first
    /// day's spend is left out, by the model's convention); `None` without repeat days.
    pub spender: Option<Spender>,
    /// The first and last purchase days.
    pub first: NaiveDate,
    pub last: NaiveDate,
    /// The spend of every purchase in the window, in minor units.
    pub total_spend: i64,
}

/// Summarises purchases `(day, spend in minor units)` — in any order — made up to and
/// including `end`, measuring time in units of `unit_days` days (7 for weeks). Purchases
/// after `end` are ignored. `None` when no purchase falls in the window or the first is on
/// `end` itself (the model needs some time after the first purchase).
pub fn summarize(
    purchases: &mut [(NaiveDate, i64)],
    end: NaiveDate,
    unit_days: f64,
) -> Option<Summary> {
    purchases.sort_unstable_by_key(|p| p.0);
    let seen = purchases.partition_point(|p| p.0 <= end);
    let purchases = &purchases[..seen];
    let first = purchases.first()?.0;
    if first >= end || !(unit_days > 0.0) {
        return None;
    }
    let mut days: Vec<(NaiveDate, i64)> = Vec::with_capacity(purchases.len());
    for &(day, spend) in purchases {
        match days.last_mut() {
            Some((d, s)) if *d == day => *s += spend,
            _ => days.push((day, spend)),
        }
    }
    let last = days.last()?.0;
    let units = |d: NaiveDate| (d - first).num_days() as f64 / unit_days;
    let repeat = (days.len() - 1) as u32;
    let customer = Customer::new(repeat, units(last), units(end))?;
    let repeat_spend: i64 = days[1..].iter().map(|d| d.1).sum();
    let spender = Spender::new(repeat, repeat_spend as f64 / f64::from(repeat.max(1)));
    Some(Summary {
        customer,
        spender,
        first,
        last,
        total_spend: purchases.iter().map(|p| p.1).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 1, d).expect("the test fixture is valid")
    }

    #[test]
    fn purchases_are_grouped_per_day_and_cut_at_the_window() {
        let mut p = vec![
            (day(15), 300),
            (day(1), 1000),
            (day(8), 200),
            (day(8), 100),
            (day(29), 999),
        ];
        let s = summarize(&mut p, day(22), 7.0).expect("the test fixture is valid");
        assert_eq!(s.customer.frequency, 2, "days 8 and 15 after the first");
        assert!((s.customer.recency - 2.0).abs() < 1e-12);
        assert!((s.customer.age - 3.0).abs() < 1e-12);
        let spender = s.spender.expect("the test fixture is valid");
        assert!(
            (spender.mean_value - 300.0).abs() < 1e-12,
            "(200 + 100 + 300) / 2"
        );
        assert_eq!(s.total_spend, 1600);
        // One purchase day only: alive by assumption, no spend model.
        let mut once = vec![(day(1), 500), (day(1), 500)];
        let s = summarize(&mut once, day(22), 7.0).expect("the test fixture is valid");
        assert_eq!(s.customer.frequency, 0);
        assert!(s.spender.is_none());
        // Nothing in the window, or the window ends on the first day: not scored.
        assert!(summarize(&mut [(day(29), 1)], day(22), 7.0).is_none());
        assert!(summarize(&mut [(day(22), 1)], day(22), 7.0).is_none());
    }
}
