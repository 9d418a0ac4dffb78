//! The program dashboard's figures, aggregated in the database (never by loading rows):
//! members, activity, enrolments and points per month, outstanding points, tiers.
//!
//! Points per month and member activity come from a **rollup** kept incrementally, so the
//! cost of the figures follows what happened since they were last computed, not the size
//! of the ledger: [`Store::roll_up`] folds the entries of journals past a mark into
//! `points_rollup` (sums per program, currency and quarter hour of effective time — every
//! time zone's months are whole quarter hours) and `member_activity` (each member's latest
//! earning or spending), and moves the mark. The figures add the entries past the mark (the
//! tail) read directly, so they are exact as of the instant asked.
//!
//! The mark must never pass a journal still being written. SQLite has one writer: the rollup
//! holds the write lock while it reads. On PostgreSQL journal ids are drawn from a sequence
//! by concurrent transactions, which commit in any order; the rollup notes the highest id
//! it sees together with the snapshot's next transaction id (every ledger transaction takes
//! its transaction id before its journal ids), and reads up to that id only once every
//! transaction older than that horizon has ended.

use chrono::{DateTime, Utc};

use crate::engine::LoadedProgram;
use crate::error::Result;
use crate::sqlite::micros;
use crate::{Db, Store};

/// Points moved in one month and currency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonthPoints {
    /// Points earned (either pool) and positive adjustments; refunds and cancellations
    /// are not subtracted.
    pub issued: i64,
    /// Points spent by redemptions (a cancelled redemption's return is not subtracted).
    pub redeemed: i64,
    pub expired: i64,
}

/// The dashboard of one program as of an instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dashboard {
    /// Members (a group's own record, which holds the household's points, is not one).
    pub members: i64,
    /// Members with an accrual or redemption dated in the last 30 and 90 days.
    pub active_30: i64,
    pub active_90: i64,
    /// Per month (the ranges asked for): enrolments.
    pub enrolments: Vec<i64>,
    /// Per currency (in the program's order), per month.
    pub points: Vec<(String, Vec<MonthPoints>)>,
    /// Per currency: (available, pending) over all members.
    pub outstanding: Vec<(String, i64, i64)>,
    /// (tier group, tier, members), in the program's order; members without a standing in
    /// a group count in its first tier.
    pub tiers: Vec<(String, String, i64)>,
}

/// `CASE` numbering the range between consecutive bounds that `column` falls in, the
/// bounds being placeholders `first`, `first + 1`, … (the caller filters to the first and
/// last bound, so every row falls in one range).
fn month_case(column: &str, bounds: usize, first: usize, mark: fn(usize) -> String) -> String {
    let mut sql = String::from("CASE");
    for i in 1..bounds {
        sql.push_str(&format!(
            " WHEN {column} < {} THEN {}",
            mark(first + i),
            i - 1
        ));
    }
    sql.push_str(" END");
    sql
}

fn sqlite_mark(n: usize) -> String {
    format!("?{n}")
}

fn pg_mark(n: usize) -> String {
    format!("${n}")
}

/// Entries folded into the rollup per transaction: a backfill holds SQLite's write lock
/// for a fraction of a second at a time.
const ROLLUP_STEP: i64 = 200_000;

/// A quarter hour of effective time, in seconds since 1970 / 900.
const SLOT_SECONDS: i64 = 900;

/// The rollup's sums of entries, per program, currency and slot.
const SQLITE_FOLD: &str = "INSERT INTO points_rollup (program_id, currency, slot, issued, redeemed, expired) \
     SELECT program_id, currency, effective_at / 900000000, \
            SUM(CASE WHEN kind = 'earn' OR (kind = 'adjust' AND amount > 0) THEN amount ELSE 0 END), \
            -SUM(CASE WHEN kind = 'redeem' THEN amount ELSE 0 END), \
            -SUM(CASE WHEN kind = 'expire' THEN amount ELSE 0 END) \
     FROM entries WHERE journal_id > ?1 AND journal_id <= ?2 AND kind IN ('earn', 'adjust', 'redeem', 'expire') \
     GROUP BY program_id, currency, effective_at / 900000000 \
     ON CONFLICT (program_id, currency, slot) DO UPDATE SET issued = issued + excluded.issued, \
        redeemed = redeemed + excluded.redeemed, expired = expired + excluded.expired";

