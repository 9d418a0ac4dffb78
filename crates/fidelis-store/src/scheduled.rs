//! Scheduled rewards (birthday, anniversary, win-back): the members due, found in the
//! database, judged by the core ([`fidelis_core::promotions::scheduled`]), and awarded as
//! `adjustment` journals whose external id names promotion, member and period — so a job
//! run repeated, or crashed between posting and recording, awards nothing twice. Rewards
//! given are recorded in `scheduled_rewards`, so later runs skip those members quickly.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use fidelis_core::ids::CurrencyIx;
use fidelis_core::journal::{Journal, JournalDocument};
use fidelis_core::promotions::scheduled::{self, Trigger};
use fidelis_core::promotions::{Action, Promotion, PromotionStatus};

use crate::access::Actor;
use crate::engine::LoadedProgram;
use crate::error::{Result, StoreError};
use crate::sqlite::{instant, micros};
use crate::{Db, Prepared, Store};

/// A scheduled reward a job run would award.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueReward {
    pub promotion: String,
    pub trigger: &'static str,
    pub member: String,
    pub period: String,
    pub currency: String,
    pub points: i64,
}

/// Members read per round.
const ROUND: i64 = 1_000;

/// A candidate: row id, external id, profile (JSON text), enrolment instant, and the last
/// accrual or redemption (win-back only).
type Candidate = (i64, String, String, DateTime<Utc>, Option<DateTime<Utc>>);

/// The local midnight starting `date` in the program's zone (the first instant of the day
/// when midnight does not exist).
fn local_start<Z: TimeZone>(tz: Z, date: NaiveDate) -> DateTime<Utc> {
    let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    tz.from_local_datetime(&midnight).earliest().map_or_else(
        || Utc.from_utc_datetime(&midnight),
        |t| t.with_timezone(&Utc),
    )
}

/// What a scheduled promotion awards: its fixed points per currency (the only action the
/// validator lets it have), one journal each.
fn fixed_awards(promotion: &Promotion) -> impl Iterator<Item = (CurrencyIx, i64)> + '_ {
    promotion.actions.iter().filter_map(|a| match a {
        Action::Fixed { currency, points } => Some((*currency, *points)),
        _ => None,
    })
}

/// The trigger of a scheduled promotion active at `as_of`, if it is one.
fn in_force(promotion: &Promotion, as_of: DateTime<Utc>) -> Option<Trigger> {
    let trigger = promotion.trigger?;
    let active = promotion.status == PromotionStatus::Active
        && promotion.starts_at.is_none_or(|s| as_of >= s)
        && promotion.ends_at.is_none_or(|e| as_of < e);
    active.then_some(trigger)
}

