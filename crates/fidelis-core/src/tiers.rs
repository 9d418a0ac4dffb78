//! Tiers: qualification periods, upgrades inside the journal that crosses a threshold,
//! assessment at period end under a downgrade policy with an optional grace period, tier
//! validity, manual assignment, and the benefits a tier grants.
//!
//! # Model
//! A [`TierGroup`] measures one thing per member — credits of a qualifying currency, money
//! spent, or the number of activities — over a **qualifying period**: the calendar year,
//! the membership year (from the enrolment anniversary), a rolling window of N months, or
//! the tier's own validity (N months from the day the member entered the tier, renewed at
//! its end at the tier's renewal threshold). Two groups have no period: a **balance**
//! group follows a currency's current balance up and down at once; a **manual** group's
//! tiers are only given by hand.
//! A member's [`GroupStatus`] keeps the tier held and the measure per period
//! (`progress`: per year, per membership year, or per month for rolling windows), so a
//! journal dated in the past counts in its own period and a refund takes from the period
//! of the journal it refunds.
//!
//! - **Upgrade** as soon as the measure of a period reaches a higher threshold, inside the
//!   processing of that journal (reported in its outcome) — or of the settlement that
//!   releases pending qualifying points (only available points count; pending ones count
//!   in the period they are released) — and at an assessment whose period qualifies for a
//!   higher tier than the member holds.
//! - **Assessment** at each period end (each month end for rolling windows): a tier whose
//!   validity has not run out is kept; otherwise the measure of the period just ended
//!   decides, and a member below the threshold goes down by the group's policy (one tier
//!   at most, or to whatever the measure supports) — after the grace period, if the
//!   group has one and the member has not re-qualified within it.
//! - **Reset**: with a calendar or membership year on a qualifying currency, the
//!   currency's balance is reset (an explicit `reset` ledger entry) at each period end.
//!
//! Assessment is lazy, like expiry: it runs before a member's next journal and from the
//! scheduled jobs ([`MemberTiers::next_due`]). Everything here is pure.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::calendar;
use crate::ids::{Code, CurrencyIx};
use crate::program::{Period, Program};

/// Ordered tiers and how members qualify for them.
#[derive(Debug, Clone)]
pub struct TierGroup {
    pub code: Code,
    pub name: String,
    pub measure: TierMeasure,
    pub period: QualifyingPeriod,
    pub downgrade: Downgrade,
    /// How long a member who failed an assessment keeps the tier to re-qualify.
    pub grace: Option<Period>,
    /// Further periods a tier is kept after the period in which it was reached (1: "until
    /// the end of next year"). For rolling windows a period is a month.
    pub validity_periods: u32,
    /// Whether the qualifying currency's balance is reset at each period end (calendar and
    /// membership years on a currency only).
    pub reset: bool,
    /// By threshold, the first at 0.
    pub tiers: Vec<Tier>,
}

/// What a tier group counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierMeasure {
    /// Points of a (qualifying) currency credited in the period, net of refunds.
    Points(CurrencyIx),
    /// Money spent on accruals, in minor units, net of refunds.
    Spend,
    /// Accruals (cancelled ones do not count).
    Activities,
    /// The current available balance of a (redeemable) currency: the tier moves up and
    /// down at once as the balance moves — by a journal or by expiry — with no period
    /// and no assessment.
    Balance(CurrencyIx),
    /// No measure: tiers are given by hand, and a tier given with a validity falls back
    /// to the first tier when it ends.
    Manual,
}

impl TierMeasure {
    pub fn name(self) -> &'static str {
        match self {
            Self::Points(_) => "points",
            Self::Spend => "spend",
            Self::Activities => "activities",
            Self::Balance(_) => "balance",
            Self::Manual => "manual",
        }
    }
}

/// When a tier that no period assesses is next assessed: never.
fn never() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(DateTime::<Utc>::MAX_UTC, |t| t.and_utc())
}

/// The period over which the measure counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QualifyingPeriod {
    CalendarYear,
    /// Years from the member's enrolment anniversary.
    Anniversary,
    /// The last N months, assessed at each month end.
    Rolling {
        months: u32,
    },
    /// Each member's own window: a tier is valid `months` from the day the member entered
    /// it, and the points of that window decide at its end — renewed at the tier's
    /// renewal threshold, or down. An upgrade within the window starts a new one.
    TierValidity {
        months: u32,
    },
}