const SQLITE_ACTIVITY: &str = "INSERT INTO member_activity (member_id, program_id, last_at) \
     SELECT member_id, program_id, MAX(effective_at) FROM entries \
     WHERE journal_id > ?1 AND journal_id <= ?2 AND kind IN ('earn', 'redeem') GROUP BY member_id, program_id \
     ON CONFLICT (member_id) DO UPDATE SET last_at = MAX(last_at, excluded.last_at)";

const PG_FOLD: &str = "INSERT INTO points_rollup (program_id, currency, slot, issued, redeemed, expired) \
     SELECT program_id, currency, floor(extract(epoch FROM effective_at) / 900)::bigint AS s, \
            SUM(CASE WHEN kind = 'earn' OR (kind = 'adjust' AND amount > 0) THEN amount ELSE 0 END), \
            -SUM(CASE WHEN kind = 'redeem' THEN amount ELSE 0 END), \
            -SUM(CASE WHEN kind = 'expire' THEN amount ELSE 0 END) \
     FROM entries WHERE journal_id > $1 AND journal_id <= $2 AND kind IN ('earn', 'adjust', 'redeem', 'expire') \
     GROUP BY program_id, currency, s \
     ON CONFLICT (program_id, currency, slot) DO UPDATE SET issued = points_rollup.issued + excluded.issued, \
        redeemed = points_rollup.redeemed + excluded.redeemed, expired = points_rollup.expired + excluded.expired";

const PG_ACTIVITY: &str = "INSERT INTO member_activity (member_id, program_id, last_at) \
     SELECT member_id, program_id, MAX(effective_at) FROM entries \
     WHERE journal_id > $1 AND journal_id <= $2 AND kind IN ('earn', 'redeem') GROUP BY member_id, program_id \
     ON CONFLICT (member_id) DO UPDATE SET last_at = GREATEST(member_activity.last_at, excluded.last_at)";

/// The month (index into `bounds`' ranges) of a slot, if it falls in one.
fn month_of(bounds: &[DateTime<Utc>], slot: i64) -> Option<usize> {
    let at = DateTime::<Utc>::from_timestamp(slot.checked_mul(SLOT_SECONDS)?, 0)?;
    let after = bounds.partition_point(|b| *b <= at);
    (after >= 1 && after < bounds.len()).then(|| after - 1)
}

