//! Promotions: the earning engine beyond base points.
//!
//! A [`Promotion`] is compiled from its definition when the program is saved (its CEL
//! condition included, see [`condition`]). [`evaluate`] is a pure function of the program,
//! an accrual, the base points it earns, the member's balances and the journal's activity
//! instant: promotions run in priority order; each is checked for status, window, journal
//! type and condition, and answers a [`Verdict`]. An exclusive promotion that applies stops
//! every promotion of lower priority. An evaluation error means "does not apply" and is
//! reported, never a failed journal.
//!
//! Past-dated journals are evaluated with the promotions in force on their activity date:
//! the window is compared with the journal's `occurred_at`, and `local` is its local time.

pub mod condition;
pub mod limits;
mod native;
pub mod scheduled;

use std::collections::HashMap;
use std::sync::Arc;

use cel::Value;
use chrono::{DateTime, Datelike, Timelike, Utc};
use rust_decimal::Decimal;

pub use condition::{Condition, ExpressionError};
pub use limits::{Counters, Limits, Usage};

use crate::ids::{Code, CurrencyIx};
use crate::journal::Accrual;
use crate::money::PointsRate;
use crate::program::Program;

/// The most promotions a program may define.
pub const MAX_PROMOTIONS: usize = 1_000;
/// The most actions a promotion may have.
pub const MAX_ACTIONS: usize = 16;

/// Whether a promotion may award.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromotionStatus {
    Draft,
    Active,
    Paused,
    Ended,
}

impl PromotionStatus {
    pub const NAMES: &'static str = "draft, active, paused, ended";

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "draft" => Self::Draft,
            "active" => Self::Active,
            "paused" => Self::Paused,
            "ended" => Self::Ended,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Ended => "ended",
        }
    }
}

/// What a condition is evaluated over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Once per journal.
    Journal,
    /// Once per line, with `line` bound; actions apply to the matching lines.
    Line,
}

/// A compiled promotion.
#[derive(Debug, Clone)]
pub struct Promotion {
    pub code: Code,
    pub name: String,
    pub status: PromotionStatus,
    /// Applies to journals with `starts_at <= occurred_at < ends_at`.
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub journal_types: Vec<Code>,
    /// Empty: any subtype.
    pub subtypes: Vec<Code>,
    pub scope: Scope,
    pub condition: Option<Condition>,
    pub actions: Vec<Action>,
    pub priority: i32,
    pub exclusive: bool,
    pub limits: Limits,
    pub cumulative: Option<Cumulative>,
    /// Only for members who joined it.
    pub opt_in: bool,
    /// Only for members in these tiers, as (tier group, tier) indexes; everyone when empty.
    pub tiers: Vec<(usize, usize)>,
    /// Run by the scheduled jobs instead of journals (birthday, anniversary, win-back).
    pub trigger: Option<scheduled::Trigger>,
    /// A share of the members held out to measure what the promotion changes.
    pub control: Option<ControlGroup>,
    /// Only for members in one of these segments (as of their last refresh); everyone
    /// when empty.
    pub segments: Vec<Code>,
}

/// A control group: a fixed share of the members, chosen per member and promotion by a
/// hash, for whom the promotion is evaluated but awards nothing (the journal's outcome
/// records `control`), so their behaviour can be compared with the members it rewarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlGroup {
    /// The share held out, in basis points (2,000 = 20 %), 1 to 9,000.
    pub share_bp: u16,
}

impl ControlGroup {
    /// Whether the member (by external id) is in the promotion's control group.
    /// Deterministic: the same member and promotion code always give the same answer
    /// (FNV-1a over the code, a zero byte and the member's id, finished by SplitMix64's
    /// mixer — fixed here, never to change, or members would switch groups in
    /// mid-experiment).
    pub fn holds_out(&self, promotion: &Code, member: &str) -> bool {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in promotion.as_str().bytes().chain([0]).chain(member.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        z % 10_000 < u64::from(self.share_bp)
    }
}

/// What a cumulative promotion counts toward its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// One per journal.
    Count,
    /// The journal's amount, in minor units.
    Amount,
    /// The quantities of the journal's matching lines (a punch card: two lattes are two
    /// stamps); a journal without lines counts one.
    Quantity,
}

/// Progress over several journals toward a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cumulative {
    pub measure: Measure,
    /// A count, or minor units of money.
    pub target: i64,
    /// Progress starts from zero each period; over the promotion's life when `None`.
    pub period: Option<limits::Period>,
    /// Fires again each time the target is reached; otherwise once per period.
    pub repeat: bool,
}

impl Measure {
    pub fn name(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Amount => "amount",
            Self::Quantity => "quantity",
        }
    }
}

impl Cumulative {
    /// A progress or target value for people: a count, or money (`"233.00"`).
    pub fn show(&self, value: i64, money: &crate::money::MoneyCurrency) -> String {
        match self.measure {
            Measure::Count | Measure::Quantity => value.to_string(),
            Measure::Amount => money.format(crate::money::MinorUnits(value)),
        }
    }

    /// The counter holding a member's progress at `at`: its points are the progress,
    /// its times how often the target was reached.
    pub fn key(
        &self,
        promotion: &Code,
        member: crate::ids::MemberId,
        tz: chrono_tz::Tz,
        at: DateTime<Utc>,
    ) -> limits::CounterKey {
        limits::CounterKey {
            promotion: promotion.clone(),
            member: member.0,
            period: match self.period {
                Some(p) => {
                    let mut key = String::with_capacity(PROGRESS.len() + 12);
                    key.push_str(PROGRESS);
                    key.push_str(&p.key(tz, at));
                    key
                }
                None => PROGRESS.to_owned(),
            },
        }
    }
}

/// A multiplier's factor: fixed, or the value of the member's tier benefit of a code (the
/// highest among their tier groups; a member without the benefit gets nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Factor {
    Fixed(Decimal),
    Benefit(Code),
}

/// A benefit a promotion granted the member for a period ([`Action::Benefit`]): from the
/// activity instant of the journal that earned it, for its `days`. While
/// `starts_at <= at < ends_at`, conditions read it as `member.benefits.CODE` and
/// `factor_benefit` uses its value, beside the tiers' benefits (the highest value wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantedBenefit {
    pub code: Code,
    pub value: Option<Decimal>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

impl GrantedBenefit {
    /// Whether the grant holds at `at` (half-open).
    pub fn holds_at(&self, at: DateTime<Utc>) -> bool {
        self.starts_at <= at && at < self.ends_at
    }
}

/// The prefix of counters that hold cumulative progress.
pub const PROGRESS: &str = "c:";
/// The period key of the counter that records a member joined an opt-in promotion.
pub const JOINED: &str = "j:";

/// The counter that records `member` joined `promotion`.
pub fn joined_key(promotion: &Code, member: crate::ids::MemberId) -> limits::CounterKey {
    limits::CounterKey {
        promotion: promotion.clone(),
        member: member.0,
        period: JOINED.into(),
    }
}

impl Promotion {
    /// Whether the promotion may apply to `accrual` at `at`: active, in its window, for
    /// its journal type (its condition aside).
    pub fn in_force_for(&self, accrual: &Accrual, at: DateTime<Utc>) -> bool {
        precheck(self, accrual, at).is_none()
    }

