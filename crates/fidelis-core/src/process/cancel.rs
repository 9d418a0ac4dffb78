//! Cancellation: reverses every ledger entry an earlier journal caused.
//!
//! - An accrual (or a positive adjustment): its points, less what refunds already took
//!   back, are taken back under the currency's return policy.
//! - A redemption, a negative adjustment or a refund: the points it took go back to the
//!   buckets they came from, with their original expiry; a cancelled refund also makes
//!   its share of the original refundable again.
//!
//! Cancelled right after the journal it cancels, a cancellation restores the exact
//! balances and buckets of before (a property test checks this).

use chrono::{DateTime, Utc};

use super::refund::{give_back_progress, give_back_usage, reverse_components, take_back};
use super::{JournalState, ProcessError, RecordKind, RecordStatus, Related};
use crate::ids::{ExternalId, JournalId};
use crate::journal::JournalError;
use crate::ledger::{Entry, EntryKind, JournalWriter, MemberLedger, pool_id};
use crate::outcome::Outcome;
use crate::program::Program;

pub(super) fn cancel(
    program: &Program,
    ledger: &mut MemberLedger,
    w: &mut JournalWriter,
    original: &ExternalId,
    related: &mut Related,
    now: DateTime<Utc>,
    outcome: &mut Outcome,
) -> Result<JournalId, ProcessError> {
    let target = related
        .target
        .as_mut()
        .ok_or_else(|| JournalError::UnknownOriginal(original.to_string()))?;
    if target.member != ledger.member {
        return Err(JournalError::OriginalOfAnotherMember(original.to_string()).into());
    }
    if target.status == RecordStatus::Cancelled {
        return Err(JournalError::AlreadyCancelled(original.to_string()).into());
    }
    let id = target.id;
    match target.kind {
        RecordKind::Cancellation
        | RecordKind::Settlement
        | RecordKind::Transfer
        | RecordKind::Merge
        | RecordKind::Reinstatement
        | RecordKind::Pool
        | RecordKind::Opening => {
            return Err(JournalError::NotCancellable(format!(
                "journal {original:?} is a {}; it cannot be cancelled",
                target.type_name
            ))
            .into());
        }
        RecordKind::Hold => {
            return Err(JournalError::NotCancellable(format!(
                "journal {original:?} is a hold: release it (or capture it) instead"
            ))
            .into());
        }
        RecordKind::Accrual => {
            let mut reversals = Vec::new();
            if let JournalState::Accrual(state) = &mut target.state {
                let mut next = state.clone();
                for line in &mut next.lines {
                    line.refunded_quantity = line.quantity;
                    line.refunded_amount = line.amount;
                }
                next.refunded = next.amount;
                reversals = reverse_components(&mut next, program)?;
                give_back_usage(&mut next, &reversals, &mut related.counters, true);
                give_back_progress(&mut next, 0, &mut related.counters, true);
                *state = next;
            }
            take_back(
                program,
                ledger,
                w,
                id,
                &reversals,
                now,
                EntryKind::Cancel,
                outcome,
            );
        }
        RecordKind::Adjustment if target.entries.iter().any(|e| is_own_credit(id)(&e)) => {
            let credited: Vec<(crate::ids::CurrencyIx, i64)> = target
                .entries
                .iter()
                .filter(|e| is_own_credit(id)(e))
                .map(|e| (e.currency, e.amount))
                .collect();
            for (currency, points) in credited {
                let result =
                    ledger.claw_back(program, w, currency, points, id, now, EntryKind::Cancel);
                let code = &program.currency(currency).code;
                Outcome::add(&mut outcome.reversed, code, result.taken);
                Outcome::add(&mut outcome.unrecovered, code, result.unrecovered);
                Outcome::add(&mut outcome.already_expired, code, result.already_expired);
            }
        }
        RecordKind::Refund => {
            let JournalState::Refund(refund) = &target.state else {
                return Err(ProcessError::Internal(format!(
                    "refund {original:?} has no stored state"
                )));
            };
            let refunded = related.target_original.as_mut().ok_or_else(|| {
                ProcessError::Internal(format!(
                    "the journal refund {original:?} refunded is not loaded"
                ))
            })?;
            if refunded.status == RecordStatus::Cancelled {
                return Err(JournalError::NotCancellable(format!(
                    "the journal refund {original:?} refunded was cancelled since; cancelling the refund would give its points back twice"
                ))
                .into());
            }
            let JournalState::Accrual(state) = &mut refunded.state else {
                return Err(ProcessError::Internal(format!(
                    "the journal refund {original:?} refunded has no accrual state"
                )));
            };
            check_loaded(ledger, &target.entries)?;
            let mut next = state.clone();
            for (idx, quantity, amount) in &refund.lines {
                let line = next.lines.get_mut(*idx as usize).ok_or_else(|| {
                    ProcessError::Internal("refund state names a missing line".into())
                })?;
                line.refunded_quantity -= quantity;
                line.refunded_amount -= amount;
            }
            next.refunded -= refund.amount;
            for (component, points) in &refund.components {
                let c = next
                    .components
                    .get_mut(*component as usize)
                    .ok_or_else(|| {
                        ProcessError::Internal("refund state names a missing component".into())
                    })?;
                c.reversed -= points;
            }
            restore_debits(
                program,
                ledger,
                w,
                &target.entries,
                now,
                outcome,
                EntryKind::Cancel,
            )?;
            *state = next;
            refunded.changed = true;
        }
        RecordKind::Redemption | RecordKind::Adjustment => {
            check_loaded(ledger, &target.entries)?;
            restore_debits(
                program,
                ledger,
                w,
                &target.entries,
                now,
                outcome,
                EntryKind::Cancel,
            )?;
        }
    }
    target.status = RecordStatus::Cancelled;
    target.changed = true;
    Ok(id)
}

