//! Earning: base points for an accrual, spread over its lines so that a refund of a line
//! takes back exactly what that line earned.

use std::borrow::Cow;

use chrono::{DateTime, Utc};

use super::{AccrualState, BASE, Component, LineState};
use crate::ids::CurrencyIx;
use crate::journal::Accrual;
use crate::ledger::{EntryKind, JournalWriter, MemberLedger};
use crate::outcome::{Award, Outcome, PointsOf, PromotionResult, RewardOf};
use crate::program::Program;
use crate::promotions::{self, BasePoints, Reward, Verdict};

/// Credits the base earning and the promotions of an accrual and returns what it earned
/// per line and source, so that refunds and cancellations take back exactly that.
pub(super) fn earn(
    program: &Program,
    ledger: &mut MemberLedger,
    w: &mut JournalWriter,
    accrual: &Accrual,
    at: DateTime<Utc>,
    outcome: &mut Outcome,
    explain: bool,
    brief: bool,
    counters: &mut promotions::Counters,
    member: &str,
) -> AccrualState {
    ledger.note_activity(program, at);
    let amount = accrual.amount.map_or(0, |a| a.0);
    let mut state = AccrualState {
        amount,
        refunded: 0,
        lines: accrual
            .lines
            .iter()
            .map(|l| LineState {
                line_id: l.line_id.clone(),
                quantity: l.quantity,
                amount: l.amount.0,
                refunded_quantity: 0,
                refunded_amount: 0,
            })
            .collect(),
        components: Vec::new(),
        usage: Vec::new(),
        progress: Vec::new(),
    };
    let base = base_points(program, accrual);
    let evaluations = if program.promotions.is_empty() {
        Vec::new()
    } else {
        let balances: Vec<i64> = ledger.accounts.iter().map(|a| a.available).collect();
        let tiers = ledger.tier_indexes(program);
        let member = promotions::Member {
            id: ledger.member,
            external: member,
            facts: ledger.facts.as_deref(),
            balances: &balances,
            tiers: &tiers,
            granted: &ledger.granted,
            counters,
            explain,
        };
        promotions::evaluate(program, accrual, &base, member, at)
    };
    // Benefits granted now hold for the member's later journals (the store records them
    // with the same period).
    if !explain {
        for e in evaluations.iter().filter(|e| e.verdict == Verdict::Applied) {
            for reward in &e.rewards {
                if let Reward::Benefit(code, days) = reward {
                    let value = program.promotions[e.promotion]
                        .actions
                        .iter()
                        .find_map(|a| match a {
                            promotions::Action::Benefit { benefit, .. }
                                if benefit.code == *code =>
                            {
                                Some(benefit.value)
                            }
                            _ => None,
                        })
                        .flatten();
                    ledger.granted.push(promotions::GrantedBenefit {
                        code: code.clone(),
                        value,
                        starts_at: at,
                        ends_at: at + chrono::Duration::days(i64::from(*days)),
                    });
                }
            }
        }
    }
    let mut totals: Vec<(CurrencyIx, i64)> = Vec::new();
    let promoted = |currency: CurrencyIx| {
        evaluations.iter().any(|e| {
            e.verdict == Verdict::Applied && e.points.iter().any(|p| p.currency == currency)
        })
    };
    for b in &base {
        if !program.base_stacks && promoted(b.currency) {
            continue;
        }
        let shares: Vec<(Option<u32>, i64)> = if b.per_line.is_empty() {
            vec![(None, b.total)]
        } else {
            b.per_line
                .iter()
                .enumerate()
                .map(|(i, p)| (Some(i as u32), *p))
                .collect()
        };
        record(
            program,
            &mut state,
            outcome,
            &mut totals,
            b.currency,
            BASE.into(),
            &shares,
        );
    }
    for e in &evaluations {
        state.progress.extend(e.contribution.as_deref().cloned());
        let promotion = &program.promotions[e.promotion];
        if e.verdict == Verdict::Applied {
            state.usage.extend(e.usage.as_deref().cloned());
            let source: Cow<'static, str> = Cow::Owned(promotion.code.as_str().to_owned());
            let mut currencies: Vec<CurrencyIx> = Vec::new();
            for p in &e.points {
                if !currencies.contains(&p.currency) {
                    currencies.push(p.currency);
                }
            }
            for currency in currencies {
                let shares: Vec<(Option<u32>, i64)> = e
                    .points
                    .iter()
                    .filter(|p| p.currency == currency)
                    .map(|p| (p.line, p.points))
                    .collect();
                record(
                    program,
                    &mut state,
                    outcome,
                    &mut totals,
                    currency,
                    source.clone(),
                    &shares,
                );
            }
        }
        let reported = explain
            || matches!(
                e.verdict,
                Verdict::Applied
                    | Verdict::EvaluationError(_)
                    | Verdict::LimitReached(_)
                    | Verdict::InProgress { .. }
                    | Verdict::TargetReached(_)
                    | Verdict::Control
            );
        if reported && !brief {
            outcome.promotions.push(result(program, e));
        }
    }
    // One credit per currency: the journal's points of a currency share a bucket (same
    // credit instant, same expiry); the components say where each point came from.
    for (currency, points) in totals {
        ledger.credit(program, w, currency, points, at, EntryKind::Earn);
    }
    state
}