    /// Every counter the promotion may read for `member` at `at`: its limits' and its
    /// cumulative progress.
    pub fn counter_keys(
        &self,
        member: crate::ids::MemberId,
        tz: chrono_tz::Tz,
        at: DateTime<Utc>,
    ) -> Vec<limits::CounterKey> {
        let mut keys: Vec<limits::CounterKey> = self
            .limits
            .keys(&self.code, member, tz, at)
            .into_iter()
            .map(|(k, _, _)| k)
            .collect();
        if self.limits.budget_vouchers.is_some() {
            keys.push(Limits::voucher_key(&self.code));
        }
        if let Some(c) = &self.cumulative {
            keys.push(c.key(&self.code, member, tz, at));
        }
        if self.opt_in {
            keys.push(joined_key(&self.code, member));
        }
        keys
    }

    /// Whether the promotion keeps counters (limits or cumulative progress).
    pub fn counts(&self) -> bool {
        !self.limits.is_empty() || self.cumulative.is_some() || self.opt_in
    }
}

/// A compiled action.
#[derive(Debug, Clone)]
pub enum Action {
    Fixed {
        currency: CurrencyIx,
        points: i64,
    },
    PerMoney {
        currency: CurrencyIx,
        rate: PointsRate,
    },
    /// `points` per unit bought: per night of a stay, per cup — each matching line's
    /// quantity (in line scope), or the quantities of all the journal's lines (one unit
    /// for a journal without lines).
    PerUnit {
        currency: CurrencyIx,
        points: i64,
    },
    /// The base points times `factor` in total.
    Multiplier {
        currency: CurrencyIx,
        factor: Factor,
    },
    Voucher {
        definition: Code,
    },
    /// Grants the member `benefit` for `days` days from the journal (a store record,
    /// readable beside the tiers' benefits).
    Benefit {
        benefit: crate::tiers::Benefit,
        days: u32,
    },
    Badge {
        badge: Code,
    },
}

/// Why a promotion did or did not apply to a journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Applied,
    /// Its status is not `active`.
    NotActive(PromotionStatus),
    /// The journal's activity is before the window.
    NotStarted,
    /// The journal's activity is at or after the window's end.
    Ended,
    /// Not for this journal type or subtype.
    NotForJournal,
    ConditionFalse,
    /// The condition could not be evaluated (a missing field, a type mismatch).
    EvaluationError(String),
    /// An exclusive promotion of higher priority applied.
    Excluded(Code),
    /// It applied, but its actions come to nothing (no amount, no base points).
    NothingToAward,
    /// A limit is reached: nothing is left to award.
    LimitReached(String),
    /// A cumulative promotion counted the journal toward its target: the progress after
    /// it, and the target (a count, or minor units of money).
    InProgress {
        progress: i64,
        target: i64,
    },
    /// A cumulative promotion that does not repeat already reached its target in this
    /// period (or over its life, without a period): the journal counts, nothing more is
    /// awarded until the next period.
    TargetReached(Option<limits::Period>),
    /// An opt-in promotion the member has not joined.
    NotJoined,
    /// The member's tier is not among the promotion's.
    NotEligible(String),
    /// Everything held, but the member is in the promotion's control group: nothing is
    /// awarded, and the outcome records it for the promotion's performance report.
    Control,
}

impl Verdict {
    /// The machine name of the verdict, as outcomes report it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::NotActive(_) => "not_active",
            Self::NotStarted => "not_started",
            Self::Ended => "ended",
            Self::NotForJournal => "not_for_journal",
            Self::ConditionFalse => "condition_false",
            Self::EvaluationError(_) => "evaluation_error",
            Self::Excluded(_) => "excluded",
            Self::NothingToAward => "nothing_to_award",
            Self::LimitReached(_) => "limit_reached",
            Self::InProgress { .. } => "in_progress",
            Self::TargetReached(_) => "target_reached",
            Self::NotJoined => "not_joined",
            Self::NotEligible(_) => "not_eligible",
            Self::Control => "control",
        }
    }

    /// A sentence for people about the verdict on `promotion`. Verdicts hold numbers, not
    /// sentences: most journals' verdicts are never shown (a simulation reads none), and
    /// writing them cost more than evaluating the promotion.
    pub fn detail(
        &self,
        promotion: &Promotion,
        money: &crate::money::MoneyCurrency,
    ) -> Option<String> {
        match self {
            Self::NotActive(status) => Some(format!("the promotion is {}", status.name())),
            Self::EvaluationError(e) => Some(e.clone()),
            Self::Excluded(by) => Some(format!("the exclusive promotion {by} applied first")),
            Self::InProgress { progress, target } => Some(match &promotion.cumulative {
                Some(c) => format!("{} of {}", c.show(*progress, money), c.show(*target, money)),
                None => format!("{progress} of {target}"),
            }),
            Self::TargetReached(Some(period)) => Some(format!(
                "the target was reached already this {}; it is awarded again next {0}",
                period.name()
            )),
            Self::TargetReached(None) => {
                Some("the target was reached already; it is awarded once".into())
            }
            Self::LimitReached(why) | Self::NotEligible(why) => Some(why.clone()),
            _ => None,
        }
    }
}

/// Points a promotion awards, on one line or the whole journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromotionPoints {
    pub currency: CurrencyIx,
    /// Index into the journal's lines; `None` for the whole journal.
    pub line: Option<u32>,
    pub points: i64,
}

/// A voucher or badge a promotion awards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reward {
    Voucher(Code),
    Badge(Code),
    /// A benefit's code and how many days it lasts.
    Benefit(Code, u32),
}

/// One promotion's result for one journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// Index into [`Program::promotions`].
    pub promotion: usize,
    pub verdict: Verdict,
    pub points: Vec<PromotionPoints>,
    pub rewards: Vec<Reward>,
    /// The limit counters the award used.
    pub usage: Option<Box<Usage>>,
    /// What the journal added to a cumulative promotion's progress.
    pub contribution: Option<Box<Contribution>>,
    /// For a dry run's `condition_false`: the values the condition read.
    pub saw: Option<String>,
}

