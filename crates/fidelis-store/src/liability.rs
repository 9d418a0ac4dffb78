//! Points liability: what the points members hold would cost the operator, as of any
//! instant, and how much of it history says will never be claimed (breakage).
//!
//! Everything is summed in the database; no entry or bucket is loaded into the process.
//!
//! - **Outstanding** points of a redeemable currency as of `T` are the sum of the ledger's
//!   entries effective by `T` (available and pending alike: a point earned is owed). Times
//!   the currency's `value_per_point`, that is the liability. Points leave it when their
//!   expiry is recorded, by the jobs (`fidelis jobs run`, or `serve`'s schedule): read
//!   after the jobs ran, it equals what members' balances show (a property test checks
//!   this over random histories).
//! - **Per partner**: the points still in the buckets a partner's accruals credited (the
//!   entries of those buckets, effective by `T`). Points that moved since — a merge, a
//!   transfer, a household's share — count as the program's own from then on.
//! - **Expected breakage** is estimated from the program's own history, by monthly cohort
//!   of buckets (the month, UTC, in which points were credited): of the points that have
//!   left a cohort's buckets, the share that left by expiring rather than being spent,
//!   taken back or moved. The estimate pools the cohorts: expired ÷ (credited − still
//!   outstanding), over all of them, and is applied to the points outstanding now. It
//!   assumes members will treat today's points as they treated past ones, and it
//!   understates breakage while young cohorts have had no chance to expire; with fewer
//!   than [`MIN_RESOLVED`] points resolved it is not given.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::dialect::At;
use crate::engine::LoadedProgram;
use crate::error::Result;
use crate::{Db, Store};

/// Per monthly cohort of buckets (credited points, as of now): credited, expired (the
/// expire entries of its buckets) and still outstanding. `$month` is the dialect's month
/// of `b.credited_at` (grouped on), `$label` its `YYYY-MM` text from column `m`.
macro_rules! cohort_sql {
    ($month:literal, $label:literal) => {
        concat!(
            "SELECT ", $label, ", currency, credited, expired, remaining FROM (",
            "SELECT ", $month, " AS m, b.currency AS currency, CAST(SUM(b.credited) AS BIGINT) AS credited, ",
            "CAST(COALESCE(SUM(x.expired), 0) AS BIGINT) AS expired, CAST(SUM(b.remaining) AS BIGINT) AS remaining ",
            "FROM buckets b LEFT JOIN (",
            "SELECT member_id, bucket_journal_id, bucket_seq, -SUM(amount) AS expired FROM entries ",
            "WHERE program_id = $1 AND kind = 'expire' GROUP BY member_id, bucket_journal_id, bucket_seq",
            ") x ON x.member_id = b.member_id AND x.bucket_journal_id = b.journal_id AND x.bucket_seq = b.seq ",
            "WHERE b.program_id = $1 GROUP BY 1, 2) c ORDER BY 1, 2"
        )
    };
}

/// Each month's net movement per currency up to `$2`. `$month` is the dialect's month of
/// `effective_at` (grouped on: a hash of a few dozen groups, no sort of the ledger),
/// `$label` its `YYYY-MM` text from column `m`.
macro_rules! months_sql {
    ($month:literal, $label:literal) => {
        concat!(
            "SELECT ",
            $label,
            ", currency, total FROM (",
            "SELECT ",
            $month,
            " AS m, currency, CAST(SUM(amount) AS BIGINT) AS total FROM entries ",
            "WHERE program_id = $1 AND effective_at <= $2 GROUP BY 1, 2) t ORDER BY 1, 2"
        )
    };
}

/// The fewest points that must have left buckets before breakage is estimated.
pub const MIN_RESOLVED: i64 = 1_000;

/// One redeemable currency's liability.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrencyLiability {
    pub currency: String,
    /// The currency's `value_per_point`.
    pub value_per_point: Decimal,
    pub outstanding: i64,
    /// `outstanding × value_per_point`, minor units of the money currency.
    pub value: i64,
    /// The share of outstanding points expected to expire (0 to 1), if history allows.
    pub breakage_rate: Option<f64>,
    pub expected_breakage: Option<i64>,
    /// `value` less the value of the expected breakage.
    pub net_value: Option<i64>,
}

/// A partner's share of the liability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerLiability {
    pub partner: String,
    pub currency: String,
    pub outstanding: i64,
    pub value: i64,
}

/// One monthly cohort of credited points, as of now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cohort {
    /// `YYYY-MM` (UTC).
    pub month: String,
    pub currency: String,
    pub credited: i64,
    pub expired: i64,
    pub outstanding: i64,
}

/// Outstanding points at a month's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiabilityPoint {
    /// `YYYY-MM` (UTC): the balance at the end of it.
    pub month: String,
    pub currency: String,
    pub outstanding: i64,
    pub value: i64,
}

/// The liability report.
#[derive(Debug, Clone, PartialEq)]
pub struct Liability {
    pub as_of: DateTime<Utc>,
    pub money_currency: String,
    pub currencies: Vec<CurrencyLiability>,
    pub partners: Vec<PartnerLiability>,
    pub cohorts: Vec<Cohort>,
    /// Month-end outstanding points up to `as_of`, oldest first.
    pub history: Vec<LiabilityPoint>,
}

/// `points × value_per_point` in minor units, half away from zero.
fn value(points: i64, per_point: Decimal, scale: u8) -> i64 {
    fidelis_core::partners::money(points, per_point, scale)
}

