//! Storage for Fidelis: one [`Store`] over SQLite (the embedded default) or PostgreSQL
//! (the production store), with the same behaviour on both.
//!
//! # Architecture invariant
//! Only this crate knows SQL. The ledger rules are not here: the store loads what
//! [`fidelis_core::process`] needs, calls it, and writes the result in one transaction
//! ([`engine`]). Each dialect ([`sqlite`], [`postgres`]) implements the same row-moving
//! contract, [`rows::LedgerTx`]; the behaviour suite in `tests/` runs against both.
//!
//! # Concurrency
//! Writers are serialised per member, never globally: PostgreSQL takes a
//! transaction-scoped advisory lock per member; SQLite has one writer at a time by design
//! (`BEGIN IMMEDIATE`). Journals are idempotent by `(program, external_id)`, enforced by a
//! unique key, so concurrent duplicates credit once.

mod access;
mod analytics;
mod badges;
#[doc(hidden)]
pub mod bare;
mod catalog;
mod checkpoint;
mod claims;
mod dashboard;
mod dialect;
mod engine;
mod error;
mod expiry;
mod fraud;
mod group_commit;
mod groups;
mod health;
mod holds;
mod imports;
mod liability;
mod lifecycle;
mod members;
mod messages;
mod partners;
mod personal_data;
mod postgres;
mod programs;
mod referrals;
mod replica;
mod rows;
mod scheduled;
mod segments;
mod sessions;
mod settlements;
mod sqlite;
mod streams;
mod tiers;
mod views;
mod vouchers;
mod webhooks;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use access::{Actor, AuditEntry, AuditFilter, NewToken, TokenRecord, UserRecord};
pub use analytics::{Histories, MemberHistory, PromotionExposure};
pub use badges::{BadgeView, GrantedBenefit};
pub use catalog::{CatalogEntry, MAX_ORDER_ID_LEN, OrderView};
pub use claims::{ClaimView, NewClaim};
pub use dashboard::{Dashboard, MonthPoints};
use engine::Revision;
pub use engine::{ImportProgress, JournalResult, LoadedProgram, Posted, Prepared, SettleReport};
pub use error::{Result, StoreError, Unavailability};
pub use expiry::{ExpiryExtension, ExtensionReport};
pub use fraud::{Decided, HeldJournal};
pub use groups::{GroupView, RedeemRule};
pub use health::Health;
pub use holds::HoldView;
pub use imports::{ImportRun, PartitionProgress};
pub use liability::{
    Cohort, CurrencyLiability, Liability, LiabilityPoint, MIN_RESOLVED, PartnerLiability,
};
pub use lifecycle::{MergeReport, Opened};
pub use members::{
    Enrollment, MemberCursor, MemberListing, MemberPage, MemberQuery, MemberSort, MemberView,
    unstorable_json,
};
pub use messages::{
    CHANNELS, ConsentView, DueMessage, MAIL_EVENTS, MessageOutcome, MessageTemplate, MessageView,
};
pub use partners::{EventView, PartnerEntryView, PartnerSums, PartnerView};
pub use personal_data::{EXPORT_FORMAT, Erasure};
pub use programs::ProgramSummary;
pub use replica::ReplicaStatus;
pub use rows::RejectionRow;
pub use scheduled::DueReward;
pub use segments::{MemberScores, SegmentRefresh};
pub use sessions::{NewSession, SessionRecord};
pub use settlements::{Statement, StatementLine, StatementTotals};
pub use streams::StreamEvent;
pub use tiers::TierStanding;
pub use views::{BalanceView, EntryView, JournalView, ScheduledPoints};
pub use vouchers::{VoucherAction, VoucherEntry, VoucherView};
pub use webhooks::{
    Attempt, DeliveryView, Dispatched, DueDelivery, EVENT_TYPES, EventEnvelope, MAX_WEBHOOKS,
    NewWebhook, WebhookView,
};

/// Members settled per transaction by the scheduled jobs.
const SETTLE_BATCH: i64 = 500;
/// How often a batch is retried when a concurrent writer took one of its journal ids.
pub(crate) const UNIQUE_RETRIES: usize = 3;

