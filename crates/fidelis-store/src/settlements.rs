//! Settlement statements: for a partner and a period, what its ledger says each side owes.
//!
//! A statement sums the partner's entries in the database (`GROUP BY kind`, through the
//! `(partner_id, effective_at)` index: no entry is loaded into the process). Its period
//! lines are the entries dated inside it; its adjustments are entries dated before it that
//! no closed statement covered (a journal dated inside a closed period but written after
//! the close).
//!
//! **Closing** a period freezes its statement: under the partner's lock (every entry of a
//! partner is written under it, so ids below the highest one read are all committed) the
//! statement records the highest entry id it covers and is stored as it is. From then on
//! the closed statement is answered as stored, and an entry dated inside it that comes
//! later lands in the adjustments of the next one. Periods close in order: each starts
//! where the last closed one ended, and only once it is over.

use chrono::{DateTime, Utc};
use fidelis_core::partners::EntryKind;
use serde::{Deserialize, Serialize};

use crate::Store;
use crate::access::Actor;
use crate::dialect::{At, in_write_tx, with_pool};
use crate::engine::LoadedProgram;
use crate::error::{Result, StoreError};
use crate::partners::unknown_partner;

/// One kind of entry in a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLine {
    /// `top_up`, `accrual`, `accrual_reversal`, `redemption` or `redemption_reversal`.
    pub kind: String,
    pub entries: i64,
    pub points: i64,
    pub pack: i64,
    /// Minor units: positive owed by the partner, negative owed to it.
    pub amount: i64,
}

/// What a statement adds up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatementTotals {
    pub points_issued: i64,
    pub points_redeemed: i64,
    pub points_bought: i64,
    /// Money the partner owes (packs bought, accruals billed), minor units.
    pub owed_by_partner: i64,
    /// Money owed to the partner (reimbursements), minor units.
    pub owed_to_partner: i64,
    /// `owed_by_partner - owed_to_partner`: positive, the partner pays.
    pub net: i64,
}

/// A partner's statement for a period, open (computed now) or closed (as stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub partner: String,
    pub currency: String,
    pub money_currency: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// `open` or `closed`.
    pub status: String,
    pub closed_at: Option<DateTime<Utc>>,
    /// Entries dated inside the period.
    pub lines: Vec<StatementLine>,
    /// Entries dated before it that no closed statement covered.
    pub adjustments: Vec<StatementLine>,
    pub totals: StatementTotals,
}

impl Statement {
    /// The statement as CSV: one row per line (`period` or `adjustment`), then the totals.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("section,kind,entries,points,pack,amount\n");
        for (section, lines) in [("period", &self.lines), ("adjustment", &self.adjustments)] {
            for l in lines {
                out.push_str(&format!(
                    "{section},{},{},{},{},{}\n",
                    l.kind, l.entries, l.points, l.pack, l.amount
                ));
            }
        }
        let t = &self.totals;
        for (name, value) in [
            ("points_issued", t.points_issued),
            ("points_redeemed", t.points_redeemed),
            ("points_bought", t.points_bought),
            ("owed_by_partner", t.owed_by_partner),
            ("owed_to_partner", t.owed_to_partner),
            ("net", t.net),
        ] {
            out.push_str(&format!("total,{name},,,,{value}\n"));
        }
        out
    }
}

fn totals(lines: &[&StatementLine]) -> StatementTotals {
    let mut t = StatementTotals::default();
    for l in lines {
        match EntryKind::parse(&l.kind) {
            Some(EntryKind::TopUp) => {
                t.points_bought += l.points;
                t.owed_by_partner += l.amount;
            }
            Some(EntryKind::Accrual | EntryKind::AccrualReversal) => {
                t.points_issued += l.points;
                t.owed_by_partner += l.amount;
            }
            Some(EntryKind::Redemption | EntryKind::RedemptionReversal) => {
                t.points_redeemed += l.points;
                t.owed_to_partner -= l.amount;
            }
            None => {}
        }
    }
    t.net = t.owed_by_partner - t.owed_to_partner;
    t
}

/// The last closed statement of a partner: (period end, highest entry id covered).
type LastClosed = Option<(At, i64)>;

