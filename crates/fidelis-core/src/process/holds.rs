//! Pay with points: a hold reserves points for an order; a capture turns them into a
//! redemption, a release gives them back to the buckets they came from.
//!
//! A hold is a journal of its own (`hold:ORDER`): its `hold` entries take the points from
//! the buckets as a redemption would, earliest expiry first, so they are not spendable
//! elsewhere while held. The capture (`capture:ORDER`) writes, per held entry, the points
//! back to the hold and out as a redemption on the same bucket at the same instant: the
//! balance does not move and every point stays traceable to its bucket. The release
//! (`release:ORDER`) restores each held entry to its bucket with its original expiry, as a
//! cancelled redemption does. Because every step's external id is derived from the order,
//! each happens at most once per order, whatever is retried.

use chrono::{DateTime, Utc};

use super::cancel::{check_loaded, restore_debits};
use super::{HoldEnd, JournalState, ProcessError, RecordKind, RecordStatus, Related};
use crate::ids::{ExternalId, JournalId};
use crate::journal::{HOLD_PREFIX, JournalError};
use crate::ledger::{EntryKind, JournalWriter, MemberLedger};
use crate::outcome::Outcome;
use crate::program::Program;

/// The order a hold's external id names (`hold:A-1` is order `A-1`).
fn order(original: &ExternalId) -> String {
    let id = original.as_str();
    id.strip_prefix(HOLD_PREFIX).unwrap_or(id).to_owned()
}

/// The open hold `original` names, checked for this member.
fn open_hold<'a>(
    ledger: &MemberLedger,
    original: &ExternalId,
    related: &'a mut Related,
) -> Result<&'a mut super::JournalRecord, ProcessError> {
    let order = order(original);
    let target = related
        .target
        .as_mut()
        .filter(|t| t.kind == RecordKind::Hold)
        .ok_or_else(|| JournalError::UnknownHold(order.clone()))?;
    if target.member != ledger.member {
        return Err(JournalError::OriginalOfAnotherMember(original.to_string()).into());
    }
    let ended = match &target.state {
        JournalState::Hold(h) => h.ended,
        _ => {
            return Err(ProcessError::Internal(format!(
                "hold {original:?} has no hold state"
            )));
        }
    };
    match ended {
        None => Ok(target),
        Some(HoldEnd::Captured) => Err(JournalError::HoldCaptured(order).into()),
        Some(HoldEnd::Released) => Err(JournalError::HoldReleased(order).into()),
    }
}

fn end(target: &mut super::JournalRecord, how: HoldEnd) {
    if let JournalState::Hold(h) = &mut target.state {
        h.ended = Some(how);
    }
    if how == HoldEnd::Released {
        target.status = RecordStatus::Cancelled;
    }
    target.changed = true;
}

/// Captures the open hold `original` at `now`, before it expires.
pub(super) fn capture(
    ledger: &mut MemberLedger,
    w: &mut JournalWriter,
    original: &ExternalId,
    related: &mut Related,
    now: DateTime<Utc>,
) -> Result<JournalId, ProcessError> {
    let target = open_hold(ledger, original, related)?;
    if let Some(until) = target.open_hold_until()
        && now >= until
    {
        return Err(JournalError::HoldExpired {
            order: order(original),
            expired_at: until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
        .into());
    }
    ledger.capture(w, &target.entries);
    let id = target.id;
    end(target, HoldEnd::Captured);
    Ok(id)
}

/// A released redemption whose points a hold reserved while it was held for review:
/// the hold is captured (it never expires, see `fidelis_core::journal::review_order`), and
/// what it held is what the redemption spends — checked, so a hold of another amount is
/// an internal error rather than a silent difference.
#[allow(clippy::too_many_arguments)]
pub(super) fn capture_reserved(
    program: &Program,
    ledger: &mut MemberLedger,
    w: &mut JournalWriter,
    hold: &ExternalId,
    currency: crate::ids::CurrencyIx,
    points: i64,
    related: &mut Related,
    outcome: &mut Outcome,
) -> Result<JournalId, ProcessError> {
    let target = open_hold(ledger, hold, related)?;
    let held: i64 = target
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Hold && e.amount < 0 && e.currency == currency)
        .map(|e| -e.amount)
        .sum();
    if held != points {
        return Err(ProcessError::Internal(format!(
            "hold {hold} reserved {held} points for a redemption of {points}"
        )));
    }
    ledger.capture(w, &target.entries);
    Outcome::add(
        &mut outcome.debited,
        &program.currency(currency).code,
        points,
    );
    let id = target.id;
    end(target, HoldEnd::Captured);
    Ok(id)
}

/// Releases the open hold `original`: its points go back to their buckets.
pub(super) fn release(
    program: &Program,
    ledger: &mut MemberLedger,
    w: &mut JournalWriter,
    original: &ExternalId,
    related: &mut Related,
    now: DateTime<Utc>,
    outcome: &mut Outcome,
) -> Result<JournalId, ProcessError> {
    let target = open_hold(ledger, original, related)?;
    check_loaded(ledger, &target.entries)?;
    restore_debits(
        program,
        ledger,
        w,
        &target.entries,
        now,
        outcome,
        EntryKind::Hold,
    )?;
    let id = target.id;
    end(target, HoldEnd::Released);
    Ok(id)
}
