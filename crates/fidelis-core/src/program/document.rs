//! The program definition document: what operators write (JSON or YAML), what
//! `PUT /programs/{program}` accepts and `GET` returns, what the store keeps.
//!
//! The document is deliberately loose (strings, options) so that validation can report
//! every problem at once with its path, instead of stopping at the first one as a strict
//! deserializer would. Unknown fields are collected and reported as problems too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Fields a document held that the format does not know (typos, or features of a later
/// release). Reported by validation; never stored.
pub type UnknownFields = BTreeMap<String, serde::de::IgnoredAny>;

/// A program definition as written by an operator.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProgramDocument {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// IANA time zone (`Europe/Berlin`); every calendar rule is evaluated in it.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// The ISO 4217 currency journals are priced in (`EUR`).
    #[serde(default)]
    pub money_currency: Option<String>,
    /// The local date the program began (`2019-04-01`): journals dated before it are
    /// refused. Without it, only journals before 1970 are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_on: Option<String>,
    /// An extension of every member's expiries (`{months: 6}`): points credited from now
    /// on expire this much later, and inactivity windows are this much longer — a
    /// program-wide goodwill, beside what tiers extend.
    #[serde(
        default,
        deserialize_with = "crate::objects::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub expiry_extension: Option<LengthDocument>,
    /// Activity types besides `purchase` that journals may carry (`review`, `flight`…).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activity_types: Vec<String>,
    #[serde(default, deserialize_with = "crate::objects::list")]
    pub currencies: Vec<CurrencyDocument>,
    #[serde(default, deserialize_with = "crate::objects::object")]
    pub earning: EarningDocument,
    #[serde(
        default,
        deserialize_with = "crate::objects::list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tier_groups: Vec<TierGroupDocument>,
    #[serde(
        default,
        deserialize_with = "crate::objects::list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub promotions: Vec<PromotionDocument>,
    /// Rewards for referrals: when a member who enrolled with another's referral code
    /// makes a first qualifying journal, both are rewarded, once per referee.
    #[serde(
        default,
        deserialize_with = "crate::objects::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub referral: Option<ReferralDocument>,
    /// Voucher definitions: what promotions, catalog orders and agents issue.
    #[serde(
        default,
        deserialize_with = "crate::objects::list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub vouchers: Vec<VoucherDocument>,
    /// Badges promotions award: `{code, name, description, repeatable}`.
    #[serde(
        default,
        deserialize_with = "crate::objects::list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub badges: Vec<BadgeDocument>,
    /// Member segments: `{code, name, description, condition}`, the condition a CEL
    /// expression over `member` (see `fidelis_core::segments` for its fields), refreshed by
    /// the scheduled jobs and usable in promotions' `eligibility.segments`.
    #[serde(
        default,
        deserialize_with = "crate::objects::list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub segments: Vec<SegmentDocument>,
    /// When and in which language messages go to members.
    #[serde(
        default,
        deserialize_with = "crate::objects::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub messaging: Option<MessagingDocument>,
    /// Fraud rules that hold suspicious journals and transfers for review.
    #[serde(
        default,
        deserialize_with = "crate::objects::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub fraud: Option<FraudDocument>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// A segment: `{code: lapsing, name: "Lapsing regulars", condition: "member.p_alive < 0.5
/// && member.purchases_365d >= 4"}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SegmentDocument {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// A badge: `{code: first-flight, name: "First flight", repeatable: false}`. A member holds
/// a badge once; a repeatable one counts how many times it was awarded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BadgeDocument {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeatable: bool,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// A voucher definition: `{code: ten-off, name: "10 EUR off", value: {fixed: "10.00"},
/// validity: {days: 30}, uses: 1, code_format: {prefix: "TEN-", length: 12}}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VoucherDocument {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "crate::objects::optional")]
    pub value: Option<VoucherValueDocument>,
    #[serde(
        default,
        deserialize_with = "crate::objects::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub validity: Option<VoucherValidityDocument>,
    /// Redemptions a voucher allows: 1 by default, or until a fixed value is spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
    #[serde(
        default,
        deserialize_with = "crate::objects::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub code_format: Option<CodeFormatDocument>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// Exactly one of `fixed` (money, `"10.00"`), `percent` (`"15"`), `free_product` (a SKU).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VoucherValueDocument {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_product: Option<String>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// `{starts_on: 2026-12-01, ends_on: 2026-12-31}` (local dates, both included) and/or
