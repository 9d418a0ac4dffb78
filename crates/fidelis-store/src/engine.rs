//! The imperative shell around the core: one database transaction per batch of journals.
//!
//! For a batch: resolve and lock its members (sorted, so batches never deadlock), find
//! which journals were posted before (replays) and what refunds and cancellations refer
//! to, load accounts (and buckets only for members whose journals touch existing points),
//! call [`fidelis_core::process::process`] journal by journal, then write every new
//! journal, entry, bucket and account in bulk. A realtime journal is a batch of one.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use fidelis_core::ids::{BucketId, CurrencyIx, EntryKey, JournalId, MemberId};
use fidelis_core::journal::{Journal, JournalBody, JournalDocument, JournalError};
use fidelis_core::ledger::{Account, Bucket, Entry, EntryKind, MemberLedger, MemberStatus, Pool};
use fidelis_core::outcome::Outcome;
use fidelis_core::process::{
    self, JournalIds, JournalRecord, JournalState, ProcessError, RecordKind, RecordStatus, Related,
};
use fidelis_core::program::Program;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::error::{Result, StoreError};
use crate::rows::*;

/// A program as stored: its database id and revision with the compiled definition.
#[derive(Debug, Clone)]
pub struct LoadedProgram {
    pub id: i64,
    pub revision: i32,
    pub program: Program,
}

/// A journal that was applied, now or before.
#[derive(Debug, Clone, PartialEq)]
pub struct Posted {
    pub outcome: Outcome,
    /// The journal had been posted before: this is the first outcome, and nothing changed.
    pub replayed: bool,
}

/// The result of one journal of a batch.
pub type JournalResult = std::result::Result<Posted, JournalError>;

/// A member's balances as the batch holds them (none when the member is not loaded).
fn member_balances(
    ledgers: &FxHashMap<i64, MemberLedger>,
    program: &Program,
    member_id: i64,
) -> Vec<fidelis_core::outcome::Balance> {
    ledgers
        .get(&member_id)
        .map(|l| process::balances(program, l))
        .unwrap_or_default()
}

/// What fraud screening says of a journal in a batch.
enum Screened {
    /// Not held: processed as usual.
    Pass,
    /// A held journal's retry: its answer (boxed: an outcome is large, and rare here).
    Answer(Box<JournalResult>),
    /// Held now by this rule.
    Hold(fidelis_core::fraud::Verdict),
}

/// A journal with its canonical document (what the store keeps and compares replays
/// with), prepared before the batch's transaction: an import prepares them on its reader
/// thread, off the writers' critical path.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub journal: Journal,
    pub document: String,
    /// Posted by the group's own redemption route, which applied the group's `redeem`
    /// rule: the only journals a group (household) takes besides its members' shares.
    pub(crate) for_group: bool,
    /// The client left `occurred_at` out and the server filled in its clock: a retry of
    /// the same request carries another time, so idempotency compares everything else.
    pub(crate) time_filled: bool,
    /// Posted through the API: the program's fraud rules screen it (see
    /// [`crate::fraud`]).
    pub(crate) screened: bool,
}

impl Prepared {
    pub fn new(journal: Journal, program: &Program) -> Result<Self> {
        let document = serde_json::to_string(&journal.canonical(program))?;
        Ok(Self {
            journal,
            document,
            for_group: false,
            time_filled: false,
            screened: false,
        })
    }

    /// Marks the journal as posted through the API: the program's fraud rules screen it.
    #[must_use]
    pub fn screened(mut self) -> Self {
        self.screened = true;
        self
    }

    /// Marks `occurred_at` as the server's (the client sent none): a retry of the same
    /// request replays the first outcome whatever time each attempt was given.
    #[must_use]
    pub fn with_time_filled(mut self) -> Self {
        self.time_filled = true;
        self
    }

    /// Whether `other` asks for the same as this journal: equal, or — when the server
    /// filled this one's time — equal but for `occurred_at`.
    fn same_request(&self, other: &Journal) -> bool {
        if self.journal == *other {
            return true;
        }
        let mut mine = self.journal.clone();
        if self.time_filled {
            mine.occurred_at = other.occurred_at;
        }
        // Refunds kept no store or channel before they were recorded: a retry of one
        // stored without them still replays.
        if let (JournalBody::Refund(m), JournalBody::Refund(o)) = (&mut mine.body, &other.body)
            && o.store.is_none()
            && o.channel.is_none()
        {
            m.store = None;
            m.channel = None;
        }
        mine == *other
    }
}

/// Import progress to save with a batch: where the partition stands, the lines of its
/// journals, and rejections found before the store saw them (lines that did not parse).
#[derive(Debug, Clone, Default)]
pub struct ImportProgress {
    pub run_id: i64,
    /// The partition (worker) whose progress this is.
    pub partition: u32,
    /// Where the next batch starts in the file.
    pub byte_offset: u64,
    /// The last line the batch covers.
    pub line: u64,
    /// The file line of each journal of the batch.
    pub lines: Vec<u64>,
    pub rejections: Vec<RejectionRow>,
}

/// Whether a batch must run on the program's current revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Revision {
    /// The program was read from a cache: a batch finding another revision stored is
    /// refused with [`StoreError::ProgramChanged`] (the caller reloads it and retries).
    Current,
    /// The caller read the program for this work and keeps its rules to the end (an
    /// import that started on a revision finishes on it).
    AsLoaded,
}