/// A journal's contribution to a cumulative promotion's progress, kept with the journal:
/// a refund or cancellation takes it back, so progress falls with the spend it counted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Contribution {
    pub key: limits::CounterKey,
    /// One journal (`count`), or its amount in minor units (`amount`).
    pub value: i64,
    /// Measured by amount: a refund takes back what it refunds; by count, the journal
    /// counts until it is refunded entirely.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_amount: bool,
    /// Measured by quantity: the lines counted (indexes into the journal's lines); a
    /// refund takes back the quantity refunded of each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<u32>,
    /// How many times the journal completed the target, and the target: a cancellation
    /// undoes the completions with the award (progress returns to where it stood).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub completed: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub target: i64,
    /// Taken back by refunds and cancellations so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub returned: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl Contribution {
    /// Takes back what a refund of `refunded` minor units (of an accrual of `amount`, now
    /// `total_refunded` refunded; `refunded_quantities`: of each line, refunded so far)
    /// undoes, or — `everything` — all that is left.
    pub fn give_back(
        &mut self,
        counters: &mut Counters,
        refunded: i64,
        amount: i64,
        total_refunded: i64,
        refunded_quantities: &[u32],
        everything: bool,
    ) {
        let left = self.value - self.returned;
        let back = if everything {
            left
        } else if self.by_amount {
            refunded.min(left)
        } else if !self.lines.is_empty() {
            // The quantity of the counted lines refunded so far, less what was given back.
            let refunded: i64 = self
                .lines
                .iter()
                .filter_map(|&l| refunded_quantities.get(l as usize))
                .map(|&q| i64::from(q))
                .sum();
            refunded.min(self.value) - self.returned
        } else if total_refunded >= amount {
            left
        } else {
            0
        }
        .max(0);
        if everything && self.completed > 0 {
            // The award is taken back whole: so are the completions it stood for.
            self.returned += back;
            counters.add(
                &self.key,
                -self.completed,
                self.completed * self.target - back,
            );
            self.completed = 0;
        } else if back > 0 {
            self.returned += back;
            counters.add(&self.key, 0, -back);
        }
    }
}

/// The member and the limit counters an evaluation works with.
pub struct Member<'a> {
    pub id: crate::ids::MemberId,
    /// The member's external id (the operator's number): what a control group is drawn
    /// from, so a member stays in the same group in every database and simulation.
    pub external: &'a str,
    /// Profile and enrolment, when the store loaded them.
    pub facts: Option<&'a MemberFacts>,
    /// Available points per currency before the journal.
    pub balances: &'a [i64],
    /// The tier held in each tier group (by index), as assessed; empty: the tier the
    /// qualifying balance reaches.
    pub tiers: &'a [usize],
    /// Benefits granted for a period (by promotions), when the store loaded them.
    pub granted: &'a [GrantedBenefit],
    pub counters: &'a mut Counters,
    /// A dry run: a condition that does not hold reports the values it read.
    pub explain: bool,
}

/// The base points of an accrual for one currency: the total, and its split over the
/// lines (empty without lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasePoints {
    pub currency: CurrencyIx,
    pub total: i64,
    pub per_line: Vec<i64>,
}

/// What conditions may read about a member besides balances: `member.profile` (the
/// profile given at enrolment), `member.enrolled_at` (local date), `member.tenure_days`
/// and `member.birthday_today` (the profile's `birthday`, `YYYY-MM-DD`, falls on the
/// journal's local date; 29 February is celebrated on 28 February in other years).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberFacts {
    pub enrolled_at: Option<DateTime<Utc>>,
    pub profile: serde_json::Map<String, serde_json::Value>,
    /// The segments the member was in at their last refresh (see [`crate::segments`]).
    pub segments: Vec<String>,
}

// JSON numbers are never NaN, so equality on a profile is an equivalence.
impl Eq for MemberFacts {}

/// Cumulative promotions' progress as conditions see it (`member.progress.CODE`), and the
/// counter each progress is kept in, by promotion index (for [`advance`], which would
/// otherwise build the same key again).
type Progress<'p> = (Vec<(&'p str, Value)>, Vec<(usize, limits::CounterKey)>);

fn read_progress<'p>(
    program: &'p Program,
    counters: &Counters,
    member_id: crate::ids::MemberId,
    at: DateTime<Utc>,
) -> Progress<'p> {
    let mut values = Vec::new();
    let mut keys = Vec::new();
    for (index, p) in program.promotions.iter().enumerate() {
        let Some(c) = p.cumulative.as_ref() else {
            continue;
        };
        let key = c.key(&p.code, member_id, program.time_zone, at);
        let points = counters.get(&key).points;
        values.push((
            p.code.as_str(),
            match c.measure {
                Measure::Count | Measure::Quantity => Value::Int(points),
                Measure::Amount => Value::Float(native::major(points, &program.money_currency)),
            },
        ));
        keys.push((index, key));
    }
    (values, keys)
}

/// Evaluates every promotion of `program` for an accrual, in priority order.
///
/// `base` is what base earning gives the accrual; `balances` the member's available points
/// per currency before the journal; `at` the journal's activity instant. Multipliers give
/// the base points times their factor in total: the extra beyond the base when the base is
/// awarded too, all of it when the program's base does not stack with promotions.
pub fn evaluate(
    program: &Program,
    accrual: &Accrual,
    base: &[BasePoints],
    member: Member<'_>,
    at: DateTime<Utc>,
) -> Vec<Evaluation> {
    let Member {
        id: member_id,
        external,
        facts: member,
        balances,
        tiers,
        granted,
        counters,
        explain,
    } = member;
    let tiers: Vec<Option<usize>> = member_tiers(program, tiers, balances);
    if program.promotions.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(program.promotions.len());
    // The matching lines of a line-scope promotion, reused from one to the next.
    let mut lines: Vec<usize> = Vec::new();
    // Cumulative progress as conditions see it (`member.progress.CODE`): as it stands
    // before this journal. Read with the facts, when a promotion first gets past its
    // prechecks (each reading formats a period key and searches the counters).
    let progress: std::cell::OnceCell<Progress<'_>> = std::cell::OnceCell::new();
    let mut facts: Option<Facts> = None;
    let mut excluded_by: Option<Code> = None;
    for (index, promotion) in program.promotions.iter().enumerate() {
        let mut verdict = precheck(promotion, accrual, at);
        if verdict.is_none()
            && let Some(by) = &excluded_by
        {
            verdict = Some(Verdict::Excluded(by.clone()));
        }
        if verdict.is_none() && !promotion.tiers.is_empty() {
            verdict = eligibility(program, promotion, &tiers);
        }
        if verdict.is_none() && !promotion.segments.is_empty() {
            verdict = segment_eligibility(promotion, member);
        }
        if verdict.is_none()
            && promotion.opt_in
            && counters.get(&joined_key(&promotion.code, member_id)).times == 0
        {
            verdict = Some(Verdict::NotJoined);
        }
        let mut evaluation = Evaluation {
            promotion: index,
            verdict: Verdict::Applied,
            points: Vec::new(),
            rewards: Vec::new(),
            usage: None,
            contribution: None,
            saw: None,
        };
        if let Some(v) = verdict {
            evaluation.verdict = v;
            out.push(evaluation);
            continue;
        }
        let facts = facts.get_or_insert_with(|| {
            let (progress, _) =
                progress.get_or_init(|| read_progress(program, counters, member_id, at));
            let mut f = Facts::new(program, accrual, balances, &tiers, member, progress, at);
            f.granted = granted;
            f
        });
        let matching = match matching_lines(promotion, facts, accrual, &mut lines) {
            Ok(true) => Some(&lines[..]),
            Ok(false) => None,
            Err(verdict) => {
                if explain
                    && verdict == Verdict::ConditionFalse
                    && let Some(condition) = &promotion.condition
                {
                    evaluation.saw =
                        Some(facts.saw(condition, promotion.scope, accrual.lines.len()));
                }
                evaluation.verdict = verdict;
                out.push(evaluation);
                continue;
            }
        };
        if let Some(control) = &promotion.control
            && control.holds_out(&promotion.code, external)
        {
            evaluation.verdict = Verdict::Control;
            out.push(evaluation);
            continue;
        }
        let mut completions = 1;
        if let Some(cumulative) = &promotion.cumulative {
            // The counter read with the progress (the facts were built above).
            let key = progress
                .get()
                .and_then(|(_, keys)| keys.iter().find(|(i, _)| *i == index))
                .map(|(_, key)| key.clone())
                .unwrap_or_else(|| {
                    cumulative.key(&promotion.code, member_id, program.time_zone, at)
                });
            let (progress, contribution) = advance(cumulative, accrual, matching, key, counters);
            evaluation.contribution = Some(Box::new(contribution));
            match progress {
                Ok(n) => completions = n,
                Err(verdict) => {
                    evaluation.verdict = verdict;
                    out.push(evaluation);
                    continue;
                }
            }
        }
        act(
            program,
            promotion,
            accrual,
            base,
            matching,
            (&tiers, granted, at),
            &mut evaluation,
        );
        if completions > 1 {
            reward_per_completion(&mut evaluation, completions);
        }
        if !promotion.limits.is_empty()
            && !(evaluation.points.is_empty() && evaluation.rewards.is_empty())
        {
            limit(program, promotion, member_id, counters, at, &mut evaluation);
        }
        if let Verdict::LimitReached(_) = evaluation.verdict {
            // Reported as such; it does not exclude lower priorities.
        } else if evaluation.points.is_empty() && evaluation.rewards.is_empty() {
            evaluation.verdict = Verdict::NothingToAward;
        } else if promotion.exclusive {
            excluded_by = Some(promotion.code.clone());
        }
        out.push(evaluation);
    }
    out
}