/// The database: SQLite or PostgreSQL, chosen by the URL.
#[derive(Clone)]
pub struct Store {
    db: Db,
    programs: Arc<RwLock<HashMap<String, Arc<LoadedProgram>>>>,
    /// Started on the first realtime journal (it needs a running Tokio runtime).
    committer: Arc<OnceLock<group_commit::GroupCommit>>,
    committers: usize,
    health: Arc<Health>,
    /// Which programs have a webhook for `points.earned` (see [`Store::earned_wanted`]).
    earned_wanted: Arc<std::sync::Mutex<HashMap<i64, (bool, std::time::Instant)>>>,
    /// The programs whose jobs run in this process (see [`Store::run_jobs`]).
    jobs_running: Arc<std::sync::Mutex<std::collections::HashSet<i64>>>,
    /// A hot standby the reports read from while it is fresh (`replica.rs`).
    replica: Option<Arc<replica::Replica>>,
    /// SQLite: the one connection ledger transactions write through (see
    /// [`Store::ledger_pool`]).
    ledger_writer: Option<SqlitePool>,
    /// SQLite: the write-ahead log copied into the database beside the writer
    /// (`checkpoint.rs`).
    checkpointer: Option<Arc<checkpoint::Checkpointer>>,
}

/// The first key of the session advisory locks that keep a program's jobs to one run at a
/// time on PostgreSQL (the second is the program's id). Two-key advisory locks are a key
/// space of their own: they never meet the members' one-key locks.
const JOBS_LOCK_CLASS: i32 = 1;

/// A program's mark in [`Store::jobs_running`], taken off however the run ends.
struct JobsMark<'a> {
    running: &'a std::sync::Mutex<std::collections::HashSet<i64>>,
    program: i64,
}

impl Drop for JobsMark<'_> {
    fn drop(&mut self) {
        if let Ok(mut running) = self.running.lock() {
            running.remove(&self.program);
        }
    }
}

fn jobs_running(code: &str) -> StoreError {
    StoreError::Refused(
        "jobs_running",
        format!(
            "the jobs of program {code:?} are running already (here or on another server); \
             run them again when they are done"
        ),
    )
}

/// How long a program's answer to "does a webhook want `points.earned`?" is kept: a
/// subscription made on another server is seen within it.
const EARNED_WANTED_TTL: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Clone)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.db {
            Db::Sqlite(_) => "Store(sqlite)",
            Db::Postgres(_) => "Store(postgres)",
        })
    }
}

/// Runs `$body` with `$tx` bound to a new ledger transaction of the store's dialect,
/// commits on success, and retries the whole body when a concurrent writer won a unique
/// key (the retry then sees that writer's rows, e.g. as a replay).
macro_rules! in_ledger_tx {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match &$store.db {
                Db::Sqlite(pool) => {
                    let mut $tx = $crate::begin_sqlite_ledger($store.ledger_pool(pool)).await?;
                    match $body {
                        Ok(v) => $tx.commit().await.map(|_| v),
                        Err(e) => {
                            // A failed rollback closes the connection instead (see
                            // `sqlite::LedgerConn`); the body's error is the answer.
                            let _ = $tx.rollback().await;
                            Err(e)
                        }
                    }
                }
                Db::Postgres(pool) => {
                    let mut $tx = postgres::PgTx::new(pool);
                    match $body {
                        Ok(v) => $tx.commit().await.map(|_| v),
                        Err(e) => Err(e),
                    }
                }
            };
            match result {
                Err(e) if e.is_unique_violation() && attempt < $crate::UNIQUE_RETRIES => continue,
                other => break other,
            }
        }
    }};
}
pub(crate) use in_ledger_tx;

/// Group-commit transactions in flight at once on PostgreSQL, by default. Two keep one
/// transaction filling while the other waits for its commit to reach the disk; more
/// split the arrivals into smaller groups and cost more commits (measured with
/// `cargo xtask bench-api`).
pub const DEFAULT_COMMITTERS: usize = 2;

/// Connection settings beyond the URL.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long a SQLite writer waits for the write lock before failing.
    pub busy_timeout: Duration,
    /// Concurrent group-commit transactions for realtime journals on PostgreSQL (SQLite
    /// has one writer, so one).
    pub committers: usize,
    /// How long a PostgreSQL operation waits for a connection (a new one included) before
    /// failing as unavailable: short, so that requests fail fast while the database is gone
    /// rather than queue behind a connection that will not come.
    pub acquire_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            busy_timeout: Duration::from_secs(30),
            committers: DEFAULT_COMMITTERS,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// How long a PostgreSQL connection may sit in the pool before it is pinged when handed
/// out again.
const IDLE_BEFORE_PING: std::time::Duration = std::time::Duration::from_secs(1);