/// What base earning gives an accrual, per currency, split over its lines.
pub(crate) fn base_points(program: &Program, accrual: &Accrual) -> Vec<BasePoints> {
    let Some(money) = accrual.amount else {
        return Vec::new();
    };
    let weights: Vec<i64> = accrual.lines.iter().map(|l| l.amount.0).collect();
    program
        .base_earning
        .iter()
        .filter(|r| r.applies_to(accrual.activity.as_str()))
        .filter_map(|rule| {
            let total = rule.rate.apply(money, program.money_currency.scale());
            (total > 0).then(|| BasePoints {
                currency: rule.currency,
                total,
                per_line: if weights.is_empty() {
                    Vec::new()
                } else {
                    allocate(total, &weights)
                },
            })
        })
        .collect()
}

/// Records `shares` (per line, or for the whole journal) of one currency from one source
/// as components and an award, and adds them to the currency's total to credit.
fn record(
    program: &Program,
    state: &mut AccrualState,
    outcome: &mut Outcome,
    totals: &mut Vec<(CurrencyIx, i64)>,
    currency: CurrencyIx,
    source: Cow<'static, str>,
    shares: &[(Option<u32>, i64)],
) {
    let points: i64 = shares.iter().map(|(_, p)| p).sum();
    if points <= 0 {
        return;
    }
    match totals.iter_mut().find(|(c, _)| *c == currency) {
        Some((_, total)) => *total = total.saturating_add(points),
        None => totals.push((currency, points)),
    }
    let code = program.currency(currency).code.clone();
    match outcome
        .awards
        .iter_mut()
        .find(|a| a.source == source && a.currency == code)
    {
        Some(a) => a.points += points,
        None => outcome.awards.push(Award {
            source: source.clone(),
            currency: code.clone(),
            points,
        }),
    }
    for (line, share) in shares {
        if *share <= 0 {
            continue;
        }
        match state
            .components
            .iter_mut()
            .find(|c| c.source == source && c.currency == code && c.line == *line)
        {
            Some(c) => c.points += share,
            None => state.components.push(Component {
                currency: code.clone(),
                line: *line,
                source: source.clone(),
                points: *share,
                reversed: 0,
            }),
        }
    }
}