/// The member's tier per tier group: the assessed ones when given, otherwise (a member
/// without a standing) the tier the qualifying balance reaches.
fn member_tiers(program: &Program, tiers: &[usize], balances: &[i64]) -> Vec<Option<usize>> {
    program
        .tier_groups
        .iter()
        .enumerate()
        .map(|(g, group)| match tiers.get(g) {
            Some(&t) => Some(t),
            None => {
                let qualifying = group
                    .currency()
                    .and_then(|c| balances.get(c.index()).copied())
                    .unwrap_or(0);
                group.tier_for(qualifying)
            }
        })
        .collect()
}

/// `None` when the member's tier (before the journal) is one of the promotion's,
/// otherwise why not.
fn eligibility(
    program: &Program,
    promotion: &Promotion,
    tiers: &[Option<usize>],
) -> Option<Verdict> {
    let in_tier = promotion
        .tiers
        .iter()
        .any(|&(g, t)| tiers.get(g).copied().flatten() == Some(t));
    if in_tier {
        return None;
    }
    let names: Vec<&str> = promotion
        .tiers
        .iter()
        .filter_map(|&(g, t)| program.tier_groups.get(g)?.tiers.get(t))
        .map(|t| t.code.as_str())
        .collect();
    Some(Verdict::NotEligible(format!(
        "for tiers {}",
        names.join(", ")
    )))
}

/// `None` when the member (as of the last segment refresh) is in one of the promotion's
/// segments, otherwise why not.
fn segment_eligibility(promotion: &Promotion, member: Option<&MemberFacts>) -> Option<Verdict> {
    let held = member.map_or(&[][..], |m| &m.segments[..]);
    if promotion
        .segments
        .iter()
        .any(|s| held.iter().any(|h| h == s.as_str()))
    {
        return None;
    }
    let names: Vec<&str> = promotion.segments.iter().map(Code::as_str).collect();
    Some(Verdict::NotEligible(format!(
        "for segments {}",
        names.join(", ")
    )))
}

/// Counts a journal toward a cumulative promotion's target: how many times it reaches the
/// target (the actions fire that many times; progress keeps what is left over), or where
/// the member stands; with what the journal contributed, for a refund to take back.
/// `matching`: the lines a line-scope promotion matched (every line otherwise); `key` the
/// counter of the member's progress ([`Cumulative::key`]).
fn advance(
    cumulative: &Cumulative,
    accrual: &Accrual,
    matching: Option<&[usize]>,
    key: limits::CounterKey,
    counters: &mut Counters,
) -> (Result<i64, Verdict>, Contribution) {
    let counted: Vec<u32> = match (cumulative.measure, matching) {
        (Measure::Quantity, Some(lines)) => lines.iter().map(|&l| l as u32).collect(),
        (Measure::Quantity, None) => (0..accrual.lines.len() as u32).collect(),
        _ => Vec::new(),
    };
    let contribution = match cumulative.measure {
        Measure::Count => 1,
        Measure::Amount => accrual.amount.map_or(0, |a| a.0),
        Measure::Quantity if accrual.lines.is_empty() => 1,
        Measure::Quantity => counted
            .iter()
            .filter_map(|&l| accrual.lines.get(l as usize))
            .map(|l| i64::from(l.quantity))
            .sum(),
    };
    let record = Contribution {
        key: key.clone(),
        value: contribution,
        by_amount: cumulative.measure == Measure::Amount,
        lines: counted,
        completed: 0,
        target: 0,
        returned: 0,
    };
    let now = counters.get(&key);
    let progress = now.points.saturating_add(contribution);
    if !cumulative.repeat && now.times >= 1 {
        counters.add(&key, 0, contribution);
        return (Err(Verdict::TargetReached(cumulative.period)), record);
    }
    if progress < cumulative.target {
        counters.add(&key, 0, contribution);
        return (
            Err(Verdict::InProgress {
                progress,
                target: cumulative.target,
            }),
            record,
        );
    }
    // A journal may complete the card more than once (twelve coffees on a card of
    // five): each completion is counted and awarded; what is left over carries on.
    let completions = if cumulative.repeat {
        progress / cumulative.target
    } else {
        1
    };
    counters.add(
        &key,
        completions,
        contribution - completions * cumulative.target,
    );
    let record = Contribution {
        completed: completions,
        target: cumulative.target,
        ..record
    };
    (Ok(completions), record)
}

/// Applies the promotion's limits to an award: refused when a cap is reached, cut to what
/// the tightest points cap leaves (in proportion over its lines and currencies), and
/// recorded in the counters.
fn limit(
    program: &Program,
    promotion: &Promotion,
    member: crate::ids::MemberId,
    counters: &mut Counters,
    at: DateTime<Utc>,
    evaluation: &mut Evaluation,
) {
    let keys = promotion
        .limits
        .keys(&promotion.code, member, program.time_zone, at);
    let total: i64 = evaluation.points.iter().map(|p| p.points).sum();
    match limits::check(counters, &keys, total) {
        limits::Allowance::Reached(why) => {
            evaluation.verdict = Verdict::LimitReached(why);
            evaluation.points.clear();
            evaluation.rewards.clear();
        }
        limits::Allowance::Points(allowed) => {
            if allowed < total {
                let weights: Vec<i64> = evaluation.points.iter().map(|p| p.points).collect();
                let shares = crate::process::allocate(allowed, &weights);
                for (p, share) in evaluation.points.iter_mut().zip(shares) {
                    p.points = share;
                }
                evaluation.points.retain(|p| p.points > 0);
            }
            evaluation.usage = Some(Box::new(limits::consume(
                counters,
                &promotion.code,
                &keys,
                allowed,
            )));
        }
    }
    if let Some(cap) = promotion.limits.budget_vouchers {
        let key = Limits::voucher_key(&promotion.code);
        let wanted = evaluation
            .rewards
            .iter()
            .filter(|r| matches!(r, Reward::Voucher(_)))
            .count() as i64;
        let left = (cap - counters.get(&key).points).max(0);
        if wanted > left {
            let mut keep = left;
            evaluation.rewards.retain(|r| match r {
                Reward::Voucher(_) if keep == 0 => false,
                Reward::Voucher(_) => {
                    keep -= 1;
                    true
                }
                Reward::Badge(_) | Reward::Benefit(..) => true,
            });
            if evaluation.points.is_empty() && evaluation.rewards.is_empty() {
                evaluation.verdict = Verdict::LimitReached(format!(
                    "the limit of {cap} vouchers for all members in total is reached"
                ));
            }
        }
        if wanted.min(left) > 0 {
            counters.add(&key, 0, wanted.min(left));
        }
    }
}