/// `{days: 30}` (to the end of the 30th day after the day of issue).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VoucherValidityDocument {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_on: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_on: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// `{prefix: "XMAS-", length: 12}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CodeFormatDocument {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u8>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// `{journal_types: [purchase], referrer: {currency: points, points: 500}, referee:
/// {currency: points, points: 250}}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReferralDocument {
    /// The journals of the referee that qualify; `[purchase]` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_types: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::objects::optional")]
    pub referrer: Option<ReferralRewardDocument>,
    #[serde(default, deserialize_with = "crate::objects::optional")]
    pub referee: Option<ReferralRewardDocument>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReferralRewardDocument {
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub points: Option<i64>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// A loyalty currency (points, miles, status credits).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CurrencyDocument {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// `redeemable` (spendable points) or `qualifying` (counts toward tiers only).
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "crate::objects::optional")]
    pub expiry: Option<ExpiryDocument>,
    /// Days earned points stay pending (visible, not spendable) before they become
    /// available: the return window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_days: Option<u32>,
    /// What a refund does when the points it takes back were already spent:
    /// `within_balance`, `allow_negative` or `pending_only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_policy: Option<String>,
    /// The lowest the available balance may go (zero or negative; only with
    /// `allow_negative`). Without it, `allow_negative` has no lower bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_floor: Option<i64>,
    /// What one point costs the operator, in the program's money currency (`"0.01"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_per_point: Option<String>,
    /// Members may transfer points of this currency to each other, at most `daily_limit`
    /// points sent per member and day (in the program's time zone): `{daily_limit: 5000}`.
    /// Absent: points cannot be transferred.
    #[serde(
        default,
        deserialize_with = "crate::objects::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub transfer: Option<TransferDocument>,
    /// Agents may reinstate points that expired within this many days (the boundary day
    /// included). Absent: no reinstatement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reinstate_within_days: Option<u32>,
    /// Pay with points: what a point is worth at checkout,
    /// `{money_per_point: "0.01", minimum_points: 500, rounding: up}`. Absent: points of
    /// this currency are not offered as payment (holds work all the same).
    #[serde(
        default,
        deserialize_with = "crate::objects::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub payment: Option<PaymentDocument>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// Pay with points: the conversion of points into money at checkout.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PaymentDocument {
    /// What one point pays, in the program's money currency (`"0.01"`).
    #[serde(default)]
    pub money_per_point: Option<String>,
    /// The fewest points a payment may use (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_points: Option<i64>,
    /// How an amount becomes points: `up` (the default: enough points to pay it all),
    /// `down`, `half_up`, `half_even`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounding: Option<String>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// Transfers of a currency between members.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TransferDocument {
    #[serde(default)]
    pub daily_limit: Option<i64>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// When earned points expire.