/// Processes a batch of journals in the transaction `tx` (not committed here).
pub(crate) async fn post_batch<T: LedgerTx>(
    tx: &mut T,
    lp: &LoadedProgram,
    prepared: &[Prepared],
    now: DateTime<Utc>,
    progress: Option<&ImportProgress>,
    check: Revision,
    explain: bool,
    earned_events: bool,
) -> Result<Vec<JournalResult>> {
    let program = &lp.program;
    let journals: Vec<&Journal> = prepared.iter().map(|p| &p.journal).collect();
    let mut batch = Batch::new(lp, now);
    batch.explain = explain;
    batch.earned_events = earned_events;
    // Journals that later journals of this batch refer to stay at hand in memory.
    batch.referenced = journals
        .iter()
        .filter_map(|j| j.body.original())
        .map(|o| o.to_string())
        .collect();
    let mut results: Vec<Option<JournalResult>> = vec![None; journals.len()];

    // Members, locked first (by their names), then read with their accounts, the journals
    // named (replays, and what refunds and cancellations refer to) and fresh ids: their
    // state is current.
    let member_names: Vec<&str> = unique(journals.iter().map(|j| j.member.as_str()));
    let mut names: Vec<&str> = journals.iter().map(|j| j.external_id.as_str()).collect();
    names.extend(
        journals
            .iter()
            .filter_map(|j| j.body.original())
            .map(|o| o.as_str()),
    );
    let names = unique(names.into_iter());
    // Fraud rules screen the journals posted through the API (not a dry run's): what they
    // need is read with the opening.
    let screen =
        !explain && program.fraud.screens_journals() && prepared.iter().any(|p| p.screened);
    let counter_periods = if program.has_limits() && tx.opens_in_one(member_names.len()) {
        member_counter_periods(program, &journals)
    } else {
        Vec::new()
    };
    let reads = crate::rows::OpeningReads {
        facts: program
            .needs_member_facts()
            .then(|| program.reads_segments()),
        counter_periods: &counter_periods,
    };
    let opening = tx
        .open_batch(
            lp.id,
            &lock_keys(lp.id, member_names.iter().copied()),
            &member_names,
            &names,
            journals.len() * 2,
            !program.tier_groups.is_empty(),
            screen,
            reads,
        )
        .await?;
    if opening.revision.is_none() {
        return Err(StoreError::UnknownProgram(program.code.to_string()));
    }
    if check == Revision::Current && opening.revision != Some(lp.revision) {
        return Err(StoreError::ProgramChanged(program.code.to_string()));
    }
    let members = opening.members;
    let opening_screening = opening.screening;
    // Journals for a merged member go to the survivor: hold the survivor's lock too and
    // read its accounts under it.
    let owners: Vec<&str> = unique(members.iter().filter_map(|m| m.owner.as_deref()));
    let redirected: Vec<i64> = members
        .iter()
        .filter(|m| m.owner.is_some())
        .map(|m| m.id)
        .collect();
    let mut opening_accounts = opening.accounts;
    if !owners.is_empty() {
        tx.lock_members(&lock_keys(lp.id, owners.iter().copied()))
            .await?;
        opening_accounts.retain(|a| !redirected.contains(&a.member_id));
        opening_accounts.extend(tx.load_accounts(&redirected).await?);
    }
    // A group's member record points at itself (see `Store::create_group`).
    let groups: Vec<i64> = members
        .iter()
        .filter(|m| m.group_id == Some(m.id))
        .map(|m| m.id)
        .collect();
    let member_by_name: FxHashMap<&str, i64> = members
        .iter()
        .map(|m| (m.external_id.as_str(), m.id))
        .collect();
    for m in &members {
        batch.insert_ledger(m.id, &m.status)?;
    }
    // Accruals before enrolment are refused: the enrolment of the member each journal
    // names (for a merged member's survivor ledger, the earliest of those named).
    for m in &members {
        if let (Some(at), Some(ledger)) = (m.enrolled_at, batch.ledgers.get_mut(&m.id)) {
            ledger.enrolled_at = Some(ledger.enrolled_at.map_or(at, |e| e.min(at)));
        }
    }
    for row in opening_accounts {
        batch.put_account(row)?;
    }
    for m in &members {
        batch.names.insert(m.id, m.external_id.clone());
    }
    if program.needs_member_facts() {
        let rows = match opening.facts {
            // Read with the opening, under the locks held then (a redirected member's
            // survivor was locked since: read again).
            Some(rows) if owners.is_empty() => rows,
            _ => {
                let ids: Vec<i64> = members.iter().map(|m| m.id).collect();
                tx.load_member_facts(&ids, program.reads_segments()).await?
            }
        };
        for row in rows {
            batch.put_facts(row)?;
        }
    }
    if program.reads_granted_benefits() {
        let ids: Vec<i64> = members.iter().map(|m| m.id).collect();
        let since = journals
            .iter()
            .map(|j| j.occurred_at)
            .min()
            .unwrap_or(batch.now);
        for row in tx.load_granted(&ids, since).await? {
            batch.put_granted(row)?;
        }
    }
    if !program.tier_groups.is_empty() {
        match opening.tiers {
            // Read with the opening, under the locks held then (a redirected member's
            // survivor was locked since: read again).
            Some(rows) if owners.is_empty() => batch.put_tiers(rows)?,
            _ => {
                let ids: Vec<i64> = members.iter().map(|m| m.id).collect();
                batch.load_tiers(tx, &ids).await?;
            }
        }
    }
    if members.iter().any(|m| m.group_id.is_some()) {
        let grouped = journals
            .iter()
            .filter(|j| matches!(j.body, JournalBody::Accrual(_)))
            .count();
        batch.load_groups(tx, &members, grouped).await?;
    }
    let existing: FxHashMap<String, JournalRow> = opening
        .journals
        .into_iter()
        .filter_map(|r| r.external_id.clone().map(|e| (e, r)))
        .collect();
    batch.load_related(tx, &journals, &existing).await?;
    if let Some(screening) = opening_screening {
        batch.screen =
            Some(crate::fraud::Screen::load(tx, lp.id, &program.fraud, screening, prepared).await?);
    }
    batch.load_partners(tx, &journals).await?;
    if program.has_limits() {
        let keys = counter_keys(program, &journals, &member_by_name);
        match opening.counters {
            // The members' own counters came with the opening, read under the locks held
            // then (a redirected member's survivor was locked since: read all again).
            Some(rows) if owners.is_empty() => {
                // The opening read every member's counters for every pair the batch
                // names; keep each member's own keys only, so an outcome never depends on
                // which journals shared its batch (as when read by key).
                let wanted: FxHashSet<&fidelis_core::promotions::limits::CounterKey> =
                    keys.iter().collect();
                batch.counters.counts = rows
                    .into_iter()
                    .filter(|(k, _)| wanted.contains(k))
                    .collect();
                let everyone: Vec<_> = keys
                    .into_iter()
                    .filter(|k| k.member == fidelis_core::promotions::limits::EVERYONE)
                    .collect();
                if !everyone.is_empty() {
                    batch
                        .counters
                        .counts
                        .extend(tx.load_counters(lp.id, &everyone).await?);
                }
            }
            _ if !keys.is_empty() => {
                batch.counters.counts = tx.load_counters(lp.id, &keys).await?.into_iter().collect();
            }
            _ => {}
        }
    }

    // Buckets for the members whose journals touch existing points.
    let mut needing: Vec<i64> = journals
        .iter()
        .filter_map(|j| {
            let id = *member_by_name.get(j.member.as_str())?;
            let due = batch.ledgers.get(&id).is_some_and(|l| l.is_due(now));
            (due || process::needs_buckets(program, j, now)).then_some(id)
        })
        .collect();
    needing.sort_unstable();
    needing.dedup();
    batch.load_buckets(tx, &needing).await?;

    // A large batch on a dialect that can (SQLite: its statements run on a thread of their
    // own) writes the members it is done with while it processes the next journals. Only
    // with several journals per member (an import by member): where nearly every journal
    // is a member of its own, one write sorted by member costs less than many (measured).
    let beside = tx.writes_beside()
        && journals.len() >= 2 * WRITE_BESIDE_EVERY
        && members.len() * 4 <= journals.len()
        && !explain
        && owners.is_empty()
        && !members.iter().any(|m| m.group_id.is_some())
        && batch.screen.is_none();
    let last_of: FxHashMap<i64, usize> = if beside {
        journals
            .iter()
            .enumerate()
            .filter_map(|(i, j)| Some((*member_by_name.get(j.member.as_str())?, i)))
            .collect()
    } else {
        FxHashMap::default()
    };
    let mut walk = Walk {
        journals: &journals,
        prepared,
        existing: &existing,
        member_by_name: &member_by_name,
        groups: &groups,
        results: &mut results,
        seen: FxHashMap::default(),
        ids: opening.ids.into_iter(),
    };
    let mut next = 0;
    let mut writing: Option<WriteSet> = None;
    while next < journals.len() {
        let end = if beside {
            (next + WRITE_BESIDE_EVERY).min(journals.len())
        } else {
            journals.len()
        };
        // What needs the transaction stops the walk; the rows of the members done with
        // before are written meanwhile.
        let stopped = match writing.take() {
            Some(rows) => {
                let (written, walked) = futures::join!(tx.write_beside(lp.id, &rows), async {
                    walk.run(&mut batch, next, end)
                });
                written?;
                walked?
            }
            None => walk.run(&mut batch, next, end)?,
        };
        let done = match stopped {
            (i, Some(step)) => {
                walk.with_tx(tx, &mut batch, i, step).await?;
                i + 1
            }
            (i, None) => i,
        };
        if beside && done < journals.len() {
            // (Taken only short of the end: the next walk writes them.)
            let mut finished: Vec<i64> = (next..done)
                .filter_map(|i| {
                    let id = *member_by_name.get(journals[i].member.as_str())?;
                    (last_of.get(&id) == Some(&i)).then_some(id)
                })
                .collect();
            finished.sort_unstable();
            if !finished.is_empty() {
                writing = Some(batch.take_finished(&finished)?);
            }
        }
        next = done;
    }
    batch.write(tx).await?;
    if let Some(referral) = &program.referral {
        let mut qualified: Vec<i64> = journals
            .iter()
            .zip(&results)
            .filter(|(j, r)| {
                matches!(r, Some(Ok(p)) if !p.replayed)
                    && matches!(j.body, JournalBody::Accrual(_))
                    && referral.qualifies(j.body.type_code().as_str())
            })
            .filter_map(|(j, _)| member_by_name.get(j.member.as_str()).copied())
            .collect();
        if !qualified.is_empty() {
            qualified.sort_unstable();
            qualified.dedup();
            tx.mark_referrals(&qualified, now).await?;
        }
    }
    if let Some(progress) = progress {
        let checkpoint = checkpoint(progress, &journals, &results);
        tx.save_checkpoint(&checkpoint, now).await?;
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(JournalError::Invalid("not processed".into()))))
        .collect())
}

/// Journals a large batch processes between two writes of the members it is done with
/// (see [`LedgerTx::writes_beside`]): their rows stay below SQLite's parameter limit in one
/// statement, and writing them takes about as long as processing the next ones.
const WRITE_BESIDE_EVERY: usize = 400;

/// A batch's walk through its journals, in order ([`post_batch`]).
struct Walk<'a> {
    journals: &'a [&'a Journal],
    prepared: &'a [Prepared],
    existing: &'a FxHashMap<String, JournalRow>,
    member_by_name: &'a FxHashMap<&'a str, i64>,
    groups: &'a [i64],
    results: &'a mut [Option<JournalResult>],
    /// The first journal of each external id the walk met.
    seen: FxHashMap<&'a str, (usize, &'a Journal)>,
    /// Journal ids reserved for the batch, two per journal processed.
    ids: std::vec::IntoIter<i64>,
}

/// A journal the walk leaves to be processed with the transaction.
enum Step {
    /// Held by a fraud rule (a redemption's points are reserved first).
    Hold {
        member_id: i64,
        ids: JournalIds,
        verdict: fidelis_core::fraud::Verdict,
    },
    /// Its member's buckets are to be read first.
    Buckets { member_id: i64, ids: JournalIds },
}

impl<'a> Walk<'a> {
    /// Processes journals `from..to` as long as they need nothing read; answers where it
    /// stopped and, short of `to`, what the journal there needs.
    fn run(
        &mut self,
        batch: &mut Batch<'_>,
        from: usize,
        to: usize,
    ) -> Result<(usize, Option<Step>)> {
        for i in from..to {
            if let Some(step) = self.step(batch, i)? {
                return Ok((i, Some(step)));
            }
        }
        Ok((to, None))
    }

    fn step(&mut self, batch: &mut Batch<'_>, i: usize) -> Result<Option<Step>> {
        let (journal, prepared) = (self.journals[i], &self.prepared[i]);
        let name = journal.external_id.as_str();
        // An earlier journal with this id that was refused left nothing behind: this one is
        // processed on its own, as it would be in a later batch (a redemption refused for
        // want of points may pass once a purchase between them is applied).
        if let Some(&(first, first_journal)) = self.seen.get(name)
            && let Some(Ok(posted)) = &self.results[first]
        {
            self.results[i] = Some(if prepared.same_request(first_journal) {
                Ok(Posted {
                    outcome: posted.outcome.clone(),
                    replayed: true,
                })
            } else {
                Err(JournalError::IdempotencyConflict(name.to_owned()))
            });
            return Ok(None);
        }
        self.seen.insert(name, (i, journal));
        if let Some(row) = self.existing.get(name) {
            self.results[i] = Some(replay(row, prepared, &batch.lp.program)?);
            return Ok(None);
        }
        let Some(&member_id) = self.member_by_name.get(journal.member.as_str()) else {
            self.results[i] = Some(Err(JournalError::UnknownMember(journal.member.to_string())));
            return Ok(None);
        };
        if !prepared.for_group && self.groups.contains(&member_id) {
            self.results[i] = Some(Err(JournalError::MemberIsGroup(journal.member.to_string())));
            return Ok(None);
        }
        let verdict = match batch.screen_journal(member_id, journal, prepared)? {
            Screened::Pass => None,
            Screened::Answer(result) => {
                self.results[i] = Some(*result);
                return Ok(None);
            }
            Screened::Hold(verdict) => Some(verdict),
        };
        let (Some(main), Some(settlement)) = (self.ids.next(), self.ids.next()) else {
            return Err(StoreError::Inconsistent(
                "too few journal ids reserved".into(),
            ));
        };
        let ids = JournalIds {
            main: JournalId(main),
            settlement: JournalId(settlement),
        };
        if let Some(verdict) = verdict {
            return Ok(Some(Step::Hold {
                member_id,
                ids,
                verdict,
            }));
        }
        match batch.try_process(member_id, journal, &prepared.document, ids)? {
            Some(result) => {
                self.answer(batch, i, member_id, result);
                Ok(None)
            }
            None => Ok(Some(Step::Buckets { member_id, ids })),
        }
    }

    /// Processes journal `i` as `step` says, with the transaction.
    async fn with_tx<T: LedgerTx>(
        &mut self,
        tx: &mut T,
        batch: &mut Batch<'_>,
        i: usize,
        step: Step,
    ) -> Result<()> {
        let (journal, prepared) = (self.journals[i], &self.prepared[i]);
        match step {
            Step::Hold {
                member_id,
                ids,
                verdict,
            } => {
                // A held redemption's points are reserved by a hold of its own, with the
                // ids the journal would have taken: spendable nowhere else while it waits.
                // When they are not there, it is refused as the redemption would have
                // been.
                if let Some(reserve) = crate::fraud::reservation(journal, batch.now)? {
                    let document = serde_json::to_string(&reserve.canonical(&batch.lp.program))?;
                    if let Err(e) = batch
                        .process(tx, member_id, &reserve, &document, ids)
                        .await?
                    {
                        self.results[i] = Some(Err(e));
                        return Ok(());
                    }
                }
                self.results[i] = Some(batch.hold_journal(member_id, journal, prepared, &verdict)?);
            }
            Step::Buckets { member_id, ids } => {
                let result = batch
                    .process(tx, member_id, journal, &prepared.document, ids)
                    .await?;
                self.answer(batch, i, member_id, result);
            }
        }
        Ok(())
    }

