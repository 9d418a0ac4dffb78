//! Processing a journal against a member's ledger: a pure function of the program, the
//! ledger, the journals it refers to, and the instant of processing.
//!
//! The store's part (the "imperative shell") is to load what [`process`] needs, call it,
//! and write what it returns in one database transaction. Nothing here reads a clock, a
//! file or a socket.

mod accrual;
mod cancel;
mod holds;
mod record;
mod refund;

use chrono::{DateTime, Duration, Utc};

pub use record::*;

pub(crate) use accrual::allocate;

use crate::ids::{Code, CurrencyIx, JournalId};
use crate::journal::{Journal, JournalBody, JournalError};
use crate::ledger::{EntryKind, JournalWriter, MemberLedger, MemberStatus};
use crate::outcome::{Balance, Outcome};
use crate::program::Program;

/// How far in the future a journal's `occurred_at` may lie (clock skew between systems).
pub const FUTURE_TOLERANCE: Duration = Duration::minutes(5);

/// Journal numbers reserved by the store for one call of [`process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalIds {
    /// The journal itself.
    pub main: JournalId,
    /// The settlement journal, used only if expiries or releases are due.
    pub settlement: JournalId,
}

/// The earlier journals a refund or cancellation refers to, loaded by the store.
#[derive(Debug, Default)]
pub struct Related {
    /// The journal named by `original_external_id`.
    pub target: Option<JournalRecord>,
    /// When the target is a refund: the journal it refunded.
    pub target_original: Option<JournalRecord>,
    /// A dry run: the outcome lists every promotion with the reason it did or did not
    /// apply (otherwise only those that applied or failed to evaluate).
    pub explain: bool,
    /// The caller reads only what the journal did to the ledger and the outcome's awards
    /// (a simulation): the outcome lists no promotion results and no balances.
    pub brief: bool,
    /// The promotion limit counters of the batch (loaded by the store under locks);
    /// awards use them and reversals give back to them.
    pub counters: crate::promotions::Counters,
    /// For an accrual at a prepaid partner that refuses what its pack cannot cover: the
    /// pack as it stands (read by the store under the partner's lock).
    pub pack: Option<PackGuard>,
}

/// A prepaid partner's pack an accrual must fit in: `left` points of `currency`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackGuard {
    pub partner: String,
    pub currency: crate::ids::Code,
    pub left: i64,
}

/// What processing produced, for the store to write.
#[derive(Debug)]
pub struct Processed {
    pub outcome: Outcome,
    pub record: JournalRecord,
    /// Expiries and releases settled before (and after) the journal.
    pub settlement: Option<JournalRecord>,
}

/// Why a journal was not processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessError {
    /// Refused; nothing changed.
    #[error(transparent)]
    Refused(#[from] JournalError),
    /// The store must load the member's open buckets and call again.
    #[error("the member's buckets must be loaded")]
    NeedsBuckets,
    /// A broken invariant of the stored data; nothing changed.
    #[error("internal: {0}")]
    Internal(String),
}

/// Whether processing this journal at `now` touches existing buckets (and so needs them
/// loaded), beside any settlement due: debits, reversals, and credits whose points are
/// due already when they arrive (a journal imported after its points' return window or
/// expiry), since settling them settles the whole ledger.
pub fn needs_buckets(program: &Program, journal: &Journal, now: DateTime<Utc>) -> bool {
    match &journal.body {
        JournalBody::Accrual(_) => credits_due(program, journal.occurred_at, now),
        JournalBody::Adjustment { points, .. } => {
            *points < 0 || credits_due(program, journal.occurred_at, now)
        }
        // A capture moves no bucket: it pairs each held entry with a redemption.
        JournalBody::Capture { .. } => false,
        _ => true,
    }
}

