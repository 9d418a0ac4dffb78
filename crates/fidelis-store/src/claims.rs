//! Missing-points claims: a member (in the portal) or an agent files a claim for a
//! transaction that earned nothing — its reference, date, amount and partner — and an
//! agent approves or rejects it.
//!
//! Approving is a small saga over the ledger, like an order: the claim becomes
//! `approving` (so a rejection cannot slip in), the transaction is posted through
//! [`Store::post_realtime`] as the journal named by the claim's reference (so it is
//! processed once, however many approvals race or retry: the same external id with the
//! same document is a replay), then the claim becomes `approved`. A claim left
//! `approving` by a crash is finished by the next approval. A claim for a reference the
//! program already processed is refused when filed (`claim_already_processed`, naming the
//! journal). Every decision is audited and written as a `claim.decided` event.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use fidelis_core::journal::{Journal, JournalDocument, JournalError};
use fidelis_core::money::MinorUnits;

use crate::Store;
use crate::access::Actor;
use crate::dialect::{At, in_write_tx, with_pool};
use crate::engine::{LoadedProgram, Prepared};
use crate::error::{Result, StoreError};

/// The longest reference, partner and note accepted.
pub const MAX_REFERENCE_LEN: usize = 128;
pub const MAX_NOTE_LEN: usize = 1_000;

/// A claim as filed.
#[derive(Debug, Clone)]
pub struct NewClaim {
    /// The member's external id.
    pub member: String,
    /// The transaction's id (a receipt number): the journal's external id once approved.
    pub reference: String,
    pub occurred_at: DateTime<Utc>,
    pub amount: MinorUnits,
    pub partner: Option<String>,
    pub note: Option<String>,
}

/// A claim and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimView {
    pub claim_id: String,
    pub member: String,
    pub reference: String,
    pub occurred_at: DateTime<Utc>,
    pub amount: i64,
    pub partner: Option<String>,
    pub note: Option<String>,
    /// `open`, `approving` (for a moment), `approved` or `rejected`.
    pub status: String,
    /// Why it was rejected.
    pub reason: Option<String>,
    pub filed_by: String,
    pub filed_at: DateTime<Utc>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
}

type ClaimRow = (
    String,
    String,
    String,
    At,
    i64,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    String,
    At,
    Option<String>,
    Option<At>,
);

const CLAIM_COLUMNS: &str = "c.claim_id, m.external_id, c.reference, c.occurred_at, c.amount, \
     c.partner, c.note, c.status, c.reason, c.filed_by, c.filed_at, c.decided_by, c.decided_at";

fn view(r: ClaimRow) -> ClaimView {
    ClaimView {
        claim_id: r.0,
        member: r.1,
        reference: r.2,
        occurred_at: r.3.0,
        amount: r.4,
        partner: r.5,
        note: r.6,
        status: r.7,
        reason: r.8,
        filed_by: r.9,
        filed_at: r.10.0,
        decided_by: r.11,
        decided_at: r.12.map(|a| a.0),
    }
}

fn text_ok(s: &str, max: usize) -> bool {
    !s.trim().is_empty() && s.chars().count() <= max && !s.chars().any(char::is_control)
}

fn invalid(detail: &str) -> StoreError {
    StoreError::Refused("invalid_claim", detail.to_owned())
}

fn unknown(claim_id: &str) -> StoreError {
    StoreError::Refused(
        "unknown_claim",
        format!(
            "no claim {:?} in this program",
            claim_id.chars().take(64).collect::<String>()
        ),
    )
}

/// A new claim id: `CL-` and ten characters without look-alikes.
fn claim_id() -> String {
    format!("CL-{}", crate::members::referral_code())
}

