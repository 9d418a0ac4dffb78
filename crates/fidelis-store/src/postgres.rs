//! The PostgreSQL dialect of [`LedgerTx`].
//!
//! Writers are serialised per member with transaction-scoped advisory locks keyed by the
//! member's id (no global lock, and no row-lock WAL traffic); the engine takes them in
//! ascending order, so two batches never deadlock. Reads and writes are set-based: arrays
//! in, `UNNEST` on the server, one statement per table and batch.

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::{Postgres, Row, Transaction};

use crate::error::{Result, StoreError};
use crate::rows::*;

/// A transaction begun on first use: a batch's first statement takes its member locks,
/// and sending `BEGIN` with it saves a round trip.
pub(crate) struct PgTx {
    pool: PgPool,
    tx: Option<Transaction<'static, Postgres>>,
}

impl PgTx {
    pub(crate) fn new(pool: &PgPool) -> Self {
        Self {
            pool: pool.clone(),
            tx: None,
        }
    }

    /// The transaction's connection, begun now if it was not yet.
    pub(crate) async fn conn(&mut self) -> Result<&mut PgConnection> {
        let tx = match &mut self.tx {
            Some(tx) => tx,
            slot @ None => slot.insert(self.pool.begin().await?),
        };
        Ok(&mut **tx)
    }

    /// Commits what was done (nothing to do if nothing was).
    pub(crate) async fn commit(self) -> Result<()> {
        if let Some(tx) = self.tx {
            tx.commit().await?;
        }
        Ok(())
    }

    pub(crate) async fn rollback(self) -> Result<()> {
        if let Some(tx) = self.tx {
            tx.rollback().await?;
        }
        Ok(())
    }
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
        hold_until: None,
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
        transition_changed: false,
    })
}

/// Batches of at most this many members (realtime groups) use generic plans (see
/// [`PgTx::lock_members`]) and single-statement reads and writes; larger ones (imports)
/// amortise their round trips and run faster one statement per part, with custom plans.
const GENERIC_PLAN_MEMBERS: usize = 64;
/// Journal ids come from the sequence in blocks of this many (its INCREMENT).
const ID_BLOCK: usize = 64;

/// `count` ids from blocks starting at `starts`.
fn id_blocks(starts: Vec<i64>, count: usize) -> Vec<i64> {
    starts
        .into_iter()
        .flat_map(|start| start..start + ID_BLOCK as i64)
        .take(count)
        .collect()
}

fn split(pairs: &[(i64, i64)]) -> (Vec<i64>, Vec<i64>) {
    pairs.iter().copied().unzip()
}

impl LedgerTx for PgTx {
    fn opens_in_one(&self, members: usize) -> bool {
        members <= GENERIC_PLAN_MEMBERS
    }

