//! The SQLite dialect of [`LedgerTx`].
//!
//! SQLite has one writer at a time: a ledger transaction starts with `BEGIN IMMEDIATE`,
//! which takes the write lock at once, so member locks are not needed and reads inside
//! the transaction see a stable database. Lists are passed as one JSON parameter and
//! unpacked with `json_each`; writes are multi-row statements.

use chrono::{DateTime, TimeZone, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use crate::error::{Result, StoreError};
use crate::rows::*;

/// Instants are stored as microseconds since the Unix epoch.
pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn instant(us: i64) -> Result<DateTime<Utc>> {
    Utc.timestamp_micros(us)
        .single()
        .ok_or_else(|| StoreError::Inconsistent(format!("instant {us} out of range")))
}

fn opt_instant(us: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    us.map(instant).transpose()
}

/// SQLite allows 32,766 bound parameters per statement; stay well below.
const MAX_PARAMS: usize = 30_000;

// SQL shared by the single-purpose reads and a batch's one-row opening (macros, so that
// `concat!` makes whole statements of them at compile time).

/// The members a batch names (`?1` the program, `?2` their external ids as a JSON list),
/// `x`, each with its merge survivor `s` if any.
macro_rules! named_members {
    () => {
        "FROM members x LEFT JOIN members s ON s.id = x.merged_into \
         WHERE x.program_id = ?1 AND x.external_id IN (SELECT value FROM json_each(?2))"
    };
}

/// A member's segments, separated by spaces (in a query over `members`).
macro_rules! member_segments {
    () => {
        "(SELECT group_concat(s.segment, ' ') FROM member_segments s \
          WHERE s.member_id = members.id AND s.program_id = members.program_id)"
    };
}

/// The first journal id not yet used (see [`LedgerTx::reserve_journal_ids`]).
macro_rules! next_journal_id {
    () => {
        "max(coalesce((SELECT max(id) FROM journals), 0) + 1, \
         coalesce((SELECT next FROM sequences WHERE name = 'journal_ids'), 1))"
    };
}

/// Most members a batch may name to read its opening in one query
/// ([`LedgerTx::open_batch`]); larger batches (imports) read part by part.
const OPENING_MEMBERS: usize = 64;

/// Parameters per row of each part a batch writes.
const JOURNAL_PARAMS: usize = 14;
const ENTRY_PARAMS: usize = 11;
const BUCKET_PARAMS: usize = 12;
const ACCOUNT_PARAMS: usize = 9;
const TIER_PARAMS: usize = 4;

// Each part of a batch's writes, pushed onto a query (placeholders unnumbered, so parts
// pushed one after another form one multi-statement query whose binds follow in order).

fn push_journals(q: &mut QueryBuilder<Sqlite>, program_id: i64, rows: &[JournalRow]) {
    q.push(format!(
        "INSERT INTO journals (program_id, {JOURNAL_COLUMNS}, hold_until) "
    ));
    q.push_values(rows, |mut b, r| {
        b.push_bind(program_id)
            .push_bind(r.member_id)
            .push_bind(r.id)
            .push_bind(r.external_id.as_deref())
            .push_bind(r.kind.as_str())
            .push_bind(r.type_name.as_str())
            .push_bind(r.status.as_str())
            .push_bind(r.original_id)
            .push_bind(micros(r.occurred_at))
            .push_bind(micros(r.recorded_at))
            .push_bind(r.document.as_deref())
            .push_bind(r.outcome.as_deref())
            .push_bind(r.state.as_deref())
            .push_bind(r.hold_until.map(micros));
    });
}

fn push_entries(q: &mut QueryBuilder<Sqlite>, program_id: i64, rows: &[EntryRow]) {
    q.push(format!(
        "INSERT INTO entries (program_id, {ENTRY_COLUMNS}) "
    ));
    q.push_values(rows, |mut b, r| {
        b.push_bind(program_id)
            .push_bind(r.member_id)
            .push_bind(r.journal_id)
            .push_bind(r.seq)
            .push_bind(r.currency.as_str())
            .push_bind(r.kind.as_str())
            .push_bind(r.pool.as_str())
            .push_bind(r.bucket_journal_id)
            .push_bind(r.bucket_seq)
            .push_bind(r.amount)
            .push_bind(micros(r.effective_at));
    });
}

fn push_buckets(q: &mut QueryBuilder<Sqlite>, program_id: i64, rows: &[BucketRow]) {
    q.push(format!(
        "INSERT INTO buckets (program_id, {BUCKET_COLUMNS}) "
    ));
    q.push_values(rows, |mut b, r| {
        b.push_bind(program_id)
            .push_bind(r.member_id)
            .push_bind(r.journal_id)
            .push_bind(r.seq)
            .push_bind(r.currency.as_str())
            .push_bind(micros(r.credited_at))
            .push_bind(r.expires_at.map(micros))
            .push_bind(micros(r.available_at))
            .push_bind(r.pending)
            .push_bind(r.credited)
            .push_bind(r.remaining)
            .push_bind(r.expired_unclaimed);
    });
    q.push(
        " ON CONFLICT (member_id, journal_id, seq) DO UPDATE SET pending = excluded.pending, \
         remaining = excluded.remaining, expired_unclaimed = excluded.expired_unclaimed",
    );
}

fn push_accounts(q: &mut QueryBuilder<Sqlite>, program_id: i64, rows: &[AccountRow]) -> Result<()> {
    q.push(
        "INSERT INTO accounts (program_id, member_id, currency, available, pending, arrears, pool, last_activity_at, next_transition_at) ",
    );
    q.push_values(rows, |mut b, r| {
        b.push_bind(program_id)
            .push_bind(r.member_id)
            .push_bind(r.currency.as_str())
            .push_bind(r.available)
            .push_bind(r.pending)
            .push_bind(r.arrears)
            .push_bind(r.pool)
            .push_bind(r.last_activity_at.map(micros))
            .push_bind(r.next_transition_at.map(micros));
    });
    q.push(
        " ON CONFLICT (member_id, currency) DO UPDATE SET available = excluded.available, \
         pending = excluded.pending, arrears = excluded.arrears, pool = excluded.pool, \
         last_activity_at = excluded.last_activity_at",
    );
    // `next_transition_at` is indexed (`accounts_due`), and SQLite rewrites an index entry
    // whenever its column is assigned, changed or not: a page of WAL for nearly every
    // journal, whose purchase seldom moves the account's next expiry. Assigned only where
    // it changed — and the statement (a message to the connection's worker thread and
    // back) is left out when none did.
    let transitions: Vec<(i64, &str, Option<i64>)> = rows
        .iter()
        .filter(|r| r.transition_changed || !r.existing)
        .map(|r| {
            (
                r.member_id,
                r.currency.as_str(),
                r.next_transition_at.map(micros),
            )
        })
        .collect();
    if transitions.is_empty() {
        return Ok(());
    }
    q.push(
        "; UPDATE accounts SET next_transition_at = n.t FROM (SELECT value ->> 0 AS m, \
         value ->> 1 AS c, value ->> 2 AS t FROM json_each(",
    );
    q.push_bind(serde_json::to_string(&transitions)?);
    q.push(
        ")) AS n WHERE accounts.member_id = n.m AND accounts.currency = n.c \
         AND accounts.next_transition_at IS NOT n.t",
    );
    Ok(())
}

fn push_tiers(q: &mut QueryBuilder<Sqlite>, program_id: i64, rows: &[TierSave]) {
    q.push("INSERT INTO member_tiers (member_id, program_id, state, next_due_at) ");
    q.push_values(rows, |mut b, r| {
        b.push_bind(r.member_id)
            .push_bind(program_id)
            .push_bind(r.state.as_str())
            .push_bind(r.next_due_at.map(micros));
    });
    q.push(
        " ON CONFLICT (member_id) DO UPDATE SET state = excluded.state, next_due_at = excluded.next_due_at",
    );
}

/// Whether each part of `rows` is below SQLite's parameter limit (which holds per
/// statement), so that [`push_ledger_rows`] makes one query of them.
fn fits_one_query(rows: &WriteSet) -> bool {
    rows.journals.len() * JOURNAL_PARAMS <= MAX_PARAMS
        && rows.entries.len() * ENTRY_PARAMS <= MAX_PARAMS
        && rows.buckets.len() * BUCKET_PARAMS <= MAX_PARAMS
        && rows.accounts.len() * ACCOUNT_PARAMS <= MAX_PARAMS
        && rows.tiers.len() * TIER_PARAMS <= MAX_PARAMS
}

/// A batch's ledger rows (journals, entries, buckets, accounts, fraud memory, promotion
/// counters, tiers), the parts it has, pushed onto `q` as one multi-statement query;
/// answers how many parts.
fn push_ledger_rows(
    q: &mut QueryBuilder<Sqlite>,
    program_id: i64,
    rows: &WriteSet,
) -> Result<usize> {
    let mut parts = 0;
    let mut next = |q: &mut QueryBuilder<Sqlite>| {
        if parts > 0 {
            q.push("; ");
        }
        parts += 1;
    };
    if !rows.journals.is_empty() {
        next(q);
        push_journals(q, program_id, &rows.journals);
    }
    if !rows.entries.is_empty() {
        next(q);
        push_entries(q, program_id, &rows.entries);
    }
    if !rows.buckets.is_empty() {
        next(q);
        push_buckets(q, program_id, &rows.buckets);
    }
    if !rows.accounts.is_empty() {
        next(q);
        push_accounts(q, program_id, &rows.accounts)?;
    }
    if !rows.risk.is_empty() {
        next(q);
        push_risk(q, program_id, &rows.risk)?;
    }
    if !rows.counters.is_empty() {
        next(q);
        push_counters(q, program_id, &rows.counters)?;
    }
    if !rows.tiers.is_empty() {
        next(q);
        push_tiers(q, program_id, &rows.tiers);
    }
    Ok(parts)
}

fn push_risk(q: &mut QueryBuilder<Sqlite>, program_id: i64, risk: &[(i64, String)]) -> Result<()> {
    q.push("INSERT INTO member_risk (member_id, program_id, recent) SELECT value ->> 0, ");
    q.push_bind(program_id);
    q.push(", value ->> 1 FROM json_each(");
    q.push_bind(serde_json::to_string(risk)?);
    q.push(") WHERE true ON CONFLICT (member_id) DO UPDATE SET recent = excluded.recent");
    Ok(())
}

fn push_counters(
    q: &mut QueryBuilder<Sqlite>,
    program_id: i64,
    deltas: &[(CounterKey, Count)],
) -> Result<()> {
    let rows = serde_json::to_string(
        &deltas
            .iter()
            .map(|(k, c)| {
                (
                    k.promotion.as_str(),
                    k.member,
                    k.period.as_str(),
                    c.times,
                    c.points,
                )
            })
            .collect::<Vec<_>>(),
    )?;
    q.push("INSERT INTO promotion_usage (program_id, promotion, member_id, period, times, points) SELECT ");
    q.push_bind(program_id);
    q.push(", value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 FROM json_each(");
    q.push_bind(rows);
    q.push(
        ") WHERE true ON CONFLICT (program_id, promotion, member_id, period) DO UPDATE \
         SET times = promotion_usage.times + excluded.times, points = promotion_usage.points + excluded.points",
    );
    Ok(())
}

pub(crate) struct SqliteTx<'c> {
    tx: Conn<'c>,
    /// The next journal id this transaction hands out, once it has read where the ids
    /// stand ([`LedgerTx::reserve_journal_ids`]).
    next_journal_id: Option<i64>,
}