/// The checks that need no expression: status, window, journal type.
fn precheck(promotion: &Promotion, accrual: &Accrual, at: DateTime<Utc>) -> Option<Verdict> {
    if promotion.status != PromotionStatus::Active {
        return Some(Verdict::NotActive(promotion.status));
    }
    if promotion.starts_at.is_some_and(|s| at < s) {
        return Some(Verdict::NotStarted);
    }
    if promotion.ends_at.is_some_and(|e| at >= e) {
        return Some(Verdict::Ended);
    }
    let type_ok = promotion
        .journal_types
        .iter()
        .any(|t| t.as_str() == accrual.activity.as_str());
    let subtype_ok = promotion.subtypes.is_empty()
        || accrual
            .subtype
            .as_ref()
            .is_some_and(|s| promotion.subtypes.iter().any(|t| t == s));
    (!type_ok || !subtype_ok).then_some(Verdict::NotForJournal)
}

/// Whether the condition holds: for a journal-scope promotion `Ok(false)` (no lines
/// involved); for a line-scope one `Ok(true)` with the matching lines in `lines` (never
/// empty). A condition that does not hold, or fails, is the verdict.
fn matching_lines(
    promotion: &Promotion,
    facts: &Facts<'_>,
    accrual: &Accrual,
    lines: &mut Vec<usize>,
) -> Result<bool, Verdict> {
    lines.clear();
    let Some(condition) = &promotion.condition else {
        return Ok(match promotion.scope {
            Scope::Journal => false,
            Scope::Line => {
                lines.extend(0..accrual.lines.len());
                true
            }
        });
    };
    let times = match promotion.scope {
        Scope::Journal => 1,
        Scope::Line => accrual.lines.len(),
    };
    facts
        .afford(condition, times)
        .map_err(Verdict::EvaluationError)?;
    match promotion.scope {
        Scope::Journal => match facts.holds(condition, None) {
            Ok(true) => Ok(false),
            Ok(false) => Err(Verdict::ConditionFalse),
            Err(e) => Err(Verdict::EvaluationError(e)),
        },
        Scope::Line => {
            for i in 0..accrual.lines.len() {
                match facts.holds(condition, Some(i)) {
                    Ok(true) => lines.push(i),
                    Ok(false) => {}
                    Err(e) => {
                        return Err(Verdict::EvaluationError(format!("line {}: {e}", i + 1)));
                    }
                }
            }
            if lines.is_empty() {
                Err(Verdict::ConditionFalse)
            } else {
                Ok(true)
            }
        }
    }
}

/// A journal that completes a cumulative promotion's target several times at once earns
/// its award that many times.
fn reward_per_completion(evaluation: &mut Evaluation, completions: i64) {
    for p in &mut evaluation.points {
        p.points = p.points.saturating_mul(completions);
    }
    let once = evaluation.rewards.clone();
    for _ in 1..completions {
        evaluation.rewards.extend(once.iter().cloned());
    }
}

fn act(
    program: &Program,
    promotion: &Promotion,
    accrual: &Accrual,
    base: &[BasePoints],
    lines: Option<&[usize]>,
    (tiers, granted, at): (&[Option<usize>], &[GrantedBenefit], DateTime<Utc>),
    evaluation: &mut Evaluation,
) {
    let scale = program.money_currency.scale();
    let mut add = |currency: CurrencyIx, line: Option<usize>, points: i64| {
        if points > 0 {
            evaluation.points.push(PromotionPoints {
                currency,
                line: line.map(|l| l as u32),
                points,
            });
        }
    };
    for action in &promotion.actions {
        match action {
            Action::Fixed { currency, points } => match lines {
                None => add(*currency, None, *points),
                // A cumulative promotion's lines are what it counts; completing it is
                // one award for the journal (a punch card's reward, not one per drink).
                Some(_) if promotion.cumulative.is_some() => add(*currency, None, *points),
                Some(lines) => lines.iter().for_each(|&l| add(*currency, Some(l), *points)),
            },
            Action::PerUnit { currency, points } => match lines {
                None => {
                    let units = if accrual.lines.is_empty() {
                        1
                    } else {
                        accrual.lines.iter().map(|l| i64::from(l.quantity)).sum()
                    };
                    add(*currency, None, points.saturating_mul(units));
                }
                Some(lines) => {
                    for &l in lines {
                        let units = i64::from(accrual.lines[l].quantity);
                        add(*currency, Some(l), points.saturating_mul(units));
                    }
                }
            },
            Action::PerMoney { currency, rate } => match lines {
                None => {
                    if let Some(amount) = accrual.amount {
                        add(*currency, None, rate.apply(amount, scale));
                    }
                }
                Some(lines) => {
                    for &l in lines {
                        add(
                            *currency,
                            Some(l),
                            rate.apply(accrual.lines[l].amount, scale),
                        );
                    }
                }
            },
            Action::Multiplier { currency, factor } => {
                let Some(base) = base.iter().find(|b| b.currency == *currency) else {
                    continue;
                };
                let factor = match factor {
                    Factor::Fixed(f) => *f,
                    Factor::Benefit(code) => {
                        let held = program.tier_groups.iter().zip(tiers).filter_map(|(g, t)| {
                            g.tiers[(*t)?]
                                .benefits
                                .iter()
                                .find(|b| b.code == *code)
                                .and_then(|b| b.value)
                        });
                        let granted = granted
                            .iter()
                            .filter(|g| g.code == *code && g.holds_at(at))
                            .filter_map(|g| g.value);
                        // A value outside (1, 100] is not a multiplier (validation
                        // asks for one inside, but a benefit may serve conditions too).
                        match held
                            .chain(granted)
                            .filter(|f| *f <= Decimal::from(100))
                            .max()
                        {
                            Some(f) if f > Decimal::ONE => f,
                            _ => continue,
                        }
                    }
                };
                let factor = &factor;
                let extra = if program.base_stacks {
                    *factor - Decimal::ONE
                } else {
                    *factor
                };
                // Exact in integers: extra = mantissa / 10^scale (a validated factor has a
                // few decimals), points × mantissa fits in i128, and floor division.
                let (mantissa, divisor) = (extra.mantissa(), 10i128.pow(extra.scale()));
                let times = |points: i64| {
                    i128::from(points)
                        .checked_mul(mantissa)
                        .and_then(|p| i64::try_from(p.div_euclid(divisor)).ok())
                        .unwrap_or(0)
                };
                match lines {
                    None if base.per_line.is_empty() => add(*currency, None, times(base.total)),
                    // Per line, so that refunding a line takes back its share.
                    None => base
                        .per_line
                        .iter()
                        .enumerate()
                        .for_each(|(l, p)| add(*currency, Some(l), times(*p))),
                    Some(lines) => {
                        for &l in lines {
                            if let Some(p) = base.per_line.get(l) {
                                add(*currency, Some(l), times(*p));
                            }
                        }
                    }
                }
            }
            Action::Voucher { definition } => {
                evaluation.rewards.push(Reward::Voucher(definition.clone()));
            }
            Action::Badge { badge } => evaluation.rewards.push(Reward::Badge(badge.clone())),
            Action::Benefit { benefit, days } => evaluation
                .rewards
                .push(Reward::Benefit(benefit.code.clone(), *days)),
        }
    }
}

