//! Operations on members beyond journals: transfers between members, merging duplicates,
//! reinstating expired points. Each locks the members it touches, loads their ledgers
//! completely, calls the core (`fidelis_core::lifecycle`) and writes the journals it
//! returns in one transaction. Transfers and reinstatements are idempotent on their
//! external id, like journals.

use chrono::{DateTime, Utc};
use fidelis_core::ids::{ExternalId, JournalId};
use fidelis_core::lifecycle::{self, Expired, Refused};
use fidelis_core::outcome::{Outcome, PointsOf};
use fidelis_core::process::JournalRecord;
use fidelis_core::tiers::TierChange;
use sqlx::Row;

use crate::access::Actor;
use crate::engine::{self, LoadedProgram, NewJournal};
use crate::error::{Result, StoreError};
use crate::rows::{JournalRow, LedgerTx};
use crate::sqlite::{instant, micros};
use crate::{Db, Store, in_ledger_tx, postgres, sqlite};

/// What a merge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeReport {
    pub source: String,
    pub survivor: String,
    /// Points moved, per currency.
    pub moved: Vec<PointsOf>,
    /// The survivor's tier changes (it keeps the higher tier).
    pub tier_changes: Vec<TierChange>,
}

impl From<Refused> for StoreError {
    fn from(r: Refused) -> Self {
        StoreError::Refused(r.code, r.detail)
    }
}

fn new_journal(
    record: JournalRecord,
    document: Option<String>,
    outcome: Option<&Outcome>,
) -> Result<NewJournal> {
    Ok(NewJournal {
        record_key: None,
        record: Some(record),
        document,
        outcome: outcome.map(serde_json::to_string).transpose()?,
    })
}

/// The first outcome of an operation posted before with this external id, if its
/// document is the same; a conflict if it differs.
fn replayed(existing: &[JournalRow], document: &str, external_id: &str) -> Result<Option<Outcome>> {
    let Some(row) = existing.first() else {
        return Ok(None);
    };
    if row.document.as_deref() != Some(document) {
        return Err(StoreError::Refused(
            "idempotency_conflict",
            format!("external_id {external_id:?} was used for something else"),
        ));
    }
    let outcome: Outcome = serde_json::from_str(row.outcome.as_deref().unwrap_or("{}"))?;
    Ok(Some(outcome))
}