impl Store {
    /// The program's points liability as of `as_of`.
    pub async fn liability(
        &self,
        program: &LoadedProgram,
        as_of: DateTime<Utc>,
    ) -> Result<Liability> {
        let p = &program.program;
        let redeemable: Vec<String> = p
            .currencies
            .iter()
            .filter(|c| c.kind == fidelis_core::program::CurrencyKind::Redeemable)
            .map(|c| c.code.to_string())
            .collect();
        let per_point = |code: &str| {
            p.currencies
                .iter()
                .find(|c| c.code.as_str() == code)
                .map_or(Decimal::ZERO, |c| c.value_per_point)
        };
        // One snapshot for all the sums, so they agree with each other however the ledger
        // moves meanwhile. On PostgreSQL the report may use more memory per sort or hash
        // than a request (`work_mem`), so its joins and groupings stay in memory.
        let (partners, cohorts, months): (
            Vec<(String, String, i64)>,
            Vec<(String, String, i64, i64, i64)>,
            Vec<(String, String, i64)>,
        ) = match &self.reader().await {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let r = (
                    sqlx::query_as(PARTNER_SQL)
                        .bind(program.id)
                        .bind(At(as_of))
                        .fetch_all(&mut *tx)
                        .await?,
                    sqlx::query_as(cohort_sql!(
                        "strftime('%Y-%m', b.credited_at / 1000000, 'unixepoch')",
                        "m"
                    ))
                    .bind(program.id)
                    .fetch_all(&mut *tx)
                    .await?,
                    sqlx::query_as(months_sql!(
                        "strftime('%Y-%m', effective_at / 1000000, 'unixepoch')",
                        "m"
                    ))
                    .bind(program.id)
                    .bind(At(as_of))
                    .fetch_all(&mut *tx)
                    .await?,
                );
                tx.commit().await?;
                r
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("SET LOCAL work_mem = '64MB'")
                    .execute(&mut *tx)
                    .await?;
                let r = (
                    sqlx::query_as(PARTNER_SQL)
                        .bind(program.id)
                        .bind(as_of)
                        .fetch_all(&mut *tx)
                        .await?,
                    sqlx::query_as(cohort_sql!(
                        "date_trunc('month', b.credited_at AT TIME ZONE 'UTC')",
                        "to_char(m, 'YYYY-MM')"
                    ))
                    .bind(program.id)
                    .fetch_all(&mut *tx)
                    .await?,
                    sqlx::query_as(months_sql!(
                        "date_trunc('month', effective_at AT TIME ZONE 'UTC')",
                        "to_char(m, 'YYYY-MM')"
                    ))
                    .bind(program.id)
                    .bind(as_of)
                    .fetch_all(&mut *tx)
                    .await?,
                );
                tx.commit().await?;
                r
            }
        };
        // What is outstanding as of `as_of`: every movement up to it.
        let totals: Vec<(String, i64)> = redeemable
            .iter()
            .map(|code| {
                let sum = months
                    .iter()
                    .filter(|(_, c, _)| c == code)
                    .map(|(.., s)| s)
                    .sum();
                (code.clone(), sum)
            })
            .collect();
        let scale = p.money_currency.scale();
        let cohorts: Vec<Cohort> = cohorts
            .into_iter()
            .filter(|(_, c, ..)| redeemable.contains(c))
            .map(|(month, currency, credited, expired, outstanding)| Cohort {
                month,
                currency,
                credited,
                expired,
                outstanding,
            })
            .collect();
        let currencies = redeemable
            .iter()
            .map(|code| {
                let outstanding = totals
                    .iter()
                    .find(|(c, _)| c == code)
                    .map_or(0, |(_, s)| *s);
                let (expired, resolved) = cohorts
                    .iter()
                    .filter(|c| &c.currency == code)
                    .fold((0i64, 0i64), |(x, r), c| {
                        (x + c.expired, r + (c.credited - c.outstanding))
                    });
                let rate = (resolved >= MIN_RESOLVED)
                    .then(|| (expired as f64 / resolved as f64).clamp(0.0, 1.0));
                let rate_of = per_point(code);
                let value = value(outstanding, rate_of, scale);
                let expected = rate.map(|r| (outstanding.max(0) as f64 * r).round() as i64);
                CurrencyLiability {
                    currency: code.clone(),
                    value_per_point: rate_of,
                    outstanding,
                    value,
                    breakage_rate: rate,
                    expected_breakage: expected,
                    net_value: expected.map(|b| value - self::value(b, rate_of, scale)),
                }
            })
            .collect();
        let partners = partners
            .into_iter()
            .filter(|(_, c, _)| redeemable.contains(c))
            .map(|(partner, currency, outstanding)| PartnerLiability {
                value: value(outstanding, per_point(&currency), scale),
                partner,
                currency,
                outstanding,
            })
            .collect();
        // Month-end balances: the running sum of each month's movements.
        let mut history = Vec::new();
        for code in &redeemable {
            let mut running = 0i64;
            for (month, _, sum) in months.iter().filter(|(_, c, _)| c == code) {
                running += sum;
                history.push(LiabilityPoint {
                    month: month.clone(),
                    currency: code.clone(),
                    outstanding: running,
                    value: value(running, per_point(code), scale),
                });
            }
        }
        Ok(Liability {
            as_of,
            money_currency: p.money_currency.code().to_owned(),
            currencies,
            partners,
            cohorts,
            history,
        })
    }
}

/// Outstanding points per partner as of `$2`: the entries of the buckets its accruals
/// credited.
const PARTNER_SQL: &str = "SELECT p.code, e.currency, CAST(SUM(e.amount) AS BIGINT) \
     FROM partner_entries pe \
     JOIN partners p ON p.id = pe.partner_id \
     JOIN entries e ON e.bucket_journal_id = pe.journal_id \
     WHERE pe.program_id = $1 AND pe.kind = 'accrual' AND e.program_id = $1 AND e.effective_at <= $2 \
     GROUP BY p.code, e.currency ORDER BY p.code, e.currency";
