//! Earning: base points for an accrual, spread over its lines so that a refund of a line
//! takes back exactly what that line earned.

use chrono::{DateTime, Utc};

use super::{AccrualState, BASE, Component, LineState};
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
        let code = program.currency(rule.currency).code.clone();
        ledger.credit(program, w, rule.currency, points, at, EntryKind::Earn);
        outcome.awards.push(Award {
            source: BASE.into(),
            currency: code.clone(),
            points,
        });
        if state.lines.is_empty() {
            state.components.push(Component {
                currency: code,
                line: None,
                source: BASE.into(),
                points,
                reversed: 0,
            });
        } else {
            let weights: Vec<i64> = accrual.lines.iter().map(|l| l.amount.0).collect();
            for (i, share) in allocate(points, &weights).into_iter().enumerate() {
                if share > 0 {
                    state.components.push(Component {
                        currency: code.clone(),
                        line: Some(i as u32),
                        source: BASE.into(),
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