/// How far a member who no longer qualifies goes down at an assessment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Downgrade {
    /// One tier at most.
    OneTier,
    /// To whatever tier the period's measure supports.
    ToQualified,
}

impl Downgrade {
    pub const NAMES: &'static str = "one_tier, to_qualified";

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "one_tier" => Some(Self::OneTier),
            "to_qualified" => Some(Self::ToQualified),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Tier {
    pub code: Code,
    pub name: String,
    pub threshold: i64,
    /// What keeps the tier at the end of its validity (tier-validity groups; the
    /// threshold when not given).
    pub renewal_threshold: Option<i64>,
    pub benefits: Vec<Benefit>,
    /// Points credited while the member holds this tier expire this much later (the
    /// longest extension of the member's tiers wins).
    pub expiry_extension: Option<Period>,
}

/// Something a tier grants: free shipping, lounge access, an earning multiplier (a
/// benefit with a value). Promotions read them as `member.benefits`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Benefit {
    pub code: Code,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Decimal>,
}

impl TierGroup {
    /// The highest tier whose threshold `value` meets.
    pub fn tier_for(&self, value: i64) -> Option<usize> {
        self.tiers.iter().rposition(|t| value >= t.threshold)
    }

    /// The qualifying currency, for a group measuring points.
    pub fn currency(&self) -> Option<CurrencyIx> {
        match self.measure {
            TierMeasure::Points(c) => Some(c),
            _ => None,
        }
    }

    pub(crate) fn index_of(&self, code: &str) -> usize {
        self.tiers
            .iter()
            .position(|t| t.code.as_str() == code)
            .unwrap_or(0)
    }

    /// Whether a qualifying period measures the group (not a balance, not by hand).
    pub fn is_periodic(&self) -> bool {
        !matches!(self.measure, TierMeasure::Balance(_) | TierMeasure::Manual)
    }

    /// The period (a year, membership year or month) holding instant `t`.
    fn key(&self, tz: Tz, anchor: DateTime<Utc>, t: DateTime<Utc>) -> i64 {
        match self.period {
            // One window at a time, held by the member's standing.
            QualifyingPeriod::TierValidity { .. } => 0,
            QualifyingPeriod::CalendarYear => i64::from(calendar::local_date(tz, t).year()),
            QualifyingPeriod::Rolling { .. } => {
                let d = calendar::local_date(tz, t);
                i64::from(d.year()) * 12 + i64::from(d.month0())
            }
            QualifyingPeriod::Anniversary => {
                if t < anchor {
                    return 0;
                }
                let years =
                    calendar::local_date(tz, t).year() - calendar::local_date(tz, anchor).year();
                let mut k = i64::from(years.max(0));
                while k > 0 && self.start(tz, anchor, k) > t {
                    k -= 1;
                }
                while self.start(tz, anchor, k + 1) <= t {
                    k += 1;
                }
                k
            }
        }
    }

    /// When period `key` starts.
    fn start(&self, tz: Tz, anchor: DateTime<Utc>, key: i64) -> DateTime<Utc> {
        let date = |y: i64, m: u32| {
            i32::try_from(y)
                .ok()
                .and_then(|y| NaiveDate::from_ymd_opt(y, m, 1))
                .map_or(DateTime::<Utc>::MAX_UTC, |d| calendar::start_of_day(tz, d))
        };
        match self.period {
            QualifyingPeriod::TierValidity { .. } => DateTime::<Utc>::MAX_UTC,
            QualifyingPeriod::CalendarYear => date(key, 1),
            QualifyingPeriod::Rolling { .. } => {
                date(key.div_euclid(12), key.rem_euclid(12) as u32 + 1)
            }
            QualifyingPeriod::Anniversary => u32::try_from(key.max(0).saturating_mul(12))
                .map_or(DateTime::<Utc>::MAX_UTC, |m| {
                    calendar::add_months(tz, anchor, m)
                }),
        }
    }

    /// Whether the measure is the qualifying currency's balance itself: points of a
    /// currency reset at each period end hold exactly the current period's points, so no
    /// progress is kept beside them (and a journal changes no standing unless the tier
    /// changes).
    pub fn measured_by_balance(&self) -> bool {
        self.resets()
    }

