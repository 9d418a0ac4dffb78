//! Pay with points: what a member's points pay at checkout.
//!
//! A currency's [`Payment`] says what one point pays in the program's money currency, the
//! fewest points a payment may use, and how an amount becomes points. [`quote`] answers a
//! checkout's question — how many points cover this order, how many may be used, and how
//! much money they pay — before it places a hold (see [`crate::process`] for holds).
//! Money is never overpaid: the amount points pay is rounded down to the money's minor
//! unit and never exceeds the order.

use rust_decimal::Decimal;

use crate::money::{MinorUnits, MoneyCurrency, Rounding};

/// A currency's conversion of points into money at checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payment {
    /// What one point pays, in major units of the program's money currency.
    pub money_per_point: Decimal,
    /// The fewest points one payment may use.
    pub minimum_points: i64,
    /// How an amount becomes points (`up`: enough points to pay all of it).
    pub rounding: Rounding,
}

/// What points can pay of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    /// Points that would pay the whole order.
    pub points_to_cover: i64,
    /// Points the payment would use: those asked for (or all needed), no more than the
    /// member can spend; 0 when that is below the minimum.
    pub points: i64,
    /// The money those points pay (never more than the order).
    pub amount_covered: MinorUnits,
    /// What is left to pay otherwise.
    pub amount_remaining: MinorUnits,
    /// True when the points available or asked for are fewer than the minimum.
    pub below_minimum: bool,
}

/// How many points pay how much of an order of `amount`, for a member who can spend
/// `spendable` points (`None`: unknown to the caller, no cap) and asks to use `wanted`
/// (`None`: as many as the order needs).
pub fn quote(
    payment: &Payment,
    money: MoneyCurrency,
    amount: MinorUnits,
    spendable: Option<i64>,
    wanted: Option<i64>,
) -> Quote {
    let major = Decimal::new(amount.0, u32::from(money.scale()));
    let points_to_cover = payment
        .rounding
        .to_points(major / payment.money_per_point)
        .max(0);
    let mut points = points_to_cover
        .min(wanted.unwrap_or(i64::MAX))
        .min(spendable.unwrap_or(i64::MAX))
        .max(0);
    let below_minimum = points < payment.minimum_points;
    if below_minimum {
        points = 0;
    }
    let covered = amount_for(payment, money, points).min(amount.0);
    Quote {
        points_to_cover,
        points,
        amount_covered: MinorUnits(covered),
        amount_remaining: MinorUnits(amount.0 - covered),
        below_minimum,
    }
}

/// The money `points` pay, rounded down to the minor unit.
fn amount_for(payment: &Payment, money: MoneyCurrency, points: i64) -> i64 {
    let minor = Decimal::from(points)
        * payment.money_per_point
        * Decimal::from(10i64.pow(u32::from(money.scale())));
    i64::try_from(minor.floor()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur() -> MoneyCurrency {
        MoneyCurrency::parse("EUR").expect("a currency")
    }

    fn cent_points(minimum: i64, rounding: Rounding) -> Payment {
        Payment {
            money_per_point: Decimal::new(1, 2),
            minimum_points: minimum,
            rounding,
        }
    }

    #[test]
    fn points_cover_an_order_up_to_what_the_member_can_spend() {
        let p = cent_points(0, Rounding::Up);
        // 25.00 EUR at 0.01 a point: 2,500 points; the member has 1,000.
        let q = quote(&p, eur(), MinorUnits(2_500), Some(1_000), None);
        assert_eq!(q.points_to_cover, 2_500);
        assert_eq!(q.points, 1_000);
        assert_eq!(q.amount_covered, MinorUnits(1_000));
        assert_eq!(q.amount_remaining, MinorUnits(1_500));
        // Enough points: the whole order.
        let q = quote(&p, eur(), MinorUnits(2_500), Some(9_999), None);
        assert_eq!((q.points, q.amount_remaining), (2_500, MinorUnits(0)));
        // Asking for fewer.
        let q = quote(&p, eur(), MinorUnits(2_500), Some(9_999), Some(300));
        assert_eq!((q.points, q.amount_covered), (300, MinorUnits(300)));
    }

    #[test]
    fn rounding_decides_the_points_and_money_is_never_overpaid() {
        // A point pays 0.015 EUR: 3 points pay 0.045, paid as 0.04 (never the half cent).
        let odd = Payment {
            money_per_point: Decimal::new(15, 3),
            minimum_points: 0,
            rounding: Rounding::Up,
        };
        let q = quote(&odd, eur(), MinorUnits(100), None, Some(3));
        assert_eq!(q.amount_covered, MinorUnits(4));
        assert_eq!(q.amount_remaining, MinorUnits(96));
        let down = Payment {
            money_per_point: Decimal::new(3, 2),
            minimum_points: 0,
            rounding: Rounding::Down,
        };
        // 1.00 EUR at 0.03: 33.3 points, 33 rounded down, paying 0.99.
        let q = quote(&down, eur(), MinorUnits(100), None, None);
        assert_eq!((q.points_to_cover, q.amount_covered), (33, MinorUnits(99)));
        let up = Payment {
            rounding: Rounding::Up,
            ..down
        };
        // 34 points would pay 1.02: the order's 1.00 is the most they pay.
        let q = quote(&up, eur(), MinorUnits(100), None, None);
        assert_eq!((q.points_to_cover, q.amount_covered), (34, MinorUnits(100)));
        assert_eq!(q.amount_remaining, MinorUnits(0));
    }

    #[test]
    fn below_the_minimum_points_pay_nothing() {
        let p = cent_points(500, Rounding::Up);
        let q = quote(&p, eur(), MinorUnits(2_500), Some(499), None);
        assert!(q.below_minimum);
        assert_eq!((q.points, q.amount_covered), (0, MinorUnits(0)));
        let q = quote(&p, eur(), MinorUnits(2_500), Some(500), None);
        assert!(!q.below_minimum);
        assert_eq!(q.points, 500);
        // An order worth less than the minimum cannot be paid with points at all.
        let q = quote(&p, eur(), MinorUnits(400), Some(10_000), None);
        assert!(q.below_minimum);
    }
}