/// The credit a positive adjustment wrote (to a bucket of its own, or to the pool).
fn is_own_credit(journal: JournalId) -> impl Fn(&&Entry) -> bool {
    move |e: &&Entry| e.amount > 0 && e.kind == EntryKind::Adjust && e.key.journal == journal
}

/// Refuses before changing anything if a bucket to give points back to is not loaded.
pub(super) fn check_loaded(ledger: &MemberLedger, entries: &[Entry]) -> Result<(), ProcessError> {
    for bucket in entries
        .iter()
        .filter(|e| e.amount < 0)
        .filter(|e| e.bucket != Some(pool_id(e.currency)))
        .filter_map(|e| e.bucket)
    {
        if ledger.bucket_index(bucket).is_none() {
            return Err(ProcessError::NeedsBuckets);
        }
    }
    Ok(())
}

/// Gives back what the debit entries among `entries` took — a cancelled journal's
/// redemptions, refunds and negative adjustments, or a released hold's held points —
/// writing entries of `kind` (`cancel`, or `hold` for a release).
pub(super) fn restore_debits(
    program: &Program,
    ledger: &mut MemberLedger,
    w: &mut JournalWriter,
    entries: &[Entry],
    now: DateTime<Utc>,
    outcome: &mut Outcome,
    kind: EntryKind,
) -> Result<(), ProcessError> {
    // Arrears first: points given back to a bucket while arrears are still open would
    // pay those arrears (as new points do), and the arrears this journal created would
    // then come back a second time as a fresh bucket.
    let mut debits: Vec<&Entry> = entries
        .iter()
        .filter(|e| {
            e.amount < 0
                && matches!(
                    e.kind,
                    EntryKind::Redeem | EntryKind::Refund | EntryKind::Adjust | EntryKind::Hold
                )
        })
        .collect();
    debits.sort_by_key(|e| e.bucket.is_some());
    for entry in debits {
        let points = ledger
            .restore(program, w, entry, now, kind)
            .map_err(ProcessError::Internal)?;
        Outcome::add(
            &mut outcome.restored,
            &program.currency(entry.currency).code,
            points,
        );
    }
    Ok(())
}
