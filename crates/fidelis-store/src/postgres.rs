//! The PostgreSQL dialect of [`LedgerTx`].
//!
//! Writers are serialised per member with transaction-scoped advisory locks keyed by the
//! member's id (no global lock, and no row-lock WAL traffic); the engine takes them in
//! ascending order, so two batches never deadlock. Reads and writes are set-based: arrays
//! in, `UNNEST` on the server, one statement per table and batch.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};

use crate::error::Result;
use crate::rows::*;

pub(crate) struct PgTx<'c> {
    pub tx: Transaction<'c, Postgres>,
}

const BUCKET_COLUMNS: &str = "b.member_id, b.journal_id, b.seq, b.currency, b.credited_at, b.expires_at, b.available_at, b.pending, b.credited, b.remaining, b.expired_unclaimed";
const JOURNAL_COLUMNS: &str = "j.member_id, j.id, j.external_id, j.kind, j.type, j.status, j.original_id, j.occurred_at, j.recorded_at, j.document, j.outcome, j.state";
const ENTRY_COLUMNS: &str = "e.member_id, e.journal_id, e.seq, e.currency, e.kind, e.pool, e.bucket_journal_id, e.bucket_seq, e.amount, e.effective_at";

fn bucket_row(r: &PgRow) -> Result<BucketRow> {
    Ok(BucketRow {
        existing: true,
        member_id: r.try_get(0)?,
        journal_id: r.try_get(1)?,
        seq: r.try_get(2)?,
        currency: r.try_get(3)?,
        credited_at: r.try_get(4)?,
        expires_at: r.try_get(5)?,
        available_at: r.try_get(6)?,
        pending: r.try_get(7)?,
        credited: r.try_get(8)?,
        remaining: r.try_get(9)?,
        expired_unclaimed: r.try_get(10)?,
    })
}

pub(crate) fn journal_row(r: &PgRow) -> Result<JournalRow> {
    Ok(JournalRow {
        member_id: r.try_get(0)?,
        id: r.try_get(1)?,
        external_id: r.try_get(2)?,
        kind: r.try_get(3)?,
        type_name: r.try_get(4)?,
        status: r.try_get(5)?,
        original_id: r.try_get(6)?,
        occurred_at: r.try_get(7)?,
        recorded_at: r.try_get(8)?,
        document: r.try_get(9)?,
        outcome: r.try_get(10)?,
        state: r.try_get(11)?,
    })
}

pub(crate) fn entry_row(r: &PgRow) -> Result<EntryRow> {
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
        effective_at: r.try_get(9)?,
    })
}

pub(crate) fn account_row(r: &PgRow) -> Result<AccountRow> {
    Ok(AccountRow {
        existing: true,
        member_id: r.try_get(0)?,
        currency: r.try_get(1)?,
        available: r.try_get(2)?,
        pending: r.try_get(3)?,
        arrears: r.try_get(4)?,
        pool: r.try_get(5)?,
        last_activity_at: r.try_get(6)?,
        next_transition_at: r.try_get(7)?,
    })
}

fn split(pairs: &[(i64, i64)]) -> (Vec<i64>, Vec<i64>) {
    pairs.iter().copied().unzip()
}