    fn answer(&mut self, batch: &mut Batch<'_>, i: usize, member_id: i64, result: JournalResult) {
        let (journal, prepared) = (self.journals[i], &self.prepared[i]);
        let lp = batch.lp;
        if prepared.screened
            && matches!(&result, Ok(p) if !p.replayed)
            && let Some(screen) = batch.screen.as_mut()
        {
            screen.note(&lp.program.fraud, member_id, journal, false);
        }
        self.results[i] = Some(result);
    }
}

/// Locks the named members (sorted, as batches do) and loads their ledgers completely:
/// accounts, open buckets and tier standings — for operations on members beyond
/// journals (transfers, merges, reinstatement). Members that do not exist are absent
/// from the answer; a merged member is refused by the caller (its `owner` is set).
pub(crate) async fn load_members<'p, T: LedgerTx>(
    tx: &mut T,
    lp: &'p LoadedProgram,
    names: &[&str],
    now: DateTime<Utc>,
) -> Result<(Batch<'p>, Vec<MemberRow>)> {
    let names = unique(names.iter().copied());
    tx.lock_members(&lock_keys(lp.id, names.iter().copied()))
        .await?;
    let members = tx.resolve_members(lp.id, &names).await?;
    let ids: Vec<i64> = members.iter().map(|m| m.id).collect();
    let mut batch = Batch::new(lp, now);
    for m in &members {
        batch.insert_ledger(m.id, &m.status)?;
        batch.names.insert(m.id, m.external_id.clone());
    }
    for row in tx.load_accounts(&ids).await? {
        batch.put_account(row)?;
    }
    if !lp.program.tier_groups.is_empty() {
        batch.load_tiers(tx, &ids).await?;
    }
    batch.load_buckets(tx, &ids).await?;
    Ok((batch, members))
}

/// What settling the due members of a program did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettleReport {
    pub members: u64,
    pub journals: u64,
    /// Scheduled rewards (birthday, anniversary, win-back) awarded.
    pub scheduled_rewards: u64,
    /// Holds (pay with points) released because their end passed.
    pub holds_released: u64,
    /// Expiries announced (`points.expiring`, within 30 days), each once.
    pub expiring_announced: u64,
    /// The segments' refresh, for a program with segments.
    pub segments: Option<crate::SegmentRefresh>,
}

/// Settles up to `limit` members with expiries or releases due at `as_of`, in `tx`.
pub(crate) async fn settle_due<T: LedgerTx>(
    tx: &mut T,
    lp: &LoadedProgram,
    as_of: DateTime<Utc>,
    limit: i64,
) -> Result<SettleReport> {
    let program = &lp.program;
    let due = tx.due_members(lp.id, as_of, limit).await?;
    if due.is_empty() {
        return Ok(SettleReport::default());
    }
    // Settling does not depend on a member's status, so the status read before the lock
    // is good enough; accounts and buckets are read under it.
    tx.lock_members(&lock_keys(
        lp.id,
        due.iter().map(|m| m.external_id.as_str()),
    ))
    .await?;
    let member_ids: Vec<i64> = due.iter().map(|m| m.id).collect();
    let mut batch = Batch::new(lp, as_of);
    for m in &due {
        batch.insert_ledger(m.id, &m.status)?;
    }
    for row in tx.load_accounts(&member_ids).await? {
        batch.put_account(row)?;
    }
    for m in &due {
        batch.names.insert(m.id, m.external_id.clone());
    }
    if !program.tier_groups.is_empty() {
        batch.load_tiers(tx, &member_ids).await?;
    }
    batch.load_buckets(tx, &member_ids).await?;
    let mut ids = tx.reserve_journal_ids(member_ids.len()).await?.into_iter();
    let mut report = SettleReport {
        members: member_ids.len() as u64,
        journals: 0,
        ..SettleReport::default()
    };
    for id in &member_ids {
        let (Some(ledger), Some(journal)) = (batch.ledgers.get_mut(id), ids.next()) else {
            continue;
        };
        let (settled, changes) = process::settle(program, ledger, JournalId(journal), as_of)
            .map_err(|e| StoreError::Inconsistent(e.to_string()))?;
        batch.audit_tier_changes(*id, &changes, None);
        if let Some(record) = settled {
            report.journals += 1;
            batch.new_journals.push(NewJournal {
                record_key: None,
                record: Some(record),
                document: None,
                outcome: None,
            });
        }
    }
    batch.write(tx).await?;
    Ok(report)
}

/// The replay of a journal posted before: its first outcome, if the documents agree.
fn replay(row: &JournalRow, prepared: &Prepared, program: &Program) -> Result<JournalResult> {
    let (journal, document) = (&prepared.journal, prepared.document.as_str());
    let conflict = || {
        Ok(Err(JournalError::IdempotencyConflict(
            journal.external_id.to_string(),
        )))
    };
    let Some(first) = &row.document else {
        return conflict();
    };
    // The same canonical text is the common case; a document stored by an earlier
    // release may differ in form only, so compare meanings before calling it a conflict.
    if first != document {
        let mut first: JournalDocument = serde_json::from_str(first)?;
        let canonical = journal.canonical(program);
        if prepared.time_filled {
            // The server's clock gave each attempt its own time: compare what the client sent.
            first.occurred_at.clone_from(&canonical.occurred_at);
        }
        if first != canonical {
            return conflict();
        }
    }
    let mut outcome: Outcome = match &row.outcome {
        Some(o) => serde_json::from_str(o)?,
        None => return conflict(),
    };
    restore_outcome(&mut outcome, journal);
    Ok(Ok(Posted {
        outcome,
        replayed: true,
    }))
}

fn checkpoint(
    progress: &ImportProgress,
    journals: &[&Journal],
    results: &[Option<JournalResult>],
) -> CheckpointRow {
    let mut row = CheckpointRow {
        run_id: progress.run_id,
        partition: progress.partition as i32,
        byte_offset: progress.byte_offset as i64,
        line: progress.line as i64,
        rejections: progress.rejections.clone(),
        ..CheckpointRow::default()
    };
    for ((result, line), journal) in results.iter().zip(&progress.lines).zip(journals) {
        match result {
            Some(Ok(Posted {
                replayed: false, ..
            })) => row.applied += 1,
            Some(Ok(Posted { replayed: true, .. })) => row.replayed += 1,
            Some(Err(e)) => row.rejections.push(RejectionRow {
                line: *line as i64,
                external_id: Some(journal.external_id.to_string()),
                code: e.code().to_owned(),
                reason: e.to_string(),
            }),
            None => {}
        }
    }
    row.rejected = row.rejections.len() as i64;
    row
}

/// The lock key of a member: a stable hash (FNV-1a, 64 bits) of the program and the
/// member's external id, so every writer can take the lock before knowing the member's id.
/// Two members sharing a key only share a lock.
pub(crate) fn member_lock_key(program_id: i64, external_id: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in program_id
        .to_le_bytes()
        .iter()
        .chain(external_id.as_bytes())
    {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// Sorted, distinct lock keys: locks taken in one order never deadlock.
pub(crate) fn lock_keys<'a>(program_id: i64, names: impl Iterator<Item = &'a str>) -> Vec<i64> {
    let mut keys: Vec<i64> = names.map(|n| member_lock_key(program_id, n)).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

fn unique<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = FxHashSet::default();
    items.filter(|i| seen.insert(*i)).collect()
}

/// The outcome as stored: without what the journal's row holds anyway (saves a fifth of
/// the outcome's bytes on every journal).
fn stored_outcome(outcome: &mut Outcome) -> Result<String> {
    let status = std::mem::take(&mut outcome.status);
    let external_id = outcome.external_id.take();
    let journal_type = outcome.journal_type.take();
    let json = serde_json::to_string(outcome);
    outcome.status = status;
    outcome.external_id = external_id;
    outcome.journal_type = journal_type;
    Ok(json?)
}

fn restore_outcome(outcome: &mut Outcome, journal: &Journal) {
    if outcome.status.is_empty() {
        outcome.status = "processed".into();
    }
    outcome
        .external_id
        .get_or_insert_with(|| journal.external_id.clone());
    outcome
        .journal_type
        .get_or_insert_with(|| journal.body.type_code());
}

/// A journal written by this batch: one that later journals of the batch refer to lives
/// in `Batch::records` (they may still change it); any other is held here.
pub(crate) struct NewJournal {
    pub(crate) record_key: Option<String>,
    pub(crate) record: Option<JournalRecord>,
    pub(crate) document: Option<String>,
    pub(crate) outcome: Option<String>,
}

/// The batch's working set: ledgers by member, journal records by external id.
pub(crate) struct Batch<'p> {
    lp: &'p LoadedProgram,
    now: DateTime<Utc>,
    pub(crate) ledgers: FxHashMap<i64, MemberLedger>,
    /// Loaded from the database or written by this batch, by external id.
    records: FxHashMap<String, JournalRecord>,
    /// External ids of the records by journal id (refunds' originals are found by id).
    names_by_id: FxHashMap<i64, String>,
    /// Records loaded from the database (changes to them are updates).
    loaded: FxHashSet<String>,
    /// External ids that journals of this batch refer to.
    referenced: FxHashSet<String>,
    /// Account rows (member, currency), with the next transition stored, and buckets read
    /// from the database: written back as updates; everything else is new.
    loaded_accounts: FxHashMap<(i64, u16), Option<DateTime<Utc>>>,
    loaded_buckets: FxHashSet<fidelis_core::ids::BucketId>,
    pub(crate) new_journals: Vec<NewJournal>,
    /// A dry run: outcomes list every promotion's verdict.
    explain: bool,
    /// Whether `points.earned` events are written: only when something receives them (a
    /// webhook subscribed to them, a registered stream); the other events always are.
    earned_events: bool,
    /// Promotion limit counters, moved into each journal's processing and back.
    counters: fidelis_core::promotions::Counters,
    /// Members' external ids by id (audit subjects).
    names: FxHashMap<i64, String>,
    /// Tier changes (and other changes of the batch) to write to the audit trail.
    pub(crate) audits: Vec<crate::access::AuditEntry>,
    /// Members' groups (households): the group's member id and the share of earning.
    group_of: FxHashMap<i64, (i64, u32)>,
    /// Journal ids reserved for moving shares to groups.
    spare_ids: Vec<i64>,
    /// Vouchers the batch's promotions issued.
    new_vouchers: Vec<crate::vouchers::NewVoucher>,
    new_badges: Vec<crate::badges::NewBadge>,
    /// Journals cancelled by the batch: the vouchers their promotions issued are
    /// cancelled with them.
    cancelled_journals: Vec<i64>,
    new_benefits: Vec<crate::badges::NewBenefit>,
    /// The partners the batch's journals name (and those of the journals they reverse),
    /// locked, by code, with their packs as the batch changes them.
    partners: FxHashMap<String, PartnerState>,
    /// Partner entries of journals the batch reverses (and of earlier reversals of them),
    /// and those the batch writes, by the journal they belong to.
    partner_movements: FxHashMap<i64, Vec<PartnerMovement>>,
    /// The partner named by each hold the batch may capture, by the hold's journal id: a
    /// capture is a redemption at that partner.
    hold_partners: FxHashMap<i64, String>,
    new_partner_entries: Vec<crate::partners::NewPartnerEntry>,
    new_events: Vec<crate::partners::NewEvent>,
    /// Fraud screening, for a batch with journals the rules screen.
    screen: Option<crate::fraud::Screen>,
}

