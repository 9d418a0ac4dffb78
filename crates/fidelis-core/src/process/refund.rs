//! Refunds: part or all of an accrual comes back, and the points it earned follow.
//!
//! By line where the refund names lines (the points each line earned), otherwise in
//! proportion to the refunded share of the amount. Reversals are computed on cumulative
//! shares, so however a purchase is refunded in parts, the points taken back never exceed
//! what it earned and a full refund takes back exactly all of it. Refunding more than was
//! bought, or what was already refunded, is refused.

use chrono::{DateTime, Utc};

use super::accrual::allocate;
use super::{
    AccrualState, JournalRecord, JournalState, ProcessError, RecordKind, RecordStatus, RefundState,
    Related,
};
use crate::ids::{CurrencyIx, ExternalId, JournalId, MemberId};
use crate::journal::{JournalError, Refund};
use crate::ledger::{EntryKind, JournalWriter, MemberLedger};
use crate::money::MinorUnits;
use crate::outcome::Outcome;
use crate::program::Program;
use crate::promotions::{Counters, limits};

pub(super) fn refund(
    program: &Program,
    ledger: &mut MemberLedger,
    w: &mut JournalWriter,
    refund: &Refund,
    related: &mut Related,
    at: DateTime<Utc>,
    outcome: &mut Outcome,
) -> Result<(JournalId, RefundState), ProcessError> {
    let target = related
        .target
        .as_mut()
        .ok_or_else(|| JournalError::UnknownOriginal(refund.original.to_string()))?;
    let state = refundable(target, ledger.member, &refund.original)?;
    let (lines, total) = plan(state, refund, program)?;
    let mut next = state.clone();
    for (idx, quantity, amount) in &lines {
        let line = &mut next.lines[*idx as usize];
        line.refunded_quantity += quantity;
        line.refunded_amount += amount;
    }
    next.refunded += total;
    let reversals = reverse_components(&mut next, program)?;
    give_back_usage(&mut next, &reversals, &mut related.counters, false);
    give_back_progress(&mut next, total, &mut related.counters, false);

    // Everything is checked; from here on nothing fails.
    let origin = target.id;
    if let JournalState::Accrual(state) = &mut target.state {
        *state = next;
    }
    target.changed = true;
    outcome.refunded_amount = Some(program.money_currency.format(MinorUnits(total)));
    take_back(
        program,
        ledger,
        w,
        origin,
        &reversals,
        at,
        EntryKind::Refund,
        outcome,
    );
    Ok((
        origin,
        RefundState {
            amount: total,
            lines,
            components: reversals.iter().map(|r| (r.component, r.points)).collect(),
        },
    ))
}

/// The accrual state of a journal that may be refunded, or why it may not.
fn refundable<'a>(
    target: &'a mut JournalRecord,
    member: MemberId,
    original: &ExternalId,
) -> Result<&'a mut AccrualState, JournalError> {
    if target.member != member {
        return Err(JournalError::OriginalOfAnotherMember(original.to_string()));
    }
    if target.kind != RecordKind::Accrual {
        return Err(JournalError::NotRefundable(format!(
            "journal {original:?} is a {}; only accruals can be refunded",
            target.type_name
        )));
    }
    if target.status == RecordStatus::Cancelled {
        return Err(JournalError::NotRefundable(format!(
            "journal {original:?} was cancelled"
        )));
    }
    match &mut target.state {
        JournalState::Accrual(state) if state.amount > 0 => Ok(state),
        _ => Err(JournalError::NotRefundable(format!(
            "journal {original:?} has no amount to refund"
        ))),
    }
}

/// The money refunded per line (index, quantity, amount) and in total.
fn plan(
    state: &AccrualState,
    refund: &Refund,
    program: &Program,
) -> Result<(Vec<(u32, u32, i64)>, i64), JournalError> {
    let money = program.money_currency;
    let exceeds = |msg: String| JournalError::RefundExceedsOriginal(msg);
    let left_total = state.amount - state.refunded;
    if !refund.lines.is_empty() {
        if state.lines.is_empty() {
            return Err(JournalError::Invalid(
                "the original has no lines: refund it by amount".into(),
            ));
        }
        let mut lines = Vec::with_capacity(refund.lines.len());
        for rl in &refund.lines {
            let idx = state
                .lines
                .iter()
                .position(|l| l.line_id == rl.line_id)
                .ok_or_else(|| {
                    JournalError::Invalid(format!("line {:?} is not in the original", rl.line_id))
                })?;
            let line = &state.lines[idx];
            let left_quantity = line.quantity - line.refunded_quantity;
            let left_amount = line.amount - line.refunded_amount;
            let (quantity, amount) = match (rl.quantity, rl.amount) {
                (Some(q), _) if q > left_quantity => {
                    return Err(exceeds(format!(
                        "line {:?}: {q} refunded, {left_quantity} of {} left to refund",
                        rl.line_id, line.quantity
                    )));
                }
                (Some(q), _) if q == left_quantity => (q, left_amount),
                (Some(q), _) => {
                    let at = |n: u32| {
                        i128::from(line.amount) * i128::from(n) / i128::from(line.quantity)
                    };
                    let step = at(line.refunded_quantity + q) - at(line.refunded_quantity);
                    (q, (step as i64).min(left_amount))
                }
                (None, Some(a)) if a.0 > left_amount => {
                    return Err(exceeds(format!(
                        "line {:?}: {} refunded, {} left to refund",
                        rl.line_id,
                        money.format(a),
                        money.format(MinorUnits(left_amount))
                    )));
                }
                (None, Some(a)) if a.0 == left_amount => (left_quantity, a.0),
                (None, Some(a)) => (0, a.0),
                (None, None) => (left_quantity, left_amount),
            };
            if quantity == 0 && amount == 0 {
                return Err(exceeds(format!(
                    "line {:?} is already fully refunded",
                    rl.line_id
                )));
            }
            lines.push((idx as u32, quantity, amount));
        }
        let total = lines.iter().map(|l| l.2).sum();
        return Ok((lines, total));
    }
    let amount = match refund.amount {
        Some(a) if a.0 > left_total => {
            return Err(exceeds(format!(
                "{} refunded, {} left to refund",
                money.format(a),
                money.format(MinorUnits(left_total))
            )));
        }
        Some(a) => a.0,
        None if left_total == 0 => {
            return Err(exceeds("the original is already fully refunded".into()));
        }
        None => left_total,
    };
    if state.lines.is_empty() {
        return Ok((Vec::new(), amount));
    }
    // An amount against an order with lines: spread over the lines in proportion to what
    // is left of each.
    let weights: Vec<i64> = state
        .lines
        .iter()
        .map(|l| l.amount - l.refunded_amount)
        .collect();
    let lines = allocate(amount, &weights)
        .into_iter()
        .enumerate()
        .filter(|(_, a)| *a > 0)
        .map(|(i, a)| {
            let line = &state.lines[i];
            let quantity = if a == weights[i] {
                line.quantity - line.refunded_quantity
            } else {
                0
            };
            (i as u32, quantity, a)
        })
        .collect();
    Ok((lines, amount))
}