impl Store {
    /// Folds the entries of journals past the rollup's mark into it (all programs) and moves
    /// the mark; returns the journal id the rollup now covers. Safe to run from several
    /// processes at once (each step locks the mark).
    pub async fn roll_up(&self) -> Result<i64> {
        match &self.db {
            Db::Sqlite(pool) => loop {
                // The write lock: no journal is half written while we read.
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let through: i64 =
                    sqlx::query_scalar("SELECT through FROM rollup_marks WHERE name = 'dashboard'")
                        .fetch_one(&mut *tx)
                        .await?;
                let step_end: Option<i64> = sqlx::query_scalar(
                    "SELECT journal_id FROM entries WHERE journal_id > ?1 ORDER BY journal_id LIMIT 1 OFFSET ?2",
                )
                .bind(through)
                .bind(ROLLUP_STEP)
                .fetch_optional(&mut *tx)
                .await?;
                let upto = match step_end {
                    Some(end) => end,
                    None => {
                        sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(journal_id) FROM entries")
                            .fetch_one(&mut *tx)
                            .await?
                            .unwrap_or(0)
                    }
                };
                if upto > through {
                    for sql in [SQLITE_FOLD, SQLITE_ACTIVITY] {
                        sqlx::query(sql)
                            .bind(through)
                            .bind(upto)
                            .execute(&mut *tx)
                            .await?;
                    }
                    sqlx::query("UPDATE rollup_marks SET through = ?1 WHERE name = 'dashboard'")
                        .bind(upto)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                if step_end.is_none() {
                    return Ok(upto.max(through));
                }
            },
            Db::Postgres(pool) => {
                // Read up to `seen` once every transaction that may hold a journal id up to
                // it has ended: the oldest running transaction is past the horizon.
                let (mut through, seen, horizon, xmin): (i64, i64, i64, i64) = sqlx::query_as(
                    "SELECT through, seen, horizon, pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
                     FROM rollup_marks WHERE name = 'dashboard'",
                )
                .fetch_one(pool)
                .await?;
                if seen > through && xmin >= horizon {
                    while through < seen {
                        let mut tx = pool.begin().await?;
                        let now_through: i64 = sqlx::query_scalar(
                            "SELECT through FROM rollup_marks WHERE name = 'dashboard' FOR UPDATE",
                        )
                        .fetch_one(&mut *tx)
                        .await?;
                        if now_through != through {
                            // Another process moved the mark: start again from its.
                            through = now_through;
                            continue;
                        }
                        let step_end: Option<i64> = sqlx::query_scalar(
                            "SELECT journal_id FROM entries WHERE journal_id > $1 AND journal_id <= $2 \
                             ORDER BY journal_id LIMIT 1 OFFSET $3",
                        )
                        .bind(through)
                        .bind(seen)
                        .bind(ROLLUP_STEP)
                        .fetch_optional(&mut *tx)
                        .await?;
                        let upto = step_end.unwrap_or(seen);
                        for sql in [PG_FOLD, PG_ACTIVITY] {
                            sqlx::query(sql)
                                .bind(through)
                                .bind(upto)
                                .execute(&mut *tx)
                                .await?;
                        }
                        sqlx::query(
                            "UPDATE rollup_marks SET through = $1 WHERE name = 'dashboard'",
                        )
                        .bind(upto)
                        .execute(&mut *tx)
                        .await?;
                        tx.commit().await?;
                        through = upto;
                    }
                }
                if through >= seen {
                    // A new horizon: the highest journal id now, and the next transaction id.
                    sqlx::query(
                        "UPDATE rollup_marks SET seen = GREATEST(seen, \
                             (SELECT COALESCE(MAX(journal_id), 0) FROM entries)), \
                             horizon = pg_snapshot_xmax(pg_current_snapshot())::text::bigint \
                         WHERE name = 'dashboard' AND through >= seen",
                    )
                    .execute(pool)
                    .await?;
                }
                Ok(through)
            }
        }
    }

    /// The program's dashboard as of `now`, with enrolments and points per range between
    /// consecutive `bounds` (month starts in the program's time zone, ascending; at least
    /// two).
    pub async fn dashboard(
        &self,
        program: &LoadedProgram,
        bounds: &[DateTime<Utc>],
        now: DateTime<Utc>,
    ) -> Result<Dashboard> {
        let months = bounds.len().saturating_sub(1);
        let mut out = Dashboard {
            enrolments: vec![0; months],
            ..Dashboard::default()
        };
        if months == 0 {
            return Ok(out);
        }
        let day = chrono::Duration::days(1);
        // Bring the rollup up to date; the figures below then read the mark and the rollup in
        // one snapshot, so a rollup running meanwhile neither drops nor doubles the tail.
        self.roll_up().await?;
        let (lo, hi) = (bounds[0], bounds[bounds.len() - 1]);
        let (lo_slot, hi_slot) = (
            lo.timestamp().div_euclid(SLOT_SECONDS),
            hi.timestamp().div_euclid(SLOT_SECONDS),
        );
        let (members, active_30, active_90, enrolments, points, tiers): (
            i64,
            i64,
            i64,
            Vec<(i64, i64)>,
            Vec<(String, i64, i64, i64, i64)>,
            Vec<(String, String, i64)>,
        );
        let outstanding = self.program_totals(program).await?;
        // Placeholder 1 is the program; 2.. the bounds.
        let last = bounds.len() + 1;
        match &self.reader().await {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let through: i64 =
                    sqlx::query_scalar("SELECT through FROM rollup_marks WHERE name = 'dashboard'")
                        .fetch_one(&mut *tx)
                        .await?;
                members = sqlx::query_scalar("SELECT COUNT(*) FROM members WHERE program_id = ?1 AND (group_id IS NULL OR group_id <> id)")
                    .bind(program.id)
                    .fetch_one(&mut *tx)
                    .await?;
                // Members whose latest activity is rolled up, and those active only in the tail.
                let active = "SELECT (SELECT COUNT(*) FROM member_activity WHERE program_id = ?1 AND last_at >= ?2) + \
                              (SELECT COUNT(DISTINCT e.member_id) FROM entries e LEFT JOIN member_activity a ON a.member_id = e.member_id \
                               WHERE e.journal_id > ?3 AND e.program_id = ?1 AND e.kind IN ('earn', 'redeem') \
                               AND e.effective_at >= ?2 AND (a.last_at IS NULL OR a.last_at < ?2))";
                active_30 = sqlx::query_scalar(active)
                    .bind(program.id)
                    .bind(micros(now - day * 30))
                    .bind(through)
                    .fetch_one(&mut *tx)
                    .await?;
                active_90 = sqlx::query_scalar(active)
                    .bind(program.id)
                    .bind(micros(now - day * 90))
                    .bind(through)
                    .fetch_one(&mut *tx)
                    .await?;
                let sql = format!(
                    "SELECT {} AS m, COUNT(*) FROM members WHERE program_id = ?1 AND (group_id IS NULL OR group_id <> id) AND enrolled_at >= ?2 AND enrolled_at < ?{last} GROUP BY m",
                    month_case("enrolled_at", bounds.len(), 2, sqlite_mark)
                );
                let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(program.id);
                for b in bounds {
                    q = q.bind(micros(*b));
                }
                enrolments = q.fetch_all(&mut *tx).await?;
                // The rollup's slots in range, and the tail's.
                points = sqlx::query_as(
                    "SELECT currency, slot, issued, redeemed, expired FROM points_rollup \
                     WHERE program_id = ?1 AND slot >= ?2 AND slot < ?3 \
                     UNION ALL \
                     SELECT currency, effective_at / 900000000, \
                            SUM(CASE WHEN kind = 'earn' OR (kind = 'adjust' AND amount > 0) THEN amount ELSE 0 END), \
                            -SUM(CASE WHEN kind = 'redeem' THEN amount ELSE 0 END), \
                            -SUM(CASE WHEN kind = 'expire' THEN amount ELSE 0 END) \
                     FROM entries WHERE journal_id > ?4 AND program_id = ?1 AND effective_at >= ?5 AND effective_at < ?6 \
                     AND kind IN ('earn', 'adjust', 'redeem', 'expire') GROUP BY currency, effective_at / 900000000",
                )
                .bind(program.id)
                .bind(lo_slot)
                .bind(hi_slot)
                .bind(through)
                .bind(micros(lo))
                .bind(micros(hi))
                .fetch_all(&mut *tx)
                .await?;
                tiers = sqlx::query_as(
                    "SELECT json_extract(g.value, '$.group'), json_extract(g.value, '$.tier'), COUNT(*) \
                     FROM member_tiers t, json_each(t.state, '$.groups') g WHERE t.program_id = ?1 GROUP BY 1, 2",
                )
                .bind(program.id)
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *tx)
                    .await?;
                let through: i64 =
                    sqlx::query_scalar("SELECT through FROM rollup_marks WHERE name = 'dashboard'")
                        .fetch_one(&mut *tx)
                        .await?;
                members = sqlx::query_scalar("SELECT COUNT(*) FROM members WHERE program_id = $1 AND (group_id IS NULL OR group_id <> id)")
                    .bind(program.id)
                    .fetch_one(&mut *tx)
                    .await?;
                let active = "SELECT (SELECT COUNT(*) FROM member_activity WHERE program_id = $1 AND last_at >= $2) + \
                              (SELECT COUNT(DISTINCT e.member_id) FROM entries e LEFT JOIN member_activity a ON a.member_id = e.member_id \
                               WHERE e.journal_id > $3 AND e.program_id = $1 AND e.kind IN ('earn', 'redeem') \
                               AND e.effective_at >= $2 AND (a.last_at IS NULL OR a.last_at < $2))";
                active_30 = sqlx::query_scalar(active)
                    .bind(program.id)
                    .bind(now - day * 30)
                    .bind(through)
                    .fetch_one(&mut *tx)
                    .await?;
                active_90 = sqlx::query_scalar(active)
                    .bind(program.id)
                    .bind(now - day * 90)
                    .bind(through)
                    .fetch_one(&mut *tx)
                    .await?;
                let sql = format!(
                    "SELECT ({})::bigint AS m, COUNT(*) FROM members WHERE program_id = $1 AND (group_id IS NULL OR group_id <> id) AND enrolled_at >= $2 AND enrolled_at < ${last} GROUP BY m",
                    month_case("enrolled_at", bounds.len(), 2, pg_mark)
                );
                let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(program.id);
                for b in bounds {
                    q = q.bind(*b);
                }
                enrolments = q.fetch_all(&mut *tx).await?;
                points = sqlx::query_as(
                    "SELECT currency::text, slot, issued, redeemed, expired FROM points_rollup \
                     WHERE program_id = $1 AND slot >= $2 AND slot < $3 \
                     UNION ALL \
                     SELECT currency::text, floor(extract(epoch FROM effective_at) / 900)::bigint AS s, \
                            SUM(CASE WHEN kind = 'earn' OR (kind = 'adjust' AND amount > 0) THEN amount ELSE 0 END)::bigint, \
                            (-SUM(CASE WHEN kind = 'redeem' THEN amount ELSE 0 END))::bigint, \
                            (-SUM(CASE WHEN kind = 'expire' THEN amount ELSE 0 END))::bigint \
                     FROM entries WHERE journal_id > $4 AND program_id = $1 AND effective_at >= $5 AND effective_at < $6 \
                     AND kind IN ('earn', 'adjust', 'redeem', 'expire') GROUP BY currency, s",
                )
                .bind(program.id)
                .bind(lo_slot)
                .bind(hi_slot)
                .bind(through)
                .bind(lo)
                .bind(hi)
                .fetch_all(&mut *tx)
                .await?;
                tiers = sqlx::query_as(
                    "SELECT g->>'group', g->>'tier', COUNT(*) \
                     FROM member_tiers t, jsonb_array_elements(t.state::jsonb -> 'groups') g WHERE t.program_id = $1 GROUP BY 1, 2",
                )
                .bind(program.id)
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
            }
        }
        out.members = members;
        out.active_30 = active_30;
        out.active_90 = active_90;
        for (m, n) in enrolments {
            if let Some(slot) = usize::try_from(m)
                .ok()
                .and_then(|m| out.enrolments.get_mut(m))
            {
                *slot = n;
            }
        }
        out.points = program
            .program
            .currencies
            .iter()
            .map(|c| (c.code.to_string(), vec![MonthPoints::default(); months]))
            .collect();
        for (currency, slot, issued, redeemed, expired) in points {
            let Some((_, per_month)) = out.points.iter_mut().find(|(c, _)| *c == currency) else {
                continue;
            };
            let Some(slot) = month_of(bounds, slot).and_then(|m| per_month.get_mut(m)) else {
                continue;
            };
            slot.issued += issued;
            slot.redeemed += redeemed;
            slot.expired += expired;
        }
        out.outstanding = outstanding;
        for group in &program.program.tier_groups {
            let mut held = 0;
            for tier in &group.tiers {
                let n = tiers
                    .iter()
                    .find(|(g, t, _)| g == group.code.as_str() && t == tier.code.as_str())
                    .map_or(0, |(_, _, n)| *n);
                held += n;
                out.tiers
                    .push((group.code.to_string(), tier.code.to_string(), n));
            }
            // Members without a standing in the group hold its first tier.
            if let Some(first) = out
                .tiers
                .iter_mut()
                .find(|(g, _, _)| g == group.code.as_str())
            {
                first.2 += members - held;
            }
        }
        Ok(out)
    }
}
