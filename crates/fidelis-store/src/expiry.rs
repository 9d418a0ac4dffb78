//! Extending expiries by an operator: every open bucket of a currency whose expiry falls
//! in a window gets more days or months — what airlines did for every member in 2020. The
//! points keep their ledger entries (nothing is credited or debited); their buckets expire
//! later. Each member's buckets change under the member's lock, so no journal sees half of
//! an extension. Idempotent on the operation's external id, and audited with what it did.

use chrono::{DateTime, Utc};
use fidelis_core::ids::ExternalId;
use fidelis_core::program::{ExpiryPolicy, Period};
use serde::{Deserialize, Serialize};

use crate::engine::lock_keys;
use crate::rows::LedgerTx;
use crate::{
    Actor, AuditFilter, Db, LoadedProgram, Result, Store, StoreError, in_ledger_tx, postgres,
};

/// What to extend: the open buckets of `currency` expiring in `[from, until)` get `by`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiryExtension {
    pub currency: String,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// `{"days": N}` or `{"months": N}`.
    pub days: Option<u32>,
    pub months: Option<u32>,
    pub reason: String,
}

/// What an extension did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionReport {
    pub members: u64,
    pub buckets: u64,
    /// The points those buckets hold.
    pub points: i64,
    /// An earlier call with the same external id did this; nothing changed now.
    #[serde(skip)]
    pub replayed: bool,
}

/// Members handled per transaction.
const CHUNK: i64 = 500;
const ACTION: &str = "expiry.extend";

impl Store {
    /// Extends the expiry of every open bucket of the currency expiring in the window.
    pub async fn extend_expiries(
        &self,
        program: &LoadedProgram,
        extension: &ExpiryExtension,
        external_id: &ExternalId,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<ExtensionReport> {
        let p = &program.program;
        let refuse = |code: &'static str, detail: String| Err(StoreError::Refused(code, detail));
        let Some(ix) = p.currency_ix(&extension.currency) else {
            return refuse(
                "unknown_currency",
                format!("the program has no currency {:?}", extension.currency),
            );
        };
        let currency = p.currency(ix);
        if !matches!(
            currency.expiry,
            ExpiryPolicy::Rolling { .. } | ExpiryPolicy::FixedDate { .. }
        ) {
            return refuse(
                "not_extendable",
                format!(
                    "{} points have no expiry of their own to extend (inactivity windows are extended by the program's expiry_extension)",
                    currency.code
                ),
            );
        }
        let by = match (extension.days, extension.months) {
            (Some(d), None) if (1..=3_660).contains(&d) => Period::Days(d),
            (None, Some(m)) if (1..=120).contains(&m) => Period::Months(m),
            _ => {
                return refuse(
                    "invalid_request",
                    "give days (1 to 3660) or months (1 to 120), not both".into(),
                );
            }
        };
        if extension.from >= extension.until {
            return refuse(
                "invalid_request",
                "expiring_from must be before expiring_until".into(),
            );
        }
        let reason = extension.reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return refuse(
                "invalid_request",
                "reason must be 1 to 500 characters".into(),
            );
        }
        // Idempotent: the audit trail holds every extension with its request.
        let request = serde_json::to_value(extension)?;
        let code = p.code.as_str();
        let earlier = self
            .audit(&AuditFilter {
                program: Some(code.to_owned()),
                actor: None,
                action: Some(ACTION.to_owned()),
                subject: None,
                before_id: None,
                limit: 1_000,
            })
            .await?;
        if let Some((_, entry)) = earlier
            .iter()
            .find(|(_, e)| e.subject.as_deref() == Some(external_id.as_str()))
        {
            if entry.before.as_ref() != Some(&request) {
                return refuse(
                    "idempotency_conflict",
                    format!(
                        "external_id {:?} was used for another extension",
                        external_id.as_str()
                    ),
                );
            }
            let mut report: ExtensionReport = entry
                .after
                .clone()
                .map(serde_json::from_value)
                .transpose()?
                .unwrap_or_default();
            report.replayed = true;
            return Ok(report);
        }
        let tz = p.time_zone;
        let mut report = ExtensionReport::default();
        let mut after_member = 0i64;
        loop {
            let members = self
                .members_expiring(
                    program,
                    &extension.currency,
                    extension.from,
                    extension.until,
                    after_member,
                )
                .await?;
            let Some(&(last, _)) = members.last() else {
                break;
            };
            after_member = last;
            let ids: Vec<i64> = members.iter().map(|(id, _)| *id).collect();
            let keys = lock_keys(program.id, members.iter().map(|(_, name)| name.as_str()));
            let (buckets, points) = in_ledger_tx!(self, |tx| {
                async {
                    tx.lock_members(&keys).await?;
                    extend_locked(
                        &mut tx,
                        &ids,
                        &extension.currency,
                        extension.from,
                        extension.until,
                        |t| by.after(tz, t),
                    )
                    .await
                }
                .await
            })?;
            report.members += members.len() as u64;
            report.buckets += buckets;
            report.points += points;
        }
        let mut audit = actor.entry(now, ACTION, Some(code), Some(external_id.as_str()));
        audit.before = Some(request);
        audit.after = Some(serde_json::to_value(&report)?);
        self.append_audit(&audit).await?;
        Ok(report)
    }