    /// The measure of period `key`, given the member's available balances.
    fn measure(&self, status: &GroupStatus, key: i64, balances: &[i64]) -> i64 {
        match self.measure {
            TierMeasure::Balance(c) => return balances.get(c.index()).copied().unwrap_or(0).max(0),
            TierMeasure::Manual => return 0,
            _ => {}
        }
        match self.currency() {
            Some(c) if self.measured_by_balance() => {
                balances.get(c.index()).copied().unwrap_or(0).max(0)
            }
            _ => self.value(status, key),
        }
    }

    /// The measure an assessment of period `key` (or an upgrade within it) looks at, from
    /// the progress kept per period.
    fn value(&self, status: &GroupStatus, key: i64) -> i64 {
        match self.period {
            QualifyingPeriod::Rolling { months } => status
                .progress
                .range(key - i64::from(months) + 1..=key)
                .map(|(_, v)| *v)
                .sum(),
            _ => status.progress.get(&key).copied().unwrap_or(0),
        }
    }

    /// Whether the qualifying currency's balance is reset at each period end.
    pub fn resets(&self) -> bool {
        self.reset
            && self.currency().is_some()
            && !matches!(
                self.period,
                QualifyingPeriod::Rolling { .. } | QualifyingPeriod::TierValidity { .. }
            )
    }

    fn oldest_kept(&self, key: i64) -> i64 {
        match self.period {
            QualifyingPeriod::Rolling { months } => key - i64::from(months) - 1,
            _ => key - 1,
        }
    }
}

/// A member's standing in one tier group. Stored (as JSON) with the member; tiers are
/// named by code so that editing a program does not shift them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    pub group: String,
    pub tier: String,
    /// When the member reached (or was given) the tier.
    pub since: DateTime<Utc>,
    /// The tier is not lost at an assessment before this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<DateTime<Utc>>,
    /// The next period end, when the tier is assessed.
    pub next_assessment_at: DateTime<Utc>,
    /// A failed assessment's grace: the member keeps the tier until then, and goes to
    /// `grace_target` unless the current period's measure re-qualifies them first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_until: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_target: Option<String>,
    /// The measure per period key (year, membership year, or month; 0 for the current
    /// window of a tier-validity group).
    #[serde(default)]
    pub progress: BTreeMap<i64, i64>,
    /// Where the current window of a tier-validity group started (entering the tier, or
    /// the last renewal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_from: Option<DateTime<Utc>>,
}

impl GroupStatus {
    fn next_due(&self) -> DateTime<Utc> {
        match self.grace_until {
            Some(g) if g < self.next_assessment_at => g,
            _ => self.next_assessment_at,
        }
    }
}

/// A member's standing in every tier group of the program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberTiers {
    /// The enrolment instant, where membership years start.
    pub anchor: DateTime<Utc>,
    pub groups: Vec<GroupStatus>,
    /// Changed by this processing; the store writes changed standings.
    #[serde(skip)]
    pub changed: bool,
}

/// A tier change, reported in the outcome of the journal (or operation) that made it, and
/// written to the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierChange {
    pub group: Code,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub from: Option<Code>,
    pub to: Code,
    /// `upgrade`, `assessment`, `grace_ended`, `manual` or `merge`.
    pub reason: String,
    /// The measure that decided (upgrades and assessments).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub measure: Option<i64>,
    pub at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub valid_until: Option<DateTime<Utc>>,
}

/// What a journal adds to (or, negative, takes from) each group's measure, and the
/// instant whose period it counts in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    /// Net points per currency.
    pub points: Vec<(CurrencyIx, i64)>,
    pub spend: i64,
    pub activities: i64,
    pub at: DateTime<Utc>,
    /// The available balances after the journal.
    pub balances: Vec<i64>,
}