/// The variables conditions see: read directly by the fast path, built once per journal
/// as CEL values only when a condition needs the interpreter.
struct Facts<'a> {
    program: &'a Program,
    tiers: &'a [Option<usize>],
    /// Benefits granted for a period; those holding at `at` are read.
    granted: &'a [GrantedBenefit],
    at: DateTime<Utc>,
    member: Option<&'a MemberFacts>,
    progress: &'a [(&'a str, Value)],
    fast: native::Facts<'a>,
    cel: std::cell::OnceCell<(cel::Context<'static, 'static>, Vec<Value>)>,
    /// The longest list (or widest map) a condition can see in this journal's data.
    widest: std::cell::OnceCell<usize>,
    /// Cost bounds of the conditions evaluated for this journal so far.
    spent: std::cell::Cell<u64>,
}

/// The most evaluation steps all of a journal's promotion conditions may cost together.
pub const JOURNAL_EVALUATION_BUDGET: u64 = 5 * condition::EVALUATION_BUDGET;

/// The longest array or widest object anywhere in a JSON value.
pub(crate) fn widest_json(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => items
            .iter()
            .map(widest_json)
            .max()
            .unwrap_or(0)
            .max(items.len()),
        serde_json::Value::Object(fields) => fields
            .values()
            .map(widest_json)
            .max()
            .unwrap_or(0)
            .max(fields.len()),
        _ => 0,
    }
}

