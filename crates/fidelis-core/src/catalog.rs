//! The reward catalog: items members spend points on, what an item costs a member (a
//! tier's own price — the lowest of the tiers the member holds), who may order it and
//! when, and an order's life.
//!
//! An item's stock is not here: it is state, kept and counted down by the store in the
//! order's transaction. What is here are the rules the store applies, as pure functions
//! of the item, the member's tiers and the time.
//!
//! An order is `placed` once its points are redeemed (a `redemption` journal named after
//! the order), then `fulfilled` (the item or its voucher went out) or `cancelled` (the
//! redemption is cancelled: the points go back to the buckets they came from, with their
//! original expiry, and the item back into stock). An order the ledger refused
//! (too few points, a suspended member) is `rejected`, its stock returned.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::program::{CurrencyKind, Problem, Program};

/// The longest item name and description, in characters.
pub const MAX_NAME_LEN: usize = 200;
pub const MAX_DESCRIPTION_LEN: usize = 2000;
/// The highest price and stock an item may have.
pub const MAX_POINTS: i64 = 1_000_000_000_000;
pub const MAX_STOCK: i64 = 1_000_000_000;

/// A catalog item, as the API, the CLI's import and the console write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogItem {
    /// `[a-z0-9_-]{1,64}`, unique in the program.
    pub code: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The redeemable currency the item is priced in.
    pub currency: String,
    /// The price, for members none of whose tiers has its own.
    pub points: i64,
    /// Prices for members of these tiers; a member holding several pays the lowest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tier_prices: Vec<TierPrice>,
    /// Only members holding one of these tiers may order it (anyone when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<String>,
    /// Orderable from this instant (always, when absent) …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_from: Option<DateTime<Utc>>,
    /// … until this one, excluded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_until: Option<DateTime<Utc>>,
    /// The partner that fulfils orders of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner: Option<String>,
    /// A voucher definition of the program: each order issues the member one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voucher: Option<String>,
    /// `false`: listed to operators only, not orderable.
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

/// An item's price for members of a tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierPrice {
    pub tier: String,
    pub points: i64,
}

/// Why an item cannot be ordered, or an order not changed; each has its own code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("the item is not offered at the moment")]
    Inactive,
    #[error("the item can be ordered from {0}")]
    NotYetAvailable(DateTime<Utc>),
    #[error("the item could be ordered until {0}")]
    NoLongerAvailable(DateTime<Utc>),
    #[error("the item is for members of the tiers {0}")]
    NotForTier(String),
    #[error("the item is out of stock")]
    OutOfStock,
    #[error("the order was {0}; only a placed order can be {1}")]
    OrderState(OrderStatus, &'static str),
}

impl CatalogError {
    /// The stable machine code of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Inactive => "item_inactive",
            Self::NotYetAvailable(_) => "item_not_yet_available",
            Self::NoLongerAvailable(_) => "item_no_longer_available",
            Self::NotForTier(_) => "item_not_for_tier",
            Self::OutOfStock => "out_of_stock",
            Self::OrderState(OrderStatus::Fulfilled, _) => "order_fulfilled",
            Self::OrderState(OrderStatus::Cancelled, _) => "order_cancelled",
            Self::OrderState(_, _) => "order_not_placed",
        }
    }
}

