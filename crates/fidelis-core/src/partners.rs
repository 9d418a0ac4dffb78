//! Partners of a program and their ledger: what a partner owes for the points its
//! customers earn, what it is owed for the points redeemed with it, and its prepaid pack.
//!
//! A partner is a record of a program (kept by the store, written by the API), not part of
//! the program's definition: packs are topped up and rates change while the program runs.
//! An **earn** partner pays for the points its customers earn with it, at
//! `cost_per_point`: **prepaid** from a points pack it bought (each accrual debits the pack;
//! a reversal credits it back), or **postpaid** on a running bill of the points' money
//! value. A **burn** partner is reimbursed `reimbursement_per_point` for each point
//! redeemed with it. A partner can be both.
//!
//! Every movement is a [`PartnerEntry`] linked to the member journal that caused it and
//! written in that journal's transaction, so a partner's figures are sums of its entries,
//! as a member's balance is the sum of theirs. This module says which entries a journal
//! makes, as pure functions of the partner, the journal's outcome and the entries of the
//! journal it reverses.
//!
//! Money is in minor units of the program's money currency: positive is owed by the
//! partner to the operator, negative owed to the partner. A point's money value is rounded
//! half away from zero once per entry.

use std::str::FromStr;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};

use crate::program::{CurrencyKind, Problem, Program};

/// The longest partner name, in characters.
pub const MAX_NAME_LEN: usize = 200;
/// The largest pack top-up and alert threshold, in points.
pub const MAX_POINTS: i64 = 1_000_000_000_000;
/// The highest money per point a rate may be.
pub const MAX_RATE: i64 = 1_000_000;

/// What a partner does in the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Roles {
    Earn,
    Burn,
    Both,
}

impl Roles {
    pub fn earns(self) -> bool {
        matches!(self, Self::Earn | Self::Both)
    }
    pub fn burns(self) -> bool {
        matches!(self, Self::Burn | Self::Both)
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Earn => "earn",
            Self::Burn => "burn",
            Self::Both => "both",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Earn, Self::Burn, Self::Both]
            .into_iter()
            .find(|r| r.name() == s)
    }
}

/// How an earn partner pays for its points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Billing {
    /// From a points pack bought in advance.
    Prepaid,
    /// On a running bill.
    Postpaid,
}

impl Billing {
    pub fn name(self) -> &'static str {
        match self {
            Self::Prepaid => "prepaid",
            Self::Postpaid => "postpaid",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Prepaid, Self::Postpaid]
            .into_iter()
            .find(|b| b.name() == s)
    }
}

/// What happens to an accrual at a prepaid partner whose pack cannot cover it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WhenEmpty {
    /// The journal is refused (`partner_pack_empty`); nothing changes.
    #[default]
    Refuse,
    /// The points are awarded and the pack goes below zero: the partner owes them.
    Owe,
}

impl WhenEmpty {
    pub fn name(self) -> &'static str {
        match self {
            Self::Refuse => "refuse",
            Self::Owe => "owe",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Refuse, Self::Owe]
            .into_iter()
            .find(|w| w.name() == s)
    }
}

/// A partner as the API writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerDocument {
    pub name: String,
    pub roles: Roles,
    /// Required for an earn partner; ignored for a burn-only one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing: Option<Billing>,
    /// The redeemable currency its pack, accruals and redemptions count in (the
    /// program's first redeemable currency when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Money an earn partner pays per point its customers earn (decimal text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_point: Option<String>,
    /// Money a burn partner is reimbursed per point redeemed with it (decimal text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reimbursement_per_point: Option<String>,
    /// Prepaid: an alert is raised when the pack falls below this many points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_below: Option<i64>,
    /// Prepaid: what an accrual the pack cannot cover does (`refuse` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_empty: Option<WhenEmpty>,
    /// `false`: journals naming it make no partner entries and are not refused by it.
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

/// A partner checked against its program, as the ledger uses it (and the store keeps it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partner {
    pub code: String,
    pub name: String,
    pub roles: Roles,
    pub billing: Billing,
    pub currency: String,
    pub cost_per_point: Decimal,
    pub reimbursement_per_point: Decimal,
    pub alert_below: Option<i64>,
    pub when_empty: WhenEmpty,
    pub active: bool,
}

fn valid_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn rate(problems: &mut Vec<Problem>, path: &str, text: Option<&str>) -> Decimal {
    let Some(text) = text else {
        return Decimal::ZERO;
    };
    match Decimal::from_str(text) {
        Ok(d) if d >= Decimal::ZERO && d <= Decimal::from(MAX_RATE) && d.scale() <= 6 => d,
        _ => {
            problems.push(Problem {
                path: path.to_owned(),
                message: format!(
                    "must be a decimal from 0 to {MAX_RATE} with at most 6 decimals, like \"0.008\""
                ),
            });
            Decimal::ZERO
        }
    }
}