impl MemberTiers {
    /// A member's first standing: every group's lowest tier, unless `qualifying` (the
    /// member's balances, for a program that gains tiers after members earned) already
    /// reaches a higher one in the current period.
    pub fn start(
        program: &Program,
        anchor: DateTime<Utc>,
        balances: &[i64],
        now: DateTime<Utc>,
    ) -> Self {
        let mut tiers = Self {
            anchor,
            groups: Vec::new(),
            changed: true,
        };
        for group in &program.tier_groups {
            tiers.status_mut(program, group, now);
            if let TierMeasure::Balance(c) = group.measure {
                let value = balances.get(c.index()).copied().unwrap_or(0).max(0);
                let t = group.tier_for(value).unwrap_or(0);
                tiers.status_mut(program, group, now).tier = group.tiers[t].code.to_string();
                continue;
            }
            let tz = program.time_zone;
            let key = group.key(tz, anchor, now);
            let value = group
                .currency()
                .and_then(|c| balances.get(c.index()).copied())
                .unwrap_or(0)
                .max(0);
            if value > 0 {
                let status = tiers.status_mut(program, group, now);
                if !group.measured_by_balance() {
                    status.progress.insert(key, value);
                }
                let t = group.tier_for(value).unwrap_or(0);
                status.tier = group.tiers[t].code.to_string();
            }
        }
        tiers
    }

    /// The standing in `group`, created at its lowest tier if the group is new.
    fn status_mut(
        &mut self,
        program: &Program,
        group: &TierGroup,
        now: DateTime<Utc>,
    ) -> &mut GroupStatus {
        if let Some(i) = self
            .groups
            .iter()
            .position(|s| s.group == group.code.as_str())
        {
            return &mut self.groups[i];
        }
        let key = group.key(program.time_zone, self.anchor, now);
        let (next_assessment_at, window_from) = match group.period {
            _ if !group.is_periodic() => (never(), None),
            QualifyingPeriod::TierValidity { months } => (
                calendar::add_months(program.time_zone, now, months),
                Some(now),
            ),
            _ => (group.start(program.time_zone, self.anchor, key + 1), None),
        };
        self.groups.push(GroupStatus {
            group: group.code.to_string(),
            tier: group.tiers[0].code.to_string(),
            since: now,
            valid_until: None,
            next_assessment_at,
            grace_until: None,
            grace_target: None,
            progress: BTreeMap::new(),
            window_from,
        });
        self.changed = true;
        let last = self.groups.len() - 1;
        &mut self.groups[last]
    }

    /// The standing in the group with this code.
    pub fn status(&self, group: &str) -> Option<&GroupStatus> {
        self.groups.iter().find(|s| s.group == group)
    }

    /// The tier held in each of the program's groups (by index), the lowest for a group
    /// the member has no standing in yet.
    pub fn current(&self, program: &Program) -> Vec<usize> {
        program
            .tier_groups
            .iter()
            .map(|g| {
                self.status(g.code.as_str())
                    .map_or(0, |s| g.index_of(&s.tier))
            })
            .collect()
    }

    /// The measure of tier group `group` (by index) in the period holding `now` (for a
    /// rolling window: the window ending with the current month).
    pub fn progress(
        &self,
        program: &Program,
        group: usize,
        balances: &[i64],
        now: DateTime<Utc>,
    ) -> i64 {
        let Some(g) = program.tier_groups.get(group) else {
            return 0;
        };
        let key = g.key(program.time_zone, self.anchor, now);
        self.status(g.code.as_str())
            .map_or(0, |s| g.measure(s, key, balances))
    }