impl CatalogItem {
    /// Every problem of the item against the program, each with its path.
    pub fn check(&self, program: &Program) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |path: &str, message: String| {
            problems.push(Problem {
                path: path.to_owned(),
                message,
            });
        };
        if self.code.is_empty()
            || self.code.len() > 64
            || !self
                .code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            problem("code", "must be 1 to 64 of a-z, 0-9, - and _".into());
        }
        let text_ok = |s: &str, max: usize| {
            !s.trim().is_empty() && s.chars().count() <= max && !s.chars().any(char::is_control)
        };
        if !text_ok(&self.name, MAX_NAME_LEN) {
            problem(
                "name",
                format!("must be 1 to {MAX_NAME_LEN} characters, no control characters"),
            );
        }
        if let Some(d) = &self.description
            && (d.chars().count() > MAX_DESCRIPTION_LEN
                || d.chars().any(|c| c.is_control() && c != '\n'))
        {
            problem(
                "description",
                format!("must be at most {MAX_DESCRIPTION_LEN} characters"),
            );
        }
        match program
            .currencies
            .iter()
            .find(|c| c.code.as_str() == self.currency)
        {
            None => problem(
                "currency",
                format!("the program has no currency {:?}", self.currency),
            ),
            Some(c) if c.kind != CurrencyKind::Redeemable => problem(
                "currency",
                format!("{:?} is not a redeemable currency", self.currency),
            ),
            Some(_) => {}
        }
        let price_ok = |p: i64| (1..=MAX_POINTS).contains(&p);
        if !price_ok(self.points) {
            problem("points", format!("must be 1 to {MAX_POINTS}"));
        }
        let tier_known = |t: &str| {
            program
                .tier_groups
                .iter()
                .any(|g| g.tiers.iter().any(|tier| tier.code.as_str() == t))
        };
        for (i, tp) in self.tier_prices.iter().enumerate() {
            if !tier_known(&tp.tier) {
                problem(
                    &format!("tier_prices[{i}].tier"),
                    format!("the program has no tier {:?}", tp.tier),
                );
            }
            if self.tier_prices[..i].iter().any(|o| o.tier == tp.tier) {
                problem(
                    &format!("tier_prices[{i}].tier"),
                    format!("{:?} has a price already", tp.tier),
                );
            }
            if !price_ok(tp.points) {
                problem(
                    &format!("tier_prices[{i}].points"),
                    format!("must be 1 to {MAX_POINTS}"),
                );
            }
        }
        for (i, t) in self.tiers.iter().enumerate() {
            if !tier_known(t) {
                problem(
                    &format!("tiers[{i}]"),
                    format!("the program has no tier {t:?}"),
                );
            }
        }
        if let (Some(from), Some(until)) = (self.available_from, self.available_until)
            && until <= from
        {
            problem("available_until", "must be after available_from".into());
        }
        if let Some(p) = &self.partner
            && !text_ok(p, 128)
        {
            problem("partner", "must be 1 to 128 characters".into());
        }
        if let Some(v) = &self.voucher
            && program.voucher(v).is_none()
        {
            problem(
                "voucher",
                format!("the program has no voucher definition {v:?}"),
            );
        }
        problems
    }

    /// Whether the item can be ordered at `now`.
    pub fn orderable_at(&self, now: DateTime<Utc>) -> Result<(), CatalogError> {
        if !self.active {
            return Err(CatalogError::Inactive);
        }
        if let Some(from) = self.available_from
            && now < from
        {
            return Err(CatalogError::NotYetAvailable(from));
        }
        if let Some(until) = self.available_until
            && now >= until
        {
            return Err(CatalogError::NoLongerAvailable(until));
        }
        Ok(())
    }

    /// The price for a member holding `member_tiers`: the lowest of those tiers' own
    /// prices, or the item's. Refused when the item is for other tiers.
    pub fn price_for(&self, member_tiers: &[&str]) -> Result<i64, CatalogError> {
        if !self.tiers.is_empty()
            && !self
                .tiers
                .iter()
                .any(|t| member_tiers.contains(&t.as_str()))
        {
            return Err(CatalogError::NotForTier(self.tiers.join(", ")));
        }
        Ok(self
            .tier_prices
            .iter()
            .filter(|tp| member_tiers.contains(&tp.tier.as_str()))
            .map(|tp| tp.points)
            .min()
            .unwrap_or(self.points))
    }
}

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Stock taken, the points' redemption not yet answered (a moment; an order found so
    /// later is finished by its next retry).
    Placing,
    Placed,
    Fulfilled,
    Cancelled,
    /// The ledger refused the redemption: nothing spent, the stock given back.
    Rejected,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Placing => "placing",
            Self::Placed => "placed",
            Self::Fulfilled => "fulfilled",
            Self::Cancelled => "cancelled",
            Self::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "placing" => Self::Placing,
            "placed" => Self::Placed,
            "fulfilled" => Self::Fulfilled,
            "cancelled" => Self::Cancelled,
            "rejected" => Self::Rejected,
            _ => return None,
        })
    }

    /// The status after fulfilment: only a placed order is fulfilled.
    pub fn fulfil(self) -> Result<Self, CatalogError> {
        match self {
            Self::Placed => Ok(Self::Fulfilled),
            other => Err(CatalogError::OrderState(other, "fulfilled")),
        }
    }

    /// The status after cancellation: only a placed order (not yet fulfilled) is
    /// cancelled.
    pub fn cancel(self) -> Result<Self, CatalogError> {
        match self {
            Self::Placed => Ok(Self::Cancelled),
            other => Err(CatalogError::OrderState(other, "cancelled")),
        }
    }
}