impl PartnerDocument {
    /// The partner `code` of `program`, or every problem with its path.
    pub fn check(&self, code: &str, program: &Program) -> Result<Partner, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut problem = |path: &str, message: String| {
            problems.push(Problem {
                path: path.to_owned(),
                message,
            });
        };
        if !valid_code(code) {
            problem("code", "must be 1 to 64 of a-z, 0-9, - and _".into());
        }
        let name = self.name.trim();
        if name.is_empty()
            || name.chars().count() > MAX_NAME_LEN
            || name.chars().any(char::is_control)
        {
            problem(
                "name",
                format!("must be 1 to {MAX_NAME_LEN} characters, no control characters"),
            );
        }
        let currency = match &self.currency {
            Some(c) => match program.currencies.iter().find(|d| d.code.as_str() == c) {
                None => {
                    problem("currency", format!("the program has no currency {c:?}"));
                    None
                }
                Some(d) if d.kind != CurrencyKind::Redeemable => {
                    problem("currency", format!("{c:?} is not a redeemable currency"));
                    None
                }
                Some(d) => Some(d.code.to_string()),
            },
            None => {
                let first = program
                    .currencies
                    .iter()
                    .find(|d| d.kind == CurrencyKind::Redeemable)
                    .map(|d| d.code.to_string());
                if first.is_none() {
                    problem("currency", "the program has no redeemable currency".into());
                }
                first
            }
        };
        let billing = match (self.roles.earns(), self.billing) {
            (true, None) => {
                problem(
                    "billing",
                    "an earn partner pays prepaid or postpaid: give one".into(),
                );
                Billing::Postpaid
            }
            (_, Some(b)) => b,
            (false, None) => Billing::Postpaid,
        };
        if let Some(a) = self.alert_below
            && (!(0..=MAX_POINTS).contains(&a) || billing != Billing::Prepaid)
        {
            problem(
                "alert_below",
                format!("a prepaid partner's threshold, 0 to {MAX_POINTS} points"),
            );
        }
        if self.when_empty.is_some() && billing != Billing::Prepaid {
            problem("when_empty", "only a prepaid partner has a pack".into());
        }
        let mut rate_problems = Vec::new();
        let cost = rate(
            &mut rate_problems,
            "cost_per_point",
            self.cost_per_point.as_deref(),
        );
        let reimbursement = rate(
            &mut rate_problems,
            "reimbursement_per_point",
            self.reimbursement_per_point.as_deref(),
        );
        problems.extend(rate_problems);
        match (problems.is_empty(), currency) {
            (true, Some(currency)) => Ok(Partner {
                code: code.to_owned(),
                name: name.to_owned(),
                roles: self.roles,
                billing,
                currency,
                cost_per_point: cost,
                reimbursement_per_point: reimbursement,
                alert_below: self.alert_below,
                when_empty: self.when_empty.unwrap_or_default(),
                active: self.active,
            }),
            _ => Err(problems),
        }
    }
}

impl Partner {
    /// The document that writes this partner again.
    pub fn document(&self) -> PartnerDocument {
        PartnerDocument {
            name: self.name.clone(),
            roles: self.roles,
            billing: self.roles.earns().then_some(self.billing),
            currency: Some(self.currency.clone()),
            cost_per_point: Some(self.cost_per_point.normalize().to_string()),
            reimbursement_per_point: Some(self.reimbursement_per_point.normalize().to_string()),
            alert_below: self.alert_below,
            when_empty: (self.billing == Billing::Prepaid).then_some(self.when_empty),
            active: self.active,
        }
    }

    /// Whether an accrual the pack (`pack` points left) cannot cover is refused.
    pub fn refuses_beyond_pack(&self) -> bool {
        self.active
            && self.roles.earns()
            && self.billing == Billing::Prepaid
            && self.when_empty == WhenEmpty::Refuse
    }

    /// The entry of `points` earned by a member at this partner (none for a partner that
    /// does not earn, is inactive, or for no points).
    pub fn accrual(&self, points: i64, money_scale: u8) -> Option<Movement> {
        if !self.active || !self.roles.earns() || points <= 0 {
            return None;
        }
        Some(match self.billing {
            // Paid for with the pack: the pack goes down, nothing more is billed.
            Billing::Prepaid => Movement {
                kind: EntryKind::Accrual,
                points,
                pack: -points,
                amount: 0,
                rate: self.cost_per_point,
            },
            Billing::Postpaid => Movement {
                kind: EntryKind::Accrual,
                points,
                pack: 0,
                amount: money(points, self.cost_per_point, money_scale),
                rate: self.cost_per_point,
            },
        })
    }