/// A statement's line rows: kind, count, points, pack, amount.
type LineRow = (String, i64, i64, i64, i64);

fn lines(rows: Vec<LineRow>) -> Vec<StatementLine> {
    rows.into_iter()
        .map(|(kind, entries, points, pack, amount)| StatementLine {
            kind,
            entries,
            points,
            pack,
            amount,
        })
        .collect()
}

/// Sums the partner's entries on `$conn` into a statement for [`$from`, `$to`): entries
/// dated inside it, and adjustments dated before it with an id above `$after` (the last
/// closed statement's); both only up to the id `$through`.
macro_rules! sum_statement {
    ($conn:expr, $partner_id:expr, $from:expr, $to:expr, $after:expr, $through:expr) => {{
        let period: Vec<LineRow> = sqlx::query_as(
            "SELECT kind, COUNT(*), CAST(SUM(points) AS BIGINT), CAST(SUM(pack) AS BIGINT), \
             CAST(SUM(amount) AS BIGINT) FROM partner_entries \
             WHERE partner_id = $1 AND effective_at >= $2 AND effective_at < $3 AND id <= $4 \
             GROUP BY kind ORDER BY kind",
        )
        .bind($partner_id)
        .bind(At($from))
        .bind(At($to))
        .bind($through)
        .fetch_all(&mut *$conn)
        .await?;
        let adjustments: Vec<LineRow> = sqlx::query_as(
            "SELECT kind, COUNT(*), CAST(SUM(points) AS BIGINT), CAST(SUM(pack) AS BIGINT), \
             CAST(SUM(amount) AS BIGINT) FROM partner_entries \
             WHERE partner_id = $1 AND effective_at < $2 AND id > $3 AND id <= $4 \
             GROUP BY kind ORDER BY kind",
        )
        .bind($partner_id)
        .bind(At($from))
        .bind($after)
        .bind($through)
        .fetch_all(&mut *$conn)
        .await?;
        (lines(period), lines(adjustments))
    }};
}

