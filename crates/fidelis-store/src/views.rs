//! Read models: balances with their expiry schedule, the ledger, a journal.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use fidelis_core::ids::{EntryKey, JournalId, MemberId};
use fidelis_core::ledger::{Account, Bucket, MemberLedger};
use fidelis_core::process;
use sqlx::Row;

use crate::engine::LoadedProgram;
use crate::error::{Result, StoreError};
use crate::members::MemberView;
use crate::rows::LedgerTx;
use crate::sqlite::instant;
use crate::{Db, Store, postgres, sqlite};

/// A member's balance in one currency, as of the instant asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceView {
    pub currency: String,
    pub kind: &'static str,
    /// Spendable now; negative while in arrears.
    pub available: i64,
    pub pending: i64,
    pub arrears: i64,
    /// Reserved by the member's open holds (pay with points): not in `available`, not
    /// spendable until captured or released. Always the holds open now, whatever the
    /// instant asked.
    pub held: i64,
    /// Points that will expire, by instant (earliest first).
    pub expiring: Vec<ScheduledPoints>,
    /// Pending points that will become available, by instant.
    pub releasing: Vec<ScheduledPoints>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledPoints {
    pub at: DateTime<Utc>,
    pub points: i64,
}

/// A ledger entry with its journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryView {
    pub journal_id: i64,
    pub seq: i32,
    pub journal_external_id: Option<String>,
    pub journal_type: String,
    pub currency: String,
    pub kind: String,
    pub pool: String,
    pub amount: i64,
    pub effective_at: DateTime<Utc>,
    /// The bucket moved, as (journal id, seq); `None` for arrears.
    pub bucket: Option<(i64, i32)>,
    /// For points earned: what the journal awarded in this currency, by source (`base`, a
    /// promotion's code, `adjustment`, …), from its recorded outcome.
    pub awards: Vec<(String, i64)>,
}

/// A journal as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalView {
    pub external_id: Option<String>,
    pub member: String,
    pub kind: String,
    pub type_name: String,
    pub status: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub document: Option<serde_json::Value>,
    pub outcome: Option<serde_json::Value>,
}

/// Runs `$body` in a plain read transaction (a consistent snapshot on both dialects).
macro_rules! in_read_tx {
    ($store:expr, |$tx:ident| $body:expr) => {{
        match &$store.db {
            Db::Sqlite(pool) => {
                let mut $tx = sqlite::SqliteTx::new(pool.begin().await?);
                $body
            }
            Db::Postgres(pool) => {
                let mut $tx = postgres::PgTx::new(pool);
                $body
            }
        }
    }};
}

pub(crate) use in_read_tx;