impl Store {
    /// Files a claim. Refused when the reference was processed already
    /// (`claim_already_processed`), claimed already by the member (`claim_exists`), or
    /// malformed (`invalid_claim`). Audited.
    pub async fn file_claim(
        &self,
        program: &LoadedProgram,
        claim: &NewClaim,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<ClaimView> {
        if !text_ok(&claim.reference, MAX_REFERENCE_LEN) {
            return Err(invalid(&format!(
                "reference must be 1 to {MAX_REFERENCE_LEN} characters, no control characters"
            )));
        }
        if claim.amount.0 <= 0 {
            return Err(invalid("amount must be above zero"));
        }
        if claim.occurred_at > now {
            return Err(invalid("occurred_at must not be in the future"));
        }
        if claim
            .partner
            .as_deref()
            .is_some_and(|p| !text_ok(p, MAX_REFERENCE_LEN))
        {
            return Err(invalid("partner must be 1 to 128 characters"));
        }
        if claim.note.as_deref().is_some_and(|n| {
            n.chars().count() > MAX_NOTE_LEN || n.chars().any(|c| c.is_control() && c != '\n')
        }) {
            return Err(invalid(&format!(
                "note must be at most {MAX_NOTE_LEN} characters"
            )));
        }
        let member = self.require_member(program, &claim.member).await?;
        let id = claim_id();
        in_write_tx!(self, |tx, pg| {
            async {
                // PostgreSQL finds journals by external id through their keys (see
                // migrations/postgres/0031_distribution.sql).
                let processed: Option<(String, At)> = sqlx::query_as(if pg {
                    "SELECT j.status, j.recorded_at FROM journal_keys k \
                     JOIN journals j ON j.member_id = k.member_id AND j.id = k.journal_id \
                     WHERE k.program_id = $1 AND k.external_id = $2"
                } else {
                    "SELECT j.status, j.recorded_at FROM journals j WHERE j.program_id = $1 AND j.external_id = $2"
                })
                .bind(program.id)
                .bind(&claim.reference)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some((_, at)) = processed {
                    return Err(StoreError::Refused(
                        "claim_already_processed",
                        format!(
                            "the transaction {:?} was processed at {}: journal {:?}",
                            claim.reference, at.0, claim.reference
                        ),
                    ));
                }
                // PostgreSQL keeps the claim id unique through its key (a key row is
                // written only for a claim inserted).
                let inserted = sqlx::query(if pg {
                    "WITH c AS (INSERT INTO claims (program_id, claim_id, member_id, reference, occurred_at, amount, \
                                                    partner, note, status, filed_by, filed_at) \
                                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'open', $9, $10) \
                                ON CONFLICT (program_id, member_id, reference) DO NOTHING RETURNING member_id, id) \
                     INSERT INTO claim_keys (program_id, claim_id, member_id, id) SELECT $1, $2, member_id, id FROM c"
                } else {
                    "INSERT INTO claims (program_id, claim_id, member_id, reference, occurred_at, amount, \
                     partner, note, status, filed_by, filed_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'open', $9, $10) \
                     ON CONFLICT (program_id, member_id, reference) DO NOTHING"
                })
                .bind(program.id)
                .bind(&id)
                .bind(member.id)
                .bind(&claim.reference)
                .bind(At(claim.occurred_at))
                .bind(claim.amount.0)
                .bind(&claim.partner)
                .bind(&claim.note)
                .bind(&actor.name)
                .bind(At(now))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    return Err(StoreError::Refused(
                        "claim_exists",
                        format!("{} claimed {:?} already", claim.member, claim.reference),
                    ));
                }
                let mut audit = actor.entry(
                    now,
                    "claim.file",
                    Some(program.program.code.as_str()),
                    Some(&claim.member),
                );
                audit.after = Some(serde_json::json!({"claim": id, "reference": claim.reference,
                    "amount": claim.amount.0, "partner": claim.partner}));
                crate::access::insert_audit!(tx, &audit);
                Ok::<_, StoreError>(())
            }
            .await
        })?;
        self.claim(program, &id)
            .await?
            .ok_or_else(|| StoreError::Inconsistent(format!("claim {id} vanished")))
    }