/// Begins a SQLite ledger transaction on `pool` (see [`Store::ledger_pool`]); its
/// `BEGIN IMMEDIATE` goes with its first statement (see [`sqlite::LedgerConn`]). Waiting
/// too long for the ledger's connection means another writer holds it — the database is
/// busy, as when waiting too long for SQLite's lock — not that it cannot be reached (which
/// would mark the whole store down and fail every request at once).
pub(crate) async fn begin_sqlite_ledger(pool: &SqlitePool) -> Result<sqlite::SqliteTx<'static>> {
    pool.acquire()
        .await
        .map(|conn| sqlite::SqliteTx::ledger(sqlite::LedgerConn::new(conn)))
        .map_err(|e| match e {
            sqlx::Error::PoolTimedOut => StoreError::Unavailable {
                kind: Unavailability::Busy,
                detail: "another writer held the database for longer than the busy timeout".into(),
            },
            e => e.into(),
        })
}

/// Whether a connection may go back to the pool: only outside a transaction. A write
/// that fails on a full disk (SQLITE_FULL, or an I/O error) can make SQLite roll the
/// transaction back by itself; the driver's own `ROLLBACK` then fails and it still counts
/// the connection as inside a transaction, so every later `BEGIN` on it would fail until a
/// restart. Such a connection is closed instead (the pool opens a fresh one). The check
/// first lets the connection finish a rollback still queued from the transaction's drop.
async fn release_outside_transaction<C: sqlx::Connection>(conn: &mut C) -> sqlx::Result<bool> {
    if conn.is_in_transaction() {
        conn.ping().await?;
        if conn.is_in_transaction() {
            tracing::warn!("closing a database connection left inside a failed transaction");
            return Ok(false);
        }
    }
    Ok(true)
}