    async fn resolve_members(
        &mut self,
        program_id: i64,
        external_ids: &[&str],
    ) -> Result<Vec<MemberRow>> {
        let rows = sqlx::query(
            "SELECT COALESCE(s.id, x.id), x.external_id, COALESCE(s.status, x.status), s.external_id, \
                    CASE WHEN s.id IS NULL THEN x.group_id ELSE s.group_id END, x.enrolled_at \
             FROM members x LEFT JOIN members s ON s.id = x.merged_into \
             WHERE x.program_id = $1 AND x.external_id = ANY($2)",
        )
        .bind(program_id)
        .bind(external_ids)
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
                    enrolled_at: Some(r.try_get(5)?),
                })
            })
            .collect()
    }

    async fn lock_members(&mut self, keys: &[i64]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        // `unnest` keeps the array's (ascending) order, so locks are taken in that order.
        if self.tx.is_none() {
            // BEGIN and the locks in one simple query (one round trip); the keys are
            // integers, written as literals.
            //
            // The ledger statements take arrays whose length changes every time, so
            // PostgreSQL plans them afresh on every execution (a generic plan looks
            // costlier than a custom plan for a few elements). For the small batches of
            // realtime journals that planning is a third of the database's work, and
            // their plans do not depend on the values: plan them once. Large batches
            // (imports) amortise planning and get plans that know their sizes.
            //
            // A generic plan guesses ten elements per array, and against a small table
            // that can make a hash join over a whole table look cheaper than ten index
            // lookups (measured: `member_risk` scanned whole, 1 ms of a 0.2 ms opening,
            // once the planner's statistics were taken early). A few members' rows are
            // always found fastest through their keys: only nested loops for these.
            let generic = if keys.len() <= GENERIC_PLAN_MEMBERS {
                "SET LOCAL plan_cache_mode = force_generic_plan; \
                 SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; "
            } else {
                ""
            };
            let keys: Vec<String> = keys.iter().map(ToString::to_string).collect();
            let sql = format!(
                "BEGIN; {generic}SELECT count(pg_advisory_xact_lock(k)) FROM unnest('{{{}}}'::bigint[]) AS t(k)",
                keys.join(",")
            );
            self.tx = Some(self.pool.begin_with(sqlx::AssertSqlSafe(sql)).await?);
            return Ok(());
        }
        sqlx::query("SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS t(k)")
            .bind(keys)
            .execute(self.conn().await?)
            .await?;
        Ok(())
    }

    async fn load_accounts(&mut self, member_ids: &[i64]) -> Result<Vec<AccountRow>> {
        let rows = sqlx::query(
            "SELECT member_id, currency, available, pending, arrears, pool, last_activity_at, next_transition_at \
             FROM accounts WHERE member_id = ANY($1)",
        )
        .bind(member_ids)
        .fetch_all(self.conn().await?)
        .await?;
        rows.iter().map(account_row).collect()
    }

    async fn load_counters(
        &mut self,
        program_id: i64,
        keys: &[CounterKey],
    ) -> Result<Vec<(CounterKey, Count)>> {
        let (promotions, members, periods) = counter_columns(keys);
        // Everyone's counters: created if missing (a concurrent creator is waited for),
        // then locked in key order.
        if members.contains(&fidelis_core::promotions::limits::EVERYONE) {
            sqlx::query(
            "INSERT INTO promotion_usage (program_id, promotion, member_id, period, times, points) \
             SELECT $1, p, m, d, 0, 0 FROM unnest($2::text[], $3::bigint[], $4::text[]) AS k(p, m, d) \
             WHERE m = 0 ORDER BY p, d ON CONFLICT DO NOTHING",
        )
        .bind(program_id)
        .bind(&promotions)
        .bind(&members)
        .bind(&periods)
        .execute(self.conn().await?)
        .await?;
        }
        let rows = sqlx::query(
            "SELECT u.promotion, u.member_id, u.period, u.times, u.points FROM promotion_usage u \
             JOIN unnest($2::text[], $3::bigint[], $4::text[]) AS k(p, m, d) \
               ON u.promotion = k.p AND u.member_id = k.m AND u.period = k.d \
             WHERE u.program_id = $1 ORDER BY u.promotion, u.member_id, u.period FOR UPDATE OF u",
        )
        .bind(program_id)
        .bind(&promotions)
        .bind(&members)
        .bind(&periods)
        .fetch_all(self.conn().await?)
        .await?;
        rows.iter().map(counter_row).collect()
    }

    async fn add_counters(
        &mut self,
        program_id: i64,
        deltas: &[(CounterKey, Count)],
    ) -> Result<()> {
        let keys: Vec<CounterKey> = deltas.iter().map(|(k, _)| k.clone()).collect();
        let (promotions, members, periods) = counter_columns(&keys);
        let times: Vec<i64> = deltas.iter().map(|(_, c)| c.times).collect();
        let points: Vec<i64> = deltas.iter().map(|(_, c)| c.points).collect();
        sqlx::query(
            "INSERT INTO promotion_usage (program_id, promotion, member_id, period, times, points) \
             SELECT $1, p, m, d, t, n FROM unnest($2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[]) AS k(p, m, d, t, n) \
             ON CONFLICT (program_id, promotion, member_id, period) DO UPDATE \
             SET times = promotion_usage.times + excluded.times, points = promotion_usage.points + excluded.points",
        )
        .bind(program_id)
        .bind(&promotions)
        .bind(&members)
        .bind(&periods)
        .bind(&times)
        .bind(&points)
        .execute(self.conn().await?)
        .await?;
        Ok(())
    }

    async fn load_member_facts(
        &mut self,
        member_ids: &[i64],
        segments: bool,
    ) -> Result<Vec<MemberFactsRow>> {
        let sql = if segments {
            "SELECT id, profile::text AS profile, enrolled_at, \
             (SELECT string_agg(s.segment, ' ') FROM member_segments s \
              WHERE s.member_id = members.id AND s.program_id = members.program_id) AS segments \
             FROM members WHERE id = ANY($1)"
        } else {
            "SELECT id, profile::text AS profile, enrolled_at, NULL::text AS segments \
             FROM members WHERE id = ANY($1)"
        };
        let rows = sqlx::query(sql)
            .bind(member_ids)
            .fetch_all(self.conn().await?)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(MemberFactsRow {
                    member_id: r.try_get("id")?,
                    profile: r.try_get("profile")?,
                    enrolled_at: r.try_get("enrolled_at")?,
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
        let rows: Vec<(i64, String, Option<String>, DateTime<Utc>, DateTime<Utc>)> =
            sqlx::query_as(
                "SELECT member_id, code, value, starts_at, ends_at FROM member_benefits \
                 WHERE member_id = ANY($1) AND ends_at > $2",
            )
            .bind(member_ids)
            .bind(since)
            .fetch_all(self.conn().await?)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(member_id, code, value, starts_at, ends_at)| GrantedRow {
                member_id,
                code,
                value,
                starts_at,
                ends_at,
            })
            .collect())
    }

    async fn load_tiers(&mut self, member_ids: &[i64]) -> Result<Vec<TierRow>> {
        // One round trip: the standing, or the enrolment instant of a member without one.
        let rows = sqlx::query(
            "SELECT u.id, CASE WHEN t.state IS NULL THEN m.enrolled_at END, t.state \
             FROM unnest($1::bigint[]) AS u(id) \
             LEFT JOIN member_tiers t ON t.member_id = u.id \
             LEFT JOIN members m ON m.id = u.id AND t.member_id IS NULL \
             WHERE t.member_id IS NOT NULL OR m.id IS NOT NULL",
        )
        .bind(member_ids)
        .fetch_all(self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TierRow {
                    member_id: r.try_get(0)?,
                    enrolled_at: r.try_get(1)?,
                    state: r.try_get(2)?,
                })
            })
            .collect()
    }

    async fn save_tiers(&mut self, program_id: i64, rows: &[TierSave]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO member_tiers (member_id, program_id, state, next_due_at) \
             SELECT m, $1, s, d FROM unnest($2::bigint[], $3::text[], $4::timestamptz[]) AS u(m, s, d) \
             ON CONFLICT (member_id) DO UPDATE SET state = excluded.state, next_due_at = excluded.next_due_at",
        )
        .bind(program_id)
        .bind(rows.iter().map(|r| r.member_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.state.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.next_due_at).collect::<Vec<_>>())
        .execute(self.conn().await?)
        .await?;
        Ok(())
    }

    async fn insert_vouchers(
        &mut self,
        program_id: i64,
        rows: &[crate::vouchers::NewVoucher],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let conn = self.conn().await?;
        crate::vouchers::insert_vouchers!(conn, true, program_id, rows, now);
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
        Ok(crate::partners::lock_partner!(
            conn,
            program_id,
            code,
            " FOR UPDATE"
        ))
    }

    async fn load_partner_movements(
        &mut self,
        journal_ids: &[i64],
    ) -> Result<Vec<crate::partners::MovementRow>> {
        // One round trip for the batch.
        Ok(sqlx::query_as(
            "SELECT e.journal_id, e.original_journal_id, p.code, e.kind, e.points, e.pack, e.amount, e.rate \
             FROM partner_entries e JOIN partners p ON p.id = e.partner_id \
             WHERE e.journal_id = ANY($1) OR e.original_journal_id = ANY($1) ORDER BY e.id",
        )
        .bind(journal_ids)
        .fetch_all(self.conn().await?)
        .await?)
    }

    async fn write_partner_entries(
        &mut self,
        program_id: i64,
        entries: &[crate::partners::NewPartnerEntry],
        now: DateTime<Utc>,
    ) -> Result<()> {
        // The entries in one statement (a batch may carry thousands), then each pack's
        // change one by one.
        let conn = self.conn().await?;
        if !entries.is_empty() {
            let col = |f: fn(&crate::partners::NewPartnerEntry) -> i64| -> Vec<i64> {
                entries.iter().map(f).collect()
            };
            sqlx::query(
                "INSERT INTO partner_entries (program_id, partner_id, journal_id, original_journal_id, \
                 kind, key, points, pack, amount, rate, effective_at, recorded_at, actor) \
                 SELECT $1, p, j, o, k, NULL, pt, pk, a, r, e, $11, 'journal' \
                 FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[], \
                 $7::bigint[], $8::bigint[], $9::text[], $10::timestamptz[]) AS u(p, j, o, k, pt, pk, a, r, e)",
            )
            .bind(program_id)
            .bind(col(|e| e.partner_id))
            .bind(col(|e| e.journal_id))
            .bind(
                entries
                    .iter()
                    .map(|e| e.original_journal_id)
                    .collect::<Vec<_>>(),
            )
            .bind(
                entries
                    .iter()
                    .map(|e| e.movement.kind.name())
                    .collect::<Vec<_>>(),
            )
            .bind(col(|e| e.movement.points))
            .bind(col(|e| e.movement.pack))
            .bind(col(|e| e.movement.amount))
            .bind(
                entries
                    .iter()
                    .map(|e| e.movement.rate.to_string())
                    .collect::<Vec<_>>(),
            )
            .bind(entries.iter().map(|e| e.effective_at).collect::<Vec<_>>())
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
        crate::partners::update_packs!(conn, entries);
        Ok(())
    }

    async fn insert_events(
        &mut self,
        program_id: i64,
        events: &[crate::partners::NewEvent],
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO events (program_id, member_id, type, subject, payload, occurred_at) \
             SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])",
        )
        .bind(program_id)
        .bind(events.iter().map(|e| e.member_id).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.kind).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.subject.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.payload.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.occurred_at).collect::<Vec<_>>())
        .execute(self.conn().await?)
        .await?;
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
                 WHERE program_id = $1 AND external_id = ANY($2)",
            )
            .bind(program_id)
            .bind(names)
            .fetch_all(self.conn().await?)
            .await?;
            for r in &rows {
                out.held.push(held_row(r)?);
            }
        }
        if !member_ids.is_empty() {
            out.risk = sqlx::query_as(
                "SELECT member_id, recent FROM member_risk WHERE member_id = ANY($1)",
            )
            .bind(member_ids)
            .fetch_all(self.conn().await?)
            .await?;
            out.profile_changed = sqlx::query_as(
                "SELECT id, profile_changed_at FROM members \
                 WHERE id = ANY($1) AND profile_changed_at IS NOT NULL",
            )
            .bind(member_ids)
            .fetch_all(self.conn().await?)
            .await?;
        }
        if !receipts.is_empty() {
            out.receipts = sqlx::query_as(
                "SELECT r.receipt, r.member_id, m.external_id FROM journal_receipts r \
                 JOIN members m ON m.id = r.member_id \
                 WHERE r.program_id = $1 AND r.receipt = ANY($2)",
            )
            .bind(program_id)
            .bind(receipts)
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
            "UPDATE held_journals SET status = $1, decided_by = $2, note = $3, decided_at = $4 \
             WHERE program_id = $5 AND external_id = $6 AND status = 'held' \
             RETURNING id, member_id, external_id, type, occurred_at, document, rule, reason, status, \
             held_at, decided_at, decided_by, note",
        )
        .bind(decision.status)
        .bind(decision.by)
        .bind(decision.note)
        .bind(decision.at)
        .bind(program_id)
        .bind(external_id)
        .fetch_optional(self.conn().await?)
        .await?;
        row.as_ref().map(held_row).transpose()
    }

    async fn save_screening(&mut self, program_id: i64, saved: &ScreeningSave) -> Result<()> {
        if !saved.held.is_empty() {
            // One statement however many a wave of suspicious journals holds.
            let h = &saved.held;
            // The external id is taken through its key (see
            // migrations/postgres/0035_held_keys.sql), written by the same statement.
            sqlx::query(
                "WITH h AS (INSERT INTO held_journals (program_id, member_id, external_id, type, occurred_at, \
                 document, rule, reason, status, held_at) \
                 SELECT $1, m, e, t, o, d, r, w, 'held', a FROM unnest($2::bigint[], $3::text[], $4::text[], \
                   $5::timestamptz[], $6::text[], $7::text[], $8::text[], $9::timestamptz[]) AS u(m, e, t, o, d, r, w, a) \
                 RETURNING member_id, id, external_id) \
                 INSERT INTO held_keys (program_id, external_id, member_id, id) SELECT $1, external_id, member_id, id FROM h",
            )
            .bind(program_id)
            .bind(h.iter().map(|r| r.member_id).collect::<Vec<_>>())
            .bind(h.iter().map(|r| r.external_id.as_str()).collect::<Vec<_>>())
            .bind(h.iter().map(|r| r.type_name.as_str()).collect::<Vec<_>>())
            .bind(h.iter().map(|r| r.occurred_at).collect::<Vec<_>>())
            .bind(h.iter().map(|r| r.document.as_str()).collect::<Vec<_>>())
            .bind(h.iter().map(|r| r.rule.as_str()).collect::<Vec<_>>())
            .bind(h.iter().map(|r| r.reason.as_str()).collect::<Vec<_>>())
            .bind(h.iter().map(|r| r.held_at).collect::<Vec<_>>())
            .execute(self.conn().await?)
            .await?;
        }
        if !saved.risk.is_empty() {
            let (ids, recent): (Vec<i64>, Vec<&str>) =
                saved.risk.iter().map(|(m, r)| (*m, r.as_str())).unzip();
            sqlx::query(
                "INSERT INTO member_risk (member_id, program_id, recent) \
                 SELECT m, $1, r FROM unnest($2::bigint[], $3::text[]) AS u(m, r) \
                 ON CONFLICT (member_id) DO UPDATE SET recent = excluded.recent",
            )
            .bind(program_id)
            .bind(ids)
            .bind(recent)
            .execute(self.conn().await?)
            .await?;
        }
        if !saved.receipts.is_empty() {
            let (receipts, ids): (Vec<&str>, Vec<i64>) =
                saved.receipts.iter().map(|(r, m)| (r.as_str(), *m)).unzip();
            sqlx::query(
                "INSERT INTO journal_receipts (program_id, receipt, member_id) \
                 SELECT $1, r, m FROM unnest($2::text[], $3::bigint[]) AS u(r, m) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(program_id)
            .bind(receipts)
            .bind(ids)
            .execute(self.conn().await?)
            .await?;
        }
        Ok(())
    }

    async fn count_open_holds(&mut self, member_ids: &[i64]) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM journals WHERE member_id = ANY($1) AND hold_until IS NOT NULL",
        )
        .bind(member_ids)
        .fetch_one(self.conn().await?)
        .await?)
    }

    async fn load_groups(&mut self, group_ids: &[i64]) -> Result<Vec<GroupRow>> {
        let rows = sqlx::query(
            "SELECT g.group_id, m.external_id, m.status, g.share_percent FROM member_groups g \
             JOIN members m ON m.id = g.group_id WHERE g.group_id = ANY($1)",
        )
        .bind(group_ids)
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
            "UPDATE members SET referral_qualified_at = $1 \
             WHERE id = ANY($2) AND referred_by IS NOT NULL AND referral_qualified_at IS NULL",
        )
        .bind(now)
        .bind(member_ids)
        .execute(self.conn().await?)
        .await?;
        Ok(())
    }

    async fn insert_audits(&mut self, entries: &[crate::access::AuditEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let text = |v: &Option<serde_json::Value>| crate::access::json_text(v);
        sqlx::query(
            "INSERT INTO audit_log (at, actor, role, action, program, subject, before, after) \
             SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])",
        )
        .bind(entries.iter().map(|e| e.at).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.actor.as_str()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.role.as_str()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.action.as_str()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.program.as_deref()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.subject.as_deref()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| text(&e.before)).collect::<Result<Vec<_>>>()?)
        .bind(entries.iter().map(|e| text(&e.after)).collect::<Result<Vec<_>>>()?)
        .execute(self.conn().await?)
        .await?;
        Ok(())
    }

    async fn has_journals(&mut self, member_id: i64) -> Result<bool> {
        Ok(
            sqlx::query_scalar::<_, i32>("SELECT 1 FROM journals WHERE member_id = $1 LIMIT 1")
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
        if buckets.is_empty() {
            return Ok(());
        }
        let members: Vec<i64> = buckets.iter().map(|b| b.0).collect();
        let journals: Vec<i64> = buckets.iter().map(|b| b.1).collect();
        let seqs: Vec<i32> = buckets.iter().map(|b| b.2).collect();
        let ats: Vec<DateTime<Utc>> = buckets.iter().map(|b| b.3).collect();
        sqlx::query(
            "UPDATE buckets b SET expires_at = v.at FROM UNNEST($1::bigint[], $2::bigint[], $3::int[], $4::timestamptz[])              AS v(member_id, journal_id, seq, at)              WHERE b.member_id = v.member_id AND b.journal_id = v.journal_id AND b.seq = v.seq",
        )
        .bind(members)
        .bind(journals)
        .bind(seqs)
        .bind(ats)
        .execute(self.conn().await?)
        .await?;
        Ok(())
    }

    async fn load_open_buckets(&mut self, member_ids: &[i64]) -> Result<Vec<BucketRow>> {
        let sql = format!(
            "SELECT {BUCKET_COLUMNS} FROM buckets b WHERE b.member_id = ANY($1) AND (b.remaining > 0 OR b.expired_unclaimed > 0)"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(member_ids)
            .fetch_all(self.conn().await?)
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
            "SELECT {JOURNAL_COLUMNS} FROM journal_keys k \
             JOIN journals j ON j.member_id = k.member_id AND j.id = k.journal_id \
             WHERE k.program_id = $1 AND k.external_id = ANY($2)"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(program_id)
            .bind(external_ids)
            .fetch_all(self.conn().await?)
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
            .fetch_all(self.conn().await?)
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
            .fetch_all(self.conn().await?)
            .await?;
        rows.iter().map(entry_row).collect()
    }

    async fn reserve_journal_ids(&mut self, count: usize) -> Result<Vec<i64>> {
        let blocks: Vec<i64> =
            sqlx::query_scalar(
                // The transaction takes its id before its journal ids: the dashboard's
                // rollup waits for every transaction that may hold ids it has seen
                // (`crate::dashboard`).
                "SELECT nextval('journal_ids') FROM generate_series(1, $1) WHERE pg_current_xact_id() IS NOT NULL",
            )
                .bind(count.div_ceil(ID_BLOCK) as i64)
                .fetch_all(self.conn().await?)
                .await?;
        Ok(id_blocks(blocks, count))
    }

    async fn insert_journals(&mut self, program_id: i64, rows: &[JournalRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let col = |f: fn(&JournalRow) -> i64| rows.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "WITH j AS (INSERT INTO journals (program_id, member_id, id, external_id, kind, type, status, original_id, \
                                   occurred_at, recorded_at, document, outcome, state, hold_until) \
             SELECT $1, m, i, e, k, t, s, o, oc, rc, d, out, st, h \
             FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[], \
                         $9::timestamptz[], $10::timestamptz[], $11::text[], $12::text[], $13::text[], $14::timestamptz[]) \
                  AS u(m, i, e, k, t, s, o, oc, rc, d, out, st, h) \
             RETURNING member_id, id, external_id) \
             INSERT INTO journal_keys (program_id, external_id, member_id, journal_id) \
             SELECT $1, external_id, member_id, id FROM j WHERE external_id IS NOT NULL",
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
        .bind(rows.iter().map(|r| r.hold_until).collect::<Vec<_>>())
        .execute(self.conn().await?)
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
        .execute(self.conn().await?)
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
            .execute(self.conn().await?)
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
            .execute(self.conn().await?)
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
            .execute(self.conn().await?)
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
            .execute(self.conn().await?)
            .await?;
        }
        Ok(())
    }

    async fn update_journals(&mut self, rows: &[JournalUpdate]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE journals j SET status = u.s, state = u.st, hold_until = u.h \
             FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[]) AS u(m, i, s, st, h) \
             WHERE j.member_id = u.m AND j.id = u.i",
        )
        .bind(rows.iter().map(|r| r.member_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.state.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.hold_until).collect::<Vec<_>>())
        .execute(self.conn().await?)
        .await?;
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
        .execute(self.conn().await?)
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
            .execute(self.conn().await?)
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
                 SELECT member_id FROM accounts \
                 WHERE program_id = $1 AND next_transition_at IS NOT NULL AND next_transition_at <= $2 \
                 UNION SELECT member_id FROM member_tiers \
                 WHERE program_id = $1 AND next_due_at IS NOT NULL AND next_due_at <= $2 \
                 ORDER BY member_id LIMIT $3)",
        )
        .bind(program_id)
        .bind(as_of)
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
            sqlx::query_scalar("SELECT revision FROM programs WHERE id = $1")
                .bind(program_id)
                .fetch_optional(self.conn().await?)
                .await?,
        )
    }

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
            // Large batches (imports) amortise their round trips; one statement per
            // part plans and runs faster there.
            return open_batch_stepwise(
                self, program_id, lock_keys, members, journals, id_count, screen,
            )
            .await;
        }
        self.lock_members(lock_keys).await?;
        // One statement, one row: every part comes back as columns of arrays (aggregates
        // without GROUP BY always answer one row; an empty part is NULL).
        //
        // Its plan is generic and made once per connection, with the statistics of that
        // moment. A lookup written `key = ANY($n)` let a plan made while a table was small
        // scan the program's whole index range and filter (measured: journal keys read
        // 868 rows for none found, four fifths of the opening's time, growing with the
        // table). Each name is looked up on its own instead (`unnest` with a lateral
        // subquery that `OFFSET 0` keeps from being flattened): the whole key is always
        // in the index condition, whatever the statistics were.
        let sql = "WITH m AS (SELECT COALESCE(s.id, x.id) AS id, x.external_id, COALESCE(s.status, x.status) AS status, \
                               s.external_id AS owner, \
                               CASE WHEN s.id IS NULL THEN x.group_id ELSE s.group_id END AS group_id, \
                               x.enrolled_at \
                        FROM unnest($2::text[]) AS e(name) \
                        CROSS JOIN LATERAL (SELECT * FROM members x WHERE x.program_id = $1 \
                                            AND x.external_id = e.name OFFSET 0) AS x \
                        LEFT JOIN members s ON s.id = x.merged_into) \
             SELECT p.revision, mm.*, aa.*, jj.*, ids.*, tt.*, rr.*, hh.*, pc.*, gg.*, oo.*, ee.*, ff.*, cc.* \
             FROM (SELECT revision FROM programs WHERE id = $1) AS p \
             CROSS JOIN (SELECT array_agg(id), array_agg(external_id), array_agg(status) FROM m) AS mm \
             CROSS JOIN (SELECT array_agg(a.member_id), array_agg(a.currency), array_agg(a.available), array_agg(a.pending), \
                                array_agg(a.arrears), array_agg(a.pool), array_agg(a.last_activity_at), array_agg(a.next_transition_at) \
                         FROM m JOIN accounts a ON a.member_id = m.id) AS aa \
             CROSS JOIN (SELECT array_agg(j.member_id), array_agg(j.id), array_agg(j.external_id), array_agg(j.kind), \
                                array_agg(j.type), array_agg(j.status), array_agg(j.original_id), array_agg(j.occurred_at), \
                                array_agg(j.recorded_at), array_agg(j.document), array_agg(j.outcome), array_agg(j.state) \
                         FROM unnest($3::text[]) AS e(name) \
                         CROSS JOIN LATERAL (SELECT * FROM journal_keys k WHERE k.program_id = $1 \
                                             AND k.external_id = e.name OFFSET 0) AS k \
                         JOIN journals j ON j.member_id = k.member_id AND j.id = k.journal_id) AS jj \
             CROSS JOIN (SELECT array_agg(n ORDER BY n) FROM (SELECT nextval('journal_ids') AS n FROM generate_series(1, $4) WHERE pg_current_xact_id() IS NOT NULL) AS s) AS ids \
             CROSS JOIN (SELECT array_agg(m.id), array_agg(CASE WHEN t.state IS NULL THEN x.enrolled_at END), array_agg(t.state) \
                         FROM m LEFT JOIN member_tiers t ON t.member_id = m.id \
                         LEFT JOIN members x ON x.id = m.id AND t.member_id IS NULL WHERE $5) AS tt \
             CROSS JOIN (SELECT array_agg(r.member_id), array_agg(r.recent) \
                         FROM m JOIN member_risk r ON r.member_id = m.id WHERE $6) AS rr \
             CROSS JOIN (SELECT json_agg(json_build_array(h.member_id, h.external_id, h.type, h.occurred_at, \
                                h.document, h.rule, h.reason, h.status, h.held_at))::text \
                         FROM unnest($3::text[]) AS e(name) \
                         CROSS JOIN LATERAL (SELECT * FROM held_journals h WHERE $6 AND h.program_id = $1 \
                                             AND h.external_id = e.name OFFSET 0) AS h) AS hh \
             CROSS JOIN (SELECT array_agg(x.id), array_agg(x.profile_changed_at) FROM m JOIN members x ON x.id = m.id \
                         WHERE $6 AND x.profile_changed_at IS NOT NULL) AS pc \
             CROSS JOIN (SELECT array_agg(group_id) FROM m) AS gg \
             CROSS JOIN (SELECT array_agg(owner) FROM m) AS oo \
             CROSS JOIN (SELECT array_agg(enrolled_at) FROM m) AS ee \
             CROSS JOIN (SELECT array_agg(x.id), array_agg(x.profile::text), array_agg(x.enrolled_at), \
                                array_agg(CASE WHEN $8 THEN (SELECT string_agg(s.segment, ' ') FROM member_segments s \
                                                             WHERE s.member_id = x.id AND s.program_id = x.program_id) END) \
                         FROM m JOIN members x ON x.id = m.id WHERE $7) AS ff \
             CROSS JOIN (SELECT array_agg(u.promotion), array_agg(u.member_id), array_agg(u.period), \
                                array_agg(u.times), array_agg(u.points) \
                         FROM m CROSS JOIN unnest($9::text[], $10::text[]) AS k(p, d) \
                         CROSS JOIN LATERAL (SELECT * FROM promotion_usage x WHERE x.program_id = $1 AND x.promotion = k.p \
                                             AND x.member_id = m.id AND x.period = k.d OFFSET 0) AS u) AS cc".to_string();
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(program_id)
            .bind(members)
            .bind(journals)
            .bind(id_count.div_ceil(ID_BLOCK) as i64)
            .bind(with_tiers)
            .bind(screen)
            .bind(reads.facts.is_some())
            .bind(reads.facts == Some(true))
            .bind(
                reads
                    .counter_periods
                    .iter()
                    .map(|(p, _)| p.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                reads
                    .counter_periods
                    .iter()
                    .map(|(_, d)| d.as_str())
                    .collect::<Vec<_>>(),
            )
            .fetch_optional(self.conn().await?)
            .await?;
        let Some(r) = row else {
            return Ok(Opening::default());
        };
        fn col<T>(r: &PgRow, i: usize) -> Result<Vec<T>>
        where
            T: for<'a> sqlx::Decode<'a, Postgres> + sqlx::Type<Postgres>,
            Vec<T>: for<'a> sqlx::Decode<'a, Postgres> + sqlx::Type<Postgres>,
        {
            Ok(r.try_get::<Option<Vec<T>>, _>(i)?.unwrap_or_default())
        }
        let ragged = || StoreError::Inconsistent("a batch's opening read came back ragged".into());

        let (ids, names, statuses) = (
            col::<i64>(&r, 1)?,
            col::<String>(&r, 2)?,
            col::<String>(&r, 3)?,
        );
        // The last columns: the members' group, owner and enrolment, then facts (4) and
        // counters (5).
        let last = r.columns().len() - 10;
        let enrolled: Vec<DateTime<Utc>> = col::<DateTime<Utc>>(&r, last)?;
        let owners: Vec<Option<String>> = r
            .try_get::<Option<Vec<Option<String>>>, _>(last - 1)?
            .unwrap_or_default();
        let groups: Vec<Option<i64>> = r
            .try_get::<Option<Vec<Option<i64>>>, _>(last - 2)?
            .unwrap_or_default();
        if names.len() != ids.len()
            || statuses.len() != ids.len()
            || owners.len() != ids.len()
            || groups.len() != ids.len()
            || enrolled.len() != ids.len()
        {
            return Err(ragged());
        }
        let members = ids
            .into_iter()
            .zip(names)
            .zip(statuses)
            .zip(owners)
            .zip(groups)
            .zip(enrolled)
            .map(
                |(((((id, external_id), status), owner), group_id), enrolled_at)| MemberRow {
                    id,
                    external_id,
                    status,
                    owner,
                    group_id,
                    enrolled_at: Some(enrolled_at),
                },
            )
            .collect();

        let member_ids = col::<i64>(&r, 4)?;
        let n = member_ids.len();
        let currencies = col::<String>(&r, 5)?;
        let available = col::<i64>(&r, 6)?;
        let pending = col::<i64>(&r, 7)?;
        let arrears = col::<i64>(&r, 8)?;
        let pool = col::<i64>(&r, 9)?;
        let activity = col::<Option<DateTime<Utc>>>(&r, 10)?;
        let transition = col::<Option<DateTime<Utc>>>(&r, 11)?;
        if [
            currencies.len(),
            available.len(),
            pending.len(),
            arrears.len(),
            pool.len(),
            activity.len(),
            transition.len(),
        ]
        .iter()
        .any(|&l| l != n)
        {
            return Err(ragged());
        }
        let accounts = (0..n)
            .map(|i| AccountRow {
                existing: true,
                member_id: member_ids[i],
                currency: currencies[i].clone(),
                available: available[i],
                pending: pending[i],
                arrears: arrears[i],
                pool: pool[i],
                last_activity_at: activity[i],
                next_transition_at: transition[i],
                transition_changed: false,
            })
            .collect();

        let journal_members = col::<i64>(&r, 12)?;
        let n = journal_members.len();
        let journal_ids = col::<i64>(&r, 13)?;
        let external_ids = col::<Option<String>>(&r, 14)?;
        let kinds = col::<String>(&r, 15)?;
        let types = col::<String>(&r, 16)?;
        let journal_statuses = col::<String>(&r, 17)?;
        let originals = col::<Option<i64>>(&r, 18)?;
        let occurred = col::<DateTime<Utc>>(&r, 19)?;
        let recorded = col::<DateTime<Utc>>(&r, 20)?;
        let documents = col::<Option<String>>(&r, 21)?;
        let outcomes = col::<Option<String>>(&r, 22)?;
        let states = col::<Option<String>>(&r, 23)?;
        if [
            journal_ids.len(),
            external_ids.len(),
            kinds.len(),
            types.len(),
            journal_statuses.len(),
            originals.len(),
            occurred.len(),
            recorded.len(),
            documents.len(),
            outcomes.len(),
            states.len(),
        ]
        .iter()
        .any(|&l| l != n)
        {
            return Err(ragged());
        }
        let journals = (0..n)
            .map(|i| JournalRow {
                member_id: journal_members[i],
                id: journal_ids[i],
                external_id: external_ids[i].clone(),
                kind: kinds[i].clone(),
                type_name: types[i].clone(),
                status: journal_statuses[i].clone(),
                original_id: originals[i],
                occurred_at: occurred[i],
                recorded_at: recorded[i],
                document: documents[i].clone(),
                outcome: outcomes[i].clone(),
                state: states[i].clone(),
                hold_until: None,
            })
            .collect();

        Ok(Opening {
            revision: r.try_get(0)?,
            members,
            accounts,
            journals,
            ids: id_blocks(col::<i64>(&r, 24)?, id_count),
            tiers: if with_tiers {
                let ids = col::<i64>(&r, 25)?;
                let enrolled: Vec<Option<DateTime<Utc>>> = r
                    .try_get::<Option<Vec<Option<DateTime<Utc>>>>, _>(26)?
                    .unwrap_or_default();
                let states: Vec<Option<String>> = r
                    .try_get::<Option<Vec<Option<String>>>, _>(27)?
                    .unwrap_or_default();
                if enrolled.len() != ids.len() || states.len() != ids.len() {
                    return Err(ragged());
                }
                Some(
                    ids.into_iter()
                        .zip(enrolled)
                        .zip(states)
                        .map(|((member_id, enrolled_at), state)| TierRow {
                            member_id,
                            enrolled_at,
                            state,
                        })
                        .collect(),
                )
            } else {
                None
            },
            screening: if screen {
                let members = col::<i64>(&r, 28)?;
                let recent = col::<String>(&r, 29)?;
                if members.len() != recent.len() {
                    return Err(ragged());
                }
                let held: Option<String> = r.try_get(30)?;
                let changed_ids = col::<i64>(&r, 31)?;
                let changed_at = col::<DateTime<Utc>>(&r, 32)?;
                if changed_ids.len() != changed_at.len() {
                    return Err(ragged());
                }
                Some(Screening {
                    held: held
                        .as_deref()
                        .map(held_rows_json)
                        .transpose()?
                        .unwrap_or_default(),
                    risk: members.into_iter().zip(recent).collect(),
                    receipts: Vec::new(),
                    profile_changed: changed_ids.into_iter().zip(changed_at).collect(),
                })
            } else {
                None
            },
            facts: match reads.facts {
                Some(_) => {
                    let ids = col::<i64>(&r, last + 1)?;
                    let profiles = col::<String>(&r, last + 2)?;
                    let enrolled = col::<DateTime<Utc>>(&r, last + 3)?;
                    let segments: Vec<Option<String>> = r
                        .try_get::<Option<Vec<Option<String>>>, _>(last + 4)?
                        .unwrap_or_default();
                    if profiles.len() != ids.len()
                        || enrolled.len() != ids.len()
                        || segments.len() != ids.len()
                    {
                        return Err(ragged());
                    }
                    Some(
                        ids.into_iter()
                            .zip(profiles)
                            .zip(enrolled)
                            .zip(segments)
                            .map(
                                |(((member_id, profile), enrolled_at), segments)| MemberFactsRow {
                                    member_id,
                                    profile,
                                    enrolled_at,
                                    segments,
                                },
                            )
                            .collect(),
                    )
                }
                None => None,
            },
            counters: {
                let promotions = col::<String>(&r, last + 5)?;
                let members = col::<i64>(&r, last + 6)?;
                let periods = col::<String>(&r, last + 7)?;
                let times = col::<i64>(&r, last + 8)?;
                let points = col::<i64>(&r, last + 9)?;
                let n = promotions.len();
                if [members.len(), periods.len(), times.len(), points.len()]
                    .iter()
                    .any(|&l| l != n)
                {
                    return Err(ragged());
                }
                let mut rows = Vec::with_capacity(n);
                for i in 0..n {
                    let promotion = stored_promotion(&promotions[i])?;
                    rows.push((
                        CounterKey {
                            promotion,
                            member: members[i],
                            period: periods[i].clone(),
                        },
                        Count {
                            times: times[i],
                            points: points[i],
                        },
                    ));
                }
                Some(rows)
            },
        })
    }

    async fn write_batch(&mut self, program_id: i64, rows: &WriteSet) -> Result<()> {
        if rows.journals.len() > GENERIC_PLAN_MEMBERS {
            return write_batch_stepwise(self, program_id, rows).await;
        }
        // One statement: every table's rows as arrays, each write a data-modifying CTE,
        // only for the tables the batch writes to (a part set up for nothing still opens
        // and locks its table and indexes). They share one snapshot and none reads
        // another's rows, which holds here: new journals, entries, buckets and accounts
        // are inserted, and only rows that existed before the batch are updated.
        let (old_buckets, new_buckets): (Vec<&BucketRow>, Vec<&BucketRow>) =
            rows.buckets.iter().partition(|r| r.existing);
        let (old_accounts, new_accounts): (Vec<&AccountRow>, Vec<&AccountRow>) =
            rows.accounts.iter().partition(|r| r.existing);
        let mut w = Ctes::new(program_id)?;
        let j = &rows.journals;
        if !j.is_empty() {
            let a = [
                w.arg(j.iter().map(|r| r.member_id).collect::<Vec<_>>())?,
                w.arg(j.iter().map(|r| r.id).collect::<Vec<_>>())?,
                w.arg(
                    j.iter()
                        .map(|r| r.external_id.as_deref())
                        .collect::<Vec<_>>(),
                )?,
                w.arg(j.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>())?,
                w.arg(j.iter().map(|r| r.type_name.as_str()).collect::<Vec<_>>())?,
                w.arg(j.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())?,
                w.arg(j.iter().map(|r| r.original_id).collect::<Vec<_>>())?,
                w.arg(j.iter().map(|r| r.occurred_at).collect::<Vec<_>>())?,
                w.arg(j.iter().map(|r| r.recorded_at).collect::<Vec<_>>())?,
                w.arg(j.iter().map(|r| r.document.as_deref()).collect::<Vec<_>>())?,
                w.arg(j.iter().map(|r| r.outcome.as_deref()).collect::<Vec<_>>())?,
                w.arg(j.iter().map(|r| r.state.as_deref()).collect::<Vec<_>>())?,
                w.arg(j.iter().map(|r| r.hold_until).collect::<Vec<_>>())?,
            ];
            w.part(format!(
                "j AS (INSERT INTO journals (program_id, member_id, id, external_id, kind, type, status, original_id, \
                                            occurred_at, recorded_at, document, outcome, state, hold_until) \
                       SELECT $1, * FROM unnest({}::bigint[], {}::bigint[], {}::text[], {}::text[], {}::text[], {}::text[], \
                                                {}::bigint[], {}::timestamptz[], {}::timestamptz[], {}::text[], {}::text[], {}::text[], \
                                                {}::timestamptz[]) \
                       RETURNING member_id, id, external_id), \
                 jk AS (INSERT INTO journal_keys (program_id, external_id, member_id, journal_id) \
                        SELECT $1, external_id, member_id, id FROM j WHERE external_id IS NOT NULL)",
                a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12]
            ));
        }
        let e = &rows.entries;
        if !e.is_empty() {
            let a = [
                w.arg(e.iter().map(|r| r.member_id).collect::<Vec<_>>())?,
                w.arg(e.iter().map(|r| r.journal_id).collect::<Vec<_>>())?,
                w.arg(e.iter().map(|r| r.seq).collect::<Vec<_>>())?,
                w.arg(e.iter().map(|r| r.currency.as_str()).collect::<Vec<_>>())?,
                w.arg(e.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>())?,
                w.arg(e.iter().map(|r| r.pool.as_str()).collect::<Vec<_>>())?,
                w.arg(e.iter().map(|r| r.bucket_journal_id).collect::<Vec<_>>())?,
                w.arg(e.iter().map(|r| r.bucket_seq).collect::<Vec<_>>())?,
                w.arg(e.iter().map(|r| r.amount).collect::<Vec<_>>())?,
                w.arg(e.iter().map(|r| r.effective_at).collect::<Vec<_>>())?,
            ];
            w.part(format!(
                "e AS (INSERT INTO entries (program_id, member_id, journal_id, seq, currency, kind, pool, bucket_journal_id, \
                                           bucket_seq, amount, effective_at) \
                       SELECT $1, * FROM unnest({}::bigint[], {}::bigint[], {}::int[], {}::text[], {}::text[], {}::text[], \
                                                {}::bigint[], {}::int[], {}::bigint[], {}::timestamptz[]))",
                a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9]
            ));
        }
        if !old_buckets.is_empty() {
            let b = &old_buckets;
            let a = [
                w.arg(b.iter().map(|r| r.member_id).collect::<Vec<_>>())?,
                w.arg(b.iter().map(|r| r.journal_id).collect::<Vec<_>>())?,
                w.arg(b.iter().map(|r| r.seq).collect::<Vec<_>>())?,
                w.arg(b.iter().map(|r| r.pending).collect::<Vec<_>>())?,
                w.arg(b.iter().map(|r| r.remaining).collect::<Vec<_>>())?,
                w.arg(b.iter().map(|r| r.expired_unclaimed).collect::<Vec<_>>())?,
            ];
            w.part(format!(
                "bu AS (UPDATE buckets b SET pending = u.p, remaining = u.r, expired_unclaimed = u.x \
                        FROM unnest({}::bigint[], {}::bigint[], {}::int[], {}::bool[], {}::bigint[], {}::bigint[]) AS u(m, j, s, p, r, x) \
                        WHERE b.member_id = u.m AND b.journal_id = u.j AND b.seq = u.s)",
                a[0], a[1], a[2], a[3], a[4], a[5]
            ));
        }
        if !new_buckets.is_empty() {
            let b = &new_buckets;
            let a = [
                w.arg(b.iter().map(|r| r.member_id).collect::<Vec<_>>())?,
                w.arg(b.iter().map(|r| r.journal_id).collect::<Vec<_>>())?,
                w.arg(b.iter().map(|r| r.seq).collect::<Vec<_>>())?,
                w.arg(b.iter().map(|r| r.currency.as_str()).collect::<Vec<_>>())?,
                w.arg(b.iter().map(|r| r.credited_at).collect::<Vec<_>>())?,
                w.arg(b.iter().map(|r| r.expires_at).collect::<Vec<_>>())?,
                w.arg(b.iter().map(|r| r.available_at).collect::<Vec<_>>())?,
                w.arg(b.iter().map(|r| r.pending).collect::<Vec<_>>())?,
                w.arg(b.iter().map(|r| r.credited).collect::<Vec<_>>())?,
                w.arg(b.iter().map(|r| r.remaining).collect::<Vec<_>>())?,
                w.arg(b.iter().map(|r| r.expired_unclaimed).collect::<Vec<_>>())?,
            ];
            w.part(format!(
                "bi AS (INSERT INTO buckets (program_id, member_id, journal_id, seq, currency, credited_at, expires_at, \
                                             available_at, pending, credited, remaining, expired_unclaimed) \
                        SELECT $1, * FROM unnest({}::bigint[], {}::bigint[], {}::int[], {}::text[], {}::timestamptz[], \
                                                 {}::timestamptz[], {}::timestamptz[], {}::bool[], {}::bigint[], {}::bigint[], \
                                                 {}::bigint[]))",
                a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10]
            ));
        }
        if !old_accounts.is_empty() {
            let a = w.account_arrays(&old_accounts)?;
            w.part(format!(
                "au AS (UPDATE accounts a SET available = u.av, pending = u.pe, arrears = u.ar, pool = u.po, \
                               last_activity_at = u.la, next_transition_at = u.nt \
                        FROM unnest({}::bigint[], {}::text[], {}::bigint[], {}::bigint[], {}::bigint[], {}::bigint[], \
                                    {}::timestamptz[], {}::timestamptz[]) AS u(m, c, av, pe, ar, po, la, nt) \
                        WHERE a.member_id = u.m AND a.currency = u.c)",
                a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]
            ));
        }
        if !new_accounts.is_empty() {
            let a = w.account_arrays(&new_accounts)?;
            w.part(format!(
                "ai AS (INSERT INTO accounts (program_id, member_id, currency, available, pending, arrears, pool, \
                                              last_activity_at, next_transition_at) \
                        SELECT $1, * FROM unnest({}::bigint[], {}::text[], {}::bigint[], {}::bigint[], {}::bigint[], \
                                                 {}::bigint[], {}::timestamptz[], {}::timestamptz[]))",
                a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]
            ));
        }
        let u = &rows.updates;
        if !u.is_empty() {
            let a = [
                w.arg(u.iter().map(|r| r.member_id).collect::<Vec<_>>())?,
                w.arg(u.iter().map(|r| r.id).collect::<Vec<_>>())?,
                w.arg(u.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())?,
                w.arg(u.iter().map(|r| r.state.as_deref()).collect::<Vec<_>>())?,
                w.arg(u.iter().map(|r| r.hold_until).collect::<Vec<_>>())?,
            ];
            w.part(format!(
                "ju AS (UPDATE journals j SET status = u.s, state = u.st, hold_until = u.h \
                        FROM unnest({}::bigint[], {}::bigint[], {}::text[], {}::text[], {}::timestamptz[]) AS u(m, i, s, st, h) \
                        WHERE j.member_id = u.m AND j.id = u.i)",
                a[0], a[1], a[2], a[3], a[4]
            ));
        }
        let t = &rows.tiers;
        if !t.is_empty() {
            let a = [
                w.arg(t.iter().map(|r| r.member_id).collect::<Vec<_>>())?,
                w.arg(t.iter().map(|r| r.state.as_str()).collect::<Vec<_>>())?,
                w.arg(t.iter().map(|r| r.next_due_at).collect::<Vec<_>>())?,
            ];
            w.part(format!(
                "ts AS (INSERT INTO member_tiers (member_id, program_id, state, next_due_at) \
                        SELECT m, $1, st, d FROM unnest({}::bigint[], {}::text[], {}::timestamptz[]) AS u(m, st, d) \
                        ON CONFLICT (member_id) DO UPDATE SET state = excluded.state, next_due_at = excluded.next_due_at)",
                a[0], a[1], a[2]
            ));
        }
        let al = &rows.audits;
        if !al.is_empty() {
            let a = [
                w.arg(al.iter().map(|e| e.at).collect::<Vec<_>>())?,
                w.arg(al.iter().map(|e| e.actor.as_str()).collect::<Vec<_>>())?,
                w.arg(al.iter().map(|e| e.role.as_str()).collect::<Vec<_>>())?,
                w.arg(al.iter().map(|e| e.action.as_str()).collect::<Vec<_>>())?,
                w.arg(al.iter().map(|e| e.program.as_deref()).collect::<Vec<_>>())?,
                w.arg(al.iter().map(|e| e.subject.as_deref()).collect::<Vec<_>>())?,
                w.arg(
                    al.iter()
                        .map(|e| crate::access::json_text(&e.before))
                        .collect::<Result<Vec<_>>>()?,
                )?,
                w.arg(
                    al.iter()
                        .map(|e| crate::access::json_text(&e.after))
                        .collect::<Result<Vec<_>>>()?,
                )?,
            ];
            w.part(format!(
                "al AS (INSERT INTO audit_log (at, actor, role, action, program, subject, before, after) \
                        SELECT * FROM unnest({}::timestamptz[], {}::text[], {}::text[], {}::text[], {}::text[], \
                                             {}::text[], {}::text[], {}::text[]))",
                a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]
            ));
        }
        let ev = &rows.events;
        if !ev.is_empty() {
            let a = [
                w.arg(ev.iter().map(|e| e.member_id).collect::<Vec<_>>())?,
                w.arg(ev.iter().map(|e| e.kind).collect::<Vec<_>>())?,
                w.arg(ev.iter().map(|e| e.subject.as_str()).collect::<Vec<_>>())?,
                w.arg(ev.iter().map(|e| e.payload.as_str()).collect::<Vec<_>>())?,
                w.arg(ev.iter().map(|e| e.occurred_at).collect::<Vec<_>>())?,
            ];
            w.part(format!(
                "ev AS (INSERT INTO events (program_id, member_id, type, subject, payload, occurred_at) \
                        SELECT $1, * FROM unnest({}::bigint[], {}::text[], {}::text[], {}::text[], {}::timestamptz[]))",
                a[0], a[1], a[2], a[3], a[4]
            ));
        }
        if !rows.risk.is_empty() {
            let a = [
                w.arg(rows.risk.iter().map(|r| r.0).collect::<Vec<_>>())?,
                w.arg(rows.risk.iter().map(|r| r.1.as_str()).collect::<Vec<_>>())?,
            ];
            w.part(format!(
                "rk AS (INSERT INTO member_risk (member_id, program_id, recent) \
                        SELECT m, $1, r FROM unnest({}::bigint[], {}::text[]) AS u(m, r) \
                        ON CONFLICT (member_id) DO UPDATE SET recent = excluded.recent)",
                a[0], a[1]
            ));
        }
        let h = &rows.held;
        if !h.is_empty() {
            let a = [
                w.arg(h.iter().map(|r| r.member_id).collect::<Vec<_>>())?,
                w.arg(h.iter().map(|r| r.external_id.as_str()).collect::<Vec<_>>())?,
                w.arg(h.iter().map(|r| r.type_name.as_str()).collect::<Vec<_>>())?,
                w.arg(h.iter().map(|r| r.occurred_at).collect::<Vec<_>>())?,
                w.arg(h.iter().map(|r| r.document.as_str()).collect::<Vec<_>>())?,
                w.arg(h.iter().map(|r| r.rule.as_str()).collect::<Vec<_>>())?,
                w.arg(h.iter().map(|r| r.reason.as_str()).collect::<Vec<_>>())?,
                w.arg(h.iter().map(|r| r.held_at).collect::<Vec<_>>())?,
            ];
            w.part(format!(
                "hj AS (INSERT INTO held_journals (program_id, member_id, external_id, type, occurred_at, \
                                                   document, rule, reason, status, held_at) \
                        SELECT $1, m, e, t, o, d, r, w, 'held', a FROM unnest({}::bigint[], {}::text[], {}::text[], \
                          {}::timestamptz[], {}::text[], {}::text[], {}::text[], {}::timestamptz[]) AS u(m, e, t, o, d, r, w, a) \
                        RETURNING member_id, id, external_id), \
                 hk AS (INSERT INTO held_keys (program_id, external_id, member_id, id) \
                        SELECT $1, external_id, member_id, id FROM hj)",
                a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]
            ));
        }
        let c = &rows.counters;
        if !c.is_empty() {
            let a = [
                w.arg(
                    c.iter()
                        .map(|(k, _)| k.promotion.to_string())
                        .collect::<Vec<_>>(),
                )?,
                w.arg(c.iter().map(|(k, _)| k.member).collect::<Vec<_>>())?,
                w.arg(c.iter().map(|(k, _)| k.period.as_str()).collect::<Vec<_>>())?,
                w.arg(c.iter().map(|(_, n)| n.times).collect::<Vec<_>>())?,
                w.arg(c.iter().map(|(_, n)| n.points).collect::<Vec<_>>())?,
            ];
            w.part(format!(
                "pu AS (INSERT INTO promotion_usage (program_id, promotion, member_id, period, times, points) \
                        SELECT $1, p, m, d, t, n FROM unnest({}::text[], {}::bigint[], {}::text[], {}::bigint[], {}::bigint[]) AS k(p, m, d, t, n) \
                        ON CONFLICT (program_id, promotion, member_id, period) DO UPDATE \
                        SET times = promotion_usage.times + excluded.times, points = promotion_usage.points + excluded.points)",
                a[0], a[1], a[2], a[3], a[4]
            ));
        }
        let Some((sql, args)) = w.finish() else {
            // Nothing to write (every journal replayed or refused).
            return Ok(());
        };
        sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
            .execute(self.conn().await?)
            .await?;
        Ok(())
    }
}