    /// The entry of `points` a member redeemed with this partner.
    pub fn redemption(&self, points: i64, money_scale: u8) -> Option<Movement> {
        if !self.active || !self.roles.burns() || points <= 0 {
            return None;
        }
        Some(Movement {
            kind: EntryKind::Redemption,
            points,
            pack: 0,
            amount: -money(points, self.reimbursement_per_point, money_scale),
            rate: self.reimbursement_per_point,
        })
    }

    /// The entry of a top-up of `points` bought for the pack (billed at the cost per
    /// point, so a settlement shows what the pack was bought for).
    pub fn top_up(&self, points: i64, money_scale: u8) -> Movement {
        Movement {
            kind: EntryKind::TopUp,
            points,
            pack: points,
            amount: money(points, self.cost_per_point, money_scale),
            rate: self.cost_per_point,
        }
    }
}

/// What a partner entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Points bought for the pack.
    TopUp,
    /// Points members earned at the partner.
    Accrual,
    /// An accrual refunded or cancelled: points taken back from the member.
    AccrualReversal,
    /// Points members redeemed with the partner.
    Redemption,
    /// A redemption cancelled: the points went back to the member.
    RedemptionReversal,
}

impl EntryKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::TopUp => "top_up",
            Self::Accrual => "accrual",
            Self::AccrualReversal => "accrual_reversal",
            Self::Redemption => "redemption",
            Self::RedemptionReversal => "redemption_reversal",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::TopUp,
            Self::Accrual,
            Self::AccrualReversal,
            Self::Redemption,
            Self::RedemptionReversal,
        ]
        .into_iter()
        .find(|k| k.name() == s)
    }
}

/// One movement of a partner's ledger.
///
/// `points` is what the entry counts (issued, redeemed or bought; negative for a
/// reversal), `pack` its change to the prepaid pack, `amount` its money (minor units;
/// positive owed by the partner), at `rate` per point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Movement {
    pub kind: EntryKind,
    pub points: i64,
    pub pack: i64,
    pub amount: i64,
    pub rate: Decimal,
}

/// `points` × `rate` in minor units of a currency with `scale` decimals, half away from
/// zero; saturating (points and rates are bounded far below that).
pub fn money(points: i64, rate: Decimal, scale: u8) -> i64 {
    let exact = Decimal::from(points) * rate;
    exact
        .round_dp_with_strategy(
            u32::from(scale),
            rust_decimal::RoundingStrategy::MidpointAwayFromZero,
        )
        .checked_mul(Decimal::from(10_i64.pow(u32::from(scale))))
        .and_then(|m| m.to_i64())
        .unwrap_or(if exact.is_sign_negative() {
            i64::MIN
        } else {
            i64::MAX
        })
}

/// The entries reversing `taken` points of a journal whose partner entries were
/// `original` (a refund takes some, a cancellation all that is left): each original
/// accrual or redemption gives back its share, at its own rate, never more than it has
/// left after earlier reversals (`reversed_before`, points already reversed per kind).
pub fn reversal(
    original: &[Movement],
    reversed_before: i64,
    taken: i64,
    money_scale: u8,
) -> Vec<Movement> {
    let mut out = Vec::new();
    for m in original {
        let kind = match m.kind {
            EntryKind::Accrual => EntryKind::AccrualReversal,
            EntryKind::Redemption => EntryKind::RedemptionReversal,
            _ => continue,
        };
        let left = (m.points - reversed_before).max(0);
        let points = taken.min(left);
        if points <= 0 {
            continue;
        }
        let amount = money(points, m.rate, money_scale);
        out.push(Movement {
            kind,
            points: -points,
            // What the accrual took from the pack comes back in proportion.
            pack: if m.pack < 0 { points } else { 0 },
            amount: if m.amount > 0 {
                -amount
            } else if m.amount < 0 {
                amount
            } else {
                0
            },
            rate: m.rate,
        });
    }
    out
}