impl Store {
    /// Connects to `sqlite://PATH` (created if missing) or `postgres://…`, and brings the
    /// schema up to date. A second process migrating the same database at the same time
    /// waits for the first.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, ConnectOptions::default()).await
    }

    pub async fn connect_with(url: &str, options: ConnectOptions) -> Result<Self> {
        /// A new SQLite database file readable by its owner only: it holds members'
        /// personal data. (SQLite gives its `-wal` and `-shm` files the same permissions.)
        fn create_private(path: &std::path::Path) -> Result<()> {
            if path.as_os_str().is_empty() || path.to_str() == Some(":memory:") || path.exists() {
                return Ok(());
            }
            let mut file = std::fs::OpenOptions::new();
            file.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
            match file.open(path) {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(StoreError::BadUrl(format!("{}: {e}", path.display()))),
            }
        }

        let mut ledger_writer = None;
        let mut checkpointer = None;
        let db = if url.starts_with("sqlite:") {
            // WAL lets readers run beside the writer; FULL makes every commit durable
            // (NORMAL would lose the last commits on power loss).
            let connect = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::BadUrl(format!("{url}: {e}")))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(options.busy_timeout)
                .foreign_keys(true)
                // 64 MiB of page cache per connection.
                .pragma("cache_size", "-65536")
                // Multi-row statements spill statement journals to temporary files
                // otherwise (measured: 4.5% of an import's time).
                .pragma("temp_store", "memory")
                // A task copies the log into the database beside the writer
                // (`checkpoint.rs`); a commit checkpoints itself only past 400 MB of log
                // (a large batch writes 40 MB or more, and its commit would wait for the
                // copy), and a log started again is cut back to 64 MB.
                .pragma("wal_autocheckpoint", "100000")
                .pragma("journal_size_limit", "67108864")
                .pragma("mmap_size", "1073741824");
            create_private(connect.get_filename())?;
            let pool = SqlitePoolOptions::new()
                .max_connections(options.max_connections)
                // No ping before each use (see the ledger's pool below).
                .test_before_acquire(false)
                .after_release(|conn, _| Box::pin(release_outside_transaction(conn)))
                .connect_with(connect.clone())
                .await?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            ledger_writer = Some(
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(options.busy_timeout)
                    // A SQLite connection cannot be cut off from its file; pinging it
                    // before each use was one more message to its thread per journal.
                    .test_before_acquire(false)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .after_release(|conn, _| Box::pin(release_outside_transaction(conn)))
                    .connect_with(connect.clone())
                    .await?,
            );
            // (sqlx names an in-memory database `file:sqlx-in-memory-N`: told by the URL.)
            if !(url.contains(":memory:") || url.contains("mode=memory")) {
                checkpointer = checkpoint::Checkpointer::start(&connect).map(Arc::new);
            }
            Db::Sqlite(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let connect = PgConnectOptions::from_str(url)
                .map_err(|e| StoreError::BadUrl(format!("{url}: {e}")))?;
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(options.acquire_timeout)
                // A connection is pinged when it goes back to the pool (always, by the
                // pool) and, before it is handed out, only if it sat idle: a ping on
                // every acquire is a round trip on every journal's path (measured: one
                // of five), while a connection busy a moment ago is known alive. One
                // that died idle (a restarted server) is found and replaced here.
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= IDLE_BEFORE_PING {
                            sqlx::Connection::ping(conn).await?;
                        }
                        Ok(true)
                    })
                })
                .after_release(|conn, _| Box::pin(release_outside_transaction(conn)))
                .connect_with(connect)
                .await?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            Db::Postgres(pool)
        } else {
            return Err(StoreError::BadUrl(format!(
                "{url:?}: use sqlite://PATH or postgres://USER@HOST:PORT/DATABASE"
            )));
        };
        let committers = match db {
            Db::Sqlite(_) => 1,
            Db::Postgres(_) => options.committers,
        };
        let store = Self {
            db,
            programs: Arc::default(),
            committer: Arc::default(),
            committers,
            health: Arc::default(),
            earned_wanted: Arc::default(),
            jobs_running: Arc::default(),
            replica: None,
            ledger_writer,
            checkpointer,
        };
        store.finish_member_terms().await?;
        Ok(store)
    }

    /// The SQLite pool ledger transactions begin on: one connection of its own. SQLite
    /// has one writer at a time anyway, and a connection's page cache (and its map of the
    /// file) is dropped whenever another connection wrote since its last transaction:
    /// passed around a pool, every ledger transaction started cold (measured: remapping
    /// the file and faulting its pages back in were a seventh of a realtime purchase's
    /// time). Writers queue for it in the pool, in order, instead of polling SQLite's
    /// lock.
    fn ledger_pool<'a>(&'a self, pool: &'a SqlitePool) -> &'a SqlitePool {
        self.ledger_writer.as_ref().unwrap_or(pool)
    }

    /// `sqlite` or `postgres`.
    pub fn dialect(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Whether the database answers (for readiness checks).
    pub async fn ping(&self) -> Result<()> {
        match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
            Db::Postgres(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
        }
        Ok(())
    }

    /// Processes journals of one program as one transaction, in order, and answers one
    /// result per journal: applied, replayed (the first outcome), or refused (nothing
    /// changed for it). With `progress`, the import's checkpoint and rejections are saved
    /// in the same transaction, so a crash never separates them from the journals.
    pub async fn post_journals(
        &self,
        program: &LoadedProgram,
        journals: &[Prepared],
        now: DateTime<Utc>,
        progress: Option<&ImportProgress>,
    ) -> Result<Vec<JournalResult>> {
        let results = self
            .post_checked(program, journals, now, progress, Revision::AsLoaded)
            .await?;
        self.after_posting(program, journals, &results, now).await?;
        Ok(results)
    }

    /// Work that follows journals in their own transactions: referral rewards for
    /// referees who just qualified.
    async fn after_posting(
        &self,
        program: &LoadedProgram,
        journals: &[Prepared],
        results: &[JournalResult],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let Some(referral) = &program.program.referral else {
            return Ok(());
        };
        let qualifying = journals.iter().zip(results).any(|(j, r)| {
            matches!(r, Ok(p) if !p.replayed)
                && matches!(
                    j.journal.body,
                    fidelis_core::journal::JournalBody::Accrual(_)
                )
                && referral.qualifies(j.journal.body.type_code().as_str())
        });
        if qualifying {
            Box::pin(self.reward_referrals(program, now)).await?;
        }
        Ok(())
    }

    pub(crate) async fn post_checked(
        &self,
        program: &LoadedProgram,
        journals: &[Prepared],
        now: DateTime<Utc>,
        progress: Option<&ImportProgress>,
        check: Revision,
    ) -> Result<Vec<JournalResult>> {
        let earned = self.earned_wanted(program.id).await?;
        in_ledger_tx!(self, |tx| engine::post_batch(
            &mut tx, program, journals, now, progress, check, false, earned
        )
        .await)
    }

    /// Whether any active webhook of the program takes `points.earned` (or every event), or
    /// a stream is registered (it takes every event).
    /// The one event written per accrual is the outbox's bulk: a program nobody listens
    /// to for it does not pay for writing it (an import 15–20 % faster). Kept for
    /// [`EARNED_WANTED_TTL`]; a webhook change on this server forgets it at once.
    pub(crate) async fn earned_wanted(&self, program_id: i64) -> Result<bool> {
        if let Ok(cache) = self.earned_wanted.lock()
            && let Some((wanted, at)) = cache.get(&program_id)
            && at.elapsed() < EARNED_WANTED_TTL
        {
            return Ok(*wanted);
        }
        let lists: Vec<String> = crate::dialect::with_pool!(self, |pool| {
            sqlx::query_scalar(
                // A registered stream (`streams.rs`) takes every event.
                "SELECT events FROM webhooks WHERE program_id = $1 AND active = true \
                 UNION ALL SELECT '[\"*\"]' FROM event_streams",
            )
            .bind(program_id)
            .fetch_all(pool)
            .await?
        });
        let wanted = lists.iter().any(|l| {
            serde_json::from_str::<Vec<String>>(l)
                .map(|types| types.iter().any(|t| t == "*" || t == "points.earned"))
                .unwrap_or(true)
        });
        if let Ok(mut cache) = self.earned_wanted.lock() {
            cache.insert(program_id, (wanted, std::time::Instant::now()));
        }
        Ok(wanted)
    }

    /// Forgets whether the program wants `points.earned` (its webhooks changed).
    pub(crate) fn forget_earned_wanted(&self, program_id: i64) {
        if let Ok(mut cache) = self.earned_wanted.lock() {
            cache.remove(&program_id);
        }
    }

    /// Posts one realtime journal, sharing a transaction with the realtime journals that
    /// arrive at the same moment ([`group_commit`]): under load, a fraction of the round
    /// trips and WAL flushes per journal. The result is the journal's own, as if posted
    /// alone with [`Store::post_journals`].
    pub async fn post_realtime(
        &self,
        program: &Arc<LoadedProgram>,
        journal: Prepared,
        now: DateTime<Utc>,
    ) -> Result<JournalResult> {
        let committer = self.committer.get_or_init(|| {
            let direct = Self {
                db: self.db.clone(),
                programs: Arc::clone(&self.programs),
                committer: Arc::default(),
                committers: 0,
                health: Arc::clone(&self.health),
                earned_wanted: Arc::clone(&self.earned_wanted),
                jobs_running: Arc::clone(&self.jobs_running),
                replica: self.replica.clone(),
                ledger_writer: self.ledger_writer.clone(),
                checkpointer: self.checkpointer.clone(),
            };
            group_commit::GroupCommit::start(&direct, self.committers)
        });
        let may_qualify = program.program.referral.as_ref().is_some_and(|r| {
            matches!(
                journal.journal.body,
                fidelis_core::journal::JournalBody::Accrual(_)
            ) && r.qualifies(journal.journal.body.type_code().as_str())
        });
        let result = match committer.post(Arc::clone(program), journal, now).await {
            Ok(result) => result?,
            Err(journal) => {
                let mut results = self
                    .post_checked(
                        program,
                        std::slice::from_ref(&journal),
                        now,
                        None,
                        Revision::Current,
                    )
                    .await?;
                results.pop().ok_or_else(|| {
                    StoreError::Inconsistent("a journal posted alone answered nothing".into())
                })?
            }
        };
        if may_qualify && matches!(&result, Ok(p) if !p.replayed) {
            self.reward_referrals(program, now).await?;
        }
        Ok(result)
    }

    /// What posting `journal` now would do, without changing anything: it is processed in
    /// a transaction that is then rolled back (so the answer is exact, locks included).
    pub async fn dry_run(
        &self,
        program: &LoadedProgram,
        journal: &Prepared,
        now: DateTime<Utc>,
    ) -> Result<JournalResult> {
        let journals = std::slice::from_ref(journal);
        let result = match &self.db {
            Db::Sqlite(pool) => {
                let mut tx = begin_sqlite_ledger(self.ledger_pool(pool)).await?;
                let result = engine::post_batch(
                    &mut tx,
                    program,
                    journals,
                    now,
                    None,
                    Revision::AsLoaded,
                    true,
                    false,
                )
                .await;
                // The writes held back for a commit are sent too, so that the answer is as
                // exact as a post's (constraints included); the body's error comes first.
                let flushed = match &result {
                    Ok(_) => tx.conn().await.map(|_| ()),
                    Err(_) => Ok(()),
                };
                let rolled_back = tx.rollback().await;
                let result = result?;
                flushed?;
                rolled_back?;
                result
            }
            Db::Postgres(pool) => {
                let mut tx = postgres::PgTx::new(pool);
                let result = engine::post_batch(
                    &mut tx,
                    program,
                    journals,
                    now,
                    None,
                    Revision::AsLoaded,
                    true,
                    false,
                )
                .await;
                tx.rollback().await?;
                result?
            }
        };
        result
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Inconsistent("a dry run answered nothing".into()))
    }

    /// Runs the time-driven jobs of a program as of `as_of`: expiries and pending
    /// releases due. Idempotent: a second run as of the same instant changes nothing.
    ///
    /// One run per program at a time, whichever server asks: a second is refused with
    /// `jobs_running` while the first lasts. In this process a mark says so; on PostgreSQL
    /// also a session advisory lock, held by a connection of its own for the run. A server
    /// that dies mid-run closes that connection, which lets the lock go; a run dropped
    /// half-way (a request timed out) closes it too rather than pool it with the lock. Every
    /// step of a run is its own transaction, so a run stopped anywhere leaves whole steps,
    /// and the next run does the rest.
    pub async fn run_jobs(
        &self,
        program: &LoadedProgram,
        as_of: DateTime<Utc>,
    ) -> Result<SettleReport> {
        let _mark = {
            let mut running = self
                .jobs_running
                .lock()
                .map_err(|_| StoreError::Inconsistent("the jobs' mark was poisoned".into()))?;
            if !running.insert(program.id) {
                return Err(jobs_running(program.program.code.as_str()));
            }
            JobsMark {
                running: &self.jobs_running,
                program: program.id,
            }
        };
        match &self.db {
            Db::Sqlite(_) => self.run_jobs_now(program, as_of).await,
            Db::Postgres(pool) => {
                let key = (program.id % i64::from(i32::MAX)) as i32;
                let mut conn = pool.acquire().await?;
                conn.close_on_drop();
                let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
                    .bind(JOBS_LOCK_CLASS)
                    .bind(key)
                    .fetch_one(&mut *conn)
                    .await?;
                if !locked {
                    return Err(jobs_running(program.program.code.as_str()));
                }
                let result = self.run_jobs_now(program, as_of).await;
                // The connection closes when dropped (above), which unlocks too; unlocking
                // first says so at once.
                let _ = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
                    .bind(JOBS_LOCK_CLASS)
                    .bind(key)
                    .execute(&mut *conn)
                    .await;
                result
            }
        }
    }

    async fn run_jobs_now(
        &self,
        program: &LoadedProgram,
        as_of: DateTime<Utc>,
    ) -> Result<SettleReport> {
        let mut total = SettleReport {
            // First, so points an ended hold gives back are settled with the rest.
            holds_released: self.release_expired_holds(program, as_of).await?,
            ..SettleReport::default()
        };
        loop {
            let round = in_ledger_tx!(self, |tx| engine::settle_due(
                &mut tx,
                program,
                as_of,
                SETTLE_BATCH
            )
            .await)?;
            if round.members == 0 {
                // Referral rewards a crash left unposted.
                self.reward_referrals(program, as_of).await?;
                total.expiring_announced = self.announce_expiring(program, as_of).await?;
                total.scheduled_rewards = self
                    .run_scheduled_rewards(program, as_of, &crate::Actor::jobs())
                    .await?;
                if !program.program.segments.is_empty() {
                    total.segments = Some(
                        self.refresh_segments(program, as_of, chrono::Utc::now())
                            .await?,
                    );
                }
                return Ok(total);
            }
            total.members += round.members;
            total.journals += round.journals;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    use crate::{StoreError, Unavailability};

    /// A ledger writer that waits too long for the ledger's connection is told the
    /// database is busy (retry), not that it is unreachable (which marks the store down).
    #[tokio::test]
    async fn waiting_too_long_for_the_ledger_connection_is_busy() {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_millis(50))
            .connect_with(SqliteConnectOptions::new().in_memory(true))
            .await
            .expect("an in-memory database");
        let held = pool.acquire().await.expect("the one connection");
        match super::begin_sqlite_ledger(&pool).await {
            Err(StoreError::Unavailable {
                kind: Unavailability::Busy,
                ..
            }) => {}
            Err(other) => panic!("expected busy, got {other:?}"),
            Ok(_) => panic!("the connection was held, yet a transaction began"),
        }
        drop(held);
        let tx = super::begin_sqlite_ledger(&pool).await;
        assert!(tx.is_ok(), "the connection was released: {:?}", tx.err());
    }
}