    /// A claim of the program.
    pub async fn claim(
        &self,
        program: &LoadedProgram,
        claim_id: &str,
    ) -> Result<Option<ClaimView>> {
        let row: Option<ClaimRow> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {CLAIM_COLUMNS} FROM claims c JOIN members m ON m.id = c.member_id \
                 WHERE c.program_id = $1 AND c.claim_id = $2"
            )))
            .bind(program.id)
            .bind(claim_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(view))
    }

    /// Claims, oldest first (the queue): by status and member when given.
    pub async fn claims(
        &self,
        program: &LoadedProgram,
        status: Option<&str>,
        member: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ClaimView>> {
        let rows: Vec<ClaimRow> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {CLAIM_COLUMNS} FROM claims c JOIN members m ON m.id = c.member_id \
                 WHERE c.program_id = $1 AND ($2 IS NULL OR c.status = $2) \
                 AND ($3 IS NULL OR m.external_id = $3) ORDER BY c.filed_at, c.id LIMIT $4"
            )))
            .bind(program.id)
            .bind(status)
            .bind(member)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(view).collect())
    }

    /// Approves a claim: its transaction is processed once as the journal named by its
    /// reference, whatever races or retries. Returns the claim and whether it had been
    /// approved before (a retry). Refused for a rejected claim (`claim_rejected`), or with
    /// the ledger's code when the journal is refused (the claim stays open). Audited.
    pub async fn approve_claim(
        &self,
        program: &Arc<LoadedProgram>,
        claim_id: &str,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<(ClaimView, bool)> {
        let claim = self
            .claim(program, claim_id)
            .await?
            .ok_or_else(|| unknown(claim_id))?;
        match claim.status.as_str() {
            "approved" => return Ok((claim, true)),
            "rejected" => {
                return Err(StoreError::Refused(
                    "claim_rejected",
                    format!(
                        "the claim was rejected: {}",
                        claim.reason.unwrap_or_default()
                    ),
                ));
            }
            _ => {}
        }
        // Open → approving: a rejection can no longer take it.
        self.set_claim_status(program, claim_id, "open", "approving", None, now, actor)
            .await?;
        let money = &program.program.money_currency;
        let document = JournalDocument {
            external_id: Some(claim.reference.clone()),
            member: Some(claim.member.clone()),
            kind: Some("purchase".into()),
            occurred_at: Some(claim.occurred_at.to_rfc3339()),
            amount: Some(money.format(MinorUnits(claim.amount))),
            currency: Some(money.code().to_owned()),
            partner: claim.partner.clone(),
            ..JournalDocument::default()
        };
        let journal = Journal::parse(&document, &program.program)
            .map_err(|e| StoreError::Refused(e.code(), e.to_string()))?;
        let prepared = Prepared::new(journal, &program.program)?;
        match self.post_realtime(program, prepared, now).await? {
            Ok(_) => {}
            Err(e @ JournalError::IdempotencyConflict(_)) => {
                // The reference was processed meanwhile with other content.
                self.set_claim_status(program, claim_id, "approving", "open", None, now, actor)
                    .await?;
                return Err(StoreError::Refused(
                    "claim_already_processed",
                    e.to_string(),
                ));
            }
            Err(e) => {
                self.set_claim_status(program, claim_id, "approving", "open", None, now, actor)
                    .await?;
                return Err(StoreError::Refused(e.code(), e.to_string()));
            }
        }
        let changed = self
            .set_claim_status(program, claim_id, "approving", "approved", None, now, actor)
            .await?;
        let claim = self
            .claim(program, claim_id)
            .await?
            .ok_or_else(|| unknown(claim_id))?;
        Ok((claim, !changed))
    }

    /// Rejects an open claim with a reason. A retry answers the rejection (`true`);
    /// refused for an approved claim (`claim_approved`). Audited.
    pub async fn reject_claim(
        &self,
        program: &LoadedProgram,
        claim_id: &str,
        reason: &str,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<(ClaimView, bool)> {
        if !text_ok(reason, MAX_NOTE_LEN) {
            return Err(invalid(&format!(
                "reason must be 1 to {MAX_NOTE_LEN} characters"
            )));
        }
        let claim = self
            .claim(program, claim_id)
            .await?
            .ok_or_else(|| unknown(claim_id))?;
        match claim.status.as_str() {
            "rejected" => return Ok((claim, true)),
            "approved" | "approving" => {
                return Err(StoreError::Refused(
                    "claim_approved",
                    "the claim is approved (or being approved): its transaction is processed"
                        .into(),
                ));
            }
            _ => {}
        }
        if !self
            .set_claim_status(
                program,
                claim_id,
                "open",
                "rejected",
                Some(reason),
                now,
                actor,
            )
            .await?
        {
            // Decided meanwhile: answer as it stands.
            return Box::pin(self.reject_claim(program, claim_id, reason, now, actor)).await;
        }
        let claim = self
            .claim(program, claim_id)
            .await?
            .ok_or_else(|| unknown(claim_id))?;
        Ok((claim, false))
    }

    /// Moves a claim from `from` to `to` (whether it did), auditing a decision and writing
    /// its event in the same transaction.
    #[allow(clippy::too_many_arguments)]
    async fn set_claim_status(
        &self,
        program: &LoadedProgram,
        claim_id: &str,
        from: &str,
        to: &str,
        reason: Option<&str>,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<bool> {
        let decided = matches!(to, "approved" | "rejected");
        in_write_tx!(self, |tx, _pg| {
            async {
                let moved: Option<(i64, String)> = sqlx::query_as(
                    "UPDATE claims SET status = $3, reason = COALESCE($4, reason), \
                     decided_by = CASE WHEN $5 THEN $6 ELSE decided_by END, \
                     decided_at = CASE WHEN $5 THEN $7 ELSE decided_at END \
                     WHERE program_id = $1 AND claim_id = $2 AND status = $8 \
                     RETURNING member_id, reference",
                )
                .bind(program.id)
                .bind(claim_id)
                .bind(to)
                .bind(reason)
                .bind(decided)
                .bind(&actor.name)
                .bind(At(now))
                .bind(from)
                .fetch_optional(&mut *tx)
                .await?;
                let n = u64::from(moved.is_some());
                if let (Some((member_id, reference)), true) = (&moved, decided) {
                    let mut audit = actor.entry(
                        now,
                        if to == "approved" {
                            "claim.approve"
                        } else {
                            "claim.reject"
                        },
                        Some(program.program.code.as_str()),
                        Some(claim_id),
                    );
                    audit.after = Some(serde_json::json!({"status": to, "reason": reason}));
                    crate::access::insert_audit!(tx, &audit);
                    let event = crate::partners::NewEvent {
                        kind: "claim.decided",
                        member_id: Some(*member_id),
                        subject: claim_id.to_owned(),
                        payload: serde_json::json!({"claim": claim_id, "reference": reference,
                            "status": to, "reason": reason})
                        .to_string(),
                        occurred_at: now,
                    };
                    crate::partners::insert_event!(tx, program.id, &event);
                }
                Ok::<_, StoreError>(n == 1)
            }
            .await
        })
    }
}
