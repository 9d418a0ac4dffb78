//! Referral rewards. A member enrolled with another's referral code is a referee; the
//! referee's first qualifying journal marks the referral qualified (in that journal's
//! transaction). The rewards — one adjustment journal for the referrer, one for the
//! referee — are then posted with external ids derived from the referee
//! (`referral:{id}:referrer`, `referral:{id}:referee`), so however often posting is
//! attempted (right after the journal, by the scheduled jobs after a crash, by two
//! processes at once), each is credited once.

use chrono::{DateTime, Utc};
use fidelis_core::journal::{Journal, JournalDocument};

use crate::engine::{LoadedProgram, Prepared};
use crate::error::Result;
use crate::sqlite::micros;
use crate::{Db, Store};

/// Referees rewarded per round.
const ROUND: i64 = 200;

impl Store {
    /// Posts the rewards of qualified referrals not rewarded yet. Returns how many
    /// referrals were rewarded.
    pub async fn reward_referrals(
        &self,
        program: &LoadedProgram,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let p = &program.program;
        let Some(referral) = &p.referral else {
            return Ok(0);
        };
        let mut rewarded = 0;
        loop {
            let due: Vec<(i64, String, String)> = match &self.db {
                Db::Sqlite(pool) => sqlx::query_as(
                    "SELECT m.id, m.external_id, r.external_id FROM members m JOIN members r ON r.id = m.referred_by \
                     WHERE m.program_id = ?1 AND m.referral_qualified_at IS NOT NULL AND m.referral_rewarded_at IS NULL \
                     ORDER BY m.id LIMIT ?2",
                )
                .bind(program.id)
                .bind(ROUND)
                .fetch_all(pool)
                .await?,
                Db::Postgres(pool) => sqlx::query_as(
                    "SELECT m.id, m.external_id, r.external_id FROM members m JOIN members r ON r.id = m.referred_by \
                     WHERE m.program_id = $1 AND m.referral_qualified_at IS NOT NULL AND m.referral_rewarded_at IS NULL \
                     ORDER BY m.id LIMIT $2",
                )
                .bind(program.id)
                .bind(ROUND)
                .fetch_all(pool)
                .await?,
            };
            if due.is_empty() {
                return Ok(rewarded);
            }
            let mut journals = Vec::with_capacity(due.len() * 2);
            for (id, referee, referrer) in &due {
                for (side, member, (currency, points)) in [
                    ("referrer", referrer, referral.referrer),
                    ("referee", referee, referral.referee),
                ] {
                    let doc = JournalDocument {
                        external_id: Some(format!("referral:{id}:{side}")),
                        member: Some(member.clone()),
                        kind: Some("adjustment".into()),
                        occurred_at: Some(now.to_rfc3339()),
                        currency: Some(p.currency(currency).code.to_string()),
                        points: Some(points),
                        reason: Some("referral".into()),
                        ..JournalDocument::default()
                    };
                    let journal = Journal::parse(&doc, p).map_err(|e| {
                        crate::StoreError::Inconsistent(format!("referral reward: {e}"))
                    })?;
                    journals.push(Prepared::new(journal, p)?);
                }
            }
            let results = self.post_journals(program, &journals, now, None).await?;
            for (j, r) in journals.iter().zip(&results) {
                if let Err(e) = r {
                    tracing::warn!(journal = %j.journal.external_id, error = %e, "referral reward refused");
                }
            }
            let ids: Vec<i64> = due.iter().map(|d| d.0).collect();
            match &self.db {
                Db::Sqlite(pool) => {
                    sqlx::query(
                        "UPDATE members SET referral_rewarded_at = ?1 WHERE id IN (SELECT value FROM json_each(?2))",
                    )
                    .bind(micros(now))
                    .bind(serde_json::to_string(&ids)?)
                    .execute(pool)
                    .await?;
                }
                Db::Postgres(pool) => {
                    sqlx::query("UPDATE members SET referral_rewarded_at = $1 WHERE id = ANY($2)")
                        .bind(now)
                        .bind(&ids)
                        .execute(pool)
                        .await?;
                }
            }
            rewarded += due.len() as u64;
        }
    }
}