/// Whether points of some currency credited at `at` would be released or expired by `now`.
fn credits_due(program: &Program, at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    if at >= now {
        return false;
    }
    let tz = program.time_zone;
    program.currencies.iter().any(|c| {
        !c.is_fungible()
            && ((c.pending_days > 0 && crate::calendar::add_days(tz, at, c.pending_days) <= now)
                || c.expiry.bucket_expiry(tz, at).is_some_and(|e| e <= now)
                || c.expiry
                    .inactivity_deadline(tz, at)
                    .is_some_and(|d| d <= now))
    })
}

/// Refuses an accrual dated more than the program's `days_before_enrolment` before the
/// member's enrolment, by local dates (a purchase on the day of enrolment earns, whatever
/// the hour).
fn before_enrolment(
    program: &Program,
    occurred_at: DateTime<Utc>,
    enrolled_at: DateTime<Utc>,
) -> Result<(), JournalError> {
    let tz = program.time_zone;
    let day = occurred_at.with_timezone(&tz).date_naive();
    let enrolled = enrolled_at.with_timezone(&tz).date_naive();
    let earliest = enrolled - chrono::Duration::days(i64::from(program.days_before_enrolment));
    if day < earliest {
        return Err(JournalError::BeforeEnrolment(format!(
            "the member enrolled on {enrolled}; this program's purchases and activities earn from {earliest} on (earning.days_before_enrolment is {})",
            program.days_before_enrolment
        )));
    }
    Ok(())
}

/// Processes `journal` for the member whose ledger this is, as of `now`.
///
/// On success the ledger, its buckets and the related records hold the new state, and the
/// returned records hold every entry written. On error nothing is changed.
pub fn process(
    program: &Program,
    ledger: &mut MemberLedger,
    journal: &Journal,
    related: &mut Related,
    ids: JournalIds,
    now: DateTime<Utc>,
) -> Result<Processed, ProcessError> {
    match ledger.status {
        MemberStatus::Active => {}
        // Ending a hold is not the member's act: the points it reserved go back even to a
        // suspended member (an agent rejecting a held redemption, a hold that expired).
        MemberStatus::Suspended if matches!(journal.body, JournalBody::Release { .. }) => {}
        MemberStatus::Suspended => return Err(JournalError::MemberSuspended.into()),
        MemberStatus::Closed => return Err(JournalError::MemberClosed.into()),
    }
    if journal.occurred_at > now + FUTURE_TOLERANCE {
        return Err(JournalError::FutureDated.into());
    }
    if let (JournalBody::Accrual(_), Some(enrolled_at)) = (&journal.body, ledger.enrolled_at) {
        before_enrolment(program, journal.occurred_at, enrolled_at)?;
    }
    let due = ledger.is_due(now);
    let touches_buckets = needs_buckets(program, journal, now);
    if (due || touches_buckets) && !ledger.buckets_loaded {
        return Err(ProcessError::NeedsBuckets);
    }
    // Settling and the operations below change the ledger step by step; a refusal after
    // the first step restores this copy. The hot path (an accrual with nothing due) has
    // nothing to undo and takes no copy.
    // An accrual a partner's pack may refuse is checked after it is computed: it takes
    // the copy too.
    let guarded = related.pack.is_some() && matches!(journal.body, JournalBody::Accrual(_));
    let snapshot = (due || touches_buckets || guarded)
        .then(|| (ledger.accounts.clone(), ledger.buckets.clone()));
    let granted_before = ledger.granted.len();
    related.counters.begin();
    let mut settle = JournalWriter::new(ids.settlement);
    let mut outcome = Outcome {
        status: "processed".into(),
        external_id: Some(journal.external_id.clone()),
        journal_type: Some(journal.body.type_code()),
        ..Outcome::default()
    };
    // Tiers change before the journal can fail only when an assessment is due.
    let tiers_before = if due { ledger.tiers.clone() } else { None };
    if due {
        settle_all(program, ledger, &mut settle, &mut outcome, now);
    }
    let mut w = JournalWriter::new(ids.main);
    let applied =
        apply(program, ledger, journal, related, &mut w, &mut outcome, now).and_then(|done| {
            match &related.pack {
                Some(pack) if guarded => {
                    let needed: i64 = outcome
                        .awards
                        .iter()
                        .filter(|a| a.currency == pack.currency)
                        .map(|a| a.points)
                        .sum();
                    if needed > pack.left {
                        Err(JournalError::PartnerPackEmpty {
                            partner: pack.partner.clone(),
                            left: pack.left,
                            needed,
                        }
                        .into())
                    } else {
                        Ok(done)
                    }
                }
                _ => Ok(done),
            }
        });
    match applied {
        Ok(done) => {
            if ledger.tiers.is_some() {
                let mut c = contribution(journal, &done, &w, related);
                c.balances = ledger.accounts.iter().map(|a| a.available).collect();
                if let Some(tiers) = ledger.tiers.as_mut() {
                    let changes = tiers.contribute(program, &c, now);
                    outcome.tier_changes.extend(changes);
                    let changes = tiers.follow_balances(program, &c.balances, now);
                    outcome.tier_changes.extend(changes);
                }
            }
            if ledger.is_due(now) {
                // Points credited with a past date may already be due (a journal imported
                // after its return window, or after its points' expiry).
                settle_all(program, ledger, &mut settle, &mut outcome, now);
            }
            if !related.brief {
                outcome.balances = balances(program, ledger);
            }
            let record = JournalRecord {
                id: ids.main,
                external_id: Some(journal.external_id.clone()),
                member: ledger.member,
                kind: done.kind,
                type_name: journal.body.type_code(),
                occurred_at: journal.occurred_at,
                recorded_at: now,
                status: RecordStatus::Processed,
                original: done.original,
                state: done.state,
                entries: w.entries,
                changed: false,
            };
            let settlement =
                (!settle.entries.is_empty()).then(|| settlement_record(ledger, settle, now));
            related.counters.commit();
            Ok(Processed {
                outcome,
                record,
                settlement,
            })
        }
        Err(e) => {
            if let Some((accounts, buckets)) = snapshot {
                ledger.accounts = accounts;
                ledger.buckets = buckets;
            }
            if due {
                ledger.tiers = tiers_before;
            }
            ledger.granted.truncate(granted_before);
            related.counters.rollback();
            Err(e)
        }
    }
}