/// A partner as the batch holds it.
struct PartnerState {
    id: i64,
    partner: fidelis_core::partners::Partner,
    /// The pack now, with the batch's entries so far.
    pack: i64,
}

/// A partner entry as a reversal needs it.
#[derive(Debug, Clone)]
struct PartnerMovement {
    /// The journal whose entry it is.
    journal: i64,
    /// The journal it reverses, for a reversal.
    original: Option<i64>,
    partner: String,
    movement: fidelis_core::partners::Movement,
}

impl<'p> Batch<'p> {
    /// The batch's promotion counters (their deltas are written with the batch).
    pub(crate) fn counters_mut(&mut self) -> &mut fidelis_core::promotions::Counters {
        &mut self.counters
    }

    fn new(lp: &'p LoadedProgram, now: DateTime<Utc>) -> Self {
        Self {
            lp,
            now,
            ledgers: FxHashMap::default(),
            records: FxHashMap::default(),
            names_by_id: FxHashMap::default(),
            loaded: FxHashSet::default(),
            referenced: FxHashSet::default(),
            loaded_accounts: FxHashMap::default(),
            loaded_buckets: FxHashSet::default(),
            new_journals: Vec::new(),
            explain: false,
            earned_events: true,
            counters: fidelis_core::promotions::Counters::default(),
            names: FxHashMap::default(),
            audits: Vec::new(),
            group_of: FxHashMap::default(),
            spare_ids: Vec::new(),
            new_vouchers: Vec::new(),
            new_badges: Vec::new(),
            cancelled_journals: Vec::new(),
            new_benefits: Vec::new(),
            partners: FxHashMap::default(),
            partner_movements: FxHashMap::default(),
            hold_partners: FxHashMap::default(),
            new_partner_entries: Vec::new(),
            new_events: Vec::new(),
            screen: None,
        }
    }

    /// Loads the partner entries of the journals the batch reverses, then locks the
    /// partners its journals name and those entries belong to, in code order (after the
    /// members' locks: batches never deadlock). Nothing for a batch that names none.
    async fn load_partners<T: LedgerTx>(
        &mut self,
        tx: &mut T,
        journals: &[&Journal],
    ) -> Result<()> {
        let mut codes: Vec<String> = journals
            .iter()
            .filter_map(|j| match &j.body {
                JournalBody::Accrual(a) => a.partner.clone(),
                JournalBody::Redemption { partner, .. } | JournalBody::Hold { partner, .. } => {
                    partner.clone()
                }
                JournalBody::Capture { original } => self
                    .records
                    .get(original.as_str())
                    .and_then(|r| self.hold_partners.get(&r.id.0).cloned()),
                _ => None,
            })
            .collect();
        let mut targets: Vec<i64> = journals
            .iter()
            .filter(|j| {
                matches!(
                    j.body,
                    JournalBody::Refund(_) | JournalBody::Cancellation { .. }
                )
            })
            .filter_map(|j| j.body.original())
            .filter_map(|o| self.records.get(o.as_str()))
            .map(|r| r.id.0)
            .collect();
        targets.sort_unstable();
        targets.dedup();
        if !targets.is_empty() {
            for (journal, original, code, kind, points, pack, amount, rate) in
                tx.load_partner_movements(&targets).await?
            {
                let movement = crate::partners::parse_movement(&kind, points, pack, amount, &rate)?;
                codes.push(code.clone());
                // Kept by the journal reversed: its own entries and its reversals'.
                self.partner_movements
                    .entry(original.unwrap_or(journal))
                    .or_default()
                    .push(PartnerMovement {
                        journal,
                        original,
                        partner: code,
                        movement,
                    });
            }
        }
        if codes.is_empty() {
            return Ok(());
        }
        codes.sort_unstable();
        codes.dedup();
        for code in codes {
            if let Some((id, code, document, pack)) = tx.lock_partner(self.lp.id, &code).await? {
                let partner = crate::partners::parse_partner(&document)?;
                self.partners
                    .insert(code, PartnerState { id, partner, pack });
            }
        }
        Ok(())
    }

    /// The pack an accrual at a prepaid partner that refuses beyond it must fit in.
    fn pack_guard(&self, journal: &Journal) -> Option<process::PackGuard> {
        let JournalBody::Accrual(a) = &journal.body else {
            return None;
        };
        let state = self.partners.get(a.partner.as_deref()?)?;
        if !state.partner.refuses_beyond_pack() {
            return None;
        }
        Some(process::PackGuard {
            partner: state.partner.code.clone(),
            currency: fidelis_core::ids::Code::parse(&state.partner.currency).ok()?,
            left: state.pack.max(0),
        })
    }

    /// The partner entries a processed journal makes: an accrual at an earn partner, a
    /// redemption with a burn partner, and the reversal of either by a refund or a
    /// cancellation (each original entry gives back its share, at its own rate, never more
    /// than it has left). Packs follow; a pack falling below its alert raises an event.
    fn partner_effects(
        &mut self,
        journal: &Journal,
        journal_id: i64,
        original: Option<i64>,
        outcome: &Outcome,
    ) {
        if self.partners.is_empty() {
            return;
        }
        let scale = self.lp.program.money_currency.scale();
        let sum = |list: &[fidelis_core::outcome::PointsOf], currency: &str| -> i64 {
            list.iter()
                .filter(|p| p.currency.as_str() == currency)
                .map(|p| p.points)
                .sum()
        };
        let mut made: Vec<(String, Option<i64>, fidelis_core::partners::Movement)> = Vec::new();
        match &journal.body {
            JournalBody::Accrual(a) => {
                if let Some(state) = a.partner.as_deref().and_then(|c| self.partners.get(c)) {
                    let earned: i64 = outcome
                        .awards
                        .iter()
                        .filter(|w| w.currency.as_str() == state.partner.currency)
                        .map(|w| w.points)
                        .sum();
                    made.extend(
                        state
                            .partner
                            .accrual(earned, scale)
                            .map(|m| (state.partner.code.clone(), None, m)),
                    );
                }
            }
            JournalBody::Redemption {
                partner: Some(code),
                ..
            } => {
                if let Some(state) = self.partners.get(code.as_str()) {
                    let redeemed = sum(&outcome.debited, &state.partner.currency);
                    made.extend(
                        state
                            .partner
                            .redemption(redeemed, scale)
                            .map(|m| (state.partner.code.clone(), None, m)),
                    );
                }
            }
            JournalBody::Hold {
                partner: Some(code),
                ..
            } => {
                // Captured later, maybe in this batch.
                self.hold_partners.insert(journal_id, code.clone());
            }
            JournalBody::Capture { original: hold } => {
                let code = original.and_then(|id| self.hold_partners.get(&id));
                if let Some(state) = code.and_then(|c| self.partners.get(c.as_str())) {
                    // The held points, spent now: what the hold took from the buckets.
                    let captured: i64 = self.records.get(hold.as_str()).map_or(0, |r| {
                        -r.entries
                            .iter()
                            .filter(|e| {
                                self.lp.program.currencies[e.currency.0 as usize]
                                    .code
                                    .as_str()
                                    == state.partner.currency
                            })
                            .map(|e| e.amount)
                            .sum::<i64>()
                    });
                    made.extend(
                        state
                            .partner
                            .redemption(captured, scale)
                            .map(|m| (state.partner.code.clone(), None, m)),
                    );
                }
            }
            // A cancelled refund undoes what the refund did at the partner: its
            // reversals are reversed (the pack debited again, the bill charged again, even
            // below zero: the points were issued and are the member's again), and the
            // purchase has that much left to reverse for later refunds.
            JournalBody::Cancellation { original: name }
                if self
                    .records
                    .get(name.as_str())
                    .is_some_and(|r| r.kind == RecordKind::Refund) =>
            {
                let Some((refund, Some(purchase))) = self
                    .records
                    .get(name.as_str())
                    .map(|r| (r.id.0, r.original.map(|j| j.0)))
                else {
                    return;
                };
                made.extend(
                    self.partner_movements
                        .get(&purchase)
                        .into_iter()
                        .flatten()
                        .filter(|m| m.journal == refund)
                        .map(|m| {
                            let undone = fidelis_core::partners::Movement {
                                points: -m.movement.points,
                                pack: -m.movement.pack,
                                amount: -m.movement.amount,
                                ..m.movement
                            };
                            (m.partner.clone(), Some(purchase), undone)
                        }),
                );
            }
            JournalBody::Refund(_) | JournalBody::Cancellation { .. } => {
                let Some(original) = original else {
                    return;
                };
                let movements = self
                    .partner_movements
                    .get(&original)
                    .cloned()
                    .unwrap_or_default();
                let mut partners: Vec<&str> =
                    movements.iter().map(|m| m.partner.as_str()).collect();
                partners.sort_unstable();
                partners.dedup();
                for code in partners {
                    let Some(state) = self.partners.get(code) else {
                        continue;
                    };
                    let currency = state.partner.currency.as_str();
                    // What the journal took back from the member (or meant to: points
                    // already spent or expired were still issued on the refunded sale).
                    let taken = sum(&outcome.reversed, currency)
                        + sum(&outcome.unrecovered, currency)
                        + sum(&outcome.already_expired, currency);
                    let restored = sum(&outcome.restored, currency);
                    for (kind, reversal_kind, taken) in [
                        (
                            fidelis_core::partners::EntryKind::Accrual,
                            fidelis_core::partners::EntryKind::AccrualReversal,
                            taken,
                        ),
                        (
                            fidelis_core::partners::EntryKind::Redemption,
                            fidelis_core::partners::EntryKind::RedemptionReversal,
                            restored,
                        ),
                    ] {
                        let of = |m: &&PartnerMovement| m.partner == code;
                        let originals: Vec<fidelis_core::partners::Movement> = movements
                            .iter()
                            .filter(of)
                            .filter(|m| m.original.is_none() && m.movement.kind == kind)
                            .map(|m| m.movement)
                            .collect();
                        if originals.is_empty() {
                            continue;
                        }
                        let before: i64 = -movements
                            .iter()
                            .filter(of)
                            .filter(|m| m.original == Some(original))
                            .filter(|m| m.movement.kind == reversal_kind)
                            .map(|m| m.movement.points)
                            .sum::<i64>();
                        for m in fidelis_core::partners::reversal(&originals, before, taken, scale)
                        {
                            made.push((code.to_owned(), Some(original), m));
                        }
                    }
                }
            }
            _ => {}
        }
        for (code, reverses, movement) in made {
            let Some(state) = self.partners.get_mut(&code) else {
                continue;
            };
            let before = state.pack;
            state.pack += movement.pack;
            if fidelis_core::partners::crosses_alert(state.partner.alert_below, before, state.pack)
            {
                self.new_events.push(crate::partners::NewEvent {
                    kind: "partner.pack_low",
                    member_id: None,
                    subject: code.clone(),
                    payload: serde_json::json!({"partner": code, "pack": state.pack,
                        "alert_below": state.partner.alert_below, "journal": journal.external_id.as_str()})
                    .to_string(),
                    occurred_at: self.now,
                });
            }
            self.new_partner_entries
                .push(crate::partners::NewPartnerEntry {
                    partner_id: state.id,
                    journal_id,
                    original_journal_id: reverses,
                    movement,
                    effective_at: journal.occurred_at,
                });
            // A later journal of the batch reversing this one (or this one's original
            // again) sees it.
            let key = reverses.unwrap_or(journal_id);
            self.partner_movements
                .entry(key)
                .or_default()
                .push(PartnerMovement {
                    journal: journal_id,
                    original: reverses,
                    partner: code,
                    movement,
                });
        }
    }