/// The connection a [`SqliteTx`] runs on.
enum Conn<'c> {
    /// A transaction sqlx began and ends (reads).
    Sqlx(Transaction<'c, Sqlite>),
    /// A ledger transaction, begun and ended by [`LedgerConn`].
    Ledger(LedgerConn),
}

/// A SQLite ledger transaction that travels light: its `BEGIN IMMEDIATE` goes with its
/// first statement (the opening), and its last writes go with its `COMMIT`.
///
/// sqlx runs each SQLite connection on a thread of its own, and every statement is a
/// message to that thread and an answer back — two thread switches, which on this kind
/// of machine cost more than the statement. A realtime purchase was six of them (the
/// pool's ping, `BEGIN`, the opening, the writes, the tiers, `COMMIT`); now it is two.
///
/// sqlx does not know about this transaction (it only tracks its own), so the rules are
/// ours: a connection dropped while its transaction may be open is closed, not pooled
/// (closing rolls back), and every ending goes through [`LedgerConn::commit`] or
/// [`LedgerConn::rollback`].
pub(crate) struct LedgerConn {
    conn: sqlx::pool::PoolConnection<Sqlite>,
    /// `BEGIN IMMEDIATE` has not been sent yet.
    begin_pending: bool,
    /// A transaction may be open on the connection (sent `BEGIN`, no ending answered).
    open: bool,
    /// Writes held back to go with the next statement's message or with `COMMIT`.
    pending: Option<QueryBuilder<Sqlite>>,
}

impl LedgerConn {
    pub(crate) fn new(conn: sqlx::pool::PoolConnection<Sqlite>) -> Self {
        Self {
            conn,
            begin_pending: true,
            open: false,
            pending: None,
        }
    }

    /// The connection inside the transaction, with every held-back write sent.
    async fn ready(&mut self) -> Result<&mut sqlx::SqliteConnection> {
        if self.begin_pending {
            self.begin_pending = false;
            // Open from here until known otherwise: dropped while waiting for the answer,
            // the transaction may have begun.
            self.open = true;
            if let Err(e) = sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut *self.conn)
                .await
            {
                // A `BEGIN` that failed (busy past the timeout) began nothing.
                self.open = false;
                return Err(e.into());
            }
        }
        if let Some(mut q) = self.pending.take() {
            q.build().execute(&mut *self.conn).await?;
        }
        Ok(&mut *self.conn)
    }

    /// The SQL that starts the transaction if it has not started yet, to put before the
    /// first statement (which must have no `?` parameters before its own, numbered ones).
    fn begin_with_first(&mut self) -> &'static str {
        if self.begin_pending {
            self.begin_pending = false;
            self.open = true;
            "BEGIN IMMEDIATE; "
        } else {
            ""
        }
    }

    /// Commits: the held-back writes and `COMMIT` in one message.
    async fn commit(&mut self) -> Result<()> {
        if self.begin_pending {
            // Nothing was read or written.
            return Ok(());
        }
        match self.pending.take() {
            Some(mut q) => {
                q.push("; COMMIT");
                q.build().execute(&mut *self.conn).await?;
            }
            None => {
                sqlx::query("COMMIT").execute(&mut *self.conn).await?;
            }
        }
        self.open = false;
        Ok(())
    }

    /// Rolls back. If `ROLLBACK` fails (SQLite may have ended the transaction itself, on
    /// a full disk), the connection stays marked open and is closed when dropped.
    async fn rollback(&mut self) -> Result<()> {
        self.pending = None;
        self.begin_pending = false;
        if self.open {
            sqlx::query("ROLLBACK").execute(&mut *self.conn).await?;
            self.open = false;
        }
        Ok(())
    }
}

impl Drop for LedgerConn {
    fn drop(&mut self) {
        if self.open {
            // Ended half way (an error, a panic, a dropped future): SQLite rolls the
            // transaction back when the connection closes; pooled, it would stay open.
            self.conn.close_on_drop();
        }
    }
}

