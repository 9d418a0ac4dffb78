//! Programs: the definition document, its validation, and the compiled [`Program`] the
//! rest of the core runs on.
//!
//! A [`Program`] can only be obtained through [`Program::compile`], so holding one means
//! the definition was valid: code downstream never re-checks it.

mod document;
mod validate;

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;

pub use document::*;
pub use validate::Problem;

/// The JSON Schema (draft 2020-12) of the program definition document: what editors
/// complete and check as definitions are typed, what the OpenAPI document's
/// `ProgramDefinition` is. What a schema cannot state (cross-references, conditions) is
/// checked by [`Program::compile`] and described in the schema.
pub const DEFINITION_SCHEMA: &str = include_str!("../../program.schema.json");

pub use crate::tiers::{Benefit, Downgrade, QualifyingPeriod, Tier, TierGroup, TierMeasure};

use crate::calendar::{self, RoundUp};
use crate::ids::{Code, CurrencyIx, ProgramCode};
use crate::money::{MoneyCurrency, PointsRate};

/// A validated program definition, ready to process journals.
#[derive(Debug, Clone)]
pub struct Program {
    pub code: ProgramCode,
    pub name: String,
    pub time_zone: Tz,
    pub money_currency: MoneyCurrency,
    /// The first instant a journal may be dated: the start of `starts_on` in the program's
    /// time zone, or 1970-01-01 UTC.
    pub starts_at: DateTime<Utc>,
    /// Every member's expiry extension (see [`Program::expiry_extensions`]).
    pub expiry_extension: Option<Period>,
    /// Journal types besides `purchase`.
    pub activity_types: Vec<Code>,
    /// Indexed by [`CurrencyIx`].
    pub currencies: Vec<Currency>,
    pub base_earning: Vec<BaseEarning>,
    pub tier_groups: Vec<TierGroup>,
    /// Whether base points are awarded beside a promotion's points of the same currency.
    pub base_stacks: bool,
    /// How many days before enrolment (local dates) an accrual may still earn.
    pub days_before_enrolment: u32,
    /// In evaluation order: priority, highest first, then definition order.
    pub promotions: Vec<crate::promotions::Promotion>,
    /// Referral rewards, when the program has them.
    pub referral: Option<Referral>,
    /// Voucher definitions, in definition order.
    pub vouchers: Vec<crate::vouchers::VoucherDefinition>,
    /// Badges, in definition order.
    pub badges: Vec<BadgeDefinition>,
    /// Member segments, in the document's order.
    pub segments: Vec<crate::segments::Segment>,
    /// Quiet hours and the default language of messages.
    pub messaging: crate::messaging::Messaging,
    /// The rules that hold suspicious journals and transfers for review.
    pub fraud: crate::fraud::Fraud,
    /// The definition this was compiled from, normalised, as `GET` returns it.
    pub document: ProgramDocument,
}

impl Program {
    /// Validates a definition document and compiles it. `code` is the program's code when
    /// it is given outside the document (a URL); the document's own code, if any, must
    /// agree with it. Every problem found is returned, each with its path.
    pub fn compile(document: &ProgramDocument, code: Option<&str>) -> Result<Self, Vec<Problem>> {
        validate::compile(document, code)
    }

    /// The currency with this code.
    pub fn currency_ix(&self, code: &str) -> Option<CurrencyIx> {
        self.currencies
            .iter()
            .position(|c| c.code.as_str() == code)
            .and_then(|i| u16::try_from(i).ok())
            .map(CurrencyIx)
    }

    /// The voucher definition with this code.
    pub fn badge(&self, code: &str) -> Option<&BadgeDefinition> {
        self.badges.iter().find(|b| b.code.as_str() == code)
    }

    pub fn voucher(&self, code: &str) -> Option<&crate::vouchers::VoucherDefinition> {
        self.vouchers.iter().find(|v| v.code.as_str() == code)
    }

    pub fn currency(&self, ix: CurrencyIx) -> &Currency {
        &self.currencies[ix.index()]
    }

    /// Whether any promotion keeps counters, limits or cumulative progress (the store then
    /// loads them).
    pub fn has_limits(&self) -> bool {
        self.promotions.iter().any(|p| p.counts())
    }