    /// Loads the groups of the batch's members (locked after the members, so a member's
    /// lock is never taken while holding a group's) with their accounts, and reserves
    /// journal ids for up to `accruals` shares.
    async fn load_groups<T: LedgerTx>(
        &mut self,
        tx: &mut T,
        members: &[MemberRow],
        accruals: usize,
    ) -> Result<()> {
        let mut ids: Vec<i64> = members.iter().filter_map(|m| m.group_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let groups = tx.load_groups(&ids).await?;
        tx.lock_members(&lock_keys(
            self.lp.id,
            groups.iter().map(|g| g.external_id.as_str()),
        ))
        .await?;
        let mut fresh = Vec::new();
        for g in &groups {
            if !self.ledgers.contains_key(&g.group_id) {
                self.insert_ledger(g.group_id, &g.status)?;
                self.names.insert(g.group_id, g.external_id.clone());
                fresh.push(g.group_id);
            }
        }
        for row in tx.load_accounts(&fresh).await? {
            self.put_account(row)?;
        }
        for m in members {
            if let Some(g) = groups.iter().find(|g| Some(g.group_id) == m.group_id)
                && g.status == "active"
                && g.group_id != m.id
            {
                self.group_of
                    .insert(m.id, (g.group_id, g.share_percent.clamp(0, 100) as u32));
            }
        }
        self.spare_ids = tx.reserve_journal_ids(accruals * 2).await?;
        self.spare_ids.reverse();
        Ok(())
    }

    /// Moves the group's share of what an accrual just credited to the member.
    fn pool_share(
        &mut self,
        member_id: i64,
        processed: &mut fidelis_core::process::Processed,
    ) -> Result<()> {
        let Some(&(group_id, share)) = self.group_of.get(&member_id) else {
            return Ok(());
        };
        if processed.record.kind != RecordKind::Accrual {
            return Ok(());
        }
        let (Some(a), Some(b)) = (self.spare_ids.pop(), self.spare_ids.pop()) else {
            return Err(StoreError::Inconsistent(
                "too few journal ids reserved for group shares".into(),
            ));
        };
        let (Some(mut member), Some(mut group)) = (
            self.ledgers.remove(&member_id),
            self.ledgers.remove(&group_id),
        ) else {
            return Err(StoreError::Inconsistent(format!(
                "group {group_id} was not loaded"
            )));
        };
        let pooled = fidelis_core::lifecycle::pool(
            &self.lp.program,
            &mut member,
            &mut group,
            &processed.record.entries,
            share,
            (JournalId(a), JournalId(b)),
            self.now,
        );
        if let Some(p) = pooled {
            processed.outcome.pooled = p.points;
            processed.outcome.balances = process::balances(&self.lp.program, &member);
            for record in [p.given, p.received] {
                self.new_journals.push(NewJournal {
                    record_key: None,
                    record: Some(record),
                    document: None,
                    outcome: None,
                });
            }
        }
        self.ledgers.insert(member_id, member);
        self.ledgers.insert(group_id, group);
        Ok(())
    }

    /// Loads the members' tier standings; a member without one starts now (at the tier
    /// the qualifying balance reaches, for members who earned before the program had
    /// tiers).
    async fn load_tiers<T: LedgerTx>(&mut self, tx: &mut T, members: &[i64]) -> Result<()> {
        let rows = tx.load_tiers(members).await?;
        self.put_tiers(rows)
    }

    fn put_tiers(&mut self, rows: Vec<TierRow>) -> Result<()> {
        let program = &self.lp.program;
        for row in rows {
            let Some(ledger) = self.ledgers.get_mut(&row.member_id) else {
                continue;
            };
            // Balances matter only to start a standing (most members have one).
            let balances: Vec<i64> = match row.state {
                Some(_) => Vec::new(),
                None => ledger.accounts.iter().map(|a| a.available).collect(),
            };
            ledger.tiers = Some(crate::tiers::standing(program, &row, &balances, self.now)?);
        }
        Ok(())
    }

    /// Audits tier changes made by a journal (named) or an assessment.
    pub(crate) fn audit_tier_changes(
        &mut self,
        member_id: i64,
        changes: &[fidelis_core::tiers::TierChange],
        journal: Option<&str>,
    ) {
        for change in changes {
            let mut entry = crate::access::Actor {
                name: "system".into(),
                role: "system".into(),
            }
            .entry(
                self.now,
                "tier.change",
                Some(self.lp.program.code.as_str()),
                self.names.get(&member_id).map(String::as_str),
            );
            entry.before = Some(serde_json::json!({
                "group": change.group.as_str(),
                "tier": change.from.as_ref().map(|c| c.as_str()),
            }));
            entry.after = Some(serde_json::json!({
                "group": change.group.as_str(),
                "tier": change.to.as_str(),
                "reason": change.reason,
                "measure": change.measure,
                "at": change.at,
                "valid_until": change.valid_until,
                "journal": journal,
            }));
            self.audits.push(entry);
            let group = self
                .lp
                .program
                .tier_groups
                .iter()
                .find(|g| g.code == change.group);
            let rank = |code: Option<&fidelis_core::ids::Code>| {
                code.and_then(|c| group.and_then(|g| g.tiers.iter().position(|t| t.code == *c)))
            };
            let direction = match (rank(change.from.as_ref()), rank(Some(&change.to))) {
                (Some(from), Some(to)) if to < from => "down",
                (Some(from), Some(to)) if to == from => "same",
                _ => "up",
            };
            let member = self.names.get(&member_id).cloned().unwrap_or_default();
            self.new_events.push(crate::partners::NewEvent {
                kind: "tier.changed",
                member_id: Some(member_id),
                payload: serde_json::json!({"member": member, "group": change.group.as_str(),
                    "from": change.from.as_ref().map(|c| c.as_str()), "to": change.to.as_str(),
                    "direction": direction, "reason": change.reason, "at": change.at,
                    "valid_until": change.valid_until, "journal": journal})
                .to_string(),
                subject: member,
                occurred_at: change.at,
            });
        }
    }

    /// What screening says of `journal`: the answer of a held journal it repeats, or the
    /// verdict of the rule that holds it now (see [`Self::hold_journal`]).
    fn screen_journal(
        &mut self,
        member_id: i64,
        journal: &Journal,
        prepared: &Prepared,
    ) -> Result<Screened> {
        let Some(screen) = self.screen.as_mut() else {
            return Ok(Screened::Pass);
        };
        let program = &self.lp.program;
        let ledgers = &self.ledgers;
        let balances = || member_balances(ledgers, program, member_id);
        if let Some(row) = screen.held(journal.external_id.as_str()) {
            if !crate::fraud::same_document(&row.document, prepared) {
                return Ok(Screened::Answer(Box::new(Err(
                    JournalError::IdempotencyConflict(journal.external_id.to_string()),
                ))));
            }
            return Ok(Screened::Answer(Box::new(Ok(Posted {
                outcome: crate::fraud::held_outcome(row, journal, balances()),
                replayed: true,
            }))));
        }
        if !prepared.screened {
            return Ok(Screened::Pass);
        }
        let enrolled_at = self.ledgers.get(&member_id).and_then(|l| l.enrolled_at);
        Ok(
            match screen.judge(
                &program.fraud,
                member_id,
                journal,
                enrolled_at,
                &self.names,
                self.now,
            ) {
                Some(verdict) => Screened::Hold(verdict),
                None => Screened::Pass,
            },
        )
    }

    /// Keeps `journal` for review as `verdict` says: the hold is written with the batch,
    /// with a `journal.held` event.
    fn hold_journal(
        &mut self,
        member_id: i64,
        journal: &Journal,
        prepared: &Prepared,
        verdict: &fidelis_core::fraud::Verdict,
    ) -> Result<JournalResult> {
        let Some(screen) = self.screen.as_mut() else {
            return Err(StoreError::Inconsistent(
                "a journal held without screening".into(),
            ));
        };
        let program = &self.lp.program;
        let ledgers = &self.ledgers;
        let balances = || member_balances(ledgers, program, member_id);
        screen.hold(member_id, journal, prepared, verdict, self.now);
        screen.note(&program.fraud, member_id, journal, true);
        let Some(row) = screen.held(journal.external_id.as_str()) else {
            return Err(StoreError::Inconsistent("a held journal vanished".into()));
        };
        let outcome = crate::fraud::held_outcome(row, journal, balances());
        self.new_events.push(crate::partners::NewEvent {
            kind: "journal.held",
            member_id: Some(member_id),
            subject: journal.member.to_string(),
            payload: serde_json::json!({"member": journal.member.as_str(),
                "journal": journal.external_id.as_str(), "type": journal.body.type_code().as_str(),
                "rule": verdict.rule, "reason": verdict.reason})
            .to_string(),
            occurred_at: self.now,
        });
        Ok(Ok(Posted {
            outcome,
            replayed: false,
        }))
    }

    fn program(&self) -> &Program {
        &self.lp.program
    }

    fn currency(&self, code: &str) -> Result<CurrencyIx> {
        self.program().currency_ix(code).ok_or_else(|| {
            StoreError::Inconsistent(format!(
                "currency {code:?} is not in program {}",
                self.program().code
            ))
        })
    }

    /// A member's ledger with zero balances and no buckets loaded yet; accounts and
    /// buckets are filled in from their rows.
    fn insert_ledger(&mut self, member_id: i64, status: &str) -> Result<()> {
        let status = MemberStatus::parse(status)
            .ok_or_else(|| StoreError::Inconsistent(format!("member status {status:?}")))?;
        let mut ledger = MemberLedger::new(MemberId(member_id), status, self.program());
        ledger.buckets_loaded = false;
        self.ledgers.insert(member_id, ledger);
        Ok(())
    }

    fn put_facts(&mut self, row: MemberFactsRow) -> Result<()> {
        let profile = match serde_json::from_str::<serde_json::Value>(&row.profile)? {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        if let Some(ledger) = self.ledgers.get_mut(&row.member_id) {
            ledger.facts = Some(Arc::new(fidelis_core::promotions::MemberFacts {
                enrolled_at: Some(row.enrolled_at),
                profile,
                segments: row
                    .segments
                    .as_deref()
                    .map(|s| s.split(' ').map(str::to_owned).collect())
                    .unwrap_or_default(),
            }));
        }
        Ok(())
    }

    fn put_granted(&mut self, row: crate::rows::GrantedRow) -> Result<()> {
        let bad = |what: &str| StoreError::Inconsistent(format!("granted benefit {what}"));
        let code = fidelis_core::ids::Code::parse(&row.code).map_err(|_| bad(&row.code))?;
        let value = row
            .value
            .as_deref()
            .map(str::parse::<rust_decimal::Decimal>)
            .transpose()
            .map_err(|_| bad("value"))?;
        if let Some(ledger) = self.ledgers.get_mut(&row.member_id) {
            ledger
                .granted
                .push(fidelis_core::promotions::GrantedBenefit {
                    code,
                    value,
                    starts_at: row.starts_at,
                    ends_at: row.ends_at,
                });
        }
        Ok(())
    }

    fn put_account(&mut self, row: AccountRow) -> Result<()> {
        let ix = self.currency(&row.currency)?;
        self.loaded_accounts
            .insert((row.member_id, ix.0), row.next_transition_at);
        if let Some(ledger) = self.ledgers.get_mut(&row.member_id) {
            ledger.accounts[ix.index()] = Account {
                available: row.available,
                pending: row.pending,
                arrears: row.arrears,
                pool: row.pool,
                last_activity_at: row.last_activity_at,
                next_transition_at: row.next_transition_at,
                changed: false,
            };
        }
        Ok(())
    }

    /// Loads the open buckets of `members` (and the buckets the loaded records refer to)
    /// into their ledgers, keeping buckets already in memory.
    async fn load_buckets<T: LedgerTx>(&mut self, tx: &mut T, members: &[i64]) -> Result<()> {
        let members: Vec<i64> = members
            .iter()
            .copied()
            .filter(|m| self.ledgers.get(m).is_some_and(|l| !l.buckets_loaded))
            .collect();
        if members.is_empty() {
            return Ok(());
        }
        let mut rows = tx.load_open_buckets(&members).await?;
        // Closed buckets a cancellation gives points back to, and the buckets of journals
        // being refunded or cancelled (their expired points count).
        let member_set: FxHashSet<i64> = members.iter().copied().collect();
        let mut journals: Vec<(i64, i64)> = Vec::new();
        for record in self
            .records
            .values()
            .filter(|r| member_set.contains(&r.member.0))
        {
            journals.push((record.member.0, record.id.0));
            journals.extend(
                record
                    .entries
                    .iter()
                    .filter_map(|e| e.bucket)
                    .map(|b| (record.member.0, b.journal.0)),
            );
        }
        journals.sort_unstable();
        journals.dedup();
        if !journals.is_empty() {
            rows.extend(tx.load_journal_buckets(&journals).await?);
        }
        for row in rows {
            let bucket = self.bucket_from_row(&row)?;
            self.loaded_buckets.insert(bucket.id);
            if let Some(ledger) = self.ledgers.get_mut(&row.member_id)
                && ledger.buckets.iter().all(|b| b.id != bucket.id)
            {
                ledger.buckets.push(bucket);
            }
        }
        for m in members {
            if let Some(ledger) = self.ledgers.get_mut(&m) {
                ledger.buckets_loaded = true;
            }
        }
        Ok(())
    }

    fn bucket_from_row(&self, row: &BucketRow) -> Result<Bucket> {
        Ok(Bucket {
            id: EntryKey {
                journal: JournalId(row.journal_id),
                seq: row.seq as u32,
            },
            currency: self.currency(&row.currency)?,
            credited_at: row.credited_at,
            expires_at: row.expires_at,
            available_at: row.available_at,
            pending: row.pending,
            credited: row.credited,
            remaining: row.remaining,
            expired_unclaimed: row.expired_unclaimed,
            changed: false,
        })
    }

    /// Loads the records of the journals that the batch's refunds and cancellations refer
    /// to, the originals of refunds being cancelled, and the entries of cancellation
    /// targets.
    async fn load_related<T: LedgerTx>(
        &mut self,
        tx: &mut T,
        journals: &[&Journal],
        existing: &FxHashMap<String, JournalRow>,
    ) -> Result<()> {
        let mut targets: Vec<&JournalRow> = journals
            .iter()
            .filter_map(|j| j.body.original())
            .filter_map(|o| existing.get(o.as_str()))
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        targets.sort_by_key(|r| r.id);
        targets.dedup_by_key(|r| r.id);
        let originals: Vec<(i64, i64)> = targets
            .iter()
            .filter(|r| r.kind == RecordKind::Refund.name())
            .filter_map(|r| r.original_id.map(|o| (r.member_id, o)))
            .collect();
        let mut rows: Vec<JournalRow> = targets.into_iter().cloned().collect();
        if !originals.is_empty() {
            rows.extend(tx.load_journals_by_id(&originals).await?);
        }
        let cancelled: Vec<(i64, i64)> = journals
            .iter()
            .filter_map(|j| match &j.body {
                // Reversals and a hold's end need the entries they undo or convert.
                JournalBody::Cancellation { original }
                | JournalBody::Capture { original }
                | JournalBody::Release { original }
                | JournalBody::Redemption {
                    reserved: Some(original),
                    ..
                } => existing.get(original.as_str()),
                _ => None,
            })
            .map(|r| (r.member_id, r.id))
            .collect();
        let mut entries: FxHashMap<i64, Vec<Entry>> = FxHashMap::default();
        if !cancelled.is_empty() {
            for row in tx.load_entries(&cancelled).await? {
                let entry = self.entry_from_row(&row)?;
                entries.entry(row.journal_id).or_default().push(entry);
            }
        }
        for row in rows {
            let Some(name) = row.external_id.clone() else {
                continue;
            };
            if self.records.contains_key(&name) {
                continue;
            }
            if row.kind == RecordKind::Hold.name()
                && let Some(code) = row
                    .document
                    .as_deref()
                    .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
                    .and_then(|d| d.get("partner")?.as_str().map(str::to_owned))
            {
                self.hold_partners.insert(row.id, code);
            }
            let mut record = record_from_row(&row)?;
            record.entries = entries.remove(&row.id).unwrap_or_default();
            record.entries.sort_by_key(|e| e.key.seq);
            self.names_by_id.insert(row.id, name.clone());
            self.loaded.insert(name.clone());
            self.records.insert(name, record);
        }
        Ok(())
    }

    fn entry_from_row(&self, row: &EntryRow) -> Result<Entry> {
        let bad = |what: &str| {
            StoreError::Inconsistent(format!("entry {}/{}: {what}", row.journal_id, row.seq))
        };
        Ok(Entry {
            key: EntryKey {
                journal: JournalId(row.journal_id),
                seq: row.seq as u32,
            },
            currency: self.currency(&row.currency)?,
            kind: EntryKind::parse(&row.kind).ok_or_else(|| bad("kind"))?,
            pool: Pool::parse(&row.pool).ok_or_else(|| bad("pool"))?,
            bucket: match (row.bucket_journal_id, row.bucket_seq) {
                (Some(journal), Some(seq)) => Some(BucketId {
                    journal: JournalId(journal),
                    seq: seq as u32,
                }),
                _ => None,
            },
            amount: row.amount,
            effective_at: row.effective_at,
        })
    }

    /// Processes one journal; loads buckets and retries once if the core asks for them.
    pub(crate) async fn process<T: LedgerTx>(
        &mut self,
        tx: &mut T,
        member_id: i64,
        journal: &Journal,
        document: &str,
        ids: JournalIds,
    ) -> Result<JournalResult> {
        if let Some(result) = self.try_process(member_id, journal, document, ids)? {
            return Ok(result);
        }
        if let Some(ledger) = self.ledgers.get_mut(&member_id) {
            // Buckets loaded already, but a referenced one is missing: load the
            // referenced ones again.
            ledger.buckets_loaded = false;
        }
        self.load_buckets(tx, &[member_id]).await?;
        self.try_process(member_id, journal, document, ids)?
            .ok_or_else(|| {
                StoreError::Inconsistent(format!(
                    "journal {}: {}",
                    journal.external_id,
                    ProcessError::NeedsBuckets
                ))
            })
    }

    /// Processes one journal with what the batch holds: `None` when the core asks for
    /// buckets not read yet (nothing changed then; [`Self::process`] reads them).
    fn try_process(
        &mut self,
        member_id: i64,
        journal: &Journal,
        document: &str,
        ids: JournalIds,
    ) -> Result<Option<JournalResult>> {
        let mut related = self.take_related(journal);
        let Some(ledger) = self.ledgers.get_mut(&member_id) else {
            return Err(StoreError::Inconsistent(format!(
                "member {member_id} was not loaded"
            )));
        };
        let result = process::process(
            &self.lp.program,
            ledger,
            journal,
            &mut related,
            ids,
            self.now,
        );
        self.put_back(related);
        match result {
            Ok(mut processed) => {
                if !self.group_of.is_empty() {
                    self.pool_share(member_id, &mut processed)?;
                }
                if !processed.outcome.tier_changes.is_empty() {
                    let changes = processed.outcome.tier_changes.clone();
                    self.audit_tier_changes(
                        member_id,
                        &changes,
                        Some(journal.external_id.as_str()),
                    );
                }
                if !self.explain {
                    self.issue_vouchers(member_id, processed.record.id.0, &mut processed.outcome)?;
                    self.collect_awards(
                        member_id,
                        processed.record.id.0,
                        journal.occurred_at,
                        &processed.outcome,
                    );
                    self.partner_effects(
                        journal,
                        processed.record.id.0,
                        processed.record.original.map(|o| o.0),
                        &processed.outcome,
                    );
                    if matches!(journal.body, JournalBody::Cancellation { .. }) {
                        self.cancelled_journals
                            .extend(processed.record.original.map(|o| o.0));
                    }
                    self.journal_events(member_id, journal, &processed.outcome)?;
                }
                let outcome = stored_outcome(&mut processed.outcome)?;
                if let Some(settlement) = processed.settlement {
                    self.new_journals.push(NewJournal {
                        record_key: None,
                        record: Some(settlement),
                        document: None,
                        outcome: None,
                    });
                }
                let name = journal.external_id.as_str();
                let (record_key, record) = if self.referenced.contains(name) {
                    self.names_by_id
                        .insert(processed.record.id.0, name.to_owned());
                    self.records.insert(name.to_owned(), processed.record);
                    (Some(name.to_owned()), None)
                } else {
                    (None, Some(processed.record))
                };
                self.new_journals.push(NewJournal {
                    record_key,
                    record,
                    document: Some(document.to_owned()),
                    outcome: Some(outcome),
                });
                Ok(Some(Ok(Posted {
                    outcome: processed.outcome,
                    replayed: false,
                })))
            }
            Err(ProcessError::Refused(e)) => Ok(Some(Err(e))),
            Err(ProcessError::NeedsBuckets) => Ok(None),
            Err(e) => Err(StoreError::Inconsistent(format!(
                "journal {}: {e}",
                journal.external_id
            ))),
        }
    }

    /// The outbox's events of a processed journal, written with the batch: points earned
    /// (what its awards add up to per currency), points redeemed, vouchers issued. Tier
    /// changes have theirs from [`Self::audit_tier_changes`].
    ///
    /// On the hot path: each payload is serialized straight from borrowed parts (no
    /// `serde_json::Value` built in between).
    fn journal_events(
        &mut self,
        member_id: i64,
        journal: &Journal,
        outcome: &Outcome,
    ) -> Result<()> {
        /// `points.earned` and `points.redeemed`.
        #[derive(serde::Serialize)]
        struct Points<'a> {
            member: &'a str,
            journal: &'a str,
            #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
            kind: Option<&'a str>,
            points: &'a [fidelis_core::outcome::PointsOf],
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            awards: &'a [fidelis_core::outcome::Award],
        }
        let member = journal.member.as_str();
        let journal_id = journal.external_id.as_str();
        if self.earned_events && !outcome.awards.is_empty() {
            let mut points = Vec::new();
            for award in &outcome.awards {
                Outcome::add(&mut points, &award.currency, award.points);
            }
            if points.iter().any(|p| p.points > 0) {
                self.new_events.push(crate::partners::NewEvent {
                    kind: "points.earned",
                    member_id: Some(member_id),
                    subject: member.to_owned(),
                    payload: serde_json::to_string(&Points {
                        member,
                        journal: journal_id,
                        kind: outcome.journal_type.as_ref().map(|t| t.as_str()),
                        points: &points,
                        awards: &outcome.awards,
                    })?,
                    occurred_at: journal.occurred_at,
                });
            }
        }
        if matches!(journal.body, JournalBody::Redemption { .. }) && !outcome.debited.is_empty() {
            self.new_events.push(crate::partners::NewEvent {
                kind: "points.redeemed",
                member_id: Some(member_id),
                subject: member.to_owned(),
                payload: serde_json::to_string(&Points {
                    member,
                    journal: journal_id,
                    kind: None,
                    points: &outcome.debited,
                    awards: &[],
                })?,
                occurred_at: journal.occurred_at,
            });
        }
        for promotion in &outcome.promotions {
            for reward in promotion.rewards.iter().filter(|r| r.voucher.is_some()) {
                self.new_events.push(crate::partners::NewEvent {
                    kind: "voucher.issued",
                    member_id: Some(member_id),
                    subject: member.to_owned(),
                    payload: serde_json::json!({"member": member, "journal": journal_id,
                        "definition": reward.code.as_str(), "voucher": reward.voucher,
                        "promotion": promotion.promotion.as_str()})
                    .to_string(),
                    occurred_at: journal.occurred_at,
                });
            }
        }
        Ok(())
    }

    /// Draws a voucher for each voucher a promotion awarded the journal: its code goes in
    /// the outcome (a retry answers the same codes), the voucher is written with the
    /// batch. The journal's id and the reward's place make issuing it once only.
    fn issue_vouchers(
        &mut self,
        member_id: i64,
        journal_id: i64,
        outcome: &mut Outcome,
    ) -> Result<()> {
        let program = &self.lp.program;
        let mut n = 0;
        for promotion in &mut outcome.promotions {
            for reward in promotion.rewards.iter_mut().filter(|r| r.kind == "voucher") {
                let Some(definition) = program.voucher(reward.code.as_str()) else {
                    continue;
                };
                let new = crate::vouchers::NewVoucher::new(
                    program,
                    definition,
                    Some(member_id),
                    format!("promotion:{}", promotion.promotion),
                    format!("journal:{journal_id}:{n}"),
                    self.now,
                    "promotion",
                )?;
                n += 1;
                reward.voucher = Some(new.code.clone());
                self.new_vouchers.push(new);
            }
        }
        Ok(())
    }

    /// Collects the badges and benefits a journal's promotions awarded, written with the
    /// batch (see `badges`).
    /// A benefit holds from the journal's activity instant `at` for its days, as the core
    /// saw it when later journals of the batch were evaluated.
    fn collect_awards(
        &mut self,
        member_id: i64,
        journal_id: i64,
        at: DateTime<Utc>,
        outcome: &Outcome,
    ) {
        let program = &self.lp.program;
        for promotion in &outcome.promotions {
            for (n, reward) in promotion.rewards.iter().enumerate() {
                match reward.kind.as_ref() {
                    "badge" => self.new_badges.push(crate::badges::NewBadge {
                        member_id,
                        badge: reward.code.to_string(),
                        repeatable: program
                            .badge(reward.code.as_str())
                            .is_some_and(|b| b.repeatable),
                        source: format!("promotion:{}", promotion.promotion),
                    }),
                    "benefit" => {
                        let granted = program
                            .promotions
                            .iter()
                            .filter(|p| p.code.as_str() == promotion.promotion.as_str())
                            .flat_map(|p| &p.actions)
                            .find_map(|a| match a {
                                fidelis_core::promotions::Action::Benefit { benefit, days }
                                    if benefit.code == reward.code =>
                                {
                                    Some((benefit, *days))
                                }
                                _ => None,
                            });
                        if let Some((benefit, days)) = granted {
                            self.new_benefits.push(crate::badges::NewBenefit {
                                member_id,
                                code: benefit.code.to_string(),
                                name: benefit.name.clone(),
                                value: benefit.value.map(|v| v.to_string()),
                                starts_at: at,
                                ends_at: at + chrono::Duration::days(i64::from(days)),
                                source: format!("promotion:{}", promotion.promotion),
                                source_key: format!(
                                    "journal:{journal_id}:{}:{n}",
                                    promotion.promotion
                                ),
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn take_related(&mut self, journal: &Journal) -> Related {
        let mut related = Related {
            explain: self.explain,
            counters: std::mem::take(&mut self.counters),
            pack: if self.partners.is_empty() {
                None
            } else {
                self.pack_guard(journal)
            },
            ..Related::default()
        };
        let Some(original) = journal.body.original() else {
            return related;
        };
        related.target = self.records.remove(original.as_str());
        let refunded = related
            .target
            .as_ref()
            .filter(|t| t.kind == RecordKind::Refund)
            .and_then(|t| t.original);
        if let Some(name) = refunded.and_then(|id| self.names_by_id.get(&id.0)).cloned() {
            related.target_original = self.records.remove(&name);
        }
        related
    }

    fn put_back(&mut self, related: Related) {
        self.counters = related.counters;
        for record in [related.target, related.target_original]
            .into_iter()
            .flatten()
        {
            if let Some(name) = record.external_id.as_ref().map(ToString::to_string) {
                self.records.insert(name, record);
            }
        }
    }

    /// The rows of the members `finished` (sorted) and of their new journals, taken out
    /// of the batch to be written while it goes on ([`LedgerTx::write_beside`]): what the
    /// batch writes at its end no longer holds them, and a later change to them would be
    /// written as an update of what was written.
    fn take_finished(&mut self, finished: &[i64]) -> Result<WriteSet> {
        let members: FxHashSet<i64> = finished.iter().copied().collect();
        let mut rows = WriteSet::default();
        let mut kept = Vec::with_capacity(self.new_journals.len());
        for new in std::mem::take(&mut self.new_journals) {
            let Some(member) = self
                .record_of(&new.record, &new.record_key)?
                .map(|r| r.member.0)
            else {
                continue;
            };
            if !members.contains(&member) {
                kept.push(new);
                continue;
            }
            if let Some(key) = self.push_new(new, &mut rows.journals, &mut rows.entries)? {
                if let Some(record) = self.records.get_mut(&key) {
                    record.changed = false;
                }
                self.loaded.insert(key);
            }
        }
        self.new_journals = kept;
        for &member in finished {
            self.push_ledger(
                member,
                &mut rows.buckets,
                &mut rows.accounts,
                &mut rows.tiers,
            )?;
            let Some(ledger) = self.ledgers.get_mut(&member) else {
                continue;
            };
            for bucket in ledger.buckets.iter_mut().filter(|b| b.changed) {
                bucket.changed = false;
                self.loaded_buckets.insert(bucket.id);
            }
            for (i, account) in ledger
                .accounts
                .iter_mut()
                .enumerate()
                .filter(|(_, a)| a.changed)
            {
                account.changed = false;
                self.loaded_accounts
                    .insert((member, i as u16), account.next_transition_at);
            }
            if let Some(tiers) = ledger.tiers.as_mut() {
                tiers.changed = false;
            }
        }
        Ok(rows)
    }

    /// The record of a journal the batch wrote: its own, or the one kept under its name
    /// for later journals of the batch (`None`: neither).
    fn record_of<'b>(
        &'b self,
        record: &'b Option<JournalRecord>,
        key: &Option<String>,
    ) -> Result<Option<&'b JournalRecord>> {
        Ok(match (record, key) {
            (Some(record), _) => Some(record),
            (None, Some(key)) => Some(self.records.get(key).ok_or_else(|| vanished(key))?),
            (None, None) => None,
        })
    }

    /// A journal the batch wrote, as rows (none for neither record nor name); answers the
    /// name its record is kept under, if it is.
    fn push_new(
        &self,
        new: NewJournal,
        journals: &mut Vec<JournalRow>,
        entries: &mut Vec<EntryRow>,
    ) -> Result<Option<String>> {
        if let Some(record) = self.record_of(&new.record, &new.record_key)? {
            self.push_journal(record, new.document, new.outcome, journals, entries)?;
        }
        Ok(new.record_key)
    }

    /// A new journal's row and its entries' rows.
    fn push_journal(
        &self,
        record: &JournalRecord,
        document: Option<String>,
        outcome: Option<String>,
        journals: &mut Vec<JournalRow>,
        entries: &mut Vec<EntryRow>,
    ) -> Result<()> {
        let program = &self.lp.program;
        entries.extend(record.entries.iter().map(|e| {
            entry_row(
                record.member,
                e,
                program.currency(e.currency).code.to_string(),
            )
        }));
        journals.push(JournalRow {
            member_id: record.member.0,
            id: record.id.0,
            external_id: record.external_id.as_ref().map(ToString::to_string),
            kind: record.kind.name().to_owned(),
            type_name: record.type_name.to_string(),
            status: record.status.name().to_owned(),
            original_id: record.original.map(|o| o.0),
            occurred_at: record.occurred_at,
            recorded_at: record.recorded_at,
            document,
            outcome,
            state: state_json(&record.state)?,
            hold_until: record.open_hold_until(),
        });
        Ok(())
    }

    /// A member's changed buckets, accounts and tier standing, as rows.
    fn push_ledger(
        &self,
        member: i64,
        buckets: &mut Vec<BucketRow>,
        accounts: &mut Vec<AccountRow>,
        tiers: &mut Vec<crate::rows::TierSave>,
    ) -> Result<()> {
        let program = &self.lp.program;
        let code = |ix: CurrencyIx| program.currency(ix).code.to_string();
        let Some(ledger) = self.ledgers.get(&member) else {
            return Ok(());
        };
        for bucket in ledger.buckets.iter().filter(|b| b.changed) {
            buckets.push(BucketRow {
                existing: self.loaded_buckets.contains(&bucket.id),
                member_id: member,
                journal_id: bucket.id.journal.0,
                seq: bucket.id.seq as i32,
                currency: code(bucket.currency),
                credited_at: bucket.credited_at,
                expires_at: bucket.expires_at,
                available_at: bucket.available_at,
                pending: bucket.pending,
                credited: bucket.credited,
                remaining: bucket.remaining,
                expired_unclaimed: bucket.expired_unclaimed,
            });
        }
        for (i, account) in ledger
            .accounts
            .iter()
            .enumerate()
            .filter(|(_, a)| a.changed)
        {
            let stored = self.loaded_accounts.get(&(member, i as u16));
            accounts.push(AccountRow {
                existing: stored.is_some(),
                transition_changed: stored != Some(&account.next_transition_at),
                member_id: member,
                currency: code(CurrencyIx(i as u16)),
                available: account.available,
                pending: account.pending,
                arrears: account.arrears,
                pool: account.pool,
                last_activity_at: account.last_activity_at,
                next_transition_at: account.next_transition_at,
            });
        }
        if let Some(t) = ledger.tiers.as_ref().filter(|t| t.changed) {
            tiers.push(crate::rows::TierSave {
                member_id: member,
                state: serde_json::to_string(t)?,
                next_due_at: t.next_due(),
            });
        }
        Ok(())
    }

    /// Writes everything the batch changed.
    pub(crate) async fn write<T: LedgerTx>(&mut self, tx: &mut T) -> Result<()> {
        let mut journal_rows = Vec::with_capacity(self.new_journals.len());
        let mut entry_rows = Vec::new();
        // Taken, not copied: a journal's document and outcome are most of its row's bytes,
        // and a batch is written once.
        for new in std::mem::take(&mut self.new_journals) {
            self.push_new(new, &mut journal_rows, &mut entry_rows)?;
        }
        let mut updates = Vec::new();
        for name in &self.loaded {
            if let Some(record) = self.records.get(name).filter(|r| r.changed) {
                updates.push(JournalUpdate {
                    member_id: record.member.0,
                    id: record.id.0,
                    status: record.status.name().to_owned(),
                    state: state_json(&record.state)?,
                    hold_until: record.open_hold_until(),
                });
            }
        }
        let mut bucket_rows = Vec::new();
        let mut account_rows = Vec::new();
        let mut tiers = Vec::new();
        let mut members: Vec<i64> = self.ledgers.keys().copied().collect();
        members.sort_unstable();
        for member in members {
            self.push_ledger(member, &mut bucket_rows, &mut account_rows, &mut tiers)?;
        }
        let rows = WriteSet {
            journals: journal_rows,
            entries: entry_rows,
            buckets: bucket_rows,
            accounts: account_rows,
            updates,
            tiers,
            audits: std::mem::take(&mut self.audits),
            events: std::mem::take(&mut self.new_events),
            // With the batch's own statement: what the rules remember changes with most
            // batches, and a wave of suspicious traffic holds journals in most batches
            // (receipts are written apart).
            risk: self
                .screen
                .as_mut()
                .map(crate::fraud::Screen::take_risk)
                .unwrap_or_default(),
            held: self
                .screen
                .as_mut()
                .map(|s| std::mem::take(&mut s.save.held))
                .unwrap_or_default(),
            counters: std::mem::take(&mut self.counters.deltas)
                .into_iter()
                .filter(|(_, c)| c.times != 0 || c.points != 0)
                .collect(),
        };
        tx.write_batch(self.lp.id, &rows).await?;
        if let Some(screen) = self.screen.as_mut()
            && !screen.save.is_empty()
        {
            tx.save_screening(self.lp.id, &screen.save).await?;
        }
        if !self.new_vouchers.is_empty() {
            let vouchers = std::mem::take(&mut self.new_vouchers);
            tx.insert_vouchers(self.lp.id, &vouchers, self.now).await?;
        }
        if !self.cancelled_journals.is_empty() {
            let cancelled = std::mem::take(&mut self.cancelled_journals);
            tx.cancel_journal_vouchers(self.lp.id, &cancelled, self.now)
                .await?;
        }
        if !self.new_badges.is_empty() || !self.new_benefits.is_empty() {
            let badges = std::mem::take(&mut self.new_badges);
            let benefits = std::mem::take(&mut self.new_benefits);
            tx.insert_awards(self.lp.id, &badges, &benefits, self.now)
                .await?;
        }
        if !self.new_partner_entries.is_empty() {
            let entries = std::mem::take(&mut self.new_partner_entries);
            tx.write_partner_entries(self.lp.id, &entries, self.now)
                .await?;
        }
        Ok(())
    }
}

fn vanished(key: &str) -> StoreError {
    StoreError::Inconsistent(format!("journal {key} vanished from its batch"))
}

fn entry_row(member: MemberId, e: &Entry, currency: String) -> EntryRow {
    EntryRow {
        member_id: member.0,
        journal_id: e.key.journal.0,
        seq: e.key.seq as i32,
        currency,
        kind: e.kind.name().to_owned(),
        pool: e.pool.name().to_owned(),
        bucket_journal_id: e.bucket.map(|b| b.journal.0),
        bucket_seq: e.bucket.map(|b| b.seq as i32),
        amount: e.amount,
        effective_at: e.effective_at,
    }
}

fn state_json(state: &JournalState) -> Result<Option<String>> {
    Ok(match state {
        JournalState::None => None,
        other => Some(serde_json::to_string(other)?),
    })
}

pub(crate) fn record_from_row(row: &JournalRow) -> Result<JournalRecord> {
    let bad = |what: &str| StoreError::Inconsistent(format!("journal {}: {what}", row.id));
    Ok(JournalRecord {
        id: JournalId(row.id),
        external_id: row
            .external_id
            .as_deref()
            .map(fidelis_core::ids::ExternalId::parse)
            .transpose()
            .map_err(|_| bad("external id"))?,
        member: MemberId(row.member_id),
        kind: RecordKind::parse(&row.kind).ok_or_else(|| bad("kind"))?,
        type_name: fidelis_core::ids::Code::parse(&row.type_name).map_err(|_| bad("type"))?,
        occurred_at: row.occurred_at,
        recorded_at: row.recorded_at,
        status: RecordStatus::parse(&row.status).ok_or_else(|| bad("status"))?,
        original: row.original_id.map(JournalId),
        state: match &row.state {
            Some(s) => serde_json::from_str(s)?,
            None => JournalState::None,
        },
        entries: Vec::new(),
        changed: false,
    })
}

/// (promotion, period) of the members' own counters the accruals among `journals` may
/// touch (what [`counter_keys`] would name for any member), known before the members'
/// ids are.
fn member_counter_periods(program: &Program, journals: &[&Journal]) -> Vec<(String, String)> {
    // Any id other than the all-member one names the member's own counters.
    let anyone = MemberId(fidelis_core::promotions::limits::EVERYONE + 1);
    let mut pairs = std::collections::BTreeSet::new();
    for journal in journals {
        let JournalBody::Accrual(accrual) = &journal.body else {
            continue;
        };
        for p in program.promotions.iter().filter(|p| p.counts()) {
            if p.in_force_for(accrual, journal.occurred_at) {
                pairs.extend(
                    p.counter_keys(anyone, program.time_zone, journal.occurred_at)
                        .into_iter()
                        .filter(|k| k.member == anyone.0)
                        .map(|k| (k.promotion.to_string(), k.period)),
                );
            }
        }
    }
    pairs.into_iter().collect()
}

/// The limit counters the batch's accruals may use: for each accrual, those of every
/// limited promotion in force for it (reversals only add to counters, so they need none
/// loaded). Sorted, so all-member rows are locked in one order.
fn counter_keys(
    program: &Program,
    journals: &[&Journal],
    member_by_name: &FxHashMap<&str, i64>,
) -> Vec<fidelis_core::promotions::limits::CounterKey> {
    // A hash set, sorted once at the end: a large batch makes one key per journal and
    // counting promotion, and keeping a tree ordered compared their strings at every insert.
    let mut keys = FxHashSet::default();
    for journal in journals {
        let JournalBody::Accrual(accrual) = &journal.body else {
            continue;
        };
        let Some(&member) = member_by_name.get(journal.member.as_str()) else {
            continue;
        };
        for p in program.promotions.iter().filter(|p| p.counts()) {
            if p.in_force_for(accrual, journal.occurred_at) {
                keys.extend(p.counter_keys(
                    MemberId(member),
                    program.time_zone,
                    journal.occurred_at,
                ));
            }
        }
    }
    let mut keys: Vec<_> = keys.into_iter().collect();
    keys.sort_unstable();
    keys
}