/// Settles a ledger as of `as_of` for the scheduled jobs: expiries and releases due, and
/// tier assessments. The ledger's open buckets must be loaded. Returns the settlement
/// journal, if any points moved, and the tier changes; the accounts' next transitions are
/// recomputed either way.
pub fn settle(
    program: &Program,
    ledger: &mut MemberLedger,
    id: JournalId,
    as_of: DateTime<Utc>,
) -> Result<(Option<JournalRecord>, Vec<crate::tiers::TierChange>), ProcessError> {
    if !ledger.buckets_loaded {
        return Err(ProcessError::NeedsBuckets);
    }
    let mut w = JournalWriter::new(id);
    let mut outcome = Outcome::default();
    settle_all(program, ledger, &mut w, &mut outcome, as_of);
    let record = (!w.entries.is_empty()).then(|| settlement_record(ledger, w, as_of));
    Ok((record, outcome.tier_changes))
}

/// Settles expiries and releases due, then assesses the tiers whose period ended: their
/// qualifying balances are reset at the period end, in the settlement journal.
fn settle_all(
    program: &Program,
    ledger: &mut MemberLedger,
    w: &mut JournalWriter,
    outcome: &mut Outcome,
    now: DateTime<Utc>,
) {
    let first = w.entries.len();
    let settled = ledger.settle(program, w, now);
    note_settled(program, outcome, &settled);
    if ledger.tiers.is_none() {
        return;
    }
    // Qualifying points count toward tiers once available: pending points released now
    // count in the period they became available, and may lift the tier there and then.
    if !settled.released.is_empty() {
        let released: Vec<(CurrencyIx, i64, DateTime<Utc>)> = w.entries[first..]
            .iter()
            .filter(|e| e.kind == EntryKind::Release && e.pool == crate::ledger::Pool::Available)
            .map(|e| (e.currency, e.amount, e.effective_at))
            .collect();
        for (currency, points, at) in released {
            let c = crate::tiers::Contribution {
                points: vec![(currency, points)],
                spend: 0,
                activities: 0,
                at,
                balances: ledger.accounts.iter().map(|a| a.available).collect(),
            };
            if let Some(tiers) = ledger.tiers.as_mut() {
                outcome
                    .tier_changes
                    .extend(tiers.contribute(program, &c, now));
            }
        }
    }
    if !settled.is_empty() {
        // Expiries and releases move balances: balance-measured tiers follow.
        let balances: Vec<i64> = ledger.accounts.iter().map(|a| a.available).collect();
        if let Some(tiers) = ledger.tiers.as_mut() {
            outcome
                .tier_changes
                .extend(tiers.follow_balances(program, &balances, now));
        }
    }
    let Some(tiers) = ledger.tiers.as_mut() else {
        return;
    };
    if !tiers.is_due(now) {
        return;
    }
    let balances: Vec<i64> = ledger.accounts.iter().map(|a| a.available).collect();
    let Some(tiers) = ledger.tiers.as_mut() else {
        return;
    };
    let assessed = tiers.assess(program, &balances, now);
    outcome.tier_changes.extend(assessed.changes);
    for (currency, at) in assessed.resets {
        let balance = ledger.account(currency).available;
        if balance <= 0 {
            continue;
        }
        // Everything valid at the period end; points that expired are gone already.
        let points = match ledger.debit(program, w, currency, balance, at, EntryKind::Reset) {
            Ok(()) => balance,
            Err(spendable) if spendable > 0 => {
                let _ = ledger.debit(program, w, currency, spendable, at, EntryKind::Reset);
                spendable
            }
            Err(_) => 0,
        };
        if points > 0 {
            Outcome::add(&mut outcome.reset, &program.currency(currency).code, points);
        }
    }
}