fn refuse_merged(members: &[crate::rows::MemberRow], names: &[&str]) -> Result<()> {
    for name in names {
        match members.iter().find(|m| m.external_id == *name) {
            None => return Err(StoreError::UnknownMember((*name).to_owned())),
            Some(m) if m.owner.is_some() => {
                return Err(StoreError::Refused(
                    "member_merged",
                    format!(
                        "member {name:?} was merged into {:?}",
                        m.owner.as_deref().unwrap_or_default()
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Groups (households) take points only as their members' shares and spend them by their
/// rule: they neither send nor receive transfers, nor merge. (Their locks are taken after
/// members' locks; an operation locking a group among members could deadlock.)
async fn refuse_groups<T: LedgerTx>(tx: &mut T, ids: &[i64]) -> Result<()> {
    if let Some(g) = tx.load_groups(ids).await?.first() {
        return Err(StoreError::Refused(
            "member_is_group",
            format!(
                "{:?} is a group: it does not take part in transfers or merges",
                g.external_id
            ),
        ));
    }
    Ok(())
}

impl Store {
    /// Transfers `points` of `currency` from member `from` to member `to`, under the
    /// currency's per-member daily limit (the sender's local day). Both sides get a
    /// journal naming the other. Posting the same `external_id` again answers the first
    /// outcome. Returns the sender's outcome and whether it is a replay.
    #[allow(clippy::too_many_arguments)]
    pub async fn transfer(
        &self,
        program: &LoadedProgram,
        from: &str,
        to: &str,
        currency: &str,
        points: i64,
        external_id: &ExternalId,
        now: DateTime<Utc>,
    ) -> Result<(Outcome, bool)> {
        let t = Transfer {
            from,
            to,
            currency,
            points,
            external_id: external_id.as_str(),
        };
        in_ledger_tx!(self, |tx| transfer_tx(&mut tx, program, &t, now, false)
            .await)
    }

    /// [`Store::transfer`] as asked through the API: the program's `transfer_ring` rule
    /// screens it, and a transfer closing a ring is held for review (the outcome's status
    /// is `held`; nothing moves until an agent releases it).
    #[allow(clippy::too_many_arguments)]
    pub async fn transfer_screened(
        &self,
        program: &LoadedProgram,
        from: &str,
        to: &str,
        currency: &str,
        points: i64,
        external_id: &ExternalId,
        now: DateTime<Utc>,
    ) -> Result<(Outcome, bool)> {
        let t = Transfer {
            from,
            to,
            currency,
            points,
            external_id: external_id.as_str(),
        };
        in_ledger_tx!(self, |tx| transfer_tx(&mut tx, program, &t, now, true)
            .await)
    }

    /// Merges member `source` (a duplicate) into `survivor`: its points move with their
    /// expiry dates, its promotion counters add to the survivor's, the survivor keeps the
    /// higher tier, and the source is closed and points at the survivor (journals posted
    /// later for its external id go to the survivor). Audited.
    pub async fn merge_members(
        &self,
        program: &LoadedProgram,
        source: &str,
        survivor: &str,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<MergeReport> {
        let p = &program.program;
        let code = p.code.as_str();
        in_ledger_tx!(self, |tx| {
            async {
                let (mut batch, members) =
                    engine::load_members(&mut tx, program, &[source, survivor], now).await?;
                refuse_merged(&members, &[source, survivor])?;
                let id_of =
                    |name: &str| members.iter().find(|m| m.external_id == name).map(|m| m.id);
                let (Some(a), Some(b)) = (id_of(source), id_of(survivor)) else {
                    return Err(StoreError::UnknownMember(survivor.to_owned()));
                };
                refuse_groups(&mut tx, &[a, b]).await?;
                // Held points are out of the buckets a merge moves: the hold would stay on
                // the closed record, never to be captured or released.
                if tx.count_open_holds(&[a]).await? > 0 {
                    return Err(StoreError::Refused(
                        "member_has_holds",
                        format!(
                            "{source:?} has points held for orders: capture or release them first (the jobs release holds past their end)"
                        ),
                    ));
                }
                let (Some(mut from), Some(mut to)) =
                    (batch.ledgers.remove(&a), batch.ledgers.remove(&b))
                else {
                    return Err(StoreError::Refused(
                        "same_member",
                        "a member cannot be merged into itself".into(),
                    ));
                };
                let ids = tx.reserve_journal_ids(2).await?;
                let merged = lifecycle::merge(
                    p,
                    &mut from,
                    &mut to,
                    (JournalId(ids[0]), JournalId(ids[1])),
                    now,
                )?;
                batch.ledgers.insert(a, from);
                batch.ledgers.insert(b, to);
                let doc =
                    serde_json::json!({"type": "merge", "source": source, "survivor": survivor})
                        .to_string();
                batch
                    .new_journals
                    .push(new_journal(merged.source, Some(doc.clone()), None)?);
                batch
                    .new_journals
                    .push(new_journal(merged.survivor, Some(doc), None)?);
                batch.audit_tier_changes(b, &merged.tier_changes, None);
                let mut audit = actor.entry(now, "member.merge", Some(code), Some(source));
                audit.before = Some(serde_json::json!({"member": source, "status": "active"}));
                audit.after = Some(serde_json::json!({"member": source, "status": "closed",
                    "merged_into": survivor, "moved": merged.moved}));
                batch.audits.push(audit);
                batch.write(&mut tx).await?;
                tx.close_merged(program.id, a, b).await?;
                Ok::<_, StoreError>(MergeReport {
                    source: source.to_owned(),
                    survivor: survivor.to_owned(),
                    moved: merged.moved,
                    tier_changes: merged.tier_changes,
                })
            }
            .await
        })
    }

    /// Reinstates the member's points of `currency` that expired within the currency's
    /// window (`reinstate_within_days`, counted in local days, the first day included) and
    /// were not reinstated before: an agent's action, with a reason, audited. Posting the
    /// same `external_id` again answers the first outcome.
    #[allow(clippy::too_many_arguments)]
    pub async fn reinstate(
        &self,
        program: &LoadedProgram,
        member: &str,
        currency: &str,
        external_id: &ExternalId,
        reason: &str,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<(Outcome, bool)> {
        let p = &program.program;
        let Some(ix) = p.currency_ix(currency) else {
            return Err(StoreError::Refused(
                "unknown_currency",
                format!("the program has no currency {currency:?}"),
            ));
        };
        let days = p.currency(ix).reinstate_within_days.unwrap_or(0);
        let cutoff = lifecycle::reinstate_cutoff(p, days, now);
        let code = p.code.as_str();
        in_ledger_tx!(self, |tx| {
            async {
                let (mut batch, members) = engine::load_members(&mut tx, program, &[member], now).await?;
                let request = serde_json::json!({"type": "reinstatement", "member": member,
                    "currency": currency, "reason": reason});
                let existing = tx
                    .load_journals_by_external_id(program.id, &[external_id.as_str()])
                    .await?;
                if let Some(row) = existing.first() {
                    let first: serde_json::Value =
                        serde_json::from_str(row.document.as_deref().unwrap_or("{}"))?;
                    if first.get("request") != Some(&request) {
                        return Err(StoreError::Refused(
                            "idempotency_conflict",
                            format!("external_id {:?} was used for something else", external_id.as_str()),
                        ));
                    }
                    let outcome: Outcome = serde_json::from_str(row.outcome.as_deref().unwrap_or("{}"))?;
                    return Ok((outcome, true));
                }
                refuse_merged(&members, &[member])?;
                let id = members[0].id;
                let expired = tx.expired_since(id, currency, cutoff).await?;
                let done: std::collections::HashSet<(i64, i64)> =
                    tx.reinstated_since(id, cutoff).await?.into_iter().collect();
                let open: Vec<Expired> = expired
                    .into_iter()
                    .filter(|e| !done.contains(&(e.journal, e.seq)))
                    .collect();
                let ids = tx.reserve_journal_ids(1).await?;
                let Some(mut ledger) = batch.ledgers.remove(&id) else {
                    return Err(StoreError::UnknownMember(member.to_owned()));
                };
                let (record, within, outcome) =
                    lifecycle::reinstate(p, &mut ledger, ix, &open, external_id.clone(), JournalId(ids[0]), now)?;
                batch.ledgers.insert(id, ledger);
                let keys: Vec<[i64; 2]> = within.iter().map(|e| [e.journal, e.seq]).collect();
                let document = serde_json::json!({"request": request, "reinstated": keys}).to_string();
                batch.new_journals.push(new_journal(record, Some(document), Some(&outcome))?);
                let mut audit = actor.entry(now, "points.reinstate", Some(code), Some(member));
                audit.after = Some(serde_json::json!({"currency": currency, "reason": reason,
                    "points": within.iter().map(|e| e.points).sum::<i64>(), "journal": external_id.as_str()}));
                batch.audits.push(audit);
                batch.write(&mut tx).await?;
                Ok::<_, StoreError>((outcome, false))
            }
            .await
        })
    }
}

impl sqlite::SqliteTx<'_> {
    async fn transferred_since(
        &mut self,
        member: i64,
        currency: &str,
        since: DateTime<Utc>,
    ) -> Result<i64> {
        let sent: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(-e.amount), 0) FROM journals j JOIN entries e ON e.journal_id = j.id \
             WHERE j.member_id = ?1 AND j.kind = 'transfer' AND j.occurred_at >= ?2 \
               AND e.currency = ?3 AND e.kind = 'transfer' AND e.amount < 0",
        )
        .bind(member)
        .bind(micros(since))
        .bind(currency)
        .fetch_one(self.conn().await?)
        .await?;
        Ok(sent)
    }

    async fn expired_since(
        &mut self,
        member: i64,
        currency: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Expired>> {
        let rows = sqlx::query(
            "SELECT e.journal_id, e.seq, -e.amount, e.effective_at FROM journals j JOIN entries e ON e.journal_id = j.id \
             WHERE j.member_id = ?1 AND j.kind = 'settlement' AND j.occurred_at >= ?2 \
               AND e.currency = ?3 AND e.kind = 'expire' AND e.amount < 0 AND e.effective_at >= ?2",
        )
        .bind(member)
        .bind(micros(since))
        .bind(currency)
        .fetch_all(self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Expired {
                    journal: r.try_get(0)?,
                    seq: r.try_get(1)?,
                    points: r.try_get(2)?,
                    at: instant(r.try_get(3)?)?,
                })
            })
            .collect()
    }

    async fn reinstated_since(
        &mut self,
        member: i64,
        since: DateTime<Utc>,
    ) -> Result<Vec<(i64, i64)>> {
        let docs: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT document FROM journals WHERE member_id = ?1 AND kind = 'reinstatement' AND occurred_at >= ?2",
        )
        .bind(member)
        .bind(micros(since))
        .fetch_all(self.conn().await?)
        .await?;
        reinstated_keys(docs)
    }

    async fn close_merged(&mut self, program_id: i64, source: i64, survivor: i64) -> Result<()> {
        sqlx::query("UPDATE members SET status = 'closed', merged_into = ?1 WHERE id = ?2")
            .bind(survivor)
            .bind(source)
            .execute(self.conn().await?)
            .await?;
        sqlx::query("UPDATE members SET merged_into = ?1 WHERE merged_into = ?2")
            .bind(survivor)
            .bind(source)
            .execute(self.conn().await?)
            .await?;
        // The source's vouchers go to the survivor (PRODUCT.md §2).
        sqlx::query("UPDATE vouchers SET member_id = ?1 WHERE member_id = ?2")
            .bind(survivor)
            .bind(source)
            .execute(self.conn().await?)
            .await?;
        // … and so do its granted benefits and its badges (a badge both hold: the
        // survivor's stands). Its orders stay with it, as its journals do.
        for sql in [
            "UPDATE member_benefits SET member_id = ?1 WHERE member_id = ?2",
            "DELETE FROM member_badges WHERE member_id = ?2 \
             AND badge IN (SELECT badge FROM member_badges WHERE member_id = ?1)",
            "UPDATE member_badges SET member_id = ?1 WHERE member_id = ?2",
        ] {
            sqlx::query(sql)
                .bind(survivor)
                .bind(source)
                .execute(self.conn().await?)
                .await?;
        }
        sqlx::query(
            "INSERT INTO promotion_usage (program_id, promotion, member_id, period, times, points) \
             SELECT program_id, promotion, ?1, period, times, points FROM promotion_usage \
             WHERE program_id = ?2 AND member_id = ?3 AND true \
             ON CONFLICT (program_id, promotion, member_id, period) DO UPDATE \
             SET times = promotion_usage.times + excluded.times, points = promotion_usage.points + excluded.points",
        )
        .bind(survivor)
        .bind(program_id)
        .bind(source)
        .execute(self.conn().await?)
        .await?;
        Ok(())
    }
}

impl postgres::PgTx {
    async fn transferred_since(
        &mut self,
        member: i64,
        currency: &str,
        since: DateTime<Utc>,
    ) -> Result<i64> {
        let sent: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(-e.amount), 0)::bigint FROM journals j JOIN entries e ON e.journal_id = j.id \
             WHERE j.member_id = $1 AND j.kind = 'transfer' AND j.occurred_at >= $2 \
               AND e.currency = $3 AND e.kind = 'transfer' AND e.amount < 0",
        )
        .bind(member)
        .bind(since)
        .bind(currency)
        .fetch_one(self.conn().await?)
        .await?;
        Ok(sent)
    }

    async fn expired_since(
        &mut self,
        member: i64,
        currency: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Expired>> {
        let rows = sqlx::query(
            "SELECT e.journal_id, e.seq::bigint, -e.amount, e.effective_at FROM journals j JOIN entries e ON e.journal_id = j.id \
             WHERE j.member_id = $1 AND j.kind = 'settlement' AND j.occurred_at >= $2 \
               AND e.currency = $3 AND e.kind = 'expire' AND e.amount < 0 AND e.effective_at >= $2",
        )
        .bind(member)
        .bind(since)
        .bind(currency)
        .fetch_all(self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Expired {
                    journal: r.try_get(0)?,
                    seq: r.try_get(1)?,
                    points: r.try_get(2)?,
                    at: r.try_get(3)?,
                })
            })
            .collect()
    }

    async fn reinstated_since(
        &mut self,
        member: i64,
        since: DateTime<Utc>,
    ) -> Result<Vec<(i64, i64)>> {
        let docs: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT document FROM journals WHERE member_id = $1 AND kind = 'reinstatement' AND occurred_at >= $2",
        )
        .bind(member)
        .bind(since)
        .fetch_all(self.conn().await?)
        .await?;
        reinstated_keys(docs)
    }

    async fn close_merged(&mut self, program_id: i64, source: i64, survivor: i64) -> Result<()> {
        let conn = self.conn().await?;
        sqlx::query("UPDATE members SET status = 'closed', merged_into = $1 WHERE id = $2")
            .bind(survivor)
            .bind(source)
            .execute(&mut *conn)
            .await?;
        sqlx::query("UPDATE members SET merged_into = $1 WHERE merged_into = $2")
            .bind(survivor)
            .bind(source)
            .execute(&mut *conn)
            .await?;
        // The source's vouchers go to the survivor (PRODUCT.md §2).
        sqlx::query("UPDATE vouchers SET member_id = $1 WHERE member_id = $2")
            .bind(survivor)
            .bind(source)
            .execute(&mut *conn)
            .await?;
        // … and so do its granted benefits and its badges (a badge both hold: the
        // survivor's stands). Its orders stay with it, as its journals do.
        // Moved by an insert and a delete, not an update of `member_id`: a schema
        // distributed by member (ARCHITECTURE.md, "Distributing the schema") never
        // updates its distribution column.
        for sql in [
            "INSERT INTO member_benefits (id, program_id, member_id, code, name, value, starts_at, ends_at, \
                                          source, source_key) OVERRIDING SYSTEM VALUE \
             SELECT id, program_id, $1, code, name, value, starts_at, ends_at, source, source_key \
             FROM member_benefits WHERE member_id = $2",
            "DELETE FROM member_benefits WHERE member_id = $2",
            "DELETE FROM member_badges WHERE member_id = $2 \
             AND badge IN (SELECT badge FROM member_badges WHERE member_id = $1)",
            "INSERT INTO member_badges (program_id, member_id, badge, times, first_at, last_at, source) \
             SELECT program_id, $1, badge, times, first_at, last_at, source FROM member_badges WHERE member_id = $2",
            "DELETE FROM member_badges WHERE member_id = $2",
        ] {
            sqlx::query(sql)
                .bind(survivor)
                .bind(source)
                .execute(&mut *conn)
                .await?;
        }
        sqlx::query(
            "INSERT INTO promotion_usage (program_id, promotion, member_id, period, times, points) \
             SELECT program_id, promotion, $1, period, times, points FROM promotion_usage \
             WHERE program_id = $2 AND member_id = $3 \
             ON CONFLICT (program_id, promotion, member_id, period) DO UPDATE \
             SET times = promotion_usage.times + excluded.times, points = promotion_usage.points + excluded.points",
        )
        .bind(survivor)
        .bind(program_id)
        .bind(source)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// The expiry entries named by reinstatement journals' documents.
fn reinstated_keys(docs: Vec<Option<String>>) -> Result<Vec<(i64, i64)>> {
    let mut out = Vec::new();
    for doc in docs.into_iter().flatten() {
        let v: serde_json::Value = serde_json::from_str(&doc)?;
        for k in v["reinstated"].as_array().into_iter().flatten() {
            if let (Some(j), Some(s)) = (k[0].as_i64(), k[1].as_i64()) {
                out.push((j, s));
            }
        }
    }
    Ok(out)
}

/// What bringing a member over did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub outcome: Outcome,
    /// The member was enrolled by this opening (absent before).
    pub enrolled: bool,
    /// An earlier call with the same document did this: nothing changed now.
    pub replayed: bool,
}

impl Store {
    /// Brings a member's state from another system (enrolling them if absent): opening
    /// balances as buckets with their own instants, tiers with their dates and progress,
    /// cumulative promotions' progress — one `opening` journal (external id
    /// `opening:MEMBER`), idempotent, audited, refused for a member who has journals.
    pub async fn open_member(
        &self,
        program: &LoadedProgram,
        document: &lifecycle::OpeningDocument,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<Opened> {
        let p = &program.program;
        let opening = document.parse(p)?;
        let member = document.member.as_str();
        let external_id = ExternalId::parse(&format!("opening:{member}")).map_err(|e| {
            StoreError::Refused("invalid_opening", format!("member {member:?}: {e}"))
        })?;
        ExternalId::parse(member)
            .map_err(|e| StoreError::Refused("invalid_opening", format!("member {e}")))?;
        let mut enrolled = false;
        if self.member(program, member).await?.is_none() {
            let enrolled_at = match document.enrolled_at.as_deref() {
                Some(raw) => chrono::DateTime::parse_from_rfc3339(raw)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        StoreError::Refused(
                            "invalid_opening",
                            "enrolled_at is not an RFC 3339 instant".into(),
                        )
                    })?,
                None => now,
            };
            let profile = document
                .profile
                .clone()
                .unwrap_or_else(|| serde_json::json!({}));
            if !profile.is_object() {
                return Err(StoreError::Refused(
                    "invalid_opening",
                    "profile is a JSON object".into(),
                ));
            }
            match self
                .enroll(
                    program,
                    &crate::Enrollment {
                        external_id: ExternalId::parse(member).expect("checked above"),
                        profile,
                        enrolled_at: enrolled_at.min(now),
                    },
                    now,
                )
                .await
            {
                Ok(_) => enrolled = true,
                Err(StoreError::MemberExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let text = serde_json::to_string(document)?;
        let code = p.code.as_str();
        in_ledger_tx!(self, |tx| {
            async {
                let existing = tx
                    .load_journals_by_external_id(program.id, &[external_id.as_str()])
                    .await?;
                if let Some(row) = existing.first() {
                    if row.document.as_deref() != Some(text.as_str()) {
                        return Err(StoreError::Refused(
                            "idempotency_conflict",
                            format!("member {member:?} was opened with another document"),
                        ));
                    }
                    let outcome: Outcome = serde_json::from_str(row.outcome.as_deref().unwrap_or("{}"))?;
                    return Ok(Opened { outcome, enrolled: false, replayed: true });
                }
                let (mut batch, members) = engine::load_members(&mut tx, program, &[member], now).await?;
                refuse_merged(&members, &[member])?;
                let id = members
                    .first()
                    .map(|m| m.id)
                    .ok_or_else(|| StoreError::UnknownMember(member.to_owned()))?;
                if tx.has_journals(id).await? {
                    return Err(StoreError::Refused(
                        "member_has_ledger",
                        format!("member {member:?} has journals already: an opening brings a member over once, before anything else"),
                    ));
                }
                let ids = tx.reserve_journal_ids(1).await?;
                let Some(mut ledger) = batch.ledgers.remove(&id) else {
                    return Err(StoreError::UnknownMember(member.to_owned()));
                };
                let mut counters = std::mem::take(batch.counters_mut());
                let (record, outcome) = lifecycle::open(
                    p,
                    &mut ledger,
                    &opening,
                    &mut counters,
                    external_id.clone(),
                    JournalId(ids[0]),
                    now,
                )?;
                *batch.counters_mut() = counters;
                batch.ledgers.insert(id, ledger);
                batch
                    .new_journals
                    .push(new_journal(record, Some(text.clone()), Some(&outcome))?);
                let mut audit = actor.entry(now, "member.opening", Some(code), Some(member));
                audit.after = Some(serde_json::json!({
                    "balances": outcome.awards.iter().map(|a| serde_json::json!({"currency": a.currency.as_str(), "points": a.points})).collect::<Vec<_>>(),
                    "tiers": outcome.tier_changes.iter().map(|t| serde_json::json!({"group": t.group.as_str(), "tier": t.to.as_str()})).collect::<Vec<_>>(),
                    "promotions": document.promotions.len(),
                }));
                batch.audits.push(audit);
                batch.write(&mut tx).await?;
                Ok::<_, StoreError>(Opened { outcome, enrolled, replayed: false })
            }
            .await
        })
    }
}

/// A transfer asked for.
pub(crate) struct Transfer<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub currency: &'a str,
    pub points: i64,
    pub external_id: &'a str,
}

impl Transfer<'_> {
    /// The document stored with the sender's journal (and a held transfer's).
    pub(crate) fn document(&self) -> String {
        serde_json::json!({"type": "transfer", "from": self.from, "to": self.to,
            "currency": self.currency, "points": self.points})
        .to_string()
    }
}

/// A transfer in `tx` (see [`Store::transfer`]); with `screen`, the ring rule first.
pub(crate) async fn transfer_tx<T: TransferTx>(
    tx: &mut T,
    program: &LoadedProgram,
    t: &Transfer<'_>,
    now: DateTime<Utc>,
    screen: bool,
) -> Result<(Outcome, bool)> {
    let p = &program.program;
    let (from, to, currency, points) = (t.from, t.to, t.currency, t.points);
    let Some(ix) = p.currency_ix(currency) else {
        return Err(StoreError::Refused(
            "unknown_currency",
            format!("the program has no currency {currency:?}"),
        ));
    };
    let external_id = ExternalId::parse(t.external_id)
        .map_err(|e| StoreError::Refused("invalid_request", format!("external_id {e}")))?;
    let document = t.document();
    let tz = p.time_zone;
    let day = fidelis_core::calendar::local_date(tz, now);
    let day_start = fidelis_core::calendar::start_of_day(tz, day);
    let (mut batch, members) = engine::load_members(tx, program, &[from, to], now).await?;
    let existing = tx
        .load_journals_by_external_id(program.id, &[external_id.as_str()])
        .await?;
    if let Some(outcome) = replayed(&existing, &document, external_id.as_str())? {
        return Ok((outcome, true));
    }
    refuse_merged(&members, &[from, to])?;
    let id_of = |name: &str| members.iter().find(|m| m.external_id == name).map(|m| m.id);
    let (Some(a), Some(b)) = (id_of(from), id_of(to)) else {
        return Err(StoreError::UnknownMember(to.to_owned()));
    };
    refuse_groups(tx, &[a, b]).await?;
    if screen {
        match crate::fraud::screen_transfer(tx, program, t, a, now).await? {
            None => {}
            Some(crate::fraud::TransferScreen::Replay(outcome)) => return Ok((*outcome, true)),
            Some(crate::fraud::TransferScreen::Hold(row)) => {
                let outcome =
                    crate::fraud::hold_transfer(tx, &mut batch, program, t, ix, row, now).await?;
                return Ok((outcome, false));
            }
        }
    }
    let sent_today = tx.sent_since(a, currency, day_start).await?;
    let ids = tx.reserve_journal_ids(2).await?;
    let (Some(sender), Some(receiver)) = (batch.ledgers.remove(&a), batch.ledgers.remove(&b))
    else {
        return Err(StoreError::Refused(
            "same_member",
            "a member cannot transfer to themselves".into(),
        ));
    };
    let (mut sender, mut receiver) = (sender, receiver);
    let done = lifecycle::transfer(
        p,
        &mut sender,
        &mut receiver,
        ix,
        points,
        sent_today,
        external_id.clone(),
        (JournalId(ids[0]), JournalId(ids[1])),
        now,
    )?;
    batch.ledgers.insert(a, sender);
    batch.ledgers.insert(b, receiver);
    batch.new_journals.push(new_journal(
        done.sent,
        Some(document.clone()),
        Some(&done.outcome),
    )?);
    let received_doc = serde_json::json!({"type": "transfer", "from": from, "to": to,
        "currency": currency, "points": points, "transfer": external_id.as_str()})
    .to_string();
    batch
        .new_journals
        .push(new_journal(done.received, Some(received_doc), None)?);
    batch.write(tx).await?;
    Ok((done.outcome, false))
}

/// What a transfer reads beyond the ledger, in either dialect's transaction.
pub(crate) trait TransferTx: LedgerTx {
    /// Points of `currency` member `member` sent by transfer since `since`.
    fn sent_since(
        &mut self,
        member: i64,
        currency: &str,
        since: DateTime<Utc>,
    ) -> impl std::future::Future<Output = Result<i64>> + Send;
    /// The documents of the transfers these members sent since `since` (for the ring
    /// rule), at most `limit`.
    fn sent_transfers(
        &mut self,
        program_id: i64,
        members: &[String],
        since: DateTime<Utc>,
        limit: i64,
    ) -> impl std::future::Future<Output = Result<Vec<String>>> + Send;
}

impl TransferTx for sqlite::SqliteTx<'_> {
    async fn sent_since(
        &mut self,
        member: i64,
        currency: &str,
        since: DateTime<Utc>,
    ) -> Result<i64> {
        self.transferred_since(member, currency, since).await
    }

    async fn sent_transfers(
        &mut self,
        program_id: i64,
        members: &[String],
        since: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT j.document FROM members m JOIN journals j ON j.member_id = m.id \
             WHERE m.program_id = ?1 AND m.external_id IN (SELECT value FROM json_each(?2)) \
               AND j.kind = 'transfer' AND j.external_id IS NOT NULL AND j.recorded_at >= ?3 \
               AND j.document IS NOT NULL LIMIT ?4",
        )
        .bind(program_id)
        .bind(serde_json::to_string(members)?)
        .bind(micros(since))
        .bind(limit)
        .fetch_all(self.conn().await?)
        .await?)
    }
}

impl TransferTx for postgres::PgTx {
    async fn sent_since(
        &mut self,
        member: i64,
        currency: &str,
        since: DateTime<Utc>,
    ) -> Result<i64> {
        self.transferred_since(member, currency, since).await
    }

    async fn sent_transfers(
        &mut self,
        program_id: i64,
        members: &[String],
        since: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT j.document FROM members m JOIN journals j ON j.member_id = m.id \
             WHERE m.program_id = $1 AND m.external_id = ANY($2) \
               AND j.kind = 'transfer' AND j.external_id IS NOT NULL AND j.recorded_at >= $3 \
               AND j.document IS NOT NULL LIMIT $4",
        )
        .bind(program_id)
        .bind(members)
        .bind(since)
        .bind(limit)
        .fetch_all(self.conn().await?)
        .await?)
    }
}