/// Whether a pack going from `before` to `after` points crosses below `alert_below`
/// (raised once per crossing: not again until the pack is back at or above it).
pub fn crosses_alert(alert_below: Option<i64>, before: i64, after: i64) -> bool {
    alert_below.is_some_and(|a| before >= a && after < a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::{Program, ProgramDocument};

    fn program() -> Program {
        let doc: ProgramDocument = serde_json::from_value(serde_json::json!({
            "code": "air", "name": "Air", "time_zone": "UTC", "money_currency": "EUR",
            "currencies": [
                {"code": "miles", "name": "Miles", "kind": "redeemable", "expiry": {"policy": "never"}},
                {"code": "status", "name": "Status", "kind": "qualifying", "expiry": {"policy": "never"}}],
            "earning": {"base": [{"currency": "miles", "rate": "1"}]}
        }))
        .expect("the test fixture is valid");
        Program::compile(&doc, None).expect("the test fixture is valid")
    }

    fn doc(v: serde_json::Value) -> PartnerDocument {
        serde_json::from_value(v).expect("the test fixture is valid")
    }

    #[test]
    fn a_partner_is_checked_against_its_program_with_every_problem() {
        let p = program();
        let ok = doc(
            serde_json::json!({"name": "Car rental", "roles": "earn", "billing": "prepaid",
            "cost_per_point": "0.008", "alert_below": 1000}),
        )
        .check("cars", &p)
        .expect("the test fixture is valid");
        assert_eq!(ok.currency, "miles");
        assert_eq!(ok.when_empty, WhenEmpty::Refuse);
        assert!(ok.refuses_beyond_pack());
        assert_eq!(
            ok.document()
                .check("cars", &p)
                .expect("the test fixture is valid"),
            ok
        );
        let bad = doc(
            serde_json::json!({"name": " ", "roles": "earn", "currency": "status",
            "cost_per_point": "-1", "when_empty": "owe"}),
        )
        .check("Bad Code", &p)
        .unwrap_err();
        let paths: Vec<&str> = bad.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "code",
                "name",
                "currency",
                "billing",
                "when_empty",
                "cost_per_point"
            ]
        );
        // A burn partner needs no billing.
        let burn = doc(serde_json::json!({"name": "Hotel", "roles": "burn",
            "reimbursement_per_point": "0.01"}))
        .check("hotel", &p)
        .expect("the test fixture is valid");
        assert!(burn.accrual(100, 2).is_none());
        assert_eq!(
            burn.redemption(250, 2)
                .expect("the test fixture is valid")
                .amount,
            -250
        );
    }

    #[test]
    fn movements_count_points_pack_and_money_exactly() {
        let p = program();
        let prepaid = doc(
            serde_json::json!({"name": "Cars", "roles": "both", "billing": "prepaid",
            "cost_per_point": "0.008", "reimbursement_per_point": "0.006"}),
        )
        .check("cars", &p)
        .expect("the test fixture is valid");
        let a = prepaid
            .accrual(1_250, 2)
            .expect("the test fixture is valid");
        assert_eq!((a.points, a.pack, a.amount), (1_250, -1_250, 0));
        let t = prepaid.top_up(10_000, 2);
        assert_eq!((t.pack, t.amount), (10_000, 8_000));
        let postpaid = doc(
            serde_json::json!({"name": "Bank", "roles": "earn", "billing": "postpaid",
            "cost_per_point": "0.0125"}),
        )
        .check("bank", &p)
        .expect("the test fixture is valid");
        // 333 × 0.0125 = 4.1625 → 4.16
        let b = postpaid.accrual(333, 2).expect("the test fixture is valid");
        assert_eq!((b.pack, b.amount), (0, 416));
        // A refund of 100, then the cancellation of what is left: never more than the
        // accrual, at its own rate.
        let first = reversal(&[b], 0, 100, 2);
        assert_eq!(
            (first[0].kind, first[0].points, first[0].amount),
            (EntryKind::AccrualReversal, -100, -125)
        );
        let rest = reversal(&[b], 100, 1_000, 2);
        assert_eq!((rest[0].points, rest[0].amount), (-233, -291));
        assert!(reversal(&[b], 333, 10, 2).is_empty());
        // A prepaid accrual's reversal refills the pack.
        let back = reversal(&[a], 0, 50, 2);
        assert_eq!((back[0].pack, back[0].amount), (50, 0));
        // A redemption's reversal: the partner is owed less.
        let r = prepaid
            .redemption(500, 2)
            .expect("the test fixture is valid");
        assert_eq!(r.amount, -300);
        let rr = reversal(&[r], 0, 500, 2);
        assert_eq!(
            (rr[0].kind, rr[0].points, rr[0].amount),
            (EntryKind::RedemptionReversal, -500, 300)
        );
        // Rounding is half away from zero, per entry; JPY has no minor unit.
        assert_eq!(
            money(
                1,
                Decimal::from_str("0.005").expect("the test fixture is valid"),
                2
            ),
            1
        );
        assert_eq!(
            money(
                -1,
                Decimal::from_str("0.005").expect("the test fixture is valid"),
                2
            ),
            -1
        );
        assert_eq!(
            money(
                3,
                Decimal::from_str("0.5").expect("the test fixture is valid"),
                0
            ),
            2
        );
    }

    #[test]
    fn the_alert_is_raised_once_per_crossing() {
        assert!(crosses_alert(Some(100), 150, 90));
        assert!(!crosses_alert(Some(100), 90, 50), "already below");
        assert!(!crosses_alert(Some(100), 150, 100), "at the threshold");
        assert!(crosses_alert(Some(100), 100, 99));
        assert!(!crosses_alert(None, 150, -10));
    }
}