impl Store {
    /// A member's balances per currency as of `now`: expiries and releases due by then
    /// are applied (in memory, without writing), so the answer does not depend on when the
    /// scheduled jobs last ran.
    pub async fn balances(
        &self,
        program: &LoadedProgram,
        member: &MemberView,
        now: DateTime<Utc>,
    ) -> Result<Vec<BalanceView>> {
        let p = &program.program;
        // An inactivity window is extended by the tiers held: their standing is needed.
        let with_tiers = p.has_expiry_extensions()
            && p.currencies.iter().any(|c| {
                matches!(
                    c.expiry,
                    fidelis_core::program::ExpiryPolicy::Inactivity { .. }
                )
            });
        let (accounts, buckets, tiers) = in_read_tx!(self, |tx| {
            let accounts = tx.load_accounts(&[member.id]).await?;
            let buckets = tx.load_open_buckets(&[member.id]).await?;
            let tiers = if with_tiers {
                tx.load_tiers(&[member.id]).await?
            } else {
                Vec::new()
            };
            (accounts, buckets, tiers)
        });
        let mut ledger = MemberLedger::new(MemberId(member.id), member.status, p);
        if let Some(row) = tiers.first() {
            let balances = crate::tiers::balances_of(p, &accounts);
            ledger.tiers = Some(crate::tiers::standing(p, row, &balances, now)?);
        }
        for row in accounts {
            let Some(ix) = p.currency_ix(&row.currency) else {
                continue;
            };
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
        for row in buckets {
            let Some(ix) = p.currency_ix(&row.currency) else {
                continue;
            };
            ledger.buckets.push(Bucket {
                id: EntryKey {
                    journal: JournalId(row.journal_id),
                    seq: row.seq as u32,
                },
                currency: ix,
                credited_at: row.credited_at,
                expires_at: row.expires_at,
                available_at: row.available_at,
                pending: row.pending,
                credited: row.credited,
                remaining: row.remaining,
                expired_unclaimed: row.expired_unclaimed,
                changed: false,
            });
        }
        process::settle(p, &mut ledger, JournalId(0), now)
            .map_err(|e| StoreError::Inconsistent(e.to_string()))?;
        let held = self.held_points(member.id).await?;
        Ok(p.currency_ixs()
            .map(|(ix, currency)| {
                let account = ledger.account(ix);
                let schedule = |select: &dyn Fn(&Bucket) -> Option<DateTime<Utc>>| {
                    let mut by_instant: BTreeMap<DateTime<Utc>, i64> = BTreeMap::new();
                    for b in ledger
                        .buckets
                        .iter()
                        .filter(|b| b.currency == ix && b.remaining > 0)
                    {
                        if let Some(at) = select(b) {
                            *by_instant.entry(at).or_default() += b.remaining;
                        }
                    }
                    by_instant
                        .into_iter()
                        .map(|(at, points)| ScheduledPoints { at, points })
                        .collect()
                };
                BalanceView {
                    currency: currency.code.to_string(),
                    kind: currency.kind.name(),
                    available: account.available,
                    pending: account.pending,
                    arrears: account.arrears,
                    held: held
                        .iter()
                        .find(|(c, _)| c.as_str() == currency.code.as_str())
                        .map_or(0, |(_, points)| *points),
                    expiring: schedule(&|b| ledger.effective_expiry(p, b)),
                    releasing: schedule(&|b| b.pending.then_some(b.available_at)),
                }
            })
            .collect())
    }

    /// A member's ledger entries, newest first, after the cursor `before` (a
    /// `(journal_id, seq)` from a previous page).
    pub async fn ledger(
        &self,
        member: &MemberView,
        before: Option<(i64, i32)>,
        limit: i64,
    ) -> Result<Vec<EntryView>> {
        let (journal, seq) = before.unwrap_or((i64::MAX, i32::MAX));
        match &self.reader().await {
            Db::Sqlite(pool) => {
                let rows = sqlx::query(
                    "SELECT e.journal_id, e.seq, j.external_id, j.type, e.currency, e.kind, e.pool, e.amount, e.effective_at, \
                            e.bucket_journal_id, e.bucket_seq, CASE WHEN e.kind = 'earn' THEN j.outcome END \
                     FROM journals j JOIN entries e ON e.journal_id = j.id \
                     WHERE j.member_id = ?1 AND j.id <= ?2 AND (e.journal_id, e.seq) < (?2, ?3) \
                     ORDER BY j.id DESC, e.seq DESC LIMIT ?4",
                )
                .bind(member.id)
                .bind(journal)
                .bind(seq)
                .bind(limit)
                .fetch_all(pool)
                .await?;
                rows.iter()
                    .map(|r| entry_view(r.try_get(0)?, r, instant(r.try_get(8)?)?))
                    .collect()
            }
            Db::Postgres(pool) => {
                let rows = sqlx::query(
                    "SELECT e.journal_id, e.seq, j.external_id, j.type, e.currency, e.kind, e.pool, e.amount, e.effective_at, \
                            e.bucket_journal_id, e.bucket_seq, CASE WHEN e.kind = 'earn' THEN j.outcome END \
                     FROM journals j JOIN entries e ON e.journal_id = j.id \
                     WHERE j.member_id = $1 AND j.id <= $2 AND (e.journal_id, e.seq) < ($2, $3) \
                     ORDER BY j.id DESC, e.seq DESC LIMIT $4",
                )
                .bind(member.id)
                .bind(journal)
                .bind(seq)
                .bind(limit)
                .fetch_all(pool)
                .await?;
                rows.iter()
                    .map(|r| entry_view(r.try_get(0)?, r, r.try_get(8)?))
                    .collect()
            }
        }
    }

    /// A journal of a program by external id.
    pub async fn journal(
        &self,
        program: &LoadedProgram,
        external_id: &str,
    ) -> Result<Option<JournalView>> {
        let row = in_read_tx!(self, |tx| tx
            .load_journals_by_external_id(program.id, &[external_id])
            .await?);
        let Some(row) = row.into_iter().next() else {
            return Ok(None);
        };
        let member: String = match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query_scalar("SELECT external_id FROM members WHERE id = ?1")
                    .bind(row.member_id)
                    .fetch_one(pool)
                    .await?
            }
            Db::Postgres(pool) => {
                sqlx::query_scalar("SELECT external_id FROM members WHERE id = $1")
                    .bind(row.member_id)
                    .fetch_one(pool)
                    .await?
            }
        };
        let json = |s: &Option<String>| s.as_deref().map(serde_json::from_str).transpose();
        Ok(Some(JournalView {
            external_id: row.external_id.clone(),
            member,
            kind: row.kind.clone(),
            type_name: row.type_name.clone(),
            status: row.status.clone(),
            occurred_at: row.occurred_at,
            recorded_at: row.recorded_at,
            document: json(&row.document)?,
            outcome: json(&row.outcome)?,
        }))
    }

    /// Sums of a member's entries per (currency, pool), straight from the ledger table:
    /// what the account rows must equal.
    /// Records that `member` joined opt-in promotion `promotion` (joining again changes
    /// nothing).
    pub async fn join_promotion(
        &self,
        program: &LoadedProgram,
        member: &MemberView,
        promotion: &str,
    ) -> Result<()> {
        match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO promotion_usage (program_id, promotion, member_id, period, times, points) \
                     VALUES (?1, ?2, ?3, ?4, 1, 0) ON CONFLICT DO NOTHING",
                )
                .bind(program.id)
                .bind(promotion)
                .bind(member.id)
                .bind(fidelis_core::promotions::JOINED)
                .execute(pool)
                .await?;
            }
            Db::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO promotion_usage (program_id, promotion, member_id, period, times, points) \
                     VALUES ($1, $2, $3, $4, 1, 0) ON CONFLICT DO NOTHING",
                )
                .bind(program.id)
                .bind(promotion)
                .bind(member.id)
                .bind(fidelis_core::promotions::JOINED)
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    /// A member's promotion counters: `(promotion, period key, times, points)`, the
    /// cumulative progress (period keys starting with `c:`) and the limits used, of the
    /// program's promotions. Read per promotion (the key's order), never by scanning the
    /// program's counters for the member.
    pub async fn promotion_counters(
        &self,
        program: &LoadedProgram,
        member: &MemberView,
    ) -> Result<Vec<(String, String, i64, i64)>> {
        let codes: Vec<String> = program
            .program
            .promotions
            .iter()
            .map(|p| p.code.to_string())
            .collect();
        if codes.is_empty() {
            return Ok(Vec::new());
        }
        Ok(match &self.db {
            Db::Sqlite(pool) => {
                let marks: Vec<String> = (0..codes.len()).map(|i| format!("?{}", i + 3)).collect();
                let sql = format!(
                    "SELECT promotion, period, times, points FROM promotion_usage \
                     WHERE program_id = ?1 AND member_id = ?2 AND promotion IN ({}) ORDER BY promotion, period",
                    marks.join(", ")
                );
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(program.id)
                    .bind(member.id);
                for code in &codes {
                    query = query.bind(code);
                }
                query.fetch_all(pool).await?
            }
            Db::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT promotion, period, times, points FROM promotion_usage \
                     WHERE program_id = $1 AND member_id = $2 AND promotion = ANY($3) ORDER BY promotion, period",
                )
                .bind(program.id)
                .bind(member.id)
                .bind(&codes)
                .fetch_all(pool)
                .await?
            }
        })
    }

    /// A promotion's program-wide counters (its budget and daily caps): `(period key,
    /// times, points)`, the whole-life counter's key empty.
    pub async fn program_promotion_usage(
        &self,
        program: &LoadedProgram,
        promotion: &str,
    ) -> Result<Vec<(String, i64, i64)>> {
        let everyone = fidelis_core::promotions::limits::EVERYONE;
        Ok(match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT period, times, points FROM promotion_usage \
                 WHERE program_id = ?1 AND promotion = ?2 AND member_id = ?3 ORDER BY period",
                )
                .bind(program.id)
                .bind(promotion)
                .bind(everyone)
                .fetch_all(pool)
                .await?
            }
            Db::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT period, times, points FROM promotion_usage \
                 WHERE program_id = $1 AND promotion = $2 AND member_id = $3 ORDER BY period",
                )
                .bind(program.id)
                .bind(promotion)
                .bind(everyone)
                .fetch_all(pool)
                .await?
            }
        })
    }

    pub async fn entry_sums(&self, member: &MemberView) -> Result<Vec<(String, String, i64)>> {
        Ok(match &self.db {
            Db::Sqlite(pool) => sqlx::query_as(
                "SELECT e.currency, e.pool, SUM(e.amount) FROM journals j JOIN entries e ON e.journal_id = j.id \
                 WHERE j.member_id = ?1 GROUP BY e.currency, e.pool ORDER BY e.currency, e.pool",
            )
            .bind(member.id)
            .fetch_all(pool)
            .await?,
            Db::Postgres(pool) => sqlx::query_as(
                "SELECT e.currency, e.pool, SUM(e.amount)::bigint FROM journals j JOIN entries e ON e.journal_id = j.id \
                 WHERE j.member_id = $1 GROUP BY e.currency, e.pool ORDER BY e.currency, e.pool",
            )
            .bind(member.id)
            .fetch_all(pool)
            .await?,
        })
    }
}