///
/// - `{policy: never}`
/// - `{policy: rolling, months: 24}` or `{policy: rolling, days: 90, round_up: end_of_month}`
/// - `{policy: fixed_date, month: 12, day: 31, years_after: 1}`: at the end of the next
///   31 December on or after earning, one year later.
/// - `{policy: inactivity, months: 18}`: the whole balance, after 18 months without
///   activity (any accrual or redemption extends it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExpiryDocument {
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub months: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_up: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub years_after: Option<u32>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// How journals earn before any promotion.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EarningDocument {
    #[serde(default, deserialize_with = "crate::objects::list")]
    pub base: Vec<BaseEarningDocument>,
    /// Whether base points are still awarded when a promotion awards points of the same
    /// currency (`true` when absent). With `false`, the promotion replaces the base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_stacks_with_promotions: Option<bool>,
    /// How many days before the member's enrolment (local dates) a purchase or activity may
    /// still earn: `0` (the default) is from the day of enrolment on; older ones are refused
    /// with `before_enrolment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days_before_enrolment: Option<u32>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// Base earning: points of a currency per major unit of money spent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BaseEarningDocument {
    #[serde(default)]
    pub currency: Option<String>,
    /// Points per one unit of the money currency, as a decimal string (`"1"`, `"2.5"`).
    #[serde(default)]
    pub rate: Option<String>,
    /// `down` (default), `up`, `half_up` or `half_even`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounding: Option<String>,
    /// The journal types that earn this way; `[purchase]` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_types: Option<Vec<String>>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// Ordered tiers and how members qualify for them (see [`crate::tiers`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TierGroupDocument {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What counts: `points` (of `currency`, a qualifying currency; the default), `spend`
    /// (money on accruals) or `activities` (number of accruals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measure: Option<String>,
    /// The qualifying currency, for the `points` measure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// `{type: calendar_year}` (the default), `{type: anniversary}` or
    /// `{type: rolling, months: 12}`.
    #[serde(
        default,
        deserialize_with = "crate::objects::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub period: Option<QualifyingPeriodDocument>,
    /// `one_tier` (the default) or `to_qualified`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downgrade: Option<String>,
    /// `{months: 3}` or `{days: 30}`: a member who fails an assessment keeps the tier this
    /// long to re-qualify.
    #[serde(
        default,
        deserialize_with = "crate::objects::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub grace: Option<LengthDocument>,
    /// Further periods a tier is kept after the one it was reached in (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validity_periods: Option<u32>,
    /// Reset the qualifying currency's balance at each period end (calendar and
    /// membership years; default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<bool>,
    #[serde(default, deserialize_with = "crate::objects::list")]
    pub tiers: Vec<TierDocument>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TierDocument {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The measure needed to hold the tier (points, minor units of money, or
    /// activities); the first tier's is 0.
    #[serde(default)]
    pub threshold: Option<i64>,
    /// In a `tier_validity` group: what the member needs within the tier's validity to
    /// keep it (the threshold when not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_threshold: Option<i64>,
    /// What the tier grants.
    #[serde(
        default,
        deserialize_with = "crate::objects::list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub benefits: Vec<BenefitDocument>,
    /// Points credited while holding the tier expire this much later: `{months: 6}`.
    #[serde(
        default,
        deserialize_with = "crate::objects::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub expiry_extension: Option<LengthDocument>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// A qualifying period.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QualifyingPeriodDocument {
    /// `calendar_year`, `anniversary` or `rolling`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// The window of a rolling period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub months: Option<u32>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// A length of time: days or months.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LengthDocument {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub months: Option<u32>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// A benefit of a tier: `{code: lounge_access}`, `{code: earning_multiplier, value: "1.5"}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BenefitDocument {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// A promotion: when a journal (or a line of it) meets the condition inside the window,
/// the actions award points, vouchers or badges.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PromotionDocument {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// `draft`, `active`, `paused` or `ended`; only `active` promotions award.
    #[serde(default)]
    pub status: Option<String>,
    /// Local date-time in the program's time zone (`2026-12-01T00:00`, or a date), from
    /// which the promotion applies; always when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    /// Local date-time (exclusive) at which it stops applying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    /// The journal types it applies to; `[purchase]` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_types: Option<Vec<String>>,
    /// The subtypes it applies to; any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtypes: Option<Vec<String>>,
    /// `journal` (default): the condition is evaluated once per journal. `line`: once per
    /// line, with `line` bound, and the actions apply to the matching lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// A CEL expression over `journal`, `member`, `local` (and `line`); always true when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(default, deserialize_with = "crate::objects::list")]
    pub actions: Vec<ActionDocument>,
    /// Higher first; promotions of equal priority run in the order they are defined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// When it applies, no promotion of lower priority does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive: Option<bool>,
    #[serde(
        default,
        deserialize_with = "crate::objects::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub limits: Option<LimitsDocument>,
    #[serde(
        default,
        deserialize_with = "crate::objects::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub cumulative: Option<CumulativeDocument>,
    /// Only members who joined it (`POST …/members/{m}/promotions/{code}/join`) benefit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_in: Option<bool>,
    /// Who may benefit: `{tiers: [silver, gold]}` (tier codes of the program's tier groups).
    #[serde(
        default,
        deserialize_with = "crate::objects::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub eligibility: Option<EligibilityDocument>,
    /// Hold out a share of the members to measure the promotion against:
    /// `{share: "0.20"}`. They are evaluated but not awarded (their outcome says
    /// `control`); the promotion performance report compares their spend with the
    /// rewarded members'.
    #[serde(
        default,
        deserialize_with = "crate::objects::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub control_group: Option<ControlGroupDocument>,
    /// A reward no journal triggers, run by the scheduled jobs: `{type: birthday}`
    /// (`window: day` or `month`), `{type: anniversary}`, `{type: inactivity, days: 90}`.
    #[serde(
        default,
        deserialize_with = "crate::objects::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub trigger: Option<TriggerDocument>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// What starts a scheduled reward (see `fidelis_core::promotions::scheduled`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TriggerDocument {
    /// `birthday`, `anniversary` or `inactivity`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Birthday only: `day` (default, on the birthday) or `month` (any day of its month).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Inactivity only: days without an accrual or redemption, 1 to 3650.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// A cumulative promotion: journals meeting the condition add to the member's progress
/// (`measure: count`, one each, or `measure: amount`, the money spent); the actions fire
/// on the journal that reaches `target`, and progress starts again from what is left over
/// (`repeat: false`: once per period). With a `period` (`day` … `year`), progress
/// starts from zero each period, in the program's time zone.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CumulativeDocument {
    #[serde(default)]
    pub measure: Option<String>,
    /// A count (`"10"`) or an amount of money (`"500.00"`).
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<bool>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// Who may benefit from a promotion.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EligibilityDocument {
    /// Members in any of these tiers (the tier their qualifying balance reaches before the
    /// journal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<Vec<String>>,
    /// Members in any of these segments of the program, as of their last refresh (and in
    /// one of `tiers`, when both are given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<Vec<String>>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// A promotion's control group.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ControlGroupDocument {
    /// The share of members held out, a decimal from 0.0001 to 0.9 (`"0.20"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// A promotion's limits; points count every point it awards. An award that would cross a
/// points cap is cut to what the cap leaves.
///
/// - `per_member: {times, points}`: per member over the promotion's life.
/// - `per_member_per_period: {period: day|week|month|quarter|year, times, points}`: per member
///   and calendar period in the program's time zone.
/// - `budget_points`: all members together, over the promotion's life.
/// - `daily_points`: all members together, per local day.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LimitsDocument {
    #[serde(
        default,
        deserialize_with = "crate::objects::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub per_member: Option<LimitDocument>,
    #[serde(
        default,
        deserialize_with = "crate::objects::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub per_member_per_period: Option<LimitDocument>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_points: Option<i64>,
    /// Vouchers issued to all members together over the promotion's life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_vouchers: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_points: Option<i64>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LimitDocument {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points: Option<i64>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// What a promotion does when it applies.
///
/// - `{type: fixed, currency, points}`: a fixed number of points (per matching line in
///   `line` scope).
/// - `{type: per_money, currency, rate, rounding}`: points per unit of money spent (on the
///   journal, or on the matching lines).
/// - `{type: multiplier, currency, factor}`: the base points times `factor` in total
///   (`"2"` doubles them), on the journal or the matching lines.
/// - `{type: voucher, voucher}`: issues a voucher of that definition.
/// - `{type: badge, badge}`: awards a badge.
///
/// Points of a qualifying currency are qualifying points.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ActionDocument {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<String>,
    /// A multiplier's factor read from the member's tier benefit of this code (its
    /// `value`): `earning_multiplier` makes a tier's benefit the earning rule itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor_benefit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voucher: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub badge: Option<String>,
    /// A `benefit` action's benefit: `{code, name, value}`, like a tier's.
    #[serde(
        default,
        deserialize_with = "crate::objects::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub benefit: Option<BenefitDocument>,
    /// How many days a granted benefit lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// `messaging:` — quiet hours in the program's time zone and the default language.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MessagingDocument {
    #[serde(
        default,
        deserialize_with = "crate::objects::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub quiet_hours: Option<QuietHoursDocument>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_language: Option<String>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// A daily window, `HH:MM` local times; `from` after `to` spans midnight.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QuietHoursDocument {
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// `fraud:` — the rules that hold journals and transfers for review.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FraudDocument {
    #[serde(default, deserialize_with = "crate::objects::list")]
    pub rules: Vec<FraudRuleDocument>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// One fraud rule: `rule` names it, the other fields are its settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FraudRuleDocument {
    #[serde(default)]
    pub rule: Option<String>,
    /// velocity: `accruals` or `redemptions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journals: Option<String>,
    /// velocity: the most journals allowed in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    /// velocity: the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_minutes: Option<u32>,
    /// redemption_after_change: the window after enrolment or a profile change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_hours: Option<u32>,
    /// transfer_ring: the window the ring's transfers lie in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_days: Option<u32>,
    /// unusual_amount: the robust score above which a purchase is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// unusual_amount: the purchases a member needs before amounts are judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<u32>,
    /// shared_receipt: the journal attribute holding the receipt number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    /// transfer_ring: the most members in a ring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u32>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}