impl Store {
    /// The statement of `partner` for [`from`, `to`): the closed one, as stored, when that
    /// period was closed; otherwise computed now (`open`), with the adjustments when the
    /// period starts where the last closed one ended (or before any was closed).
    pub async fn settlement(
        &self,
        program: &LoadedProgram,
        partner: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Statement> {
        period_ok(from, to)?;
        let view = self
            .partner(program, partner)
            .await?
            .ok_or_else(|| unknown_partner(partner))?;
        with_pool!(self, |pool| {
            let mut conn = pool.acquire().await?;
            let (partner_id,): (i64,) =
                sqlx::query_as("SELECT id FROM partners WHERE program_id = $1 AND code = $2")
                    .bind(program.id)
                    .bind(partner)
                    .fetch_one(&mut *conn)
                    .await?;
            let closed: Option<String> = sqlx::query_scalar(
                "SELECT statement FROM settlements WHERE partner_id = $1 AND period_from = $2 AND period_to = $3",
            )
            .bind(partner_id)
            .bind(At(from))
            .bind(At(to))
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(s) = closed {
                return Ok(serde_json::from_str(&s)?);
            }
            let last: LastClosed = sqlx::query_as(
                "SELECT period_to, through_entry_id FROM settlements WHERE partner_id = $1 \
                 ORDER BY period_to DESC LIMIT 1",
            )
            .bind(partner_id)
            .fetch_optional(&mut *conn)
            .await?;
            // Adjustments belong to the statement that follows the last closed one.
            let after = match last {
                Some((end, through)) if end.0 == from => through,
                None => 0,
                Some(_) => i64::MAX,
            };
            let (period, adjustments) = sum_statement!(conn, partner_id, from, to, after, i64::MAX);
            Ok::<_, StoreError>(statement(
                program,
                &view.partner,
                (from, to),
                None,
                period,
                adjustments,
            ))
        })
    }

    /// Closes the period [`from`, `to`) of `partner`: its statement is stored and never
    /// changes again. The period must be over and start where the last closed one ended;
    /// closing it again answers the statement closed (`true`: a retry). Audited.
    pub async fn close_settlement(
        &self,
        program: &LoadedProgram,
        partner: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<(Statement, bool)> {
        period_ok(from, to)?;
        if to > now {
            return Err(StoreError::Refused(
                "period_not_over",
                format!("the period ends at {to}; it can be closed once it is over"),
            ));
        }
        in_write_tx!(self, |tx, pg| {
            async {
                let row = if pg {
                    crate::partners::lock_partner!(tx, program.id, partner, " FOR UPDATE")
                } else {
                    crate::partners::lock_partner!(tx, program.id, partner, "")
                };
                let Some((partner_id, _, document, _)) = row else {
                    return Err(unknown_partner(partner));
                };
                let definition = crate::partners::parse_partner(&document)?;
                let existing: Option<(At, At, String)> = sqlx::query_as(
                    "SELECT period_from, period_to, statement FROM settlements \
                     WHERE partner_id = $1 AND (period_from = $2 OR period_to = $3)",
                )
                .bind(partner_id)
                .bind(At(from))
                .bind(At(to))
                .fetch_optional(&mut *tx)
                .await?;
                if let Some((f, t, s)) = existing {
                    if f.0 == from && t.0 == to {
                        return Ok((serde_json::from_str(&s)?, true));
                    }
                    return Err(StoreError::Refused(
                        "period_overlaps",
                        format!("a closed statement covers {} to {}", f.0, t.0),
                    ));
                }
                let last: LastClosed = sqlx::query_as(
                    "SELECT period_to, through_entry_id FROM settlements WHERE partner_id = $1 \
                     ORDER BY period_to DESC LIMIT 1",
                )
                .bind(partner_id)
                .fetch_optional(&mut *tx)
                .await?;
                let after = match last {
                    Some((end, through)) if end.0 == from => through,
                    Some((end, _)) => {
                        return Err(StoreError::Refused(
                            "period_not_next",
                            format!(
                                "the last closed statement ends at {}: the next starts there",
                                end.0
                            ),
                        ));
                    }
                    None => 0,
                };
                let through: i64 = sqlx::query_scalar(
                    "SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) FROM partner_entries WHERE partner_id = $1",
                )
                .bind(partner_id)
                .fetch_one(&mut *tx)
                .await?;
                let (period, adjustments) = sum_statement!(tx, partner_id, from, to, after, through);
                let closed = statement(
                    program,
                    &definition,
                    (from, to),
                    Some(now),
                    period,
                    adjustments,
                );
                sqlx::query(
                    "INSERT INTO settlements (program_id, partner_id, period_from, period_to, \
                     through_entry_id, closed_at, actor, statement) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(program.id)
                .bind(partner_id)
                .bind(At(from))
                .bind(At(to))
                .bind(through)
                .bind(At(now))
                .bind(&actor.name)
                .bind(serde_json::to_string(&closed)?)
                .execute(&mut *tx)
                .await?;
                let mut audit = actor.entry(
                    now,
                    "settlement.close",
                    Some(program.program.code.as_str()),
                    Some(partner),
                );
                audit.after = Some(serde_json::json!({"from": from, "to": to, "totals": closed.totals}));
                crate::access::insert_audit!(tx, &audit);
                Ok::<_, StoreError>((closed, false))
            }
            .await
        })
    }
}

fn statement(
    program: &LoadedProgram,
    partner: &fidelis_core::partners::Partner,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    closed_at: Option<DateTime<Utc>>,
    lines: Vec<StatementLine>,
    adjustments: Vec<StatementLine>,
) -> Statement {
    let all: Vec<&StatementLine> = lines.iter().chain(&adjustments).collect();
    Statement {
        partner: partner.code.clone(),
        currency: partner.currency.clone(),
        money_currency: program.program.money_currency.code().to_owned(),
        from,
        to,
        status: if closed_at.is_some() {
            "closed"
        } else {
            "open"
        }
        .to_owned(),
        closed_at,
        totals: totals(&all),
        lines,
        adjustments,
    }
}

fn period_ok(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<()> {
    if to <= from {
        return Err(StoreError::Refused(
            "invalid_period",
            format!("the period ends ({to}) before it starts ({from})"),
        ));
    }
    Ok(())
}