/// A statement of data-modifying CTEs built from the parts a batch needs, each part's
/// arrays bound as it names them (`$1` is the program's id).
struct Ctes {
    parts: Vec<String>,
    args: sqlx::postgres::PgArguments,
}

impl Ctes {
    fn new(program_id: i64) -> Result<Self> {
        let mut ctes = Self {
            parts: Vec::new(),
            args: sqlx::postgres::PgArguments::default(),
        };
        ctes.arg(program_id)?;
        Ok(ctes)
    }

    /// Binds `value`; its placeholder.
    fn arg<'t, T>(&mut self, value: T) -> Result<String>
    where
        T: sqlx::Encode<'t, Postgres> + sqlx::Type<Postgres>,
    {
        use sqlx::Arguments as _;
        self.args.add(value).map_err(sqlx::Error::Encode)?;
        Ok(format!("${}", self.args.len()))
    }

    /// Binds the accounts' columns (member, currency, available, pending, arrears, pool,
    /// last activity, next transition); their placeholders.
    fn account_arrays(&mut self, b: &[&AccountRow]) -> Result<[String; 8]> {
        Ok([
            self.arg(b.iter().map(|r| r.member_id).collect::<Vec<_>>())?,
            self.arg(b.iter().map(|r| r.currency.as_str()).collect::<Vec<_>>())?,
            self.arg(b.iter().map(|r| r.available).collect::<Vec<_>>())?,
            self.arg(b.iter().map(|r| r.pending).collect::<Vec<_>>())?,
            self.arg(b.iter().map(|r| r.arrears).collect::<Vec<_>>())?,
            self.arg(b.iter().map(|r| r.pool).collect::<Vec<_>>())?,
            self.arg(b.iter().map(|r| r.last_activity_at).collect::<Vec<_>>())?,
            self.arg(b.iter().map(|r| r.next_transition_at).collect::<Vec<_>>())?,
        ])
    }