fn entry_view<R: Row>(journal_id: i64, r: &R, effective_at: DateTime<Utc>) -> Result<EntryView>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    usize: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i32: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i32>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let bucket_journal: Option<i64> = r.try_get(9)?;
    let bucket_seq: Option<i32> = r.try_get(10)?;
    let outcome: Option<String> = r.try_get(11)?;
    let currency: String = r.try_get(4)?;
    let awards = match outcome {
        None => Vec::new(),
        Some(text) => {
            /// The part of a recorded outcome the ledger shows.
            #[derive(serde::Deserialize)]
            struct Awarded {
                #[serde(default)]
                awards: Vec<fidelis_core::outcome::Award>,
            }
            serde_json::from_str::<Awarded>(&text)?
                .awards
                .into_iter()
                .filter(|a| a.currency.as_str() == currency)
                .map(|a| (a.source.into_owned(), a.points))
                .collect()
        }
    };
    Ok(EntryView {
        journal_id,
        seq: r.try_get(1)?,
        journal_external_id: r.try_get(2)?,
        journal_type: r.try_get(3)?,
        currency,
        kind: r.try_get(5)?,
        pool: r.try_get(6)?,
        amount: r.try_get(7)?,
        effective_at,
        bucket: bucket_journal.zip(bucket_seq),
        awards,
    })
}

impl Store {
    /// Journals of a program (settlements included).
    pub async fn journal_count(&self, program: &LoadedProgram) -> Result<i64> {
        Ok(match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM journals WHERE program_id = ?1")
                    .bind(program.id)
                    .fetch_one(pool)
                    .await?
            }
            Db::Postgres(pool) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM journals WHERE program_id = $1")
                    .bind(program.id)
                    .fetch_one(pool)
                    .await?
            }
        })
    }

    /// Per currency, the program's total (available, pending) points over all members.
    pub async fn program_totals(&self, program: &LoadedProgram) -> Result<Vec<(String, i64, i64)>> {
        Ok(match &self.reader().await {
            Db::Sqlite(pool) => sqlx::query_as(
                "SELECT currency, SUM(available), SUM(pending) FROM accounts WHERE program_id = ?1 GROUP BY currency ORDER BY currency",
            )
            .bind(program.id)
            .fetch_all(pool)
            .await?,
            Db::Postgres(pool) => sqlx::query_as(
                "SELECT currency, SUM(available)::bigint, SUM(pending)::bigint FROM accounts WHERE program_id = $1 \
                 GROUP BY currency ORDER BY currency",
            )
            .bind(program.id)
            .fetch_all(pool)
            .await?,
        })
    }
}