impl Store {
    /// Awards the scheduled rewards due at `as_of` (each active promotion with a trigger);
    /// returns how many were awarded. Idempotent: a second run awards nothing new.
    pub async fn run_scheduled_rewards(
        &self,
        program: &LoadedProgram,
        as_of: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<u64> {
        let p = &program.program;
        let mut total = 0;
        for promotion in &p.promotions {
            let Some(trigger) = in_force(promotion, as_of) else {
                continue;
            };
            let awarded = self.reward_due(program, promotion, trigger, as_of).await?;
            if awarded > 0 {
                let mut entry = actor.entry(
                    as_of,
                    "promotion.scheduled",
                    Some(p.code.as_str()),
                    Some(promotion.code.as_str()),
                );
                entry.after = Some(serde_json::json!({
                    "promotion": promotion.code.as_str(),
                    "trigger": trigger.name(),
                    "as_of": as_of,
                    "awarded": awarded,
                }));
                self.append_audit(&entry).await?;
            }
            total += awarded;
        }
        Ok(total)
    }

    /// Forgets which scheduled rewards were given, as a crash between posting a reward and
    /// recording it would (for the test that the journals' ids alone keep it once).
    #[doc(hidden)]
    pub async fn forget_scheduled_rewards_for_test(&self) -> Result<()> {
        match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query("DELETE FROM scheduled_rewards")
                    .execute(pool)
                    .await?;
            }
            Db::Postgres(pool) => {
                sqlx::query("DELETE FROM scheduled_rewards")
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    async fn reward_due(
        &self,
        program: &LoadedProgram,
        promotion: &Promotion,
        trigger: Trigger,
        as_of: DateTime<Utc>,
    ) -> Result<u64> {
        let p = &program.program;
        let tz = p.time_zone;
        let today = as_of.with_timezone(&tz).date_naive();
        let mut awarded = 0;
        let mut after = 0i64;
        loop {
            let batch = self
                .candidates(program, trigger, today, as_of, after)
                .await?;
            let Some(last) = batch.last() else { break };
            after = last.0;
            let mut due = self
                .not_yet_given(program, promotion, trigger, today, as_of, batch)
                .await?;
            if due.is_empty() {
                continue;
            }
            let mut journals = Vec::new();
            for (id, external_id, period) in &due {
                for (n, (currency, points)) in fixed_awards(promotion).enumerate() {
                    let mut key = scheduled::external_id(&promotion.code, *id, period);
                    if n > 0 {
                        key.push_str(&format!(":{n}"));
                    }
                    let doc = JournalDocument {
                        external_id: Some(key),
                        member: Some(external_id.clone()),
                        kind: Some("adjustment".into()),
                        occurred_at: Some(as_of.to_rfc3339()),
                        currency: Some(p.currency(currency).code.to_string()),
                        points: Some(points),
                        // The reason names the promotion (reasons are codes).
                        reason: Some(promotion.code.to_string()),
                        ..JournalDocument::default()
                    };
                    let journal = Journal::parse(&doc, p)
                        .map_err(|e| StoreError::Inconsistent(format!("scheduled reward: {e}")))?;
                    journals.push(Prepared::new(journal, p)?);
                }
            }
            let results = self.post_journals(program, &journals, as_of, None).await?;
            let mut posted = std::collections::HashSet::new();
            for (j, r) in journals.iter().zip(&results) {
                match r {
                    Ok(_) => {
                        posted.insert(j.journal.member.to_string());
                    }
                    // A member suspended since it was read: no reward, and none recorded.
                    Err(e) => {
                        tracing::info!(journal = %j.journal.external_id, error = %e, "scheduled reward refused")
                    }
                }
            }
            due.retain(|(_, external_id, _)| posted.contains(external_id));
            awarded += due.len() as u64;
            self.record_rewards(program, promotion, &due, as_of).await?;
        }
        Ok(awarded)
    }

    /// Of `batch`, the members due a reward (row id, external id, period), judged by the
    /// core, without those already given it.
    async fn not_yet_given(
        &self,
        program: &LoadedProgram,
        promotion: &Promotion,
        trigger: Trigger,
        today: NaiveDate,
        as_of: DateTime<Utc>,
        batch: Vec<Candidate>,
    ) -> Result<Vec<(i64, String, String)>> {
        let tz = program.program.time_zone;
        let mut due: Vec<(i64, String, String)> = Vec::new();
        for (id, external_id, profile, enrolled_at, last_activity) in batch {
            let period = match trigger {
                Trigger::Birthday { whole_month } => {
                    let profile: serde_json::Value = serde_json::from_str(&profile)?;
                    profile
                        .get("birthday")
                        .and_then(serde_json::Value::as_str)
                        .and_then(|b| NaiveDate::parse_from_str(b, "%Y-%m-%d").ok())
                        .and_then(|born| scheduled::birthday_period(born, today, whole_month))
                }
                Trigger::Anniversary => scheduled::anniversary_period(
                    enrolled_at.with_timezone(&tz).date_naive(),
                    today,
                ),
                Trigger::Inactivity { days } => {
                    scheduled::inactivity_period(last_activity, enrolled_at, days, as_of)
                }
            };
            if let Some(period) = period {
                due.push((id, external_id, period));
            }
        }
        if due.is_empty() {
            return Ok(due);
        }
        let given = self.rewards_given(program, promotion, &due).await?;
        due.retain(|(id, _, period)| !given.contains(&(*id, period.clone())));
        Ok(due)
    }

    /// The scheduled rewards a job run at `as_of` would award (a dry run: nothing is
    /// written), at most `limit`, promotion by promotion.
    pub async fn scheduled_rewards_due(
        &self,
        program: &LoadedProgram,
        as_of: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueReward>> {
        let p = &program.program;
        let today = as_of.with_timezone(&p.time_zone).date_naive();
        let mut out = Vec::new();
        for promotion in &p.promotions {
            let Some(trigger) = in_force(promotion, as_of) else {
                continue;
            };
            let mut after = 0i64;
            while out.len() < limit {
                let batch = self
                    .candidates(program, trigger, today, as_of, after)
                    .await?;
                let Some(last) = batch.last() else { break };
                after = last.0;
                for (_, member, period) in self
                    .not_yet_given(program, promotion, trigger, today, as_of, batch)
                    .await?
                {
                    for (currency, points) in fixed_awards(promotion) {
                        if out.len() < limit {
                            out.push(DueReward {
                                promotion: promotion.code.to_string(),
                                trigger: trigger.name(),
                                member: member.clone(),
                                period: period.clone(),
                                currency: p.currency(currency).code.to_string(),
                                points,
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Active members who may be due, after row id `after`, in row id order.
    async fn candidates(
        &self,
        program: &LoadedProgram,
        trigger: Trigger,
        today: NaiveDate,
        as_of: DateTime<Utc>,
        after: i64,
    ) -> Result<Vec<Candidate>> {
        let p = &program.program;
        let postgres = matches!(self.db, Db::Postgres(_));
        let (birthday, profile) = if postgres {
            ("substr(m.profile->>'birthday', 6, 5)", "m.profile::text")
        } else {
            (
                "substr(json_extract(m.profile, '$.birthday'), 6, 5)",
                "m.profile",
            )
        };
        // Placeholders 1 to 3: program, after, round; more follow per trigger.
        let ph = |n: usize| {
            if postgres {
                format!("${n}")
            } else {
                format!("?{n}")
            }
        };
        let mut texts: Vec<String> = Vec::new();
        let mut times: Vec<DateTime<Utc>> = Vec::new();
        let mut last_activity = "NULL".to_owned();
        let filter = match trigger {
            Trigger::Birthday { whole_month: false } => {
                let mut days = vec![today.format("%m-%d").to_string()];
                if today.month() == 2 && today.day() == 28 && !today.leap_year() {
                    days.push("02-29".into());
                }
                let list: Vec<String> = days
                    .into_iter()
                    .map(|d| {
                        texts.push(d);
                        ph(3 + texts.len())
                    })
                    .collect();
                format!("{birthday} IN ({})", list.join(", "))
            }
            Trigger::Birthday { whole_month: true } => {
                texts.push(today.format("%m-").to_string());
                texts.push(today.format("%m.").to_string());
                format!("{birthday} >= {} AND {birthday} < {}", ph(4), ph(5))
            }
            Trigger::Anniversary => {
                // Enrolled on this local month and day in an earlier year: one range of
                // enrolment instants per year (29 February counts on the 28th).
                let first = p
                    .starts_at
                    .with_timezone(&p.time_zone)
                    .year()
                    .min(today.year())
                    - 1;
                let mut ranges = Vec::new();
                for year in first.max(1970)..today.year() {
                    let mut days = Vec::new();
                    if let Some(d) = NaiveDate::from_ymd_opt(year, today.month(), today.day()) {
                        days.push(d);
                    }
                    if today.month() == 2
                        && today.day() == 28
                        && !today.leap_year()
                        && let Some(d) = NaiveDate::from_ymd_opt(year, 2, 29)
                    {
                        days.push(d);
                    }
                    for d in days {
                        times.push(local_start(p.time_zone, d));
                        times.push(local_start(p.time_zone, d + chrono::Duration::days(1)));
                        ranges.push(format!(
                            "(m.enrolled_at >= {} AND m.enrolled_at < {})",
                            ph(3 + times.len() - 1),
                            ph(3 + times.len())
                        ));
                    }
                }
                if ranges.is_empty() {
                    return Ok(Vec::new());
                }
                format!("({})", ranges.join(" OR "))
            }
            Trigger::Inactivity { days } => {
                let cutoff = as_of - chrono::Duration::days(i64::from(days));
                times.push(cutoff);
                let activity = "FROM journals j WHERE j.member_id = m.id AND j.kind IN ('accrual', 'redemption') AND j.status = 'processed'";
                last_activity = format!("(SELECT max(j.occurred_at) {activity})");
                format!(
                    "m.enrolled_at <= {cutoff} AND NOT EXISTS (SELECT 1 {activity} AND j.occurred_at > {cutoff})",
                    cutoff = ph(4)
                )
            }
        };
        let sql = format!(
            "SELECT m.id, m.external_id, {profile}, m.enrolled_at, {last_activity} FROM members m \
             WHERE m.program_id = {} AND m.status = 'active' AND m.id > {} AND {filter} \
             ORDER BY m.id LIMIT {}",
            ph(1),
            ph(2),
            ph(3)
        );
        match &self.db {
            Db::Sqlite(pool) => {
                let mut q = sqlx::query_as::<_, (i64, String, String, i64, Option<i64>)>(
                    sqlx::AssertSqlSafe(sql),
                )
                .bind(program.id)
                .bind(after)
                .bind(ROUND);
                for t in texts {
                    q = q.bind(t);
                }
                for t in times {
                    q = q.bind(micros(t));
                }
                q.fetch_all(pool)
                    .await?
                    .into_iter()
                    .map(|(id, e, profile, at, last)| {
                        Ok((id, e, profile, instant(at)?, last.map(instant).transpose()?))
                    })
                    .collect()
            }
            Db::Postgres(pool) => {
                let mut q = sqlx::query_as::<_, Candidate>(sqlx::AssertSqlSafe(sql))
                    .bind(program.id)
                    .bind(after)
                    .bind(ROUND);
                for t in texts {
                    q = q.bind(t);
                }
                for t in times {
                    q = q.bind(t);
                }
                Ok(q.fetch_all(pool).await?)
            }
        }
    }

    /// Which of `due` (member, period) already had this promotion's reward.
    async fn rewards_given(
        &self,
        program: &LoadedProgram,
        promotion: &Promotion,
        due: &[(i64, String, String)],
    ) -> Result<std::collections::HashSet<(i64, String)>> {
        let ids: Vec<i64> = due.iter().map(|d| d.0).collect();
        let rows: Vec<(i64, String)> = match &self.db {
            Db::Sqlite(pool) => sqlx::query_as(
                "SELECT member_id, period FROM scheduled_rewards WHERE program_id = ?1 AND promotion = ?2 \
                 AND member_id IN (SELECT value FROM json_each(?3))",
            )
            .bind(program.id)
            .bind(promotion.code.as_str())
            .bind(serde_json::to_string(&ids)?)
            .fetch_all(pool)
            .await?,
            Db::Postgres(pool) => sqlx::query_as(
                "SELECT member_id, period FROM scheduled_rewards WHERE program_id = $1 AND promotion = $2 \
                 AND member_id = ANY($3)",
            )
            .bind(program.id)
            .bind(promotion.code.as_str())
            .bind(&ids)
            .fetch_all(pool)
            .await?,
        };
        Ok(rows.into_iter().collect())
    }

    async fn record_rewards(
        &self,
        program: &LoadedProgram,
        promotion: &Promotion,
        given: &[(i64, String, String)],
        at: DateTime<Utc>,
    ) -> Result<()> {
        if given.is_empty() {
            return Ok(());
        }
        match &self.db {
            Db::Sqlite(pool) => {
                let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                    "INSERT INTO scheduled_rewards (program_id, promotion, member_id, period, awarded_at) ",
                );
                q.push_values(given, |mut b, (id, _, period)| {
                    b.push_bind(program.id)
                        .push_bind(promotion.code.as_str())
                        .push_bind(*id)
                        .push_bind(period.as_str())
                        .push_bind(micros(at));
                });
                q.push(" ON CONFLICT DO NOTHING");
                q.build().execute(pool).await?;
            }
            Db::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO scheduled_rewards (program_id, promotion, member_id, period, awarded_at) \
                     SELECT $1, $2, m, p, $5 FROM unnest($3::bigint[], $4::text[]) AS u(m, p) ON CONFLICT DO NOTHING",
                )
                .bind(program.id)
                .bind(promotion.code.as_str())
                .bind(given.iter().map(|g| g.0).collect::<Vec<_>>())
                .bind(given.iter().map(|g| g.2.as_str()).collect::<Vec<_>>())
                .bind(at)
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }
}