/// What a journal adds to the tier measures, counted in the period of the activity it
/// concerns (a refund in the period of the purchase it refunds).
fn contribution(
    journal: &Journal,
    done: &Applied,
    w: &JournalWriter,
    related: &Related,
) -> crate::tiers::Contribution {
    let mut points: Vec<(CurrencyIx, i64)> = Vec::new();
    // Only available points count toward tiers: pending ones count when released (see
    // `settle_all`), and taking back pending points takes back nothing counted.
    for e in w
        .entries
        .iter()
        .filter(|e| e.pool == crate::ledger::Pool::Available)
    {
        match points.iter_mut().find(|(c, _)| *c == e.currency) {
            Some((_, p)) => *p += e.amount,
            None => points.push((e.currency, e.amount)),
        }
    }
    let target = related.target.as_ref();
    let mut c = crate::tiers::Contribution {
        balances: Vec::new(),
        points,
        spend: 0,
        activities: 0,
        at: journal.occurred_at,
    };
    match (&journal.body, &done.state) {
        (JournalBody::Accrual(_), JournalState::Accrual(state)) => {
            c.spend = state.amount;
            c.activities = 1;
        }
        (JournalBody::Refund(_), JournalState::Refund(state)) => {
            c.spend = -state.amount;
            if let Some(t) = target {
                c.at = t.occurred_at;
            }
        }
        (JournalBody::Cancellation { .. }, _) => {
            if let Some(t) = target {
                c.at = t.occurred_at;
                match &t.state {
                    JournalState::Accrual(s) => {
                        c.spend = -(s.amount - s.refunded);
                        c.activities = -1;
                    }
                    JournalState::Refund(s) => {
                        c.spend = s.amount;
                        if let Some(o) = related.target_original.as_ref() {
                            c.at = o.occurred_at;
                        }
                    }
                    JournalState::None | JournalState::Hold(_) => {}
                }
            }
        }
        (JournalBody::Adjustment { .. }, _) => {}
        _ => c.points.clear(),
    }
    c
}