impl<'a> Facts<'a> {
    fn new(
        program: &'a Program,
        accrual: &'a Accrual,
        balances: &'a [i64],
        tiers: &'a [Option<usize>],
        member: Option<&'a MemberFacts>,
        progress: &'a [(&'a str, Value)],
        at: DateTime<Utc>,
    ) -> Self {
        let local = at.with_timezone(&program.time_zone);
        let fast = native::Facts {
            accrual,
            money: &program.money_currency,
            amount: accrual
                .amount
                .map_or(0.0, |a| native::major(a.0, &program.money_currency)),
            local_date: crate::calendar::iso_date(local.date_naive()),
            local: [
                i64::from(local.year()),
                i64::from(local.month()),
                i64::from(local.day()),
                i64::from(local.weekday().number_from_monday()),
                i64::from(local.hour()),
                i64::from(local.minute()),
            ],
            balances,
            tier: program
                .tier_groups
                .first()
                .zip(tiers.first().copied().flatten())
                .map(|(g, t)| g.tiers[t].code.as_str()),
            member: member.map(|facts| {
                let today = local.date_naive();
                let enrolled = facts
                    .enrolled_at
                    .map(|e| e.with_timezone(&program.time_zone).date_naive());
                native::MemberFacts {
                    birthday_today: facts
                        .profile
                        .get("birthday")
                        .and_then(|b| b.as_str())
                        .and_then(crate::calendar::parse_iso_date)
                        .is_some_and(|b| is_birthday(b, today)),
                    tenure_days: enrolled.map(|d| (today - d).num_days()),
                    enrolled_at: enrolled.map(crate::calendar::iso_date),
                }
            }),
        };
        Self {
            program,
            tiers,
            granted: &[],
            at,
            member,
            progress,
            fast,
            cel: std::cell::OnceCell::new(),
            widest: std::cell::OnceCell::new(),
            spent: std::cell::Cell::new(0),
        }
    }

    /// Whether evaluating `condition` (`times` times) stays within the budgets, charging
    /// it to the journal's: the bound is computed, never measured, so a condition too
    /// costly for this journal is refused before it runs.
    fn afford(&self, condition: &Condition, times: usize) -> Result<(), String> {
        if condition.native.is_some() {
            return Ok(()); // the fast path has no loops
        }
        let widest = *self.widest.get_or_init(|| {
            let accrual = self.fast.accrual;
            let profile = self.member.map_or(0, |m| {
                m.profile
                    .values()
                    .map(widest_json)
                    .max()
                    .unwrap_or(0)
                    .max(m.profile.len())
            });
            let attributes = accrual
                .attributes
                .values()
                .map(widest_json)
                .max()
                .unwrap_or(0)
                .max(accrual.attributes.len());
            accrual.lines.len().max(profile).max(attributes).max(
                self.program
                    .currencies
                    .len()
                    .max(self.program.tier_groups.len()),
            )
        });
        let bound = condition
            .cost_bound(widest)
            .saturating_mul(times.max(1) as u64);
        if bound > condition::EVALUATION_BUDGET {
            return Err(format!(
                "on this journal the condition could take {bound} steps (its widest list has {widest} items); at most {} are allowed, so it was not evaluated",
                condition::EVALUATION_BUDGET
            ));
        }
        let spent = self.spent.get().saturating_add(bound);
        if spent > JOURNAL_EVALUATION_BUDGET {
            return Err(format!(
                "the program's conditions together could take {spent} steps on this journal; at most {JOURNAL_EVALUATION_BUDGET} are allowed, so this one was not evaluated"
            ));
        }
        self.spent.set(spent);
        Ok(())
    }

    /// Whether `condition` holds for the journal, or for line `line` in line scope.
    fn holds(&self, condition: &Condition, line: Option<usize>) -> Result<bool, String> {
        if let Some(native) = &condition.native {
            let line = line.and_then(|i| self.fast.accrual.lines.get(i));
            return native::eval(native, &self.fast, line);
        }
        let (context, lines) = self.cel.get_or_init(|| self.cel_context());
        match line {
            None => condition.holds(context),
            Some(i) => {
                let mut scope = context.new_inner_scope();
                scope.add_variable_from_value("line", lines.get(i).cloned().unwrap_or(Value::Null));
                condition.holds(&scope)
            }
        }
    }

    /// What the condition read, for people: `journal.amount = 12.5, local.weekday = 2`
    /// (per line for a line-scope promotion, the first five lines).
    fn saw(&self, condition: &Condition, scope: Scope, lines: usize) -> String {
        let (context, values) = self.cel.get_or_init(|| self.cel_context());
        let paths = condition.paths();
        let show = |scope: &cel::Context<'_, '_>, only_line: bool| -> Vec<String> {
            paths
                .iter()
                .filter(|p| only_line == (p.as_str() == "line" || p.starts_with("line.")))
                .map(|p| {
                    let value = Condition::compile(p)
                        .map_err(|e| e.message)
                        .and_then(|c| c.value(scope).map(|v| show_value(&v)))
                        .unwrap_or_else(|e| format!("(not available: {e})"));
                    format!("{p} = {value}")
                })
                .collect()
        };
        let mut parts: Vec<String> = Some(show(context, false).join(", "))
            .filter(|p| !p.is_empty())
            .into_iter()
            .collect();
        if scope == Scope::Line {
            for i in 0..lines.min(5) {
                let mut inner = context.new_inner_scope();
                inner
                    .add_variable_from_value("line", values.get(i).cloned().unwrap_or(Value::Null));
                let seen = show(&inner, true);
                if !seen.is_empty() {
                    parts.push(format!("line {}: {}", i + 1, seen.join(", ")));
                }
            }
        }
        format!("the condition saw {}", parts.join("; "))
    }

    fn cel_context(&self) -> (cel::Context<'static, 'static>, Vec<Value>) {
        let program = self.program;
        let accrual = self.fast.accrual;
        let money = &program.money_currency;
        let text = |s: &Option<String>| s.as_deref().map_or(Value::Null, Value::from);
        let lines: Vec<Value> = accrual
            .lines
            .iter()
            .map(|l| {
                map([
                    ("line_id", Value::from(l.line_id.as_str())),
                    ("sku", text(&l.sku)),
                    ("category", text(&l.category)),
                    ("quantity", Value::Int(i64::from(l.quantity))),
                    ("amount", Value::Float(native::major(l.amount.0, money))),
                ])
            })
            .collect();
        let attributes: HashMap<cel::objects::Key, Value> = accrual
            .attributes
            .iter()
            .map(|(k, v)| (Arc::new(k.clone()).into(), json_value(v)))
            .collect();
        let journal = map([
            ("type", Value::from(accrual.activity.as_str())),
            (
                "subtype",
                accrual
                    .subtype
                    .as_ref()
                    .map_or(Value::Null, |s| Value::from(s.as_str())),
            ),
            ("amount", Value::Float(self.fast.amount)),
            ("currency", Value::from(money.code())),
            ("channel", text(&accrual.channel)),
            ("store", text(&accrual.store)),
            ("partner", text(&accrual.partner)),
            ("attributes", Value::Map(attributes.into())),
            ("lines", Value::List(Arc::new(lines.clone()))),
        ]);
        let member_balances: HashMap<cel::objects::Key, Value> = program
            .currency_ixs()
            .map(|(ix, c)| {
                (
                    Arc::new(c.code.as_str().to_owned()).into(),
                    Value::Int(self.fast.balances.get(ix.index()).copied().unwrap_or(0)),
                )
            })
            .collect();
        let tier = self.fast.tier.map_or(Value::Null, Value::from);
        let mut benefits: HashMap<cel::objects::Key, Value> = HashMap::new();
        let tiers: HashMap<cel::objects::Key, Value> = program
            .tier_groups
            .iter()
            .zip(self.tiers)
            .filter_map(|(g, t)| {
                let tier = &g.tiers[(*t)?];
                for b in &tier.benefits {
                    put_benefit(&mut benefits, &b.code, b.value);
                }
                Some((
                    Arc::new(g.code.as_str().to_owned()).into(),
                    Value::from(tier.code.as_str()),
                ))
            })
            .collect();
        for g in self.granted.iter().filter(|g| g.holds_at(self.at)) {
            put_benefit(&mut benefits, &g.code, g.value);
        }
        let tiers = Value::Map(tiers.into());
        let benefits = Value::Map(benefits.into());
        let progress: HashMap<cel::objects::Key, Value> = self
            .progress
            .iter()
            .map(|(code, v)| (Arc::new((*code).to_owned()).into(), v.clone()))
            .collect();
        let progress = Value::Map(progress.into());
        let member = match self.member {
            None => map([
                ("balances", Value::Map(member_balances.into())),
                ("tier", tier),
                ("tiers", tiers),
                ("benefits", benefits),
                ("progress", progress),
            ]),
            Some(facts) => {
                let profile: HashMap<cel::objects::Key, Value> = facts
                    .profile
                    .iter()
                    .map(|(k, v)| (Arc::new(k.clone()).into(), json_value(v)))
                    .collect();
                let derived = self.fast.member.clone().unwrap_or(native::MemberFacts {
                    birthday_today: false,
                    tenure_days: None,
                    enrolled_at: None,
                });
                map([
                    ("balances", Value::Map(member_balances.into())),
                    ("tier", tier),
                    ("tiers", tiers),
                    ("benefits", benefits),
                    ("progress", progress),
                    ("profile", Value::Map(profile.into())),
                    (
                        "enrolled_at",
                        derived.enrolled_at.map_or(Value::Null, Value::from),
                    ),
                    (
                        "tenure_days",
                        derived.tenure_days.map_or(Value::Null, Value::Int),
                    ),
                    ("birthday_today", Value::Bool(derived.birthday_today)),
                ])
            }
        };
        let [year, month, day, weekday, hour, minute] = self.fast.local;
        let local = map([
            ("date", Value::from(self.fast.local_date.as_str())),
            ("year", Value::Int(year)),
            ("month", Value::Int(month)),
            ("day", Value::Int(day)),
            ("weekday", Value::Int(weekday)),
            ("hour", Value::Int(hour)),
            ("minute", Value::Int(minute)),
        ]);
        let mut context = condition::context();
        context.add_variable_from_value("journal", journal);
        context.add_variable_from_value("member", member);
        context.add_variable_from_value("local", local);
        (context, lines)
    }
}

/// Whether `today` is the birthday of someone born on `born`; 29 February is celebrated
/// on 28 February in years without it.
/// Puts a benefit into `member.benefits`: its value, or `true` for one without; of two
/// with the same code (tiers' and granted), the higher value.
fn put_benefit(
    benefits: &mut HashMap<cel::objects::Key, Value>,
    code: &Code,
    value: Option<Decimal>,
) {
    let value = value.map_or(Value::Bool(true), |v| {
        Value::Float(v.to_string().parse().unwrap_or(0.0))
    });
    let key: cel::objects::Key = Arc::new(code.as_str().to_owned()).into();
    match (benefits.get(&key), &value) {
        (Some(Value::Float(old)), Value::Float(new)) if old >= new => {}
        (Some(Value::Float(_)), Value::Bool(_)) => {}
        _ => {
            benefits.insert(key, value);
        }
    }
}

fn is_birthday(born: chrono::NaiveDate, today: chrono::NaiveDate) -> bool {
    if born.month() == 2 && born.day() == 29 && !today.leap_year() {
        return today.month() == 2 && today.day() == 28;
    }
    born.month() == today.month() && born.day() == today.day()
}

/// A CEL value as a condition would be written: `12.5`, `"food"`, `true`, `null`.
fn show_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{:?}", s.as_str()),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        other => format!("{other:?}"),
    }
}