/// One statement of a large batch's ledger rows (see [`SqliteTx::write_overlapped`]).
enum Chunk<'r> {
    Journals(&'r [JournalRow]),
    Entries(&'r [EntryRow]),
    Buckets(&'r [BucketRow]),
    Accounts(&'r [AccountRow]),
}

impl Chunk<'_> {
    fn query(&self, program_id: i64) -> Result<QueryBuilder<Sqlite>> {
        let mut q = QueryBuilder::<Sqlite>::new("");
        match self {
            Self::Journals(rows) => push_journals(&mut q, program_id, rows),
            Self::Entries(rows) => push_entries(&mut q, program_id, rows),
            Self::Buckets(rows) => push_buckets(&mut q, program_id, rows),
            Self::Accounts(rows) => push_accounts(&mut q, program_id, rows)?,
        }
        Ok(q)
    }
}

impl<'c> SqliteTx<'c> {
    /// A transaction sqlx began (reads).
    pub(crate) fn new(tx: Transaction<'c, Sqlite>) -> Self {
        Self {
            tx: Conn::Sqlx(tx),
            next_journal_id: None,
        }
    }

    /// A ledger transaction on `conn` (see [`LedgerConn`]).
    pub(crate) fn ledger(conn: LedgerConn) -> Self {
        Self {
            tx: Conn::Ledger(conn),
            next_journal_id: None,
        }
    }

    /// The connection, inside the transaction, every held-back write sent.
    pub(crate) async fn conn(&mut self) -> Result<&mut sqlx::SqliteConnection> {
        match &mut self.tx {
            Conn::Sqlx(tx) => Ok(&mut **tx),
            Conn::Ledger(l) => l.ready().await,
        }
    }

    /// Sends `q` (writes, no rows back) now, or holds it back to go with the next
    /// statement or the commit when this is a ledger transaction.
    async fn write_later(&mut self, mut q: QueryBuilder<Sqlite>) -> Result<()> {
        match &mut self.tx {
            Conn::Sqlx(tx) => {
                q.build().execute(&mut **tx).await?;
            }
            Conn::Ledger(l) => {
                if l.begin_pending || l.pending.is_some() {
                    l.ready().await?;
                }
                l.pending = Some(q);
            }
        }
        Ok(())
    }

    /// `BEGIN IMMEDIATE; ` when a ledger transaction has not begun yet, for its first
    /// statement to carry (see [`LedgerConn`]); otherwise nothing.
    fn begin_with_first(&mut self) -> &'static str {
        match &mut self.tx {
            Conn::Ledger(l) => l.begin_with_first(),
            Conn::Sqlx(_) => "",
        }
    }

    /// Commits.
    pub(crate) async fn commit(self) -> Result<()> {
        match self.tx {
            Conn::Sqlx(tx) => Ok(tx.commit().await?),
            Conn::Ledger(mut l) => l.commit().await,
        }
    }

    /// Rolls back.
    pub(crate) async fn rollback(self) -> Result<()> {
        match self.tx {
            Conn::Sqlx(tx) => Ok(tx.rollback().await?),
            Conn::Ledger(mut l) => l.rollback().await,
        }
    }

    /// Writes a large batch's journals, entries, buckets and accounts (an import's),
    /// in statements below SQLite's parameter limit, in that order. Each statement is
    /// built on this thread while the one before runs on the connection's: building one
    /// (placeholders, bound values) takes a good part of the time SQLite takes to run
    /// it, and the two threads took turns before (measured: an import's writes a sixth
    /// faster).
    async fn write_overlapped(&mut self, program_id: i64, rows: &WriteSet) -> Result<()> {
        let chunks: Vec<Chunk<'_>> = rows
            .journals
            .chunks(MAX_PARAMS / JOURNAL_PARAMS)
            .map(Chunk::Journals)
            .chain(
                rows.entries
                    .chunks(MAX_PARAMS / ENTRY_PARAMS)
                    .map(Chunk::Entries),
            )
            .chain(
                rows.buckets
                    .chunks(MAX_PARAMS / BUCKET_PARAMS)
                    .map(Chunk::Buckets),
            )
            .chain(
                rows.accounts
                    .chunks(MAX_PARAMS / ACCOUNT_PARAMS)
                    .map(Chunk::Accounts),
            )
            .collect();
        let mut next = chunks.first().map(|c| c.query(program_id)).transpose()?;
        let mut built = 1;
        while let Some(mut q) = next.take() {
            let conn = self.conn().await?;
            // `join` polls the statement first: it is handed to the connection's thread
            // before the next one is built here.
            let (done, following) = futures::join!(q.build().execute(conn), async {
                chunks.get(built).map(|c| c.query(program_id)).transpose()
            });
            done?;
            next = following?;
            built += 1;
        }
        Ok(())
    }

    /// `count` journal ids from `start`, the next one free after them remembered.
    fn hand_out_ids(&mut self, start: i64, count: usize) -> Vec<i64> {
        let end = start + count as i64;
        self.next_journal_id = Some(end);
        (start..end).collect()
    }
}

fn json_list<T: serde::Serialize>(items: &[T]) -> Result<String> {
    Ok(serde_json::to_string(items)?)
}

fn pairs(items: &[(i64, i64)]) -> Result<String> {
    json_list(&items.iter().map(|(a, b)| [*a, *b]).collect::<Vec<_>>())
}

const BUCKET_COLUMNS: &str = "member_id, journal_id, seq, currency, credited_at, expires_at, available_at, pending, credited, remaining, expired_unclaimed";
const JOURNAL_COLUMNS: &str = "member_id, id, external_id, kind, type, status, original_id, occurred_at, recorded_at, document, outcome, state";
const ENTRY_COLUMNS: &str = "member_id, journal_id, seq, currency, kind, pool, bucket_journal_id, bucket_seq, amount, effective_at";

fn bucket_row(r: &SqliteRow) -> Result<BucketRow> {
    Ok(BucketRow {
        existing: true,
        member_id: r.try_get(0)?,
        journal_id: r.try_get(1)?,
        seq: r.try_get(2)?,
        currency: r.try_get(3)?,
        credited_at: instant(r.try_get(4)?)?,
        expires_at: opt_instant(r.try_get(5)?)?,
        available_at: instant(r.try_get(6)?)?,
        pending: r.try_get(7)?,
        credited: r.try_get(8)?,
        remaining: r.try_get(9)?,
        expired_unclaimed: r.try_get(10)?,
    })
}

pub(crate) fn journal_row(r: &SqliteRow) -> Result<JournalRow> {
    Ok(JournalRow {
        member_id: r.try_get(0)?,
        id: r.try_get(1)?,
        external_id: r.try_get(2)?,
        kind: r.try_get(3)?,
        type_name: r.try_get(4)?,
        status: r.try_get(5)?,
        original_id: r.try_get(6)?,
        occurred_at: instant(r.try_get(7)?)?,
        recorded_at: instant(r.try_get(8)?)?,
        document: r.try_get(9)?,
        outcome: r.try_get(10)?,
        state: r.try_get(11)?,
        hold_until: None,
    })
}

pub(crate) fn entry_row(r: &SqliteRow) -> Result<EntryRow> {
    Ok(EntryRow {
        member_id: r.try_get(0)?,
        journal_id: r.try_get(1)?,
        seq: r.try_get(2)?,
        currency: r.try_get(3)?,
        kind: r.try_get(4)?,
        pool: r.try_get(5)?,
        bucket_journal_id: r.try_get(6)?,
        bucket_seq: r.try_get(7)?,
        amount: r.try_get(8)?,
        effective_at: instant(r.try_get(9)?)?,
    })
}

pub(crate) fn account_row(r: &SqliteRow) -> Result<AccountRow> {
    Ok(AccountRow {
        existing: true,
        member_id: r.try_get(0)?,
        currency: r.try_get(1)?,
        available: r.try_get(2)?,
        pending: r.try_get(3)?,
        arrears: r.try_get(4)?,
        pool: r.try_get(5)?,
        last_activity_at: opt_instant(r.try_get(6)?)?,
        next_transition_at: opt_instant(r.try_get(7)?)?,
        transition_changed: false,
    })
}

impl LedgerTx for SqliteTx<'_> {
    fn opens_in_one(&self, members: usize) -> bool {
        members <= OPENING_MEMBERS
    }

    async fn resolve_members(
        &mut self,
        program_id: i64,
        external_ids: &[&str],
    ) -> Result<Vec<MemberRow>> {
        let rows = sqlx::query(concat!(
            "SELECT COALESCE(s.id, x.id), x.external_id, COALESCE(s.status, x.status), s.external_id, \
                    CASE WHEN s.id IS NULL THEN x.group_id ELSE s.group_id END, x.enrolled_at ",
            named_members!()
        ))
        .bind(program_id)
        .bind(json_list(external_ids)?)
        .fetch_all(self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MemberRow {
                    id: r.try_get(0)?,
                    external_id: r.try_get(1)?,
                    status: r.try_get(2)?,
                    owner: r.try_get(3)?,
                    group_id: r.try_get(4)?,
                    enrolled_at: Some(instant(r.try_get(5)?)?),
                })
            })
            .collect()
    }

    async fn lock_members(&mut self, _ids: &[i64]) -> Result<()> {
        // BEGIN IMMEDIATE (sent with the transaction's first statement, before any read)
        // holds the database's only write lock.
        Ok(())
    }

    async fn load_accounts(&mut self, member_ids: &[i64]) -> Result<Vec<AccountRow>> {
        let rows = sqlx::query(
            "SELECT member_id, currency, available, pending, arrears, pool, last_activity_at, next_transition_at \
             FROM accounts WHERE member_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(json_list(member_ids)?)
        .fetch_all(self.conn().await?)
        .await?;
        rows.iter().map(account_row).collect()
    }

    async fn load_counters(
        &mut self,
        program_id: i64,
        keys: &[CounterKey],
    ) -> Result<Vec<(CounterKey, Count)>> {
        // The transaction holds SQLite's only write lock: nobody else changes them.
        let keys = serde_json::to_string(
            &keys
                .iter()
                .map(|k| (k.promotion.as_str(), k.member, k.period.as_str()))
                .collect::<Vec<_>>(),
        )?;
        // The keys drive (CROSS JOIN keeps SQLite from choosing the other order): one
        // primary-key lookup per key. Driven by the table, the join read every counter of
        // the program for each key, and imports slowed as counters accumulated.
        let rows = sqlx::query(
            "SELECT u.promotion, u.member_id, u.period, u.times, u.points FROM json_each(?2) AS k \
             CROSS JOIN promotion_usage u \
               ON u.program_id = ?1 AND u.promotion = k.value ->> 0 AND u.member_id = k.value ->> 1 \
              AND u.period = k.value ->> 2",
        )
        .bind(program_id)
        .bind(keys)
        .fetch_all(self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                let promotion: String = r.try_get("promotion")?;
                Ok((
                    CounterKey {
                        promotion: stored_promotion(&promotion)?,
                        member: r.try_get("member_id")?,
                        period: r.try_get("period")?,
                    },
                    Count {
                        times: r.try_get("times")?,
                        points: r.try_get("points")?,
                    },
                ))
            })
            .collect()
    }

    async fn add_counters(
        &mut self,
        program_id: i64,
        deltas: &[(CounterKey, Count)],
    ) -> Result<()> {
        let mut q = QueryBuilder::<Sqlite>::new("");
        push_counters(&mut q, program_id, deltas)?;
        q.build().execute(self.conn().await?).await?;
        Ok(())
    }

    async fn load_member_facts(
        &mut self,
        member_ids: &[i64],
        segments: bool,
    ) -> Result<Vec<MemberFactsRow>> {
        let sql = if segments {
            concat!(
                "SELECT id, profile, enrolled_at, ",
                member_segments!(),
                " AS segments FROM members WHERE id IN (SELECT value FROM json_each(?1))"
            )
        } else {
            "SELECT id, profile, enrolled_at, NULL AS segments \
             FROM members WHERE id IN (SELECT value FROM json_each(?1))"
        };
        let rows = sqlx::query(sql)
            .bind(json_list(member_ids)?)
            .fetch_all(self.conn().await?)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(MemberFactsRow {
                    member_id: r.try_get("id")?,
                    profile: r.try_get("profile")?,
                    enrolled_at: instant(r.try_get("enrolled_at")?)?,
                    segments: r.try_get("segments")?,
                })
            })
            .collect()
    }

    async fn load_granted(
        &mut self,
        member_ids: &[i64],
        since: DateTime<Utc>,
    ) -> Result<Vec<GrantedRow>> {
        let rows: Vec<(i64, String, Option<String>, i64, i64)> = sqlx::query_as(
            "SELECT member_id, code, value, starts_at, ends_at FROM member_benefits \
             WHERE member_id IN (SELECT value FROM json_each(?1)) AND ends_at > ?2",
        )
        .bind(json_list(member_ids)?)
        .bind(micros(since))
        .fetch_all(self.conn().await?)
        .await?;
        rows.into_iter()
            .map(|(member_id, code, value, starts, ends)| {
                Ok(GrantedRow {
                    member_id,
                    code,
                    value,
                    starts_at: instant(starts)?,
                    ends_at: instant(ends)?,
                })
            })
            .collect()
    }

    async fn load_tiers(&mut self, member_ids: &[i64]) -> Result<Vec<TierRow>> {
        // The narrow table first; the members table only for members without a standing.
        let rows = sqlx::query(
            "SELECT member_id, state FROM member_tiers WHERE member_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(json_list(member_ids)?)
        .fetch_all(self.conn().await?)
        .await?;
        let mut out: Vec<TierRow> = rows
            .iter()
            .map(|r| {
                Ok(TierRow {
                    member_id: r.try_get(0)?,
                    enrolled_at: None,
                    state: Some(r.try_get(1)?),
                })
            })
            .collect::<Result<_>>()?;
        let found: rustc_hash::FxHashSet<i64> = out.iter().map(|r| r.member_id).collect();
        let missing: Vec<i64> = member_ids
            .iter()
            .copied()
            .filter(|id| !found.contains(id))
            .collect();
        if !missing.is_empty() {
            let rows = sqlx::query(
                "SELECT id, enrolled_at FROM members WHERE id IN (SELECT value FROM json_each(?1))",
            )
            .bind(json_list(&missing)?)
            .fetch_all(self.conn().await?)
            .await?;
            for r in &rows {
                out.push(TierRow {
                    member_id: r.try_get(0)?,
                    enrolled_at: Some(instant(r.try_get(1)?)?),
                    state: None,
                });
            }
        }
        Ok(out)
    }

    async fn save_tiers(&mut self, program_id: i64, rows: &[TierSave]) -> Result<()> {
        for chunk in rows.chunks(5_000) {
            let mut q = QueryBuilder::<Sqlite>::new("");
            push_tiers(&mut q, program_id, chunk);
            q.build().execute(self.conn().await?).await?;
        }
        Ok(())
    }

    async fn insert_vouchers(
        &mut self,
        program_id: i64,
        rows: &[crate::vouchers::NewVoucher],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let conn = self.conn().await?;
        crate::vouchers::insert_vouchers!(conn, false, program_id, rows, now);
        Ok(())
    }

    async fn cancel_journal_vouchers(
        &mut self,
        program_id: i64,
        journal_ids: &[i64],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let conn = self.conn().await?;
        crate::vouchers::cancel_journal_vouchers!(conn, program_id, journal_ids, now);
        Ok(())
    }

    async fn insert_awards(
        &mut self,
        program_id: i64,
        badges: &[crate::badges::NewBadge],
        benefits: &[crate::badges::NewBenefit],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let conn = self.conn().await?;
        crate::badges::insert_awards!(conn, program_id, badges, benefits, now);
        Ok(())
    }

    async fn lock_partner(
        &mut self,
        program_id: i64,
        code: &str,
    ) -> Result<Option<crate::partners::PartnerRow>> {
        let conn = self.conn().await?;
        Ok(crate::partners::lock_partner!(conn, program_id, code, ""))
    }

    async fn load_partner_movements(
        &mut self,
        journal_ids: &[i64],
    ) -> Result<Vec<crate::partners::MovementRow>> {
        // In process: a statement per journal costs no round trip.
        let mut rows = Vec::new();
        for &journal_id in journal_ids {
            let conn = self.conn().await?;
            rows.extend(crate::partners::load_movements!(conn, journal_id));
        }
        Ok(rows)
    }

    async fn write_partner_entries(
        &mut self,
        program_id: i64,
        entries: &[crate::partners::NewPartnerEntry],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let conn = self.conn().await?;
        crate::partners::write_partner_entries!(conn, program_id, entries, now, "journal");
        Ok(())
    }

    async fn insert_events(
        &mut self,
        program_id: i64,
        events: &[crate::partners::NewEvent],
    ) -> Result<()> {
        for chunk in events.chunks(5_000) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO events (program_id, type, subject, payload, occurred_at, member_id) ",
            );
            q.push_values(chunk, |mut b, e| {
                b.push_bind(program_id)
                    .push_bind(e.kind)
                    .push_bind(e.subject.as_str())
                    .push_bind(e.payload.as_str())
                    .push_bind(micros(e.occurred_at))
                    .push_bind(e.member_id);
            });
            q.build().execute(self.conn().await?).await?;
        }
        Ok(())
    }

    async fn load_screening(
        &mut self,
        program_id: i64,
        names: &[&str],
        member_ids: &[i64],
        receipts: &[String],
    ) -> Result<Screening> {
        let mut out = Screening::default();
        if !names.is_empty() {
            let rows = sqlx::query(
                "SELECT id, member_id, external_id, type, occurred_at, document, rule, reason, status, \
                 held_at, decided_at, decided_by, note FROM held_journals \
                 WHERE program_id = ?1 AND external_id IN (SELECT value FROM json_each(?2))",
            )
            .bind(program_id)
            .bind(json_list(names)?)
            .fetch_all(self.conn().await?)
            .await?;
            for r in &rows {
                out.held.push(held_row(r)?);
            }
        }
        if !member_ids.is_empty() {
            out.risk = sqlx::query_as(
                "SELECT member_id, recent FROM member_risk \
                 WHERE member_id IN (SELECT value FROM json_each(?1))",
            )
            .bind(json_list(member_ids)?)
            .fetch_all(self.conn().await?)
            .await?;
            let changed: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT id, profile_changed_at FROM members \
                 WHERE id IN (SELECT value FROM json_each(?1)) AND profile_changed_at IS NOT NULL",
            )
            .bind(json_list(member_ids)?)
            .fetch_all(self.conn().await?)
            .await?;
            for (id, at) in changed {
                out.profile_changed.push((id, instant(at)?));
            }
        }
        if !receipts.is_empty() {
            out.receipts = sqlx::query_as(
                "SELECT r.receipt, r.member_id, m.external_id FROM journal_receipts r \
                 JOIN members m ON m.id = r.member_id \
                 WHERE r.program_id = ?1 AND r.receipt IN (SELECT value FROM json_each(?2))",
            )
            .bind(program_id)
            .bind(json_list(receipts)?)
            .fetch_all(self.conn().await?)
            .await?;
        }
        Ok(out)
    }

    async fn decide_held(
        &mut self,
        program_id: i64,
        external_id: &str,
        decision: &HeldDecision<'_>,
    ) -> Result<Option<HeldRow>> {
        let row = sqlx::query(
            "UPDATE held_journals SET status = ?1, decided_by = ?2, note = ?3, decided_at = ?4 \
             WHERE program_id = ?5 AND external_id = ?6 AND status = 'held' \
             RETURNING id, member_id, external_id, type, occurred_at, document, rule, reason, status, \
             held_at, decided_at, decided_by, note",
        )
        .bind(decision.status)
        .bind(decision.by)
        .bind(decision.note)
        .bind(micros(decision.at))
        .bind(program_id)
        .bind(external_id)
        .fetch_optional(self.conn().await?)
        .await?;
        row.as_ref().map(held_row).transpose()
    }

    async fn save_screening(&mut self, program_id: i64, saved: &ScreeningSave) -> Result<()> {
        for chunk in saved.held.chunks(1_000) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO held_journals (program_id, member_id, external_id, type, occurred_at, \
                 document, rule, reason, status, held_at) ",
            );
            q.push_values(chunk, |mut b, h| {
                b.push_bind(program_id)
                    .push_bind(h.member_id)
                    .push_bind(h.external_id.as_str())
                    .push_bind(h.type_name.as_str())
                    .push_bind(micros(h.occurred_at))
                    .push_bind(h.document.as_str())
                    .push_bind(h.rule.as_str())
                    .push_bind(h.reason.as_str())
                    .push_bind("held")
                    .push_bind(micros(h.held_at));
            });
            q.build().execute(self.conn().await?).await?;
        }
        if !saved.risk.is_empty() {
            let mut q = QueryBuilder::<Sqlite>::new("");
            push_risk(&mut q, program_id, &saved.risk)?;
            q.build().execute(self.conn().await?).await?;
        }
        if !saved.receipts.is_empty() {
            sqlx::query(
                "INSERT INTO journal_receipts (program_id, receipt, member_id) \
                 SELECT ?1, value ->> 0, value ->> 1 FROM json_each(?2) WHERE true \
                 ON CONFLICT DO NOTHING",
            )
            .bind(program_id)
            .bind(serde_json::to_string(&saved.receipts)?)
            .execute(self.conn().await?)
            .await?;
        }
        Ok(())
    }

    async fn count_open_holds(&mut self, member_ids: &[i64]) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM journals WHERE member_id IN (SELECT value FROM json_each(?1)) \
             AND hold_until IS NOT NULL",
        )
        .bind(json_list(member_ids)?)
        .fetch_one(self.conn().await?)
        .await?)
    }

    async fn load_groups(&mut self, group_ids: &[i64]) -> Result<Vec<GroupRow>> {
        let rows = sqlx::query(
            "SELECT g.group_id, m.external_id, m.status, g.share_percent FROM member_groups g \
             JOIN members m ON m.id = g.group_id WHERE g.group_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(json_list(group_ids)?)
        .fetch_all(self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(GroupRow {
                    group_id: r.try_get(0)?,
                    external_id: r.try_get(1)?,
                    status: r.try_get(2)?,
                    share_percent: r.try_get(3)?,
                })
            })
            .collect()
    }

    async fn mark_referrals(&mut self, member_ids: &[i64], now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "UPDATE members SET referral_qualified_at = ?1 \
             WHERE id IN (SELECT value FROM json_each(?2)) AND referred_by IS NOT NULL AND referral_qualified_at IS NULL",
        )
        .bind(micros(now))
        .bind(json_list(member_ids)?)
        .execute(self.conn().await?)
        .await?;
        Ok(())
    }

    async fn insert_audits(&mut self, entries: &[crate::access::AuditEntry]) -> Result<()> {
        for chunk in entries.chunks(4_000) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO audit_log (at, actor, role, action, program, subject, before, after) ",
            );
            let mut texts = Vec::with_capacity(chunk.len());
            for e in chunk {
                texts.push((
                    crate::access::json_text(&e.before)?,
                    crate::access::json_text(&e.after)?,
                ));
            }
            q.push_values(chunk.iter().zip(texts), |mut b, (e, (before, after))| {
                b.push_bind(micros(e.at))
                    .push_bind(e.actor.clone())
                    .push_bind(e.role.clone())
                    .push_bind(e.action.clone())
                    .push_bind(e.program.clone())
                    .push_bind(e.subject.clone())
                    .push_bind(before)
                    .push_bind(after);
            });
            q.build().execute(self.conn().await?).await?;
        }
        Ok(())
    }

    async fn has_journals(&mut self, member_id: i64) -> Result<bool> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT 1 FROM journals WHERE member_id = ?1 LIMIT 1")
                .bind(member_id)
                .fetch_optional(self.conn().await?)
                .await?
                .is_some(),
        )
    }

    async fn set_bucket_expiries(
        &mut self,
        buckets: &[(i64, i64, i32, DateTime<Utc>)],
    ) -> Result<()> {
        for (member, journal, seq, at) in buckets {
            sqlx::query("UPDATE buckets SET expires_at = ?1 WHERE member_id = ?2 AND journal_id = ?3 AND seq = ?4")
                .bind(micros(*at))
                .bind(member)
                .bind(journal)
                .bind(seq)
                .execute(self.conn().await?)
                .await?;
        }
        Ok(())
    }

    async fn load_open_buckets(&mut self, member_ids: &[i64]) -> Result<Vec<BucketRow>> {
        let sql = format!(
            "SELECT {BUCKET_COLUMNS} FROM buckets \
             WHERE member_id IN (SELECT value FROM json_each(?1)) AND (remaining > 0 OR expired_unclaimed > 0)"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(json_list(member_ids)?)
            .fetch_all(self.conn().await?)
            .await?;
        rows.iter().map(bucket_row).collect()
    }

    async fn load_journal_buckets(&mut self, journals: &[(i64, i64)]) -> Result<Vec<BucketRow>> {
        let sql = format!(
            "SELECT {BUCKET_COLUMNS} FROM buckets WHERE (member_id, journal_id) IN \
             (SELECT value ->> 0, value ->> 1 FROM json_each(?1))"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(pairs(journals)?)
            .fetch_all(self.conn().await?)
            .await?;
        rows.iter().map(bucket_row).collect()
    }

    async fn load_journals_by_external_id(
        &mut self,
        program_id: i64,
        external_ids: &[&str],
    ) -> Result<Vec<JournalRow>> {
        let sql = format!(
            "SELECT {JOURNAL_COLUMNS} FROM journals \
             WHERE program_id = ?1 AND external_id IN (SELECT value FROM json_each(?2))"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(program_id)
            .bind(json_list(external_ids)?)
            .fetch_all(self.conn().await?)
            .await?;
        rows.iter().map(journal_row).collect()
    }

    async fn load_journals_by_id(&mut self, journals: &[(i64, i64)]) -> Result<Vec<JournalRow>> {
        let sql = format!(
            "SELECT {JOURNAL_COLUMNS} FROM journals WHERE (member_id, id) IN \
             (SELECT value ->> 0, value ->> 1 FROM json_each(?1))"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(pairs(journals)?)
            .fetch_all(self.conn().await?)
            .await?;
        rows.iter().map(journal_row).collect()
    }

    async fn load_entries(&mut self, journals: &[(i64, i64)]) -> Result<Vec<EntryRow>> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE journal_id IN (SELECT value ->> 1 FROM json_each(?1))"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(pairs(journals)?)
            .fetch_all(self.conn().await?)
            .await?;
        rows.iter().map(entry_row).collect()
    }

    /// Journal ids follow the highest one written: the transaction holds the database's
    /// only write lock, journals are never deleted, and a reserved id is written nowhere
    /// but in its journal's row (an unused one is simply skipped). Counting them in a
    /// sequence row cost a page of WAL per commit. The old sequence's value is a floor, so
    /// ids never go back below what it handed out.
    async fn reserve_journal_ids(&mut self, count: usize) -> Result<Vec<i64>> {
        let start = match self.next_journal_id {
            Some(next) => next,
            None => {
                sqlx::query_scalar(concat!("SELECT ", next_journal_id!()))
                    .fetch_one(self.conn().await?)
                    .await?
            }
        };
        Ok(self.hand_out_ids(start, count))
    }

    async fn insert_journals(&mut self, program_id: i64, rows: &[JournalRow]) -> Result<()> {
        for chunk in rows.chunks(MAX_PARAMS / JOURNAL_PARAMS) {
            let mut q = QueryBuilder::<Sqlite>::new("");
            push_journals(&mut q, program_id, chunk);
            q.build().execute(self.conn().await?).await?;
        }
        Ok(())
    }

    async fn insert_entries(&mut self, program_id: i64, rows: &[EntryRow]) -> Result<()> {
        for chunk in rows.chunks(MAX_PARAMS / ENTRY_PARAMS) {
            let mut q = QueryBuilder::<Sqlite>::new("");
            push_entries(&mut q, program_id, chunk);
            q.build().execute(self.conn().await?).await?;
        }
        Ok(())
    }

    async fn upsert_buckets(&mut self, program_id: i64, rows: &[BucketRow]) -> Result<()> {
        for chunk in rows.chunks(MAX_PARAMS / BUCKET_PARAMS) {
            let mut q = QueryBuilder::<Sqlite>::new("");
            push_buckets(&mut q, program_id, chunk);
            q.build().execute(self.conn().await?).await?;
        }
        Ok(())
    }

    async fn upsert_accounts(&mut self, program_id: i64, rows: &[AccountRow]) -> Result<()> {
        for chunk in rows.chunks(MAX_PARAMS / ACCOUNT_PARAMS) {
            let mut q = QueryBuilder::<Sqlite>::new("");
            push_accounts(&mut q, program_id, chunk)?;
            q.build().execute(self.conn().await?).await?;
        }
        Ok(())
    }

    async fn update_journals(&mut self, rows: &[JournalUpdate]) -> Result<()> {
        for r in rows {
            sqlx::query(
                "UPDATE journals SET status = ?1, state = ?2, hold_until = ?5 WHERE member_id = ?3 AND id = ?4",
            )
            .bind(r.status.as_str())
            .bind(r.state.as_deref())
            .bind(r.member_id)
            .bind(r.id)
            .bind(r.hold_until.map(micros))
            .execute(self.conn().await?)
            .await?;
        }
        Ok(())
    }

    async fn save_checkpoint(&mut self, c: &CheckpointRow, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "INSERT INTO import_progress (run_id, partition, byte_offset, line, applied, replayed, rejected, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (run_id, partition) DO UPDATE SET byte_offset = excluded.byte_offset, line = excluded.line, \
             applied = applied + excluded.applied, replayed = replayed + excluded.replayed, \
             rejected = rejected + excluded.rejected, updated_at = excluded.updated_at",
        )
        .bind(c.run_id)
        .bind(c.partition)
        .bind(c.byte_offset)
        .bind(c.line)
        .bind(c.applied)
        .bind(c.replayed)
        .bind(c.rejected)
        .bind(micros(now))
        .execute(self.conn().await?)
        .await?;
        for chunk in c.rejections.chunks(MAX_PARAMS / 5) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO import_rejections (run_id, line, external_id, code, reason) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(c.run_id)
                    .push_bind(r.line)
                    .push_bind(r.external_id.as_deref())
                    .push_bind(r.code.as_str())
                    .push_bind(r.reason.as_str());
            });
            q.push(" ON CONFLICT DO NOTHING");
            q.build().execute(self.conn().await?).await?;
        }
        Ok(())
    }

    async fn due_members(
        &mut self,
        program_id: i64,
        as_of: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<MemberRow>> {
        let rows = sqlx::query(
            "SELECT m.id, m.external_id, m.status FROM members m WHERE m.id IN ( \
                 SELECT member_id FROM accounts \
                 WHERE program_id = ?1 AND next_transition_at IS NOT NULL AND next_transition_at <= ?2 \
                 UNION SELECT member_id FROM member_tiers \
                 WHERE program_id = ?1 AND next_due_at IS NOT NULL AND next_due_at <= ?2 \
                 ORDER BY member_id LIMIT ?3)",
        )
        .bind(program_id)
        .bind(micros(as_of))
        .bind(limit)
        .fetch_all(self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MemberRow {
                    id: r.try_get(0)?,
                    external_id: r.try_get(1)?,
                    status: r.try_get(2)?,
                    owner: None,
                    group_id: None,
                    enrolled_at: None,
                })
            })
            .collect()
    }

    async fn program_revision(&mut self, program_id: i64) -> Result<Option<i32>> {
        Ok(
            sqlx::query_scalar("SELECT revision FROM programs WHERE id = ?1")
                .bind(program_id)
                .fetch_optional(self.conn().await?)
                .await?,
        )
    }

    /// Reads a small batch's opening in one statement that answers one row. The
    /// connection's worker thread sends every row and every statement's end as a message
    /// of its own, and each message wakes the task waiting for it (measured: a realtime
    /// purchase on one connection spent most of its time switching threads, not in
    /// SQLite). Each part comes back as one column, a JSON array of its rows. Large
    /// batches (imports) read part by part.
    async fn open_batch(
        &mut self,
        program_id: i64,
        lock_keys: &[i64],
        members: &[&str],
        journals: &[&str],
        id_count: usize,
        with_tiers: bool,
        screen: bool,
        reads: OpeningReads<'_>,
    ) -> Result<Opening> {
        if !self.opens_in_one(members.len()) {
            return open_batch_stepwise(
                self, program_id, lock_keys, members, journals, id_count, screen,
            )
            .await;
        }
        // The members' ids as the other parts read them (a merged member's survivor).
        const IDS: &str = concat!("(SELECT COALESCE(s.id, x.id) AS id ", named_members!(), ")");
        let read_ids = id_count > 0 && self.next_journal_id.is_none();
        let ids = if read_ids { next_journal_id!() } else { "NULL" };
        let screening = if screen {
            format!(
                "(SELECT json_group_array(json_array(member_id, external_id, type, occurred_at, document, rule, \
                                                     reason, status, held_at)) FROM held_journals \
                  WHERE program_id = ?1 AND external_id IN (SELECT value FROM json_each(?3))), \
                 (SELECT json_group_array(json_array(member_id, recent)) FROM member_risk WHERE member_id IN {IDS}), \
                 (SELECT json_group_array(json_array(id, profile_changed_at)) FROM members \
                  WHERE id IN {IDS} AND profile_changed_at IS NOT NULL)"
            )
        } else {
            "NULL, NULL, NULL".into()
        };
        let tiers = if with_tiers {
            format!(
                "(SELECT json_group_array(json_array(x.id, CASE WHEN t.state IS NULL THEN x.enrolled_at END, t.state)) \
                  FROM members x LEFT JOIN member_tiers t ON t.member_id = x.id WHERE x.id IN {IDS})"
            )
        } else {
            "NULL".into()
        };
        let facts = match reads.facts {
            Some(segments) => {
                let segments = if segments { member_segments!() } else { "NULL" };
                format!(
                    "(SELECT json_group_array(json_array(id, profile, enrolled_at, {segments})) FROM members \
                      WHERE id IN {IDS})"
                )
            }
            None => "NULL".into(),
        };
        // The keys drive, one primary-key lookup each (see `load_counters`).
        let counters = if reads.counter_periods.is_empty() {
            "NULL".into()
        } else {
            format!(
                "(SELECT json_group_array(json_array(u.promotion, u.member_id, u.period, u.times, u.points)) \
                  FROM json_each(?4) AS k CROSS JOIN {IDS} AS m \
                  CROSS JOIN promotion_usage u ON u.program_id = ?1 AND u.promotion = k.value ->> 0 \
                   AND u.member_id = m.id AND u.period = k.value ->> 1)"
            )
        };
        // The transaction begins with this statement (its parameters are numbered).
        let begin = self.begin_with_first();
        let sql = format!(
            "{begin}SELECT (SELECT revision FROM programs WHERE id = ?1), \
             (SELECT json_group_array(json_array(COALESCE(s.id, x.id), x.external_id, COALESCE(s.status, x.status), \
                                                 s.external_id, CASE WHEN s.id IS NULL THEN x.group_id ELSE s.group_id END, \
                                                 x.enrolled_at)) {named_members}), \
             (SELECT json_group_array(json_array(member_id, currency, available, pending, arrears, pool, \
                                                 last_activity_at, next_transition_at)) \
              FROM accounts WHERE member_id IN {IDS}), \
             (SELECT json_group_array(json_array({JOURNAL_COLUMNS})) FROM journals \
              WHERE program_id = ?1 AND external_id IN (SELECT value FROM json_each(?3))), \
             {ids}, {screening}, {tiers}, {facts}, {counters}",
            named_members = named_members!()
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(program_id)
            .bind(json_list(members)?)
            .bind(json_list(journals)?)
            .bind(serde_json::to_string(reads.counter_periods)?)
            .fetch_one(self.conn().await?)
            .await?;
        /// A part's rows, as the tuples `T` (none when the part was not read).
        fn part<T: serde::de::DeserializeOwned>(row: &SqliteRow, i: usize) -> Result<Vec<T>> {
            match row.try_get::<Option<String>, _>(i)? {
                Some(text) => serde_json::from_str(&text).map_err(|e| {
                    StoreError::Inconsistent(format!("a batch's opening, part {i}: {e}"))
                }),
                None => Ok(Vec::new()),
            }
        }
        type Member = (i64, String, String, Option<String>, Option<i64>, i64);
        type Account = (i64, String, i64, i64, i64, i64, Option<i64>, Option<i64>);
        type Journal = (
            i64,
            i64,
            Option<String>,
            String,
            String,
            String,
            Option<i64>,
            i64,
            i64,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        type Held = (
            i64,
            String,
            String,
            i64,
            String,
            String,
            String,
            String,
            i64,
        );
        type Counter = (String, i64, String, i64, i64);
        let mut opening = Opening {
            revision: row.try_get(0)?,
            ..Opening::default()
        };
        for (id, external_id, status, owner, group_id, enrolled) in part::<Member>(&row, 1)? {
            opening.members.push(MemberRow {
                id,
                external_id,
                status,
                owner,
                group_id,
                enrolled_at: Some(instant(enrolled)?),
            });
        }
        for (member_id, currency, available, pending, arrears, pool, activity, transition) in
            part::<Account>(&row, 2)?
        {
            opening.accounts.push(AccountRow {
                existing: true,
                member_id,
                currency,
                available,
                pending,
                arrears,
                pool,
                last_activity_at: opt_instant(activity)?,
                next_transition_at: opt_instant(transition)?,
                transition_changed: false,
            });
        }
        for j in part::<Journal>(&row, 3)? {
            opening.journals.push(JournalRow {
                member_id: j.0,
                id: j.1,
                external_id: j.2,
                kind: j.3,
                type_name: j.4,
                status: j.5,
                original_id: j.6,
                occurred_at: instant(j.7)?,
                recorded_at: instant(j.8)?,
                document: j.9,
                outcome: j.10,
                state: j.11,
                hold_until: None,
            });
        }
        if screen {
            let mut screening = Screening::default();
            for h in part::<Held>(&row, 5)? {
                screening.held.push(HeldRow {
                    member_id: h.0,
                    external_id: h.1,
                    type_name: h.2,
                    occurred_at: instant(h.3)?,
                    document: h.4,
                    rule: h.5,
                    reason: h.6,
                    status: h.7,
                    held_at: instant(h.8)?,
                });
            }
            screening.risk = part::<(i64, String)>(&row, 6)?;
            for (id, at) in part::<(i64, i64)>(&row, 7)? {
                screening.profile_changed.push((id, instant(at)?));
            }
            opening.screening = Some(screening);
        }
        if with_tiers {
            let mut tiers = Vec::new();
            for (member_id, enrolled, state) in part::<(i64, Option<i64>, Option<String>)>(&row, 8)?
            {
                tiers.push(TierRow {
                    member_id,
                    enrolled_at: opt_instant(enrolled)?,
                    state,
                });
            }
            opening.tiers = Some(tiers);
        }
        if reads.facts.is_some() {
            let mut facts = Vec::new();
            for (member_id, profile, enrolled, segments) in
                part::<(i64, String, i64, Option<String>)>(&row, 9)?
            {
                facts.push(MemberFactsRow {
                    member_id,
                    profile,
                    enrolled_at: instant(enrolled)?,
                    segments,
                });
            }
            opening.facts = Some(facts);
        }
        let mut counters = Vec::new();
        for (promotion, member, period, times, points) in part::<Counter>(&row, 10)? {
            counters.push((
                CounterKey {
                    promotion: stored_promotion(&promotion)?,
                    member,
                    period,
                },
                Count { times, points },
            ));
        }
        opening.counters = Some(counters);
        if id_count > 0 {
            let start = match self.next_journal_id {
                Some(next) => next,
                None => row.try_get::<Option<i64>, _>(4)?.ok_or_else(|| {
                    StoreError::Inconsistent("a batch's opening read no journal id".into())
                })?,
            };
            opening.ids = self.hand_out_ids(start, id_count);
        }
        Ok(opening)
    }

    fn writes_beside(&self) -> bool {
        true
    }

    /// One query when the rows fit SQLite's parameter limit (the engine's parts do), sent
    /// at once.
    async fn write_beside(&mut self, program_id: i64, rows: &WriteSet) -> Result<()> {
        if !fits_one_query(rows) {
            self.write_overlapped(program_id, rows).await?;
            if !rows.tiers.is_empty() {
                self.save_tiers(program_id, &rows.tiers).await?;
            }
            return Ok(());
        }
        let mut q = QueryBuilder::<Sqlite>::new("");
        if push_ledger_rows(&mut q, program_id, rows)? > 0 {
            q.build().execute(self.conn().await?).await?;
        }
        Ok(())
    }

    /// Writes a batch's rows. Each statement is a message to the connection's worker
    /// thread and an answer back; a realtime purchase's seven writes (journal, entries,
    /// bucket, accounts, fraud memory, promotion counters, tiers) go as one multi-statement
    /// query instead, held back to go with the `COMMIT` when nothing follows (see
    /// [`LedgerConn`]). The rest follows part by part, after them: updates may touch a
    /// journal this batch inserted. A batch past SQLite's parameter limit (an import's)
    /// is written part by part, in chunks.
    async fn write_batch(&mut self, program_id: i64, rows: &WriteSet) -> Result<()> {
        if !fits_one_query(rows) {
            self.write_overlapped(program_id, rows).await?;
            return write_batch_rest(self, program_id, rows, true, true).await;
        }
        let mut q = QueryBuilder::<Sqlite>::new("");
        if push_ledger_rows(&mut q, program_id, rows)? > 0 {
            self.write_later(q).await?;
        }
        write_batch_rest(self, program_id, rows, false, false).await
    }
}

pub(crate) fn held_row(r: &SqliteRow) -> Result<HeldRow> {
    Ok(HeldRow {
        member_id: r.try_get("member_id")?,
        external_id: r.try_get("external_id")?,
        type_name: r.try_get("type")?,
        occurred_at: instant(r.try_get("occurred_at")?)?,
        document: r.try_get("document")?,
        rule: r.try_get("rule")?,
        reason: r.try_get("reason")?,
        status: r.try_get("status")?,
        held_at: instant(r.try_get("held_at")?)?,
    })
}

#[cfg(test)]
mod tests {
    use sqlx::QueryBuilder;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

    use crate::begin_sqlite_ledger;

    /// A one-connection pool on a new database file with one table, `t`.
    async fn one_connection(name: &str) -> SqlitePool {
        let path = std::env::temp_dir().join(format!(
            "fidelis-ledger-conn-{name}-{}.db",
            std::process::id()
        ));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true),
            )
            .await
            .expect("a database file");
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .execute(&pool)
            .await
            .expect("the table");
        pool
    }

    async fn ids(pool: &SqlitePool) -> Vec<i64> {
        sqlx::query_scalar("SELECT id FROM t ORDER BY id")
            .fetch_all(pool)
            .await
            .expect("the rows")
    }

    /// A ledger transaction ended half way — dropped after a write, with another held
    /// back — leaves nothing behind, and the next one on the same (only) connection
    /// begins, reads and commits: the connection did not go back to the pool inside the
    /// transaction sqlx does not know about.
    #[tokio::test]
    async fn a_ledger_transaction_dropped_half_way_leaves_nothing() {
        let pool = one_connection("dropped").await;
        let mut tx = begin_sqlite_ledger(&pool).await.expect("a transaction");
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(tx.conn().await.expect("begun"))
            .await
            .expect("a write");
        tx.write_later(QueryBuilder::new("INSERT INTO t VALUES (2)"))
            .await
            .expect("held back");
        drop(tx);

        let mut tx = begin_sqlite_ledger(&pool)
            .await
            .expect("the next transaction");
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(tx.conn().await.expect("begun"))
            .await
            .expect("a read");
        assert_eq!(seen, 0, "the dropped transaction's writes were kept");
        tx.write_later(QueryBuilder::new("INSERT INTO t VALUES (3)"))
            .await
            .expect("held back");
        tx.commit().await.expect("the commit");
        assert_eq!(ids(&pool).await, vec![3]);
    }

    /// A write held back for the commit that fails makes the commit fail, with the
    /// write's own error (a unique key, which callers retry on), and commits nothing of
    /// the transaction; the next transaction works.
    #[tokio::test]
    async fn a_held_back_write_that_fails_fails_the_commit() {
        let pool = one_connection("failing").await;
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&pool)
            .await
            .expect("a first row");
        let mut tx = begin_sqlite_ledger(&pool).await.expect("a transaction");
        sqlx::query("INSERT INTO t VALUES (5)")
            .execute(tx.conn().await.expect("begun"))
            .await
            .expect("a write");
        tx.write_later(QueryBuilder::new("INSERT INTO t VALUES (1)"))
            .await
            .expect("held back");
        let err = tx.commit().await.expect_err("the held-back write fails");
        assert!(err.is_unique_violation(), "{err:?}");
        assert_eq!(
            ids(&pool).await,
            vec![1],
            "part of the transaction committed"
        );

        let mut tx = begin_sqlite_ledger(&pool)
            .await
            .expect("the next transaction");
        tx.write_later(QueryBuilder::new("INSERT INTO t VALUES (7)"))
            .await
            .expect("held back");
        tx.commit().await.expect("the commit");
        assert_eq!(ids(&pool).await, vec![1, 7]);
    }

    /// The opening carries the transaction's `BEGIN` (once): what follows it is inside
    /// the transaction, and a rollback undoes it.
    #[tokio::test]
    async fn the_first_statement_carries_the_begin() {
        let pool = one_connection("begin").await;
        let mut tx = begin_sqlite_ledger(&pool).await.expect("a transaction");
        let begin = tx.begin_with_first();
        assert_eq!(begin, "BEGIN IMMEDIATE; ");
        assert_eq!(tx.begin_with_first(), "", "BEGIN twice");
        let sql = format!("{begin}SELECT count(*) FROM t WHERE id > ?1");
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(0_i64)
            .fetch_one(tx.conn().await.expect("begun"))
            .await
            .expect("the opening");
        assert_eq!(n, 0);
        sqlx::query("INSERT INTO t VALUES (9)")
            .execute(tx.conn().await.expect("begun"))
            .await
            .expect("a write");
        tx.rollback().await.expect("the rollback");
        assert_eq!(ids(&pool).await, Vec::<i64>::new());
    }
}