    /// When an assessment or a grace period's end is next due.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.groups.iter().map(GroupStatus::next_due).min()
    }

    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.next_due().is_some_and(|t| t <= now)
    }

    /// Counts a journal's contribution toward every group and upgrades where a threshold
    /// is reached. A negative contribution (a refund) never downgrades here: that waits
    /// for the assessment.
    pub fn contribute(
        &mut self,
        program: &Program,
        c: &Contribution,
        now: DateTime<Utc>,
    ) -> Vec<TierChange> {
        let tz = program.time_zone;
        let anchor = self.anchor;
        let mut changes = Vec::new();
        for group in &program.tier_groups {
            let delta = match group.measure {
                TierMeasure::Points(currency) => c
                    .points
                    .iter()
                    .filter(|(cur, _)| *cur == currency)
                    .map(|(_, p)| p)
                    .sum(),
                TierMeasure::Spend => c.spend,
                TierMeasure::Activities => c.activities,
                TierMeasure::Balance(_) | TierMeasure::Manual => continue,
            };
            if delta == 0 {
                continue;
            }
            if let QualifyingPeriod::TierValidity { months } = group.period {
                let status = self.status_mut(program, group, now);
                // Only what happened within the current window counts (a refund of an
                // older purchase takes nothing from it).
                if status.window_from.is_some_and(|from| c.at < from) {
                    continue;
                }
                let slot = status.progress.entry(0).or_insert(0);
                *slot = slot.saturating_add(delta);
                let value = *slot;
                let current = group.index_of(&status.tier);
                let reached = group.tier_for(value).unwrap_or(0);
                if reached > current {
                    // Entering a higher tier starts its validity, and a new window.
                    let at = c.at.min(now);
                    let until = calendar::add_months(tz, at, months);
                    changes.push(TierChange {
                        group: group.code.clone(),
                        from: Some(group.tiers[current].code.clone()),
                        to: group.tiers[reached].code.clone(),
                        reason: "upgrade".into(),
                        measure: Some(value),
                        at,
                        valid_until: Some(until),
                    });
                    status.tier = group.tiers[reached].code.to_string();
                    status.since = at;
                    status.valid_until = Some(until);
                    status.next_assessment_at = until;
                    status.window_from = Some(at);
                    status.progress.clear();
                }
                self.changed = true;
                continue;
            }
            let by_balance = group.measured_by_balance();
            // The period only matters for kept progress and for a change of tier: most
            // journals of a balance-measured group need no calendar arithmetic.
            let key = if by_balance {
                0
            } else {
                group.key(tz, anchor, c.at)
            };
            let status = self.status_mut(program, group, now);
            if !by_balance {
                let slot = status.progress.entry(key).or_insert(0);
                *slot = slot.saturating_add(delta);
                self.changed = true;
            }
            let status = self.status_mut(program, group, now);
            let value = group.measure(status, key, &c.balances);
            let current = group.index_of(&status.tier);
            let reached = group.tier_for(value).unwrap_or(0);
            if reached <= current && status.grace_until.is_none() {
                continue;
            }
            let key = if by_balance {
                group.key(tz, anchor, c.at)
            } else {
                key
            };
            let valid_until = group.start(tz, anchor, key + 1 + i64::from(group.validity_periods));
            if reached > current {
                changes.push(TierChange {
                    group: group.code.clone(),
                    from: Some(group.tiers[current].code.clone()),
                    to: group.tiers[reached].code.clone(),
                    reason: "upgrade".into(),
                    measure: Some(value),
                    at: c.at.min(now),
                    valid_until: Some(valid_until),
                });
                status.tier = group.tiers[reached].code.to_string();
                status.since = c.at.min(now);
                status.valid_until =
                    Some(valid_until.max(status.valid_until.unwrap_or(valid_until)));
                status.grace_until = None;
                status.grace_target = None;
                self.changed = true;
            } else if reached == current && status.grace_until.is_some() && delta > 0 {
                // Re-qualified within the grace period.
                status.grace_until = None;
                status.grace_target = None;
                status.valid_until = Some(valid_until);
                self.changed = true;
            }
        }
        changes
    }

    /// Moves the tier of every balance-measured group to what the available `balances`
    /// support, up or down (after a journal, an expiry, a transfer).
    pub fn follow_balances(
        &mut self,
        program: &Program,
        balances: &[i64],
        now: DateTime<Utc>,
    ) -> Vec<TierChange> {
        let mut changes = Vec::new();
        for group in &program.tier_groups {
            let TierMeasure::Balance(c) = group.measure else {
                continue;
            };
            let value = balances.get(c.index()).copied().unwrap_or(0).max(0);
            let reached = group.tier_for(value).unwrap_or(0);
            let status = self.status_mut(program, group, now);
            let current = group.index_of(&status.tier);
            if reached == current {
                continue;
            }
            changes.push(TierChange {
                group: group.code.clone(),
                from: Some(group.tiers[current].code.clone()),
                to: group.tiers[reached].code.clone(),
                reason: "balance".into(),
                measure: Some(value),
                at: now,
                valid_until: None,
            });
            status.tier = group.tiers[reached].code.to_string();
            status.since = now;
            status.valid_until = None;
            self.changed = true;
        }
        changes
    }

    /// Assesses every group whose period ended (or whose grace ran out) by `now`, in time
    /// order. Returns the changes and, per qualifying currency to reset, the instant of
    /// the reset (the period end).
    pub fn assess(&mut self, program: &Program, balances: &[i64], now: DateTime<Utc>) -> Assessed {
        let tz = program.time_zone;
        let anchor = self.anchor;
        let mut out = Assessed::default();
        for group in &program.tier_groups {
            // A balance reset at a period end counts as zero at later ones.
            let mut balances = balances.to_vec();
            let status = self.status_mut(program, group, now);
            // A member idle for decades has at most a few hundred month ends to catch up.
            for _ in 0..2_000 {
                let due = status.next_due();
                if due > now {
                    break;
                }
                let current = group.index_of(&status.tier);
                if !group.is_periodic() {
                    // A tier given by hand with a validity: it ends, back to the first.
                    status.next_assessment_at = never();
                    if group.measure == TierMeasure::Manual && current > 0 {
                        out.changes.push(TierChange {
                            group: group.code.clone(),
                            from: Some(group.tiers[current].code.clone()),
                            to: group.tiers[0].code.clone(),
                            reason: "validity_ended".into(),
                            measure: None,
                            at: due,
                            valid_until: None,
                        });
                        status.tier = group.tiers[0].code.to_string();
                        status.since = due;
                        status.valid_until = None;
                    }
                    continue;
                }
                if let QualifyingPeriod::TierValidity { months } = group.period {
                    // The window ended: renewed at the tier's renewal threshold, or down
                    // (one tier, or to what the window's points renew), and a new window.
                    let value = status.progress.get(&0).copied().unwrap_or(0).max(0);
                    let renews = |t: usize| {
                        value
                            >= group.tiers[t]
                                .renewal_threshold
                                .unwrap_or(group.tiers[t].threshold)
                    };
                    let next = calendar::add_months(tz, due, months);
                    status.progress.clear();
                    status.window_from = Some(due);
                    status.next_assessment_at = next;
                    if current == 0 || renews(current) {
                        status.valid_until = (current > 0).then_some(next);
                        continue;
                    }
                    let qualified = (0..current).rev().find(|t| renews(*t)).unwrap_or(0);
                    let target = match group.downgrade {
                        Downgrade::OneTier => qualified.max(current - 1),
                        Downgrade::ToQualified => qualified,
                    };
                    out.changes.push(TierChange {
                        group: group.code.clone(),
                        from: Some(group.tiers[current].code.clone()),
                        to: group.tiers[target].code.clone(),
                        reason: "assessment".into(),
                        measure: Some(value),
                        at: due,
                        valid_until: (target > 0).then_some(next),
                    });
                    status.tier = group.tiers[target].code.to_string();
                    status.since = due;
                    status.valid_until = (target > 0).then_some(next);
                    continue;
                }
                if status.grace_until == Some(due) {
                    // The grace ran out: re-qualified in the current period, or down.
                    let key = group.key(tz, anchor, due);
                    let value = group.measure(status, key, &balances);
                    let target = status
                        .grace_target
                        .as_deref()
                        .map_or(current, |t| group.index_of(t));
                    status.grace_until = None;
                    status.grace_target = None;
                    if value < group.tiers[current].threshold && target < current {
                        let valid = group.start(tz, anchor, key + 1);
                        out.changes.push(TierChange {
                            group: group.code.clone(),
                            from: Some(group.tiers[current].code.clone()),
                            to: group.tiers[target].code.clone(),
                            reason: "grace_ended".into(),
                            measure: Some(value),
                            at: due,
                            valid_until: Some(valid),
                        });
                        status.tier = group.tiers[target].code.to_string();
                        status.since = due;
                        status.valid_until = Some(valid);
                    }
                    continue;
                }
                // A period end: assess the period just ended.
                let ended = group.key(tz, anchor, due) - 1;
                status.next_assessment_at = group.start(tz, anchor, ended + 2);
                let keep_until = group.start(tz, anchor, ended + 2);
                let value = group.measure(status, ended, &balances);
                if let (true, Some(currency)) = (group.resets(), group.currency()) {
                    out.resets.push((currency, due));
                    if let Some(b) = balances.get_mut(currency.index()) {
                        *b = 0;
                    }
                }
                status.progress = status.progress.split_off(&group.oldest_kept(ended));
                let qualified = group.tier_for(value).unwrap_or(0);
                if qualified > current {
                    // Qualified for more than the member holds (points that became
                    // available without a journal, a merge, a lowered threshold): up.
                    let valid = group
                        .start(tz, anchor, ended + 1 + i64::from(group.validity_periods))
                        .max(keep_until);
                    out.changes.push(TierChange {
                        group: group.code.clone(),
                        from: Some(group.tiers[current].code.clone()),
                        to: group.tiers[qualified].code.clone(),
                        reason: "assessment".into(),
                        measure: Some(value),
                        at: due,
                        valid_until: Some(valid),
                    });
                    status.tier = group.tiers[qualified].code.to_string();
                    status.since = due;
                    status.valid_until = Some(valid);
                    status.grace_until = None;
                    status.grace_target = None;
                    continue;
                }
                if status.valid_until.is_some_and(|v| v > due) {
                    continue;
                }
                if qualified >= current {
                    status.valid_until = Some(keep_until);
                    continue;
                }
                let target = match group.downgrade {
                    Downgrade::OneTier => qualified.max(current - 1),
                    Downgrade::ToQualified => qualified,
                };
                if let (Some(grace), None) = (group.grace, status.grace_until) {
                    status.grace_until = Some(grace.after(tz, due));
                    status.grace_target = Some(group.tiers[target].code.to_string());
                    continue;
                }
                out.changes.push(TierChange {
                    group: group.code.clone(),
                    from: Some(group.tiers[current].code.clone()),
                    to: group.tiers[target].code.clone(),
                    reason: "assessment".into(),
                    measure: Some(value),
                    at: due,
                    valid_until: Some(keep_until),
                });
                status.tier = group.tiers[target].code.to_string();
                status.since = due;
                status.valid_until = Some(keep_until);
            }
        }
        self.changed = true;
        out
    }

    /// Gives the member `tier` in `group` by hand (an agent's decision), kept at least
    /// until `valid_until` when given, otherwise until the end of the current period.
    pub fn assign(
        &mut self,
        program: &Program,
        group: &TierGroup,
        tier: usize,
        valid_until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> TierChange {
        let tz = program.time_zone;
        let anchor = self.anchor;
        let key = group.key(tz, anchor, now);
        let status = self.status_mut(program, group, now);
        let from = group.tiers[group.index_of(&status.tier)].code.clone();
        if group.measure == TierMeasure::Manual {
            // Held until the validity given ends, or until changed by hand.
            status.tier = group.tiers[tier].code.to_string();
            status.since = now;
            status.valid_until = valid_until;
            status.next_assessment_at = valid_until.unwrap_or_else(never);
            status.grace_until = None;
            status.grace_target = None;
            self.changed = true;
            return TierChange {
                group: group.code.clone(),
                from: Some(from),
                to: group.tiers[tier].code.clone(),
                reason: "manual".into(),
                measure: None,
                at: now,
                valid_until,
            };
        }
        if let QualifyingPeriod::TierValidity { months } = group.period {
            // Given by hand: valid as given (or for the group's months), and a new window.
            let valid = valid_until.unwrap_or_else(|| calendar::add_months(tz, now, months));
            status.next_assessment_at = valid;
            status.window_from = Some(now);
            status.progress.clear();
        }
        let valid = match group.period {
            QualifyingPeriod::TierValidity { .. } => status.next_assessment_at,
            _ => valid_until.unwrap_or_else(|| group.start(tz, anchor, key + 1)),
        };
        status.tier = group.tiers[tier].code.to_string();
        status.since = now;
        status.valid_until = Some(valid);
        status.grace_until = None;
        status.grace_target = None;
        self.changed = true;
        TierChange {
            group: group.code.clone(),
            from: Some(from),
            to: group.tiers[tier].code.clone(),
            reason: "manual".into(),
            measure: None,
            at: now,
            valid_until: Some(valid),
        }
    }

    /// Sets the standing in group `group` (by index) as brought from another system: the
    /// tier held since `since`, kept until `valid_until` (or the end of the period), with
    /// `progress` so far in the current period (or window).
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        &mut self,
        program: &Program,
        group: usize,
        tier: usize,
        since: DateTime<Utc>,
        valid_until: Option<DateTime<Utc>>,
        progress: i64,
        now: DateTime<Utc>,
    ) -> TierChange {
        let g = &program.tier_groups[group];
        let tz = program.time_zone;
        let anchor = self.anchor;
        let key = g.key(tz, anchor, now);
        let status = self.status_mut(program, g, now);
        status.tier = g.tiers[tier].code.to_string();
        status.since = since;
        status.grace_until = None;
        status.grace_target = None;
        status.progress.clear();
        match g.period {
            _ if !g.is_periodic() => {
                status.valid_until = valid_until;
                status.next_assessment_at = match (g.measure, valid_until) {
                    (TierMeasure::Manual, Some(v)) => v,
                    _ => never(),
                };
            }
            QualifyingPeriod::TierValidity { months } => {
                let until = valid_until.unwrap_or_else(|| calendar::add_months(tz, since, months));
                status.valid_until = Some(until);
                status.next_assessment_at = until;
                status.window_from = Some(since);
                status.progress.insert(0, progress);
            }
            _ => {
                status.valid_until = valid_until;
                if !g.measured_by_balance() {
                    status.progress.insert(key, progress);
                }
            }
        }
        let valid_until = status.valid_until;
        self.changed = true;
        TierChange {
            group: g.code.clone(),
            from: None,
            to: g.tiers[tier].code.clone(),
            reason: "opening".into(),
            measure: Some(progress),
            at: since,
            valid_until,
        }
    }

    /// Folds a merged member's standing into this one (the survivor): per group the higher
    /// tier and the longer validity are kept, and the measures of each period add up.
    pub fn absorb(
        &mut self,
        program: &Program,
        other: &MemberTiers,
        now: DateTime<Utc>,
    ) -> Vec<TierChange> {
        let mut changes = Vec::new();
        for group in &program.tier_groups {
            let Some(theirs) = other.status(group.code.as_str()).cloned() else {
                continue;
            };
            let tz = program.time_zone;
            // Periods are the survivor's: the other's measures count where their instants
            // fall for it (calendar and rolling keys are the same for both).
            let same_keys = group.period != QualifyingPeriod::Anniversary;
            let our_key = group.key(tz, self.anchor, now);
            let ours = self.status_mut(program, group, now);
            if same_keys {
                for (k, v) in &theirs.progress {
                    *ours.progress.entry(*k).or_insert(0) += v;
                }
            } else {
                // Membership years differ: the other's current year counts in ours.
                let theirs_now = theirs.progress.get(&group.key(tz, other.anchor, now));
                if let Some(v) = theirs_now {
                    *ours.progress.entry(our_key).or_insert(0) += v;
                }
            }
            let (a, b) = (group.index_of(&ours.tier), group.index_of(&theirs.tier));
            if b > a {
                changes.push(TierChange {
                    group: group.code.clone(),
                    from: Some(group.tiers[a].code.clone()),
                    to: group.tiers[b].code.clone(),
                    reason: "merge".into(),
                    measure: None,
                    at: now,
                    valid_until: theirs.valid_until,
                });
                ours.tier = theirs.tier.clone();
                ours.since = theirs.since;
                ours.valid_until = theirs.valid_until;
                ours.grace_until = theirs.grace_until;
                ours.grace_target = theirs.grace_target.clone();
            } else if b == a && theirs.valid_until > ours.valid_until {
                ours.valid_until = theirs.valid_until;
            }
        }
        self.changed = true;
        changes
    }

    /// The benefits of the tiers the member holds, by group.
    pub fn benefits<'p>(&self, program: &'p Program) -> Vec<(&'p TierGroup, &'p Tier)> {
        program
            .tier_groups
            .iter()
            .zip(self.current(program))
            .map(|(g, t)| (g, &g.tiers[t]))
            .collect()
    }

    /// The longest expiry extension of the tiers the member holds.
    pub fn expiry_extensions(&self, program: &Program) -> Vec<Period> {
        self.benefits(program)
            .into_iter()
            .filter_map(|(_, t)| t.expiry_extension)
            .collect()
    }
}

/// What an assessment did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assessed {
    pub changes: Vec<TierChange>,
    /// Qualifying currencies to reset, with the period end.
    pub resets: Vec<(CurrencyIx, DateTime<Utc>)>,
}

/// The latest of the instants the extensions give to an expiry.
pub fn extend_expiry(tz: Tz, expires_at: DateTime<Utc>, extensions: &[Period]) -> DateTime<Utc> {
    extensions
        .iter()
        .map(|p| p.after(tz, expires_at))
        .max()
        .unwrap_or(expires_at)
        .max(expires_at)
}
