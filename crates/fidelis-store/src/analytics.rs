//! The program's purchase history, read for the models of [`fidelis_core::analytics`]: every
//! processed purchase of every member, streamed in member order and summarised member by
//! member, so memory follows the number of members, not of journals.
//!
//! A purchase's spend is the journal's own `amount` (its canonical document), in minor units
//! of the program's money currency; refunds do not lower it and cancelled purchases do not
//! count. Days are the program's time zone's.

use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};
use fidelis_core::analytics::history::{self, Summary};
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
        self.out.purchases += 1;
        Ok(())
    }

    fn flush(&mut self) {
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
        let mut folder = Folder {
            program,
            end,
            unit_days,
            current: None,
            purchases: Vec::new(),
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
