//! Rows as the two SQL dialects read and write them, and the contract each dialect
//! implements ([`LedgerTx`]). The engine converts between rows and core types; the
//! dialects only move rows.

pub use fidelis_core::promotions::limits::{Count, CounterKey};
use std::future::Future;

use chrono::{DateTime, Utc};

use crate::error::{Result, StoreError};

/// A member as resolved from its external id.
#[derive(Debug, Clone)]
pub struct MemberRow {
    /// The member's id — the survivor's, for a member merged into another.
    pub id: i64,
    pub external_id: String,
    pub status: String,
    /// For a merged member: the survivor's external id (journals for the merged member
    /// go to the survivor, under the survivor's lock too).
    pub owner: Option<String>,
    /// The group (household) the member gives a share of their earning to.
    pub group_id: Option<i64>,
    /// When the member named enrolled (a purchase long before it earns nothing); `None`
    /// where no journal of the member's is processed (scheduled settlement).
    pub enrolled_at: Option<DateTime<Utc>>,
}

/// A member's profile (JSON text) and enrolment instant.
#[derive(Debug, Clone)]
pub struct MemberFactsRow {
    pub member_id: i64,
    pub profile: String,
    pub enrolled_at: DateTime<Utc>,
    /// The segments the member was in at the last refresh, separated by spaces.
    pub segments: Option<String>,
}

