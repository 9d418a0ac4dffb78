//! The program's purchase history, read for the models of [`fidelis_core::analytics`]: every
//! processed purchase of every member, streamed in member order and summarised member by
//! member, so memory follows the number of members, not of journals.
//!
//! A purchase's spend is the journal's own `amount` (its canonical document), in minor units
//! of the program's money currency; refunds do not lower it and cancelled purchases do not
//! count. Days are the program's time zone's.

use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};
use fidelis_core::analytics::history::{self, Summary};
use fidelis_core::segments::Recent;
use futures::TryStreamExt;

use crate::engine::LoadedProgram;
use crate::error::{Result, StoreError};
use crate::sqlite::{instant, micros};
use crate::{Db, Store};

/// One member's history up to the end of the window.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberHistory {
    pub member_id: i64,
    pub external_id: String,
    pub summary: Summary,
}

/// What the read saw: members summarised, and purchases read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histories {
    pub members: Vec<MemberHistory>,
    pub purchases: u64,
    /// Purchases and spend in the recent windows before the read's instant, of every member
    /// with a purchase (not only those summarised), by member id — when asked for.
    pub recent: Vec<(i64, Recent)>,
}

const SQLITE_PURCHASES: &str = "SELECT j.member_id, m.external_id, j.occurred_at, json_extract(j.document, '$.amount') \
     FROM journals j JOIN members m ON m.id = j.member_id \
     WHERE j.program_id = ?1 AND j.type = 'purchase' AND j.status = 'processed' AND j.occurred_at < ?2 \
     ORDER BY j.member_id";

const PG_PURCHASES: &str = "SELECT j.member_id, m.external_id, j.occurred_at, (j.document::json) ->> 'amount' \
     FROM journals j JOIN members m ON m.id = j.member_id \
     WHERE j.program_id = $1 AND j.type = 'purchase' AND j.status = 'processed' AND j.occurred_at < $2 \
     ORDER BY j.member_id";

/// Folds rows arriving in member order into summaries.
struct Folder<'p> {
    program: &'p LoadedProgram,
    end: NaiveDate,
    unit_days: f64,
    current: Option<(i64, String)>,
    purchases: Vec<(NaiveDate, i64)>,
    /// The instant recent windows end at, when they are read.
    recent_until: Option<DateTime<Utc>>,
    recent: Recent,
    out: Histories,
}

impl Folder<'_> {
    fn row(
        &mut self,
        member: i64,
        external: String,
        at: DateTime<Utc>,
        amount: Option<String>,
    ) -> Result<()> {
        if self.current.as_ref().is_none_or(|(m, _)| *m != member) {
            self.flush();
            self.current = Some((member, external));
        }
        let p = &self.program.program;
        let amount = amount.ok_or_else(|| {
            StoreError::Inconsistent(format!("a purchase of member {member} has no amount"))
        })?;
        let spend = p
            .money_currency
            .parse_amount(&amount)
            .map_err(|e| StoreError::Inconsistent(format!("a purchase of member {member}: {e}")))?;
        self.purchases
            .push((at.with_timezone(&p.time_zone).date_naive(), spend.0));
        if let Some(until) = self.recent_until {
            self.recent.add(at, spend.0, until);
        }
        self.out.purchases += 1;
        Ok(())
    }

    fn flush(&mut self) {
        if let Some((member_id, _)) = &self.current
            && self.recent.last.is_some()
        {
            self.out
                .recent
                .push((*member_id, std::mem::take(&mut self.recent)));
        }
        if let Some((member_id, external_id)) = self.current.take()
            && let Some(summary) = history::summarize(&mut self.purchases, self.end, self.unit_days)
        {
            self.out.members.push(MemberHistory {
                member_id,
                external_id,
                summary,
            });
        }
        self.purchases.clear();
    }
}

