//! Pay with points: holds read back, and the holds that expired released by the jobs.
//!
//! A hold, its capture and its release are journals (`hold:ORDER`, `capture:ORDER`,
//! `release:ORDER`; see `fidelis_core::process` and its `holds` module), posted like any
//! other through [`Store::post_realtime`], so they share the ledger's locks, idempotency
//! and group commit. What this module adds is reading: `journals.hold_until` is set while a
//! hold is open (written in the hold's transaction, cleared in its capture's or release's),
//! so open holds are found through a partial index that holds only them.

use chrono::{DateTime, Utc};
use fidelis_core::journal::{HOLD_PREFIX, Journal, JournalDocument, RELEASE_PREFIX};
use fidelis_core::process::{HoldEnd, JournalState};

use crate::engine::LoadedProgram;
use crate::error::{Result, StoreError};
use crate::sqlite::{instant, micros};
use crate::{Db, Prepared, Store};

/// Expired holds released per transaction by the jobs.
const ROUND: i64 = 500;

/// A hold as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldView {
    pub order: String,
    pub member: String,
    pub currency: String,
    pub points: i64,
    /// `held`, `expired` (past its end, not released yet), `captured` or `released`.
    pub status: &'static str,
    pub placed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub partner: Option<String>,
}

/// A hold's journal: the member's external id, the canonical document, the state.
type HoldRow = (String, Option<String>, Option<String>, DateTime<Utc>);

