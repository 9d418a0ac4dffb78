//! The program dashboard's figures, aggregated in the database (never by loading rows):
//! members, activity, enrolments and points per month, outstanding points, tiers.

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

impl Store {
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
        let (members, active_30, active_90, enrolments, points, tiers): (
            i64,
            i64,
            i64,
            Vec<(i64, i64)>,
            Vec<(String, String, i64, i64)>,
            Vec<(String, String, i64)>,
        );
        let outstanding = self.program_totals(program).await?;
        // Placeholder 1 is the program; 2.. the bounds.
        let last = bounds.len() + 1;
        match &self.db {
            Db::Sqlite(pool) => {
                members = sqlx::query_scalar("SELECT COUNT(*) FROM members WHERE program_id = ?1")
                    .bind(program.id)
                    .fetch_one(pool)
                    .await?;
                let active = "SELECT COUNT(DISTINCT member_id) FROM journals WHERE program_id = ?1 \
                              AND kind IN ('accrual', 'redemption') AND occurred_at >= ?2 AND occurred_at <= ?3";
                active_30 = sqlx::query_scalar(active)
                    .bind(program.id)
                    .bind(micros(now - day * 30))
                    .bind(micros(now))
                    .fetch_one(pool)
                    .await?;
                active_90 = sqlx::query_scalar(active)
                    .bind(program.id)
                    .bind(micros(now - day * 90))
                    .bind(micros(now))
                    .fetch_one(pool)
                    .await?;
                let sql = format!(
                    "SELECT {} AS m, COUNT(*) FROM members WHERE program_id = ?1 AND enrolled_at >= ?2 AND enrolled_at < ?{last} GROUP BY m",
                    month_case("enrolled_at", bounds.len(), 2, sqlite_mark)
                );
                let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(program.id);
                for b in bounds {
                    q = q.bind(micros(*b));
                }
                enrolments = q.fetch_all(pool).await?;
                let sql = format!(
                    "SELECT currency, kind, {} AS m, SUM(CASE WHEN kind = 'adjust' AND amount < 0 THEN 0 ELSE amount END) \
                     FROM entries WHERE program_id = ?1 AND effective_at >= ?2 AND effective_at < ?{last} \
                     AND kind IN ('earn', 'adjust', 'redeem', 'expire') GROUP BY currency, kind, m",
                    month_case("effective_at", bounds.len(), 2, sqlite_mark)
                );
                let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(program.id);
                for b in bounds {
                    q = q.bind(micros(*b));
                }
                points = q.fetch_all(pool).await?;
                tiers = sqlx::query_as(
                    "SELECT json_extract(g.value, '$.group'), json_extract(g.value, '$.tier'), COUNT(*) \
                     FROM member_tiers t, json_each(t.state, '$.groups') g WHERE t.program_id = ?1 GROUP BY 1, 2",
                )
                .bind(program.id)
                .fetch_all(pool)
                .await?;
            }
            Db::Postgres(pool) => {
                members = sqlx::query_scalar("SELECT COUNT(*) FROM members WHERE program_id = $1")
                    .bind(program.id)
                    .fetch_one(pool)
                    .await?;
                let active = "SELECT COUNT(DISTINCT member_id) FROM journals WHERE program_id = $1 \
                              AND kind IN ('accrual', 'redemption') AND occurred_at >= $2 AND occurred_at <= $3";
                active_30 = sqlx::query_scalar(active)
                    .bind(program.id)
                    .bind(now - day * 30)
                    .bind(now)
                    .fetch_one(pool)
                    .await?;
                active_90 = sqlx::query_scalar(active)
                    .bind(program.id)
                    .bind(now - day * 90)
                    .bind(now)
                    .fetch_one(pool)
                    .await?;
                let sql = format!(
                    "SELECT ({})::bigint AS m, COUNT(*) FROM members WHERE program_id = $1 AND enrolled_at >= $2 AND enrolled_at < ${last} GROUP BY m",
                    month_case("enrolled_at", bounds.len(), 2, pg_mark)
                );
                let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(program.id);
                for b in bounds {
                    q = q.bind(*b);
                }
                enrolments = q.fetch_all(pool).await?;
                let sql = format!(
                    "SELECT currency::text, kind, ({})::bigint AS m, SUM(CASE WHEN kind = 'adjust' AND amount < 0 THEN 0 ELSE amount END)::bigint \
                     FROM entries WHERE program_id = $1 AND effective_at >= $2 AND effective_at < ${last} \
                     AND kind IN ('earn', 'adjust', 'redeem', 'expire') GROUP BY currency, kind, m",
                    month_case("effective_at", bounds.len(), 2, pg_mark)
                );
                let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(program.id);
                for b in bounds {
                    q = q.bind(*b);
                }
                points = q.fetch_all(pool).await?;
                tiers = sqlx::query_as(
                    "SELECT g->>'group', g->>'tier', COUNT(*) \
                     FROM member_tiers t, jsonb_array_elements(t.state::jsonb -> 'groups') g WHERE t.program_id = $1 GROUP BY 1, 2",
                )
                .bind(program.id)
                .fetch_all(pool)
                .await?;
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
        for (currency, kind, m, sum) in points {
            let Some((_, per_month)) = out.points.iter_mut().find(|(c, _)| *c == currency) else {
                continue;
            };
            let Some(slot) = usize::try_from(m).ok().and_then(|m| per_month.get_mut(m)) else {
                continue;
            };
            match kind.as_str() {
                "earn" | "adjust" => slot.issued += sum,
                "redeem" => slot.redeemed -= sum,
                "expire" => slot.expired -= sum,
                _ => {}
            }
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