impl Store {
    /// Every member's purchases up to and including the day `end` (in the program's time
    /// zone), summarised with time in units of `unit_days` days; members without a purchase
    /// in the window are left out. Sorted by member id.
    pub async fn purchase_histories(
        &self,
        program: &LoadedProgram,
        end: NaiveDate,
        unit_days: f64,
    ) -> Result<Histories> {
        let tz = program.program.time_zone;
        let next = end
            .checked_add_days(Days::new(1))
            .ok_or_else(|| StoreError::Refused("bad_date", format!("{end} is out of range")))?;
        // The first instant of the next day there (the earliest, if a change of clocks
        // makes midnight ambiguous or skips it).
        let until = tz
            .from_local_datetime(&next.and_time(chrono::NaiveTime::MIN))
            .earliest()
            .unwrap_or_else(|| tz.from_utc_datetime(&next.and_time(chrono::NaiveTime::MIN)))
            .with_timezone(&Utc);
        self.read_histories(program, end, until, unit_days, false)
            .await
    }

    /// Every member's purchases before the instant `as_of`, summarised as
    /// [`Self::purchase_histories`] does up to `as_of`'s day, with each member's purchases
    /// and spend in the recent windows before `as_of` (for segments).
    pub async fn purchase_histories_as_of(
        &self,
        program: &LoadedProgram,
        as_of: DateTime<Utc>,
        unit_days: f64,
    ) -> Result<Histories> {
        let end = as_of.with_timezone(&program.program.time_zone).date_naive();
        self.read_histories(program, end, as_of, unit_days, true)
            .await
    }

    async fn read_histories(
        &self,
        program: &LoadedProgram,
        end: NaiveDate,
        until: DateTime<Utc>,
        unit_days: f64,
        recent: bool,
    ) -> Result<Histories> {
        let mut folder = Folder {
            program,
            end,
            unit_days,
            current: None,
            purchases: Vec::new(),
            recent_until: recent.then_some(until),
            recent: Recent::default(),
            out: Histories::default(),
        };
        match &self.db {
            Db::Sqlite(pool) => {
                let mut rows =
                    sqlx::query_as::<_, (i64, String, i64, Option<String>)>(SQLITE_PURCHASES)
                        .bind(program.id)
                        .bind(micros(until))
                        .fetch(pool);
                while let Some((member, external, at, amount)) = rows.try_next().await? {
                    folder.row(member, external, instant(at)?, amount)?;
                }
            }
            Db::Postgres(pool) => {
                let mut rows =
                    sqlx::query_as::<_, (i64, String, DateTime<Utc>, Option<String>)>(PG_PURCHASES)
                        .bind(program.id)
                        .bind(until)
                        .fetch(pool);
                while let Some((member, external, at, amount)) = rows.try_next().await? {
                    folder.row(member, external, at, amount)?;
                }
            }
        }
        folder.flush();
        Ok(folder.out)
    }
}

/// A promotion's members over a window, for [`fidelis_core::analytics::experiment`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PromotionExposure {
    /// Each rewarded member's spend in the window (minor units; zero included).
    pub treated: Vec<i64>,
    /// Each held-out member's spend in the window.
    pub control: Vec<i64>,
    /// Journals it rewarded, and those it held out.
    pub applied_journals: u64,
    pub control_journals: u64,
    /// Points it awarded per currency (in the program's order; currencies it never
    /// awarded left out), and their cost at each currency's `value_per_point`.
    pub points: Vec<(String, i64)>,
    pub cost: i64,
}

/// The part of a stored outcome the report reads.
#[derive(serde::Deserialize)]
struct OutcomePromotions {
    #[serde(default)]
    promotions: Vec<fidelis_core::outcome::PromotionResult>,
}

const SQLITE_EXPOSURES: &str = "SELECT member_id, outcome FROM journals \
     WHERE program_id = ?1 AND status = 'processed' AND occurred_at >= ?2 AND occurred_at < ?3 AND outcome LIKE ?4";
const PG_EXPOSURES: &str = "SELECT member_id, outcome FROM journals \
     WHERE program_id = $1 AND status = 'processed' AND occurred_at >= $2 AND occurred_at < $3 AND outcome LIKE $4";
const SQLITE_SPEND: &str = "SELECT member_id, json_extract(document, '$.amount') FROM journals \
     WHERE program_id = ?1 AND type = 'purchase' AND status = 'processed' AND occurred_at >= ?2 AND occurred_at < ?3";
const PG_SPEND: &str = "SELECT member_id, (document::json) ->> 'amount' FROM journals \
     WHERE program_id = $1 AND type = 'purchase' AND status = 'processed' AND occurred_at >= $2 AND occurred_at < $3";