    /// Whether any promotion's condition reads the member's profile or enrolment, or its
    /// eligibility names segments, so the store must load them with the member.
    pub fn needs_member_facts(&self) -> bool {
        self.reads_segments()
            || self
                .promotions
                .iter()
                .filter_map(|p| p.condition.as_ref())
                .any(|c| c.reads_member_facts())
    }

    /// Whether some promotion is only for members of some segments, so the store must load
    /// the members' segments with their facts.
    pub fn reads_segments(&self) -> bool {
        self.promotions.iter().any(|p| !p.segments.is_empty())
    }

    /// The segment of this code.
    pub fn segment(&self, code: &str) -> Option<&crate::segments::Segment> {
        self.segments.iter().find(|s| s.code.as_str() == code)
    }

    /// Whether the store must load the benefits promotions granted members for a period:
    /// some promotion grants one (a `benefit` action) and some may read one — a
    /// multiplier by a benefit's value, or a condition naming `benefits`. (A program
    /// whose promotions grant none, like the templates as shipped, pays nothing; grants
    /// left from an earlier definition are read again once a promotion grants benefits.)
    pub fn reads_granted_benefits(&self) -> bool {
        let grants = self.promotions.iter().any(|p| {
            p.actions
                .iter()
                .any(|a| matches!(a, crate::promotions::Action::Benefit { .. }))
        });
        grants
            && self.promotions.iter().any(|p| {
                p.actions.iter().any(|a| {
                    matches!(
                        a,
                        crate::promotions::Action::Multiplier {
                            factor: crate::promotions::Factor::Benefit(_),
                            ..
                        }
                    )
                }) || p
                    .condition
                    .as_ref()
                    .is_some_and(|c| !c.is_fast() && c.source().contains("benefits"))
            })
    }

    /// Whether any tier extends the expiry of points earned while holding it.
    pub fn has_expiry_extensions(&self) -> bool {
        self.tier_groups
            .iter()
            .any(|g| g.tiers.iter().any(|t| t.expiry_extension.is_some()))
    }

    /// The extensions a member's expiries get: the program's, and those of the tiers
    /// the member holds (`tiers`, when known). The longest wins.
    pub fn expiry_extensions(&self, tiers: Option<&crate::tiers::MemberTiers>) -> Vec<Period> {
        let mut out: Vec<Period> = self.expiry_extension.into_iter().collect();
        if let Some(t) = tiers
            && self.has_expiry_extensions()
        {
            out.extend(t.expiry_extensions(self));
        }
        out
    }

    /// Whether journals may carry this activity type.
    pub fn accepts_activity(&self, activity: &str) -> bool {
        activity == PURCHASE || self.activity_types.iter().any(|a| a.as_str() == activity)
    }

    /// Iterates currencies with their indexes.
    pub fn currency_ixs(&self) -> impl Iterator<Item = (CurrencyIx, &Currency)> {
        self.currencies
            .iter()
            .enumerate()
            .map(|(i, c)| (CurrencyIx(i as u16), c))
    }
}

/// Referral rewards: a referee's first journal of one of `journal_types` rewards the
/// referrer and the referee, once per referee.
#[derive(Debug, Clone)]
pub struct Referral {
    pub journal_types: Vec<Code>,
    pub referrer: (CurrencyIx, i64),
    pub referee: (CurrencyIx, i64),
}

impl Referral {
    /// Whether an applied journal of this type qualifies its member's referral.
    pub fn qualifies(&self, journal_type: &str) -> bool {
        self.journal_types
            .iter()
            .any(|t| t.as_str() == journal_type)
    }
}

/// The built-in activity type of a journal that buys something.
pub const PURCHASE: &str = "purchase";

/// The most currencies a program may define (accounts are indexed by a `u16`, and a real
/// program has a handful).
pub const MAX_CURRENCIES: usize = 16;

/// A badge promotions award (`{type: badge, badge: CODE}`): held once per member, or
/// counted when `repeatable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadgeDefinition {
    pub code: Code,
    pub name: String,
    pub description: Option<String>,
    pub repeatable: bool,
}