/// A benefit granted to a member for a period, as stored.
#[derive(Debug, Clone)]
pub struct GrantedRow {
    pub member_id: i64,
    pub code: String,
    /// The benefit's value as a decimal text, if it has one.
    pub value: Option<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

/// A member's tier standing as stored, or (`state` `None`) the enrolment instant of a
/// member who has none yet.
#[derive(Debug, Clone)]
pub struct TierRow {
    pub member_id: i64,
    pub enrolled_at: Option<DateTime<Utc>>,
    pub state: Option<String>,
}

/// A group (household) as the engine needs it: its member record and the share.
#[derive(Debug, Clone)]
pub struct GroupRow {
    pub group_id: i64,
    pub external_id: String,
    pub status: String,
    pub share_percent: i32,
}

/// A tier standing to write.
#[derive(Debug, Clone)]
pub struct TierSave {
    pub member_id: i64,
    pub state: String,
    pub next_due_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct AccountRow {
    /// The row exists in the database (it was loaded): an update, not an insert.
    pub existing: bool,
    pub member_id: i64,
    pub currency: String,
    pub available: i64,
    pub pending: i64,
    pub arrears: i64,
    pub pool: i64,
    pub last_activity_at: Option<DateTime<Utc>>,
    pub next_transition_at: Option<DateTime<Utc>>,
    /// Its next transition differs from the stored one (always true of a new row).
    pub transition_changed: bool,
}

#[derive(Debug, Clone)]
pub struct BucketRow {
    /// The row exists in the database (it was loaded): an update, not an insert.
    pub existing: bool,
    pub member_id: i64,
    pub journal_id: i64,
    pub seq: i32,
    pub currency: String,
    pub credited_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub available_at: DateTime<Utc>,
    pub pending: bool,
    pub credited: i64,
    pub remaining: i64,
    pub expired_unclaimed: i64,
}

#[derive(Debug, Clone)]
pub struct EntryRow {
    pub member_id: i64,
    pub journal_id: i64,
    pub seq: i32,
    pub currency: String,
    pub kind: String,
    pub pool: String,
    pub bucket_journal_id: Option<i64>,
    pub bucket_seq: Option<i32>,
    pub amount: i64,
    pub effective_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct JournalRow {
    pub member_id: i64,
    pub id: i64,
    pub external_id: Option<String>,
    pub kind: String,
    pub type_name: String,
    pub status: String,
    pub original_id: Option<i64>,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub document: Option<String>,
    pub outcome: Option<String>,
    pub state: Option<String>,
    /// Until when an open hold may be captured (written, not read back: `None` when read).
    pub hold_until: Option<DateTime<Utc>>,
}

/// A change of status and state of an existing journal (refunded, cancelled).
#[derive(Debug, Clone)]
pub struct JournalUpdate {
    pub member_id: i64,
    pub id: i64,
    pub status: String,
    pub state: Option<String>,
    /// Until when an open hold may be captured: `None` once it ended.
    pub hold_until: Option<DateTime<Utc>>,
}

/// Where an import stands after a batch, written in the batch's transaction.
#[derive(Debug, Clone, Default)]
pub struct CheckpointRow {
    pub run_id: i64,
    pub partition: i32,
    pub byte_offset: i64,
    pub line: i64,
    pub applied: i64,
    pub replayed: i64,
    pub rejected: i64,
    pub rejections: Vec<RejectionRow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectionRow {
    pub line: i64,
    pub external_id: Option<String>,
    pub code: String,
    pub reason: String,
}

/// What a batch reads first, under its members' locks: the program's current revision,
/// the members, their accounts, the journals it names (replays and originals), and fresh
/// journal ids.
#[derive(Debug, Clone, Default)]
pub struct Opening {
    /// `None` when the program no longer exists.
    pub revision: Option<i32>,
    pub members: Vec<MemberRow>,
    pub accounts: Vec<AccountRow>,
    pub journals: Vec<JournalRow>,
    pub ids: Vec<i64>,
    /// The members' tier standings, when the dialect read them with the rest (asked for
    /// with `with_tiers`); `None`: read them with [`LedgerTx::load_tiers`].
    pub tiers: Option<Vec<TierRow>>,
    /// What fraud rules need (held journals among the names, the members' recent
    /// journals), when asked for with `screen`.
    pub screening: Option<Screening>,
    /// The members' facts, when the dialect read them with the rest (asked for with
    /// [`OpeningReads::facts`]); `None`: read them with [`LedgerTx::load_member_facts`].
    pub facts: Option<Vec<MemberFactsRow>>,
    /// The members' own promotion counters for [`OpeningReads::counter_periods`], when
    /// the dialect read them with the rest; `None`: read them with
    /// [`LedgerTx::load_counters`]. All-member counters are never among them (they are
    /// locked apart, in key order).
    pub counters: Option<Vec<(CounterKey, Count)>>,
}

/// What a batch's opening may read besides its basics, for a dialect that reads it all in
/// one statement (the others ignore it, and the engine reads these apart).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpeningReads<'a> {
    /// The members' facts for promotion conditions; `Some(true)` with their segments.
    pub facts: Option<bool>,
    /// (promotion, period) of the members' own counters the batch's journals may touch:
    /// every member of the batch's rows for these are read (under the members' locks,
    /// which guard them).
    pub counter_periods: &'a [(String, String)],
}

/// A promotion's code as stored with its counters: written from a parsed code, so one
/// that does not parse is a damaged row.
pub(crate) fn stored_promotion(code: &str) -> Result<fidelis_core::ids::Code> {
    fidelis_core::ids::Code::parse(code)
        .map_err(|e| StoreError::Inconsistent(format!("promotion {code:?}: {e}")))
}

/// What a batch writes at its end.
#[derive(Debug, Clone, Default)]
pub struct WriteSet {
    pub journals: Vec<JournalRow>,
    pub entries: Vec<EntryRow>,
    pub buckets: Vec<BucketRow>,
    pub accounts: Vec<AccountRow>,
    pub updates: Vec<JournalUpdate>,
    /// Tier standings changed.
    pub tiers: Vec<TierSave>,
    /// Audit entries (tier changes) of the batch.
    pub audits: Vec<crate::access::AuditEntry>,
    /// The outbox's events of the batch.
    pub(crate) events: Vec<crate::partners::NewEvent>,
    /// What fraud rules remember of members (`member_risk`), rewritten.
    pub risk: Vec<(i64, String)>,
    /// Journals fraud rules held in the batch (`held_journals`).
    pub held: Vec<HeldRow>,
    /// Promotion counters' changes (added to the stored counts, created when missing).
    pub counters: Vec<(CounterKey, Count)>,
}

/// One transaction on the ledger tables, as each dialect implements it. The engine
/// drives it; every method moves rows in bulk (one statement per call where the dialect
/// allows), because per-row round trips would dominate a batch's cost.
pub trait LedgerTx: Send {
    /// Members of a program by external id (those that exist), with their status.
    fn resolve_members(
        &mut self,
        program_id: i64,
        external_ids: &[&str],
    ) -> impl Future<Output = Result<Vec<MemberRow>>> + Send;
    /// Serialises writers per member until the transaction ends. The keys are
    /// [`crate::engine::member_lock_key`]s, sorted, so concurrent batches take their locks
    /// in one order and never deadlock. Whatever the transaction reads afterwards is
    /// current for those members.
    fn lock_members(&mut self, keys: &[i64]) -> impl Future<Output = Result<()>> + Send;
    fn load_accounts(
        &mut self,
        member_ids: &[i64],
    ) -> impl Future<Output = Result<Vec<AccountRow>>> + Send;
    /// Reads promotion limit counters; the all-member ones (member 0) are created if
    /// missing and locked until the transaction ends, in key order, so concurrent batches
    /// take turns on them. Members' counters are guarded by the members' locks.
    fn load_counters(
        &mut self,
        program_id: i64,
        keys: &[CounterKey],
    ) -> impl Future<Output = Result<Vec<(CounterKey, Count)>>> + Send;
    /// Adds `deltas` to the stored counters.
    fn add_counters(
        &mut self,
        program_id: i64,
        deltas: &[(CounterKey, Count)],
    ) -> impl Future<Output = Result<()>> + Send;
    /// The members' profiles and enrolment instants, for promotion conditions that read
    /// them, and their segments when `segments` (for promotions gated by segment).
    fn load_member_facts(
        &mut self,
        member_ids: &[i64],
        segments: bool,
    ) -> impl Future<Output = Result<Vec<MemberFactsRow>>> + Send;
    /// The benefits promotions granted the members for a period that still hold at or
    /// after `since`, for promotions that read benefits.
    fn load_granted(
        &mut self,
        member_ids: &[i64],
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<GrantedRow>>> + Send;
    /// The members' tier standings (every member, `state` `None` when there is none), with
    /// their enrolment instants.
    fn load_tiers(
        &mut self,
        member_ids: &[i64],
    ) -> impl Future<Output = Result<Vec<TierRow>>> + Send;
    /// Writes tier standings (insert or replace).
    fn save_tiers(
        &mut self,
        program_id: i64,
        rows: &[TierSave],
    ) -> impl Future<Output = Result<()>> + Send;
    /// Inserts vouchers issued by the batch's promotions (skipping any whose source key
    /// exists), with their issue entries.
    fn insert_vouchers(
        &mut self,
        program_id: i64,
        rows: &[crate::vouchers::NewVoucher],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Cancels the unused vouchers the promotions of these journals (by id) issued, as
    /// their journals are cancelled.
    fn cancel_journal_vouchers(
        &mut self,
        program_id: i64,
        journal_ids: &[i64],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Writes badges and benefits awarded by the batch's promotions.
    fn insert_awards(
        &mut self,
        program_id: i64,
        badges: &[crate::badges::NewBadge],
        benefits: &[crate::badges::NewBenefit],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Reads the partner `code` of the program, locking it until the transaction ends.
    fn lock_partner(
        &mut self,
        program_id: i64,
        code: &str,
    ) -> impl Future<Output = Result<Option<crate::partners::PartnerRow>>> + Send;
    /// The partner entries of these journals and of the reversals of them, in id order.
    fn load_partner_movements(
        &mut self,
        journal_ids: &[i64],
    ) -> impl Future<Output = Result<Vec<crate::partners::MovementRow>>> + Send;
    /// Writes the batch's partner entries and the packs they change.
    fn write_partner_entries(
        &mut self,
        program_id: i64,
        entries: &[crate::partners::NewPartnerEntry],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Appends the batch's events to the outbox.
    fn insert_events(
        &mut self,
        program_id: i64,
        events: &[crate::partners::NewEvent],
    ) -> impl Future<Output = Result<()>> + Send;
    /// What fraud rules need for a batch: the held journals among `names`, what the rules
    /// remember of `member_ids`, and which other members sent any of `receipts`.
    fn load_screening(
        &mut self,
        program_id: i64,
        names: &[&str],
        member_ids: &[i64],
        receipts: &[String],
    ) -> impl Future<Output = Result<Screening>> + Send;
    /// Writes what screening a batch left: new held journals, members' recent journals,
    /// receipts seen.
    fn save_screening(
        &mut self,
        program_id: i64,
        saved: &ScreeningSave,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Decides a held journal: `held` becomes `status` if it still is `held` (the row as
    /// decided), else nothing changes (`None`).
    fn decide_held(
        &mut self,
        program_id: i64,
        external_id: &str,
        decision: &HeldDecision<'_>,
    ) -> impl Future<Output = Result<Option<HeldRow>>> + Send;
    /// How many open holds (pay with points) these members have.
    fn count_open_holds(&mut self, member_ids: &[i64]) -> impl Future<Output = Result<i64>> + Send;
    /// The groups with these ids.
    fn load_groups(
        &mut self,
        group_ids: &[i64],
    ) -> impl Future<Output = Result<Vec<GroupRow>>> + Send;
    /// Marks the referral of these members qualified (for those referred whose referral
    /// had not qualified yet).
    fn mark_referrals(
        &mut self,
        member_ids: &[i64],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Appends audit entries (tier changes made by journals and assessments).
    fn insert_audits(
        &mut self,
        entries: &[crate::access::AuditEntry],
    ) -> impl Future<Output = Result<()>> + Send;
    /// The members' buckets still holding points (or expired points not yet accounted
    /// for by a reversal).
    fn load_open_buckets(
        &mut self,
        member_ids: &[i64],
    ) -> impl Future<Output = Result<Vec<BucketRow>>> + Send;
    /// Whether the member has any journal at all.
    fn has_journals(&mut self, member_id: i64) -> impl Future<Output = Result<bool>> + Send;
    /// Sets buckets' expiry instants: (member, journal, seq, expires_at).
    fn set_bucket_expiries(
        &mut self,
        buckets: &[(i64, i64, i32, DateTime<Utc>)],
    ) -> impl Future<Output = Result<()>> + Send;
    /// All buckets opened by the given journals, (member, journal) pairs.
    fn load_journal_buckets(
        &mut self,
        journals: &[(i64, i64)],
    ) -> impl Future<Output = Result<Vec<BucketRow>>> + Send;
    fn load_journals_by_external_id(
        &mut self,
        program_id: i64,
        external_ids: &[&str],
    ) -> impl Future<Output = Result<Vec<JournalRow>>> + Send;
    fn load_journals_by_id(
        &mut self,
        journals: &[(i64, i64)],
    ) -> impl Future<Output = Result<Vec<JournalRow>>> + Send;
    fn load_entries(
        &mut self,
        journals: &[(i64, i64)],
    ) -> impl Future<Output = Result<Vec<EntryRow>>> + Send;
    fn reserve_journal_ids(
        &mut self,
        count: usize,
    ) -> impl Future<Output = Result<Vec<i64>>> + Send;
    fn insert_journals(
        &mut self,
        program_id: i64,
        rows: &[JournalRow],
    ) -> impl Future<Output = Result<()>> + Send;
    fn insert_entries(
        &mut self,
        program_id: i64,
        rows: &[EntryRow],
    ) -> impl Future<Output = Result<()>> + Send;
    fn upsert_buckets(
        &mut self,
        program_id: i64,
        rows: &[BucketRow],
    ) -> impl Future<Output = Result<()>> + Send;
    fn upsert_accounts(
        &mut self,
        program_id: i64,
        rows: &[AccountRow],
    ) -> impl Future<Output = Result<()>> + Send;
    fn update_journals(
        &mut self,
        rows: &[JournalUpdate],
    ) -> impl Future<Output = Result<()>> + Send;
    fn save_checkpoint(
        &mut self,
        checkpoint: &CheckpointRow,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Members of a program with an expiry or release due at `as_of`, up to `limit`.
    fn due_members(
        &mut self,
        program_id: i64,
        as_of: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<MemberRow>>> + Send;
    /// The program's current revision (`None` if it was deleted).
    fn program_revision(
        &mut self,
        program_id: i64,
    ) -> impl Future<Output = Result<Option<i32>>> + Send;

    /// Whether [`LedgerTx::open_batch`] reads the opening of a batch naming `members`
    /// members in one statement, and so reads the [`OpeningReads`] it is given (otherwise
    /// they are ignored, and the engine need not work them out: with 200 promotions the
    /// counters' periods took 4 % of an import's samples).
    fn opens_in_one(&self, members: usize) -> bool {
        let _ = members;
        false
    }

    /// Locks the members (`lock_keys`, as [`LedgerTx::lock_members`]), then reads a batch's
    /// [`Opening`]. Made of the single-purpose methods here; a dialect where each statement
    /// costs a network round trip reads it all in one.
    fn open_batch(
        &mut self,
        program_id: i64,
        lock_keys: &[i64],
        members: &[&str],
        journals: &[&str],
        id_count: usize,
        with_tiers: bool,
        screen: bool,
        reads: OpeningReads<'_>,
    ) -> impl Future<Output = Result<Opening>> + Send {
        let _ = (with_tiers, reads);
        open_batch_stepwise(
            self, program_id, lock_keys, members, journals, id_count, screen,
        )
    }

    /// Writes a batch's rows. Made of the single-purpose methods here; a dialect where each
    /// statement costs a network round trip writes it all in one.
    fn write_batch(
        &mut self,
        program_id: i64,
        rows: &WriteSet,
    ) -> impl Future<Output = Result<()>> + Send {
        write_batch_stepwise(self, program_id, rows)
    }

    /// Whether the statements of [`Self::write_beside`] run while this thread goes on
    /// (SQLite: on the connection's own thread); a large batch then writes the members it
    /// is done with while it processes the rest.
    fn writes_beside(&self) -> bool {
        false
    }

    /// Writes the journals, entries, buckets, accounts and tier standings of members a
    /// batch is done with, now (nothing held back for a later statement).
    fn write_beside(
        &mut self,
        program_id: i64,
        rows: &WriteSet,
    ) -> impl Future<Output = Result<()>> + Send {
        write_batch_stepwise(self, program_id, rows)
    }
}

/// [`LedgerTx::open_batch`] one statement at a time.
pub(crate) async fn open_batch_stepwise<T: LedgerTx + ?Sized>(
    tx: &mut T,
    program_id: i64,
    lock_keys: &[i64],
    members: &[&str],
    journals: &[&str],
    id_count: usize,
    screen: bool,
) -> Result<Opening> {
    tx.lock_members(lock_keys).await?;
    let revision = tx.program_revision(program_id).await?;
    let members = tx.resolve_members(program_id, members).await?;
    let ids: Vec<i64> = members.iter().map(|m| m.id).collect();
    let accounts = tx.load_accounts(&ids).await?;
    let screening = if screen {
        Some(tx.load_screening(program_id, journals, &ids, &[]).await?)
    } else {
        None
    };
    let journals = tx
        .load_journals_by_external_id(program_id, journals)
        .await?;
    let ids = tx.reserve_journal_ids(id_count).await?;
    Ok(Opening {
        revision,
        members,
        accounts,
        journals,
        ids,
        tiers: None,
        screening,
        facts: None,
        counters: None,
    })
}

/// [`LedgerTx::write_batch`] one statement at a time.
pub(crate) async fn write_batch_stepwise<T: LedgerTx + ?Sized>(
    tx: &mut T,
    program_id: i64,
    rows: &WriteSet,
) -> Result<()> {
    tx.insert_journals(program_id, &rows.journals).await?;
    tx.insert_entries(program_id, &rows.entries).await?;
    tx.upsert_buckets(program_id, &rows.buckets).await?;
    tx.upsert_accounts(program_id, &rows.accounts).await?;
    write_batch_rest(tx, program_id, rows, true, true).await
}

/// What a batch writes after its ledger rows (journals, entries, buckets, accounts), one
/// part at a time: updates of journals (which may be the batch's own), tiers, audits,
/// events, held journals, and — unless the dialect wrote them with the ledger rows
/// (`tiers`, `risk_and_counters` false) — tiers, fraud memory and promotion counters.
pub(crate) async fn write_batch_rest<T: LedgerTx + ?Sized>(
    tx: &mut T,
    program_id: i64,
    rows: &WriteSet,
    risk_and_counters: bool,
    tiers: bool,
) -> Result<()> {
    tx.update_journals(&rows.updates).await?;
    if tiers && !rows.tiers.is_empty() {
        tx.save_tiers(program_id, &rows.tiers).await?;
    }
    if !rows.audits.is_empty() {
        tx.insert_audits(&rows.audits).await?;
    }
    if !rows.events.is_empty() {
        tx.insert_events(program_id, &rows.events).await?;
    }
    let risk: &[(i64, String)] = if risk_and_counters { &rows.risk } else { &[] };
    if !risk.is_empty() || !rows.held.is_empty() {
        let screening = ScreeningSave {
            risk: risk.to_vec(),
            held: rows.held.clone(),
            ..ScreeningSave::default()
        };
        tx.save_screening(program_id, &screening).await?;
    }
    if risk_and_counters && !rows.counters.is_empty() {
        tx.add_counters(program_id, &rows.counters).await?;
    }
    Ok(())
}

/// A journal held by a fraud rule, as stored.
#[derive(Debug, Clone)]
pub struct HeldRow {
    pub member_id: i64,
    pub external_id: String,
    pub type_name: String,
    pub occurred_at: DateTime<Utc>,
    pub document: String,
    pub rule: String,
    pub reason: String,
    /// `held`, `released` or `rejected`.
    pub status: String,
    pub held_at: DateTime<Utc>,
}

/// What [`LedgerTx::load_screening`] read.
#[derive(Debug, Clone, Default)]
pub struct Screening {
    pub held: Vec<HeldRow>,
    /// Per member: the recent journals as stored (see `member_risk`).
    pub risk: Vec<(i64, String)>,
    /// (receipt, member id, member's external id) of the receipts asked for.
    pub receipts: Vec<(String, i64, String)>,
    /// When members' profiles last changed (those whose did).
    pub profile_changed: Vec<(i64, DateTime<Utc>)>,
}

/// What [`LedgerTx::save_screening`] writes.
#[derive(Debug, Clone, Default)]
pub struct ScreeningSave {
    pub held: Vec<HeldRow>,
    pub risk: Vec<(i64, String)>,
    pub receipts: Vec<(String, i64)>,
}

impl ScreeningSave {
    pub fn is_empty(&self) -> bool {
        self.held.is_empty() && self.risk.is_empty() && self.receipts.is_empty()
    }
}

/// An agent's decision on a held journal.
#[derive(Debug, Clone)]
pub struct HeldDecision<'a> {
    /// `released` or `rejected`.
    pub status: &'static str,
    pub by: &'a str,
    pub note: Option<&'a str>,
    pub at: DateTime<Utc>,
}