/// Points to take back from one component.
pub(super) struct Reversal {
    pub component: u32,
    pub currency: CurrencyIx,
    pub points: i64,
}

/// Advances each component's `reversed` to its target for the refunded shares in `state`
/// and returns the differences.
pub(super) fn reverse_components(
    state: &mut AccrualState,
    program: &Program,
) -> Result<Vec<Reversal>, JournalError> {
    let mut out = Vec::new();
    for (i, component) in state.components.iter_mut().enumerate() {
        let (refunded, total) = match component.line {
            Some(l) => {
                let line = state.lines.get(l as usize).ok_or_else(|| {
                    JournalError::NotRefundable(
                        "the original's stored lines are inconsistent".into(),
                    )
                })?;
                (line.refunded_amount, line.amount)
            }
            None => (state.refunded, state.amount),
        };
        let target = component.reversal_target(refunded, total);
        let points = target - component.reversed;
        if points <= 0 {
            continue;
        }
        let currency = program
            .currency_ix(component.currency.as_str())
            .ok_or_else(|| {
                JournalError::NotRefundable(format!(
                    "currency {:?} is no longer part of the program",
                    component.currency
                ))
            })?;
        component.reversed = target;
        out.push(Reversal {
            component: i as u32,
            currency,
            points,
        });
    }
    Ok(out)
}

/// Gives promotion limits back what reversals took back: each promotion's reversed
/// points, and its use once all of them are back (or, for a cancellation, everything).
pub(super) fn give_back_usage(
    state: &mut AccrualState,
    reversals: &[Reversal],
    counters: &mut Counters,
    everything: bool,
) {
    if state.usage.is_empty() {
        return;
    }
    for usage in &mut state.usage {
        let points = if everything {
            usage.points - usage.returned
        } else {
            reversals
                .iter()
                .filter(|r| {
                    state
                        .components
                        .get(r.component as usize)
                        .is_some_and(|c| c.source == usage.promotion.as_str())
                })
                .map(|r| r.points)
                .sum()
        };
        if points > 0 || everything {
            limits::give_back(counters, usage, points);
        }
    }
}

/// Takes back from cumulative promotions' progress what a refund of `refunded` minor units
/// (or, `everything`, a cancellation) undoes.
pub(super) fn give_back_progress(
    state: &mut AccrualState,
    refunded: i64,
    counters: &mut Counters,
    everything: bool,
) {
    let (amount, total) = (state.amount, state.refunded);
    let quantities: Vec<u32> = state.lines.iter().map(|l| l.refunded_quantity).collect();
    for contribution in &mut state.progress {
        contribution.give_back(counters, refunded, amount, total, &quantities, everything);
    }
}

/// Claws back reversals per currency and reports what was taken and what was not.
#[allow(clippy::too_many_arguments)]
pub(super) fn take_back(
    program: &Program,
    ledger: &mut MemberLedger,
    w: &mut JournalWriter,
    origin: JournalId,
    reversals: &[Reversal],
    at: DateTime<Utc>,
    kind: EntryKind,
    outcome: &mut Outcome,
) {
    let mut per_currency: Vec<(CurrencyIx, i64)> = Vec::new();
    for r in reversals {
        match per_currency.iter_mut().find(|(c, _)| *c == r.currency) {
            Some((_, p)) => *p += r.points,
            None => per_currency.push((r.currency, r.points)),
        }
    }
    for (currency, points) in per_currency {
        let result = ledger.claw_back(program, w, currency, points, origin, at, kind);
        let code = &program.currency(currency).code;
        Outcome::add(&mut outcome.reversed, code, result.taken);
        Outcome::add(&mut outcome.unrecovered, code, result.unrecovered);
        Outcome::add(&mut outcome.already_expired, code, result.already_expired);
    }
}