impl std::fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The external id of an order's redemption journal, and of that journal's cancellation.
pub const ORDER_PREFIX: &str = "order:";
pub const ORDER_CANCEL_PREFIX: &str = "order-cancel:";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::ProgramDocument;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("the test fixture is valid")
            .with_timezone(&Utc)
    }

    fn program() -> Program {
        let doc: ProgramDocument = serde_json::from_value(serde_json::json!({
            "code": "shop", "name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
            "currencies": [
                {"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "never"}},
                {"code": "status", "name": "Status", "kind": "qualifying", "expiry": {"policy": "never"}}],
            "earning": {"base": [{"currency": "points", "rate": "1"}]},
            "tier_groups": [{"code": "main", "name": "Main", "currency": "status", "tiers": [
                {"code": "base", "name": "Base", "threshold": 0},
                {"code": "silver", "name": "Silver", "threshold": 100},
                {"code": "gold", "name": "Gold", "threshold": 200}]}],
            "vouchers": [{"code": "ten", "name": "Ten", "value": {"fixed": "10.00"}}]
        }))
        .expect("the test fixture is valid");
        Program::compile(&doc, None).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn item() -> CatalogItem {
        serde_json::from_value(serde_json::json!({
            "code": "mug", "name": "Mug", "currency": "points", "points": 500,
            "tier_prices": [{"tier": "silver", "points": 450}, {"tier": "gold", "points": 400}],
            "available_from": "2026-12-01T00:00:00Z", "available_until": "2027-01-01T00:00:00Z",
            "voucher": "ten"
        }))
        .expect("the test fixture is valid")
    }

    #[test]
    fn a_member_pays_the_lowest_price_of_the_tiers_held() {
        let item = item();
        assert!(item.check(&program()).is_empty());
        assert_eq!(item.price_for(&[]), Ok(500));
        assert_eq!(item.price_for(&["base"]), Ok(500));
        assert_eq!(item.price_for(&["silver"]), Ok(450));
        assert_eq!(item.price_for(&["silver", "gold"]), Ok(400));
        let gold_only = CatalogItem {
            tiers: vec!["gold".into()],
            ..item
        };
        assert_eq!(
            gold_only.price_for(&["silver"]).unwrap_err().code(),
            "item_not_for_tier"
        );
        assert_eq!(gold_only.price_for(&["gold"]), Ok(400));
    }

    #[test]
    fn the_window_is_half_open_and_inactive_items_are_not_orderable() {
        let item = item();
        assert_eq!(
            item.orderable_at(utc("2026-11-30T23:59:59Z"))
                .unwrap_err()
                .code(),
            "item_not_yet_available"
        );
        assert!(item.orderable_at(utc("2026-12-01T00:00:00Z")).is_ok());
        assert!(item.orderable_at(utc("2026-12-31T23:59:59Z")).is_ok());
        assert_eq!(
            item.orderable_at(utc("2027-01-01T00:00:00Z"))
                .unwrap_err()
                .code(),
            "item_no_longer_available"
        );
        let off = CatalogItem {
            active: false,
            ..item
        };
        assert_eq!(
            off.orderable_at(utc("2026-12-02T00:00:00Z"))
                .unwrap_err()
                .code(),
            "item_inactive"
        );
    }

    #[test]
    fn every_problem_is_named_by_its_path() {
        let bad: CatalogItem = serde_json::from_value(serde_json::json!({
            "code": "Mug!", "name": " ", "currency": "status", "points": 0,
            "tier_prices": [{"tier": "platinum", "points": 1}, {"tier": "platinum", "points": -1}],
            "tiers": ["nope"], "available_from": "2027-01-01T00:00:00Z",
            "available_until": "2026-01-01T00:00:00Z", "voucher": "twenty"
        }))
        .expect("the test fixture is valid");
        let paths: Vec<String> = bad.check(&program()).into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            [
                "code",
                "name",
                "currency",
                "points",
                "tier_prices[0].tier",
                "tier_prices[1].tier",
                "tier_prices[1].tier",
                "tier_prices[1].points",
                "tiers[0]",
                "available_until",
                "voucher"
            ]
        );
    }

    #[test]
    fn only_placed_orders_are_fulfilled_or_cancelled() {
        assert_eq!(OrderStatus::Placed.fulfil(), Ok(OrderStatus::Fulfilled));
        assert_eq!(OrderStatus::Placed.cancel(), Ok(OrderStatus::Cancelled));
        assert_eq!(
            OrderStatus::Fulfilled.cancel().unwrap_err().code(),
            "order_fulfilled"
        );
        assert_eq!(
            OrderStatus::Cancelled.fulfil().unwrap_err().code(),
            "order_cancelled"
        );
        assert_eq!(
            OrderStatus::Rejected.cancel().unwrap_err().code(),
            "order_not_placed"
        );
        for s in ["placing", "placed", "fulfilled", "cancelled", "rejected"] {
            assert_eq!(OrderStatus::parse(s).map(OrderStatus::as_str), Some(s));
        }
    }
}