pub(crate) fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    let map: HashMap<cel::objects::Key, Value> = entries
        .into_iter()
        .map(|(k, v)| (Arc::new(k.to_owned()).into(), v))
        .collect();
    Value::Map(map.into())
}

pub(crate) fn json_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(a) => Value::List(Arc::new(a.iter().map(json_value).collect())),
        serde_json::Value::Object(o) => {
            let map: HashMap<cel::objects::Key, Value> = o
                .iter()
                .map(|(k, v)| (Arc::new(k.clone()).into(), json_value(v)))
                .collect();
            Value::Map(map.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Journal, JournalBody, JournalDocument};

    fn program() -> Program {
        let doc: crate::program::ProgramDocument = serde_json::from_value(serde_json::json!({
            "code": "t", "name": "T", "time_zone": "America/New_York", "money_currency": "EUR",
            "currencies": [{"code": "points", "name": "P", "kind": "redeemable", "expiry": {"policy": "never"}}],
            "earning": {"base": [{"currency": "points", "rate": "1"}]}
        }))
        .expect("a definition document");
        Program::compile(&doc, None).expect("the program compiles")
    }

    fn accrual(program: &Program, json: serde_json::Value) -> Accrual {
        let doc: JournalDocument = serde_json::from_value(json).expect("a journal document");
        match Journal::parse(&doc, program)
            .expect("the journal parses")
            .body
        {
            JournalBody::Accrual(a) => a,
            other => panic!("{other:?}"),
        }
    }

    /// The fast path answers exactly what the CEL interpreter answers, errors included,
    /// for every shape it takes over.
    #[test]
    fn the_fast_path_agrees_with_the_interpreter() {
        let program = program();
        let journal_conditions = [
            "journal.amount >= 100",
            "journal.amount >= 100.0 && journal.channel == 'web'",
            "journal.amount < 19.99 || journal.amount == 19.99",
            "journal.channel != 'web'",
            "journal.channel < 'web'",
            "journal.channel < 'web' && false",
            "false && journal.channel < 'web'",
            "journal.channel < 'web' || true",
            "!(journal.store in ['s1', 's2'])",
            "journal.type == 'purchase' && journal.subtype == null",
            "journal.currency == 'EUR' && journal.partner == null",
            "journal.store.startsWith('s')",
            "journal.store.endsWith('1') || journal.store.contains('x')",
            "local.weekday >= 6 || local.hour < 8",
            "local.date == '2026-06-13' && local.year == 2026 && local.month == 6 && local.day == 13",
            "local.minute == 30",
            "member.balances.points > 100",
            "journal.lines.exists(l, l.category == 'shoes')",
            "journal.lines.exists(l, l.category < 'm')",
            "journal.lines.all(l, l.amount > 5.0 && l.quantity >= 1)",
            "journal.lines.all(l, l.sku.startsWith('SKU'))",
            "journal.lines.exists(l, l.line_id == '2') && !journal.lines.all(l, l.category == 'shoes')",
            "journal.amount in [19.99, 100]",
            "true",
            "member.birthday_today",
            "member.tenure_days > 30 || journal.amount > 1000.0",
            "member.enrolled_at == '2026-01-01'",
            "member.tier == null",
            "member.tier == 'gold' || journal.amount > 50.0",
        ];
        let line_conditions = [
            "line.category == 'shoes'",
            "line.category == 'shoes' && line.quantity >= 2",
            "line.amount >= 20 || line.sku == null",
            "line.sku.startsWith('SKU-1')",
            "line.category > 'k'",
            "line.category in ['shoes', 'bags'] && journal.channel == 'web'",
        ];
        let journals = [
            serde_json::json!({"external_id": "a", "member": "m", "type": "purchase", "occurred_at": "2026-06-13T14:30:00Z",
                "amount": "19.99", "currency": "EUR"}),
            serde_json::json!({"external_id": "b", "member": "m", "type": "purchase", "occurred_at": "2026-06-15T10:00:00Z",
                "amount": "100.00", "currency": "EUR", "channel": "web", "store": "s1",
                "lines": [{"line_id": "1", "sku": "SKU-1", "category": "shoes", "quantity": 1, "amount": "60.00"},
                          {"line_id": "2", "category": "socks", "quantity": 2, "amount": "40.00"}]}),
            serde_json::json!({"external_id": "c", "member": "m", "type": "purchase", "occurred_at": "2026-06-14T03:00:00Z",
                "amount": "4.00", "currency": "EUR", "channel": "app", "store": "x9",
                "lines": [{"line_id": "1", "sku": "A", "category": "bags", "quantity": 3, "amount": "4.00"}]}),
        ];
        let facts_of = [
            None,
            Some(MemberFacts {
                enrolled_at: Some(
                    DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
                        .expect("an RFC 3339 instant")
                        .with_timezone(&Utc),
                ),
                profile: serde_json::from_value(serde_json::json!({"birthday": "1980-06-15"}))
                    .expect("a profile object"),
                segments: Vec::new(),
            }),
            Some(MemberFacts {
                enrolled_at: None,
                profile: serde_json::Map::new(),
                segments: Vec::new(),
            }),
        ];
        for ((balance, json), member) in [0i64, 150, 7].into_iter().zip(journals).zip(&facts_of) {
            let at = DateTime::parse_from_rfc3339(
                json["occurred_at"]
                    .as_str()
                    .expect("occurred_at is a string"),
            )
            .expect("an RFC 3339 instant")
            .with_timezone(&Utc);
            let accrual = accrual(&program, json);
            let balances = [balance];
            let facts = Facts::new(&program, &accrual, &balances, &[], member.as_ref(), &[], at);
            let (context, lines) = facts.cel_context();
            for (sources, line_scope) in [
                (&journal_conditions[..], false),
                (&line_conditions[..], true),
            ] {
                for source in sources {
                    let c = Condition::compile(source)
                        .expect("the condition compiles")
                        .with_fast_path(&program.currencies, line_scope);
                    assert!(c.is_fast(), "{source} should take the fast path");
                    let targets: Vec<Option<usize>> = if line_scope {
                        (0..accrual.lines.len()).map(Some).collect()
                    } else {
                        vec![None]
                    };
                    for line in targets {
                        let fast = facts.holds(&c, line);
                        let slow = match line {
                            None => c.holds(&context),
                            Some(i) => {
                                let mut scope = context.new_inner_scope();
                                scope.add_variable_from_value("line", lines[i].clone());
                                c.holds(&scope)
                            }
                        };
                        assert_eq!(
                            fast.is_ok(),
                            slow.is_ok(),
                            "{source} on line {line:?}: {fast:?} vs {slow:?}"
                        );
                        if let (Ok(f), Ok(s)) = (&fast, &slow) {
                            assert_eq!(f, s, "{source} on line {line:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn other_shapes_stay_with_the_interpreter() {
        let program = program();
        for source in [
            "journal.attributes.coupon == 'X'",
            "journal.amount * 2 > 10",
            "size(journal.lines) > 2",
            "member.balances.miles > 1",
            "journal.lines.map(l, l.amount).size() > 0",
        ] {
            let c = Condition::compile(source)
                .expect("the condition compiles")
                .with_fast_path(&program.currencies, false);
            assert!(!c.is_fast(), "{source}");
        }
    }
}