fn settlement_record(ledger: &MemberLedger, w: JournalWriter, now: DateTime<Utc>) -> JournalRecord {
    JournalRecord {
        id: w.journal,
        external_id: None,
        member: ledger.member,
        kind: RecordKind::Settlement,
        type_name: Code::parse("settlement").expect("a valid code"),
        occurred_at: now,
        recorded_at: now,
        status: RecordStatus::Processed,
        original: None,
        state: JournalState::None,
        entries: w.entries,
        changed: false,
    }
}

fn note_settled(program: &Program, outcome: &mut Outcome, settled: &crate::ledger::Settled) {
    for (currency, points) in &settled.expired {
        Outcome::add(
            &mut outcome.expired,
            &program.currency(*currency).code,
            *points,
        );
    }
    for (currency, points) in &settled.released {
        Outcome::add(
            &mut outcome.released,
            &program.currency(*currency).code,
            *points,
        );
    }
}

/// The balances of every currency of the program.
pub fn balances(program: &Program, ledger: &MemberLedger) -> Vec<Balance> {
    program
        .currency_ixs()
        .map(|(ix, c)| {
            let account = ledger.account(ix);
            Balance {
                currency: c.code.clone(),
                available: account.available,
                pending: account.pending,
            }
        })
        .collect()
}

/// What an applied journal is, for its record.
struct Applied {
    kind: RecordKind,
    original: Option<JournalId>,
    state: JournalState,
}