/// A loyalty currency.
#[derive(Debug, Clone)]
pub struct Currency {
    pub code: Code,
    pub name: String,
    pub kind: CurrencyKind,
    pub expiry: ExpiryPolicy,
    pub pending_days: u32,
    pub return_policy: ReturnPolicy,
    /// The lowest the available balance may go, when the definition sets one (only with
    /// `allow_negative`). Redemptions may overdraw down to it; without it they stop at
    /// zero. Refunds under `allow_negative` take points back down to it, or without limit
    /// when it is absent.
    pub negative_floor: Option<i64>,
    pub value_per_point: Decimal,
    /// Points a member may transfer to others per day; `None`: not transferable.
    pub transfer_limit: Option<i64>,
    /// How far back agents may reinstate expired points, in days; `None`: never.
    pub reinstate_within_days: Option<u32>,
    /// Pay with points: what a point pays at checkout; `None`: not offered as payment.
    pub payment: Option<crate::holds::Payment>,
}

impl Currency {
    /// All points of this currency are alike: they never expire and are never pending,
    /// so they need no buckets (see [`crate::ledger`]).
    pub fn is_fungible(&self) -> bool {
        self.expiry == ExpiryPolicy::Never && self.pending_days == 0
    }

    /// The lowest balance a redemption may leave.
    pub fn redemption_floor(&self) -> i64 {
        self.negative_floor.unwrap_or(0)
    }

    /// The lowest balance a refund may leave under `allow_negative`.
    pub fn arrears_floor(&self) -> i64 {
        self.negative_floor.unwrap_or(i64::MIN)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CurrencyKind {
    /// Spendable: points, miles.
    Redeemable,
    /// Counts toward tiers only; cannot be redeemed.
    Qualifying,
}

impl CurrencyKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Redeemable => "redeemable",
            Self::Qualifying => "qualifying",
        }
    }
}

/// What happens when a refund or cancellation takes back points that were already spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnPolicy {
    /// Take back only what the available balance still holds; the rest is reported as
    /// unrecovered.
    WithinBalance,
    /// Take back everything; what the balance cannot cover becomes arrears (a negative
    /// balance, down to the floor), recovered from later earning.
    AllowNegative,
    /// Take back only points still pending.
    PendingOnly,
}

impl ReturnPolicy {
    pub const NAMES: &'static str = "within_balance, allow_negative, pending_only";

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "within_balance" => Self::WithinBalance,
            "allow_negative" => Self::AllowNegative,
            "pending_only" => Self::PendingOnly,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::WithinBalance => "within_balance",
            Self::AllowNegative => "allow_negative",
            Self::PendingOnly => "pending_only",
        }
    }
}

/// A length of time on the calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Days(u32),
    Months(u32),
}

impl Period {
    pub fn after(self, tz: Tz, t: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Self::Days(n) => calendar::add_days(tz, t, n),
            Self::Months(n) => calendar::add_months(tz, t, n),
        }
    }
}

/// When points of a currency expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryPolicy {
    Never,
    /// A fixed time after earning, per bucket, optionally rounded up to a period's end.
    Rolling {
        period: Period,
        round_up: Option<RoundUp>,
    },
    /// At the end of the next `month`/`day` on or after earning, `years_after` years later.
    FixedDate {
        month: u32,
        day: u32,
        years_after: u32,
    },
    /// The whole balance, `months` after the member's last activity.
    Inactivity {
        months: u32,
    },
}

impl ExpiryPolicy {
    /// The expiry instant of points credited at `credited_at`, for per-bucket policies.
    /// `None` for `Never` and `Inactivity` (whose deadline belongs to the account).
    pub fn bucket_expiry(&self, tz: Tz, credited_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match *self {
            Self::Never | Self::Inactivity { .. } => None,
            Self::Rolling { period, round_up } => {
                let end = period.after(tz, credited_at);
                Some(match round_up {
                    // `end_of` gives the start of the next period; an instant already on
                    // a boundary stays there.
                    Some(unit) if !is_period_start(tz, end, unit) => {
                        calendar::end_of(tz, end, unit)
                    }
                    _ => end,
                })
            }
            Self::FixedDate {
                month,
                day,
                years_after,
            } => {
                let year = calendar::local_date(tz, credited_at).year();
                let mut end = calendar::end_of_calendar_day(tz, year, month, day);
                if end <= credited_at {
                    end = calendar::end_of_calendar_day(tz, year + 1, month, day);
                }
                let first_year =
                    calendar::local_date(tz, end - chrono::Duration::seconds(1)).year();
                let target_year = first_year.saturating_add(years_after as i32);
                Some(calendar::end_of_calendar_day(tz, target_year, month, day))
            }
        }
    }