impl LedgerTx for PgTx<'_> {
    async fn resolve_members(
        &mut self,
        program_id: i64,
        external_ids: &[&str],
    ) -> Result<Vec<MemberRow>> {
        let rows = sqlx::query(
            "SELECT id, external_id, status FROM members WHERE program_id = $1 AND external_id = ANY($2)",
        )
        .bind(program_id)
        .bind(external_ids)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MemberRow {
                    id: r.try_get(0)?,
                    external_id: r.try_get(1)?,
                    status: r.try_get(2)?,
                })
            })
            .collect()
    }

    async fn lock_members(&mut self, keys: &[i64]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        // `unnest` keeps the array's (ascending) order, so locks are taken in that order.
        sqlx::query("SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS t(k)")
            .bind(keys)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn load_accounts(&mut self, member_ids: &[i64]) -> Result<Vec<AccountRow>> {
        let rows = sqlx::query(
            "SELECT member_id, currency, available, pending, arrears, pool, last_activity_at, next_transition_at \
             FROM accounts WHERE member_id = ANY($1)",
        )
        .bind(member_ids)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(account_row).collect()
    }

    async fn load_open_buckets(&mut self, member_ids: &[i64]) -> Result<Vec<BucketRow>> {
        let sql = format!(
            "SELECT {BUCKET_COLUMNS} FROM buckets b WHERE b.member_id = ANY($1) AND (b.remaining > 0 OR b.expired_unclaimed > 0)"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(member_ids)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(bucket_row).collect()
    }

    async fn load_journal_buckets(&mut self, journals: &[(i64, i64)]) -> Result<Vec<BucketRow>> {
        let (members, ids) = split(journals);
        let sql = format!(
            "SELECT {BUCKET_COLUMNS} FROM unnest($1::bigint[], $2::bigint[]) AS k(m, j) \
             JOIN buckets b ON b.member_id = k.m AND b.journal_id = k.j"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(members)
            .bind(ids)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(bucket_row).collect()
    }

    async fn load_journals_by_external_id(
        &mut self,
        program_id: i64,
        external_ids: &[&str],
    ) -> Result<Vec<JournalRow>> {
        let sql = format!(
            "SELECT {JOURNAL_COLUMNS} FROM journals j WHERE j.program_id = $1 AND j.external_id = ANY($2)"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(program_id)
            .bind(external_ids)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(journal_row).collect()
    }

    async fn load_journals_by_id(&mut self, journals: &[(i64, i64)]) -> Result<Vec<JournalRow>> {
        let (members, ids) = split(journals);
        let sql = format!(
            "SELECT {JOURNAL_COLUMNS} FROM unnest($1::bigint[], $2::bigint[]) AS k(m, i) \
             JOIN journals j ON j.member_id = k.m AND j.id = k.i"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(members)
            .bind(ids)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(journal_row).collect()
    }

    async fn load_entries(&mut self, journals: &[(i64, i64)]) -> Result<Vec<EntryRow>> {
        let (members, ids) = split(journals);
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM unnest($1::bigint[], $2::bigint[]) AS k(m, j) \
             JOIN entries e ON e.journal_id = k.j AND e.member_id = k.m"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(members)
            .bind(ids)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(entry_row).collect()
    }

    async fn reserve_journal_ids(&mut self, count: usize) -> Result<Vec<i64>> {
        const BLOCK: usize = 64;
        let blocks: Vec<i64> =
            sqlx::query_scalar("SELECT nextval('journal_ids') FROM generate_series(1, $1)")
                .bind(count.div_ceil(BLOCK) as i64)
                .fetch_all(&mut *self.tx)
                .await?;
        Ok(blocks
            .into_iter()
            .flat_map(|start| start..start + BLOCK as i64)
            .take(count)
            .collect())
    }

    async fn insert_journals(&mut self, program_id: i64, rows: &[JournalRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let col = |f: fn(&JournalRow) -> i64| rows.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO journals (program_id, member_id, id, external_id, kind, type, status, original_id, \
                                   occurred_at, recorded_at, document, outcome, state) \
             SELECT $1, m, i, e, k, t, s, o, oc, rc, d, out, st \
             FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[], \
                         $9::timestamptz[], $10::timestamptz[], $11::text[], $12::text[], $13::text[]) \
                  AS u(m, i, e, k, t, s, o, oc, rc, d, out, st)",
        )
        .bind(program_id)
        .bind(col(|r| r.member_id))
        .bind(col(|r| r.id))
        .bind(rows.iter().map(|r| r.external_id.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.type_name.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.original_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.occurred_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.recorded_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.document.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.outcome.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.state.as_deref()).collect::<Vec<_>>())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn insert_entries(&mut self, program_id: i64, rows: &[EntryRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO entries (program_id, member_id, journal_id, seq, currency, kind, pool, bucket_journal_id, \
                                  bucket_seq, amount, effective_at) \
             SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::int[], $5::text[], $6::text[], $7::text[], \
                                      $8::bigint[], $9::int[], $10::bigint[], $11::timestamptz[])",
        )
        .bind(program_id)
        .bind(rows.iter().map(|r| r.member_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.journal_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.seq).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.currency.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.pool.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.bucket_journal_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.bucket_seq).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.amount).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.effective_at).collect::<Vec<_>>())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn upsert_buckets(&mut self, program_id: i64, rows: &[BucketRow]) -> Result<()> {
        // Loaded rows are updated and new ones inserted: both without ON CONFLICT, whose
        // speculative insertion cost twice as much (the members are locked, so nobody
        // else writes these rows meanwhile).
        let (existing, new): (Vec<&BucketRow>, Vec<&BucketRow>) =
            rows.iter().partition(|r| r.existing);
        if !existing.is_empty() {
            sqlx::query(
                "UPDATE buckets b SET pending = u.p, remaining = u.r, expired_unclaimed = u.x \
                 FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::bool[], $5::bigint[], $6::bigint[]) AS u(m, j, s, p, r, x) \
                 WHERE b.member_id = u.m AND b.journal_id = u.j AND b.seq = u.s",
            )
            .bind(existing.iter().map(|r| r.member_id).collect::<Vec<_>>())
            .bind(existing.iter().map(|r| r.journal_id).collect::<Vec<_>>())
            .bind(existing.iter().map(|r| r.seq).collect::<Vec<_>>())
            .bind(existing.iter().map(|r| r.pending).collect::<Vec<_>>())
            .bind(existing.iter().map(|r| r.remaining).collect::<Vec<_>>())
            .bind(existing.iter().map(|r| r.expired_unclaimed).collect::<Vec<_>>())
            .execute(&mut *self.tx)
            .await?;
        }
        if !new.is_empty() {
            sqlx::query(
                "INSERT INTO buckets (program_id, member_id, journal_id, seq, currency, credited_at, expires_at, \
                                      available_at, pending, credited, remaining, expired_unclaimed) \
                 SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::int[], $5::text[], $6::timestamptz[], \
                                          $7::timestamptz[], $8::timestamptz[], $9::bool[], $10::bigint[], $11::bigint[], \
                                          $12::bigint[])",
            )
            .bind(program_id)
            .bind(new.iter().map(|r| r.member_id).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.journal_id).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.seq).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.currency.as_str()).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.credited_at).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.expires_at).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.available_at).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.pending).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.credited).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.remaining).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.expired_unclaimed).collect::<Vec<_>>())
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    async fn upsert_accounts(&mut self, program_id: i64, rows: &[AccountRow]) -> Result<()> {
        let (existing, new): (Vec<&AccountRow>, Vec<&AccountRow>) =
            rows.iter().partition(|r| r.existing);
        if !existing.is_empty() {
            sqlx::query(
                "UPDATE accounts a SET available = u.av, pending = u.pe, arrears = u.ar, pool = u.po, \
                     last_activity_at = u.la, next_transition_at = u.nt \
                 FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], \
                             $7::timestamptz[], $8::timestamptz[]) AS u(m, c, av, pe, ar, po, la, nt) \
                 WHERE a.member_id = u.m AND a.currency = u.c",
            )
            .bind(existing.iter().map(|r| r.member_id).collect::<Vec<_>>())
            .bind(existing.iter().map(|r| r.currency.as_str()).collect::<Vec<_>>())
            .bind(existing.iter().map(|r| r.available).collect::<Vec<_>>())
            .bind(existing.iter().map(|r| r.pending).collect::<Vec<_>>())
            .bind(existing.iter().map(|r| r.arrears).collect::<Vec<_>>())
            .bind(existing.iter().map(|r| r.pool).collect::<Vec<_>>())
            .bind(existing.iter().map(|r| r.last_activity_at).collect::<Vec<_>>())
            .bind(existing.iter().map(|r| r.next_transition_at).collect::<Vec<_>>())
            .execute(&mut *self.tx)
            .await?;
        }
        if !new.is_empty() {
            sqlx::query(
                "INSERT INTO accounts (program_id, member_id, currency, available, pending, arrears, pool, \
                                       last_activity_at, next_transition_at) \
                 SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], \
                                          $7::bigint[], $8::timestamptz[], $9::timestamptz[])",
            )
            .bind(program_id)
            .bind(new.iter().map(|r| r.member_id).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.currency.as_str()).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.available).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.pending).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.arrears).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.pool).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.last_activity_at).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.next_transition_at).collect::<Vec<_>>())
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    async fn update_journals(&mut self, rows: &[JournalUpdate]) -> Result<()> {
        for r in rows {
            sqlx::query(
                "UPDATE journals SET status = $1, state = $2 WHERE member_id = $3 AND id = $4",
            )
            .bind(r.status.as_str())
            .bind(r.state.as_deref())
            .bind(r.member_id)
            .bind(r.id)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    async fn save_checkpoint(&mut self, c: &CheckpointRow, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "INSERT INTO import_progress (run_id, partition, byte_offset, line, applied, replayed, rejected, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (run_id, partition) DO UPDATE SET byte_offset = excluded.byte_offset, line = excluded.line, \
             applied = import_progress.applied + excluded.applied, replayed = import_progress.replayed + excluded.replayed, \
             rejected = import_progress.rejected + excluded.rejected, updated_at = excluded.updated_at",
        )
        .bind(c.run_id)
        .bind(c.partition)
        .bind(c.byte_offset)
        .bind(c.line)
        .bind(c.applied)
        .bind(c.replayed)
        .bind(c.rejected)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        if !c.rejections.is_empty() {
            sqlx::query(
                "INSERT INTO import_rejections (run_id, line, external_id, code, reason) \
                 SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[]) ON CONFLICT DO NOTHING",
            )
            .bind(c.run_id)
            .bind(c.rejections.iter().map(|r| r.line).collect::<Vec<_>>())
            .bind(c.rejections.iter().map(|r| r.external_id.as_deref()).collect::<Vec<_>>())
            .bind(c.rejections.iter().map(|r| r.code.as_str()).collect::<Vec<_>>())
            .bind(c.rejections.iter().map(|r| r.reason.as_str()).collect::<Vec<_>>())
            .execute(&mut *self.tx)
            .await?;
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
                 SELECT DISTINCT member_id FROM accounts \
                 WHERE program_id = $1 AND next_transition_at IS NOT NULL AND next_transition_at <= $2 \
                 ORDER BY member_id LIMIT $3)",
        )
        .bind(program_id)
        .bind(as_of)
        .bind(limit)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MemberRow {
                    id: r.try_get(0)?,
                    external_id: r.try_get(1)?,
                    status: r.try_get(2)?,
                })
            })
            .collect()
    }
}
