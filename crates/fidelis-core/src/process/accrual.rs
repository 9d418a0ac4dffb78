//! Earning: base points for an accrual, spread over its lines so that a refund of a line
//! takes back exactly what that line earned.

use chrono::{DateTime, Utc};

use super::{AccrualState, Component, LineState};
use crate::journal::Accrual;
use crate::ledger::{EntryKind, JournalWriter, MemberLedger};
use crate::outcome::{Award, Outcome};
use crate::program::Program;

/// Credits the base earning of an accrual and returns what it earned per line.
pub(super) fn earn(
    program: &Program,
    ledger: &mut MemberLedger,
    w: &mut JournalWriter,
    accrual: &Accrual,
    at: DateTime<Utc>,
    outcome: &mut Outcome,
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
    };
    let Some(money) = accrual.amount else {
        return state;
    };
    for rule in program
        .base_earning
        .iter()
        .filter(|r| r.applies_to(accrual.activity.as_str()))
    {
        let points = rule.rate.apply(money, program.money_currency.scale());
        if points <= 0 {
            continue;
        }
        let code = program.currency(rule.currency).code.to_string();
        ledger.credit(program, w, rule.currency, points, at, EntryKind::Earn);
        outcome.awards.push(Award {
            source: "base".into(),
            currency: code.clone(),
            points,
        });
        if state.lines.is_empty() {
            state.components.push(Component {
                currency: code,
                line: None,
                source: "base".into(),
                points,
                reversed: 0,
            });
        } else {
            let weights: Vec<i64> = state.lines.iter().map(|l| l.amount).collect();
            for (i, share) in allocate(points, &weights).into_iter().enumerate() {
                if share > 0 {
                    state.components.push(Component {
                        currency: code.clone(),
                        line: Some(i as u32),
                        source: "base".into(),
                        points: share,
                        reversed: 0,
                    });
                }
            }
        }
    }
    state
}

/// Splits `total` in proportion to `weights` by the largest-remainder method: the shares
/// sum to `total` exactly, and no share is more than one point from its exact value.
/// Ties go to the earlier weight.
pub(crate) fn allocate(total: i64, weights: &[i64]) -> Vec<i64> {
    let sum: i128 = weights.iter().map(|w| i128::from(*w)).sum();
    if sum <= 0 {
        let mut shares = vec![0; weights.len()];
        if let Some(first) = shares.first_mut() {
            *first = total;
        }
        return shares;
    }
    let mut shares = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    for (i, w) in weights.iter().enumerate() {
        let exact = i128::from(total) * i128::from(*w);
        shares.push((exact / sum) as i64);
        remainders.push((exact % sum, i));
    }
    let mut left = total - shares.iter().sum::<i64>();
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in remainders {
        if left <= 0 {
            break;
        }
        shares[i] += 1;
        left -= 1;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::allocate;

    #[test]
    fn allocation_is_exact_and_proportional() {
        let cases: [(i64, &[i64], &[i64]); 5] = [
            (79, &[5990, 2000], &[59, 20]),
            (10, &[1, 1, 1], &[4, 3, 3]),
            (100, &[3333, 3333, 3334], &[33, 33, 34]),
            (7, &[0, 10], &[0, 7]),
            (5, &[0, 0], &[5, 0]),
        ];
        for (total, weights, want) in cases {
            let shares = allocate(total, weights);
            assert_eq!(shares, want, "{total} over {weights:?}");
            assert_eq!(shares.iter().sum::<i64>(), total);
        }
    }
}