    /// The next members (by id, after `after`) holding open buckets of `currency` that
    /// expire in the window.
    async fn members_expiring(
        &self,
        program: &LoadedProgram,
        currency: &str,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        after: i64,
    ) -> Result<Vec<(i64, String)>> {
        Ok(match &self.db {
            Db::Sqlite(pool) => sqlx::query_as(
                "SELECT DISTINCT b.member_id, m.external_id FROM buckets b JOIN members m ON m.id = b.member_id \
                 WHERE b.program_id = ?1 AND b.currency = ?2 AND b.remaining > 0 AND b.expires_at >= ?3 \
                 AND b.expires_at < ?4 AND b.member_id > ?5 ORDER BY b.member_id LIMIT ?6",
            )
            .bind(program.id)
            .bind(currency)
            .bind(crate::sqlite::micros(from))
            .bind(crate::sqlite::micros(until))
            .bind(after)
            .bind(CHUNK)
            .fetch_all(pool)
            .await?,
            Db::Postgres(pool) => sqlx::query_as(
                "SELECT DISTINCT b.member_id, m.external_id FROM buckets b JOIN members m ON m.id = b.member_id \
                 WHERE b.program_id = $1 AND b.currency = $2 AND b.remaining > 0 AND b.expires_at >= $3 \
                 AND b.expires_at < $4 AND b.member_id > $5 ORDER BY b.member_id LIMIT $6",
            )
            .bind(program.id)
            .bind(currency)
            .bind(from)
            .bind(until)
            .bind(after)
            .bind(CHUNK)
            .fetch_all(pool)
            .await?,
        })
    }
}

/// Under the members' locks: extends their buckets in the window; the buckets and points
/// extended.
async fn extend_locked<T: LedgerTx>(
    tx: &mut T,
    members: &[i64],
    currency: &str,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    later: impl Fn(DateTime<Utc>) -> DateTime<Utc>,
) -> Result<(u64, i64)> {
    let mut points = 0;
    let moved: Vec<(i64, i64, i32, DateTime<Utc>)> = tx
        .load_open_buckets(members)
        .await?
        .into_iter()
        .filter(|b| b.currency == currency && b.remaining > 0)
        .filter_map(|b| {
            let at = b.expires_at.filter(|at| (from..until).contains(at))?;
            points += b.remaining;
            Some((b.member_id, b.journal_id, b.seq, later(at)))
        })
        .collect();
    tx.set_bucket_expiries(&moved).await?;
    Ok((moved.len() as u64, points))
}

/// How far ahead the jobs announce expiries (`points.expiring`).
pub const EXPIRING_WINDOW_DAYS: i64 = 30;

/// The expiries due within the window that no notice covers yet: (member id, external id,
/// currency, expires at, points). `$1` program, `$2` as of, `$3` the window's end.
/// Members are found through the accounts' next transition (an indexed column): a member
/// whose next transition is a pending release is announced once it is released.
const EXPIRING_SQL: &str = "SELECT b.member_id, m.external_id, b.currency, b.expires_at, CAST(SUM(b.remaining) AS BIGINT) \
     FROM accounts a \
     JOIN buckets b ON b.member_id = a.member_id AND b.currency = a.currency \
     JOIN members m ON m.id = a.member_id \
     WHERE a.program_id = $1 AND a.next_transition_at IS NOT NULL AND a.next_transition_at <= $3 \
       AND m.status <> 'closed' \
       AND b.expires_at > $2 AND b.expires_at <= $3 AND b.remaining > 0 AND b.available_at <= $2 \
       AND NOT EXISTS (SELECT 1 FROM expiry_notices n WHERE n.member_id = b.member_id \
                       AND n.currency = b.currency AND n.expires_at = b.expires_at) \
     GROUP BY b.member_id, m.external_id, b.currency, b.expires_at \
     ORDER BY b.member_id, b.currency, b.expires_at LIMIT $4";

impl Store {
    /// Announces, once each, the points of the program's members that expire within
    /// [`EXPIRING_WINDOW_DAYS`] of `as_of`: one `points.expiring` event per member,
    /// currency and expiry instant (`{"member", "currency", "points", "expires_at"}`),
    /// written with the notice that keeps it from being announced again. Returns how many.
    pub async fn announce_expiring(
        &self,
        program: &LoadedProgram,
        as_of: DateTime<Utc>,
    ) -> Result<u64> {
        use crate::dialect::{At, in_write_tx};
        let until = as_of + chrono::Duration::days(EXPIRING_WINDOW_DAYS);
        let mut total = 0u64;
        loop {
            let done = in_write_tx!(self, |tx, _pg| {
                async {
                    let due: Vec<(i64, String, String, At, i64)> = sqlx::query_as(EXPIRING_SQL)
                        .bind(program.id)
                        .bind(At(as_of))
                        .bind(At(until))
                        .bind(1_000_i64)
                        .fetch_all(&mut *tx)
                        .await?;
                    for (member_id, member, currency, expires_at, points) in &due {
                        // Another run announcing the same expiry at the same moment: the
                        // first one's notice wins, the other writes no event.
                        let new = sqlx::query(
                            "INSERT INTO expiry_notices (member_id, currency, expires_at, program_id, announced_at) \
                             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                        )
                        .bind(member_id)
                        .bind(currency)
                        .bind(At(expires_at.0))
                        .bind(program.id)
                        .bind(At(as_of))
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        if new == 0 {
                            continue;
                        }
                        let event = crate::partners::NewEvent {
                            kind: "points.expiring",
                            member_id: Some(*member_id),
                            subject: member.clone(),
                            payload: serde_json::json!({"member": member, "currency": currency,
                                "points": points, "expires_at": expires_at.0})
                            .to_string(),
                            occurred_at: as_of,
                        };
                        crate::partners::insert_event!(tx, program.id, &event);
                    }
                    Ok::<_, StoreError>(due.len() as u64)
                }
                .await
            })?;
            total += done;
            if done < 1_000 {
                return Ok(total);
            }
        }
    }
}