impl Store {
    /// Who the promotion rewarded and who it held out among the journals dated in
    /// [`from`, `to`), and what each of them spent on purchases in that window. The cost
    /// is the points the promotion awarded (refunds that took some back are not
    /// subtracted), valued at each currency's `value_per_point`.
    pub async fn promotion_exposure(
        &self,
        program: &LoadedProgram,
        promotion: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<PromotionExposure> {
        let p = &program.program;
        if !p.promotions.iter().any(|x| x.code.as_str() == promotion) {
            return Err(StoreError::Refused(
                "unknown_promotion",
                format!("no promotion {promotion:?} in this program"),
            ));
        }
        // Codes hold no `%`; `_` matches itself among others, and every match is checked
        // on the parsed outcome.
        let pattern = format!("%\"promotion\":\"{promotion}\"%");
        let (outcomes, purchases): (Vec<(i64, Option<String>)>, Vec<(i64, Option<String>)>) =
            match &self.reader().await {
                Db::Sqlite(pool) => {
                    let mut tx = pool.begin().await?;
                    let o = sqlx::query_as(SQLITE_EXPOSURES)
                        .bind(program.id)
                        .bind(micros(from))
                        .bind(micros(to))
                        .bind(&pattern)
                        .fetch_all(&mut *tx)
                        .await?;
                    let s = sqlx::query_as(SQLITE_SPEND)
                        .bind(program.id)
                        .bind(micros(from))
                        .bind(micros(to))
                        .fetch_all(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    (o, s)
                }
                Db::Postgres(pool) => {
                    let mut tx = pool.begin().await?;
                    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                        .execute(&mut *tx)
                        .await?;
                    let o = sqlx::query_as(PG_EXPOSURES)
                        .bind(program.id)
                        .bind(from)
                        .bind(to)
                        .bind(&pattern)
                        .fetch_all(&mut *tx)
                        .await?;
                    let s = sqlx::query_as(PG_SPEND)
                        .bind(program.id)
                        .bind(from)
                        .bind(to)
                        .fetch_all(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    (o, s)
                }
            };
        let mut out = PromotionExposure::default();
        // member → treated?
        let mut members: rustc_hash::FxHashMap<i64, bool> = Default::default();
        let mut points: Vec<i64> = vec![0; p.currencies.len()];
        for (member, outcome) in outcomes {
            let Some(text) = outcome else { continue };
            let parsed: OutcomePromotions = serde_json::from_str(&text)?;
            for r in parsed
                .promotions
                .iter()
                .filter(|r| r.promotion.as_str() == promotion)
            {
                match r.result.as_ref() {
                    "applied" => {
                        out.applied_journals += 1;
                        members.insert(member, true);
                        for award in &r.points {
                            if let Some(i) =
                                p.currencies.iter().position(|c| c.code == award.currency)
                            {
                                points[i] += award.points;
                            }
                        }
                    }
                    "control" => {
                        out.control_journals += 1;
                        members.entry(member).or_insert(false);
                    }
                    _ => {}
                }
            }
        }
        let mut spend: rustc_hash::FxHashMap<i64, i64> = Default::default();
        for (member, amount) in purchases {
            if !members.contains_key(&member) {
                continue;
            }
            let amount = amount.ok_or_else(|| {
                StoreError::Inconsistent(format!("a purchase of member {member} has no amount"))
            })?;
            let v = p.money_currency.parse_amount(&amount).map_err(|e| {
                StoreError::Inconsistent(format!("a purchase of member {member}: {e}"))
            })?;
            *spend.entry(member).or_default() += v.0;
        }
        let mut sorted: Vec<(i64, bool)> = members.into_iter().collect();
        sorted.sort_unstable();
        for (member, treated) in sorted {
            let s = spend.get(&member).copied().unwrap_or(0);
            if treated {
                out.treated.push(s);
            } else {
                out.control.push(s);
            }
        }
        for (c, n) in p.currencies.iter().zip(points) {
            if n != 0 {
                out.cost +=
                    fidelis_core::partners::money(n, c.value_per_point, p.money_currency.scale());
                out.points.push((c.code.to_string(), n));
            }
        }
        Ok(out)
    }
}