    fn part(&mut self, sql: String) {
        self.parts.push(sql);
    }

    /// The statement and its arguments; `None` when no part was added.
    fn finish(self) -> Option<(String, sqlx::postgres::PgArguments)> {
        (!self.parts.is_empty()).then(|| {
            (
                format!("WITH {} SELECT 1", self.parts.join(", ")),
                self.args,
            )
        })
    }
}

fn counter_columns(keys: &[CounterKey]) -> (Vec<String>, Vec<i64>, Vec<String>) {
    (
        keys.iter().map(|k| k.promotion.to_string()).collect(),
        keys.iter().map(|k| k.member).collect(),
        keys.iter().map(|k| k.period.clone()).collect(),
    )
}

fn counter_row(r: &sqlx::postgres::PgRow) -> Result<(CounterKey, Count)> {
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
}

pub(crate) fn held_row(r: &PgRow) -> Result<HeldRow> {
    Ok(HeldRow {
        member_id: r.try_get("member_id")?,
        external_id: r.try_get("external_id")?,
        type_name: r.try_get("type")?,
        occurred_at: r.try_get("occurred_at")?,
        document: r.try_get("document")?,
        rule: r.try_get("rule")?,
        reason: r.try_get("reason")?,
        status: r.try_get("status")?,
        held_at: r.try_get("held_at")?,
    })
}

/// Held journals as `open_batch` reads them: a JSON array of
/// `[member_id, external_id, type, occurred_at, document, rule, reason, status, held_at]`.
fn held_rows_json(text: &str) -> Result<Vec<HeldRow>> {
    let bad = || StoreError::Inconsistent("a held journal read back malformed".into());
    let rows: Vec<(
        i64,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
    )> = serde_json::from_str(text)?;
    let at = |t: &str| {
        DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| bad())
    };
    rows.into_iter()
        .map(|r| {
            Ok(HeldRow {
                member_id: r.0,
                external_id: r.1,
                type_name: r.2,
                occurred_at: at(&r.3)?,
                document: r.4,
                rule: r.5,
                reason: r.6,
                status: r.7,
                held_at: at(&r.8)?,
            })
        })
        .collect()
}
