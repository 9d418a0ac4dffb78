//! Badges and granted benefits: what promotions award besides points and vouchers.
//!
//! The engine collects them from a journal's outcome and writes them with the batch
//! ([`insert_awards`], through `LedgerTx::insert_awards`), so a journal and its awards
//! commit together and a replay (answered, not processed) awards nothing again. A badge
//! is held once per member (`ON CONFLICT DO NOTHING`); a repeatable one counts its awards.
//! A benefit is granted for a period, once per journal and reward.

use chrono::{DateTime, Utc};

use crate::Store;
use crate::dialect::{At, with_pool};
use crate::error::Result;

/// A badge the batch awards.
#[derive(Debug, Clone)]
pub(crate) struct NewBadge {
    pub member_id: i64,
    pub badge: String,
    pub repeatable: bool,
    pub source: String,
}

/// A benefit the batch grants.
#[derive(Debug, Clone)]
pub(crate) struct NewBenefit {
    pub member_id: i64,
    pub code: String,
    pub name: String,
    pub value: Option<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub source: String,
    pub source_key: String,
}

/// A member's badge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadgeView {
    pub badge: String,
    pub name: String,
    pub times: i64,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    pub source: String,
}

/// A benefit granted to a member (by a promotion), for a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantedBenefit {
    pub code: String,
    pub name: String,
    pub value: Option<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub source: String,
}

/// Writes a batch's badges and benefits on `$conn`, a connection of either dialect.
macro_rules! insert_awards {
    ($conn:expr, $program_id:expr, $badges:expr, $benefits:expr, $now:expr) => {{
        for b in $badges {
            let b: &$crate::badges::NewBadge = b;
            let sql = if b.repeatable {
                "INSERT INTO member_badges (program_id, member_id, badge, times, first_at, last_at, source) \
                 VALUES ($1, $2, $3, 1, $4, $4, $5) ON CONFLICT (member_id, badge) \
                 DO UPDATE SET times = member_badges.times + 1, last_at = excluded.last_at"
            } else {
                "INSERT INTO member_badges (program_id, member_id, badge, times, first_at, last_at, source) \
                 VALUES ($1, $2, $3, 1, $4, $4, $5) ON CONFLICT (member_id, badge) DO NOTHING"
            };
            sqlx::query(sql)
                .bind($program_id)
                .bind(b.member_id)
                .bind(&b.badge)
                .bind($crate::dialect::At($now))
                .bind(&b.source)
                .execute(&mut *$conn)
                .await?;
        }
        for g in $benefits {
            let g: &$crate::badges::NewBenefit = g;
            sqlx::query(
                "INSERT INTO member_benefits (program_id, member_id, code, name, value, starts_at, ends_at, \
                 source, source_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (program_id, member_id, source_key) DO NOTHING",
            )
            .bind($program_id)
            .bind(g.member_id)
            .bind(&g.code)
            .bind(&g.name)
            .bind(&g.value)
            .bind($crate::dialect::At(g.starts_at))
            .bind($crate::dialect::At(g.ends_at))
            .bind(&g.source)
            .bind(&g.source_key)
            .execute(&mut *$conn)
            .await?;
        }
    }};
}
pub(crate) use insert_awards;

impl Store {
    /// A member's badges (its row id), by when first awarded; names from `program`.
    pub async fn member_badges(
        &self,
        program: &fidelis_core::program::Program,
        member_id: i64,
    ) -> Result<Vec<BadgeView>> {
        let rows: Vec<(String, i64, At, At, String)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT badge, times, first_at, last_at, source FROM member_badges \
                 WHERE member_id = $1 ORDER BY first_at, badge",
            )
            .bind(member_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(badge, times, first, last, source)| BadgeView {
                name: program
                    .badge(&badge)
                    .map_or_else(|| badge.clone(), |b| b.name.clone()),
                badge,
                times,
                first_at: first.0,
                last_at: last.0,
                source,
            })
            .collect())
    }

    /// The benefits granted to a member (its row id) that have not ended by `now`,
    /// soonest end first.
    pub async fn member_benefits(
        &self,
        member_id: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<GrantedBenefit>> {
        let rows: Vec<(String, String, Option<String>, At, At, String)> =
            with_pool!(self, |pool| {
                sqlx::query_as(
                    "SELECT code, name, value, starts_at, ends_at, source FROM member_benefits \
                     WHERE member_id = $1 AND ends_at > $2 ORDER BY ends_at, id",
                )
                .bind(member_id)
                .bind(At(now))
                .fetch_all(pool)
                .await?
            });
        Ok(rows
            .into_iter()
            .map(|(code, name, value, s, e, source)| GrantedBenefit {
                code,
                name,
                value,
                starts_at: s.0,
                ends_at: e.0,
                source,
            })
            .collect())
    }
}