fn apply(
    program: &Program,
    ledger: &mut MemberLedger,
    journal: &Journal,
    related: &mut Related,
    w: &mut JournalWriter,
    outcome: &mut Outcome,
    now: DateTime<Utc>,
) -> Result<Applied, ProcessError> {
    let at = journal.occurred_at;
    match &journal.body {
        JournalBody::Accrual(accrual) => {
            let state = accrual::earn(
                program,
                ledger,
                w,
                accrual,
                at,
                outcome,
                related.explain,
                related.brief,
                &mut related.counters,
                journal.member.as_str(),
            );
            Ok(Applied {
                kind: RecordKind::Accrual,
                original: None,
                state: JournalState::Accrual(state),
            })
        }
        JournalBody::Redemption {
            currency,
            points,
            reserved: Some(hold),
            ..
        } => {
            let target = holds::capture_reserved(
                program, ledger, w, hold, *currency, *points, related, outcome,
            )?;
            ledger.note_activity(program, at);
            Ok(Applied {
                kind: RecordKind::Redemption,
                original: Some(target),
                state: JournalState::None,
            })
        }
        JournalBody::Redemption {
            currency, points, ..
        } => {
            debit(
                program,
                ledger,
                w,
                *currency,
                *points,
                at,
                EntryKind::Redeem,
                outcome,
            )?;
            ledger.note_activity(program, at);
            Ok(Applied {
                kind: RecordKind::Redemption,
                original: None,
                state: JournalState::None,
            })
        }
        JournalBody::Adjustment {
            currency, points, ..
        } => {
            if *points > 0 {
                // Available at once: a goodwill adjustment has no return window.
                ledger.credit_now(program, w, *currency, *points, at, EntryKind::Adjust);
                outcome.awards.push(crate::outcome::Award {
                    source: "adjustment".into(),
                    currency: program.currency(*currency).code.clone(),
                    points: *points,
                });
            } else {
                debit(
                    program,
                    ledger,
                    w,
                    *currency,
                    -points,
                    at,
                    EntryKind::Adjust,
                    outcome,
                )?;
            }
            Ok(Applied {
                kind: RecordKind::Adjustment,
                original: None,
                state: JournalState::None,
            })
        }
        JournalBody::Refund(refund) => {
            let (original, state) =
                refund::refund(program, ledger, w, refund, related, at, outcome)?;
            Ok(Applied {
                kind: RecordKind::Refund,
                original: Some(original),
                state: JournalState::Refund(state),
            })
        }
        JournalBody::Cancellation { original } => {
            let target = cancel::cancel(program, ledger, w, original, related, now, outcome)?;
            Ok(Applied {
                kind: RecordKind::Cancellation,
                original: Some(target),
                state: JournalState::None,
            })
        }
        JournalBody::Hold {
            currency,
            points,
            until,
            ..
        } => {
            debit(
                program,
                ledger,
                w,
                *currency,
                *points,
                at,
                EntryKind::Hold,
                outcome,
            )?;
            Ok(Applied {
                kind: RecordKind::Hold,
                original: None,
                state: JournalState::Hold(HoldState {
                    until: *until,
                    ended: None,
                }),
            })
        }
        JournalBody::Capture { original } => {
            let target = holds::capture(ledger, w, original, related, now)?;
            ledger.note_activity(program, at);
            Ok(Applied {
                // A redemption from here on: cancelling it gives the points back.
                kind: RecordKind::Redemption,
                original: Some(target),
                state: JournalState::None,
            })
        }
        JournalBody::Release { original } => {
            let target = holds::release(program, ledger, w, original, related, now, outcome)?;
            Ok(Applied {
                kind: RecordKind::Cancellation,
                original: Some(target),
                state: JournalState::None,
            })
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn debit(
    program: &Program,
    ledger: &mut MemberLedger,
    w: &mut JournalWriter,
    currency: CurrencyIx,
    points: i64,
    at: DateTime<Utc>,
    kind: EntryKind,
    outcome: &mut Outcome,
) -> Result<(), ProcessError> {
    let code = &program.currency(currency).code;
    ledger
        .debit(program, w, currency, points, at, kind)
        .map_err(|spendable| JournalError::InsufficientPoints {
            currency: code.to_string(),
            spendable,
            requested: points,
            pending: ledger.account(currency).pending,
            releases_at: ledger
                .buckets
                .iter()
                .filter(|b| b.currency == currency && b.pending && b.remaining > 0)
                .map(|b| b.available_at)
                .min(),
        })?;
    Outcome::add(&mut outcome.debited, code, points);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(days: Option<u32>) -> Program {
        let mut doc: crate::program::ProgramDocument = serde_json::from_value(serde_json::json!({
            "code": "cafe", "name": "Café", "time_zone": "Europe/Berlin", "money_currency": "EUR",
            "currencies": [{"code": "stars", "name": "Stars", "kind": "redeemable", "expiry": {"policy": "never"}}],
            "earning": {"base": [{"currency": "stars", "rate": "1"}]}
        }))
        .expect("a document");
        doc.earning.days_before_enrolment = days;
        Program::compile(&doc, None).expect("compiles")
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("an instant")
            .with_timezone(&Utc)
    }

    #[test]
    fn purchases_before_enrolment_are_refused_by_local_date() {
        // Enrolled 10 March, 00:30 in Berlin (9 March, 23:30 UTC).
        let enrolled = t("2026-03-09T23:30:00Z");
        let strict = program(None);
        // Earlier the same local day: earns.
        assert!(before_enrolment(&strict, t("2026-03-09T23:10:00Z"), enrolled).is_ok());
        // The local day before: refused, saying from when purchases earn.
        let refused = before_enrolment(&strict, t("2026-03-09T22:50:00Z"), enrolled)
            .expect_err("the day before enrolment");
        assert_eq!(refused.code(), "before_enrolment");
        assert!(refused.to_string().contains("from 2026-03-10"), "{refused}");
        // A program that allows a week.
        let week = program(Some(7));
        assert!(before_enrolment(&week, t("2026-03-03T10:00:00Z"), enrolled).is_ok());
        assert!(before_enrolment(&week, t("2026-03-02T10:00:00Z"), enrolled).is_err());
    }
}