impl Store {
    /// The hold of `order`, if there is one, as of `now`.
    pub async fn hold(
        &self,
        program: &LoadedProgram,
        order: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<HoldView>> {
        let external_id = format!("{HOLD_PREFIX}{order}");
        let row: Option<HoldRow> =
            match &self.db {
                Db::Sqlite(pool) => {
                    let row: Option<(String, Option<String>, Option<String>, i64)> = sqlx::query_as(
                    "SELECT m.external_id, j.document, j.state, j.occurred_at FROM journals j \
                     JOIN members m ON m.id = j.member_id \
                     WHERE j.program_id = ?1 AND j.external_id = ?2 AND j.kind = 'hold'",
                )
                .bind(program.id)
                .bind(&external_id)
                .fetch_optional(pool)
                .await?;
                    match row {
                        Some((m, d, s, at)) => Some((m, d, s, instant(at)?)),
                        None => None,
                    }
                }
                Db::Postgres(pool) => sqlx::query_as(
                    "SELECT m.external_id, j.document, j.state, j.occurred_at FROM journal_keys k \
                     JOIN journals j ON j.member_id = k.member_id AND j.id = k.journal_id \
                     JOIN members m ON m.id = j.member_id \
                     WHERE k.program_id = $1 AND k.external_id = $2 AND j.kind = 'hold'",
                )
                .bind(program.id)
                .bind(&external_id)
                .fetch_optional(pool)
                .await?,
            };
        row.map(|row| hold_view(order, row, now)).transpose()
    }

    /// Points held per currency for a member's open holds (the member's row id).
    pub async fn held_points(&self, member_id: i64) -> Result<Vec<(String, i64)>> {
        let documents: Vec<Option<String>> =
            match &self.db {
                Db::Sqlite(pool) => sqlx::query_scalar(
                    "SELECT document FROM journals WHERE member_id = ?1 AND hold_until IS NOT NULL",
                )
                .bind(member_id)
                .fetch_all(pool)
                .await?,
                Db::Postgres(pool) => sqlx::query_scalar(
                    "SELECT document FROM journals WHERE member_id = $1 AND hold_until IS NOT NULL",
                )
                .bind(member_id)
                .fetch_all(pool)
                .await?,
            };
        let mut held: Vec<(String, i64)> = Vec::new();
        for document in documents.into_iter().flatten() {
            let doc: JournalDocument = serde_json::from_str(&document)?;
            let (Some(currency), Some(points)) = (doc.currency, doc.points) else {
                continue;
            };
            match held.iter_mut().find(|(c, _)| *c == currency) {
                Some((_, p)) => *p += points,
                None => held.push((currency, points)),
            }
        }
        held.sort();
        Ok(held)
    }

    /// Releases the program's holds whose end passed by `as_of`, as `release:ORDER`
    /// journals (so a release racing with the client's own, or a job run twice, releases
    /// once). Returns how many were released.
    pub async fn release_expired_holds(
        &self,
        program: &LoadedProgram,
        as_of: DateTime<Utc>,
    ) -> Result<u64> {
        let mut released = 0;
        // Holds a round could not release (a member closed meanwhile) are skipped by the
        // next rounds.
        let mut skip = 0;
        loop {
            let due: Vec<(String, String)> = match &self.db {
                Db::Sqlite(pool) => {
                    sqlx::query_as(
                        "SELECT m.external_id, j.external_id FROM journals j JOIN members m ON m.id = j.member_id \
                         WHERE j.hold_until IS NOT NULL AND j.hold_until <= ?1 AND j.program_id = ?2 \
                         ORDER BY j.hold_until, j.id LIMIT ?3 OFFSET ?4",
                    )
                    .bind(micros(as_of))
                    .bind(program.id)
                    .bind(ROUND)
                    .bind(skip)
                    .fetch_all(pool)
                    .await?
                }
                Db::Postgres(pool) => {
                    sqlx::query_as(
                        "SELECT m.external_id, j.external_id FROM journals j JOIN members m ON m.id = j.member_id \
                         WHERE j.hold_until IS NOT NULL AND j.hold_until <= $1 AND j.program_id = $2 \
                         ORDER BY j.hold_until, j.id LIMIT $3 OFFSET $4",
                    )
                    .bind(as_of)
                    .bind(program.id)
                    .bind(ROUND)
                    .bind(skip)
                    .fetch_all(pool)
                    .await?
                }
            };
            if due.is_empty() {
                return Ok(released);
            }
            let mut batch = Vec::with_capacity(due.len());
            for (member, hold) in &due {
                let order = hold.strip_prefix(HOLD_PREFIX).unwrap_or(hold);
                let doc = JournalDocument {
                    external_id: Some(format!("{RELEASE_PREFIX}{order}")),
                    member: Some(member.clone()),
                    kind: Some("release".into()),
                    occurred_at: Some(as_of.to_rfc3339()),
                    ..JournalDocument::default()
                };
                let journal = Journal::parse(&doc, &program.program).map_err(|e| {
                    StoreError::Inconsistent(format!("the release of hold {hold:?}: {e}"))
                })?;
                batch.push(Prepared::new(journal, &program.program)?);
            }
            let results = self.post_journals(program, &batch, as_of, None).await?;
            let done = results
                .iter()
                .filter(|r| matches!(r, Ok(p) if !p.replayed))
                .count();
            released += done as u64;
            skip += i64::try_from(results.len() - done).unwrap_or(0);
        }
    }
}

fn hold_view(order: &str, row: HoldRow, now: DateTime<Utc>) -> Result<HoldView> {
    let (member, document, state, placed_at) = row;
    let doc: JournalDocument = serde_json::from_str(document.as_deref().unwrap_or("{}"))?;
    let state: JournalState = serde_json::from_str(state.as_deref().unwrap_or("{}"))
        .map_err(|e| StoreError::Inconsistent(format!("hold {order:?} has no state: {e}")))?;
    let JournalState::Hold(hold) = state else {
        return Err(StoreError::Inconsistent(format!(
            "hold {order:?} has no hold state"
        )));
    };
    let status = match hold.ended {
        Some(HoldEnd::Captured) => "captured",
        Some(HoldEnd::Released) => "released",
        None if now >= hold.until => "expired",
        None => "held",
    };
    Ok(HoldView {
        order: order.to_owned(),
        member,
        currency: doc.currency.unwrap_or_default(),
        points: doc.points.unwrap_or_default(),
        status,
        placed_at,
        expires_at: hold.until,
        partner: doc.partner,
    })
}