/// A promotion's verdict as the outcome reports it.
pub(crate) fn result(program: &Program, e: &promotions::Evaluation) -> PromotionResult {
    let mut points: Vec<PointsOf> = Vec::new();
    for p in &e.points {
        Outcome::add(&mut points, &program.currency(p.currency).code, p.points);
    }
    PromotionResult {
        promotion: program.promotions[e.promotion].code.clone(),
        result: e.verdict.name().into(),
        detail: e
            .verdict
            .detail(&program.promotions[e.promotion], &program.money_currency)
            .or_else(|| e.saw.clone()),
        points,
        rewards: e
            .rewards
            .iter()
            .map(|r| match r {
                Reward::Voucher(code) => RewardOf {
                    kind: "voucher".into(),
                    code: code.clone(),
                    voucher: None,
                },
                Reward::Badge(code) => RewardOf {
                    kind: "badge".into(),
                    code: code.clone(),
                    voucher: None,
                },
                Reward::Benefit(code, _) => RewardOf {
                    kind: "benefit".into(),
                    code: code.clone(),
                    voucher: None,
                },
            })
            .collect(),
    }
}

/// Splits `total` in proportion to `weights` by the largest-remainder method: the shares
/// sum to `total` exactly, and no share is more than one point from its exact value.
/// Ties go to the earlier weight. Allocates only the result (this runs for every purchase
/// with lines).
pub(crate) fn allocate(total: i64, weights: &[i64]) -> Vec<i64> {
    let sum: i128 = weights.iter().map(|w| i128::from(*w)).sum();
    let mut shares = vec![0; weights.len()];
    if sum <= 0 {
        if let Some(first) = shares.first_mut() {
            *first = total;
        }
        return shares;
    }
    let remainder = |i: usize| i128::from(total) * i128::from(weights[i]) % sum;
    for (share, w) in shares.iter_mut().zip(weights) {
        *share = (i128::from(total) * i128::from(*w) / sum) as i64;
    }
    let mut left = total - shares.iter().sum::<i64>();
    if weights.len() > 16 {
        // Many lines: sort the remainders once.
        let mut order: Vec<usize> = (0..weights.len()).collect();
        order.sort_by(|&a, &b| remainder(b).cmp(&remainder(a)).then(a.cmp(&b)));
        for i in order.into_iter().take(left.max(0) as usize) {
            shares[i] += 1;
        }
        return shares;
    }
    // Fewer points are left than there are weights: hand them out one at a time to the
    // largest remainders not served yet (no allocation, for the usual few lines).
    let mut served_below: Option<(i128, usize)> = None;
    while left > 0 {
        let next = (0..weights.len())
            .filter(|&i| match served_below {
                // Strictly after the last served in (remainder desc, index asc) order.
                Some((r, j)) => remainder(i) < r || (remainder(i) == r && i > j),
                None => true,
            })
            .max_by(|&a, &b| remainder(a).cmp(&remainder(b)).then(b.cmp(&a)));
        let Some(i) = next else { break };
        shares[i] += 1;
        left -= 1;
        served_below = Some((remainder(i), i));
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::allocate;

    #[test]
    fn allocation_is_exact_and_proportional() {
        let many: Vec<i64> = [1; 20].iter().chain(&[0; 10]).copied().collect();
        let cases: Vec<(i64, Vec<i64>, Vec<i64>)> = vec![
            (79, vec![5990, 2000], vec![59, 20]),
            (10, vec![1, 1, 1], vec![4, 3, 3]),
            (5, vec![1; 7], vec![1, 1, 1, 1, 1, 0, 0]),
            (2, vec![3, 1, 3], vec![1, 0, 1]),
            (100, vec![3333, 3333, 3334], vec![33, 33, 34]),
            (7, vec![0, 10], vec![0, 7]),
            (5, vec![0, 0], vec![5, 0]),
            // More than 16 lines take the sorting path; ties still go to the earlier line.
            (20, vec![1; 30], many),
        ];
        for (total, weights, want) in cases {
            let shares = allocate(total, &weights);
            assert_eq!(shares, want, "{total} over {weights:?}");
            assert_eq!(shares.iter().sum::<i64>(), total);
        }
    }
}