    /// The inactivity deadline of an account last active at `last_activity_at`.
    pub fn inactivity_deadline(
        &self,
        tz: Tz,
        last_activity_at: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        match *self {
            Self::Inactivity { months } => Some(calendar::add_months(tz, last_activity_at, months)),
            _ => None,
        }
    }
}

fn is_period_start(tz: Tz, t: DateTime<Utc>, unit: RoundUp) -> bool {
    let date = calendar::local_date(tz, t);
    let at_midnight = calendar::start_of_day(tz, date) == t;
    at_midnight
        && match unit {
            RoundUp::Day => true,
            RoundUp::Month => date.day() == 1,
            RoundUp::Quarter => date.day() == 1 && (date.month() - 1).is_multiple_of(3),
            RoundUp::Year => date.day() == 1 && date.month() == 1,
        }
}

/// Base earning of one currency.
#[derive(Debug, Clone)]
pub struct BaseEarning {
    pub currency: CurrencyIx,
    pub rate: PointsRate,
    pub journal_types: Vec<Code>,
}

impl BaseEarning {
    pub fn applies_to(&self, activity: &str) -> bool {
        self.journal_types.iter().any(|t| t.as_str() == activity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("an RFC 3339 instant")
            .with_timezone(&Utc)
    }

    const BERLIN: Tz = chrono_tz::Europe::Berlin;

    #[test]
    fn bucket_expiry_follows_each_policy() {
        let earned = utc("2026-01-31T10:00:00+01:00");
        let rolling = |period, round_up| ExpiryPolicy::Rolling { period, round_up };
        let cases = [
            (ExpiryPolicy::Never, None),
            (ExpiryPolicy::Inactivity { months: 12 }, None),
            (
                rolling(Period::Months(1), None),
                Some("2026-02-28T10:00:00+01:00"),
            ),
            (
                rolling(Period::Months(24), None),
                Some("2028-01-31T10:00:00+01:00"),
            ),
            (
                rolling(Period::Days(30), Some(RoundUp::Month)),
                Some("2026-04-01T00:00:00+02:00"),
            ),
            (
                rolling(Period::Months(1), Some(RoundUp::Quarter)),
                Some("2026-04-01T00:00:00+02:00"),
            ),
            (
                rolling(Period::Months(12), Some(RoundUp::Year)),
                Some("2028-01-01T00:00:00+01:00"),
            ),
            (
                rolling(Period::Days(1), Some(RoundUp::Day)),
                Some("2026-02-02T00:00:00+01:00"),
            ),
            (
                ExpiryPolicy::FixedDate {
                    month: 12,
                    day: 31,
                    years_after: 1,
                },
                Some("2028-01-01T00:00:00+01:00"),
            ),
            (
                ExpiryPolicy::FixedDate {
                    month: 1,
                    day: 31,
                    years_after: 0,
                },
                Some("2026-02-01T00:00:00+01:00"),
            ),
            (
                ExpiryPolicy::FixedDate {
                    month: 1,
                    day: 15,
                    years_after: 0,
                },
                Some("2027-01-16T00:00:00+01:00"),
            ),
        ];
        for (policy, want) in cases {
            assert_eq!(
                policy.bucket_expiry(BERLIN, earned),
                want.map(utc),
                "{policy:?}"
            );
        }
    }

    #[test]
    fn rounding_up_keeps_an_instant_already_on_a_boundary() {
        let policy = ExpiryPolicy::Rolling {
            period: Period::Months(1),
            round_up: Some(RoundUp::Month),
        };
        let earned = utc("2026-01-01T00:00:00+01:00");
        assert_eq!(
            policy.bucket_expiry(BERLIN, earned),
            Some(utc("2026-02-01T00:00:00+01:00"))
        );
    }
}
